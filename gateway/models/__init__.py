"""Models run on analysed calls: keyword spotting (Vosk) and emotion (ONNX)."""
