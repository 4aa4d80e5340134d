"""``callveil run``: the daemon's privileged start.

The order matters: the capture socket is opened while the process may still hold
CAP_NET_RAW, then privileges are dropped, and only then is the rest of the daemon imported
and started (keys, where the TPM provider extends the release measurement before it unseals
anything; vault; aggregates; publisher; models). Importing the models starts threads, and a
thread started before the drop would keep the capabilities.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

from gateway.capture.pcapfile import CaptureFileError, CaptureReader, Frame
from gateway.config import Config, load_config
from gateway.daemon.privileges import PrivilegeError, drop_privileges
from gateway.logs import configure_logging

log = structlog.get_logger(__name__)


class FileSource(contextlib.AbstractContextManager["FileSource"]):
    """A capture file read once, as fast as the pipeline takes it."""

    def __init__(self, path: Path) -> None:
        self.reader = CaptureReader(path)

    def __iter__(self) -> Iterator[Frame | None]:
        yield from self.reader

    def __exit__(self, *exc: object) -> None:
        return None


def run_daemon(config_path: Path, *, pcap: Path | None = None) -> int:
    """Run until SIGTERM (live) or the end of ``pcap``; the exit code for the shell."""
    config = load_config(config_path)
    configure_logging(config.logging.level, config.logging.format)
    try:
        source = _open_source(config, pcap)
    except CaptureFileError as exc:
        print(f"callveil: cannot read {pcap}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"callveil: cannot open the capture: {exc}", file=sys.stderr)
        return 1
    with source:
        try:
            how = drop_privileges(config.daemon.user)
        except PrivilegeError as exc:
            print(f"callveil: refusing to run privileged: {exc}", file=sys.stderr)
            return 2
        log.info("privileges_dropped", now=how)
        from gateway.daemon.service import Daemon

        return Daemon(config, config_path, source, lossless=pcap is not None).run()


def _open_source(config: Config, pcap: Path | None) -> contextlib.AbstractContextManager:
    if pcap is not None:
        return FileSource(pcap)
    from gateway.capture.live import LiveCaptureError, LiveSource

    capture = config.capture
    try:
        return LiveSource(
            capture.interface,
            sip_ports=capture.sip_ports,
            snaplen=capture.snaplen,
            buffer_bytes=capture.socket_buffer_mib << 20,
            kernel_filter=capture.kernel_filter,
        )
    except LiveCaptureError as exc:
        raise OSError(f"{capture.interface}: {exc}") from None
