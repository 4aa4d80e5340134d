"""The running daemon: keys, vault, aggregates, publisher, models, and the capture loop.

Started by ``gateway.daemon.run`` once the capture source is open and privileges are gone.
The capture loop runs in the main thread; it feeds the analysis threads and sends the
systemd notifications, so a stuck capture loop stops the watchdog pings as surely as a
stuck stage does.

SIGTERM (or SIGINT) stops the capture, ends the calls still open, lets every queued result
reach the vault and the aggregates, hands closed buckets to the outbox, says "offline" to
the broker and exits 0. Open buckets stay on disk for the next start: a bucket is released
only after its period closes. SIGHUP re-reads the configuration: the log level and the
sampling key take effect at once, other changed sections are reported as needing a restart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType

import structlog

from gateway.aggregates.aggregator import open_aggregator
from gateway.capture.session import CaptureReport, CaptureSession
from gateway.config import Config, ConfigError, load_config
from gateway.daemon.notify import Notifier
from gateway.daemon.pipeline import Models, Pipeline
from gateway.daemon.writer import Writer
from gateway.events import CaptureEvent
from gateway.logs import configure_logging
from gateway.publish.publisher import Publisher, open_publisher
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import open_configured_provider
from gateway.seal.keyprovider import KeyProvider
from gateway.seal.sampling_key import SamplingKey
from gateway.vault.records import PARTITIONS
from gateway.vault.store import Vault

log = structlog.get_logger(__name__)

# sections that SIGHUP applies at once; every other change waits for a restart
_RELOADABLE = frozenset({"logging"})
_DELIVERY_WAIT_S = 30.0


class _Signals:
    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self.reload.set()


class Daemon:
    def __init__(
        self,
        config: Config,
        config_path: Path,
        source: contextlib.AbstractContextManager,
        *,
        lossless: bool,
    ) -> None:
        self._config = config
        self._config_path = config_path
        self._source = source
        self._lossless = lossless
        self._signals = _Signals()
        self._notifier = Notifier()
        self._next_status = 0.0

    def run(self) -> int:
        config = self._config
        self._signals.install()
        provider = open_configured_provider(config, self._config_path)
        with contextlib.ExitStack() as stack:
            stack.callback(provider.close)
            sealers = {p: Sealer(provider, label=p) for p in PARTITIONS}
            vault = stack.enter_context(Vault(Path(config.vault.path), sealers))
            aggregator = stack.enter_context(open_aggregator(config))
            publisher = self._open_publisher(provider, stack)
            models = Models.load(config)
            key = SamplingKey.load_or_create(Path(config.privacy.sampling_key_file))
            session = CaptureSession(config, key)
            writer = Writer(
                config, vault, aggregator, publisher.publish if publisher is not None else None
            ).start()
            pipeline = Pipeline(config, models, writer.emit, lossless=self._lossless).start()
            self._notifier.ready(self._status(pipeline, writer, publisher))
            log.info("started", provider=provider.name, workers=config.daemon.workers or "auto")
            try:
                self._capture(session, pipeline, writer, publisher)
            finally:
                self._notifier.stopping("draining: finishing open calls and writing results")
                pipeline.dispatch(session.finish())
                pipeline.drain()
                writer.drain()
                if self._lossless and publisher is not None:
                    self._deliver(publisher)
            counters = pipeline.counters + writer.counters
            log.info("captured", **_capture_totals(session.report))
            log.info("stopped", **{k: v for k, v in sorted(counters.items())})
            if self._lossless:
                _print_summary(counters)
        return 0

    def _open_publisher(
        self, provider: KeyProvider, stack: contextlib.ExitStack
    ) -> Publisher | None:
        if not self._config.mqtt.host:
            log.warning(
                "no_broker",
                fix="mqtt.host is empty: closed buckets wait in the aggregator until a broker "
                "is configured",
            )
            return None
        publisher = open_publisher(self._config, provider).start()
        stack.callback(publisher.close)
        return publisher

    @staticmethod
    def _deliver(publisher: Publisher) -> None:
        """After a file replay, give the broker a moment to take what was released."""
        if not publisher.wait_idle(_DELIVERY_WAIT_S):
            log.warning(
                "undelivered",
                fix="the broker has not acknowledged everything; the outbox keeps it for the "
                "next start",
            )

    def _capture(
        self,
        session: CaptureSession,
        pipeline: Pipeline,
        writer: Writer,
        publisher: Publisher | None,
    ) -> None:
        live = not self._lossless
        for frame in self._source:  # type: ignore[attr-defined]
            batch: list[CaptureEvent] = []
            if frame is None:
                # live capture times are the kernel's wall clock: an idle line moves on with it
                session.tick(time.time(), batch)
            else:
                batch = session.feed(frame)
            pipeline.dispatch(batch)
            if live and session.media_ports_changed:
                # only media of analysed and contract calls passes the kernel filter
                self._source.update_media_ports(session.media_ports())  # type: ignore[attr-defined]
            self._housekeeping(session, pipeline, writer, publisher)
            if self._signals.stop.is_set():
                log.info("stopping", reason="signal")
                return

    def _housekeeping(
        self,
        session: CaptureSession,
        pipeline: Pipeline,
        writer: Writer,
        publisher: Publisher | None,
    ) -> None:
        limit = self._config.daemon.stall_s
        self._notifier.heartbeat(not pipeline.stalled(limit) and not writer.stalled(limit))
        if self._signals.reload.is_set():
            self._signals.reload.clear()
            self._reload(session)
        now = time.monotonic()
        if now >= self._next_status:
            self._next_status = now + self._config.daemon.status_interval_s
            pipeline.update_load()
            self._notifier.status(self._status(pipeline, writer, publisher))

    def _reload(self, session: CaptureSession) -> None:
        self._notifier.reloading()
        try:
            config = load_config(self._config_path)
        except ConfigError as exc:
            log.error("reload_refused", error=str(exc), fix="the running configuration stays")
            self._notifier.ready("reload refused: the configuration file is invalid")
            return
        configure_logging(config.logging.level, config.logging.format)
        session.use_sampling_key(SamplingKey.load_or_create(Path(config.privacy.sampling_key_file)))
        waiting = sorted(
            name
            for name in config.__dataclass_fields__
            if name not in _RELOADABLE and getattr(config, name) != getattr(self._config, name)
        )
        if waiting:
            log.warning("reload_needs_restart", sections=waiting)
        log.info("reloaded")
        self._notifier.ready("configuration reloaded")

    @staticmethod
    def _status(pipeline: Pipeline, writer: Writer, publisher: Publisher | None) -> str:
        c = pipeline.counters
        broker = "no broker" if publisher is None else (
            "broker connected" if publisher.connected else "broker unreachable"
        )  # fmt: skip
        alarms = sorted(publisher.alarms) if publisher is not None else []
        if alarms:
            broker += f", alarms: {','.join(alarms)}"
        return (
            f"{c['calls_analytics']} analysed, {c['calls_contract']} contract, "
            f"{c['calls_drop']} not sampled; {pipeline.open_calls()} open; "
            f"queue {pipeline.fill():.0%}; {c['chunks_lost']} chunks shed; "
            f"{sum(v for k, v in writer.counters.items() if k.startswith('sealed_'))} sealed; "
            f"{broker}"
        )


def _capture_totals(report: CaptureReport) -> dict[str, int]:
    """The capture's whole-number totals that are not zero, malformed and stray packets among
    them: counts only, nothing that identifies a call."""
    totals = {f.name: getattr(report, f.name) for f in dataclasses.fields(report)}
    return {name: value for name, value in totals.items() if type(value) is int and value}


def _print_summary(counters: Counter[str]) -> None:
    calls = sum(counters[f"calls_{p}"] for p in ("analytics", "contract", "drop"))
    counted = sum(counters[f"counted_{p}"] for p in ("analytics", "contract", "drop"))
    print(
        f"calls                   {calls}: {counters['calls_analytics']} analysed, "
        f"{counters['calls_contract']} contract, {counters['calls_drop']} not sampled\n"
        f"vault                   {counters['sealed_analytics_recording']} anonymized recording "
        f"parts, {counters['sealed_analytics_summary']} call summaries, "
        f"{counters['sealed_contract_recording']} contract recording parts (sealed)\n"
        f"aggregates              {counted} calls counted; "
        f"{counters['buckets_released']} closed buckets handed to the outbox"
    )
