"""Per-call audio processing after decoding: trim, resample, VAD, anonymize, features."""
