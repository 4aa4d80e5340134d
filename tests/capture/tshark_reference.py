"""What tshark says about a capture: the independent reference the capture tests check against.

Each helper is one tshark query and its parsing; queries that ask different things stay apart.
"""

from __future__ import annotations

import functools
import re
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from gateway.capture.datagram import UDP, Datagram

# --- chosen fields of the frames a display filter selects --------------------------------------


def tshark_fields(tshark: str, path: Path, display_filter: str, *fields: str) -> list[list[str]]:
    """The values of ``fields``, one row per frame that ``display_filter`` selects."""
    cmd = [tshark, "-n", "-r", str(path), "-Y", display_filter, "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line]


# --- per frame, what tshark sees -------------------------------------------------------------


@dataclass(frozen=True)
class TsharkFrame:
    time_epoch: str
    udp: tuple[int, int, int] | None  # innermost (source port, destination port, length)
    icmp: bool
    tcp: bool
    websocket: bool
    cseqs: tuple[str, ...]  # CSeq of each SIP message dissected in this frame


_FRAME_FIELDS = (
    "frame.time_epoch",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "icmp.type",
    "icmpv6.type",
    "tcp.srcport",
    "websocket.opcode",
    "sip.CSeq",
)


@functools.cache
def tshark_view(tshark: str, path: Path) -> tuple[TsharkFrame, ...]:
    """Per frame, what tshark sees (with IP and TCP reassembly, its defaults).

    SIP on TCP port 6060 is decoded as SIP too: one shared capture uses that port.
    """
    command = [tshark, "-n", "-r", str(path), "-d", "tcp.port==6060,sip", "-T", "fields"]
    command += ["-E", "occurrence=a", "-E", "aggregator=|", "-E", "separator=\t"]
    for name in _FRAME_FIELDS:
        command += ["-e", name]
    result = subprocess.run(command, capture_output=True, text=True, check=True, timeout=120)
    frames = []
    for line in result.stdout.splitlines():
        values = line.split("\t")
        time_epoch, sport, dport, ulen, icmp, icmp6, tcp, ws, cseq = values

        def last(value: str) -> int:
            return int(value.split("|")[-1])

        frames.append(
            TsharkFrame(
                time_epoch,
                (last(sport), last(dport), last(ulen)) if sport else None,
                bool(icmp or icmp6),
                bool(tcp),
                bool(ws),
                tuple(cseq.split("|")) if cseq else (),
            )
        )
    return tuple(frames)


# --- SIP over UDP ------------------------------------------------------------------------------


_SEP = "\x1f"  # tshark's aggregator between several occurrences of one field
_SIP_FIELDS = (
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "udp.payload",
    "sip.Call-ID",
    "sip.Method",
    "sip.Status-Code",
    "sip.CSeq.seq",
    "sip.CSeq.method",
    "sip.from.tag",
    "sip.to.tag",
    "sip.from.user",
    "sip.to.user",
    "sip.r-uri.user",
    "sip.From",
    "sip.To",
    "sdp.media",
    "sdp.connection_info.address",
    "sdp.mime.type",
    "sdp.sample_rate",
    "sdp.media_attr",
)


@dataclass(frozen=True)
class TsharkSip:
    """One SIP-over-UDP message as tshark dissected it."""

    dg: Datagram
    fields: dict[str, list[str]]  # every occurrence of each field, in packet order

    def first(self, name: str) -> str:
        values = self.fields[name]
        return values[0] if values else ""


def _address(row: dict[str, list[str]], v4: str, v6: str) -> bytes:
    # The innermost header wins: tunnelled (GRE/ERSPAN) frames list the outer one first.
    if row[v4]:
        return socket.inet_pton(socket.AF_INET, row[v4][-1])
    return socket.inet_pton(socket.AF_INET6, row[v6][-1])


def _tshark_sip(tshark: str, path: Path) -> list[TsharkSip]:
    command = [tshark, "-n", "-r", str(path), "-Y", "sip && udp", "-T", "fields"]
    command += ["-E", "occurrence=a", "-E", f"aggregator={_SEP}"]
    for name in _SIP_FIELDS:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    messages = []
    for line in out.splitlines():
        values = line.split("\t")
        row = {
            name: (v.split(_SEP) if v else []) for name, v in zip(_SIP_FIELDS, values, strict=True)
        }
        dg = Datagram(
            ts=float(row["frame.time_epoch"][0]),
            src=_address(row, "ip.src", "ipv6.src"),
            sport=int(row["udp.srcport"][-1]),
            dst=_address(row, "ip.dst", "ipv6.dst"),
            dport=int(row["udp.dstport"][-1]),
            proto=UDP,
            payload=bytes.fromhex(row["udp.payload"][-1]),
        )
        messages.append(TsharkSip(dg, row))
    return messages


@functools.cache
def tshark_sip_captures(tshark: str, pcaps_dir: Path) -> dict[str, list[TsharkSip]]:
    """Capture name -> its SIP-over-UDP messages per tshark, for every capture that has any.

    A raw byte scan for the SIP version string picks the candidate files (cheap, and
    independent of the packet layer); tshark then runs on them in parallel, once per session.
    """
    paths = [p for p in sorted(pcaps_dir.rglob("*")) if p.is_file() and p.suffix != ".md"]
    candidates = [p for p in paths if b"SIP/2.0" in p.read_bytes()]
    with ThreadPoolExecutor() as pool:
        results = pool.map(lambda p: (p.name, _tshark_sip(tshark, p)), candidates)
        return {name: messages for name, messages in results if messages}


# --- RTP and RTCP ------------------------------------------------------------------------------

_RTP_FIELDS = (
    "ip.src", "udp.srcport", "ip.dst", "udp.dstport", "rtp.ssrc", "rtp.seq", "rtp.timestamp",
    "rtp.p_type", "rtp.marker", "rtp.payload", "udp.payload", "rtpevent.event_id",
)  # fmt: skip
# one line of tshark's "-z rtp,streams" table: addresses, SSRC, payload names, packets, lost
_STREAM_LINE = re.compile(
    r"^\s*[\d.]+\s+[\d.]+\s+(\S+)\s+(\d+)\s+(\S+)\s+(\d+)\s+0x([0-9A-Fa-f]+)\s+.*?"
    r"\s(\d+)\s+(-?\d+) \("
)


@dataclass(frozen=True, slots=True)
class RtpRow:
    """One RTP packet as tshark dissects it (its heuristic finds streams without SDP)."""

    src: str
    sport: int
    dst: str
    dport: int
    ssrc: int
    seq: int
    ts: int
    pt: int
    marker: bool
    payload: bytes  # tshark's rtp.payload
    datagram: bytes  # the whole UDP payload
    event: bool  # tshark dissects it as an RFC 4733 telephone event

    @property
    def direction(self) -> tuple[str, int, str, int]:
        return (self.src, self.sport, self.dst, self.dport)


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """A row of tshark's RTP stream statistics."""

    packets: int
    lost: int  # expected minus received: negative when duplicates outnumber losses


@dataclass(frozen=True, slots=True)
class TsharkRtp:
    rows: tuple[RtpRow, ...]
    streams: dict[tuple[tuple[str, int, str, int], int], StreamSummary]  # (direction, SSRC)


@functools.cache
def tshark_capture(tshark: str, path: Path) -> TsharkRtp:
    """Every RTP packet of a capture in capture order, and tshark's per-stream statistics."""
    command = [tshark, "-n", "-r", str(path), "--enable-heuristic", "rtp_udp"]
    command += ["-Y", "rtp.version == 2", "-E", "occurrence=f", "-T", "fields"]
    command += ["-z", "rtp,streams"]
    for name in _RTP_FIELDS:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rows = []
    streams = {}
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) != len(_RTP_FIELDS):
            match = _STREAM_LINE.match(line)
            if match:
                src, sport, dst, dport, ssrc, packets, lost = match.groups()
                key = ((src, int(sport), dst, int(dport)), int(ssrc, 16))
                streams[key] = StreamSummary(int(packets), int(lost))
            continue
        src, sport, dst, dport, ssrc, seq, ts, pt, marker, payload, datagram, event = fields
        row = RtpRow(
            src=src,
            sport=int(sport),
            dst=dst,
            dport=int(dport),
            ssrc=int(ssrc, 16),
            seq=int(seq),
            ts=int(ts),
            pt=int(pt),
            marker=marker in ("1", "True"),
            payload=bytes.fromhex(payload),
            datagram=bytes.fromhex(datagram),
            event=event != "",
        )
        rows.append(row)
    return TsharkRtp(tuple(rows), streams)


def tshark_rtp(tshark: str, path: Path) -> tuple[RtpRow, ...]:
    """Every RTP packet of a capture in capture order, as tshark's RTP heuristic sees it."""
    return tshark_capture(tshark, path).rows


def tshark_rtcp(tshark: str, path: Path) -> list[bytes]:
    """The UDP payload of every RTCP packet of a capture, as tshark's RTCP heuristic sees it."""
    command = [tshark, "-n", "-r", str(path), "--enable-heuristic", "rtcp_udp", "-Y", "rtcp"]
    command += ["-E", "occurrence=f", "-T", "fields", "-e", "udp.payload"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return [bytes.fromhex(line) for line in out.split()]
