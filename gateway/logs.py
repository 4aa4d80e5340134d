"""structlog set-up: JSON for machines (journald when it runs), readable text on a terminal.

Per-call events are never logged: a log line's own time stamp would record when a call
happened. Only lifecycle messages and totals are logged, and every event passes through the
redaction processor before it is rendered.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from gateway.redact import redact_processor

_JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}


class _JournaldLogger:
    """Sends each rendered event to journald; falls back to stderr if journald went away."""

    def __init__(self, fallback: TextIO) -> None:
        from systemd import journal  # optional: only on boxes with journald

        self._journal = journal
        self._fallback = fallback

    def msg(self, **fields: str) -> None:
        try:
            self._journal.send(**fields)
        except OSError:
            print(fields["MESSAGE"], file=self._fallback, flush=True)

    debug = info = warning = error = critical = exception = msg


def _journald_renderer(_logger: object, _method: str, event: dict[str, Any]) -> dict[str, str]:
    return {
        "MESSAGE": json.dumps(event, sort_keys=True, default=str),
        "PRIORITY": str(_PRIORITY.get(event.get("level", "info"), 6)),
        "SYSLOG_IDENTIFIER": "callveil",
        "EVENT": str(event.get("event", "")),
    }


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once at start-up; ``fmt`` is 'auto', 'json' or 'console'."""
    stream = stream if stream is not None else sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="%Y-%m-%dT%H:%M:%SZ", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    logger_factory: Any
    if use_console:
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=stream.isatty())]
        logger_factory = structlog.PrintLoggerFactory(stream)
    elif _journald_available() and stream is sys.stderr:
        processors = [*shared, _journald_renderer]
        logger_factory = lambda *_: _JournaldLogger(stream)  # noqa: E731
    else:
        processors = [*shared, structlog.processors.JSONRenderer(sort_keys=True)]
        logger_factory = structlog.PrintLoggerFactory(stream)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=logger_factory,
        cache_logger_on_first_use=False,
    )


def _journald_available() -> bool:
    if not _JOURNAL_SOCKET.exists():
        return False
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    return True
