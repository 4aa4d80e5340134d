"""A box's state in a temporary directory: the demo configuration with its own state."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Config, load_config
from gateway.seal.envelope import Sealer
from gateway.seal.softkey import SoftwareKeyProvider
from gateway.vault.records import PARTITIONS
from gateway.vault.store import Vault
from tests.conftest import REPO

DEMO_CONFIG = REPO / "demo" / "callveil-demo.toml"
DEMO_PCAP = REPO / "demo" / "demo-calls.pcap"
CALLVEIL = Path(sys.executable).parent / "callveil"
PASSPHRASE = b"daemon tests"


@dataclass(frozen=True)
class Box:
    config_path: Path

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """``callveil run ARGS -c CONFIG``, to completion."""
        return subprocess.run(
            [str(CALLVEIL), "run", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )

    def vault(self) -> Vault:
        config = self.config
        provider = SoftwareKeyProvider(Path(config.keys.key_file), PASSPHRASE)
        return Vault(Path(config.vault.path), {p: Sealer(provider, label=p) for p in PARTITIONS})


def demo_box(root: Path, extra: str = "") -> Box:
    """The demo configuration in ``root`` (its relative state paths land there)."""
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    passphrase = state / "passphrase"
    passphrase.write_bytes(PASSPHRASE + b"\n")
    passphrase.chmod(0o600)
    config = root / "callveil.toml"
    config.write_text(DEMO_CONFIG.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return Box(config)
