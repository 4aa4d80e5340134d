"""The audit log against real SQLite files and real signatures: every kind of tampering is
found and named; the export verifies off the box with the standalone verifier alone."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.seal.softkey import SoftwareKeyProvider
from gateway.vault.audit import GRANTED, AuditEvent, AuditLog
from gateway.verifiers.audit import (
    GENESIS,
    Entry,
    Report,
    canonical,
    entry_hash,
    head_message,
    verify,
)
from tests.vault.conftest import software_provider

REPO = Path(__file__).resolve().parents[2]
VERIFIER = REPO / "gateway" / "verifiers" / "audit.py"


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit-key") / "box.key"


@pytest.fixture(scope="module")
def provider(key_file: Path) -> SoftwareKeyProvider:
    return software_provider(key_file)


@pytest.fixture(scope="module")
def other_box(tmp_path_factory: pytest.TempPathFactory) -> SoftwareKeyProvider:
    return software_provider(tmp_path_factory.mktemp("audit-other") / "box.key")


def event(n: int) -> AuditEvent:
    return AuditEvent("ann", "analyst", "play", GRANTED, f"quality review number {n}", "analytics")


def written_log(path: Path, provider: SoftwareKeyProvider, count: int = 12) -> Path:
    """A log of ``count`` entries, heads signed every 5 entries and on close."""
    with AuditLog(path, provider, sign_every=5) as log:
        for n in range(count):
            log.append(event(n))
    return path


def check(path: Path, provider: SoftwareKeyProvider) -> Report:
    with AuditLog(path, provider) as log:
        return log.verify()


def sql(path: Path, *statements: tuple[str, tuple]) -> None:
    """Change the file behind the log's back, as someone with disk access could."""
    con = sqlite3.connect(path)
    with con:
        for statement, params in statements:
            con.execute(statement, params)
    con.close()


def body(path: Path, seq: int) -> dict:
    con = sqlite3.connect(path)
    try:
        return json.loads(
            con.execute("SELECT body FROM entries WHERE seq = ?", (seq,)).fetchone()[0]
        )
    finally:
        con.close()


def set_body(path: Path, seq: int, fields: dict, *, rehash: bool) -> str:
    text = canonical(fields)
    if rehash:
        sql(
            path,
            ("UPDATE entries SET body = ?, hash = ? WHERE seq = ?", (text, entry_hash(text), seq)),
        )
    else:
        sql(path, ("UPDATE entries SET body = ? WHERE seq = ?", (text, seq)))
    return entry_hash(text)


def kinds(report: Report) -> list[tuple[int | None, str]]:
    return [(p.seq, p.kind) for p in report.problems]


def test_an_untouched_log_verifies(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    with AuditLog(path, provider) as log:
        assert [h.seq for h in log.heads()] == [5, 10, 12]
        report = log.verify()
    assert report.ok and report.entries == 12 and report.signed_through == 12
    assert report.render().endswith("audit log intact")
    assert body(path, 1)["prev"] == GENESIS
    assert body(path, 3)["time"].endswith("Z") and len(body(path, 3)["time"]) == 17  # minutes


def test_an_edited_entry_is_named(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    fields = body(path, 7)
    set_body(path, 7, {**fields, "user": "lea"}, rehash=False)
    report = check(path, provider)
    assert kinds(report) == [(7, "edited")]
    assert "entry 7 was edited" in report.render()


def test_an_edit_with_a_recomputed_hash_is_named(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    set_body(path, 7, {**body(path, 7), "outcome": "refused"}, rehash=True)
    report = check(path, provider)
    assert kinds(report) == [(7, "edited")]
    assert "entry 7 was edited and its hash recomputed" in report.render()


def test_a_rewritten_chain_is_caught_by_the_signed_heads(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    prev = entry_hash(canonical(body(path, 6)))
    for seq in range(7, 13):  # rewrite 7 and recompute every later hash and link
        fields = {**body(path, seq), "prev": prev}
        if seq == 7:
            fields["purpose"] = "nothing to see here"
        prev = set_body(path, seq, fields, rehash=True)
    report = check(path, provider)
    assert kinds(report) == [(10, "rewritten"), (12, "rewritten")]
    assert "entries 6 to 10 were rewritten" in report.render()


def test_removed_entries_are_named(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    sql(path, ("DELETE FROM entries WHERE seq IN (3, 8, 9)", ()))
    report = check(path, provider)
    assert kinds(report) == [(3, "removed"), (8, "removed")]
    assert "entry 3 was removed" in report.render()
    assert "entries 8 to 9 were removed" in report.render()


def test_reordered_entries_are_named(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    sql(
        path,
        ("UPDATE entries SET seq = -1 WHERE seq = 7", ()),
        ("UPDATE entries SET seq = 7 WHERE seq = 8", ()),
        ("UPDATE entries SET seq = 8 WHERE seq = -1", ()),
    )
    report = check(path, provider)
    assert kinds(report) == [(7, "reordered")]
    assert "entry 7 is stored after entry 8" in report.render()


def test_a_cut_end_that_a_signed_head_covers_is_named(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    sql(path, ("DELETE FROM entries WHERE seq > 10", ()))
    report = check(path, provider)
    assert kinds(report) == [(11, "truncated")]
    assert "entries 11 to 12 were removed from its end" in report.render()


def test_a_forged_head_is_named(tmp_path: Path, provider, other_box) -> None:
    path = written_log(tmp_path / "audit.db", provider)
    con = sqlite3.connect(path)
    head_hash = con.execute("SELECT hash FROM heads WHERE seq = 10").fetchone()[0]
    con.close()
    forged = other_box.sign(head_message(10, head_hash))
    sql(path, ("UPDATE heads SET signature = ? WHERE seq = 10", (forged,)))
    report = check(path, provider)
    assert kinds(report) == [(10, "forged")]


def test_every_flipped_bit_in_entries_is_detected(tmp_path: Path, provider) -> None:
    path = written_log(tmp_path / "audit.db", provider, count=3)
    with AuditLog(path, provider) as log:
        original, heads = log.entries(), log.heads()
        key = log.public_key_pem
    for index, entry in enumerate(original):
        raw = entry.body.encode()
        for bit in range(0, len(raw) * 8, 5):  # every fifth bit of every entry's text
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 0x80 >> (bit % 8)
            damaged = list(original)
            damaged[index] = Entry(flipped.decode("latin-1"), entry.hash)
            report = verify(damaged, heads, key)
            assert not report.ok, (index, bit)
            assert report.problems[0].seq in (index + 1, None)


def test_no_head_vouches_for_entries_edited_before_it_is_signed(tmp_path: Path, provider) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, provider, sign_every=100)
    try:
        for n in range(3):
            log.append(event(n))
        set_body(path, 2, {**body(path, 2), "user": "lea"}, rehash=True)
        assert log.sign_head() is None
        report = verify(log.entries(), log.heads(), log.public_key_pem)
        assert kinds(report) == [(2, "edited"), (1, "unsigned")]
    finally:
        log.close()
    with AuditLog(path, provider) as reopened:  # closing signs nothing over the edit either
        assert reopened.heads() == []
    with AuditLog(path, provider) as reopened:
        assert reopened.heads() == []


_WRITER = """
import sys
from pathlib import Path
from gateway.vault.audit import AuditEvent, AuditLog
from tests.vault.conftest import software_provider
log = AuditLog(Path(sys.argv[1]), software_provider(Path(sys.argv[2])), sign_every=7)
n = 0
while True:
    n += 1
    log.append(AuditEvent("ann", "analyst", "list", "granted", "quality review loop", "analytics"))
    if n == 20:
        print("ready", flush=True)
"""


def test_a_killed_writer_leaves_an_intact_log(tmp_path: Path, provider, key_file) -> None:
    path = tmp_path / "audit.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path), str(key_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    with AuditLog(path, provider) as log:
        entries, heads = log.entries(), log.heads()
        before = verify(entries, heads, log.public_key_pem)
        assert [p.kind for p in before.problems] in ([], ["unsigned"])  # killed between heads
        assert before.signed_through >= 14
        after = log.verify()  # the next opener checks the tail and signs it
    assert after.ok and after.entries == len(entries) >= 20


def test_cutting_an_unsigned_tail_is_not_detectable(tmp_path: Path, provider) -> None:
    """The documented limit: entries no head covers yet can vanish without trace."""
    path = tmp_path / "audit.db"
    log = AuditLog(path, provider, sign_every=5)
    for n in range(7):
        log.append(event(n))
    sql(path, ("DELETE FROM entries WHERE seq > 5", ()))
    report = log.verify()
    log.close()
    assert report.ok and report.entries == 5


def write_export(tmp_path: Path, provider) -> tuple[Path, Path]:
    path = written_log(tmp_path / "audit.db", provider)
    export = tmp_path / "export.json"
    with AuditLog(path, provider) as log:
        assert log.export(export) == 12
        with pytest.raises(Exception, match="exists already"):
            log.export(export)
    key = tmp_path / "box.pem"
    key.write_bytes(provider.public_key_pem())
    return export, key


def run_standalone(tmp_path: Path, export: Path, key: Path) -> subprocess.CompletedProcess:
    """The verifier copied alone into an empty folder, run with callveil made unimportable."""
    alone = tmp_path / "elsewhere"
    alone.mkdir(exist_ok=True)
    shutil.copy(VERIFIER, alone / "audit.py")
    runner = (
        "import runpy, sys; sys.modules['gateway'] = None; "
        f"sys.argv = ['audit.py', {str(export)!r}, '--public-key', {str(key)!r}]; "
        "runpy.run_path('audit.py', run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-I", "-c", runner], cwd=alone, capture_output=True, text=True, timeout=60
    )


def test_export_verifies_off_the_box_with_only_the_public_key(tmp_path: Path, provider) -> None:
    export, key = write_export(tmp_path, provider)
    result = run_standalone(tmp_path, export, key)
    assert result.returncode == 0, result.stderr
    assert "12 entries; entries 1 to 12 are covered" in result.stdout
    assert "audit log intact" in result.stdout


def test_export_fails_under_another_key(tmp_path: Path, provider, other_box) -> None:
    export, _ = write_export(tmp_path, provider)
    wrong = tmp_path / "other.pem"
    wrong.write_bytes(other_box.public_key_pem())
    result = run_standalone(tmp_path, export, wrong)
    assert result.returncode == 1
    assert "note: the export names another signing key" in result.stdout
    assert "no valid signature by this key" in result.stdout


def test_an_edited_export_is_caught_off_the_box(tmp_path: Path, provider) -> None:
    export, key = write_export(tmp_path, provider)
    document = json.loads(export.read_text())
    fields = json.loads(document["entries"][3]["body"])
    document["entries"][3]["body"] = canonical({**fields, "purpose": "routine"})
    export.write_text(json.dumps(document))
    result = run_standalone(tmp_path, export, key)
    assert result.returncode == 1
    assert "PROBLEM: entry 4 was edited" in result.stdout


def test_unreadable_export_exits_2(tmp_path: Path, provider) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    key = tmp_path / "box.pem"
    key.write_bytes(provider.public_key_pem())
    result = run_standalone(tmp_path, bad, key)
    assert result.returncode == 2
    assert "is not a callveil audit export" in result.stderr


def test_the_verifier_imports_nothing_from_callveil() -> None:
    import ast

    tree = ast.parse(VERIFIER.read_text())
    modules = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert modules <= set(sys.stdlib_module_names) | {"cryptography", "__future__"}


def test_heads_signed_by_the_tpm_verify(tpm: str, tmp_path: Path) -> None:
    from gateway.seal.tpm import TpmKeyProvider
    from tests.seal.tpm_helpers import TEST_PCR

    measurement = hashlib.sha256(b"audit test release").digest()
    with TpmKeyProvider(tpm, tmp_path / "tpm", measurement=measurement, pcr=TEST_PCR) as box:
        path = tmp_path / "audit.db"
        with AuditLog(path, box, sign_every=2) as log:
            for n in range(5):
                log.append(event(n))
        with AuditLog(path, box) as log:
            assert [h.seq for h in log.heads()] == [2, 4, 5]
            assert log.verify().ok
        set_body(path, 3, {**body(path, 3), "action": "delete"}, rehash=False)
        with AuditLog(path, box) as log:
            assert kinds(log.verify()) == [(3, "edited")]
