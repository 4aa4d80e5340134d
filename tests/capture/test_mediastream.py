"""MediaStream: timeline, loss, events, comfort noise, SSRC changes and the trim."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from G722 import G722
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.codecs import decoder_for
from gateway.capture.mediastream import MediaStream
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import CaptureReader
from gateway.capture.rtp import RtpError, RtpPacket, is_rtcp, parse_rtp
from gateway.capture.sdp import Codec
from gateway.events import DirectionStats, Role, Undecodable
from tests.capture.tshark_reference import tshark_rtcp, tshark_rtp

with warnings.catch_warnings():  # the independent G.711 encoder/decoder
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

PCMA = Codec("PCMA", 8000)
PCMU = Codec("PCMU", 8000)
G722_CODEC = Codec("G722", 8000)
EVENT = Codec("TELEPHONE-EVENT", 8000)
CN = Codec("CN", 8000)
CODECS = {8: PCMA, 0: PCMU, 101: EVENT, 13: CN}
TS_MOD = 1 << 32


def noise_signal(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3000, int(8000 * seconds))).clip(-32768, 32767).astype(np.int16)


def packets_from(
    payload: bytes,
    per_packet: int,
    *,
    pt: int = 8,
    ssrc: int = 0xA1,
    seq: int = 1000,
    ts: int = 50_000,
    ticks_per_byte: int = 1,
) -> list[RtpPacket]:
    count = len(payload) // per_packet
    return [
        RtpPacket(
            False,
            pt,
            (seq + i) % 65536,
            (ts + i * per_packet // ticks_per_byte) % TS_MOD,
            ssrc,
            payload[i * per_packet : (i + 1) * per_packet],
        )
        for i in range(count)
    ]


def alaw_stream(
    seconds: float, ptime_ms: int = 20, **kwargs: int
) -> tuple[list[RtpPacket], np.ndarray]:
    """Packets of an A-law stream and the exact PCM an independent decoder makes of them."""
    payload = audioop.lin2alaw(noise_signal(seconds).tobytes(), 2)
    clean = np.frombuffer(audioop.alaw2lin(payload, 2), np.int16)
    return packets_from(payload, 8 * ptime_ms, **kwargs), clean


def shifted(packet: RtpPacket, seq: int, ticks: int) -> RtpPacket:
    """The same payload moved by ``seq`` sequence numbers and ``ticks`` of RTP time."""
    return RtpPacket(
        packet.marker,
        packet.payload_type,
        (packet.sequence + seq) % 65536,
        (packet.timestamp + ticks) % TS_MOD,
        packet.ssrc,
        packet.payload,
    )


def play(stream: MediaStream, packets: list[RtpPacket]) -> np.ndarray:
    out = [pcm for packet in packets for pcm in stream.push(packet)] + stream.flush()
    for pcm in out:
        assert pcm.dtype == np.int16 and pcm.ndim == 1
    return np.concatenate(out) if out else np.zeros(0, np.int16)


def event_packets(
    start_seq: int, ts: int, durations: list[int], ssrc: int = 0xA1, pt: int = 101
) -> list[RtpPacket]:
    packets = []
    for i, duration in enumerate(durations):
        end = 0x80 if i >= len(durations) - 3 else 0
        payload = bytes([5, end | 10]) + duration.to_bytes(2, "big")
        packets.append(RtpPacket(i == 0, pt, (start_seq + i) % 65536, ts, ssrc, payload))
    return packets


# -- the timeline ---------------------------------------------------------------------------


@pytest.mark.parametrize("ptime", [10, 20, 30, 40])
def test_clean_stream_decodes_exactly_for_every_ptime(ptime: int) -> None:
    packets, clean = alaw_stream(1.2, ptime)
    stream = MediaStream({8: PCMA}, jitter_depth=4)
    out = play(stream, packets)
    assert stream.sample_rate == 8000
    assert np.array_equal(out, clean)
    stats = stream.stats
    assert (stats.packets, stats.lost, stats.duplicates) == (len(packets), 0, 0)
    assert stats.decoded_samples == len(clean)
    assert stats.concealed_samples == stats.trimmed_samples == stats.telephone_events == 0
    assert stream.undecodable is None and not stream.counters


def test_stats_convert_to_direction_stats() -> None:
    packets, _ = alaw_stream(0.2)
    stream = MediaStream({8: PCMA})
    play(stream, packets)
    stats = DirectionStats(Role.CUSTOMER, **{f: getattr(stream.stats, f) for f in _STAT_FIELDS})
    assert stats.decoded_samples == 1600 and stats.packets == 10


_STAT_FIELDS = (
    "packets",
    "lost",
    "duplicates",
    "concealed_samples",
    "decoded_samples",
    "trimmed_samples",
    "telephone_events",
)


@settings(max_examples=200, deadline=None)
@given(
    depth=st.integers(2, 8),
    count=st.integers(3, 60),
    ptime=st.sampled_from([10, 20, 30, 40]),
    seq=st.integers(0, 65535),
    ts=st.integers(0, TS_MOD - 1),
    data=st.data(),
)
def test_jitter_drops_and_duplicates_change_only_the_dropped_slots(
    depth: int, count: int, ptime: int, seq: int, ts: int, data: st.DataObject
) -> None:
    n = 8 * ptime
    packets, clean = alaw_stream(count * ptime / 1000, ptime, seq=seq, ts=ts)
    delays = data.draw(st.lists(st.integers(0, depth - 1), min_size=count, max_size=count))
    order = [
        p
        for _, _, p in sorted(
            zip([i + d for i, d in enumerate(delays)], range(count), packets, strict=True)
        )
    ]
    dropped = set(data.draw(st.lists(st.integers(1, count - 2), max_size=count // 3)))
    kept = [i for i in range(count) if i not in dropped]
    arrivals = []
    for packet in order:
        index = (packet.sequence - seq) % 65536
        if index in dropped:
            continue
        arrivals.append(packet)
        if index % 5 == 2:
            arrivals.append(packet)  # mirrored twice
    stream = MediaStream({8: PCMA}, jitter_depth=depth)
    out = play(stream, arrivals)
    assert len(out) == len(clean)  # first and last packets are kept: the whole duration
    for i in kept:
        assert np.array_equal(out[i * n : (i + 1) * n], clean[i * n : (i + 1) * n])
    stats = stream.stats
    assert stats.lost == len(dropped)
    assert stats.concealed_samples == n * len(dropped)
    assert stats.decoded_samples == n * len(kept)
    assert stats.duplicates == len(arrivals) - len(kept)
    assert stats.packets == len(arrivals)


def test_concealment_continues_the_audio_and_fades_out() -> None:
    packets, clean = alaw_stream(1.0)
    del packets[20:26]  # 120 ms lost
    stream = MediaStream({8: PCMA})
    out = play(stream, packets)
    assert len(out) == len(clean)
    gap = out[20 * 160 : 26 * 160]
    assert gap[:80].any()  # the first 10 ms repeat the last pitch period at full level
    assert not gap[480:].any()  # silent from 60 ms into the loss
    assert stream.stats.concealed_samples == 960 and stream.stats.lost == 6


def test_silence_suppression_gap_is_silence_and_long_gaps_are_capped() -> None:
    packets, clean = alaw_stream(0.4)
    later = [shifted(p, 20, 3200 + 8000) for p in packets[:10]]
    stream = MediaStream({8: PCMA}, max_gap_seconds=10.0)
    out = play(stream, packets + later)
    assert len(out) == 3200 + 8000 + 1600
    assert not out[3200 : 3200 + 8000].any()
    assert np.array_equal(out[-1600:], clean[:1600])
    assert stream.stats.lost == 0 and stream.stats.concealed_samples == 0
    capped = MediaStream({8: PCMA}, max_gap_seconds=0.25)
    out = play(capped, packets + later)
    assert len(out) == 3200 + 2000 + 1600
    assert capped.counters["gap.capped"] == 1


def test_telephone_events_are_silence_not_audio() -> None:
    packets, clean = alaw_stream(1.0)
    head, tail = packets[:25], packets[25:]
    event_ts = head[-1].timestamp + 160
    durations = [160, 320, 480, 640, 800, 800, 800]
    events = event_packets(head[-1].sequence + 1, event_ts, durations)
    shift = len(events)
    resumed = [shifted(p, shift, 960) for p in tail]
    stream = MediaStream(CODECS)
    out = play(stream, head + events + resumed)
    assert np.array_equal(out[:4000], clean[:4000])
    assert not out[4000 : 4000 + 960].any()  # 800 ticks of event, then 160 of pause
    assert np.array_equal(out[4960:], clean[4000:])
    stats = stream.stats
    assert stats.telephone_events == 1
    assert stats.lost == stats.concealed_samples == 0
    assert stats.decoded_samples == len(clean)


def test_audio_under_an_event_loses_the_overlap() -> None:
    # a sender that also puts the tone in band: the audio inside the event's span is cut
    packets, clean = alaw_stream(0.2)
    events = event_packets(packets[4].sequence + 1, packets[4].timestamp + 160, [400, 400, 400])
    inband = shifted(packets[5], 3, 0)  # in the event's span [960, 1360)
    after = shifted(packets[6], 3, 240)  # starts where the event ends
    stream = MediaStream(CODECS)
    out = play(stream, [*packets[:5], *events, inband, after])
    assert len(out) == 800 + 400 + 160
    assert not out[800:1200].any()
    assert np.array_equal(out[1200:], clean[960:1120])
    assert stream.counters["rtp.overlap_dropped"] == 1


def test_events_on_their_own_ssrc_leave_the_timeline_alone() -> None:
    packets, clean = alaw_stream(0.4)
    events = event_packets(9000, 123456, [160, 320, 320, 320], ssrc=0xE7)
    stream = MediaStream(CODECS)
    out = play(stream, packets[:10] + events + packets[10:])
    assert np.array_equal(out, clean)
    assert stream.stats.telephone_events == 1
    assert stream.counters["rtp.foreign_ssrc"] == 4


def test_comfort_noise_fills_the_gap_at_the_signalled_level() -> None:
    packets, clean = alaw_stream(0.4)
    cn_ts = packets[9].timestamp + 160
    cn = RtpPacket(False, 13, packets[9].sequence + 1, cn_ts, 0xA1, bytes([40]))
    resumed = [shifted(p, 1, 8000) for p in packets[10:]]
    stream = MediaStream({8: PCMA, 13: CN})
    out = play(stream, [*packets[:10], cn, *resumed])
    assert len(out) == len(clean) + 8000
    noise = out[1600:9600].astype(float)
    level = 32767 * 10 ** (-40 / 20)
    assert 0.8 * level < np.sqrt(np.mean(noise**2)) < 1.2 * level
    assert np.array_equal(out[9600:], clean[1600:])
    assert stream.stats.concealed_samples == 0 and stream.stats.lost == 0
    # a dynamic payload type named CN works the same, and level 127 means silence
    quiet = RtpPacket(False, 105, cn.sequence, cn_ts, 0xA1, bytes([127]))
    stream = MediaStream({8: PCMA, 105: CN})
    out = play(stream, [*packets[:10], quiet, *resumed])
    assert not out[1600:9600].any()


def test_ssrc_change_continues_the_timeline() -> None:
    first, clean_first = alaw_stream(0.3)
    second, clean_second = alaw_stream(0.3, ssrc=0xB2, seq=7, ts=999_999_000)
    stream = MediaStream({8: PCMA})
    out = play(stream, first + second)
    assert np.array_equal(out, np.concatenate([clean_first, clean_second]))
    assert stream.counters["rtp.ssrc_change"] == 1
    assert stream.stats.lost == 0


def test_sequence_restart_and_timestamp_reset_continue_the_timeline() -> None:
    first, clean_first = alaw_stream(0.3)
    restarted, clean_second = alaw_stream(0.3, seq=40000, ts=7)
    stream = MediaStream({8: PCMA})
    out = play(stream, first + restarted)
    assert np.array_equal(out, np.concatenate([clean_first, clean_second]))
    assert stream.counters["seq.restart"] == 1 and stream.stats.lost == 0
    # sequence continues, timestamp jumps back by 2 s: a sender reset, not an overlap
    reset, clean_third = alaw_stream(0.3, seq=first[-1].sequence + 1, ts=first[0].timestamp - 16000)
    stream = MediaStream({8: PCMA})
    out = play(stream, first + reset)
    assert np.array_equal(out, np.concatenate([clean_first, clean_third]))
    assert stream.counters["rtp.timestamp_reset"] == 1


# -- the trim -------------------------------------------------------------------------------


@pytest.mark.parametrize("trim", [0.0, 1.0, 1.0025, 2.99])
def test_trim_discards_the_head_of_the_timeline(trim: float) -> None:
    packets, clean = alaw_stream(3.0)
    stream = MediaStream({8: PCMA}, trim_seconds=trim)
    out = play(stream, packets)
    cut = round(trim * 8000)
    assert np.array_equal(out, clean[cut:])
    assert stream.stats.trimmed_samples == cut
    assert stream.stats.decoded_samples == len(clean) - cut


def test_trimmed_audio_is_not_kept_for_concealment() -> None:
    packets, clean = alaw_stream(2.0)
    del packets[51]  # lost right after the packet that straddles the end of the window
    stream = MediaStream({8: PCMA}, trim_seconds=1.0025)
    out = play(stream, packets)
    assert np.array_equal(out[:140], clean[8020:8160])
    assert not out[140:300].any()  # nothing left to repeat: the head of packet 50 is gone
    assert stream.stats.concealed_samples == 160
    assert np.array_equal(out[300:], clean[8320:])


def test_trimmed_packets_never_reach_the_decoder() -> None:
    # G.722 decoders carry state: had the trimmed packets been decoded, the first kept packet
    # would decode differently from a decoder that starts there.
    speech = noise_signal(2.0, seed=7)
    wide = np.repeat(speech, 2)  # 16 kHz
    encoded = G722(16000, 64000).encode(wide)
    packets = packets_from(encoded, 160, pt=9)
    stream = MediaStream({9: G722_CODEC}, trim_seconds=0.5)
    assert stream.sample_rate == 16000
    out = play(stream, packets)
    fresh = decoder_for(G722_CODEC)
    whole = decoder_for(G722_CODEC)
    assert fresh is not None and whole is not None
    expected = np.concatenate([fresh.decode(p.payload) for p in packets[25:]])
    assert np.array_equal(out, expected)
    everything = np.concatenate([whole.decode(p.payload) for p in packets])
    assert not np.array_equal(out, everything[8000:])  # the check can tell the difference
    assert stream.stats.trimmed_samples == 8000
    assert stream.stats.decoded_samples == len(expected)


def test_trim_window_counts_gaps_at_most_max_gap() -> None:
    packets, clean = alaw_stream(2.0)
    late = [shifted(p, 0, 80_000) for p in packets[1:]]  # 10 s of silence after the first
    stream = MediaStream({8: PCMA}, trim_seconds=2.5, max_gap_seconds=2.0)
    out = play(stream, packets[:1] + late)
    # timeline: 160 samples, 16 000 of capped gap, then audio: 3 840 more samples are trimmed
    assert np.array_equal(out, clean[160 + 3840 :])
    assert stream.stats.trimmed_samples == 20000


def test_trim_on_a_real_capture(pcaps_dir: Path) -> None:
    packets = []
    decoder = PacketDecoder()
    with CaptureReader(pcaps_dir / "A_party_g711a.pcap") as reader:
        for frame in reader:
            for datagram in decoder.decode(frame):
                packets.append(parse_rtp(datagram.payload))
    whole = play(MediaStream({8: PCMA}), packets)
    trimmed = MediaStream({8: PCMA}, trim_seconds=5.0)
    out = play(trimmed, packets)
    assert np.array_equal(out, whole[40000:])
    assert trimmed.stats.trimmed_samples == 40000


# -- codecs ---------------------------------------------------------------------------------


def test_unsupported_codec_is_reported_and_never_decoded() -> None:
    payload = bytes(range(200)) * 8
    stream = MediaStream({18: Codec("G729", 8000), 101: EVENT})
    out = play(stream, packets_from(payload, 20, pt=18))
    assert len(out) == 0
    assert stream.undecodable is Undecodable.CODEC
    assert stream.counters["codec.unsupported"] == 80
    assert stream.sample_rate == 8000


def test_undecodable_source_on_another_ssrc_does_not_interrupt_the_audio() -> None:
    packets, clean = alaw_stream(0.4)
    g729 = packets_from(bytes(400), 20, pt=18, ssrc=0xC3, seq=5, ts=77)
    mixed = [p for pair in zip(packets, g729, strict=True) for p in pair]
    stream = MediaStream({8: PCMA, 18: Codec("G729", 8000)})
    out = play(stream, mixed)
    assert np.array_equal(out, clean)
    assert stream.undecodable is Undecodable.CODEC
    assert stream.counters["rtp.foreign_ssrc"] == 20 and "rtp.ssrc_change" not in stream.counters


def test_stray_unknown_payload_type_is_counted_without_a_loss() -> None:
    packets, clean = alaw_stream(0.4)
    stray = RtpPacket(False, 127, packets[10].sequence, packets[10].timestamp, 0xA1, bytes(5))
    later = [shifted(p, 1, 160) for p in packets[10:]]
    stream = MediaStream({8: PCMA})
    out = play(stream, [*packets[:10], stray, *later])
    assert np.array_equal(
        out, np.concatenate([clean[:1600], np.zeros(160, np.int16), clean[1600:]])
    )
    assert stream.counters["rtp.unknown_payload_type"] == 1
    assert stream.undecodable is None and stream.stats.lost == 0


def test_g722_stream_is_16_khz_and_codec_change_keeps_one_rate() -> None:
    wide = np.repeat(noise_signal(0.4, seed=3), 2)
    encoded = G722(16000, 64000).encode(wide)
    g722_packets = packets_from(encoded, 160, pt=9, seq=200, ts=1600)
    stream = MediaStream({9: G722_CODEC})
    out = play(stream, g722_packets)
    direct = decoder_for(G722_CODEC)
    assert direct is not None
    assert np.array_equal(out, np.concatenate([direct.decode(p.payload) for p in g722_packets]))
    # PCMU first in SDP: the stream stays at 8 kHz and G.722 after a re-INVITE is converted
    ulaw = audioop.lin2ulaw(noise_signal(0.4).tobytes(), 2)
    ulaw_packets = packets_from(ulaw, 160, pt=0, seq=100, ts=0)
    after = [shifted(p, -80, 1600) for p in g722_packets]  # continues the PCMU sequence
    mixed = MediaStream({0: PCMU, 9: G722_CODEC})
    out = play(mixed, ulaw_packets + after)
    assert mixed.sample_rate == 8000
    assert len(out) == 3200 + 3200
    assert np.array_equal(out[:3200], np.frombuffer(audioop.ulaw2lin(ulaw, 2), np.int16))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 8, 9, 13, 18, 101, 127]),
            st.integers(0, 65535) | st.integers(100, 110),
            st.integers(0, TS_MOD - 1) | st.integers(0, 4000),
            st.sampled_from([1, 2]),
            st.binary(max_size=200),
        ),
        max_size=60,
    ),
    st.floats(0.0, 1.0),
)
def test_any_packets_never_crash_and_output_stays_bounded(
    specs: list[tuple[int, int, int, int, bytes]], trim: float
) -> None:
    codecs = {0: PCMU, 8: PCMA, 9: G722_CODEC, 13: CN, 18: Codec("G729", 8000), 101: EVENT}
    stream = MediaStream(codecs, trim_seconds=trim, jitter_depth=3, max_gap_seconds=0.1)
    packets = [RtpPacket(False, pt, seq, ts, ssrc, payload) for pt, seq, ts, ssrc, payload in specs]
    out = play(stream, packets)
    per_packet = 2 * 800 + 2 * 200  # two capped fills and the largest decoded payload
    assert len(out) <= len(packets) * per_packet
    stats = stream.stats
    assert stats.packets == len(packets)
    emitted = stats.decoded_samples + stats.concealed_samples
    assert emitted <= len(out)


def test_rtcp_on_the_media_port_is_told_apart(pcaps_dir: Path, tshark: str) -> None:
    path = pcaps_dir / "crash-27382.pcap"
    expected = {"rtp": len(tshark_rtp(tshark, path)), "rtcp": len(tshark_rtcp(tshark, path))}
    decoder = PacketDecoder()
    kinds = {"rtp": 0, "rtcp": 0}
    with CaptureReader(path) as reader:
        for frame in reader:
            for datagram in decoder.decode(frame):
                if is_rtcp(datagram.payload):
                    kinds["rtcp"] += 1
                    continue
                try:
                    parse_rtp(datagram.payload)
                except RtpError:
                    continue
                kinds["rtp"] += 1
    assert kinds == expected
