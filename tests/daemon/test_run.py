"""``callveil run --pcap``: the whole daemon over the demo capture, and what it leaves behind."""

from __future__ import annotations

import io
import json
import sqlite3
import wave

import numpy as np
import pytest

from gateway.aggregates.bucket import from_state
from gateway.capture.pcapfile import CaptureReader
from gateway.capture.session import CaptureSession
from gateway.config import Config
from gateway.dsp.resample import Resampler
from gateway.events import AudioChunk, CallStarted, Policy, Role
from gateway.seal.sampling_key import SamplingKey
from tests.daemon.boxes import DEMO_PCAP, Box, demo_box
from tests.privacy_scan import scan

# identities in the demo capture (scripts/make_demo_capture.py): they must not come out
DEMO_IDENTITIES = ("198.51.100", "192.0.2", "0612345678", "3391234567", "sip:", "@")


def decoded_calls(config: Config) -> dict[Policy, dict[Role, np.ndarray]]:
    """What capture hands on for each demo call, laid out by offset (the reference)."""
    session = CaptureSession(config, SamplingKey(b"\0" * 32))
    policies = {}
    audio: dict[Policy, dict[Role, list[AudioChunk]]] = {}
    events = [e for frame in CaptureReader(DEMO_PCAP) for e in session.feed(frame)]
    for event in events + session.finish():
        if isinstance(event, CallStarted):
            policies[event.ref] = event.policy
        elif isinstance(event, AudioChunk):
            audio.setdefault(policies[event.ref], {}).setdefault(event.role, []).append(event)
    out: dict[Policy, dict[Role, np.ndarray]] = {}
    for policy, roles in audio.items():
        for role, chunks in roles.items():
            line = np.zeros(max(c.offset + c.pcm.size for c in chunks), dtype=np.int16)
            for c in chunks:
                line[c.offset : c.offset + c.pcm.size] = c.pcm
            out.setdefault(policy, {})[role] = line
    return out


def read_wav(data: bytes) -> tuple[int, np.ndarray, bytes]:
    with wave.open(io.BytesIO(data)) as w:
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return w.getframerate(), frames.reshape(-1, w.getnchannels()), data


def comment(data: bytes) -> str:
    start = data.index(b"ICMT") + 8
    return data[start : data.index(b"\0", start)].decode()


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Box, str, str]:
    box = demo_box(tmp_path_factory.mktemp("demo-box"))
    result = box.run("--pcap", str(DEMO_PCAP))
    assert result.returncode == 0, result.stderr
    return box, result.stdout, result.stderr


def test_the_demo_runs_through_every_stage(ran: tuple[Box, str, str]) -> None:
    box, stdout, _ = ran
    assert "2: 1 analysed, 1 contract, 0 not sampled" in stdout
    assert "1 anonymized recording parts, 1 call summaries, 1 contract recording parts" in stdout
    with box.vault() as vault:
        analytics = vault.list("analytics")
        contract = vault.list("contract")
    assert sorted(r.kind for r in analytics) == ["recording", "summary"]
    assert [r.kind for r in contract] == ["recording"]
    db = sqlite3.connect(box.config.aggregates.state_path)
    (state,) = [json.loads(s) for (s,) in db.execute("SELECT state FROM open_buckets")]
    bucket = from_state(state)
    assert (bucket.calls_seen, bucket.calls_analysed) == (2, 1)


def test_the_summary_says_what_was_analysed_and_nothing_else(ran: tuple[Box, str, str]) -> None:
    box, _, _ = ran
    with box.vault() as vault:
        (record,) = [r for r in vault.list("analytics") if r.kind == "summary"]
        summary = json.loads(vault.get(record.id))
    assert summary["skipped"] == ["keywords"]  # the demo configures no keyword model
    assert {r["role"] for r in summary["roles"]} == {"operator", "customer"}
    assert 0 < summary["analysed_share"] <= 1
    assert scan(summary, known=DEMO_IDENTITIES) == []


def test_the_contract_call_is_kept_whole_and_exact(ran: tuple[Box, str, str]) -> None:
    box, _, _ = ran
    reference = decoded_calls(box.config)[Policy.CONTRACT]
    with box.vault() as vault:
        (record,) = vault.list("contract")
        rate, frames, data = read_wav(vault.get(record.id))
    assert rate == 8000
    assert comment(data).endswith("channels operator,customer")
    for channel, role in enumerate((Role.OPERATOR, Role.CUSTOMER)):
        kept = frames[: reference[role].size, channel]
        np.testing.assert_array_equal(kept, reference[role])
        assert not frames[reference[role].size :, channel].any()


def test_the_analysed_call_is_kept_trimmed_and_disguised(ran: tuple[Box, str, str]) -> None:
    box, _, _ = ran
    config = box.config
    reference = decoded_calls(config)[Policy.ANALYTICS]
    with box.vault() as vault:
        (record,) = [r for r in vault.list("analytics") if r.kind == "recording"]
        rate, frames, data = read_wav(vault.get(record.id))
    assert rate == config.speech.analysis_rate
    assert "part 0 starts 0.00 s" in comment(data)
    for channel, role in enumerate((Role.OPERATOR, Role.CUSTOMER)):
        original = reference[role].astype(np.float32) / 32768
        up = Resampler(8000, rate)
        original = np.concatenate([up.process(original), up.flush()])[up.delay :]
        kept = frames[:, channel].astype(np.float32) / 32768
        # no longer than what capture kept after the trim: nothing from before the cut
        assert kept.size <= original.size + rate * 0.02
        speech = np.flatnonzero(kept)
        assert speech.size > rate  # more than a second of speech was kept
        # the same words at the same places (loudness contours agree) ...
        assert correlation(envelope(kept), envelope(original[: kept.size])) > 0.7
        # ... but not the same signal: the voice is disguised
        a, b = kept[speech], original[speech]
        assert abs(correlation(a, b)) < 0.3, f"{role.value}: {correlation(a, b):.2f}"


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


def envelope(x: np.ndarray, window: int = 320) -> np.ndarray:
    """Mean absolute level over 20 ms blocks at 16 kHz."""
    blocks = x[: x.size // window * window].reshape(-1, window)
    return np.abs(blocks).mean(axis=1)


def test_nothing_identifying_in_vault_metadata_or_logs(ran: tuple[Box, str, str]) -> None:
    box, _, stderr = ran
    with box.vault() as vault:
        infos = [*vault.list("analytics"), *vault.list("contract")]
    for info in infos:
        metadata = {"kind": info.kind, "period": info.period, "phase": info.phase}
        assert scan(metadata, known=DEMO_IDENTITIES) == []
        assert "-W" in info.period  # an ISO week, never the day
        assert info.expires.weekday() == 0
    lines = [json.loads(line) for line in stderr.splitlines()]
    assert {line["event"] for line in lines} >= {"started", "stopped"}
    for line in lines:
        line.pop("timestamp")  # the log's own clock, as journald stamps every entry
        assert scan(line, known=DEMO_IDENTITIES) == [], line
