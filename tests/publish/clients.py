"""Test-side MQTT parts: a raw subscriber that records arrivals, and publisher/feed builders."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from gateway.closing import Closing
from gateway.feed.service import Feed
from gateway.feed.store import FeedStore
from gateway.feed.verify import KeyRing
from gateway.publish.publisher import Broker as BrokerAddress
from gateway.publish.publisher import Publisher
from gateway.seal.keyprovider import KeyProvider
from tests.publish.broker import HOST, Broker
from tests.publish.conftest import SITES


@dataclass(frozen=True, slots=True)
class Arrival:
    topic: str
    payload: bytes
    retain: bool

    def message(self) -> dict[str, Any]:
        return json.loads(self.payload)


class Collector(Closing):
    """A plain subscriber (the feed's certificate) keeping every arrival in order."""

    def __init__(self, broker: Broker, topic: str, *, client_id: str, persistent: bool = True):
        self.arrivals: list[Arrival] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent
        )
        self._client.tls_set_context(broker.tls("feed"))
        self._client.reconnect_delay_set(1, 2)
        self._client.on_connect = lambda c, *_: c.subscribe(topic, 1)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(HOST, broker.port)
        self._client.loop_start()
        assert self._subscribed.wait(5), "the collector could not subscribe"

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.arrivals.append(Arrival(message.topic, message.payload, message.retain))

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def wait_for(self, predicate: Callable[[list[Arrival]], bool], timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self.snapshot()):
                return True
            time.sleep(0.02)
        return predicate(self.snapshot())

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def start_publisher(
    broker: Broker,
    provider: KeyProvider,
    outbox: Path,
    *,
    box: str = "box-a",
    tls: ssl.SSLContext | None = None,
    **limits: int,
) -> Publisher:
    address = BrokerAddress(HOST, broker.port, tls or broker.tls(box), reconnect_max_s=0.5)
    return Publisher(
        address, provider, site=SITES[box], box=box, outbox_path=outbox, **limits
    ).start()


def start_feed(broker: Broker, keys_dir: Path, db: Path, *, client_id: str = "feed-1") -> Feed:
    feed = Feed(
        KeyRing(keys_dir),
        FeedStore(db),
        host=HOST,
        port=broker.port,
        tls=broker.tls("feed"),
        client_id=client_id,
        reconnect_max_s=2,
    ).start()
    assert feed.wait_subscribed(5), "the feed could not subscribe"
    return feed


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def first_occurrences(seqs: list[int]) -> list[int]:
    """``seqs`` without repeats, in order of first arrival."""
    seen: set[int] = set()
    return [s for s in seqs if not (s in seen or seen.add(s))]
