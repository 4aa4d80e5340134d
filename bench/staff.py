"""Cost of staff access: one password check, and audit log append / verify / export.

Run by hand: .venv/bin/python bench/staff.py [ENTRIES]
Software key provider (a TPM signs each chain head instead; heads are every 100 entries).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from gateway.seal.softkey import SoftwareKeyProvider
from gateway.vault.audit import GRANTED, AuditEvent, AuditLog
from gateway.vault.users import production_hasher


def _password_check(memory_mib: int, rounds: int = 5) -> float:
    hasher = production_hasher(memory_mib)
    hashed = hasher.hash("horse battery staple")
    start = time.perf_counter()
    for _ in range(rounds):
        hasher.verify(hashed, "horse battery staple")
    return (time.perf_counter() - start) / rounds


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    print("| Argon2id memory | one password check |")
    print("|---|---|")
    for memory in (64, 19):
        print(f"| {memory} MiB | {_password_check(memory) * 1000:.0f} ms |")
    event = AuditEvent("ann", "analyst", "play", GRANTED, "quality review of billing calls")
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        provider = SoftwareKeyProvider(root / "box.key", b"bench")
        with AuditLog(root / "audit.db", provider, sign_every=100) as log:
            start = time.perf_counter()
            for _ in range(count):
                log.append(event)
            append = time.perf_counter() - start
            start = time.perf_counter()
            report = log.verify()
            verify = time.perf_counter() - start
            start = time.perf_counter()
            log.export(root / "export.json")
            export = time.perf_counter() - start
        size = (root / "export.json").stat().st_size
    assert report.ok
    print()
    print("| entries | append entries/s (fsync'd) | verify | export (file size) |")
    print("|---|---|---|---|")
    print(
        f"| {count} | {count / append:.0f} | {verify * 1000:.0f} ms | "
        f"{export * 1000:.0f} ms ({size / 1e6:.1f} MB) |"
    )


if __name__ == "__main__":
    main()
