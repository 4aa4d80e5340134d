"""The configuration file's permissions: the service must read it, nobody else should.

It names the sampling key, the key files and the broker, so others must not read it; the
service user (``callveil``, in the file's group) must, or the daemon cannot start; and only
root should write it, since it decides what is sampled, trimmed and kept.
"""

from __future__ import annotations

import grp
import pwd
import stat
from pathlib import Path

from gateway.doctor.findings import Finding, fail, ok, warn

CHECK = "configuration"
SERVICE_USER = "callveil"


def check_config_file(path: Path, *, service_user: str = SERVICE_USER) -> Finding:
    """Mode and owner of the (already validated) configuration file at ``path``."""
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    owner = _user_name(info.st_uid)
    group = _group_name(info.st_gid)
    seen = f"{path} is valid; mode {mode:04o} {owner}:{group}"
    fix = f"chown root:{service_user} {path} && chmod 0640 {path}"
    try:
        user = pwd.getpwnam(service_user)
    except KeyError:
        user = None
    if user is not None and not _readable_by(path, user):
        return fail(CHECK, f"{seen}: the service user {service_user} cannot read it", fix)
    if mode & stat.S_IWOTH:
        return fail(
            CHECK,
            f"{seen}: every user can change it, and with it what is sampled, trimmed and kept",
            fix,
        )
    if mode & stat.S_IROTH:
        return warn(
            CHECK,
            f"{seen}: every user can read it, and it names the sampling key, the key files "
            "and the broker",
            fix,
        )
    if mode & stat.S_IWGRP or (user is not None and info.st_uid == user.pw_uid):
        return warn(CHECK, f"{seen}: others than root can change it", fix)
    if user is None:
        return ok(CHECK, f"{seen} (no user {service_user} here: its access was not checked)")
    return ok(CHECK, seen)


def _readable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may open ``path``: read on the file, search on every directory above."""
    if user.pw_uid == 0:
        return True
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    needs = [(path, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)] + [
        (directory, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH)
        for directory in path.resolve().parents
    ]
    for item, as_owner, as_group, as_other in needs:
        info = item.stat()
        if info.st_uid == user.pw_uid:
            bit = as_owner
        elif info.st_gid in groups:
            bit = as_group
        else:
            bit = as_other
        if not info.st_mode & bit:
            return False
    return True


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
