"""Read classic pcap and pcapng capture files into link-layer frames.

The format is recognised by the file's first bytes, never by its name. Reading is chunked and
every length field is checked against a fixed limit before anything is allocated, so a damaged
or hostile file can stop the reader early but never make it allocate without bound.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.closing import Closing

# Link types (the LINKTYPE_/DLT_ numbers written in capture files).
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_RAW_BSD12 = 12
LINKTYPE_RAW_BSD14 = 14
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

# libpcap's largest snapshot length: no real capture holds a longer packet record.
MAX_RECORD = 256 * 1024
# Largest pcapng block that is read into memory: a packet plus room for fixed fields and options.
# Longer blocks of kinds that are not parsed (name resolution, TLS secrets, ...) are skipped by
# seeking; longer blocks of the parsed kinds are corrupt.
MAX_PARSED_BLOCK = MAX_RECORD + 64 * 1024
_CHUNK = 1024 * 1024

_PCAP_MAGICS = {
    # magic as read little-endian: (byte order, fractions of a second per unit)
    0xA1B2C3D4: ("<", 1_000_000),
    0xD4C3B2A1: (">", 1_000_000),
    0xA1B23C4D: ("<", 1_000_000_000),
    0x4D3CB2A1: (">", 1_000_000_000),
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_BOM = 0x1A2B3C4D
_BLOCK_IDB = 1
_BLOCK_OPB = 2  # obsolete Packet Block
_BLOCK_SPB = 3
_BLOCK_EPB = 6
_PARSED_BLOCKS = frozenset((_PCAPNG_SHB, _BLOCK_IDB, _BLOCK_OPB, _BLOCK_SPB, _BLOCK_EPB))
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14

# Formats that are recognisable but not supported, named in the error so the user can convert.
_OTHER_FORMATS = (
    (b"GMBU", "Microsoft Network Monitor 2 capture"),
    (b"RTSS", "Microsoft Network Monitor 1 capture"),
    (b"snoop\x00\x00\x00", "Solaris snoop capture"),
    (b"\x1f\x8b", "gzip-compressed file"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed file"),
    (b"\xfd7zXZ", "xz-compressed file"),
    (b"PK\x03\x04", "zip archive"),
)
_SUPPORTED = (
    "supported formats: pcap (magic a1b2c3d4 or a1b23c4d, either byte order) and pcapng; "
    "convert other formats with `editcap -F pcap INPUT OUTPUT.pcap`"
)


class CaptureFileError(Exception):
    """The file cannot be read as a capture at all (wrong format, unreadable, no header)."""


@dataclass(slots=True)
class Frame:
    """One captured link-layer frame: capture time in seconds, link type, and its bytes."""

    ts: float
    linktype: int
    data: bytes


@dataclass(slots=True)
class _Interface:
    linktype: int
    snaplen: int
    units_per_second: int
    offset_seconds: int


def _describe_magic(head: bytes) -> str:
    shown = head[:8].hex(" ") or "nothing"
    for prefix, name in _OTHER_FORMATS:
        if head.startswith(prefix):
            return f"{shown} (a {name})"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:8]):
        return f"{shown} (text: {head[:8].decode('ascii')!r})"
    return shown


class CaptureReader(Closing):
    """Iterate the frames of a pcap or pcapng file.

    ``size`` is the file size and ``position`` the number of bytes consumed so far (for a progress
    bar). When the file ends inside a record, iteration stops cleanly after the last whole frame
    and ``truncated`` is set; a record with an impossible length stops it too, counted under
    ``counters["capture.corrupt"]``. Iteration is single pass.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.truncated = False
        self.position = 0
        self.counters: Counter[str] = Counter()
        try:
            self._file: BinaryIO = self.path.open("rb")
        except OSError as exc:
            raise CaptureFileError(f"cannot open capture {self.path}: {exc.strerror}") from exc
        try:
            self.size = self.path.stat().st_size
            head = self._file.read(24)
            self._frames = self._start(head)
        except BaseException:
            self._file.close()
            raise

    def _start(self, head: bytes) -> Iterator[Frame]:
        if not head:
            raise CaptureFileError(f"{self.path} is empty (0 bytes); {_SUPPORTED}")
        if len(head) >= 4:
            (magic,) = struct.unpack_from("<I", head)
            if magic in _PCAP_MAGICS:
                if len(head) < 24:
                    raise CaptureFileError(
                        f"{self.path} ends inside its pcap file header ({len(head)} of 24 bytes)"
                    )
                order, units = _PCAP_MAGICS[magic]
                (network,) = struct.unpack_from(order + "I", head, 20)
                self.position = 24
                return self._pcap_frames(order, units, network & 0xFFFF, head[24:])
            if magic == _PCAPNG_SHB:
                if len(head) < 12 or _pcapng_order(head, 0) is None:
                    raise CaptureFileError(
                        f"{self.path} starts like pcapng but its section header has no valid "
                        f"byte-order magic (found {head[8:12].hex(' ') or 'nothing'})"
                    )
                return self._pcapng_frames(head)
        raise CaptureFileError(
            f"{self.path} is not a pcap or pcapng capture: it starts with "
            f"{_describe_magic(head)}; {_SUPPORTED}"
        )

    def __iter__(self) -> Iterator[Frame]:
        return self._frames

    def close(self) -> None:
        self._file.close()

    def _mark_truncated(self) -> None:
        self.truncated = True
        self.counters["capture.truncated"] += 1

    def _pcap_frames(self, order: str, units: int, linktype: int, buf: bytes) -> Iterator[Frame]:
        record = struct.Struct(order + "IIII").unpack_from
        read = self._file.read
        scale = 1.0 / units
        base = 24  # file offset of buf[0]
        off = 0
        try:
            while True:
                if len(buf) - off < 16:
                    buf = buf[off:] + read(_CHUNK)
                    base += off
                    off = 0
                    if len(buf) < 16:
                        if buf:
                            self._mark_truncated()
                        return
                sec, frac, caplen, _origlen = record(buf, off)
                if caplen > MAX_RECORD:
                    self.counters["capture.corrupt"] += 1
                    return
                end = off + 16 + caplen
                if end > len(buf):
                    buf = buf[off:] + read(max(_CHUNK, end - off))
                    base += off
                    off = 0
                    end = 16 + caplen
                    if end > len(buf):
                        self._mark_truncated()
                        return
                data = buf[off + 16 : end]
                off = end
                self.position = base + off
                yield Frame(sec + frac * scale, linktype, data)
        finally:
            self._file.close()

    def _pcapng_frames(self, buf: bytes) -> Iterator[Frame]:
        read = self._file.read
        base = 0
        off = 0
        order = "<"
        interfaces: list[_Interface] = []
        last_ts = 0.0
        try:
            while True:
                if len(buf) - off < 12:
                    buf = buf[off:] + read(_CHUNK)
                    base += off
                    off = 0
                    if len(buf) < 12:
                        if buf:
                            self._mark_truncated()
                        return
                (btype,) = struct.unpack_from(order + "I", buf, off)
                if btype == _PCAPNG_SHB:
                    # A new section may switch byte order and always resets the interfaces.
                    new_order = _pcapng_order(buf, off)
                    if new_order is None:
                        self.counters["capture.corrupt"] += 1
                        return
                    order = new_order
                    interfaces = []
                (blen,) = struct.unpack_from(order + "I", buf, off + 4)
                if blen < 12 or blen % 4:
                    self.counters["capture.corrupt"] += 1
                    return
                if blen > MAX_PARSED_BLOCK:
                    if btype in _PARSED_BLOCKS:
                        self.counters["capture.corrupt"] += 1
                        return
                    target = base + off + blen
                    if target > self.size:
                        self._mark_truncated()
                        return
                    self._file.seek(target)
                    buf, base, off = b"", target, 0
                    self.position = target
                    self.counters["pcapng.block_skipped"] += 1
                    continue
                end = off + blen
                if end > len(buf):
                    buf = buf[off:] + read(max(_CHUNK, blen))
                    base += off
                    off = 0
                    end = blen
                    if end > len(buf):
                        self._mark_truncated()
                        return
                (trailer,) = struct.unpack_from(order + "I", buf, end - 4)
                if trailer != blen:
                    self.counters["capture.corrupt"] += 1
                    return
                body = off + 8
                body_end = end - 4
                off = end
                self.position = base + off
                if btype in (_BLOCK_EPB, _BLOCK_OPB):
                    if btype == _BLOCK_EPB:
                        if body_end - body < 20:
                            self.counters["pcapng.malformed_block"] += 1
                            continue
                        ifid, hi, lo, caplen, _origlen = struct.unpack_from(
                            order + "IIIII", buf, body
                        )
                        data_off = body + 20
                    else:
                        if body_end - body < 20:
                            self.counters["pcapng.malformed_block"] += 1
                            continue
                        ifid, _drops, hi, lo, caplen, _origlen = struct.unpack_from(
                            order + "HHIIII", buf, body
                        )
                        data_off = body + 20
                    if caplen > body_end - data_off:
                        self.counters["pcapng.malformed_block"] += 1
                        continue
                    if ifid >= len(interfaces):
                        self.counters["pcapng.unknown_interface"] += 1
                        continue
                    iface = interfaces[ifid]
                    units = (hi << 32) | lo
                    if iface.units_per_second == 1_000_000:
                        last_ts = units / 1e6 + iface.offset_seconds
                    else:
                        whole, part = divmod(units, iface.units_per_second)
                        last_ts = whole + iface.offset_seconds + part / iface.units_per_second
                    yield Frame(last_ts, iface.linktype, buf[data_off : data_off + caplen])
                elif btype == _BLOCK_SPB:
                    if body_end - body < 4 or not interfaces:
                        self.counters["pcapng.malformed_block"] += 1
                        continue
                    (origlen,) = struct.unpack_from(order + "I", buf, body)
                    iface = interfaces[0]
                    caplen = min(origlen, body_end - body - 4)
                    if iface.snaplen:
                        caplen = min(caplen, iface.snaplen)
                    # A Simple Packet Block has no timestamp: reuse the last one so that
                    # expiry by capture time keeps working.
                    yield Frame(last_ts, iface.linktype, buf[body + 4 : body + 4 + caplen])
                elif btype == _BLOCK_IDB:
                    if body_end - body < 8:
                        self.counters["pcapng.malformed_block"] += 1
                        continue
                    interfaces.append(_read_idb(buf, body, body_end, order, self.counters))
                elif btype != _PCAPNG_SHB:
                    self.counters["pcapng.block_skipped"] += 1
        finally:
            self._file.close()


def _pcapng_order(buf: bytes, off: int) -> str | None:
    """The byte order of the section whose header block starts at ``off``, or None."""
    if len(buf) - off < 12:
        return None
    (bom,) = struct.unpack_from("<I", buf, off + 8)
    if bom == _PCAPNG_BOM:
        return "<"
    if bom == 0x4D3C2B1A:
        return ">"
    return None


def _read_idb(buf: bytes, body: int, end: int, order: str, counters: Counter[str]) -> _Interface:
    linktype, _reserved, snaplen = struct.unpack_from(order + "HHI", buf, body)
    units = 1_000_000
    offset_seconds = 0
    pos = body + 8
    while end - pos >= 4:
        code, length = struct.unpack_from(order + "HH", buf, pos)
        pos += 4
        if code == 0 or length > end - pos:
            break
        if code == _OPT_IF_TSRESOL and length >= 1:
            value = buf[pos]
            exponent = value & 0x7F
            # Above 10^-19 s or 2^-64 s nothing real exists; refuse rather than divide by 10^127.
            if value & 0x80 and exponent <= 64:
                units = 1 << exponent
            elif not value & 0x80 and exponent <= 19:
                units = 10**exponent
            else:
                counters["pcapng.bad_tsresol"] += 1
        elif code == _OPT_IF_TSOFFSET and length >= 8:
            (offset_seconds,) = struct.unpack_from(order + "q", buf, pos)
        pos += (length + 3) & ~3
    return _Interface(linktype, snaplen, units, offset_seconds)
