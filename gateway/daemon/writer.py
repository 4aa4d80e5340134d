"""The one thread that owns the vault and the aggregates: results in, sealed and counted.

Records are sealed with the coarse ISO week as their period (their expiry is rounded to a
Monday too), so neither says which day a call took place. A call is counted in the
aggregates when it ends, in its queue's bucket (the site's without one), with its summary
when it was analysed. Closed buckets are handed to the publisher's outbox every
``release_interval_s``; with no broker configured they wait in the aggregator's own table.
"""

from __future__ import annotations

import datetime as dt
import queue
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from gateway.aggregates.aggregator import Aggregator
from gateway.aggregates.period import period_of
from gateway.config import Config
from gateway.daemon.calls import CallDone, Output, Sealable
from gateway.events import Policy
from gateway.publish.outbox import OutboxFull
from gateway.vault.retention import expiry_for
from gateway.vault.store import Vault

log = structlog.get_logger(__name__)

# Records are large (a recording part is megabytes): a short queue makes the analysis threads
# wait for the vault rather than piling records up in memory.
_QUEUE_RECORDS = 16
_IDLE_WAIT_S = 0.5
_RETRY_S = 1.0


class Writer:
    """Seals results into ``vault``, counts calls in ``aggregator``, releases to ``publish``."""

    def __init__(
        self,
        config: Config,
        vault: Vault,
        aggregator: Aggregator,
        publish: Callable[[dict[str, Any]], object] | None,
        *,
        clock: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        self._config = config
        self._vault = vault
        self._aggregator = aggregator
        self._publish = publish
        self._clock = clock
        self._queue: queue.Queue[Output | None] = queue.Queue(_QUEUE_RECORDS)
        self._next_release = 0.0
        self._outbox_full = False
        self._release_failing = False
        self.busy_since: float | None = None
        self.counters: Counter[str] = Counter()
        self.thread = threading.Thread(target=self._run, name="callveil-writer")

    def start(self) -> Writer:
        self.thread.start()
        return self

    def emit(self, output: Output) -> None:
        """Queue a result (waits while the queue is full; results are never dropped)."""
        while True:
            try:
                self._queue.put(output, timeout=_IDLE_WAIT_S)
                return
            except queue.Full:
                if not self.thread.is_alive():
                    raise RuntimeError("the writer thread has died; see its logged error") from None

    def drain(self) -> None:
        """Write everything queued, hand closed buckets on once more, and stop."""
        self._queue.put(None)
        self.thread.join()

    def stalled(self, limit_s: float) -> bool:
        since = self.busy_since
        return (since is not None and time.monotonic() - since > limit_s) or (
            not self.thread.is_alive()
        )

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=_IDLE_WAIT_S)
            except queue.Empty:
                self._busy(self._release_if_due)
                continue
            if item is None:
                break
            self._busy(lambda item=item: self._write_until_done(item))
            self._busy(self._release_if_due)
        self._release(force=True)

    def _busy(self, step: Callable[[], None]) -> None:
        self.busy_since = time.monotonic()
        try:
            step()
        finally:
            self.busy_since = None

    def _write_until_done(self, item: Output) -> None:
        """Write ``item``; while the disk refuses (full, read-only), wait and try again."""
        failing = False
        while True:
            try:
                self._write(item)
            except (sqlite3.OperationalError, OSError) as exc:
                if not failing:
                    log.error(
                        "store_failed",
                        error=str(exc),
                        fix="free space on the state directory's filesystem; results wait in "
                        "memory and analysis of new audio slows down meanwhile",
                    )
                failing = True
                self.busy_since = time.monotonic()  # waiting on the disk is not a stuck stage
                time.sleep(_RETRY_S)
                continue
            if failing:
                log.info("store_recovered")
            return

    def _write(self, item: Output) -> None:
        today = self._clock()
        if isinstance(item, Sealable):
            self._vault.put(
                item.kind,
                item.data,
                partition=item.partition,
                period=period_of(today, "week"),
                expires=expiry_for(self._config.vault, item.partition, item.kind, today),
            )
            self.counters[f"sealed_{item.partition}_{item.kind}"] += 1
            return
        self._count(item)

    def _count(self, done: CallDone) -> None:
        summary = done.summary if done.policy is Policy.ANALYTICS else None
        self._aggregator.count(summary, done.queue)
        self.counters[f"counted_{done.policy.value}"] += 1

    def _release_if_due(self) -> None:
        if time.monotonic() >= self._next_release:
            self._release(force=False)

    def _release(self, *, force: bool) -> None:
        self._next_release = time.monotonic() + self._config.daemon.release_interval_s
        if self._publish is None:
            return
        try:
            handed = self._aggregator.tick(self._publish)
        except OutboxFull:
            if not self._outbox_full:
                log.error(
                    "outbox_full",
                    fix="the broker has not acknowledged for a long time: check the network "
                    "and the broker; released buckets wait in the aggregator meanwhile",
                )
            self._outbox_full = True
            return
        except (sqlite3.Error, OSError, TimeoutError, RuntimeError) as exc:
            if force or not self._release_failing:
                log.error(
                    "release_failed",
                    error=str(exc),
                    fix="released buckets stay in the aggregator and are handed on later",
                )
            self._release_failing = True
            return
        self._outbox_full = self._release_failing = False
        if handed:
            self.counters["buckets_released"] += handed
