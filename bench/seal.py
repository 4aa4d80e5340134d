"""Envelope sealing cost: seal and open of one blob, software key provider.

Run by hand: .venv/bin/python bench/seal.py [BLOB_BYTES]
The TPM is not on this path: it unseals the key-encryption key once at start.
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit
from pathlib import Path

from gateway.seal.envelope import Sealer
from gateway.seal.softkey import SoftwareKeyProvider


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 64 * 1024
    with tempfile.TemporaryDirectory() as folder:
        sealer = Sealer(SoftwareKeyProvider(Path(folder) / "k.key", b"bench"))
    data = os.urandom(size)
    blob = sealer.seal(data)
    runs = 2000
    seal = min(timeit.repeat(lambda: sealer.seal(data), number=runs, repeat=5)) / runs
    opened = min(timeit.repeat(lambda: sealer.open(blob), number=runs, repeat=5)) / runs
    print(
        f"{size} bytes: seal {seal * 1e6:.1f} us, open {opened * 1e6:.1f} us (best of 5 x {runs})"
    )


if __name__ == "__main__":
    main()
