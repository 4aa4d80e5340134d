"""The feed: subscribes to every box, verifies, tracks sequence numbers and merges buckets.

It keeps a persistent MQTT session (``clean_session`` off, a fixed client id), so a broker
with persistence holds the boxes' payloads while the feed is away and hands them over when it
returns. Each payload is handled idempotently: a replay (a sequence number already seen)
changes nothing in the merged data, and gaps are logged until the missing payloads arrive.
"""

from __future__ import annotations

import sqlite3
import ssl
import threading
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from gateway.closing import Closing
from gateway.feed.store import FeedStore
from gateway.feed.verify import KeyRing, Refused, verify
from gateway.publish import topics

log = structlog.get_logger(__name__)

_LOGGED_MISSING = 20


class Feed(Closing):
    """Receives from the broker at ``host``:``port`` into ``store``; ``start()`` it."""

    def __init__(
        self,
        keys: KeyRing,
        store: FeedStore,
        *,
        host: str,
        port: int,
        tls: ssl.SSLContext,
        client_id: str = "callveil-feed",
        reconnect_max_s: float = 30.0,
    ) -> None:
        self._keys = keys
        self._store = store
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self._client.tls_set_context(tls)
        self._client.reconnect_delay_set(min_delay=1, max_delay=int(reconnect_max_s))
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message

    def start(self) -> Feed:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        return self

    def wait_subscribed(self, timeout: float) -> bool:
        return self._subscribed.wait(timeout)

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("feed_refused_by_broker", reason=str(reason))
            return
        log.info("feed_connected")
        client.subscribe([(topics.AGGREGATES_FILTER, 1), (topics.STATUS_FILTER, 1)])

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._subscribed.clear()
        (log.warning if reason.is_failure else log.info)("feed_disconnected", reason=str(reason))

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self.handle(message.topic, message.payload)
        except (sqlite3.Error, OSError) as exc:
            # the feed keeps running; the payload's sequence number stays missing, so the
            # gap is reported and closes when the box's replay arrives
            log.error("payload_not_stored", topic=message.topic, reason=str(exc))

    def handle(self, topic: str, payload: bytes) -> str:
        """Process one payload; return what became of it (also counted in ``outcomes``)."""
        with self._lock:
            outcome = self._handle(topic, payload)
        self.outcomes[outcome] += 1
        return outcome

    def _handle(self, topic: str, payload: bytes) -> str:
        try:
            received = verify(self._keys, topic, payload)
        except Refused as exc:
            log.warning("payload_refused", topic=topic, reason=str(exc))
            return "refused"
        if received.kind == topics.STATUS:
            self._store.set_status(received)
            log.info("box_status", box=received.box, state=received.body.get("state"))
            return "status"
        try:
            stored = self._store.add_bucket(received)
        except ValueError as exc:
            log.warning("payload_refused", topic=topic, reason=f"malformed body: {exc}")
            return "refused"
        # counted only once stored, so a payload that failed to store shows up as a gap
        seq = self._store.record_seq(received.box, received.seq)
        if seq.duplicate:
            log.info("payload_replayed", box=received.box, seq=received.seq)
        elif seq.filled_gap:
            log.info("sequence_gap_filled", box=received.box, seq=received.seq)
        if seq.missing and not seq.duplicate:
            log.warning(
                "sequence_gap",
                box=received.box,
                missing=list(seq.missing[:_LOGGED_MISSING]),
                missing_count=len(seq.missing),
            )
        if stored == "conflict":
            log.error(
                "bucket_conflict",
                box=received.box,
                period=received.body["period"],
                hint="the box published two different bodies for one bucket; the first is kept",
            )
        return "duplicate" if seq.duplicate or stored == "duplicate" else stored

    def merged(self, site: str, period: str, queue: str | None = None) -> dict[str, Any] | None:
        with self._lock:
            return self._store.merged(site, period, queue)

    def missing(self, box: str) -> tuple[int, ...]:
        with self._lock:
            return self._store.missing(box)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
