"""``callveil doctor`` as people run it: the lines it prints, --skip, and its exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.seal.softkey import SoftwareKeyProvider
from tests.capture.live_helpers import require_packet_sockets
from tests.doctor.boxes import PASSPHRASE, write_box
from tests.doctor.calls import sipp_call, while_listening
from tests.models.speech import FILLERS, TOPICS
from tests.publish.broker import HOST, Broker

REPO = Path(__file__).resolve().parents[2]
ALL_BUT_KEYS = "capture,broker,models,disk,memory,clock"


def box_with_keys(root: Path) -> Path:
    path = write_box(root, capture={"interface": "lo"})
    SoftwareKeyProvider(root / "state" / "keys.soft", PASSPHRASE, scrypt_n=2**14)
    return path


@pytest.mark.live
def test_a_healthy_box_passes_every_check(
    tmp_path: Path, broker: Broker, vosk_model: Path, capsys
) -> None:
    cert, key = broker.certs["box-a"]
    with sipp_call(tmp_path, echo=True) as (sip_ports, call):
        path = write_box(
            tmp_path,
            capture={"interface": "lo", "sip_ports": sip_ports},
            keywords={"model_path": str(vosk_model), "topics": TOPICS, "fillers": FILLERS},
            mqtt={
                "host": HOST,
                "port": broker.port,
                "ca_file": str(broker.ca.ca_file),
                "cert_file": str(cert),
                "key_file": str(key),
                "box_id": "box-a",
            },
        )
        SoftwareKeyProvider(tmp_path / "state" / "keys.soft", PASSPHRASE, scrypt_n=2**14)
        code = while_listening(lambda: main(["doctor", "-c", str(path), "--seconds", "3"]), call)
    lines = capsys.readouterr().out.splitlines()
    findings = {line.split()[1]: line.split()[0] for line in lines[:-1] if line[:1] != " "}
    assert code == 0, "\n".join(lines)
    assert "FAIL" not in findings.values()
    assert list(findings) == [
        "configuration",
        "keys.seal",
        "models.emotion",
        "models.keywords",
        "models.vad",
        "broker.certificate",
        "broker.connection",
        "broker.outbox",
        "disk",
        "memory",
        "clock",
        "capture.interface",
        "capture.traffic",
    ]
    # what only this machine decides (a synchronised clock, free space) may warn; the rest not
    assert findings["broker.certificate"] == "warn"  # the test CA's certificates live 30 days
    assert {findings[c] for c in ("keys.seal", "broker.connection", "capture.traffic")} == {"ok"}


def test_healthy_checks_print_ok_and_exit_0(tmp_path: Path, capsys) -> None:
    path = box_with_keys(tmp_path)
    assert main(["doctor", "-c", str(path), "--skip", ALL_BUT_KEYS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["ok", "configuration"],
        ["ok", "keys.seal"],
    ]
    assert lines[-1] == "0 failed, 0 warnings, 2 ok"


def test_a_failed_check_prints_its_fix_and_exits_1(tmp_path: Path, capsys) -> None:
    path = box_with_keys(tmp_path)
    (tmp_path / "passphrase").unlink()
    assert main(["doctor", "-c", str(path), "--skip", ALL_BUT_KEYS]) == 1
    lines = capsys.readouterr().out.splitlines()
    (failed,) = [i for i, line in enumerate(lines) if line.startswith("FAIL")]
    assert lines[failed].split()[:2] == ["FAIL", "keys.seal"]
    fix = lines[failed + 1].strip()
    assert fix.startswith(f"fix: keys.passphrase_file {tmp_path / 'passphrase'} does not exist")
    assert lines[-1] == "1 failed, 0 warnings, 1 ok"


def test_skip_takes_groups_and_single_checks(tmp_path: Path, capsys) -> None:
    path = box_with_keys(tmp_path)
    skip = "capture,broker,keys,models.emotion,models.keywords,disk,memory,clock"
    assert main(["doctor", "-c", str(path), "--skip", skip]) == 0
    checks = [line.split()[1] for line in capsys.readouterr().out.splitlines()[:-1]]
    assert checks == ["configuration", "models.vad"]


def test_unknown_check_to_skip_is_refused(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["doctor", "-c", str(tmp_path / "box.toml"), "--skip", "capture,tpm"])
    assert stopped.value.code == 2
    assert "unknown check tpm; checks that can be skipped: keys, models" in capsys.readouterr().err


def test_configuration_that_does_not_load_exits_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "box.toml"
    bad.write_text("[privacy]\ntrim_seconds = -1\n")
    assert main(["doctor", "-c", str(bad)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:2] == ["FAIL", "configuration"]
    assert "privacy.trim_seconds = -1 is out of range" in out[1]


def test_capture_without_cap_net_raw_fails_clearly(tmp_path: Path) -> None:
    require_packet_sockets()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    path = box_with_keys(tmp_path)
    skip = "keys,models,broker,disk,memory,clock"
    done = subprocess.run(
        [setpriv, "--inh-caps=-net_raw", "--bounding-set=-net_raw", "--",
         sys.executable, "-m", "gateway.cli", "doctor", "-c", str(path), "--skip", skip,
         "--seconds", "1"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].split()[:2] == ["ok", "capture.interface"]
    assert lines[2].split()[:2] == ["FAIL", "capture.traffic"]
    assert "needs the CAP_NET_RAW capability, which this process lacks" in lines[3]
