"""Disk, memory and clock checks on this machine's real file systems, memory and clock.

Thresholds are set around the values measured here, so each status is reached without
filling a disk or setting the clock.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.doctor.clock import check_clock, installed_at
from gateway.doctor.findings import Status
from gateway.doctor.resources import check_disk, check_memory, state_paths


def free_bytes(path: Path) -> int:
    fs = os.statvfs(path)
    return fs.f_bavail * fs.f_frsize


def test_disk_thresholds_on_the_real_file_system(tmp_path: Path) -> None:
    paths = {"vault": tmp_path / "state" / "vault.db", "outbox": tmp_path / "outbox.db"}
    free = free_bytes(tmp_path)
    (fine,) = check_disk(paths, warn_bytes=1, warn_fraction=0.0, fail_bytes=1)
    assert fine.status is Status.OK
    assert fine.detail.startswith("vault, outbox on ")  # one line for one file system
    (low,) = check_disk(paths, warn_bytes=free * 2, fail_bytes=1)
    assert (low.status, low.check) == (Status.WARN, "disk")
    assert low.detail.endswith("running low")
    (short,) = check_disk(paths, warn_fraction=1.01, fail_bytes=1)
    assert short.status is Status.WARN
    (full,) = check_disk(paths, fail_bytes=free * 2)
    assert full.status is Status.FAIL
    assert "callveil retention run" in full.fix


def test_one_finding_per_file_system(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    paths = {"vault": tmp_path / "vault.db", "outbox": shm / "callveil-outbox.db"}
    if os.stat(tmp_path).st_dev == os.stat(shm).st_dev:
        pytest.skip("/dev/shm and the temporary directory share one file system here")
    findings = check_disk(paths, warn_bytes=1, warn_fraction=0.0, fail_bytes=1)
    assert sorted(f.detail.split(" on ")[0] for f in findings) == ["outbox", "vault"]


def test_state_paths_of_the_configuration(tmp_path: Path) -> None:
    config = parse_config({"vault": {"path": str(tmp_path / "v.db")}})
    assert state_paths(config) == {
        "vault": tmp_path / "v.db",
        "outbox": Path("/var/lib/callveil/outbox.db"),
        "aggregates": Path("/var/lib/callveil/aggregates.db"),
    }


def test_memory_threshold() -> None:
    assert check_memory(warn_bytes=1).status is Status.OK
    finding = check_memory(warn_bytes=2**50)
    assert finding.status is Status.WARN
    assert "available of" in finding.detail


def test_clock_before_the_installed_release_fails() -> None:
    floor = installed_at()
    assert floor <= time.time()
    finding = check_clock(now=floor - 86400, timedatectl=None)
    assert finding.status is Status.FAIL
    assert "before this release was installed" in finding.detail


def test_clock_synchronisation_flag(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    unsynced = check_clock(timedatectl=None, flag=flag)
    assert unsynced.status is Status.WARN
    assert "timedatectl is not installed" in unsynced.detail
    flag.touch()
    synced = check_clock(timedatectl=None, flag=flag)
    assert synced.status is Status.OK
    assert synced.detail.endswith(f"synchronised ({flag} exists)")


def test_clock_asks_timedatectl_when_it_answers(tmp_path: Path) -> None:
    timedatectl = shutil.which("timedatectl")
    if timedatectl is None:
        pytest.skip("timedatectl is not installed")
    finding = check_clock(timedatectl=timedatectl, flag=tmp_path / "absent")
    answered = "timedatectl: NTPSynchronized=" in finding.detail
    assert answered or "timedatectl gave no answer" in finding.detail
