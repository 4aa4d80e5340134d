"""``callveil feed``: run the central feed until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

import structlog

from gateway.config import ConfigError
from gateway.feed.service import Feed
from gateway.feed.store import FeedStore
from gateway.feed.verify import KeyRing
from gateway.feed.web import DEFAULT_LISTEN, Dashboard, parse_listen
from gateway.logs import configure_logging
from gateway.publish.tls import client_context

log = structlog.get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callveil feed",
        description="Subscribe to the boxes' aggregates, verify each box's signature, detect "
        "gaps and replays by sequence number, and merge buckets per site and period. With "
        "--serve, also show them on a dashboard page.",
    )
    parser.add_argument("--host", required=True, help="the MQTT broker")
    parser.add_argument("--port", type=int, default=8883, help="its TLS port (default 8883)")
    parser.add_argument("--ca", required=True, help="CA certificate of the broker (PEM)")
    parser.add_argument("--cert", required=True, help="the feed's client certificate (PEM)")
    parser.add_argument("--key", required=True, help="its private key (PEM)")
    parser.add_argument(
        "--keys", required=True, help="directory of registered boxes' public keys, <box>.pem"
    )
    parser.add_argument("--db", required=True, help="SQLite file the feed writes")
    parser.add_argument("--csv", help="also keep the merged buckets in this CSV file")
    parser.add_argument(
        "--client-id",
        default="callveil-feed",
        help="MQTT client id; keep it fixed so the broker holds payloads while the feed is away",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="also serve the dashboard page and /api/summary over plain HTTP; it has no "
        "authentication and no TLS, so keep it on loopback behind the central team's "
        "reverse proxy",
    )
    parser.add_argument(
        "--listen",
        type=_listen,
        metavar="HOST:PORT",
        help=f"where the dashboard listens with --serve (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error")
    )
    return parser


def _listen(text: str) -> tuple[str, int]:
    try:
        return parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, "auto")
    if not 1 <= args.port <= 65535:
        print(f"callveil feed: --port {args.port} is not a port (1-65535)", file=sys.stderr)
        return 2
    if args.listen is not None and not args.serve:
        print("callveil feed: --listen needs --serve", file=sys.stderr)
        return 2
    with ExitStack() as resources:
        try:
            tls = client_context(
                Path(args.ca), Path(args.cert), Path(args.key), names=("--ca", "--cert", "--key")
            )
            keys = KeyRing(Path(args.keys))
            store = resources.enter_context(
                FeedStore(Path(args.db), csv_path=Path(args.csv) if args.csv else None)
            )
            dashboard = None
            if args.serve:
                listen = args.listen or parse_listen(DEFAULT_LISTEN)
                dashboard = resources.enter_context(
                    Dashboard(Path(args.db), listen, registered=keys.boxes)
                )
        except (ConfigError, OSError) as exc:
            print(f"callveil feed: {exc}", file=sys.stderr)
            return 2
        if not len(keys):
            log.warning("no_box_registered", hint=f"put each box's public key in {args.keys}")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        feed = Feed(keys, store, host=args.host, port=args.port, tls=tls, client_id=args.client_id)
        with feed.start():
            if dashboard is not None:
                dashboard.start()
            log.info("feed_started", boxes=len(keys))
            stop.wait()
    log.info("feed_stopped", **dict(feed.outcomes))
    return 0
