"""A small progress bar on a terminal; silent when the output is not one."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    def __init__(self, total: int, *, stream: TextIO | None = None, label: str = "") -> None:
        self._total = max(total, 1)
        self._stream = stream if stream is not None else sys.stderr
        self._enabled = self._stream.isatty()
        self._label = label
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._last < 0.1:
            return
        self._last = now
        self._draw(done)

    def close(self) -> None:
        if self._enabled:
            self._draw(self._total)
            self._stream.write("\n")
            self._stream.flush()

    def _draw(self, done: int) -> None:
        share = min(done / self._total, 1.0)
        filled = int(share * 30)
        self._stream.write(
            f"\r{self._label} [{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}"
            f"  {done / 1e6:.1f}/{self._total / 1e6:.1f} MB"
        )
        self._stream.flush()
