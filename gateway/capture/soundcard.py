"""Audio from a sound card wired to an analog or line-level tap: one call direction per channel.

``SoundcardSource`` opens a two-channel 16-bit input through PortAudio (PyAudio, the
``soundcard`` extra) and yields ``(channel_0, channel_1)`` pairs of int16 arrays of 20 ms each,
or ``None`` when no block arrived for ``idle_timeout`` seconds. PortAudio's thread only queues
the raw bytes; the queue is bounded, and blocks that find it full are dropped and counted
(``counters["soundcard.queue_full"]``). Overruns that PortAudio reports (audio the card lost
before it reached the callback) are counted under ``counters["soundcard.overflow"]``.

ALSA and JACK print their probing chatter (missing cards, no JACK server) straight onto file
descriptor 2 while PortAudio starts and opens the device. That stretch runs with descriptor 2
pointed at a temporary file, so the chatter stays out of the logs; it is quoted in the error
when opening fails. Open the source before starting other threads that write to stderr.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np

from gateway.closing import Closing

BLOCK_SECONDS = 0.02
CHANNELS = 2
_PA_INPUT_OVERFLOW = 0x2  # paInputOverflow in the callback's status flags
_PA_CONTINUE = 0  # paContinue
_NOISE_LINES = 6


class SoundcardError(Exception):
    """The sound card cannot be opened or stopped delivering; the message says what to do."""


@dataclass(frozen=True, slots=True)
class InputDevice:
    index: int
    name: str
    input_channels: int
    default_rate: int
    host_api: str

    def describe(self) -> str:
        return (
            f"#{self.index} {self.name!r} ({self.input_channels} input channels, "
            f"{self.default_rate} Hz default, {self.host_api})"
        )


Block = tuple[np.ndarray, np.ndarray]


class SoundcardSource(Closing):
    """Two-channel blocks of 20 ms from the input device whose name contains ``device``.

    An empty ``device`` picks the default input. ``queue_blocks`` bounds the blocks waiting for
    the reader (50: one second). ``stop()`` may be called from any thread.
    """

    def __init__(
        self,
        device: str = "",
        *,
        sample_rate: int = 8000,
        queue_blocks: int = 50,
        idle_timeout: float = 0.5,
    ) -> None:
        if sample_rate <= 0 or sample_rate % round(1 / BLOCK_SECONDS):
            raise SoundcardError(
                f"sample rate {sample_rate} Hz does not divide into 20 ms blocks; use 8000 or 16000"
            )
        pyaudio = _import_pyaudio()
        self.sample_rate = sample_rate
        self.block_frames = round(sample_rate * BLOCK_SECONDS)
        self.counters: Counter[str] = Counter()
        self._idle_timeout = idle_timeout
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=queue_blocks)
        self._stopping = False
        self._closed = False
        noise: list[str] = []
        with _stderr_captured(noise):
            self._pa = pyaudio.PyAudio()
        try:
            self.device = _choose(self._pa, device, sample_rate, pyaudio.paInt16, noise)
            with _stderr_captured(noise):
                self._stream = self._pa.open(
                    format=pyaudio.paInt16,
                    channels=CHANNELS,
                    rate=sample_rate,
                    input=True,
                    input_device_index=self.device.index,
                    frames_per_buffer=self.block_frames,
                    stream_callback=self._on_audio,
                )
        except BaseException as exc:
            self._pa.terminate()
            if isinstance(exc, OSError):
                raise SoundcardError(
                    f"cannot open sound-card input {device or '(default)'!r} at {sample_rate} Hz: "
                    f"{exc}{_quote(noise)}"
                ) from exc
            raise

    def __iter__(self) -> Iterator[Block | None]:
        return self._blocks()

    def stop(self) -> None:
        """End the iteration soon; safe from any thread."""
        self._stopping = True
        # when the queue is full the reader sees the flag after its next block instead
        with suppress(queue.Full):
            self._queue.put_nowait(None)

    def close(self) -> None:
        """Stop the stream and release PortAudio."""
        self._stopping = True
        if not self._closed:
            self._closed = True
            self._stream.stop_stream()
            self._stream.close()
            self._pa.terminate()

    def _on_audio(self, data: bytes, frames: int, time_info: Any, status: int) -> tuple[None, int]:
        """PortAudio's thread: queue the raw block, nothing more."""
        if status & _PA_INPUT_OVERFLOW:
            self.counters["soundcard.overflow"] += 1
        try:
            self._queue.put_nowait(data)
        except queue.Full:
            self.counters["soundcard.queue_full"] += 1
        return None, _PA_CONTINUE

    def _blocks(self) -> Iterator[Block | None]:
        get = self._queue.get
        while not self._stopping:
            try:
                data = get(timeout=self._idle_timeout)
            except queue.Empty:
                if not self._stream.is_active():
                    raise SoundcardError(
                        f"sound-card input {self.device.name!r} stopped delivering audio; "
                        f"check that the device is still connected"
                    ) from None
                yield None
                continue
            if data is not None:
                yield split_channels(data)


def split_channels(data: bytes) -> Block:
    """Interleaved 16-bit stereo frames as two contiguous int16 arrays, one per channel."""
    pair = np.frombuffer(data, dtype=np.int16).reshape(-1, CHANNELS).T.copy()
    return pair[0], pair[1]


def _import_pyaudio() -> Any:
    try:
        import pyaudio
    except ImportError as exc:
        raise SoundcardError(
            "PyAudio is not installed, and the sound-card source needs it: install callveil's "
            "soundcard extra (pip install 'callveil[soundcard]'; it builds against PortAudio, "
            "Debian package portaudio19-dev)"
        ) from exc
    return pyaudio


def _choose(
    pa: Any, wanted: str, sample_rate: int, sample_format: int, noise: list[str]
) -> InputDevice:
    """The input device to open: by name (exact, then part of it), or the default input."""
    devices = input_devices(pa)
    if not devices:
        raise SoundcardError(
            "no audio input device found; connect the tap's sound card, check that the system "
            f"sees it (arecord -l) and that this user may open it{_quote(noise)}"
        )
    listing = "; ".join(d.describe() for d in devices)
    if wanted:
        lowered = wanted.lower()
        matches = [d for d in devices if d.name == wanted] or [
            d for d in devices if lowered in d.name.lower()
        ]
        if not matches:
            raise SoundcardError(
                f"no audio input device named like {wanted!r}; found: {listing}; "
                f"set soundcard.device to one of these names (or part of one)"
            )
    else:
        try:
            default = pa.get_default_input_device_info()["index"]
        except OSError:
            default = devices[0].index
        matches = [d for d in devices if d.index == default] or devices[:1]
    stereo = [d for d in matches if d.input_channels >= CHANNELS]
    if not stereo:
        first = matches[0]
        raise SoundcardError(
            f"input device {first.name!r} has {first.input_channels} input channel(s), but the "
            f"tap needs {CHANNELS}, one per call direction; found: {listing}"
        )
    chosen = stereo[0]
    try:
        pa.is_format_supported(
            sample_rate,
            input_device=chosen.index,
            input_channels=CHANNELS,
            input_format=sample_format,
        )
    except ValueError as exc:
        raise SoundcardError(
            f"input device {chosen.name!r} cannot record {CHANNELS} channels of 16-bit audio at "
            f"{sample_rate} Hz ({exc}); set soundcard.sample_rate to a rate it supports "
            f"(its default is {chosen.default_rate} Hz)"
        ) from exc
    return chosen


def input_devices(pa: Any) -> list[InputDevice]:
    """The devices PortAudio can record from."""
    found = []
    for index in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(index)
        if info["maxInputChannels"] > 0:
            api = pa.get_host_api_info_by_index(info["hostApi"])["name"]
            found.append(
                InputDevice(
                    index,
                    info["name"],
                    int(info["maxInputChannels"]),
                    round(info["defaultSampleRate"]),
                    api,
                )
            )
    return found


@contextmanager
def _stderr_captured(noise: list[str]) -> Iterator[None]:
    """Point file descriptor 2 at a temporary file meanwhile; keep what was written."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            noise.extend(sink.read().decode(errors="replace").splitlines())


def _quote(noise: list[str]) -> str:
    lines = [line.strip() for line in noise if line.strip()]
    if not lines:
        return ""
    return " (the audio system said: " + " | ".join(lines[-_NOISE_LINES:]) + ")"
