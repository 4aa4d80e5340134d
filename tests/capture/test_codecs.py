"""Decoders: G.711 tables against audioop, G.722 and L16 on speech and on real captures."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from G722 import G722
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.codecs import decoder_for
from gateway.capture.codecs.concealment import PitchConcealer
from gateway.capture.codecs.g711 import ALAW_TABLE, ULAW_TABLE
from gateway.capture.sdp import Codec
from tests.capture.tshark_reference import tshark_rtp

with warnings.catch_warnings():  # the independent G.711 reference; audioop-lts from 3.13 on
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


PCMA = Codec("PCMA", 8000)
PCMU = Codec("PCMU", 8000)
G722_CODEC = Codec("G722", 8000)


def sdp_codecs(tshark: str, path: Path) -> dict[int, Codec]:
    """Media port -> codec of the first rtpmap, from every SDP in the capture."""
    command = [tshark, "-n", "-r", str(path), "-Y", "sdp", "-T", "fields", "-E", "separator=|"]
    command += ["-e", "sdp.media.port", "-e", "sdp.media_attr"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    codecs = {}
    for line in out.splitlines():
        port, attributes = line.split("|")
        rtpmap = next(a for a in attributes.split(",") if a.startswith("rtpmap:"))
        encoding, clock, *channels = rtpmap.split(" ", 1)[1].split("/")
        codecs[int(port)] = Codec(encoding.upper(), int(clock), int(channels[0]) if channels else 1)
    return codecs


def decode_all(decoder: object, payloads: list[bytes]) -> np.ndarray:
    return np.concatenate([decoder.decode(p) for p in payloads])  # type: ignore[attr-defined]


def best_lag_correlation(a: np.ndarray, b: np.ndarray, max_lag: int = 200) -> float:
    """Highest Pearson correlation of a and b over relative delays up to ``max_lag``."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(lag, 0) :]
        y = b[max(-lag, 0) :]
        n = min(len(x), len(y))
        best = max(best, float(np.corrcoef(x[:n], y[:n])[0, 1]))
    return best


def frame_levels_db(pcm: np.ndarray, rate: int) -> np.ndarray:
    frame = rate // 50
    n = len(pcm) // frame
    power = (pcm[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)
    return 10 * np.log10(power + 1.0)


# -- G.711 --------------------------------------------------------------------------------


def test_g711_tables_match_audioop_on_every_code() -> None:
    codes = bytes(range(256))
    assert np.array_equal(ALAW_TABLE, np.frombuffer(audioop.alaw2lin(codes, 2), np.int16))
    assert np.array_equal(ULAW_TABLE, np.frombuffer(audioop.ulaw2lin(codes, 2), np.int16))


def test_g711_tables_follow_the_standard_shape() -> None:
    # A-law: 13-bit magnitudes, smallest step 16 at 16-bit scale, largest value 32256;
    # mu-law: 14-bit magnitudes, largest 32124, and code 0xFF is zero.
    assert sorted(set(np.abs(ALAW_TABLE.astype(int))))[:2] == [8, 24]
    assert int(np.abs(ALAW_TABLE.astype(int)).max()) == 32256
    assert int(np.abs(ULAW_TABLE.astype(int)).max()) == 32124
    assert ULAW_TABLE[0xFF] == 0 and ULAW_TABLE[0x7F] == 0
    assert np.all(np.diff(ULAW_TABLE[0x80:].astype(int)) < 0)  # monotonic within a sign


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_g711_decoders_match_audioop_on_any_payload(payload: bytes) -> None:
    alaw = decoder_for(PCMA)
    ulaw = decoder_for(PCMU)
    assert alaw is not None and ulaw is not None
    assert alaw.decode(payload).tobytes() == audioop.alaw2lin(payload, 2)
    assert ulaw.decode(payload).tobytes() == audioop.ulaw2lin(payload, 2)
    assert alaw.duration(payload) == len(payload)


# -- decoder selection ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "rate", "per_tick"),
    [
        (PCMA, 8000, 1),
        (Codec("pcmu", 8000), 8000, 1),
        (G722_CODEC, 16000, 2),
        (Codec("L16", 44100, 2), 44100, 1),
        (Codec("L16", 11025), 11025, 1),
    ],
)
def test_supported_codecs_get_a_fresh_decoder(codec: Codec, rate: int, per_tick: int) -> None:
    first = decoder_for(codec)
    second = decoder_for(codec)
    assert first is not None and second is not None and first is not second
    assert (first.sample_rate, first.samples_per_tick) == (rate, per_tick)


@pytest.mark.parametrize(
    "codec",
    [
        Codec("G729", 8000),
        Codec("OPUS", 48000, 2),
        Codec("GSM", 8000),
        Codec("ILBC", 8000),
        Codec("SPEEX", 16000),
        Codec("G726-32", 8000),
        Codec("AAL2-G726-32", 8000),
        Codec("LPC", 8000),
        Codec("AMR-WB", 16000),
        Codec("TELEPHONE-EVENT", 8000),
        Codec("CN", 8000),
        Codec("PCMA", 16000),  # G.711 exists only at 8 kHz
        Codec("L16", 0),
        Codec("L16", 9_999_999),
        Codec("L16", 8000, 64),
    ],
)
def test_unsupported_codecs_have_no_decoder(codec: Codec) -> None:
    assert decoder_for(codec) is None


# -- G.722 ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def speech_16k(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed to make test speech (scripts/setup installs)")
    folder = tmp_path_factory.mktemp("speech")
    wav = folder / "speech.wav"
    raw = folder / "speech.raw"
    text = "Thank you for calling. Please hold while we connect you to the next agent."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True)
    subprocess.run(
        ["sox", str(wav), "-r", "16000", "-c", "1", "-b", "16", "-e", "signed", "-L", str(raw)],
        check=True,
    )
    pcm = np.fromfile(raw, dtype="<i2").astype(np.int16)
    assert len(pcm) > 16000, "espeak-ng produced less than a second of speech"
    return pcm


def test_g722_round_trip_on_speech(speech_16k: np.ndarray) -> None:
    encoded = G722(16000, 64000).encode(speech_16k)
    assert len(encoded) == len(speech_16k) // 2
    decoder = decoder_for(G722_CODEC)
    assert decoder is not None
    packets = [encoded[i : i + 160] for i in range(0, len(encoded), 160)]
    assert all(decoder.duration(p) == len(p) for p in packets)
    decoded = decode_all(decoder, packets)
    assert len(decoded) == 2 * len(encoded)
    assert best_lag_correlation(decoded, speech_16k, max_lag=64) > 0.9


def test_g722_decoders_keep_separate_state(speech_16k: np.ndarray) -> None:
    encoded = G722(16000, 64000).encode(speech_16k)
    packets = [encoded[i : i + 160] for i in range(0, len(encoded), 160)]
    alone = decode_all(decoder_for(G722_CODEC), packets)
    one, other = decoder_for(G722_CODEC), decoder_for(G722_CODEC)
    interleaved = []
    for packet in packets:
        interleaved.append(one.decode(packet))  # type: ignore[union-attr]
        other.decode(packets[0])  # type: ignore[union-attr]
    assert np.array_equal(np.concatenate(interleaved), alone)


def test_g722_capture_decodes_to_the_prompt_in_the_l16_capture(
    pcaps_dir: Path, tshark: str
) -> None:
    # The sip-rtp-* captures play one recorded prompt in each codec: the G.722 stream must
    # decode to the same waveform as the 16 kHz L16 stream, which is plain PCM.
    g722_rows = tshark_rtp(tshark, pcaps_dir / "sip-rtp-g722.pcap")
    assert {row.pt for row in g722_rows} == {9}
    decoder = decoder_for(G722_CODEC)
    assert decoder is not None
    decoded = decode_all(decoder, [row.payload for row in g722_rows])
    levels = frame_levels_db(decoded, 16000)
    assert levels.max() > 60  # speech peaks above -30 dBFS
    assert np.percentile(levels, 90) - np.percentile(levels, 10) > 20  # words and pauses
    l16_path = pcaps_dir / "sip-rtp-l16.pcap"
    wideband = {
        port: c for port, c in sdp_codecs(tshark, l16_path).items() if c.clock_rate == 16000
    }
    (port,) = wideband
    rows = [r for r in tshark_rtp(tshark, l16_path) if r.sport == port]
    reference = np.frombuffer(b"".join(r.payload for r in rows), ">i2")[:: wideband[port].channels]
    n = min(len(decoded), len(reference), 16000 * 4)
    assert best_lag_correlation(decoded[:n], reference[:n], max_lag=40) > 0.99


# -- L16 -----------------------------------------------------------------------------------


def test_l16_captures_decode_at_their_sdp_clock_rates(pcaps_dir: Path, tshark: str) -> None:
    path = pcaps_dir / "sip-rtp-l16.pcap"
    codecs = sdp_codecs(tshark, path)
    rows = tshark_rtp(tshark, path)
    ulaw_rows = [r for r in tshark_rtp(tshark, pcaps_dir / "sip-rtp-g711.pcap") if r.pt == 0]
    prompt_8k = np.frombuffer(audioop.ulaw2lin(b"".join(r.payload for r in ulaw_rows), 2), "<i2")
    seen = set()
    for port in {r.sport for r in rows}:
        codec = codecs[port]
        seen.add((codec.clock_rate, codec.channels))
        payloads = [r.payload for r in rows if r.sport == port]
        decoder = decoder_for(codec)
        assert decoder is not None
        pcm = decode_all(decoder, payloads)
        frames = sum(len(p) for p in payloads) // (2 * codec.channels)
        assert len(pcm) == frames == sum(decoder.duration(p) for p in payloads)
        # independent reference: audioop's byte swap and channel mix
        little = audioop.byteswap(b"".join(payloads), 2)
        if codec.channels == 2:
            little = audioop.tomono(little, 2, 0.5, 0.5)
        assert np.abs(pcm.astype(int) - np.frombuffer(little, "<i2")).max() <= 1
        # and it is the same prompt as the mu-law call: frame levels follow each other
        ours = frame_levels_db(pcm, codec.clock_rate)
        theirs = frame_levels_db(prompt_8k, 8000)
        n = min(len(ours), len(theirs))
        assert np.corrcoef(ours[:n], theirs[:n])[0, 1] > 0.85
        if codec.clock_rate == 8000:
            assert best_lag_correlation(pcm[:16000], prompt_8k[:16000], max_lag=10) > 0.99
    assert seen == {(8000, 2), (16000, 2), (11025, 1), (48000, 1)}


def test_l16_ignores_a_trailing_partial_frame() -> None:
    decoder = decoder_for(Codec("L16", 8000, 2))
    assert decoder is not None
    payload = bytes([0x01, 0x00, 0x03, 0x00, 0xFF])  # one stereo frame and a stray byte
    assert decoder.duration(payload) == 1
    assert decoder.decode(payload).tolist() == [(0x0100 + 0x0300) // 2]


# -- concealment ---------------------------------------------------------------------------


def _voiced(n: int, rate: int = 8000, f0: float = 125.0) -> np.ndarray:
    t = np.arange(n) / rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3, 5))
    return (6000 * wave).astype(np.int16)


def test_concealment_repeats_the_pitch_period_then_fades() -> None:
    signal = _voiced(8000 + 480)
    decoder = decoder_for(PCMU)
    assert decoder is not None
    history = decoder.decode(audioop.lin2ulaw(signal[:8000].tobytes(), 2))
    concealed = np.concatenate([decoder.conceal(240), decoder.conceal(240), decoder.conceal(80)])
    assert len(concealed) == 560
    truth = signal[8000:8080].astype(float)
    assert np.corrcoef(concealed[:80], truth)[0, 1] > 0.95  # first 10 ms: a true continuation
    assert np.array_equal(concealed[:16], concealed[64:80])  # period of 64 samples (125 Hz)
    rms = [float(np.sqrt(np.mean(concealed[i : i + 80].astype(float) ** 2))) for i in (0, 240)]
    full = float(np.sqrt(np.mean(history[-800:].astype(float) ** 2)))
    assert 0.8 * full < rms[0] < 1.2 * full
    assert 0.4 * full < rms[1] < 0.6 * full  # 30-40 ms: the gain falls from 0.6 to 0.4
    assert not concealed[480:].any()  # silent from 60 ms on


def test_concealment_without_history_is_silence_and_decoding_ends_the_erasure() -> None:
    decoder = decoder_for(PCMA)
    assert decoder is not None
    assert not decoder.conceal(160).any()
    decoder.decode(audioop.lin2alaw(_voiced(800).tobytes(), 2))
    decoder.conceal(480)
    assert not decoder.conceal(80).any()
    decoder.decode(audioop.lin2alaw(_voiced(160).tobytes(), 2))
    assert decoder.conceal(80).any()  # a new erasure starts at full level


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(-32768, 32767), max_size=400),
    st.integers(8000, 48000),
    st.lists(st.integers(0, 500), max_size=5),
)
def test_concealer_output_length_is_exact_for_any_history(
    history: list[int], rate: int, requests: list[int]
) -> None:
    concealer = PitchConcealer(rate)
    concealer.remember(np.array(history, dtype=np.int16))
    for n in requests:
        out = concealer.conceal(n)
        assert out.dtype == np.int16 and len(out) == n
