"""``callveil run --pcap`` on calls whose INVITEs name a queue: buckets per queue, for analysed,
contract and unsampled calls alike, and no header value off the allow-list in any output."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.aggregates.aggregator import Aggregator
from gateway.aggregates.bucket import from_state
from gateway.capture.pcapwriter import PcapWriter, udp_frame
from gateway.seal.sampling_key import SamplingKey
from tests.capture.packet_helpers import sip_call
from tests.daemon.boxes import Box, demo_box, sip_identities
from tests.privacy_scan import scan

TRUNK, PBX = "198.51.100.7", "192.0.2.10"  # the demo configuration's customer and operator sides
SAMPLE_RATE = 0.5
OFF_LIST = "vip-mario-rossi"  # a queue header value that is not a configured label
K = 2
# per call: its policy ("analysed", "dropped" by sampling, or "contract") and its INVITE's
# extra headers; the comment names the bucket it must count in
CALLS: list[tuple[str, list[tuple[str, str]]]] = [
    ("analysed", [("X-Queue", "billing")]),  # billing
    ("analysed", [("X-Queue", " Billing ")]),  # billing
    ("dropped", [("X-Queue", "billing"), ("X-Queue", "billing")]),  # billing
    ("contract", [("X-Queue", "BILLING"), ("X-Contract", "conclude")]),  # billing
    ("analysed", [("X-Queue", "support")]),  # support
    ("dropped", [("X-Queue", "support")]),  # support
    ("analysed", [("X-Queue", OFF_LIST)]),  # the site
    ("analysed", [("X-Queue", "billing, support")]),  # the site: two queues named
    ("dropped", []),  # the site
]
# (calls seen, calls analysed) per bucket; '' is the site's
EXPECTED = {"billing": (4, 2), "support": (2, 1), "": (3, 2)}


def call_ids(key: SamplingKey) -> list[str]:
    """A Call-ID per entry of CALLS that the box's sampling key analyses or drops as listed."""
    candidates = (f"{n:04d}-queue-test@{TRUNK}" for n in itertools.count())
    sampled = (c for c in candidates if key.fraction(c.encode()) < SAMPLE_RATE)
    others = (f"{n:04d}-queue-rest@{TRUNK}" for n in itertools.count())
    unsampled = (c for c in others if key.fraction(c.encode()) >= SAMPLE_RATE)
    return [next(unsampled) if policy == "dropped" else next(sampled) for policy, _ in CALLS]


def write_capture(path: Path, ids: list[str]) -> str:
    """The calls of CALLS one after the other, SIP over UDP; returns the SIP text written."""
    ts, text = 1_700_000_000.0, ""
    with PcapWriter(path) as pcap:
        for call_id, (_, headers) in zip(ids, CALLS, strict=True):
            for from_caller, message in sip_call(call_id, TRUNK, PBX, headers):
                src, dst = (TRUNK, PBX) if from_caller else (PBX, TRUNK)
                ts += 0.2
                pcap.write(ts, udp_frame(src, 5060, dst, 5060, message))
                text += message.decode()
    return text


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Box, str, str, str]:
    root = tmp_path_factory.mktemp("queues-box")
    box = demo_box(
        root,
        {
            "privacy": f'sample_rate = {SAMPLE_RATE}\nsampling_key_file = "state/sampling.key"',
            "queues": 'header = "X-Queue"\nlabels = ["billing", "support", "sales"]',
            "aggregates": f'state_path = "state/aggregates.db"\nk = {K}',
        },
    )
    key = SamplingKey.load_or_create(Path(box.config.privacy.sampling_key_file))
    capture = root / "queues.pcap"
    sip = write_capture(capture, call_ids(key))
    result = box.run("--pcap", str(capture))
    assert result.returncode == 0, result.stderr
    return box, sip, result.stdout, result.stderr


def test_every_call_counts_in_its_queue_bucket(ran: tuple[Box, str, str, str]) -> None:
    box, _, stdout, _ = ran
    assert "9: 5 analysed, 1 contract, 3 not sampled" in stdout
    assert "9 calls counted" in stdout
    with sqlite3.connect(box.config.aggregates.state_path) as db:
        rows = db.execute("SELECT queue, state FROM open_buckets").fetchall()
    buckets = {queue: from_state(json.loads(state)) for queue, state in rows}
    assert {q: (b.calls_seen, b.calls_analysed) for q, b in buckets.items()} == EXPECTED


def released(box: Box, workdir: Path) -> list[dict[str, Any]]:
    """The bodies a copy of the box's buckets is published as once today has passed."""
    config = box.config
    copy = workdir / "aggregates.db"
    with sqlite3.connect(config.aggregates.state_path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    aggregator = Aggregator(
        copy,
        topics=sorted(config.keywords.topics),
        k=config.aggregates.k,
        clock=lambda: dt.date.today() + dt.timedelta(days=2),
    )
    bodies: list[dict[str, Any]] = []
    with aggregator:
        aggregator.tick(bodies.append)
    return bodies


def test_released_per_queue_with_small_queues_withheld_and_nothing_off_the_list(
    ran: tuple[Box, str, str, str], tmp_path: Path
) -> None:
    box, sip, stdout, stderr = ran
    bodies = {body["queue"]: body for body in released(box, tmp_path)}
    assert set(bodies) == {"billing", "support", None}
    assert (bodies["billing"]["calls_seen"], bodies["billing"]["calls_analysed"]) == (4, 2)
    assert (bodies[None]["calls_seen"], bodies[None]["calls_analysed"]) == (3, 2)
    assert bodies["support"]["suppressed"]  # one analysed call is fewer than k
    assert bodies["support"]["calls_seen"] is None

    # the helper's tags and users ("a1", "100") are too short to tell apart from counts
    known = [OFF_LIST, *(i for i in sip_identities(sip) if len(i) >= 6)]
    for body in bodies.values():
        assert scan({"body": body}, known=known) == [], body  # as a payload carries it
    assert OFF_LIST not in stdout + stderr
    for line in stderr.splitlines():
        entry = json.loads(line)
        entry.pop("timestamp")  # the log's own clock, as journald stamps every entry
        assert scan(entry, known=known) == [], entry
    state = Path(box.config.aggregates.state_path)
    for path in state.parent.glob(f"{state.name}*"):  # the database, its WAL and index
        assert OFF_LIST.encode() not in path.read_bytes(), path.name
