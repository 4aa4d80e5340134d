"""Vault write and read throughput: 160 KB records (10 s of 8 kHz 16-bit audio), fsync'd.

Run by hand: .venv/bin/python bench/vault.py [RECORDS]
Software key provider (the TPM is not on this path: it unseals the KEK once at start).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

from gateway.seal.envelope import Sealer
from gateway.seal.softkey import SoftwareKeyProvider
from gateway.vault.store import Vault

RECORD_BYTES = 160_000


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        sealers = {
            name: Sealer(SoftwareKeyProvider(root / f"{name}.key", b"bench"))
            for name in ("analytics", "contract")
        }
        data = [os.urandom(RECORD_BYTES) for _ in range(count)]
        expires = dt.date(2000, 1, 1)
        with Vault(root / "vault.db", sealers) as vault:
            start = time.perf_counter()
            ids = [
                vault.put("recording", d, partition="analytics", period="2026-W48", expires=expires)
                for d in data
            ]
            put = time.perf_counter() - start
            start = time.perf_counter()
            for record_id in ids:
                vault.get(record_id)
            get = time.perf_counter() - start
            start = time.perf_counter()
            shredded = vault.shred_expired(dt.date(2000, 1, 2))
            shred = time.perf_counter() - start
    mb = count * RECORD_BYTES / 1e6
    print(f"| records | put records/s (MB/s) | get records/s | shred {shredded} records |")
    print("|---|---|---|---|")
    print(
        f"| {count} | {count / put:,.0f} ({mb / put:,.0f}) | {count / get:,.0f} | {shred:.2f} s |"
    )


if __name__ == "__main__":
    main()
