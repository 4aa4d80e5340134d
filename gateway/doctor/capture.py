"""The mirror port: the interface is there and up, and it carries SIP and two-way RTP.

The doctor listens with the capture stage the daemon runs, changed in three ways so that it
counts the media of every call: no kernel filter, no call sampled (so nothing is decoded),
and a throwaway sampling key (so the box's own is neither read nor, before the first start,
created by root).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

from gateway.capture.live import SYS_CLASS_NET, LiveCaptureError, interfaces
from gateway.capture.replay import listen
from gateway.capture.session import CaptureReport
from gateway.config import Config
from gateway.doctor.findings import Finding, Status, fail, ok, warn

INTERFACE = "capture.interface"
TRAFFIC = "capture.traffic"
KERNEL = "capture.kernel"
_IFF_UP = 0x1


def check_capture(config: Config, *, seconds: float) -> list[Finding]:
    name = config.capture.interface
    link = check_link(name)
    if link.status is not Status.OK:
        return [link]
    with tempfile.TemporaryDirectory(prefix="callveil-doctor-") as scratch:
        probe = dataclasses.replace(
            config,
            capture=dataclasses.replace(config.capture, kernel_filter=False),
            privacy=dataclasses.replace(
                config.privacy,
                sample_rate=0.0,
                sampling_key_file=str(Path(scratch) / "sampling.key"),
            ),
        )
        try:
            result = listen(name, probe, seconds=seconds)
        except LiveCaptureError as exc:
            return [link, fail(TRAFFIC, f"cannot listen on {name}", str(exc))]
    findings = [link, judge_traffic(result.report, name, seconds, config.capture.sip_ports)]
    if result.kernel_dropped:
        findings.append(
            warn(
                KERNEL,
                f"the kernel dropped {result.kernel_dropped} of {result.kernel_received} frames "
                "(capture ring full) while the doctor listened without the per-call filter",
                "raise capture.socket_buffer_mib if the daemon reports drops as well",
            )
        )
    return findings


def check_link(name: str) -> Finding:
    """The interface exists, is administratively up and has a link."""
    if name not in interfaces():
        return fail(
            INTERFACE,
            f"no interface named {name!r} (this box has: {', '.join(interfaces()) or 'none'})",
            "set capture.interface to the interface wired to the switch's mirror port",
        )
    base = SYS_CLASS_NET / name
    if not int((base / "flags").read_text(), 16) & _IFF_UP:
        return fail(
            INTERFACE,
            f"{name} is down",
            f"bring it up (ip link set {name} up) and make that permanent in the network "
            "configuration",
        )
    try:
        carrier = (base / "carrier").read_text().strip() == "1"
    except OSError:  # some drivers do not report a carrier
        carrier = True
    if not carrier:
        return fail(
            INTERFACE,
            f"{name} is up but has no link",
            f"check the cable between {name} and the switch's mirror port, and that the switch "
            "port is enabled",
        )
    return ok(INTERFACE, f"{name} is up with a link")


def judge_traffic(r: CaptureReport, name: str, seconds: float, sip_ports: list[int]) -> Finding:
    """What the mirror port carried during the listen, judged for SIP and two-way RTP."""
    listened = f"in {seconds:g} s on {name}"
    if r.frames == 0:
        return fail(
            TRAFFIC,
            f"nothing arrived {listened}",
            "configure the switch to mirror the PBX's port (SPAN / port mirroring) to the port "
            f"wired to {name}, or set capture.interface to the interface that is wired to it",
        )
    if r.sip_messages == 0:
        ports = ", ".join(map(str, sip_ports))
        return fail(
            TRAFFIC,
            f"{r.frames} frames but no SIP {listened} (capture.sip_ports: {ports})",
            "set capture.sip_ports to the PBX's SIP ports (SIP over TLS cannot be read), and "
            "make the mirror session include the PBX's signalling",
        )
    # every call still up when listening stops is ended then, so each answered call is counted
    # as two-way, one-way or without media
    two_way = r.answered - r.one_way_audio - r.no_media
    seen = f"{r.sip_messages} SIP messages, {r.calls} calls ({r.answered} answered) {listened}"
    if r.answered == 0:
        return warn(
            TRAFFIC,
            f"{seen}: no answered call, so the RTP directions are not verified",
            "run the doctor while calls are in progress and listen longer (--seconds 120); if "
            "calls were answered meanwhile, the mirror may carry one direction only (no 200 OK "
            "seen): mirror both directions",
        )
    if two_way > 0:
        return ok(
            TRAFFIC,
            f"{seen}; {two_way} with RTP in both directions"
            + (f", {r.one_way_audio} one-way" if r.one_way_audio else ""),
        )
    if r.one_way_audio:
        return fail(
            TRAFFIC,
            f"{seen}; RTP in one direction only on every answered call",
            "the switch mirrors only ingress or only egress: mirror both directions (rx and "
            "tx) of the PBX's port",
        )
    return fail(
        TRAFFIC,
        f"{seen}; no RTP on any answered call",
        "the mirror carries the signalling but not the media: add the port or VLAN the RTP "
        "flows through (phones, media gateway) to the mirror session",
    )
