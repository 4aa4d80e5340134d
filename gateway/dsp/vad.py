"""Voice activity: silero-vad's ONNX model on onnxruntime alone, and a hysteresis gate.

The model (``silero_vad.onnx``, MIT, see ``silero_vad.LICENSE``) scores 32 ms windows and
carries a recurrent state plus a few samples of context from one window to the next; that
state lives in one ``SileroVad`` per call direction, while the inference session is made once
per process and shared (onnxruntime sessions are safe to run from several threads).
``SpeechGate`` turns the per-frame probabilities into speech runs with hysteresis, a minimum
speech length, a hangover and a maximum length.
"""

from __future__ import annotations

import functools
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime

from gateway.dsp.frames import FRAME_SECONDS

MODEL = Path(__file__).with_name("silero_vad.onnx")
_WINDOW = {8000: 256, 16000: 512}  # the window lengths the model was trained on
_CONTEXT = {8000: 32, 16000: 64}
_STATE_SHAPE = (2, 1, 128)
_HYSTERESIS = 0.15  # speech ends below threshold - this, as in silero's own segmenter
_PAD_FRAMES = 2  # 40 ms kept either side of a run: onsets and releases score low


@functools.cache
def session() -> onnxruntime.InferenceSession:
    """The process-wide inference session, on one thread (the box has few cores)."""
    if not MODEL.is_file():
        raise FileNotFoundError(
            f"the VAD model {MODEL} is missing; it ships inside the callveil package: reinstall it"
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(
        str(MODEL), sess_options=options, providers=["CPUExecutionProvider"]
    )


class SileroVad:
    """Speech probability of each 20 ms frame of one direction.

    A frame gets the probability of the model window that holds its middle sample, so the
    answer for a frame can come up to one window (32 ms) after the frame went in.
    """

    __slots__ = (
        "_context",
        "_frame",
        "_frames_in",
        "_frames_out",
        "_pending",
        "_probabilities",
        "_rate",
        "_session",
        "_state",
        "_window",
        "_windows_done",
    )

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in _WINDOW:
            raise ValueError(
                f"the VAD model runs at 8000 or 16000 Hz, not {sample_rate} Hz; "
                "resample to one of them first"
            )
        self._session = session()
        self._rate = np.array(sample_rate, dtype=np.int64)
        self._window = _WINDOW[sample_rate]
        self._frame = round(sample_rate * FRAME_SECONDS)
        self._state = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT[sample_rate], dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._probabilities: deque[float] = deque()  # windows not yet used up, oldest first
        self._windows_done = 0
        self._frames_in = 0
        self._frames_out = 0

    def push(self, frame: np.ndarray) -> list[float]:
        """Take one frame; returns the probabilities of the frames now decided, oldest first."""
        if frame.shape != (self._frame,):
            raise ValueError(f"expected a frame of {self._frame} samples, got {frame.shape}")
        self._frames_in += 1
        self._pending = np.concatenate([self._pending, frame.astype(np.float32, copy=False)])
        while self._pending.size >= self._window:
            self._score(self._pending[: self._window])
            self._pending = self._pending[self._window :]
        return self._decided()

    def flush(self) -> list[float]:
        """The probabilities still owed, scoring the held samples padded with silence."""
        if self._frames_out < self._frames_in and self._pending.size:
            window = np.zeros(self._window, dtype=np.float32)
            window[: self._pending.size] = self._pending
            self._score(window)
            self._pending = self._pending[:0]
        return self._decided()

    def _score(self, window: np.ndarray) -> None:
        audio = np.concatenate([self._context, window])[None, :]
        output, self._state = self._session.run(
            None, {"input": audio, "state": self._state, "sr": self._rate}
        )
        self._context = audio[0, -self._context.size :]
        self._probabilities.append(float(output[0, 0]))
        self._windows_done += 1

    def _decided(self) -> list[float]:
        out: list[float] = []
        first_held = self._windows_done - len(self._probabilities)
        while self._frames_out < self._frames_in:
            middle = self._frames_out * self._frame + self._frame // 2
            window = middle // self._window
            if window >= self._windows_done:
                break
            while first_held < window:
                self._probabilities.popleft()
                first_held += 1
            out.append(self._probabilities[0])
            self._frames_out += 1
        return out


@dataclass(frozen=True, slots=True)
class SpeechRun:
    start: int  # first frame
    end: int  # one past the last frame
    continued: bool  # the previous run was cut at the maximum length and this one follows it


class SpeechGate:
    """Hysteresis over frame probabilities; returns closed runs of speech frames.

    Speech starts at ``threshold`` and lasts while the probability stays at or above
    ``threshold - 0.15``; it ends after ``min_silence`` frames below that. Runs shorter than
    ``min_speech`` frames are dropped and runs longer than ``max_frames`` are cut.
    """

    __slots__ = (
        "_continued",
        "_first_speech",
        "_floor",
        "_frames",
        "_last_speech",
        "_max",
        "_min_silence",
        "_min_speech",
        "_previous_end",
        "_start",
        "_threshold",
    )

    def __init__(
        self, threshold: float, min_speech: int, min_silence: int, max_frames: int
    ) -> None:
        if not (_HYSTERESIS < threshold < 1 and 0 < min_speech < max_frames and min_silence > 0):
            raise ValueError(
                f"speech gate threshold={threshold} min_speech={min_speech} "
                f"min_silence={min_silence} max_frames={max_frames} is inconsistent: the threshold "
                f"must lie in ({_HYSTERESIS}, 1) and 0 < min_speech < max_frames"
            )
        self._threshold = threshold
        self._floor = threshold - _HYSTERESIS
        self._min_speech = min_speech
        self._min_silence = max(min_silence, _PAD_FRAMES)
        self._max = max_frames
        self._frames = 0  # frames seen
        self._start: int | None = None  # first frame of the open run
        self._first_speech = 0
        self._last_speech = 0
        self._previous_end = 0
        self._continued = False

    @property
    def keep_from(self) -> int:
        """Oldest frame that a run may still include."""
        if self._start is not None:
            return self._start
        return max(self._previous_end, self._frames - _PAD_FRAMES)

    def push(self, probability: float) -> list[SpeechRun]:
        n = self._frames
        self._frames += 1
        if self._start is None:
            if probability >= self._threshold:
                self._start = max(n - _PAD_FRAMES, self._previous_end)
                self._first_speech = self._last_speech = n
            return []
        if probability >= self._floor:
            self._last_speech = n
        elif n - self._last_speech >= self._min_silence:
            return self._close(self._last_speech + 1 + _PAD_FRAMES)
        if self._frames - self._start >= self._max:
            run = SpeechRun(self._start, self._frames, self._continued)
            self._start = self._previous_end = self._frames
            self._continued = True
            return [run]
        return []

    def flush(self) -> list[SpeechRun]:
        """Close the run in progress at the end of the stream."""
        if self._start is None:
            return []
        return self._close(min(self._last_speech + 1 + _PAD_FRAMES, self._frames))

    def _close(self, end: int) -> list[SpeechRun]:
        assert self._start is not None
        run = SpeechRun(self._start, end, self._continued)
        long_enough = self._last_speech + 1 - self._first_speech >= self._min_speech
        self._start = None
        self._continued = False
        if run.end <= run.start or not (long_enough or run.continued):
            return []
        self._previous_end = end
        return [run]
