"""Dropping root and capabilities after the capture socket is open (real kernel, as root)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )


def test_root_opens_the_socket_then_becomes_the_service_user_with_no_capabilities() -> None:
    result = run_python(
        """
        import os, socket
        from gateway.daemon.privileges import drop_privileges, effective_capabilities
        held = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        held.bind(("lo", 0))
        print(drop_privileges("nobody"))
        print(os.getuid(), os.geteuid(), effective_capabilities())
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        except PermissionError:
            print("no new packet socket")
        held.settimeout(2)
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("127.0.0.1", 9))
        print("still receiving", len(held.recv(65535)) > 0)
        """
    )
    assert result.returncode == 0, result.stderr
    import pwd

    nobody = pwd.getpwnam("nobody").pw_uid
    lines = result.stdout.splitlines()
    assert lines[0] == f"uid {nobody} gid {pwd.getpwnam('nobody').pw_gid}, no capabilities"
    assert lines[1] == f"{nobody} {nobody} 0"
    assert lines[2] == "no new packet socket"
    assert lines[3] == "still receiving True"


def test_a_missing_service_user_is_refused_with_the_fix() -> None:
    result = run_python(
        """
        from gateway.daemon.privileges import PrivilegeError, drop_privileges
        try:
            drop_privileges("no-such-callveil-user")
        except PrivilegeError as exc:
            print(exc)
        """
    )
    assert "daemon.user 'no-such-callveil-user' does not exist" in result.stdout
    assert "useradd --system" in result.stdout


def test_a_thread_started_before_the_drop_is_caught() -> None:
    # capabilities belong to threads: one started earlier would keep CAP_NET_RAW
    result = run_python(
        """
        import threading
        from gateway.daemon.privileges import PrivilegeError, drop_privileges
        stop = threading.Event()
        threading.Thread(target=stop.wait).start()
        try:
            drop_privileges("")
        except PrivilegeError as exc:
            print(exc)
        finally:
            stop.set()
        """
    )
    assert "remain in a thread started before they were dropped" in result.stdout
