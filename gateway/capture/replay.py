"""``callveil replay`` and ``callveil capture-check``: the capture stage with a summary."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from gateway.capture.pcapfile import CaptureFileError, CaptureReader
from gateway.capture.progress import ProgressBar
from gateway.capture.session import CaptureSession
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
    print(
        f"events handed on        {events['started']} calls started, {events['chunks']} audio "
        f"chunks ({events['audio_seconds'] / 100:.1f} s), {events['ended']} calls ended"
    )
    return 0


def _count(batch: list[CaptureEvent], events: Counter[str]) -> None:
    for event in batch:
        if isinstance(event, AudioChunk):
            events["chunks"] += 1
            events["audio_seconds"] += round(100 * len(event.pcm) / event.sample_rate)
        elif isinstance(event, CallStarted):
            events["started"] += 1
        elif isinstance(event, CallEnded):
            events["ended"] += 1
