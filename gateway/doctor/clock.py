"""Clock sanity: not before this release was installed, and kept in sync.

Aggregates are released per day or week of this clock, so a wrong date files a whole period
under another. A clock earlier than the installed package's files is certainly wrong; one
not synchronised may drift.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
from pathlib import Path

import gateway
from gateway.doctor.findings import Finding, fail, ok, warn

CHECK = "clock"
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
_SYNC_FIX = (
    "enable time synchronisation with a reachable NTP server (timedatectl set-ntp true, or "
    "chrony); a box without a battery-backed clock needs it at every boot"
)


def installed_at() -> float:
    """The newest modification time of the installed package's files: a lower bound on now."""
    root = Path(gateway.__file__).parent
    return max(path.stat().st_mtime for path in root.rglob("*.py"))


def check_clock(
    *,
    now: float | None = None,
    floor: float | None = None,
    timedatectl: str | None = shutil.which("timedatectl"),
    flag: Path = TIMESYNC_FLAG,
) -> Finding:
    now = time.time() if now is None else now
    floor = installed_at() if floor is None else floor
    if now < floor:
        return fail(
            CHECK,
            f"the clock says {_date(now)}, before this release was installed ({_date(floor)})",
            f"set the clock; then {_SYNC_FIX}",
        )
    synced, how = _synchronised(timedatectl, flag)
    if not synced:
        return warn(CHECK, f"{_date(now)} UTC, not synchronised ({how})", _SYNC_FIX)
    return ok(CHECK, f"{_date(now)} UTC, synchronised ({how})")


def _synchronised(timedatectl: str | None, flag: Path) -> tuple[bool, str]:
    asked = "timedatectl is not installed"
    if timedatectl is not None:
        try:
            answer = subprocess.run(
                [timedatectl, "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            asked = f"timedatectl failed ({exc})"
        else:
            if answer.returncode == 0:
                value = answer.stdout.strip()
                return value == "yes", f"timedatectl: NTPSynchronized={value}"
            asked = "timedatectl gave no answer"
    if flag.exists():
        return True, f"{flag} exists"
    return False, f"{asked} and {flag} is absent"


def _date(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M")
