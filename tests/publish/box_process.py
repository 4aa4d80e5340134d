"""A box's publisher in a process of its own, driven over stdin, for tests that kill it.

Commands, one per line: ``publish FIRST COUNT`` (queue the buckets of COUNT days from day
FIRST of 2026, print each sequence number),
``idle`` (wait until the broker has everything, print "idle"). End of input closes cleanly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

from gateway.logs import configure_logging
from gateway.publish.publisher import Broker, Publisher
from gateway.publish.tls import client_context
from tests.aggregates.summaries import released_body
from tests.publish.conftest import SITES, software_provider


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("host", "ca", "cert", "key", "signing-key", "outbox", "box"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    configure_logging("info", "json")  # to stderr: stdout carries the replies
    tls = client_context(
        Path(args.ca), Path(args.cert), Path(args.key), names=("ca", "cert", "key")
    )
    publisher = Publisher(
        Broker(args.host, args.port, tls, reconnect_max_s=0.5),
        software_provider(Path(args.signing_key)),
        site=SITES[args.box],
        box=args.box,
        outbox_path=Path(args.outbox),
    ).start()
    print("started", flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "publish":
            first, count = int(rest[0]), int(rest[1])
            for day in range(first, first + count):  # one bucket per day
                period = (dt.date(2026, 1, 1) + dt.timedelta(days=day)).isoformat()
                seq = publisher.publish(released_body(period, seed=day))
                print(f"queued {seq}", flush=True)
        elif command == "idle":
            publisher.wait_idle(30)
            print("idle", flush=True)
    publisher.close()


if __name__ == "__main__":
    main()
