"""Capture events to analysis threads: one call always on the same thread, queues bounded.

The capture thread calls ``dispatch``; each worker thread owns the handlers of its calls (a
call is routed by its random reference) and runs them in event order. Queues are bounded:
when a worker falls behind, audio of analysed calls is dropped and counted against the
call's coverage, while call starts and ends and contract audio wait for room (nothing that
is evidence or bookkeeping is ever dropped). New sampled calls shed keyword spotting, then
emotion scoring, as the queues fill (``update_load``, on the daemon's status timer);
trimming, sampling and anonymization are never shed (the first two happen in capture, the
last inside every analysed call's pipeline).

A file replay (``lossless``) waits for room instead of dropping anything: reading a file
faster than real time is not overload.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass

import structlog

from gateway.config import Config
from gateway.daemon.calls import AnalysedCall, CallHandler, ContractCall, DroppedCall, Emit
from gateway.events import AudioChunk, CallEnded, CallRef, CallStarted, CaptureEvent, Policy
from gateway.models.emotion import EmotionModel
from gateway.models.keywords import KeywordSpotter

log = structlog.get_logger(__name__)

_IDLE_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class Models:
    """The models, loaded once and shared by every call (sessions are thread-safe)."""

    emotion: EmotionModel
    keywords: KeywordSpotter | None  # None when keywords.enabled is false

    @classmethod
    def load(cls, config: Config) -> Models:
        keywords = KeywordSpotter.from_config(config.keywords) if config.keywords.enabled else None
        return cls(EmotionModel.from_config(config.emotion), keywords)


@dataclass(frozen=True, slots=True)
class _Start:
    event: CallStarted
    emotion: EmotionModel | None
    keywords: KeywordSpotter | None


_Item = _Start | AudioChunk | CallEnded | None  # None: drain and stop


class _Worker:
    def __init__(self, index: int, config: Config, emit: Emit, capacity: int) -> None:
        self.queue: queue.Queue[_Item] = queue.Queue(capacity)
        self.busy_since: float | None = None  # monotonic start of the item in hand
        self._config = config
        self._emit = emit
        self._handlers: dict[CallRef, CallHandler] = {}
        self._lost_lock = threading.Lock()
        self._lost: Counter[CallRef] = Counter()
        self.thread = threading.Thread(target=self._run, name=f"callveil-analysis-{index}")

    @property
    def calls(self) -> int:
        return len(self._handlers)

    def count_lost(self, ref: CallRef, samples: int) -> None:
        with self._lost_lock:
            self._lost[ref] += samples

    def _run(self) -> None:
        while True:
            try:
                item = self.queue.get(timeout=_IDLE_WAIT_S)
            except queue.Empty:
                continue
            if item is None:
                break
            self.busy_since = time.monotonic()
            try:
                self._take(item)
            except Exception:
                # one call's failure must not stop the others: it is logged (no identity)
                log.exception("call_failed", stage="analysis")
                self._handlers.pop(_ref_of(item), None)
            finally:
                self.busy_since = None
        for handler in self._handlers.values():  # calls still open when the capture stopped
            handler.finish()
        self._handlers.clear()

    def _take(self, item: _Start | AudioChunk | CallEnded) -> None:
        if isinstance(item, _Start):
            self._handlers[item.event.ref] = self._open(item)
            return
        handler = self._handlers.get(item.ref)
        if handler is None:
            return  # a call whose start this process never saw (it was restarted mid-call)
        if isinstance(item, AudioChunk):
            handler.push(item)
            return
        with self._lost_lock:
            lost = self._lost.pop(item.ref, 0)
        if lost:
            handler.lost(lost)
        del self._handlers[item.ref]
        handler.finish()

    def _open(self, start: _Start) -> CallHandler:
        policy, queue = start.event.policy, start.event.queue
        if policy is Policy.ANALYTICS:
            return AnalysedCall(
                self._config, start.emotion, start.keywords, self._emit, queue=queue
            )
        if policy is Policy.CONTRACT:
            return ContractCall(self._config, self._emit, queue=queue)
        return DroppedCall(self._emit, queue=queue)


def _ref_of(item: _Start | AudioChunk | CallEnded) -> CallRef:
    return item.event.ref if isinstance(item, _Start) else item.ref


class Pipeline:
    """The analysis threads; ``dispatch`` from one capture thread, ``drain`` at the end."""

    def __init__(self, config: Config, models: Models, emit: Emit, *, lossless: bool) -> None:
        daemon = config.daemon
        count = daemon.workers or _cores()
        self._workers = [_Worker(i, config, emit, daemon.queue_chunks) for i in range(count)]
        self._models = models
        self._shed_keywords_at = daemon.shed_keywords_at
        self._shed_emotion_at = daemon.shed_emotion_at
        self._lossless = lossless
        self._policies: dict[CallRef, Policy] = {}
        self._shedding = ""  # the stages new calls skip: "", "keywords" or "emotion" (and keywords)
        self.counters: Counter[str] = Counter()

    def start(self) -> Pipeline:
        for worker in self._workers:
            worker.thread.start()
        return self

    def fill(self) -> float:
        """How full the fullest queue is, 0..1."""
        return max(w.queue.qsize() / w.queue.maxsize for w in self._workers)

    def open_calls(self) -> int:
        return sum(w.calls for w in self._workers)

    def stalled(self, limit_s: float) -> bool:
        """True when a worker has been busy with one item for longer than ``limit_s``."""
        now = time.monotonic()
        for worker in self._workers:
            since = worker.busy_since
            if since is not None and now - since > limit_s:
                return True
        return not all(w.thread.is_alive() for w in self._workers)

    def dispatch(self, events: list[CaptureEvent]) -> None:
        for event in events:
            worker = self._workers[int(event.ref.token[:8], 16) % len(self._workers)]
            if isinstance(event, CallStarted):
                self._policies[event.ref] = event.policy
                self.counters[f"calls_{event.policy.value}"] += 1
                worker.queue.put(self._start(event))
            elif isinstance(event, CallEnded):
                self._policies.pop(event.ref, None)
                self.counters["calls_ended"] += 1
                worker.queue.put(event)
            elif self._lossless or self._policies.get(event.ref) is not Policy.ANALYTICS:
                worker.queue.put(event)
            else:
                try:
                    worker.queue.put_nowait(event)
                except queue.Full:
                    self.counters["chunks_lost"] += 1
                    worker.count_lost(event.ref, event.pcm.size)

    def update_load(self) -> None:
        """Decide from the queues' fill what newly sampled calls skip.

        Called on a timer by the daemon, not at call starts, so that neither the decision nor
        its log line is tied to the moment one call began.
        """
        fill = self.fill()
        level = (
            "emotion" if fill >= self._shed_emotion_at
            else "keywords" if fill >= self._shed_keywords_at
            else ""
        )  # fmt: skip
        if level != self._shedding:
            log.warning("analysis_shed", shed=level or "nothing", queue_fill=round(fill, 2))
            self._shedding = level

    def _start(self, event: CallStarted) -> _Start:
        if event.policy is not Policy.ANALYTICS:
            return _Start(event, None, None)
        emotion = None if self._shedding == "emotion" else self._models.emotion
        keywords = None if self._shedding else self._models.keywords
        if emotion is None:
            self.counters["shed_emotion"] += 1
        if keywords is None and self._models.keywords is not None:
            self.counters["shed_keywords"] += 1
        return _Start(event, emotion, keywords)

    def drain(self) -> None:
        """Finish every queued event and every open call, then stop the threads."""
        for worker in self._workers:
            worker.queue.put(None)
        for worker in self._workers:
            worker.thread.join()


def _cores() -> int:
    return max(1, len(os.sched_getaffinity(0)))
