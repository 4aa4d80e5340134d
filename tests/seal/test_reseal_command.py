"""``callveil reseal`` with a real TPM simulator and real releases: the running package, and
copies of it (one file changed) run in their own Python process as the new release would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import PACKAGE_ROOT, open_configured_provider
from gateway.seal.keyprovider import SealError
from gateway.verifiers.audit import Entry, Head, verify
from tests.seal.tpm_helpers import TEST_PCR, reset_pcr

MISMATCH = "differ from those the vault was sealed to"
CONTEXT = b"record-1"

# What a release does at start, reduced to opening the vault: measure itself, extend the PCR,
# unseal the KEK and decrypt a record. Run with the release's package first on sys.path.
_OPEN = """
import sys
from pathlib import Path
import gateway
from gateway.config import load_config
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import open_configured_provider
from gateway.seal.keyprovider import SealError

config = Path(sys.argv[1])
try:
    provider = open_configured_provider(load_config(config), config)
    record = Sealer(provider).open(Path(sys.argv[2]).read_bytes(), context=b"record-1")
except SealError as exc:
    sys.exit(f"{gateway.__file__}: {exc}")
print(gateway.__file__, record.decode())
"""


def write_box(directory: Path, tcti: str, name: str = "box.toml", extra: str = "") -> Path:
    path = directory / name
    path.write_text(
        f'[keys]\nprovider = "tpm"\ntcti = "{tcti}"\npcr = {TEST_PCR}\nstate_dir = "tpm"\n'
        f'[vault]\naudit_path = "audit.db"\n{extra}'
    )
    return path


def signing_key(config: Path) -> bytes:
    with contextlib.closing(open_configured_provider(load_config(config), config)) as provider:
        return provider.public_key_pem()


def audited(config: Path, key: bytes) -> list[tuple[str, str, str | None, str]]:
    """(action, outcome, subject, reason) of each audit log entry, after checking the chain and
    its signed heads against the box's signing key ``key``, as a security team would."""
    with contextlib.closing(sqlite3.connect(config.parent / "audit.db")) as db:
        entries = [Entry(*row) for row in db.execute("SELECT body, hash FROM entries ORDER BY seq")]
        heads = [Head(*row) for row in db.execute("SELECT seq, hash, signature FROM heads")]
    report = verify(entries, heads, key)
    assert report.ok and report.signed_through == len(entries), report.render()
    bodies = [json.loads(e.body) for e in entries]
    return [(b["action"], b["outcome"], b["subject"], b["reason"]) for b in bodies]


def release(directory: Path, change: str) -> Path:
    """A release's virtual-environment layout holding a copy of the package with one change."""
    package = directory / "lib" / "python3.11" / "site-packages" / "gateway"
    shutil.copytree(PACKAGE_ROOT, package, ignore=shutil.ignore_patterns("__pycache__"))
    with (package / "redact.py").open("a") as f:
        f.write(f"# {change}\n")
    return directory


def site_packages(venv: Path) -> Path:
    return venv / "lib" / "python3.11" / "site-packages"


def run_release(venv: Path, *args: str, code: str | None = None) -> subprocess.CompletedProcess:
    """Run the release at ``venv`` in a fresh process: ``code``, or its callveil command."""
    env = {**os.environ, "PYTHONPATH": str(site_packages(venv))}
    argv = ["-c", code] if code else ["-m", "gateway.cli"]
    return subprocess.run(
        [sys.executable, *argv, *args],
        cwd=venv,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def open_as(venv: Path, config: Path, blob: Path) -> subprocess.CompletedProcess:
    """Reboot, then start the release at ``venv`` and decrypt the record in ``blob``."""
    reset_pcr(tpm_of(config))
    result = run_release(venv, str(config), str(blob), code=_OPEN)
    # the copy ran, not the package under test
    assert str(site_packages(venv)) in result.stdout + result.stderr, result.stderr
    return result


def tpm_of(config: Path) -> str:
    return load_config(config).keys.tcti


def seal_record(config: Path, blob: Path) -> None:
    with contextlib.closing(open_configured_provider(load_config(config), config)) as provider:
        blob.write_bytes(Sealer(provider).seal(b"evidence", context=CONTEXT))


def open_here(config: Path, blob: Path) -> bytes:
    """Reboot, then open the vault as the running release (the package under test)."""
    reset_pcr(tpm_of(config))
    with contextlib.closing(open_configured_provider(load_config(config), config)) as provider:
        return Sealer(provider).open(blob.read_bytes(), context=CONTEXT)


def sealed(directory: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in (directory / "tpm").glob("kek*.tpm")}


@pytest.fixture
def update(tpm: str, tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    """The running release's configuration with a sealed record, and a new release with a
    changed configuration that names a model: (config, blob, new release, new config)."""
    config = write_box(tmp_path, tpm)
    blob = tmp_path / "record.bin"
    seal_record(config, blob)
    model = tmp_path / "vosk-model"
    (model / "am").mkdir(parents=True)
    (model / "am" / "final.mdl").write_bytes(b"acoustic model weights")
    changes = '[site]\nname = "queue-b"\n[keywords]\nmodel_path = "vosk-model"\n'
    new_config = write_box(tmp_path, tpm, "new.toml", changes)
    return config, blob, release(tmp_path / "release-2", "release 2"), new_config


def test_update_rollback_and_prune(
    update: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, blob, new, new_config = update
    key = signing_key(config)
    args = ["-c", str(config), "reseal", "--package-root", str(new), "--config", str(new_config)]
    assert main(args) == 0
    capsys_out = capsys.readouterr().out
    assert "approved the new release" in capsys_out
    assert len(sealed(config.parent)) == 2
    assert main(args) == 0  # run twice (a retried update): nothing more to do
    assert "nothing to re-seal" in capsys.readouterr().out
    # reboot into the new release: its package, configuration and model open the vault
    opened = open_as(new, new_config, blob)
    assert opened.returncode == 0 and opened.stdout.split()[-1] == "evidence", opened.stderr
    # reboot back into the old release (rollback): still opens
    assert open_here(config, blob) == b"evidence"
    # the new release proved itself and prunes: only it opens the vault from now on
    reset_pcr(tpm_of(config))
    pruned = run_release(new, "-c", str(new_config), "reseal", "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "pruned: removed 1 sealed copy of" in pruned.stdout
    assert list(sealed(config.parent)) == ["kek.tpm"]
    with pytest.raises(SealError, match=MISMATCH):
        open_here(config, blob)
    opened = open_as(new, new_config, blob)
    assert opened.returncode == 0 and opened.stdout.split()[-1] == "evidence", opened.stderr
    # each step is in the audit log, signed, by the account that ran it
    entries = audited(config, key)
    assert [e[:2] for e in entries] == [
        ("approve-release", "done"),
        ("approve-release", "done"),
        ("prune-releases", "done"),
    ]
    approved = entries[0][2]
    assert approved is not None and len(approved) == 16 and approved in capsys_out
    assert [e[3] for e in entries] == ["approved", "already approved", "removed 1"]


def test_unapproved_releases_are_refused(
    update: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config, blob, new, new_config = update
    key = signing_key(config)
    # approved by its package directory this time, with the running configuration
    package = site_packages(new) / "gateway"
    assert main(["-c", str(config), "reseal", "--package-root", str(package)]) == 0
    # a third release nobody approved
    third = release(config.parent / "release-3", "release 3")
    refused = open_as(third, config, blob)
    assert refused.returncode != 0 and MISMATCH in refused.stderr
    # the approved release with a configuration changed since: refused too
    assert open_as(new, new_config, blob).returncode != 0
    # nor can a box running an unapproved change approve anything, or prune
    before = sealed(config.parent)
    edited = write_box(config.parent, tpm_of(config), "edited.toml", "[site]\nname = 'x'\n")
    reset_pcr(tpm_of(config))
    capsys.readouterr()
    assert main(["-c", str(edited), "reseal", "--package-root", str(third)]) == 2
    err = capsys.readouterr().err
    assert "cannot approve another release" in err and MISMATCH in err
    assert main(["-c", str(edited), "reseal", "--prune"]) == 2
    assert "nothing was removed" in capsys.readouterr().err
    assert sealed(config.parent) == before
    # the refusals are logged as failed attempts, after the one approval
    outcomes = [e[:2] for e in audited(config, key)]
    assert outcomes == [
        ("approve-release", "done"),
        ("approve-release", "failed"),
        ("prune-releases", "failed"),
    ]
    # the approved releases still open
    assert open_here(config, blob) == b"evidence"
    assert open_as(new, config, blob).returncode == 0


def test_software_boxes_need_no_reseal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "box.toml"
    config.write_text('[keys]\nprovider = "software"\n')
    assert main(["-c", str(config), "reseal", "--package-root", str(tmp_path)]) == 0
    assert "reseal is not needed" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--package-root", "{tmp}"], "is neither callveil's package directory"),
        (["--package-root", "{package}", "--config", "{tmp}/absent.toml"], "no such configuration"),
        (["--package-root", "{package}", "--config", "{tmp}/pcr.toml"], "changes keys.pcr"),
        (["--prune"], "no vault key is sealed"),
    ],
)
def test_bad_requests_are_explained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    # nothing here reaches a TPM: the TCTI points nowhere
    config = write_box(tmp_path, "swtpm:host=127.0.0.1,port=1")
    (tmp_path / "pcr.toml").write_text(config.read_text().replace(f"pcr = {TEST_PCR}", "pcr = 23"))
    filled = [a.format(tmp=tmp_path, package=PACKAGE_ROOT) for a in args]
    assert main(["-c", str(config), "reseal", *filled]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "tpm").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "give --package-root DIR"), (["--config", "x.toml", "--prune"], "--config names")],
)
def test_incomplete_commands_are_explained(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["reseal", *args])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
