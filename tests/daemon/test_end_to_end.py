"""The demo capture through the whole chain on real parts: swtpm, Mosquitto with TLS and an
ACL, the daemon twice (today, then "tomorrow" under faketime, when today's bucket closes), and
a subscriber at the centre. Every payload, log line and vault record's metadata is scanned
for anything that identifies a call or a person."""

from __future__ import annotations

import json
from pathlib import Path

from gateway.feed.verify import KeyRing, verify
from gateway.publish.topics import AGGREGATES, STATUS, topic
from tests.daemon.boxes import (
    BOX,
    DEMO_PCAP,
    Box,
    demo_box,
    mqtt_section,
    sip_identities,
    tomorrow_env,
    tpm_section,
)
from tests.privacy_scan import scan
from tests.publish.broker import Broker
from tests.publish.clients import Collector


def demo_identities() -> list[str]:
    """Call-IDs, tags, users and addresses as they appear in the demo's SIP messages."""
    found = sip_identities(DEMO_PCAP.read_bytes().decode("latin-1"))
    assert len(found) >= 6, found
    return found


def box_with(tmp_path: Path, broker: Broker, tcti: str) -> Box:
    return demo_box(
        tmp_path / "box",
        {
            "keys": tpm_section(tcti),
            "mqtt": mqtt_section(broker),
            "aggregates": 'state_path = "state/aggregates.db"\nk = 2',
        },
    )


def test_demo_through_the_whole_chain_publishes_nothing_identifying(
    tmp_path: Path, broker: Broker, tcti: str
) -> None:
    box = box_with(tmp_path, broker, tcti)
    known = demo_identities()

    # twice today: two analysed calls reach k = 2, so the bucket is published with counts
    runs = [box.run("--pcap", str(DEMO_PCAP)) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    keys = tmp_path / "keys"
    keys.mkdir()
    registered = box.attest("signing-key", "--out", str(keys / f"{BOX}.pem"))
    assert registered.returncode == 0, registered.stderr

    with Collector(broker, "callveil/v1/#", client_id="centre") as centre:
        runs.append(box.run("--pcap", str(DEMO_PCAP), env=tomorrow_env()))
        assert runs[-1].returncode == 0, runs[-1].stderr
        aggregates = topic("demo", BOX, AGGREGATES)
        assert centre.wait_for(lambda got: any(a.topic == aggregates for a in got), 30)
        arrivals = centre.snapshot()

    ring = KeyRing(keys)
    (published,) = [a for a in arrivals if a.topic == aggregates]
    received = verify(ring, published.topic, published.payload)
    body = received.body
    assert (body["calls_seen"], body["calls_analysed"]) == (4, 2)  # yesterday's calls
    assert {a.topic for a in arrivals} <= {aggregates, topic("demo", BOX, STATUS)}
    for arrival in arrivals:
        assert scan(arrival.payload, known=known) == [], arrival.topic

    for run in runs:
        for line in run.stderr.splitlines():
            entry = json.loads(line)
            entry.pop("timestamp")  # the log's own clock, as journald stamps every entry
            assert scan(entry, known=known) == [], entry
    with box.vault() as vault:
        infos = [*vault.list("analytics"), *vault.list("contract")]
        assert len(infos) == 9  # three runs of three records
        for info in infos:
            assert scan({"period": info.period, "kind": info.kind}, known=known) == []
            assert "-W" in info.period
