"""Giving up root and capabilities once the capture socket is open.

Capture needs CAP_NET_RAW to open its AF_PACKET socket, and nothing afterwards: changing the
open socket's filter needs no privilege. Started as root, the daemon switches to
``daemon.user`` (with that account's groups, e.g. ``tss`` for the TPM); started by systemd as
that user with CAP_NET_RAW as an ambient capability, it clears its capability sets. Either
way ``no_new_privs`` is set, so nothing it executes can gain privileges again.

Capabilities belong to threads: this must run before the daemon starts any thread.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
from pathlib import Path

_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(Exception):
    """The daemon cannot give up its privileges; it must not run with them."""


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def drop_privileges(user: str) -> str:
    """Become ``user`` if root (``user`` empty: stay), then clear every capability.

    Returns a short description for the log; raises PrivilegeError when anything fails.
    """
    if os.geteuid() == 0 and user:
        _switch_user(user)
    _clear_capabilities()
    left = effective_capabilities()
    if left:
        raise PrivilegeError(
            f"capabilities {left:#x} remain in a thread started before they were dropped; run "
            "with OPENBLAS_NUM_THREADS=1 and OMP_NUM_THREADS=1 (the service unit sets them)"
        )
    return f"uid {os.getuid()} gid {os.getgid()}, no capabilities"


def _switch_user(user: str) -> None:
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(
            f"daemon.user {user!r} does not exist: create it (the package's sysusers fragment "
            "does, or: useradd --system --no-create-home --shell /usr/sbin/nologin "
            f"{user}), or set daemon.user = '' to keep the account the daemon was started with"
        ) from None
    groups = sorted({account.pw_gid, *(g.gr_gid for g in grp.getgrall() if user in g.gr_mem)})
    try:
        os.setgroups(groups)
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to {user!r}: {exc}") from None
    if os.getuid() != account.pw_uid or os.geteuid() != account.pw_uid:
        raise PrivilegeError(f"still running as uid {os.geteuid()} after switching to {user!r}")


def _clear_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise PrivilegeError(f"prctl(NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
    # kernels before 4.3 have no ambient set: EINVAL then means there is nothing to clear
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = _CapHeader(_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if libc.capset(ctypes.byref(header), data) != 0:
        raise PrivilegeError(f"capset failed: {os.strerror(ctypes.get_errno())}")


def effective_capabilities() -> int:
    """The effective capabilities any thread of this process still holds (0: none).

    Clearing capabilities acts on the calling thread only, so a thread started earlier (a
    math library's pool, say) would keep them: every thread is checked.
    """
    mask = 0
    for status in Path("/proc/self/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                mask |= int(line.split()[1], 16)
    return mask
