"""The capture check on real interfaces: SIPp calls over loopback, and a veth pair standing in
for a mirror port that is down, unplugged, silent, or carries no SIP or no answered call."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.config import Config, parse_config
from gateway.doctor.capture import check_capture
from gateway.doctor.findings import Finding, Status
from tests.capture.live_helpers import veth_pair
from tests.capture.packet_helpers import ethernet, ipv4, udp
from tests.doctor.calls import sipp_call, while_listening

LISTEN_S = 1.0
ETH_P_ALL = 0x0003
SIP_OPTIONS = (
    b"OPTIONS sip:pbx@192.0.2.2 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\n"
    b"From: <sip:probe@192.0.2.1>;tag=1\r\nTo: <sip:pbx@192.0.2.2>\r\nCall-ID: doctor-1\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def capture_config(tmp_path: Path, interface: str, sip_ports: list[int]) -> Config:
    return parse_config(
        {
            "capture": {"interface": interface, "sip_ports": sip_ports},
            "privacy": {"sampling_key_file": str(tmp_path / "sampling.key")},
        }
    )


def check_while(config: Config, seconds: float, action: Callable[[], None]) -> list[Finding]:
    return while_listening(lambda: check_capture(config, seconds=seconds), action)


def traffic(findings: list[Finding]) -> Finding:
    link, found = findings[:2]
    assert (link.check, link.status) == ("capture.interface", Status.OK)
    assert found.check == "capture.traffic"
    return found


# --- the interface ----------------------------------------------------------------------------


def test_wrong_interface_name(tmp_path: Path) -> None:
    (finding,) = check_capture(capture_config(tmp_path, "nope0", [5060]), seconds=LISTEN_S)
    assert (finding.check, finding.status) == ("capture.interface", Status.FAIL)
    assert finding.detail.startswith("no interface named 'nope0' (this box has: ")
    assert "lo" in finding.detail


@pytest.fixture
def veth() -> Iterator[tuple[str, str]]:
    """A veth pair, both ends down, with IPv6 off: unlike tests/capture's pair, its far end
    must send nothing of its own (router solicitations, MLD reports) into the near end."""
    with veth_pair("cvd", up=False, ipv6=False) as pair:
        yield pair


def link_up(name: str) -> None:
    subprocess.run(["ip", "link", "set", name, "up"], check=True)


def sender(far: str, payload: bytes) -> Callable[[], None]:
    """Sends one UDP frame between two other hosts into the far end, as a mirror port would."""

    def send() -> None:
        frame = ethernet(
            ipv4(bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 17, udp(5060, 5060, payload))
        )
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, ETH_P_ALL) as sock:
            sock.bind((far, 0))
            sock.send(frame)

    return send


@pytest.mark.live
def test_interface_down_unplugged_and_silent(tmp_path: Path, veth: tuple[str, str]) -> None:
    near, far = veth
    config = capture_config(tmp_path, near, [5060])
    (down,) = check_capture(config, seconds=LISTEN_S)
    assert (down.status, down.detail) == (Status.FAIL, f"{near} is down")
    assert f"ip link set {near} up" in down.fix
    link_up(near)
    (unplugged,) = check_capture(config, seconds=LISTEN_S)
    assert (unplugged.status, unplugged.detail) == (Status.FAIL, f"{near} is up but has no link")
    link_up(far)
    silent = traffic(check_capture(config, seconds=LISTEN_S))
    assert (silent.status, silent.detail) == (Status.FAIL, f"nothing arrived in 1 s on {near}")
    assert "mirror the PBX's port" in silent.fix


@pytest.mark.live
def test_traffic_without_sip_and_sip_without_calls(tmp_path: Path, veth: tuple[str, str]) -> None:
    near, far = veth
    for name in veth:
        link_up(name)
    config = capture_config(tmp_path, near, [5060])
    no_sip = traffic(check_while(config, LISTEN_S, sender(far, b"not signalling")))
    assert no_sip.status is Status.FAIL
    assert no_sip.detail == f"1 frames but no SIP in 1 s on {near} (capture.sip_ports: 5060)"
    no_call = traffic(check_while(config, LISTEN_S, sender(far, SIP_OPTIONS)))
    assert no_call.status is Status.WARN
    assert no_call.detail.startswith("1 SIP messages, 0 calls (0 answered)")
    assert "--seconds 120" in no_call.fix


# --- real calls over loopback -----------------------------------------------------------------


@pytest.mark.live
def test_call_with_rtp_both_ways(tmp_path: Path) -> None:
    with sipp_call(tmp_path, echo=True) as (ports, call):
        found = traffic(check_while(capture_config(tmp_path, "lo", ports), 3.0, call))
    assert found.status is Status.OK
    assert found.detail.endswith("1 with RTP in both directions")
    # the doctor listens with a throwaway sampling key: the box's own is not even created
    assert not (tmp_path / "sampling.key").exists()


@pytest.mark.live
def test_call_with_rtp_one_way_only(tmp_path: Path) -> None:
    with sipp_call(tmp_path, echo=False) as (ports, call):
        found = traffic(check_while(capture_config(tmp_path, "lo", ports), 3.0, call))
    assert found.status is Status.FAIL
    assert found.detail.endswith("RTP in one direction only on every answered call")
    assert "mirror both directions" in found.fix
