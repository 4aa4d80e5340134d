"""What publishing aggregates costs and what the privacy rules leave of them.

Run by hand from the repository root: PYTHONPATH=. .venv/bin/python bench/aggregates.py
Needs mosquitto (for the MQTT part) and OpenDP (for the noise part). Call summaries are
synthetic (tests/aggregates/summaries.py): the withheld shares depend on how real calls
spread over the cells, so read them as an illustration of the rule, not a forecast.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
from pathlib import Path

from gateway.aggregates.release import release
from gateway.feed.service import Feed
from gateway.feed.store import FeedStore
from gateway.feed.verify import KeyRing
from gateway.publish.message import AGGREGATES_SCHEMA, signed_payload
from gateway.publish.outbox import Outbox
from gateway.publish.publisher import Broker as Address
from gateway.publish.publisher import Publisher
from gateway.seal.softkey import SoftwareKeyProvider
from tests.aggregates.summaries import bucket_of_calls, released_body, seeded_summaries
from tests.publish.broker import HOST, Broker
from tests.publish.conftest import ACL


def suppression() -> None:
    print("| analysed calls | cells | withheld at k=10 |")
    print("|---|---|---|")
    for n in (20, 50, 100, 300, 1000):
        body = release(
            bucket_of_calls(seeded_summaries(n, seed=n), seen=10 * n),
            period="2026-03-02",
            queue=None,
            k=10,
            epsilon=None,
        )
        counts = [c for h in body["histograms"].values() for c in h["counts"]]
        withheld = sum(c is None for c in counts)
        print(f"| {n} | {len(counts)} | {withheld} ({withheld / len(counts):.0%}) |")


def noise() -> None:
    print("\n| epsilon | scale | mean abs error per published count | draws |")
    print("|---|---|---|---|")
    bucket = bucket_of_calls(seeded_summaries(1000, seed=1), seen=10_000)
    truth = {name: h.counts for name, h in bucket.histograms.items()}
    for epsilon in (0.5, 1.0, 2.0):
        errors, scale = [], 0.0
        for _ in range(20):
            body = release(bucket, period="2026-03-02", queue=None, k=10, epsilon=epsilon)
            scale = body["privacy"]["noise"]["scale"]
            for name, hist in body["histograms"].items():
                errors += [
                    abs(c - t) for c, t in zip(hist["counts"], truth[name], strict=True) if c
                ]
        print(f"| {epsilon} | {scale:.1f} | {statistics.mean(errors):.1f} | 20 |")


def outbox(root: Path, count: int = 500) -> None:
    payload = b"x" * 4000
    with Outbox(root / "bench-outbox.db", max_entries=count, max_bytes=count * 4000) as box:
        start = time.perf_counter()
        seqs = [box.put("t", lambda _seq: payload) for _ in range(count)]
        put = time.perf_counter() - start
        start = time.perf_counter()
        for seq in seqs:
            box.remove(seq)
        removed = time.perf_counter() - start
    print(f"\noutbox, {count} payloads of 4000 bytes, synchronous=FULL:")
    print(f"  put {1000 * put / count:.2f} ms each, remove {1000 * removed / count:.2f} ms each")


def end_to_end(root: Path, count: int = 200) -> None:
    broker = Broker(ACL)
    broker.start()
    try:
        provider = SoftwareKeyProvider(root / "box.key", b"bench", scrypt_n=2**14)
        keys = root / "boxes"
        keys.mkdir()
        (keys / "box-a.pem").write_bytes(provider.public_key_pem())
        store = FeedStore(root / "feed.db")
        feed = Feed(
            KeyRing(keys), store, host=HOST, port=broker.port, tls=broker.tls("feed")
        ).start()
        feed.wait_subscribed(5)
        first = dt.date(2026, 1, 1)
        bodies = [
            released_body((first + dt.timedelta(days=i)).isoformat(), seed=i) for i in range(count)
        ]
        address = Address(HOST, broker.port, broker.tls("box-a"))
        with Publisher(
            address, provider, site="rome", box="box-a", outbox_path=root / "out.db"
        ).start() as publisher:
            publisher.wait_connected(5)
            start = time.perf_counter()
            for body in bodies:
                publisher.publish(body)
            queued = time.perf_counter() - start
            publisher.wait_idle(60)
            while sum(feed.outcomes.values()) < count + 1:  # the birth too
                time.sleep(0.01)
            total = time.perf_counter() - start
        feed.close()
        store.close()
        size = len(
            signed_payload(
                AGGREGATES_SCHEMA,
                box="box-a",
                site="rome",
                seq=1,
                body=bodies[0],
                sign=provider.sign,
            )
        )
        print(f"\nMQTT over TLS, {count} signed aggregates of {size} bytes, box to feed:")
        print(f"  queued (signed, on disk) in {queued:.2f} s; verified and merged at the feed")
        print(f"  after {total:.2f} s ({count / total:.0f} payloads/s)")
    finally:
        broker.close()


def main() -> None:
    suppression()
    noise()
    with tempfile.TemporaryDirectory() as tmp:
        outbox(Path(tmp))
        end_to_end(Path(tmp))


if __name__ == "__main__":
    main()
