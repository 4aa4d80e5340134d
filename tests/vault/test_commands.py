"""The staff commands end to end through ``gateway.cli.main``, on a temporary box with a
software key: accounts, refusals, export, deletion, retention, audit verification and export,
and a scan of every file the box wrote for plaintext audio, keys, passwords or personal data."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.cli import main
from gateway.config import load_config
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import open_configured_provider
from gateway.vault.retention import expiry_for
from gateway.vault.store import Vault
from gateway.verifiers import audit as standalone
from tests.privacy_scan import scan

PASSPHRASE = "passphrase of the test box"
PASSWORDS = {
    "ada": "horse battery staple 1",
    "ann": "horse battery staple 2",
    "lea": "horse battery staple 3",
    "aud": "horse battery staple 4",
}
PURPOSE = "quality review of billing calls"
PERSONAL = ["+39 06 1234 5678", "sip:mario.rossi@example.it", "192.0.2.17"]
# entry fields that hold, by construction, what the scanner would flag: the minute of the
# access, the previous entry's hash and a record's random hex id
NOT_SCANNED = ("time", "prev", "subject")


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real WAV recording, spoken by espeak-ng for this test."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/setup installs it)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(path), "the parcel arrived late and the invoice was wrong"],
        check=True,
        capture_output=True,
    )
    return path.read_bytes()


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A configuration whose keys, vault, accounts and log all live below ``state/``."""
    secret = tmp_path / "passphrase"
    secret.write_text(PASSPHRASE + "\n")
    secret.chmod(0o600)
    config = tmp_path / "box.toml"
    config.write_text(
        '[keys]\nprovider = "software"\nkey_file = "state/keys.soft"\n'
        'passphrase_file = "passphrase"\n'
        '[vault]\npath = "state/vault.db"\nusers_path = "state/users.db"\n'
        'audit_path = "state/audit.db"\nsign_every = 4\nanalytics_recording_days = 45\n'
        "password_memory_mib = 19\n"  # the least the configuration allows: a shorter test
    )
    monkeypatch.delenv("CALLVEIL_PASSWORD", raising=False)
    monkeypatch.delenv("CALLVEIL_NEW_PASSWORD", raising=False)
    return config


def run(config: Path, *argv: str, password: str | None = None, new: str | None = None) -> int:
    with pytest.MonkeyPatch.context() as env:
        if password is not None:
            env.setenv("CALLVEIL_PASSWORD", password)
        if new is not None:
            env.setenv("CALLVEIL_NEW_PASSWORD", new)
        return main(["-c", str(config), *argv])


def as_user(config: Path, name: str, *argv: str, purpose: str = PURPOSE) -> int:
    return run(config, *argv, "--user", name, "--purpose", purpose, password=PASSWORDS[name])


def store(config: Path, speech: bytes) -> dict[str, str]:
    """Store records as the pipeline does: each partition under its own derived key."""
    settings = load_config(config)
    provider = open_configured_provider(settings, config)
    today = dt.date.today()
    sealers = {p: Sealer(provider, label=p) for p in ("analytics", "contract")}
    with Vault(Path(settings.vault.path), sealers) as vault:
        ids = {
            partition: vault.put(
                "recording",
                speech,
                partition=partition,
                period=f"{today.isocalendar().year}-W{today.isocalendar().week:02d}",
                expires=expiry_for(settings.vault, partition, "recording", today),
            )
            for partition in ("analytics", "contract")
        }
        ids["expired"] = vault.put(
            "summary", b'{"tension": 0.4}', partition="analytics", period="2020-W01",
            expires=dt.date(2020, 3, 2),
        )  # fmt: skip
        # scanned while the vault is open, WAL and shared memory included
        assert_no_secrets(config.parent / "state", speech, provider.unwrap_kek())
    return ids


def secret_forms(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret)]


def assert_no_secrets(state: Path, speech: bytes, kek: bytes) -> None:
    files = [p for p in state.rglob("*") if p.is_file()]
    assert files
    keys = [kek] + [
        HKDF(hashes.SHA256(), 32, None, b"callveil labelled kek v1\x00" + label).derive(kek)
        for label in (b"analytics", b"contract")
    ]
    pcm = speech[44:]
    chunks = [pcm[i : i + 32] for i in range(0, len(pcm) - 32, 32)]
    needles = [c for c in chunks if len(set(c)) >= 20][::20]  # speech, not silence
    assert len(needles) >= 20
    needles += [form for key in keys for form in secret_forms(key)]
    needles += [p.encode() for p in [PASSPHRASE, *PASSWORDS.values()]]
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"{path.name} holds a secret or plaintext audio"


def test_staff_session_end_to_end(box: Path, speech: bytes, tmp_path: Path, capsys) -> None:
    state = tmp_path / "state"
    assert run(box, "register") == 0
    assert "45 days at most" in capsys.readouterr().out

    assert run(box, "users", "bootstrap", "ada", new=PASSWORDS["ada"]) == 0
    assert run(box, "users", "bootstrap", "eve", new="eve's horse battery") == 3
    assert "accounts exist already" in capsys.readouterr().err
    for name, role in (("ann", "analyst"), ("lea", "legal"), ("aud", "auditor")):
        code = run(
            box, "users", "add", name, "--role", role, "--user", "ada", "--purpose",
            "onboarding new staff member", password=PASSWORDS["ada"], new=PASSWORDS[name],
        )  # fmt: skip
        assert code == 0
    assert run(box, "users", "add", "+390612345678", "--role", "analyst", "--user", "ada",
               "--purpose", "onboarding new staff member") == 1  # fmt: skip
    assert "not an e-mail address or a number" in capsys.readouterr().err
    ids = store(box, speech)
    capsys.readouterr()

    # analysts reach analytics records only
    assert as_user(box, "ann", "vault", "list", "--partition", "analytics") == 0
    listing = capsys.readouterr().out
    assert ids["analytics"] in listing and ids["contract"] not in listing
    assert as_user(box, "ann", "vault", "list", "--partition", "contract") == 3
    assert "the analyst role may not list in the contract partition" in capsys.readouterr().err
    out = tmp_path / "exports"
    out.mkdir()
    assert (
        as_user(box, "ann", "vault", "export", ids["analytics"], "--out", str(out / "a.wav")) == 0
    )
    assert (out / "a.wav").read_bytes() == speech
    assert (out / "a.wav").stat().st_mode & 0o777 == 0o600
    assert as_user(box, "lea", "vault", "export", ids["contract"], "--out", str(out / "c.wav")) == 0
    assert (out / "c.wav").read_bytes() == speech
    assert as_user(box, "lea", "vault", "export", ids["contract"], "--out", str(out / "c.wav")) == 1
    assert "exists already" in capsys.readouterr().err

    # refusals: wrong password, no purpose, personal data in the purpose, unknown user name
    assert run(box, "vault", "list", "--partition", "analytics", "--user", "ann", "--purpose",
               PURPOSE, password="not the password") == 3  # fmt: skip
    assert "wrong user name or password" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        run(box, "vault", "list", "--partition", "analytics", "--user", "ann")
    assert usage.value.code == 2
    assert "--purpose" in capsys.readouterr().err
    for purpose in [
        f"callback to {PERSONAL[0]}",
        f"call from {PERSONAL[1]}",
        f"from {PERSONAL[2]}",
    ]:
        assert (
            as_user(box, "ann", "vault", "list", "--partition", "analytics", purpose=purpose) == 3
        )
    assert "personal data" in capsys.readouterr().err
    assert run(box, "vault", "list", "--partition", "analytics", "--user", "+390612345678",
               "--purpose", PURPOSE, password="anything at all") == 3  # fmt: skip

    # deletion: administrators only; retention shreds what expired
    assert as_user(box, "ann", "vault", "delete", ids["analytics"]) == 3
    assert as_user(box, "ada", "vault", "delete", ids["analytics"]) == 0
    assert run(box, "retention", "run") == 0
    assert capsys.readouterr().out.splitlines()[-1] == "shredded: analytics 1, contract 0"

    # the log: verified in the box, exported, verified elsewhere with only the public key
    assert as_user(box, "aud", "audit", "verify") == 0
    assert "audit log intact" in capsys.readouterr().out
    export = out / "audit.json"
    assert as_user(box, "aud", "audit", "export", "--out", str(export)) == 0
    assert "box signing key: sha256:" in capsys.readouterr().out
    provider = open_configured_provider(load_config(box), box)
    key = out / "box.pem"
    key.write_bytes(provider.public_key_pem())
    assert standalone.main([str(export), "--public-key", str(key)]) == 0
    assert "audit log intact" in capsys.readouterr().out

    entries = [json.loads(e["body"]) for e in json.loads(export.read_text())["entries"]]
    actions = [(e["user"], e["action"], e["outcome"]) for e in entries]
    assert actions[0] == ("ada", "bootstrap", "granted")
    assert ("eve", "bootstrap", "refused") in actions
    assert ("ann", "list", "refused") in actions and ("lea", "export", "granted") in actions
    assert ("ann", "delete", "refused") in actions and ("ada", "delete", "granted") in actions
    assert ("<invalid name>", "list", "refused") in actions
    assert ("retention-job", "retention", "done") in actions
    assert actions[-1] == ("aud", "audit-export", "granted")

    # nothing on disk holds audio, keys or passwords; nothing logged holds personal data
    assert_no_secrets(state, speech, provider.unwrap_kek())
    every_file = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    for fragment in ("1234 5678", "mario.rossi", "192.0.2.17", "+390612345678"):
        assert fragment.encode() not in every_file
    for entry in entries:
        scanned = {k: v for k, v in entry.items() if k not in NOT_SCANNED}
        assert scan(scanned, known=["1234 5678", "mario.rossi", "+390612345678"]) == []
        assert entry["subject"] is None or re.fullmatch(
            r"[0-9a-f]{32}|[a-z][a-z0-9._-]+", entry["subject"]
        )
    rows = sqlite3.connect(state / "vault.db").execute(
        "SELECT kind, phase, partition, period, expires FROM records"
    )
    settings, today = load_config(box).vault, dt.date.today()
    metadata = list(rows)
    assert metadata  # the contract recording is still there
    for kind, phase, partition, period, expires in metadata:
        assert scan({"kind": kind, "phase": phase, "partition": partition}) == []
        assert re.fullmatch(r"\d{4}-W\d{2}", period)
        assert expires == expiry_for(settings, partition, kind, today).isoformat()

    hashes_stored = sqlite3.connect(state / "users.db").execute("SELECT hash FROM users")
    assert all(h.startswith("$argon2id$v=19$m=19456,t=3,p=4$") for (h,) in hashes_stored)

    # an edited entry is named by the in-box check, which then fails
    con = sqlite3.connect(state / "audit.db")
    with con:
        body = json.loads(con.execute("SELECT body FROM entries WHERE seq = 5").fetchone()[0])
        body["purpose"] = "routine"
        con.execute("UPDATE entries SET body = ? WHERE seq = 5", (json.dumps(body),))
    con.close()
    assert as_user(box, "aud", "audit", "verify") == 1
    assert "PROBLEM: entry 5 was edited" in capsys.readouterr().out


def test_play_plays_or_says_to_export(box: Path, speech: bytes, capsys) -> None:
    assert run(box, "users", "bootstrap", "ada", new=PASSWORDS["ada"]) == 0
    assert run(
        box, "users", "add", "ann", "--role", "analyst", "--user", "ada", "--purpose",
        "onboarding new staff member", password=PASSWORDS["ada"], new=PASSWORDS["ann"],
    ) == 0  # fmt: skip
    ids = store(box, speech)
    capsys.readouterr()
    code = as_user(box, "ann", "vault", "play", ids["analytics"])
    out, err = capsys.readouterr()
    if code == 0:
        assert f"played analytics recording {ids['analytics']}" in out
    else:  # a machine without PyAudio or without a sound device
        assert code == 1
        assert "export" in err and ("cannot play sound" in err or "PyAudio" in err)
        assert "Traceback" not in err


def test_configuration_and_key_problems_exit_2(box: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[vault]\ncontract_recording_days = 3\n")
    assert main(["-c", str(bad), "register"]) == 2
    assert "vault.contract_recording_days = 3 is out of range" in capsys.readouterr().err
    (tmp_path / "passphrase").unlink()
    assert run(box, "users", "bootstrap", "ada", new=PASSWORDS["ada"]) == 2
    assert "passphrase_file" in capsys.readouterr().err
    assert not (tmp_path / "state" / "users.db").exists()
