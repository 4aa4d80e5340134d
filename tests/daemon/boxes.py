"""A box's state in a temporary directory: the demo configuration with its own state."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.config import Config, load_config
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import open_configured_provider
from gateway.vault.records import PARTITIONS
from gateway.vault.store import Vault
from tests.conftest import REPO
from tests.publish.broker import Broker
from tests.seal.tpm_helpers import TEST_PCR

DEMO_CONFIG = REPO / "demo" / "callveil-demo.toml"
DEMO_PCAP = REPO / "demo" / "demo-calls.pcap"
CALLVEIL = Path(sys.executable).parent / "callveil"
PASSPHRASE = b"daemon tests"
BOX = "demo-box"  # the box's id at the broker and in its topics
ACL = {BOX: [f"topic write callveil/v1/demo/{BOX}/#"], "feed": ["topic read callveil/v1/#"]}


@dataclass(frozen=True)
class Box:
    config_path: Path

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def run(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        """``callveil run ARGS -c CONFIG`` to completion (under ``wrapper``, e.g. faketime)."""
        return self.command("run", *args, env=env, wrapper=wrapper, timeout=timeout)

    def attest(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.command("attest", *args)

    def command(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*(wrapper or []), str(CALLVEIL), *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
            check=False,
        )

    @contextlib.contextmanager
    def vault(self) -> Iterator[Vault]:
        """The box's vault, opened with its configured key provider (software or TPM)."""
        config = self.config
        with contextlib.closing(open_configured_provider(config, self.config_path)) as provider:
            sealers = {p: Sealer(provider, label=p) for p in PARTITIONS}
            with Vault(Path(config.vault.path), sealers) as vault:
                yield vault


def demo_box(root: Path, sections: dict[str, str] | None = None) -> Box:
    """The demo configuration in ``root`` (its relative state paths land there), with the
    body of each section named in ``sections`` replaced (or the section added)."""
    root.mkdir(parents=True, exist_ok=True)
    state = root / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    passphrase = state / "passphrase"
    passphrase.write_bytes(PASSPHRASE + b"\n")
    passphrase.chmod(0o600)
    config = root / "callveil.toml"
    config.write_text(
        replace_sections(DEMO_CONFIG.read_text(encoding="utf-8"), sections or {}),
        encoding="utf-8",
    )
    return Box(config)


def replace_sections(text: str, sections: dict[str, str]) -> str:
    out: list[str] = []
    skipping = False
    for line in text.splitlines():
        header = line.strip()
        if header.startswith("[") and header.endswith("]"):
            name = header.strip("[]")
            skipping = name in sections
            if skipping:
                out += [line, sections[name].strip("\n")]
                continue
        if not skipping:
            out.append(line)
    added = [f"[{name}]\n{body.strip()}" for name, body in sections.items()
             if f"[{name}]" not in text]  # fmt: skip
    return "\n".join([*out, *added]) + "\n"


def tpm_section(tcti: str) -> str:
    """The ``[keys]`` body for the TPM at ``tcti`` (swtpm in the tests)."""
    return f'provider = "tpm"\ntcti = "{tcti}"\npcr = {TEST_PCR}\nstate_dir = "state/tpm"'


def mqtt_section(broker: Broker) -> str:
    """The ``[mqtt]`` body for the test broker, with the box's client certificate."""
    cert, key = broker.certs[BOX]
    return "\n".join(
        [
            'host = "127.0.0.1"',
            f"port = {broker.port}",
            f'box_id = "{BOX}"',
            f'ca_file = "{broker.ca.ca_file}"',
            f'cert_file = "{cert}"',
            f'key_file = "{key}"',
            'outbox_path = "state/outbox.db"',
            "reconnect_max_s = 1",
        ]
    )


def sip_identities(raw: str) -> list[str]:
    """Call-IDs, tags, users and addresses as they appear in SIP messages in ``raw``."""
    found = set(re.findall(r"Call-ID: ([^\r\n]+)", raw))
    found |= set(re.findall(r"tag=([^;\r\n>]+)", raw))
    found |= set(re.findall(r"sips?:([^@>;\s]+)@", raw))
    found |= set(re.findall(r"c=IN IP4 ([0-9.]+)", raw))
    return sorted(found)


def tomorrow_env() -> dict[str, str]:
    """The environment that makes a process's wall clock read one day later (libfaketime).

    Preloaded rather than through the ``faketime`` command, which runs its program as a child
    and would not pass SIGTERM on; the monotonic clock stays real, or every timed wait in the
    daemon (queues, locks) would wait until the real clock reached the faked one.
    """
    roots = [Path("/usr/lib"), Path("/usr/lib64"), Path("/usr/local/lib")]
    found = [p for r in roots for p in r.glob("*/faketime/libfaketime.so.1")]
    found += [r / "faketime" / "libfaketime.so.1" for r in roots]
    found = [p for p in found if p.is_file()]
    if not found:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    return {"LD_PRELOAD": str(found[0]), "FAKETIME": "+1d", "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
