"""``callveil replay`` and ``callveil capture-check``: the capture stage with a summary."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.capture.pcapfile import CaptureFileError, CaptureReader
from gateway.capture.progress import ProgressBar
from gateway.capture.session import CaptureReport, CaptureSession
from gateway.capture.summary import format_report
from gateway.config import Config
from gateway.events import AudioChunk, CallEnded, CallStarted, CaptureEvent
from gateway.seal.sampling_key import SamplingKey


def replay_file(path: Path, config: Config, *, progress: bool = True) -> int:
    try:
        reader = CaptureReader(path)
    except (CaptureFileError, OSError) as exc:
        print(f"callveil: cannot replay {path}: {exc}", file=sys.stderr)
        return 1
    session = CaptureSession(
        config, SamplingKey.load_or_create(Path(config.privacy.sampling_key_file))
    )
    bar = ProgressBar(reader.size, label=path.name[:24]) if progress else None
    events: Counter[str] = Counter()
    for frame in reader:
        _count(session.feed(frame), events)
        if bar is not None:
            bar.update(reader.position)
    _count(session.finish(), events)
    if bar is not None:
        bar.close()
    session.report.truncated = reader.truncated
    print(format_report(session.report, sample_rate=config.privacy.sample_rate))
    _print_events(events)
    return 0


def _print_events(events: Counter[str]) -> None:
    print(
        f"events handed on        {events['started']} calls started, {events['chunks']} audio "
        f"chunks ({events['audio_seconds'] / 100:.1f} s), {events['ended']} calls ended"
    )


def _count(batch: list[CaptureEvent], events: Counter[str]) -> None:
    for event in batch:
        if isinstance(event, AudioChunk):
            events["chunks"] += 1
            events["audio_seconds"] += round(100 * len(event.pcm) / event.sample_rate)
        elif isinstance(event, CallStarted):
            events["started"] += 1
        elif isinstance(event, CallEnded):
            events["ended"] += 1


def check_interface(interface: str, seconds: float, config: Config) -> int:
    """Listen on the mirror port for ``seconds`` and summarise it, exactly as a replay would."""
    from gateway.capture.live import LiveCaptureError

    try:
        result = listen(interface, config, seconds=seconds, progress=True)
    except LiveCaptureError as exc:
        print(f"callveil: cannot listen on {interface}: {exc}", file=sys.stderr)
        return 1
    print(format_report(result.report, sample_rate=config.privacy.sample_rate))
    print(
        f"kernel                  {result.kernel_received} frames passed the"
        f" {result.kernel_filter} filter, {result.kernel_dropped} dropped (ring full)"
    )
    _print_events(result.events)
    return 0


@dataclass(slots=True)
class ListenResult:
    report: CaptureReport
    events: Counter[str]
    kernel_received: int
    kernel_dropped: int
    kernel_filter: str


def listen(
    interface: str,
    config: Config,
    *,
    seconds: float,
    until: Callable[[], bool] | None = None,
    progress: bool = False,
) -> ListenResult:
    """The capture stage on a live interface, with the kernel filter following the calls."""
    from gateway.capture.live import LiveSource

    capture = config.capture
    session = CaptureSession(
        config, SamplingKey.load_or_create(Path(config.privacy.sampling_key_file))
    )
    events: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    bar = (
        ProgressBar(round(seconds * 1000), label=f"listening on {interface}") if progress else None
    )
    with LiveSource(
        interface,
        sip_ports=capture.sip_ports,
        snaplen=capture.snaplen,
        buffer_bytes=capture.socket_buffer_mib << 20,
        kernel_filter=capture.kernel_filter,
    ) as source:
        for frame in source:
            if frame is None:
                batch: list[CaptureEvent] = []
                # live capture times are the kernel's wall clock: an idle line moves on with it
                session.tick(time.time(), batch)
                _count(batch, events)
            else:
                _count(session.feed(frame), events)
            if session.media_ports_changed:
                # only media of analysed and contract calls passes the kernel filter
                source.update_media_ports(session.media_ports())
            left = deadline - time.monotonic()
            if bar is not None:
                bar.update(round((seconds - left) * 1000))
            if left <= 0 or (until is not None and until()):
                break
        stats = source.statistics()
        if not capture.kernel_filter:
            kernel_filter = "pass-everything (capture.kernel_filter = false)"
        elif source.program.all_udp:
            kernel_filter = "all-UDP (more media ports than one filter holds)"
        else:
            kernel_filter = "per-call"
    _count(session.finish(), events)
    if bar is not None:
        bar.close()
    return ListenResult(session.report, events, stats.received, stats.dropped, kernel_filter)
