"""The configuration file's permissions, judged for a real unprivileged user (``nobody``)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.doctor.configfile import check_config_file
from gateway.doctor.findings import Status

USER = "nobody"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are closed to others)."""
    if os.geteuid() != 0:
        pytest.skip("changing a file's owner to another user needs root")
    try:
        pwd.getpwnam(USER)
    except KeyError:
        pytest.skip(f"this machine has no user {USER!r}")
    root = Path(tempfile.mkdtemp(prefix="callveil-doctor-"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root)


def config_file(directory: Path, mode: int, group: int = 0) -> Path:
    path = directory / "callveil.toml"
    path.write_text("[site]\nname = 'rome'\n")
    os.chown(path, 0, group)
    path.chmod(mode)
    return path


def test_service_group_may_read_and_nobody_else(open_dir: Path) -> None:
    group = pwd.getpwnam(USER).pw_gid
    finding = check_config_file(config_file(open_dir, 0o640, group), service_user=USER)
    assert finding.status is Status.OK
    assert f"mode 0640 root:{grp.getgrgid(group).gr_name}" in finding.detail


def test_a_file_the_service_cannot_read_fails(open_dir: Path) -> None:
    finding = check_config_file(config_file(open_dir, 0o600), service_user=USER)
    assert finding.status is Status.FAIL
    assert f"the service user {USER} cannot read it" in finding.detail
    assert finding.fix.startswith(f"chown root:{USER} ")


def test_a_directory_the_service_cannot_enter_fails(open_dir: Path) -> None:
    closed = open_dir / "closed"
    closed.mkdir(mode=0o700)
    finding = check_config_file(config_file(closed, 0o644), service_user=USER)
    assert finding.status is Status.FAIL
    assert "cannot read it" in finding.detail


def test_world_readable_warns_and_world_writable_fails(open_dir: Path) -> None:
    readable = check_config_file(config_file(open_dir, 0o644), service_user=USER)
    assert readable.status is Status.WARN
    assert "every user can read it" in readable.detail
    writable = check_config_file(config_file(open_dir, 0o666), service_user=USER)
    assert writable.status is Status.FAIL
    assert "every user can change it" in writable.detail


def test_without_the_service_user_its_access_is_not_judged(open_dir: Path) -> None:
    finding = check_config_file(config_file(open_dir, 0o600), service_user="no-such-user-cv")
    assert finding.status is Status.OK
    assert "no user no-such-user-cv here" in finding.detail
