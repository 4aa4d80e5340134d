"""``callveil doctor``: run the checks in order, print each finding, exit 0, 1 or 2.

Exit 0 when nothing failed (warnings allowed), 1 when a check failed, 2 when the
configuration does not load (nothing else can be checked then). The capture check runs last:
it listens for ``--seconds`` while the quick checks have already printed.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from gateway.config import Config, ConfigError, load_config
from gateway.doctor.findings import Finding, Status, fail
from gateway.logs import configure_logging

Checks = list[tuple[str, Callable[[], list[Finding]]]]
SKIPPABLE = (
    "keys",
    "models",
    "models.emotion",
    "models.keywords",
    "models.vad",
    "broker",
    "disk",
    "memory",
    "clock",
    "capture",
)
_WIDTH = 18


def _checks(config: Config, config_path: Path, seconds: float) -> Checks:
    # imported here: every other callveil command imports this module through the parser
    from gateway.doctor.broker import check_broker
    from gateway.doctor.capture import check_capture
    from gateway.doctor.clock import check_clock
    from gateway.doctor.configfile import check_config_file
    from gateway.doctor.keys import check_keys
    from gateway.doctor.models import check_emotion, check_keywords, check_vad
    from gateway.doctor.resources import check_disk, check_memory, state_paths

    def capture() -> list[Finding]:
        if sys.stderr.isatty():
            interface = config.capture.interface
            print(f"listening on {interface} for {seconds:g} s ...", file=sys.stderr, flush=True)
        return check_capture(config, seconds=seconds)

    return [
        ("configuration", lambda: [check_config_file(config_path)]),
        ("keys", lambda: check_keys(config, config_path)),
        ("models.emotion", lambda: [check_emotion(config.emotion)]),
        ("models.keywords", lambda: [check_keywords(config.keywords)]),
        ("models.vad", lambda: [check_vad(config.speech)]),
        ("broker", lambda: check_broker(config.mqtt)),
        ("disk", lambda: check_disk(state_paths(config))),
        ("memory", lambda: [check_memory()]),
        ("clock", lambda: [check_clock()]),
        ("capture", capture),
    ]


def doctor(
    config_path: Path,
    *,
    seconds: float = 20.0,
    skip: frozenset[str] = frozenset(),
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        _print(out, fail("configuration", "the configuration does not load", str(exc)))
        return 2
    configure_logging(config.logging.level, config.logging.format)
    counts: Counter[Status] = Counter()
    for name, run in _checks(config, config_path, seconds):
        if name in skip or name.partition(".")[0] in skip:
            continue
        try:
            findings = run()
        except Exception as exc:  # one broken check must not hide the findings of the others
            findings = [
                fail(
                    name,
                    f"the check stopped with {type(exc).__name__}: {exc}",
                    "report this with the output of `callveil --version`",
                )
            ]
        for finding in findings:
            counts[finding.status] += 1
            _print(out, finding)
    print(
        f"{counts[Status.FAIL]} failed, {counts[Status.WARN]} warnings, {counts[Status.OK]} ok",
        file=out,
        flush=True,
    )
    return 1 if counts[Status.FAIL] else 0


def _print(out: TextIO, finding: Finding) -> None:
    print(f"{finding.status:<4}  {finding.check:<{_WIDTH}}  {finding.detail}", file=out)
    if finding.status is not Status.OK:
        print(f"{'':<4}  {'':<{_WIDTH}}  fix: {finding.fix}", file=out)
    out.flush()


def parse_skip(value: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in value.split(",") if n.strip())
    unknown = sorted(names - set(SKIPPABLE))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown check {', '.join(unknown)}; checks that can be skipped: "
            + ", ".join(SKIPPABLE)
        )
    return names


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(
            f"{value!r}: give a number of seconds above 0 and at most 3600"
        )
    return seconds


def add_doctor_command(
    sub: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    config_path: Callable[[argparse.Namespace], Path],
) -> None:
    """Register ``doctor`` on the ``callveil`` parser's subcommands ``sub``."""
    parser = sub.add_parser(
        "doctor",
        parents=[common],
        help="check this box: capture, keys, broker, models, disk, memory, clock",
        description="Run the health checks an installer needs; exit 0 when none failed "
        "(warnings allowed), 1 when one failed, 2 when the configuration does not load.",
    )
    parser.add_argument(
        "--seconds",
        type=_seconds,
        default=20.0,
        help="how long to listen on the mirror port (default 20)",
    )
    parser.add_argument(
        "--skip",
        type=parse_skip,
        default=frozenset(),
        help=f"comma-separated checks to skip: {', '.join(SKIPPABLE)}",
    )
    parser.set_defaults(
        func=lambda args: doctor(config_path(args), seconds=args.seconds, skip=args.skip)
    )
