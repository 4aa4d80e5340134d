"""The shipped systemd units, users and directories, checked by systemd's own tools.

``systemd-analyze verify`` and ``security --offline`` work without systemd as PID 1; verify
checks the ExecStart binary on this host, so the units are checked as copies that start this
interpreter's ``callveil`` console script, every other line as shipped.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.systemd.units import SYSTEMD_DIR, analyze, exec_args, with_exec_start

if shutil.which("systemd-analyze") is None:
    pytest.skip(
        "systemd-analyze is not installed (apt-get install systemd)", allow_module_level=True
    )

SERVICES = ("callveil.service", "callveil-retention.service")
UNITS = (*SERVICES, "callveil-retention.timer")
MAX_EXPOSURE = 2.0
_EXPOSURE = re.compile(r"Overall exposure level for (\S+): (\d+\.\d+)")


@pytest.fixture
def host_units(tmp_path: Path) -> Path:
    """Every shipped unit, side by side, starting the console script of this interpreter."""
    cli = Path(sys.executable).parent / "callveil"
    if not cli.is_file():
        pytest.skip(f"the callveil console script is not installed beside {sys.executable}")
    for unit in SYSTEMD_DIR.glob("callveil*.*"):
        text = unit.read_text()
        if "ExecStart=" in text:
            text = with_exec_start(unit.name, f"{cli} {exec_args(unit.name)}")
        (tmp_path / unit.name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("name", UNITS)
def test_verify_is_clean(host_units: Path, name: str) -> None:
    done = analyze("verify", str(host_units / name))
    assert done.returncode == 0, done.stderr
    assert done.stdout + done.stderr == "", f"systemd-analyze verify warned:\n{done.stderr}"


def test_verify_would_report_a_misspelt_key(host_units: Path) -> None:
    unit = host_units / "callveil.service"
    unit.write_text(unit.read_text().replace("ProtectClock=yes", "ProtectClocks=yes"))
    done = analyze("verify", str(unit))
    assert "Unknown key 'ProtectClocks'" in done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_exposure_is_at_most_two(name: str) -> None:
    # --threshold is on systemd's internal 0-100 scale: 20 is a printed score of 2.0
    done = analyze("security", "--offline=true", "--threshold=20", str(SYSTEMD_DIR / name))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    found = _EXPOSURE.search(done.stdout)
    assert found is not None and found[1] == name, done.stdout[-500:]
    assert float(found[2]) <= MAX_EXPOSURE


def test_the_units_start_what_the_daemon_contract_names() -> None:
    assert exec_args("callveil.service") == "run"
    assert exec_args("callveil-retention.service") == "retention run"


def _settings(name: str) -> dict[str, list[str]]:
    """Every assignment of the unit, in order (systemd keys may repeat)."""
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD_DIR / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith(("#", ";")):
            found.setdefault(key, []).append(value)
    return found


def test_the_daemon_gets_cap_net_raw_and_nothing_else() -> None:
    unit = _settings("callveil.service")
    assert unit["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert unit["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["User"] == ["callveil"] and unit["SupplementaryGroups"] == ["tss"]


def test_the_retention_job_has_no_capability_and_no_network() -> None:
    unit = _settings("callveil-retention.service")
    assert unit["CapabilityBoundingSet"] == [""]
    assert "AmbientCapabilities" not in unit
    assert unit["PrivateNetwork"] == ["yes"] and unit["RestrictAddressFamilies"] == ["AF_UNIX"]


def test_the_timer_runs_the_retention_job_daily(host_units: Path) -> None:
    done = analyze("verify", str(host_units / "callveil-retention.timer"))
    assert done.returncode == 0, done.stderr
    timer = _settings("callveil-retention.timer")
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty root with the callveil user created by systemd-sysusers."""
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers is not installed")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD_DIR / "sysusers.d/callveil.conf")],
        check=True, capture_output=True,
    )  # fmt: skip
    return tmp_path


def _entries(path: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in path.read_text().splitlines()}


def test_sysusers_creates_a_system_user_without_login_in_group_tss(root: Path) -> None:
    name, _, uid, gid, _, home, shell = _entries(root / "etc/passwd")["callveil"]
    assert int(uid) < 1000 and home == "/" and shell.endswith("nologin")
    groups = _entries(root / "etc/group")
    assert groups["callveil"][2] == gid
    assert name in groups["tss"][3].split(",")


def test_tmpfiles_creates_the_directories_with_their_modes(root: Path) -> None:
    if shutil.which("systemd-tmpfiles") is None:
        pytest.skip("systemd-tmpfiles is not installed")
    uid, gid = (int(v) for v in _entries(root / "etc/passwd")["callveil"][2:4])
    config = root / "etc/callveil/callveil.toml"
    config.parent.mkdir(parents=True)
    config.write_text("")
    config.chmod(0o644)  # as an editor or installer might leave it
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create",
         str(SYSTEMD_DIR / "tmpfiles.d/callveil.conf")],
        check=True, capture_output=True,
    )  # fmt: skip
    expected = {
        "var/lib/callveil": (0o700, uid, gid),
        "var/cache/callveil": (0o700, uid, gid),
        "etc/callveil": (0o750, 0, gid),
        "etc/callveil/mqtt": (0o750, 0, gid),
        "etc/callveil/callveil.toml": (0o640, 0, gid),
    }
    for path, want in expected.items():
        st = os.stat(root / path)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == want, path
