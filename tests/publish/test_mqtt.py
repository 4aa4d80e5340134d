"""Against a real Mosquitto: TLS client certificates, the ACL, QoS 1, the outbox, birth and will."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from structlog.testing import capture_logs

from gateway.publish.message import AGGREGATES_SCHEMA, key_fingerprint, signed_payload
from gateway.publish.outbox import OutboxFull
from gateway.publish.publisher import OUTBOX_FULL
from tests.aggregates.summaries import released_body
from tests.privacy_scan import scan
from tests.publish.broker import HOST, Authority, Broker, free_port
from tests.publish.clients import (
    Arrival,
    Collector,
    first_occurrences,
    start_feed,
    start_publisher,
    wait_until,
)
from tests.publish.schemas import validate

REPO = Path(__file__).resolve().parents[2]
ALL = "callveil/v1/+/+/#"


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def seqs(arrivals: list[Arrival], kind: str = "aggregates") -> list[int]:
    return [a.message()["seq"] for a in arrivals if a.topic.endswith(f"/{kind}")]


def check_every_payload(arrivals: list[Arrival]) -> None:
    for arrival in arrivals:
        validate(arrival.payload)
        assert scan(arrival.payload) == [], arrival.topic


def test_signed_aggregates_reach_the_feed(
    broker: Broker, providers: dict, keys_dir: Path, tmp_path: Path, stack: ExitStack
) -> None:
    watcher = stack.enter_context(Collector(broker, ALL, client_id="watch"))
    feed = stack.enter_context(start_feed(broker, keys_dir, tmp_path / "feed.db"))
    publisher = stack.enter_context(
        start_publisher(broker, providers["box-a"], tmp_path / "outbox.db")
    )
    assert publisher.wait_connected(5)
    bodies = [released_body(f"2026-03-0{day}", seed=day) for day in (1, 2, 3)]
    assert [publisher.publish(body) for body in bodies] == [1, 2, 3]
    assert publisher.wait_idle(10)
    assert wait_until(lambda: feed.outcomes["new"] == 3)
    merged = feed.merged("rome", "2026-03-02")
    assert merged is not None
    assert merged["calls_analysed"] == bodies[1]["calls_analysed"]
    assert merged["histograms"]["trend"]["counts"] == [
        c or 0 for c in bodies[1]["histograms"]["trend"]["counts"]
    ]
    assert watcher.wait_for(lambda a: seqs(a) == [1, 2, 3])
    (birth,) = [a.message() for a in watcher.snapshot() if a.topic.endswith("/status")]
    assert birth["body"]["state"] == "online"
    assert birth["body"]["key_fingerprint"] == key_fingerprint(providers["box-a"].public_key_pem())
    check_every_payload(watcher.snapshot())


def test_a_box_signing_with_the_tpm_is_verified_at_the_feed(
    broker: Broker, tpm: str, tmp_path: Path, stack: ExitStack
) -> None:
    import hashlib

    from gateway.seal.tpm import TpmKeyProvider
    from tests.seal.tpm_helpers import TEST_PCR

    provider = TpmKeyProvider(
        tpm, tmp_path / "tpm", measurement=hashlib.sha256(b"release").digest(), pcr=TEST_PCR
    )
    stack.callback(provider.close)
    keys = tmp_path / "boxes"
    keys.mkdir()
    (keys / "box-a.pem").write_bytes(provider.public_key_pem())
    feed = stack.enter_context(start_feed(broker, keys, tmp_path / "feed.db"))
    publisher = stack.enter_context(start_publisher(broker, provider, tmp_path / "outbox.db"))
    assert publisher.publish(released_body("2026-03-02")) == 1
    assert wait_until(lambda: feed.outcomes["new"] == 1 and feed.outcomes["status"] >= 1)
    assert feed.outcomes["refused"] == 0


def test_a_client_without_a_certificate_is_refused(broker: Broker) -> None:
    outcome: dict[str, object] = {}
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="no-cert")
    client.tls_set_context(broker.tls(None))
    client.on_connect = lambda _c, _u, _f, rc, _p: (outcome.setdefault("connack", rc), done.set())
    client.on_disconnect = lambda _c, _u, _f, rc, _p: (outcome.setdefault("closed", rc), done.set())
    try:
        client.connect(HOST, broker.port)
        client.loop_start()
        # with TLS 1.3 the refusal is a connection closed without CONNACK, never an exception
        assert done.wait(5)
    except OSError:
        outcome["closed"] = "handshake refused"  # TLS 1.2 refuses in the handshake itself
    finally:
        client.loop_stop()
    connack = outcome.get("connack")
    assert connack is None or connack.is_failure  # type: ignore[attr-defined]
    assert "closed" in outcome
    assert wait_until(lambda: "peer did not return a certificate" in broker.log(), 5)


def test_a_box_with_a_certificate_from_another_ca_never_connects(
    broker: Broker, providers: dict, tmp_path: Path, stack: ExitStack
) -> None:
    rogue = Authority(broker.root, "rogue-ca")
    cert, key = rogue.issue("box-a")
    tls = broker.tls(None)
    tls.load_cert_chain(str(cert), str(key))
    logs = stack.enter_context(capture_logs())
    publisher = stack.enter_context(
        start_publisher(broker, providers["box-a"], tmp_path / "outbox.db", tls=tls)
    )
    assert publisher.publish(released_body("2026-03-02")) == 1  # kept in the outbox
    assert not publisher.wait_connected(1.0)
    assert not publisher.wait_idle(0)
    assert any(e["event"] == "mqtt_closed_before_connack" for e in logs)


def test_a_box_cannot_publish_under_another_box(
    broker: Broker, providers: dict, keys_dir: Path, tmp_path: Path, stack: ExitStack
) -> None:
    watcher = stack.enter_context(Collector(broker, ALL, client_id="watch"))
    feed = stack.enter_context(start_feed(broker, keys_dir, tmp_path / "feed.db"))
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="box-b-raw")
    client.tls_set_context(broker.tls("box-b"))
    client.connect(HOST, broker.port)
    client.loop_start()
    stack.callback(client.loop_stop)
    stack.callback(client.disconnect)

    def signed(box: str, site: str) -> bytes:
        return signed_payload(
            AGGREGATES_SCHEMA,
            box=box,
            site=site,
            seq=1,
            body=released_body("2026-03-02"),
            sign=providers[box].sign,
        )

    # box-b replays a payload of box-a on box-a's topic, then publishes on its own topic
    forged = client.publish("callveil/v1/rome/box-a/aggregates", signed("box-a", "rome"), 1)
    forged.wait_for_publish(5)  # mosquitto acknowledges what its ACL then drops
    own = client.publish("callveil/v1/milan/box-b/aggregates", signed("box-b", "milan"), 1)
    own.wait_for_publish(5)
    assert watcher.wait_for(lambda a: len(a) >= 1)
    assert wait_until(lambda: sum(feed.outcomes.values()) >= 1)
    assert [a.topic for a in watcher.snapshot()] == ["callveil/v1/milan/box-b/aggregates"]
    # and the feed refuses box-b, which is not registered with it
    assert feed.outcomes == {"refused": 1}


def test_a_broker_restart_mid_publishing_loses_nothing(
    broker: Broker, providers: dict, keys_dir: Path, tmp_path: Path, stack: ExitStack
) -> None:
    count = 30
    watcher = stack.enter_context(Collector(broker, ALL, client_id="watch"))
    feed = stack.enter_context(start_feed(broker, keys_dir, tmp_path / "feed.db"))
    publisher = stack.enter_context(
        start_publisher(broker, providers["box-a"], tmp_path / "outbox.db")
    )
    assert publisher.wait_connected(5)
    bodies = [released_body(f"2026-01-{day:02d}", seed=day) for day in range(1, count + 1)]
    for body in bodies[:12]:
        publisher.publish(body)
    broker.stop()  # some of those are on the wire or waiting for their PUBACK
    for body in bodies[12:20]:
        publisher.publish(body)
    broker.start()
    for body in bodies[20:]:
        publisher.publish(body)
    assert publisher.wait_idle(20)
    assert wait_until(lambda: feed.outcomes["new"] == count, 20), feed.outcomes
    assert feed.missing("box-a") == ()
    assert watcher.wait_for(lambda a: set(seqs(a)) == set(range(1, count + 1)), 20)
    arrived = seqs(watcher.snapshot())
    assert first_occurrences(arrived) == list(range(1, count + 1))  # in order
    duplicates = len(arrived) - count
    assert feed.outcomes["duplicate"] >= 0 and duplicates >= 0
    check_every_payload(watcher.snapshot())


class BoxProcess:
    """``tests.publish.box_process`` in a subprocess, commanded over stdin."""

    def __init__(self, broker: Broker, signing_key: Path, outbox: Path, port: int) -> None:
        cert, key = broker.certs["box-a"]
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "tests.publish.box_process",
                "--host", HOST, "--port", str(port), "--ca", str(broker.ca.ca_file),
                "--cert", str(cert), "--key", str(key), "--signing-key", str(signing_key),
                "--outbox", str(outbox), "--box", "box-a",
            ],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )  # fmt: skip
        assert self.read() == "started"

    def read(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def send(self, command: str, replies: int) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return [self.read() for _ in range(replies)]

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            self.proc.wait(timeout=15)


def test_a_killed_publisher_delivers_everything_in_order_after_restart(
    broker: Broker, box_key_files: dict, keys_dir: Path, tmp_path: Path, stack: ExitStack
) -> None:
    watcher = stack.enter_context(Collector(broker, ALL, client_id="watch"))
    feed = stack.enter_context(start_feed(broker, keys_dir, tmp_path / "feed.db"))
    outbox = tmp_path / "outbox.db"
    first = BoxProcess(broker, box_key_files["box-a"], outbox, broker.port)
    assert first.send("publish 0 3", 3) == ["queued 1", "queued 2", "queued 3"]
    assert first.send("idle", 1) == ["idle"]
    broker.stop()
    assert first.send("publish 3 5", 5) == [f"queued {n}" for n in range(4, 9)]
    first.kill()  # five payloads on disk, never sent
    broker.start()
    second = BoxProcess(broker, box_key_files["box-a"], outbox, broker.port)
    stack.callback(second.close)
    assert second.send("publish 8 2", 2) == ["queued 9", "queued 10"]
    assert second.send("idle", 1) == ["idle"]
    assert wait_until(lambda: feed.outcomes["new"] == 10, 15), feed.outcomes
    assert watcher.wait_for(lambda a: set(seqs(a)) == set(range(1, 11)))
    assert first_occurrences(seqs(watcher.snapshot())) == list(range(1, 11))
    assert feed.missing("box-a") == ()
    check_every_payload(watcher.snapshot())


def test_birth_is_retained_and_the_last_will_announces_a_dead_box(
    broker: Broker, box_key_files: dict, tmp_path: Path, stack: ExitStack
) -> None:
    status = "callveil/v1/rome/box-a/status"
    watcher = stack.enter_context(Collector(broker, status, client_id="watch"))
    box = BoxProcess(broker, box_key_files["box-a"], tmp_path / "outbox.db", broker.port)
    stack.callback(box.close)
    assert watcher.wait_for(lambda a: len(a) == 1)
    birth = watcher.snapshot()[0].message()
    assert birth["body"]["state"] == "online"
    late = stack.enter_context(Collector(broker, status, client_id="late", persistent=False))
    assert late.wait_for(lambda a: len(a) == 1)
    assert late.snapshot()[0].retain and late.snapshot()[0].message() == birth
    box.kill()
    assert watcher.wait_for(lambda a: len(a) == 2)
    death = watcher.snapshot()[1].message()
    assert death["body"]["state"] == "offline"
    assert death["seq"] == birth["seq"]  # the will of the connection that was born
    # a box that restarts is born again with a newer session
    again = BoxProcess(broker, box_key_files["box-a"], tmp_path / "outbox.db", broker.port)
    stack.callback(again.close)
    assert watcher.wait_for(lambda a: len(a) == 3)
    rebirth = watcher.snapshot()[2].message()
    assert rebirth["body"]["state"] == "online" and rebirth["seq"] > birth["seq"]
    again.close()  # a clean shutdown says offline itself
    assert watcher.wait_for(lambda a: len(a) == 4)
    assert watcher.snapshot()[3].message()["body"]["state"] == "offline"
    check_every_payload(watcher.snapshot())


def test_a_full_outbox_raises_the_alarm_and_loses_nothing(
    broker: Broker, providers: dict, keys_dir: Path, tmp_path: Path, stack: ExitStack
) -> None:
    watcher = stack.enter_context(Collector(broker, ALL, client_id="watch"))
    feed = stack.enter_context(start_feed(broker, keys_dir, tmp_path / "feed.db"))
    broker.stop()
    publisher = stack.enter_context(
        start_publisher(broker, providers["box-a"], tmp_path / "outbox.db", outbox_max_entries=3)
    )
    bodies = [released_body(f"2026-01-0{day}", seed=day) for day in range(1, 5)]
    for body in bodies[:3]:
        publisher.publish(body)
    with capture_logs() as logs, pytest.raises(OutboxFull):
        publisher.publish(bodies[3])
    assert any(e["event"] == "outbox_full" and e["log_level"] == "error" for e in logs)
    assert publisher.alarms == {OUTBOX_FULL}
    broker.start()
    assert publisher.wait_idle(15)
    assert wait_until(lambda: not publisher.alarms)
    assert publisher.publish(bodies[3]) == 4  # offered again once there is room
    assert publisher.wait_idle(10)
    assert wait_until(lambda: feed.outcomes["new"] == 4, 15), feed.outcomes
    assert wait_until(lambda: _statuses(watcher) >= 2)
    statuses = [a.message()["body"] for a in watcher.snapshot() if a.topic.endswith("/status")]
    assert statuses[0]["alarms"] == [OUTBOX_FULL]  # the birth after the outage says so
    assert statuses[-1]["alarms"] == []  # and the alarm is lifted once the outbox drained
    check_every_payload(watcher.snapshot())


def _statuses(watcher: Collector) -> int:
    return sum(a.topic.endswith("/status") for a in watcher.snapshot())


def test_the_box_id_is_never_an_address(providers: dict, tmp_path: Path) -> None:
    from gateway.publish.publisher import Broker as Address
    from gateway.publish.publisher import Publisher

    for bad in ("10.0.0.7", "box/a", "+", "#", ""):
        with pytest.raises(ValueError, match="box id"):
            Publisher(
                Address(HOST, free_port(), tls=None),  # type: ignore[arg-type]
                providers["box-a"],
                site="rome",
                box=bad,
                outbox_path=tmp_path / "outbox.db",
            )
