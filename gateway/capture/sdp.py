"""SDP parsing (RFC 8866, RFC 3264 offer/answer view): where each party wants its media and how.

Only what the media layer needs is kept: per media line the address and port, the payload
types with their codecs, packetization time, direction, whether the media is encrypted and the
RTCP port. Malformed lines are skipped and counted in ``SessionDescription.skipped``; a body
that has no SDP structure at all raises ``SdpError``.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Literal

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTIONS: dict[str, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "sendonly",
    "recvonly": "recvonly",
    "inactive": "inactive",
}
# Putting a party on hold with c=0.0.0.0 (RFC 2543) means "do not send to me".
_NO_RECEIVE: dict[str, Direction] = {"sendrecv": "sendonly", "recvonly": "inactive"}
_UNSPECIFIED = (bytes(4), bytes(16))
_NUMERIC_HOST = re.compile(r"[0-9.]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_MAX_MEDIA = 32  # far above any real offer; bounds the work a hostile body can cause


class SdpError(ValueError):
    """The body is not an SDP session description."""


@dataclass(frozen=True, slots=True)
class Codec:
    encoding: str  # uppercase, e.g. "PCMU", "OPUS", "TELEPHONE-EVENT"
    clock_rate: int  # RTP clock rate in Hz
    channels: int = 1


# RFC 3551 tables 4 and 5: static payload types, valid without an a=rtpmap line.
STATIC_PAYLOAD_TYPES: dict[int, Codec] = {
    0: Codec("PCMU", 8000),
    3: Codec("GSM", 8000),
    4: Codec("G723", 8000),
    5: Codec("DVI4", 8000),
    6: Codec("DVI4", 16000),
    7: Codec("LPC", 8000),
    8: Codec("PCMA", 8000),
    9: Codec("G722", 8000),
    10: Codec("L16", 44100, 2),
    11: Codec("L16", 44100),
    12: Codec("QCELP", 8000),
    13: Codec("CN", 8000),
    14: Codec("MPA", 90000),
    15: Codec("G728", 8000),
    16: Codec("DVI4", 11025),
    17: Codec("DVI4", 22050),
    18: Codec("G729", 8000),
    25: Codec("CELB", 90000),
    26: Codec("JPEG", 90000),
    28: Codec("NV", 90000),
    31: Codec("H261", 90000),
    32: Codec("MPV", 90000),
    33: Codec("MP2T", 90000),
    34: Codec("H263", 90000),
}


@dataclass(slots=True)
class MediaDescription:
    kind: str  # "audio", "video", "image" (T.38), ...
    port: int  # 0 = stream rejected or disabled
    proto: str  # as written: "RTP/AVP", "RTP/SAVP", "UDP/TLS/RTP/SAVPF", "udptl", ...
    addr: bytes | None  # raw 4 or 16 bytes; None when absent, a host name, or on hold (0.0.0.0)
    formats: list[int]  # RTP payload types in order of preference (empty for non-RTP media)
    codecs: dict[int, Codec]  # payload type -> codec, from a=rtpmap or the static table
    ptime: int | None  # packetization time in ms
    direction: Direction  # as seen by the party that sent this SDP
    encrypted: bool  # SRTP (SAVP profiles, a=crypto) or DTLS-SRTP (a=fingerprint)
    rtcp_port: int | None  # a=rtcp, the media port with a=rtcp-mux, else port + 1 for RTP


@dataclass(slots=True)
class SessionDescription:
    media: list[MediaDescription]
    skipped: int  # malformed or unsupported lines that were ignored


@dataclass(slots=True)
class _Scope:
    """Attributes of the session or of one media section while lines are read."""

    addr: bytes | None = None
    has_addr: bool = False
    direction: Direction | None = None
    secure: bool = False
    ptime: int | None = None
    rtcp_port: int | None = None
    rtcp_mux: bool = False
    rtpmap: dict[int, Codec] = field(default_factory=dict)


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body; raise ``SdpError`` when it has no ``v=`` line or no ``m=`` line."""
    lines = body.decode("latin-1").split("\n")
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
    if first == len(lines) or not lines[first].startswith("v="):
        raise SdpError("SDP must start with a v= line")

    session = _Scope()
    sections: list[tuple[MediaDescription, _Scope]] = []
    scope: _Scope | None = session  # None while inside a media section that was skipped
    skipped = 0
    for raw in lines[first + 1 :]:
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=" or not ("a" <= line[0] <= "z"):
            skipped += 1
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            media = _media_line(value)
            if media is None or len(sections) >= _MAX_MEDIA:
                skipped += 1
                scope = None
            else:
                scope = _Scope()
                sections.append((media, scope))
        elif scope is None:
            continue
        elif kind == "c":
            ok = _connection(value, scope)
            skipped += not ok
        elif kind == "a":
            ok = _attribute(value, scope)
            skipped += not ok
    if not sections:
        raise SdpError("SDP has no usable m= line")
    return SessionDescription([_finish(m, s, session) for m, s in sections], skipped)


def _media_line(value: str) -> MediaDescription | None:
    parts = value.split()
    if len(parts) < 3:
        return None
    port_text = parts[1].partition("/")[0]
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        return None
    port = int(port_text)
    if port > 65535:
        return None
    proto = parts[2]
    formats: list[int] = []
    if "RTP" in proto.upper():
        for fmt in parts[3:]:
            if fmt.isascii() and fmt.isdigit() and len(fmt) <= 3 and int(fmt) <= 127:
                formats.append(int(fmt))
    return MediaDescription(
        kind=parts[0].lower(),
        port=port,
        proto=proto,
        addr=None,
        formats=formats,
        codecs={},
        ptime=None,
        direction="sendrecv",
        encrypted=False,
        rtcp_port=None,
    )


def _connection(value: str, scope: _Scope) -> bool:
    parts = value.split()
    if len(parts) < 3 or parts[0].upper() != "IN":
        return False
    family = {"IP4": socket.AF_INET, "IP6": socket.AF_INET6}.get(parts[1].upper())
    if family is None:
        return False
    scope.has_addr = True
    host = parts[2].partition("/")[0]  # drop a multicast TTL or count
    try:
        scope.addr = socket.inet_pton(family, host)
    except (OSError, ValueError):
        scope.addr = None
        # A host name is valid SDP (nothing to match packets against); a broken address is not.
        return bool(host) and not _NUMERIC_HOST.fullmatch(host)
    return True


def _attribute(value: str, scope: _Scope) -> bool:
    name, _, arg = value.partition(":")
    name = name.strip().lower()
    direction = _DIRECTIONS.get(name)
    if direction is not None:
        scope.direction = direction
    elif name == "rtpmap":
        return _rtpmap(arg, scope)
    elif name == "ptime":
        try:
            ptime = round(float(arg))
        except (ValueError, OverflowError):
            return False
        if not 0 < ptime <= 10_000:
            return False
        scope.ptime = ptime
    elif name in ("crypto", "fingerprint"):
        scope.secure = True
    elif name == "rtcp":
        port = arg.split(None, 1)[0] if arg.strip() else ""
        if not (port.isascii() and port.isdigit()) or len(port) > 5 or int(port) > 65535:
            return False
        scope.rtcp_port = int(port)
    elif name == "rtcp-mux":
        scope.rtcp_mux = True
    return True


def _rtpmap(arg: str, scope: _Scope) -> bool:
    pt_text, _, spec = arg.strip().partition(" ")
    parts = spec.strip().split("/")
    if not (pt_text.isascii() and pt_text.isdigit()) or len(pt_text) > 3 or len(parts) < 2:
        return False
    pt = int(pt_text)
    rate, channels = parts[1], parts[2] if len(parts) > 2 else "1"
    if pt > 127 or not parts[0] or not (rate.isascii() and rate.isdigit()) or len(rate) > 7:
        return False
    if not (channels.isascii() and channels.isdigit()) or len(channels) > 3:
        return False
    if int(rate) == 0 or int(channels) == 0:
        return False
    scope.rtpmap[pt] = Codec(parts[0].upper(), int(rate), int(channels))
    return True


def _finish(media: MediaDescription, scope: _Scope, session: _Scope) -> MediaDescription:
    media.addr = scope.addr if scope.has_addr else session.addr
    direction = scope.direction or session.direction or "sendrecv"
    if media.addr in _UNSPECIFIED:
        media.addr = None
        direction = _NO_RECEIVE.get(direction, direction)
    media.direction = direction
    rtpmap = scope.rtpmap
    codecs = media.codecs
    for pt in media.formats:
        codec = rtpmap.get(pt) or STATIC_PAYLOAD_TYPES.get(pt)
        if codec is not None:
            codecs[pt] = codec
    media.ptime = scope.ptime or session.ptime
    media.encrypted = "SAVP" in media.proto.upper() or scope.secure or session.secure
    if scope.rtcp_port is not None:
        media.rtcp_port = scope.rtcp_port
    elif scope.rtcp_mux:
        media.rtcp_port = media.port or None
    elif media.formats and media.port:
        media.rtcp_port = media.port + 1  # RFC 3550: RTCP on the next port by default
    return media
