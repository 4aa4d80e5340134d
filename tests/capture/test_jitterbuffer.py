"""Jitter buffer: ordering, wrap-around, duplicates, late packets, loss and restarts."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.jitterbuffer import JitterBuffer, Playout
from gateway.capture.rtp import RtpPacket


def packet(seq: int) -> RtpPacket:
    seq %= 1 << 16
    return RtpPacket(False, 8, seq, seq * 160 % (1 << 32), 7, bytes([seq & 0xFF]))


def run(buffer: JitterBuffer, seqs: list[int]) -> list[Playout]:
    out = []
    for seq in seqs:
        out += buffer.push(packet(seq))
    return out + buffer.flush()


def played(out: list[Playout]) -> list[int]:
    return [p.packet.sequence for p in out]


def test_in_order_packets_leave_at_once_after_the_start() -> None:
    buffer = JitterBuffer(depth=3)
    assert buffer.push(packet(10)) == []  # the first packets wait: an earlier one may follow
    assert buffer.push(packet(11)) == []
    assert buffer.push(packet(12)) == []
    assert played(buffer.push(packet(13))) == [10, 11, 12, 13]
    for seq in range(14, 40):
        assert played(buffer.push(packet(seq))) == [seq]


def test_reordering_across_the_wrap() -> None:
    seqs = [65530, 65532, 65531, 65534, 65533, 0, 65535, 2, 1, 3, 4]
    buffer = JitterBuffer(depth=4)
    out = run(buffer, seqs)
    assert played(out) == [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4]
    assert all(p.lost == 0 for p in out)
    assert buffer.lost == buffer.duplicates == 0 and not buffer.counters


def test_a_late_first_packet_is_still_played_first() -> None:
    assert played(run(JitterBuffer(depth=4), [101, 102, 100, 103, 104, 105])) == list(
        range(100, 106)
    )


def test_duplicates_are_dropped_whether_held_or_already_played() -> None:
    buffer = JitterBuffer(depth=3)
    out = run(buffer, [1, 2, 3, 4, 4, 2, 6, 5, 6, 7, 1, 8])
    assert played(out) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert buffer.duplicates == 4
    assert buffer.lost == 0 and not buffer.counters


def test_loss_is_declared_after_depth_newer_packets_and_reported() -> None:
    buffer = JitterBuffer(depth=3)
    for seq in (1, 2, 3):
        buffer.push(packet(seq))
    assert played(buffer.push(packet(4))) == [1, 2, 3, 4]
    assert buffer.push(packet(7)) == []
    assert buffer.push(packet(8)) == []
    due = buffer.push(packet(9))  # 9 - 5 >= 3: 5 and 6 are given up
    assert [(p.packet.sequence, p.lost) for p in due] == [(7, 2), (8, 0), (9, 0)]
    assert buffer.lost == 2


def test_a_packet_behind_the_playout_point_is_late() -> None:
    buffer = JitterBuffer(depth=2)
    run_seqs = [1, 2, 3, 5, 6, 7, 4, 8]
    out = []
    for seq in run_seqs:
        out += buffer.push(packet(seq))
    assert played(out) == [1, 2, 3, 5, 6, 7, 8]
    assert out[3].lost == 1
    assert buffer.counters["rtp.late"] == 1
    assert buffer.lost == 1 and buffer.duplicates == 0


def test_flush_releases_the_holes_as_lost() -> None:
    buffer = JitterBuffer(depth=8)
    for seq in (1, 2, 3):
        buffer.push(packet(seq))
    assert buffer.push(packet(6)) == []
    assert [(p.packet.sequence, p.lost) for p in buffer.flush()] == [
        (1, 0),
        (2, 0),
        (3, 0),
        (6, 2),
    ]
    assert buffer.lost == 2
    assert played(run(buffer, [50, 51])) == [50, 51]  # after a flush a new base starts


def test_a_big_jump_confirmed_by_the_next_packet_restarts_the_sequence() -> None:
    buffer = JitterBuffer(depth=2)
    out = run(buffer, [100, 101, 102, 103, 40000, 40001, 40002, 40003])
    assert played(out) == [100, 101, 102, 103, 40000, 40001, 40002, 40003]
    restarts = [p.packet.sequence for p in out if p.restart]
    assert restarts == [40000]
    assert buffer.counters["seq.restart"] == 1
    assert buffer.lost == 0


def test_a_lone_stray_packet_is_dropped() -> None:
    buffer = JitterBuffer(depth=2)
    out = run(buffer, [100, 101, 102, 9000, 103, 104, 99 - 500, 105])
    assert played(out) == [100, 101, 102, 103, 104, 105]
    assert buffer.counters["seq.stray"] == 2
    assert not any(p.restart for p in out)


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least one packet"):
        JitterBuffer(depth=0)


@settings(max_examples=300, deadline=None)
@given(
    depth=st.integers(1, 8),
    count=st.integers(1, 120),
    start=st.integers(0, 65535),
    data=st.data(),
)
def test_jitter_within_depth_with_drops_and_duplicates_loses_nothing_received(
    depth: int, count: int, start: int, data: st.DataObject
) -> None:
    clean = list(range(start, start + count))
    # each packet is delayed by less than `depth` slots of the clean stream, so no packet
    # `depth` or more sequence numbers newer arrives before it; then some are dropped
    delays = data.draw(st.lists(st.integers(0, depth - 1), min_size=count, max_size=count))
    order = [s for _, s in sorted(zip((i + d for i, d in enumerate(delays)), clean, strict=True))]
    dropped = set(data.draw(st.lists(st.sampled_from(clean), max_size=count // 2)))
    kept = [s for s in clean if s not in dropped]
    arrivals = []
    for seq in (s for s in order if s not in dropped):
        arrivals.append(seq)
        if seq % 7 == 3:
            arrivals.append(seq)  # the mirror saw it twice
    buffer = JitterBuffer(depth=depth)
    out = run(buffer, arrivals)
    assert [p.packet.sequence for p in out] == [s % (1 << 16) for s in kept]
    expected_gaps = [b - a - 1 for a, b in itertools.pairwise(kept)]
    assert [p.lost for p in out[1:]] == expected_gaps
    assert all(p.lost == 0 for p in out[:1])
    assert buffer.lost == sum(expected_gaps)
    assert buffer.duplicates == len(arrivals) - len(kept)
    assert "rtp.late" not in buffer.counters


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 65535), max_size=200), st.integers(1, 8))
def test_any_sequence_numbers_are_handled_with_bounded_memory(seqs: list[int], depth: int) -> None:
    buffer = JitterBuffer(depth=depth)
    out = []
    for seq in seqs:
        out += buffer.push(packet(seq))
        assert len(buffer._held) <= depth + 1
    out += buffer.flush()
    assert len(out) <= len(seqs)
    assert all(p.lost >= 0 for p in out)
