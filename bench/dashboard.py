"""How fast the central dashboard loads: its summary and the page in headless Chromium.

Run by hand from the repository root: PYTHONPATH=. .venv/bin/python bench/dashboard.py
Needs chromium (Debian package). The feed's store is filled directly with released bodies of
synthetic call summaries (tests/aggregates/summaries.py), one box per site. A page's time is
the wall time of ``chromium --headless=new --dump-dom`` on it, less the same command on
about:blank (the browser's own start), median of a few runs.
"""

from __future__ import annotations

import datetime as dt
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from gateway.feed.store import FeedStore
from gateway.feed.verify import Received
from gateway.feed.web import Dashboard
from gateway.publish import topics
from tests.aggregates.summaries import released_body
from tests.publish.broker import HOST, free_port
from tests.publish.browser import parse_dom, run_chromium

RUNS = 5


def fill(db: Path, sites: int, days: int) -> None:
    first = dt.date(2026, 3, 1)
    with FeedStore(db) as store:
        for s in range(sites):
            box = f"box-{s}"
            for d in range(days):
                period = (first + dt.timedelta(days=d)).isoformat()
                body = released_body(period, n=20 + (s * 37 + d * 11) % 80, seed=s * 1000 + d)
                store.add_bucket(Received(topics.AGGREGATES, f"site-{s}", box, d + 1, body))
            status = {"state": "online", "release": "0.1.0", "key_fingerprint": "0" * 64}
            store.set_status(Received(topics.STATUS, f"site-{s}", box, 1, status))


def browser_seconds(url: str, profile: Path) -> float:
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        page = run_chromium(url, profile, "--dump-dom")
        times.append(time.perf_counter() - start)
        if url.startswith("http"):
            html = parse_dom(page.stdout).find(lambda e: e.tag == "html")
            assert html.attrs["data-state"] == "ready", "the page did not render"
    return statistics.median(times)


def main() -> None:
    print("| sites x days | summary bytes | summary ms | page ms (less browser start) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        profile = Path(tmp) / "profile"
        blank = browser_seconds("about:blank", profile)
        for sites, days in ((3, 3), (10, 30)):
            db = Path(tmp) / f"feed-{sites}x{days}.db"
            fill(db, sites, days)
            with Dashboard(db, (HOST, free_port())).start() as dashboard:
                base = "http://{}:{}".format(*dashboard.address)
                fetches = []
                for _ in range(RUNS):
                    start = time.perf_counter()
                    size = len(urllib.request.urlopen(f"{base}/api/summary").read())
                    fetches.append(time.perf_counter() - start)
                page = browser_seconds(f"{base}/", profile)
            print(
                f"| {sites} x {days} | {size} | {statistics.median(fetches) * 1000:.0f} "
                f"| {(page - blank) * 1000:.0f} |"
            )
    print(f"\nbrowser start (about:blank, --dump-dom): {blank * 1000:.0f} ms")


if __name__ == "__main__":
    main()
