"""The demo: its capture is reproducible, complete by tshark's reading, and replays cleanly.

``demo/demo-calls.pcap`` was generated with eSpeak NG 1.51 and SoX 14.4.2 (Debian 12). Both are
deterministic from run to run (sox runs with dither off and in repeatable mode), so regenerating
gives the same bytes; another espeak-ng or sox release speaks or resamples differently, and then
the byte comparison is skipped with that reason.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

with warnings.catch_warnings():  # the independent G.711 reference; audioop-lts from 3.13 on
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo" / "demo-calls.pcap"
CONFIG = REPO / "demo" / "callveil-demo.toml"
SCRIPT = REPO / "scripts" / "make_demo_capture.py"
GENERATED_WITH = {"espeak-ng": "1.51", "sox": "14.4.2"}
DOCUMENTATION_NETS = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("198.51.100.0/24")]


def _tool_version(tool: str) -> str | None:
    if shutil.which(tool) is None:
        return None
    out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"\d+\.\d+(\.\d+)?", out)
    return found.group(0) if found else ""


def _fields(tshark: str, path: Path, display_filter: str, *names: str) -> list[list[str]]:
    command = [tshark, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    command += ["-E", "occurrence=a", "-E", "aggregator=|", "-E", "separator=\t"]
    for name in names:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.fixture(scope="module")
def sip_rows(tshark: str) -> list[list[str]]:
    names = ("frame.time_epoch", "sip.Call-ID", "sip.Method", "sip.Status-Code")
    names += ("sip.CSeq.method", "sdp.media", "sdp.media_attr", "sip.msg_hdr")
    return _fields(tshark, DEMO, "sip", *names)


def test_regenerating_gives_the_same_bytes(tmp_path):
    for tool, version in GENERATED_WITH.items():
        found = _tool_version(tool)
        if found is None:
            pytest.skip(f"{tool} is not installed (scripts/setup installs it)")
        if found != version:
            pytest.skip(
                f"demo made with {tool} {version}, this machine has {found}: the speech differs; "
                "regenerate with scripts/make_demo_capture.py if the demo should follow it"
            )
    out = tmp_path / "demo.pcap"
    subprocess.run(
        [sys.executable, "-W", "ignore", str(SCRIPT), "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert out.read_bytes() == DEMO.read_bytes()


def test_small_enough_to_ship():
    assert DEMO.stat().st_size < 1_500_000


def test_tshark_sees_two_complete_calls(sip_rows):
    calls: dict[str, list[str]] = defaultdict(list)
    for _, call_id, method, status, cseq_method, *_ in sip_rows:
        calls[call_id].append(method or f"{status}/{cseq_method}")
    assert len(calls) == 2
    for flow in calls.values():
        assert flow == ["INVITE", "100/INVITE", "180/INVITE", "200/INVITE", "ACK", "BYE", "200/BYE"]


def test_offer_answer_and_contract_marker(sip_rows):
    invites = [row for row in sip_rows if row[2] == "INVITE"]
    answers = [row for row in sip_rows if row[3] == "200" and row[4] == "INVITE"]
    assert len(invites) == len(answers) == 2
    for row in invites:
        assert row[5].split()[2:] == ["RTP/AVP", "8", "0", "101"]
        for codec in (
            "rtpmap:8 PCMA/8000",
            "rtpmap:0 PCMU/8000",
            "rtpmap:101 telephone-event/8000",
        ):
            assert codec in row[6].split("|")
    for row in answers:
        assert row[5].split()[2:] == ["RTP/AVP", "8", "101"]
    marked = [row for row in invites if "X-Contract: conclude" in row[7]]
    assert len(marked) == 1


def test_media_by_tshark(tshark):
    out = subprocess.run(
        [tshark, "-n", "-r", str(DEMO), "-q", "-z", "rtp,streams"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    streams = [line for line in out.splitlines() if re.search(r"0x[0-9A-F]{8}", line)]
    assert len(streams) == 4  # two directions of two calls
    for line in streams:
        assert "g711A" in line
        assert " 0 (0.0%)" in line  # no loss
    assert sum("telephone-event" in line for line in streams) == 1
    lengths = sorted(
        float(line.split()[1]) - float(line.split()[0]) for line in streams
    )  # end - start
    assert lengths[0] == pytest.approx(25, abs=2.5)  # the contract call, both directions
    assert lengths[2] == pytest.approx(35, abs=2.5)  # the billing call
    reports = _fields(tshark, DEMO, "rtcp.pt == 200", "rtcp.senderssrc")
    assert len(reports) >= 8  # a couple of sender reports per direction


def test_only_documentation_addresses_and_valid_checksums(tshark):
    command = [tshark, "-n", "-r", str(DEMO), "-o", "udp.check_checksum:TRUE"]
    command += ["-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "separator=\t"]
    command += ["-e", "ip.src", "-e", "ip.dst", "-e", "udp.checksum.status"]
    command += ["-e", "ip.checksum.status"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    assert len(rows) > 5000
    for src, dst, udp_ok, ip_ok in rows:
        for addr in (src, dst):
            assert any(ipaddress.ip_address(addr) in net for net in DOCUMENTATION_NETS)
        assert (udp_ok, ip_ok) == ("1", "1")


def test_each_direction_talks_in_turns(tshark):
    # decoded here with audioop, independently of the project's codecs
    rows = _fields(tshark, DEMO, "rtp.p_type == 8", "rtp.ssrc", "rtp.payload")
    level: dict[str, list[float]] = defaultdict(list)
    for ssrc, payload in rows:
        pcm = np.frombuffer(audioop.alaw2lin(bytes.fromhex(payload), 2), dtype=np.int16)
        level[ssrc].append(float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))))
    assert len(level) == 4
    talking = {ssrc: np.array(v) > 300 for ssrc, v in level.items()}  # speech, not line noise
    for active in talking.values():
        assert 0.2 < active.mean() < 0.8  # speaks, and also listens
    # the two directions of a call start together and have equal length: pair them that way
    by_length = sorted(talking.values(), key=len)
    for a, b in (by_length[0:2], by_length[2:4]):
        n = min(len(a), len(b))
        assert (a[:n] & b[:n]).mean() < 0.02  # hardly ever both at once


def _callveil() -> list[str]:
    script = Path(sys.executable).with_name("callveil")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]


def test_replay_reports_two_calls_and_no_identity(tmp_path, tshark, sip_rows):
    config = tmp_path / CONFIG.name  # its sampling key is created beside it, not in the repo
    shutil.copy(CONFIG, config)
    result = subprocess.run(
        [*_callveil(), "-c", str(config), "replay", "-q", str(DEMO)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    assert re.search(r"^calls\s+2 \(answered 2\)$", out, re.M), out
    policy = re.search(r"^\s+policy\s+(.+)$", out, re.M)
    assert policy is not None, out
    assert sorted(policy.group(1).split(", ")) == ["analytics 1", "contract 1"]
    assert re.search(r"^\s+telephone events\s+1 ", out, re.M), out
    assert (tmp_path / "state" / "sampling.key").is_file()

    identity = set()
    names = ("sip.Call-ID", "sip.r-uri", "sip.from.addr", "sip.to.addr", "sip.contact.uri")
    names += ("sip.from.user", "sip.to.user", "sip.from.tag", "sip.to.tag", "ip.src", "ip.dst")
    names += ("sdp.connection_info.address",)
    for row in _fields(tshark, DEMO, "sip", *names):
        for value in row:
            identity.update(v for v in value.split("|") if v)
    for user in [v for v in identity if v.startswith("+")]:
        identity.add(user.lstrip("+"))  # the digits alone
    assert len(identity) >= 12
    leaked = sorted(v for v in identity if v in out)
    assert not leaked, f"replay output shows {leaked}"
