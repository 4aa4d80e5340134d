"""The MQTT publisher: signed aggregates out of the outbox, birth and last-will status.

One worker thread owns the paho client (driven with ``loop()``) and the outbox, so neither is
shared between threads. ``publish`` hands a body to that thread and returns once the signed
payload is committed to the outbox; the thread sends outbox entries in sequence order at
QoS 1 and removes each on its PUBACK. Within one process paho re-sends unacknowledged
messages after a reconnect; after a restart everything still in the outbox is sent again.
Either way the receiver may see a payload twice and recognises it by its sequence number.

In the manner of Sparkplug's birth and death certificates, every connection gets a new
session number: the last will (retained "offline") is set with it before connecting, and the
birth (retained "online", with the release and the signing key's fingerprint) is published
with it on CONNACK. Neither carries a time.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from gateway import __version__
from gateway.aggregates.labels import check_label
from gateway.closing import Closing
from gateway.config import Config, ConfigError
from gateway.publish.message import (
    AGGREGATES_SCHEMA,
    STATUS_SCHEMA,
    key_fingerprint,
    signed_payload,
)
from gateway.publish.outbox import Outbox, OutboxFull
from gateway.publish.tls import client_context
from gateway.publish.topics import AGGREGATES, STATUS, topic
from gateway.seal.keyprovider import KeyProvider

log = structlog.get_logger(__name__)

OUTBOX_FULL = "outbox_full"
_FIRST_RETRY_S = 0.1
_HANDED_AHEAD = 100  # outbox entries given to paho and not yet acknowledged, at most
_GOODBYE_WAIT_S = 2.0


@dataclass(frozen=True, slots=True)
class Broker:
    host: str
    port: int
    tls: ssl.SSLContext
    keepalive: int = 60
    reconnect_max_s: float = 60.0


class Publisher(Closing):
    """Publishes this box's aggregates and status; ``start()`` it, ``close()`` it."""

    def __init__(
        self,
        broker: Broker,
        provider: KeyProvider,
        *,
        site: str,
        box: str,
        outbox_path: Path,
        outbox_max_entries: int = 10_000,
        outbox_max_bytes: int = 64 * 2**20,
    ) -> None:
        self._broker = broker
        self._sign = provider.sign
        self._fingerprint = key_fingerprint(provider.public_key_pem())
        self._site = check_label(site, "site")
        self._box = check_label(box, "box id")
        self._outbox_args = (outbox_path, outbox_max_entries, outbox_max_bytes)
        self._requests: queue.SimpleQueue[tuple[Mapping[str, Any], Future[int]]] = (
            queue.SimpleQueue()
        )
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._alarms: frozenset[str] = frozenset()  # replaced whole: read from other threads
        self._refused_bytes = 0
        self._session = 0
        self._inflight: dict[int, int] = {}  # paho message id -> outbox sequence number
        self._handed = 0  # highest sequence number given to paho by this process
        self._awaiting_connack = False

    # -- the caller's side ------------------------------------------------------------------

    def start(self) -> Publisher:
        """Open the outbox and start the worker; raise what opening the outbox raised."""
        if self._thread is not None:
            raise RuntimeError("the publisher is already started")
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="callveil-publisher", daemon=True
        )
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread = None
            raise
        return self

    def publish(self, body: Mapping[str, Any], timeout: float = 60.0) -> int:
        """Sign ``body`` as an aggregates payload and queue it; return its sequence number.

        Returns once the payload is on disk. Raises OutboxFull when the outbox is at its limit.
        """
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the publisher is not running; start() it first")
        done: Future[int] = Future()
        self._requests.put((body, done))
        return done.result(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def alarms(self) -> frozenset[str]:
        return self._alarms

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the broker has acknowledged everything in the outbox."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        """Say "offline" (retained), disconnect cleanly and stop the worker."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_GOODBYE_WAIT_S + 10)
            self._thread = None

    # -- the worker thread --------------------------------------------------------------------

    def _run(self, ready: Future[None]) -> None:
        try:
            path, max_entries, max_bytes = self._outbox_args
            outbox = Outbox(path, max_entries=max_entries, max_bytes=max_bytes)
        except BaseException as exc:
            ready.set_exception(exc)
            return
        client = self._client(outbox)
        ready.set_result(None)
        try:
            self._loop(client, outbox)
            self._goodbye(client)
        finally:
            outbox.close()
            while not self._requests.empty():  # asked for while closing: say so, not hang
                _, done = self._requests.get_nowait()
                done.set_exception(RuntimeError("the publisher closed before taking the payload"))

    def _client(self, outbox: Outbox) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"callveil-{self._box}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        client.tls_set_context(self._broker.tls)
        client.max_queued_messages_set(0)  # bounded by the outbox, not by paho
        client.on_connect = lambda c, _u, _f, rc, _p: self._on_connect(c, rc)
        client.on_disconnect = lambda _c, _u, _f, rc, _p: self._on_disconnect(rc)
        client.on_publish = lambda c, _u, mid, _rc, _p: self._on_publish(c, outbox, mid)
        return client

    def _status(self, state: str) -> bytes:
        body = {
            "state": state,
            "release": __version__,
            "key_fingerprint": self._fingerprint,
            "alarms": sorted(self._alarms),
        }
        return signed_payload(
            STATUS_SCHEMA,
            box=self._box,
            site=self._site,
            seq=self._session,
            body=body,
            sign=self._sign,
        )

    def _loop(self, client: mqtt.Client, outbox: Outbox) -> None:
        retry_s, next_try, socket_open = _FIRST_RETRY_S, 0.0, False
        self._update_idle(outbox)
        while not self._stop.is_set():
            if socket_open:
                socket_open = client.loop(timeout=0.05) == MQTTErrorCode.MQTT_ERR_SUCCESS
            elif time.monotonic() >= next_try:
                socket_open = self._connect(client, outbox)
            if not socket_open and next_try <= time.monotonic():
                # backs off until a CONNACK, also when a refusing broker closes the connection
                next_try = time.monotonic() + retry_s
                retry_s = min(retry_s * 2, self._broker.reconnect_max_s)
            if self._connected.is_set():
                retry_s = _FIRST_RETRY_S
                self._hand_over(client, outbox)
            self._serve(client, outbox, wait=0.0 if socket_open else 0.05)

    def _connect(self, client: mqtt.Client, outbox: Outbox) -> bool:
        self._session = outbox.next_session()
        client.will_set(
            topic(self._site, self._box, STATUS), self._status("offline"), qos=1, retain=True
        )
        try:
            client.connect(self._broker.host, self._broker.port, self._broker.keepalive)
        except ssl.SSLCertVerificationError as exc:
            log.error("mqtt_broker_untrusted", reason=str(exc.verify_message))
            return False
        except OSError as exc:
            log.warning("mqtt_unreachable", port=self._broker.port, reason=type(exc).__name__)
            return False
        self._awaiting_connack = True
        return True

    def _on_connect(self, client: mqtt.Client, reason: Any) -> None:
        self._awaiting_connack = False
        if reason.is_failure:
            log.error("mqtt_refused", reason=str(reason))
            return
        self._connected.set()
        log.info("mqtt_connected", session=self._session)
        client.publish(topic(self._site, self._box, STATUS), self._status("online"), 1, True)
        # new entries go out from the loop, after paho has re-sent what was in flight before
        # the connection dropped, so the broker still receives them in sequence order

    def _on_disconnect(self, reason: Any) -> None:
        if self._awaiting_connack:
            # TLS 1.3 lets the handshake finish before the broker checks the client's
            # certificate: a refusal shows up only as a connection closed without CONNACK
            log.error(
                "mqtt_closed_before_connack",
                reason=str(reason),
                hint="the broker refused this box: check mqtt.cert_file, mqtt.key_file and "
                "that the broker trusts their CA",
            )
        elif self._connected.is_set():
            (log.warning if reason.is_failure else log.info)(
                "mqtt_disconnected", reason=str(reason)
            )
        self._awaiting_connack = False
        self._connected.clear()

    def _on_publish(self, client: mqtt.Client, outbox: Outbox, mid: int) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:  # a status message
            return
        outbox.remove(seq)
        if OUTBOX_FULL in self._alarms and outbox.fits(self._refused_bytes):
            self._set_alarm(client, OUTBOX_FULL, on=False)
            log.info("outbox_has_room")
        self._update_idle(outbox)

    def _hand_over(self, client: mqtt.Client, outbox: Outbox) -> None:
        room = _HANDED_AHEAD - len(self._inflight)
        if room <= 0:
            return
        for entry in outbox.pending(after=self._handed, limit=room):
            info = client.publish(entry.topic, entry.payload, qos=1)
            self._inflight[info.mid] = entry.seq
            self._handed = entry.seq

    def _serve(self, client: mqtt.Client, outbox: Outbox, wait: float) -> None:
        while True:
            try:
                body, done = self._requests.get(block=wait > 0, timeout=wait or None)
            except queue.Empty:
                return
            wait = 0.0
            if not done.set_running_or_notify_cancel():
                continue
            try:
                seq = outbox.put(topic(self._site, self._box, AGGREGATES), self._payload_of(body))
            except OutboxFull as exc:
                self._refused_bytes = exc.nbytes
                if OUTBOX_FULL not in self._alarms:
                    self._set_alarm(client, OUTBOX_FULL, on=True)
                done.set_exception(exc)
            except BaseException as exc:
                done.set_exception(exc)
            else:
                self._idle.clear()
                done.set_result(seq)

    def _payload_of(self, body: Mapping[str, Any]) -> Callable[[int], bytes]:
        return lambda seq: signed_payload(
            AGGREGATES_SCHEMA, box=self._box, site=self._site, seq=seq, body=body, sign=self._sign
        )

    def _set_alarm(self, client: mqtt.Client, alarm: str, *, on: bool) -> None:
        self._alarms = self._alarms | {alarm} if on else self._alarms - {alarm}
        if self._connected.is_set():
            client.publish(topic(self._site, self._box, STATUS), self._status("online"), 1, True)

    def _update_idle(self, outbox: Outbox) -> None:
        if outbox.usage()[0] == 0:
            self._idle.set()
        else:
            self._idle.clear()

    def _goodbye(self, client: mqtt.Client) -> None:
        if self._connected.is_set():
            info = client.publish(
                topic(self._site, self._box, STATUS), self._status("offline"), 1, True
            )
            deadline = time.monotonic() + _GOODBYE_WAIT_S
            while info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS and not info.is_published():
                if time.monotonic() > deadline or client.loop(timeout=0.05):
                    break
            client.disconnect()
            client.loop(timeout=0.05)
        self._connected.clear()


def open_publisher(config: Config, provider: KeyProvider) -> Publisher:
    """The publisher ``config.mqtt`` describes, not yet started; ConfigError if incomplete."""
    mqtt_config = config.mqtt
    if not mqtt_config.host:
        raise ConfigError(
            "mqtt.host is empty, so this box has no broker to publish to; set it to the "
            "central broker's host name"
        )
    if not mqtt_config.box_id:
        raise ConfigError(
            "mqtt.box_id is empty; set it to this box's name as registered at the centre "
            '(the CN of its client certificate), e.g. box_id = "rome-01"'
        )
    tls = client_context(
        Path(mqtt_config.ca_file),
        Path(mqtt_config.cert_file),
        Path(mqtt_config.key_file),
        names=("mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file"),
    )
    broker = Broker(
        mqtt_config.host,
        mqtt_config.port,
        tls,
        keepalive=mqtt_config.keepalive,
        reconnect_max_s=mqtt_config.reconnect_max_s,
    )
    return Publisher(
        broker,
        provider,
        site=config.site.name,
        box=mqtt_config.box_id,
        outbox_path=Path(mqtt_config.outbox_path),
        outbox_max_entries=mqtt_config.outbox_max_entries,
        outbox_max_bytes=mqtt_config.outbox_max_bytes,
    )
