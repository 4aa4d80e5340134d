"""CaptureReader on the shared captures, on variants of them written at test time, and on damage."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.capture.pcapfile import MAX_RECORD, CaptureFileError, CaptureReader, Frame
from tests.capture.packet_helpers import (
    frames_of,
    pcapng_block,
    pcapng_epb,
    pcapng_idb,
    pcapng_option,
    pcapng_shb,
    read_pcap_records,
    write_pcap,
)
from tests.capture.tshark_reference import tshark_view

NETMON = "c07-sip-r2.cap"


def capture_files(pcaps_dir: Path) -> list[Path]:
    files = [p for p in sorted(pcaps_dir.iterdir()) if p.is_file() and p.suffix != ".md"]
    files += sorted((pcaps_dir / "generated").glob("*"))
    return files


@pytest.fixture(scope="module")
def capinfos_counts(pcaps_dir: Path) -> dict[str, int]:
    """Frame count of every shared capture, as Wireshark's capinfos reports it."""
    exe = shutil.which("capinfos")
    if exe is None:
        pytest.skip("capinfos is not installed (it comes with tshark)")
    files = [p for p in capture_files(pcaps_dir) if p.name != NETMON]
    out = subprocess.run(
        [exe, "-c", "-T", "-r", "-M", *map(str, files)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    counts = {}
    for line in out.splitlines():
        name, count = line.rsplit("\t", 1)
        counts[Path(name).name] = int(count)
    return counts


def test_every_shared_capture_reads_to_its_end(pcaps_dir, capinfos_counts):
    files = capture_files(pcaps_dir)
    assert len(files) > 60
    for path in files:
        if path.name == NETMON:
            continue
        with CaptureReader(path) as reader:
            frames = list(reader)
        assert len(frames) == capinfos_counts[path.name], path.name
        assert not reader.truncated, path.name
        assert reader.position == reader.size == path.stat().st_size, path.name
        assert "capture.corrupt" not in reader.counters, path.name


def test_netmon_capture_is_refused_with_a_clear_message(pcaps_dir):
    with pytest.raises(CaptureFileError) as caught:
        CaptureReader(pcaps_dir / NETMON)
    message = str(caught.value)
    assert NETMON in message
    assert "47 4d 42 55" in message  # the magic found
    assert "Network Monitor" in message
    assert "pcap" in message and "pcapng" in message  # what is supported
    assert "editcap" in message  # what to do


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b"Hello, this is a text file.\n", "text"),
        (b"\xd4\xc3\xb2\xa1\x02\x00", "header"),
        (b"\x0a\x0d\x0d\x0a\x1c\x00\x00\x00\xde\xad\xbe\xef", "byte-order magic"),
        (b"\x1f\x8b\x08\x00" + bytes(40), "gzip"),
    ],
)
def test_files_that_are_not_captures_are_refused(tmp_path, content, expected):
    path = tmp_path / "input.bin"
    path.write_bytes(content)
    with pytest.raises(CaptureFileError, match=expected) as caught:
        CaptureReader(path)
    assert "input.bin" in str(caught.value)


def test_missing_file_is_a_capture_file_error(tmp_path):
    with pytest.raises(CaptureFileError, match="cannot open"):
        CaptureReader(tmp_path / "absent.pcap")


def assert_times_match_tshark(tshark: str, path: Path) -> None:
    frames = frames_of(path)
    view = tshark_view(tshark, path)
    assert len(frames) == len(view)
    for frame, reference in zip(frames, view, strict=True):
        assert abs(Decimal(frame.ts) - Decimal(reference.time_epoch)) < Decimal("1e-6")


def test_nanosecond_pcapng_times_match_tshark(pcaps_dir, tshark):
    assert_times_match_tshark(tshark, pcaps_dir / "sipp-branch-scenario.pcapng")


@pytest.mark.parametrize(
    "name", ["SIP-RTP-Normal_Call_two_parties.pcap", "ipv6frag.pcap", "rtp.pcapng"]
)
def test_microsecond_times_match_tshark(pcaps_dir, tshark, name):
    assert_times_match_tshark(tshark, pcaps_dir / name)


@pytest.mark.parametrize("name", ["SIP-RTP-Normal_Call_two_parties.pcap", "b2bua-asterisk.pcapng"])
def test_truncated_copy_keeps_frames_before_the_cut(pcaps_dir, tmp_path, name):
    original = pcaps_dir / name
    full = frames_of(original)
    with CaptureReader(original) as reader:
        ends = []
        for _frame in reader:
            ends.append(reader.position)  # file offset just after each frame's record
    raw = original.read_bytes()
    for index in (0, 1, len(full) // 2, len(full) - 1):
        start = ends[index - 1] if index else ends[0] - (ends[1] - ends[0])
        for cut in (start + 3, (start + ends[index]) // 2, ends[index] - 1):
            if cut <= 0:
                continue
            path = tmp_path / f"cut-{cut}"
            path.write_bytes(raw[:cut])
            with CaptureReader(path) as reader:
                frames = list(reader)
            assert frames == full[:index], (index, cut)
            assert reader.truncated
            assert reader.counters["capture.truncated"] == 1


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nanos", [False, True])
def test_pcap_variants_read_identically(pcaps_dir, tmp_path, order, nanos):
    original = pcaps_dir / "sip_ipv4_tcp.pcap"
    linktype, records, _snaplen = read_pcap_records(original)
    scale = 1000 if nanos else 1
    variant = write_pcap(
        tmp_path / "variant.pcap",
        [(sec, usec * scale, data) for sec, usec, data in records],
        linktype,
        order=order,
        nanos=nanos,
    )
    expected = frames_of(original)
    got = frames_of(variant)
    assert [f.data for f in got] == [f.data for f in expected]
    assert {f.linktype for f in got} == {linktype}
    assert all(abs(a.ts - b.ts) < 1e-9 for a, b in zip(got, expected, strict=True))


def build_pcapng(order: str, sources: dict[int, list[Frame]]) -> tuple[bytes, list[Frame]]:
    """A pcapng with three interfaces and every kind of block, and the frames it should yield.

    Interface 0 keeps the default microsecond resolution, interface 1 has nanoseconds, and
    interface 2 a power-of-two resolution (2^-20 s); an obsolete Packet Block, a Simple Packet
    Block, and blocks the reader must skip are mixed in.
    """
    resolutions = {0: (None, 10**6), 1: (9, 10**9), 2: (0x80 | 20, 1 << 20)}
    linktypes = {ifid: frames[0].linktype for ifid, frames in sources.items()}
    blocks = [pcapng_shb(order)]
    for ifid in sorted(sources):
        blocks.append(pcapng_idb(linktypes[ifid], resolutions[ifid][0], order))
    blocks.append(pcapng_block(4, pcapng_option(0, b"", order), order))  # name resolution
    expected: list[Frame] = []
    queues = {ifid: list(frames) for ifid, frames in sources.items()}
    turn = 0
    while any(queues.values()):
        ifid = sorted(queues)[turn % len(queues)]
        turn += 1
        if not queues[ifid]:
            continue
        frame = queues[ifid].pop(0)
        per_second = resolutions[ifid][1]
        units = round(Decimal(frame.ts) * per_second)
        blocks.append(pcapng_epb(ifid, units, frame.data, order))
        expected.append(Frame(float(Decimal(units) / per_second), frame.linktype, frame.data))
    last = expected[-1]
    # Obsolete Packet Block on interface 0, then a Simple Packet Block (interface 0, no time).
    data0 = sources[0][0].data
    units = round(Decimal(last.ts) * 10**6)
    head = struct.pack(
        order + "HHIIII", 0, 0, units >> 32, units & 0xFFFFFFFF, len(data0), len(data0)
    )
    blocks.append(pcapng_block(2, head + data0, order))
    blocks.append(pcapng_block(3, struct.pack(order + "I", len(data0)) + data0, order))
    expected.append(Frame(units / 1e6, sources[0][0].linktype, data0))
    expected.append(Frame(units / 1e6, sources[0][0].linktype, data0))
    blocks.append(pcapng_block(5, struct.pack(order + "III", 0, 0, 0), order))  # statistics
    blocks.append(pcapng_block(0x00001234, b"a block type the reader does not know", order))
    return b"".join(blocks), expected


@pytest.mark.parametrize("order", ["<", ">"])
def test_pcapng_with_several_interfaces_in_either_byte_order(pcaps_dir, tmp_path, tshark, order):
    sources = {
        0: frames_of(pcaps_dir / "sip_ipv4_tcp.pcap")[:20],  # Ethernet
        1: frames_of(pcaps_dir / "ipv6frag.pcap")[:10],  # Linux cooked
        2: frames_of(pcaps_dir / "sip_ipv6_udp.pcap"),  # Ethernet, IPv6
    }
    raw, expected = build_pcapng(order, sources)
    path = tmp_path / "multi.pcapng"
    path.write_bytes(raw)
    got = frames_of(path)
    assert [(f.linktype, f.data) for f in got] == [(f.linktype, f.data) for f in expected]
    assert all(abs(a.ts - b.ts) < 1e-9 for a, b in zip(got, expected, strict=True))
    # tshark reads the same file the same way (it gives Simple Packet Blocks no time).
    view = tshark_view(tshark, path)
    assert len(view) == len(got)
    for frame, reference in list(zip(got, view, strict=True))[:-1]:
        assert abs(Decimal(frame.ts) - Decimal(reference.time_epoch)) < Decimal("1e-6")


def test_second_section_may_switch_byte_order(pcaps_dir, tmp_path):
    sources = {0: frames_of(pcaps_dir / "sip_ipv4_tcp.pcap")[:5]}
    first, expected_first = build_pcapng("<", sources)
    second, expected_second = build_pcapng(">", sources)
    path = tmp_path / "two-sections.pcapng"
    path.write_bytes(first + second)
    assert [f.data for f in frames_of(path)] == [f.data for f in expected_first + expected_second]


def test_pcapng_timestamp_offset_option(pcaps_dir, tmp_path):
    frame = frames_of(pcaps_dir / "sip_ipv6_udp.pcap")[0]
    options = pcapng_option(14, struct.pack("<q", 1000)) + pcapng_option(0, b"")
    idb = pcapng_block(1, struct.pack("<HHI", frame.linktype, 0, 0) + options)
    path = tmp_path / "offset.pcapng"
    path.write_bytes(pcapng_shb() + idb + pcapng_epb(0, 2_500_000, frame.data))
    assert [f.ts for f in frames_of(path)] == [1002.5]


def test_absurd_pcap_record_length_stops_without_allocating(pcaps_dir, tmp_path):
    original = pcaps_dir / "sip_ipv4_tcp.pcap"
    linktype, records, _snaplen = read_pcap_records(original)
    path = write_pcap(tmp_path / "bad.pcap", records[:3], linktype)
    with path.open("ab") as out:
        out.write(struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 0xFFFFFFF0) + records[3][2])
    tracemalloc.start()
    try:
        with CaptureReader(path) as reader:
            frames = list(reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [f.data for f in frames] == [r[2] for r in records[:3]]
    assert reader.counters["capture.corrupt"] == 1
    assert not reader.truncated
    assert peak < 4 * 1024 * 1024


@pytest.mark.parametrize(
    "damage",
    ["huge_packet_block", "length_not_multiple_of_4", "trailer_mismatch", "length_below_minimum"],
)
def test_damaged_pcapng_block_stops_after_good_frames(pcaps_dir, tmp_path, damage):
    frames = frames_of(pcaps_dir / "sip_ipv4_tcp.pcap")[:4]
    good = (
        pcapng_shb()
        + pcapng_idb(1)
        + b"".join(pcapng_epb(0, i, f.data) for i, f in enumerate(frames))
    )
    block = bytearray(pcapng_epb(0, 9, frames[0].data))
    if damage == "huge_packet_block":
        struct.pack_into("<I", block, 4, MAX_RECORD * 64)
    elif damage == "length_not_multiple_of_4":
        struct.pack_into("<I", block, 4, len(block) - 2)
    elif damage == "trailer_mismatch":
        struct.pack_into("<I", block, len(block) - 4, 16)
    else:
        struct.pack_into("<I", block, 4, 8)
    path = tmp_path / "damaged.pcapng"
    path.write_bytes(good + bytes(block) + pcapng_epb(0, 10, frames[1].data))
    with CaptureReader(path) as reader:
        got = list(reader)
    assert [f.data for f in got] == [f.data for f in frames]
    assert reader.counters["capture.corrupt"] == 1


def test_large_unknown_block_is_skipped_by_seeking(pcaps_dir, tmp_path):
    frames = frames_of(pcaps_dir / "sip_ipv4_tcp.pcap")[:2]
    big = pcapng_block(0x40000BAD, bytes(3 * 1024 * 1024))
    path = tmp_path / "big.pcapng"
    path.write_bytes(
        pcapng_shb()
        + pcapng_idb(1)
        + pcapng_epb(0, 1, frames[0].data)
        + big
        + pcapng_epb(0, 2, frames[1].data)
    )
    tracemalloc.start()
    try:
        with CaptureReader(path) as reader:
            got = list(reader)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [f.data for f in got] == [f.data for f in frames]
    assert reader.position == reader.size
    assert peak < 3 * 1024 * 1024


def test_packet_on_undeclared_interface_is_counted_and_skipped(pcaps_dir, tmp_path):
    frame = frames_of(pcaps_dir / "sip_ipv6_udp.pcap")[0]
    path = tmp_path / "ifid.pcapng"
    path.write_bytes(
        pcapng_shb() + pcapng_idb(1) + pcapng_epb(3, 1, frame.data) + pcapng_epb(0, 2, frame.data)
    )
    with CaptureReader(path) as reader:
        got = list(reader)
    assert [f.ts for f in got] == [2e-6]
    assert reader.counters["pcapng.unknown_interface"] == 1


def test_position_grows_to_the_file_size(pcaps_dir):
    path = pcaps_dir / "sip-rtp-g711.pcap"
    with CaptureReader(path) as reader:
        assert reader.size == path.stat().st_size
        positions = [reader.position for _frame in reader]
    assert positions == sorted(positions)
    assert positions[-1] == reader.size


def test_frame_is_a_slotted_dataclass():
    frame = Frame(1.5, 1, b"\x00")
    assert not hasattr(frame, "__dict__")
