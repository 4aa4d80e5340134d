"""The feed's handling of payloads: verification, sequence bookkeeping, exact merging, CSV."""

from __future__ import annotations

import csv
import json
import sqlite3
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from gateway.aggregates.bucket import merge
from gateway.aggregates.release import release
from gateway.config import ConfigError
from gateway.feed.service import Feed
from gateway.feed.store import FeedStore
from gateway.feed.verify import KeyRing
from gateway.publish.message import AGGREGATES_SCHEMA, STATUS_SCHEMA, signed_payload
from gateway.seal.softkey import SoftwareKeyProvider
from tests.aggregates.summaries import bucket_of_calls, released_body, seeded_summaries

TOPIC_A = "callveil/v1/rome/box-a/aggregates"
TOPIC_C = "callveil/v1/rome/box-c/aggregates"


@pytest.fixture(scope="module")
def provider_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("feed-keys")
    files = {box: root / f"{box}.key" for box in ("box-a", "box-c", "intruder")}
    for path in files.values():
        SoftwareKeyProvider(path, b"feed tests", scrypt_n=2**14)
    return files


@pytest.fixture(scope="module")
def providers(provider_files: dict[str, Path]) -> dict[str, SoftwareKeyProvider]:
    return {
        box: SoftwareKeyProvider(path, b"feed tests", scrypt_n=2**14)
        for box, path in provider_files.items()
    }


@pytest.fixture
def feed(tmp_path: Path, providers: dict[str, SoftwareKeyProvider]) -> Iterator[Feed]:
    keys = tmp_path / "boxes"
    keys.mkdir()
    for box in ("box-a", "box-c"):
        (keys / f"{box}.pem").write_bytes(providers[box].public_key_pem())
    store = FeedStore(tmp_path / "feed.db", csv_path=tmp_path / "merged.csv")
    feed = Feed(KeyRing(keys), store, host="127.0.0.1", port=1, tls=ssl.create_default_context())
    yield feed
    store.close()


def payload(provider: SoftwareKeyProvider, box: str, seq: int, body: dict) -> bytes:
    return signed_payload(
        AGGREGATES_SCHEMA, box=box, site="rome", seq=seq, body=body, sign=provider.sign
    )


def test_two_boxes_merge_into_one_exact_bucket(feed: Feed, providers: dict, tmp_path: Path) -> None:
    calls_a, calls_c = seeded_summaries(40, seed=1), seeded_summaries(55, seed=2)
    bodies = {
        box: release(
            bucket_of_calls(calls, seen=10 * len(calls)),
            period="2026-03-02",
            queue=None,
            k=1,
            epsilon=None,
        )
        for box, calls in (("box-a", calls_a), ("box-c", calls_c))
    }
    assert feed.handle(TOPIC_A, payload(providers["box-a"], "box-a", 1, bodies["box-a"])) == "new"
    assert feed.handle(TOPIC_C, payload(providers["box-c"], "box-c", 1, bodies["box-c"])) == "new"
    merged = feed.merged("rome", "2026-03-02")
    assert merged is not None
    whole = merge(bucket_of_calls(calls_a, 400), bucket_of_calls(calls_c, 550))
    assert (merged["calls_seen"], merged["calls_analysed"]) == (950, 95)
    assert merged["boxes"] == 2 and merged["suppressed_boxes"] == 0
    for name, hist in whole.histograms.items():
        assert tuple(merged["histograms"][name]["counts"]) == hist.counts
    with (tmp_path / "merged.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    seen = next(r for r in rows if r["histogram"] == "calls" and r["label"] == "seen")
    assert seen["count"] == "950"
    rates = sqlite3.connect(tmp_path / "feed.db").execute("SELECT * FROM rates").fetchall()
    none = whole.histograms["tension"].counts[0]
    assert rates == [("rome", "", "2026-03-02", 95 / 950, 1 - none / 95, 0)]


def test_replays_and_gaps_are_recognised_by_sequence_number(feed: Feed, providers: dict) -> None:
    a = providers["box-a"]
    first = payload(a, "box-a", 1, released_body("2026-03-02", seed=1))
    assert feed.handle(TOPIC_A, first) == "new"
    with capture_logs() as logs:
        assert feed.handle(TOPIC_A, payload(a, "box-a", 3, released_body("2026-03-04"))) == "new"
    gap = next(e for e in logs if e["event"] == "sequence_gap")
    assert gap["missing"] == [2] and gap["box"] == "box-a"
    assert feed.missing("box-a") == (2,)
    assert feed.handle(TOPIC_A, payload(a, "box-a", 2, released_body("2026-03-03"))) == "new"
    assert feed.missing("box-a") == ()
    assert feed.handle(TOPIC_A, first) == "duplicate"
    merged = feed.merged("rome", "2026-03-02")
    assert merged is not None and merged["boxes"] == 1  # the replay changed nothing
    # the same bucket re-released under a new number (a crash between aggregator and outbox)
    assert feed.handle(TOPIC_A, payload(a, "box-a", 4, released_body("2026-03-02", seed=1))) == (
        "duplicate"
    )
    with capture_logs() as logs:
        other = payload(a, "box-a", 5, released_body("2026-03-02", seed=9))
        assert feed.handle(TOPIC_A, other) == "conflict"
    assert [e["event"] for e in logs if e["log_level"] == "error"] == ["bucket_conflict"]


def _alter(raw: bytes) -> bytes:
    message = json.loads(raw)
    message["body"]["calls_seen"] += 1
    return json.dumps(message, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: _alter(payload(p["box-a"], "box-a", 1, released_body("2026-03-02"))),
         "signature does not verify"),
        (lambda p: payload(p["intruder"], "box-a", 1, released_body("2026-03-02")),
         "signature does not verify"),
        (lambda p: payload(p["box-a"], "box-a", 1, released_body("2026-03-02")) + b" ",
         "canonical"),
        (lambda p: payload(p["box-a"], "box-c", 1, released_body("2026-03-02")),
         "differs from its topic"),
        (lambda p: b"\xff\xfe", "not JSON"),
        (lambda p: signed_payload(STATUS_SCHEMA, box="box-a", site="rome", seq=1,
                                  body={}, sign=p["box-a"].sign),
         "does not belong"),
    ],
)  # fmt: skip
def test_bad_payloads_are_refused_and_logged(
    feed: Feed, providers: dict, make: object, reason: str
) -> None:
    with capture_logs() as logs:
        assert feed.handle(TOPIC_A, make(providers)) == "refused"  # type: ignore[operator]
    (event,) = [e for e in logs if e["event"] == "payload_refused"]
    assert reason in event["reason"]
    assert feed.merged("rome", "2026-03-02") is None


def test_an_unknown_box_is_refused_until_it_is_registered(
    feed: Feed, providers: dict, tmp_path: Path
) -> None:
    raw = signed_payload(
        AGGREGATES_SCHEMA,
        box="box-x",
        site="rome",
        seq=1,
        body=released_body("2026-03-02"),
        sign=providers["intruder"].sign,
    )
    topic = "callveil/v1/rome/box-x/aggregates"
    with capture_logs() as logs:
        assert feed.handle(topic, raw) == "refused"
    assert "not registered" in logs[-1]["reason"]
    (tmp_path / "boxes" / "box-x.pem").write_bytes(providers["intruder"].public_key_pem())
    assert feed.handle(topic, raw) == "new"


def test_status_keeps_the_latest_session(feed: Feed, providers: dict, tmp_path: Path) -> None:
    def status(seq: int, state: str) -> bytes:
        body = {"state": state, "release": "0.1.0", "key_fingerprint": "0" * 64, "alarms": []}
        return signed_payload(
            STATUS_SCHEMA, box="box-a", site="rome", seq=seq, body=body,
            sign=providers["box-a"].sign,
        )  # fmt: skip

    topic = "callveil/v1/rome/box-a/status"
    for seq, state in ((2, "online"), (2, "offline"), (1, "online")):  # a stale one comes last
        assert feed.handle(topic, status(seq, state)) == "status"
    rows = sqlite3.connect(tmp_path / "feed.db").execute("SELECT box, state, session FROM status")
    assert rows.fetchall() == [("box-a", "offline", 2)]


def test_a_key_directory_with_a_bad_key_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "box-a.pem").write_text("not a key")
    with pytest.raises(ConfigError, match=r"box-a\.pem: not a usable box key"):
        KeyRing(tmp_path)
    with pytest.raises(ConfigError, match="is not a directory"):
        KeyRing(tmp_path / "absent")


def test_the_feed_runs_without_the_box_side_parts() -> None:
    code = (
        "import sys, gateway.feed.command; print(sorted(m for m in sys.modules if m.startswith("
        "('numpy', 'tpm2_pytss', 'gateway.seal', 'gateway.capture', 'gateway.vault', "
        "'gateway.dsp', 'gateway.models', 'gateway.callsummary', 'opendp'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
