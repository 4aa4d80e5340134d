"""Free disk space where the box keeps its state, and free memory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from gateway.config import Config
from gateway.doctor.findings import Finding, fail, ok, warn

MIB = 2**20
GIB = 2**30
DISK = "disk"
MEMORY = "memory"


def state_paths(config: Config) -> dict[str, Path]:
    """The stores that grow: the vault, the outbox and the open aggregate buckets."""
    return {
        "vault": Path(config.vault.path),
        "outbox": Path(config.mqtt.outbox_path),
        "aggregates": Path(config.aggregates.state_path),
    }


def check_disk(
    paths: Mapping[str, Path],
    *,
    warn_bytes: int = GIB,
    warn_fraction: float = 0.10,
    fail_bytes: int = 200 * MIB,
) -> list[Finding]:
    """One finding per file system holding any of ``paths`` (which need not exist yet)."""
    by_mount: dict[Path, list[str]] = {}
    for name, path in paths.items():
        by_mount.setdefault(_mount_point(path), []).append(name)
    findings = []
    for mount, names in by_mount.items():
        fs = os.statvfs(mount)
        free, total = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
        share = free / total if total else 0.0
        seen = f"{', '.join(names)} on {mount}: {_size(free)} free of {_size(total)} ({share:.0%})"
        fix = (
            f"free space on {mount}: `callveil retention run` deletes expired records; or move "
            "the state to a larger disk"
        )
        if free < fail_bytes:
            findings.append(
                fail(DISK, f"{seen}: the vault and the outbox refuse new records when full", fix)
            )
        elif free < warn_bytes or share < warn_fraction:
            findings.append(warn(DISK, f"{seen}: running low", fix))
        else:
            findings.append(ok(DISK, seen))
    return findings


def check_memory(*, warn_bytes: int = 256 * MIB, meminfo: Path = Path("/proc/meminfo")) -> Finding:
    """The kernel's estimate of memory available to new work (MemAvailable)."""
    fields = {}
    for line in meminfo.read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value.split()[0]) * 1024  # the kernel reports kB
    available, total = fields["MemAvailable"], fields["MemTotal"]
    seen = f"{_size(available)} available of {_size(total)}"
    if available < warn_bytes:
        return warn(
            MEMORY,
            f"{seen}: less than {_size(warn_bytes)}",
            "the models, the capture ring (capture.socket_buffer_mib) and the calls in progress "
            "need room: stop other services on this box, or give it more memory",
        )
    return ok(MEMORY, seen)


def _mount_point(path: Path) -> Path:
    """The mount point of the file system that holds (or would hold) ``path``."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def _size(nbytes: float) -> str:
    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.0f} MiB"
