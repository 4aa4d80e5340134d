"""PcapWriter and udp_frame, read back by tshark (checksums validated) and by the project."""

from __future__ import annotations

import io
import ipaddress
import random
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.datagram import UDP
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import MAX_RECORD, CaptureReader, Frame
from gateway.capture.pcapwriter import PcapWriter, udp_frame

_FIELDS = (
    "frame.time_epoch",
    "ip.src",
    "ip.dst",
    "ipv6.src",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "udp.length",
    "udp.checksum",
    "udp.checksum.status",
    "ip.checksum.status",
    "udp.payload",
    "_ws.expert.message",
)


def tshark_rows(tshark: str, path: Path) -> list[dict[str, str]]:
    """tshark's fields per frame, with IP and UDP checksum validation switched on."""
    command = [tshark, "-n", "-r", str(path), "-o", "udp.check_checksum:TRUE"]
    command += ["-o", "ip.check_checksum:TRUE", "-T", "fields", "-E", "separator=\t"]
    for name in _FIELDS:
        command += ["-e", name]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    return [dict(zip(_FIELDS, line.split("\t"), strict=True)) for line in out.splitlines()]


def ones_complement_ok(data: bytes) -> bool:
    """Word-by-word RFC 1071 check: the sum over data that holds its checksum is all ones."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def random_packet(rng: random.Random) -> tuple[str, int, str, int, bytes]:
    if rng.random() < 0.5:
        src = str(ipaddress.IPv4Address(rng.getrandbits(32)))
        dst = str(ipaddress.IPv4Address(rng.getrandbits(32)))
    else:
        src = str(ipaddress.IPv6Address(rng.getrandbits(128)))
        dst = str(ipaddress.IPv6Address(rng.getrandbits(128)))
    payload = rng.randbytes(rng.choice((0, 1, 2, 3, 160, 161, rng.randrange(1, 1500))))
    return src, rng.randrange(65536), dst, rng.randrange(65536), payload


def test_tshark_reads_back_fields_and_valid_checksums(tmp_path, tshark):
    rng = random.Random(5737)
    packets = [random_packet(rng) for _ in range(300)]
    times = [1_700_000_000 + i * 0.020 + rng.randrange(1000) / 1_000_000 for i in range(300)]
    path = tmp_path / "out.pcap"
    with PcapWriter(path) as writer:
        for ts, packet in zip(times, packets, strict=True):
            writer.write(ts, udp_frame(*packet))
    assert writer.frames == 300

    rows = tshark_rows(tshark, path)
    assert len(rows) == 300
    for row, ts, (src, sport, dst, dport, payload) in zip(rows, times, packets, strict=True):
        assert float(row["frame.time_epoch"]) == pytest.approx(ts, abs=5e-7)
        if ":" in src:
            assert (row["ipv6.src"], row["ipv6.dst"]) == (src, dst)
            assert row["ip.checksum.status"] == ""
        else:
            assert (row["ip.src"], row["ip.dst"]) == (src, dst)
            assert row["ip.checksum.status"] == "1"  # Good
        assert (int(row["udp.srcport"]), int(row["udp.dstport"])) == (sport, dport)
        assert int(row["udp.length"]) == 8 + len(payload)
        assert row["udp.checksum.status"] == "1"
        assert bytes.fromhex(row["udp.payload"]) == payload
        assert "checksum" not in row["_ws.expert.message"].lower()


def test_computed_zero_checksum_is_sent_as_all_ones(tmp_path, tshark):
    # Append the checksum of the frame with a zero word as that word: the sum becomes all ones
    # and the computed checksum zero, which UDP must transmit as 0xFFFF.
    probe = udp_frame("192.0.2.1", 5004, "198.51.100.7", 6004, b"zero?" + b"\x00" * 3)
    word = probe[40:42]
    frame = udp_frame("192.0.2.1", 5004, "198.51.100.7", 6004, b"zero?\x00" + word)
    assert frame[40:42] == b"\xff\xff"
    path = tmp_path / "zero.pcap"
    with PcapWriter(path) as writer:
        writer.write(1.0, frame)
    (row,) = tshark_rows(tshark, path)
    assert row["udp.checksum"] == "0xffff"
    assert row["udp.checksum.status"] == "1"


def test_tshark_check_would_flag_a_damaged_frame(tmp_path, tshark):
    # the validation above is live: one flipped bit in the payload and in the IP header
    frame = bytearray(udp_frame("192.0.2.1", 5004, "198.51.100.7", 6004, b"payload"))
    frame[-1] ^= 1
    frame[22] ^= 1  # TTL
    path = tmp_path / "damaged.pcap"
    with PcapWriter(path) as writer:
        writer.write(1.0, bytes(frame))
    (row,) = tshark_rows(tshark, path)
    assert (row["udp.checksum.status"], row["ip.checksum.status"]) == ("0", "0")  # Bad


def test_file_object_target_is_left_open_and_matches_path_output(tmp_path):
    frames = [(0.5, udp_frame("192.0.2.1", 1, "192.0.2.2", 2, b"x" * n)) for n in range(5)]
    buffer = io.BytesIO()
    with PcapWriter(buffer) as writer:
        for ts, frame in frames:
            writer.write(ts, frame)
    assert not buffer.closed
    with PcapWriter(tmp_path / "a.pcap") as writer:
        for ts, frame in frames:
            writer.write(ts, frame)
    assert buffer.getvalue() == (tmp_path / "a.pcap").read_bytes()


def test_project_reader_and_decoder_read_it_back(tmp_path):
    path = tmp_path / "r.pcap"
    with PcapWriter(path) as writer:
        writer.write(
            1_768_471_200.123456, udp_frame("192.0.2.10", 5060, "198.51.100.9", 5062, b"A")
        )
        writer.write(1_768_471_200.5, udp_frame("2001:db8::a", 4000, "2001:db8::b", 4002, b"BC"))
    with CaptureReader(path) as reader:
        frames = list(reader)
        assert not reader.truncated
    assert [f.linktype for f in frames] == [1, 1]
    assert frames[0].ts == pytest.approx(1_768_471_200.123456, abs=5e-7)
    decoder = PacketDecoder()
    (first,) = decoder.decode(frames[0])
    (second,) = decoder.decode(frames[1])
    assert (first.src, first.sport, first.dst, first.dport, first.proto, first.payload) == (
        bytes([192, 0, 2, 10]), 5060, bytes([198, 51, 100, 9]), 5062, UDP, b"A",
    )  # fmt: skip
    assert second.src == ipaddress.ip_address("2001:db8::a").packed
    assert (second.sport, second.dport, second.payload) == (4000, 4002, b"BC")


@settings(max_examples=300, deadline=None)
@given(
    st.randoms(use_true_random=False),
    st.binary(max_size=1400),
)
def test_any_frame_has_valid_checksums_and_decodes(rng, payload):
    src, sport, dst, dport, _ = random_packet(rng)
    frame = udp_frame(src, sport, dst, dport, payload)
    if ":" in src:
        assert frame[12:14] == b"\x86\xdd"
        ip_header, udp = frame[14:54], frame[54:]
        pseudo = ip_header[8:40] + struct.pack("!IxxxB", len(udp), 17)
    else:
        assert frame[12:14] == b"\x08\x00"
        ip_header, udp = frame[14:34], frame[34:]
        assert ones_complement_ok(ip_header)
        pseudo = ip_header[12:20] + struct.pack("!xBH", 17, len(udp))
    assert ones_complement_ok(pseudo + udp)
    (dg,) = PacketDecoder().decode(Frame(0.0, 1, frame))
    assert (dg.sport, dg.dport, dg.payload) == (sport, dport, payload)
    assert dg.src == ipaddress.ip_address(src).packed
    assert dg.dst == ipaddress.ip_address(dst).packed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("192.0.2.1", 1, "2001:db8::1", 2, b""), "different IP versions"),
        (("192.0.2.1", 70000, "192.0.2.2", 2, b""), "out of range"),
        (("192.0.2.1", 1, "192.0.2.2", -1, b""), "out of range"),
        (("192.0.2.1", 1, "192.0.2.2", 2, bytes(65508)), "exceeds"),
        (("not-an-ip", 1, "192.0.2.2", 2, b""), "not an IPv4 or IPv6 address"),
    ],
)
def test_udp_frame_rejects_what_cannot_be_a_udp_packet(args, message):
    with pytest.raises(ValueError, match=message):
        udp_frame(*args)


def test_largest_ipv4_payload_is_accepted():
    frame = udp_frame("192.0.2.1", 1, "192.0.2.2", 2, bytes(65507))
    assert struct.unpack_from("!H", frame, 16)[0] == 0xFFFF  # IPv4 total length at its limit


def test_writer_rejects_negative_times_and_oversized_frames(tmp_path):
    with PcapWriter(tmp_path / "bad.pcap") as writer:
        with pytest.raises(ValueError, match="before 1970"):
            writer.write(-1.0, b"\x00" * 60)
        with pytest.raises(ValueError, match="snapshot length"):
            writer.write(1.0, bytes(MAX_RECORD + 1))
        assert writer.frames == 0
    assert (tmp_path / "bad.pcap").stat().st_size == 24  # the file header only
