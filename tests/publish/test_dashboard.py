"""The central dashboard: ``callveil feed --serve`` fed by a real broker, read by Chromium."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from gateway.aggregates.release import release
from gateway.callsummary import EMOTIONS
from gateway.feed.command import main as feed_main
from gateway.feed.store import FeedStore
from gateway.feed.verify import Received
from gateway.feed.web import Dashboard
from gateway.publish import topics
from tests.aggregates.summaries import TOPICS, bucket_of_calls, released_body, seeded_summaries
from tests.privacy_scan import scan
from tests.publish.broker import HOST, Broker, free_port
from tests.publish.browser import Element, chromium, parse_dom, run_chromium
from tests.publish.clients import start_publisher, wait_until
from tests.publish.conftest import SITES

REPO = Path(__file__).resolve().parents[2]
K = 10
DISTRIBUTIONS = ("tension", "trend", "coverage", "duration", "silence", "overtalk")
# what the two boxes publish: (box, body); 2026-03-04 at rome has fewer than k calls
PUBLISHED = [
    ("box-a", released_body("2026-03-02", 40, seed=1)),
    ("box-a", released_body("2026-03-03", 60, seed=2)),
    ("box-a", released_body("2026-03-04", 5, seed=3)),
    ("box-b", released_body("2026-03-02", 50, seed=4)),
    ("box-b", released_body("2026-03-03", 80, seed=5)),
    (
        "box-b",
        release(
            bucket_of_calls(seeded_summaries(30, 6), seen=300),
            period="2026-03-03",
            queue="sales",
            k=K,
            epsilon=None,
        ),
    ),
]
# Okabe-Ito colours of the three series (milan, milan · sales, rome), as the page draws them
SERIES_RGB = [(0x00, 0x72, 0xB2), (0xD5, 0x5E, 0x00), (0x00, 0x9E, 0x73)]


def _series(site: str, queue: str | None) -> str:
    return site if queue is None else f"{site} · {queue}"


def _get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _summary(base: str, query: str = "") -> dict[str, Any] | None:
    try:
        status, _, body = _get(f"{base}/api/summary{query}")
    except OSError:  # not listening yet
        return None
    return json.loads(body) if status == 200 else None


def _states(summary: dict[str, Any] | None) -> dict[str, str]:
    return {b["box"]: b["state"] for b in summary["boxes"]} if summary else {}


def _public_pem() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _shown(published: list[tuple[str, dict]]) -> dict[str, dict]:
    """Per series, the body a card shows first: its newest period that is not withheld."""
    shown: dict[str, dict] = {}
    for box, body in sorted(published, key=lambda p: p[1]["period"]):
        if not body["suppressed"]:
            shown[_series(SITES[box], body["queue"])] = body
    return shown


def check_api(summary: dict[str, Any]) -> None:
    """Every published body is in the summary with the same counts; withheld stays null."""
    buckets = {(b["site"], b["queue"], b["period"]): b for b in summary["buckets"]}
    assert len(buckets) == len(PUBLISHED)
    for box, body in PUBLISHED:
        got = buckets[SITES[box], body["queue"], body["period"]]
        assert (got["boxes"], got["k"], got["noisy_boxes"]) == (1, K, 0)
        if body["suppressed"]:
            assert got["withheld"] and got["withheld_boxes"] == 1
            assert got["calls_seen"] is got["calls_analysed"] is got["tension_rate"] is None
            assert got["topics"] == {} and got["tension"] is None
            continue
        hist = body["histograms"]
        seen, analysed = body["calls_seen"], body["calls_analysed"]
        assert not got["withheld"] and got["withheld_boxes"] == 0
        assert (got["calls_seen"], got["calls_analysed"]) == (seen, analysed)
        assert got["sampling_rate"] == round(analysed / seen, 4)
        for name in DISTRIBUTIONS:
            assert got[name]["labels"] == hist[name]["labels"]
            assert got[name]["counts"] == hist[name]["counts"], name
        none = hist["tension"]["counts"][0]
        assert got["tension_rate"] == (None if none is None else round(1 - none / analysed, 4))
        assert {t: v["calls"] for t, v in got["topics"].items()} == {
            t: hist[f"topic.{t}"]["counts"][1] for t in TOPICS
        }
        for role in ("operator", "customer"):
            assert list(got["emotions"][role]) == ["neutral", *sorted(set(EMOTIONS) - {"neutral"})]
            for emotion, h in got["emotions"][role].items():
                assert h["counts"] == hist[f"emotion.{role}.{emotion}"]["counts"]


def _half_up(value: float) -> Decimal:
    return Decimal(value).quantize(Decimal("0.1"), ROUND_HALF_UP)


def check_dom(root: Element, summary: dict[str, Any]) -> None:
    rates = {
        (_series(b["site"], b["queue"]), b["period"]): b["tension_rate"] for b in summary["buckets"]
    }
    assert root.find(lambda e: e.tag == "html").attrs["data-state"] == "ready"
    boxes = {
        row.attrs["data-box"]: [td.text() for td in row.find_all(lambda e: e.tag == "td")]
        for row in root.find_all(lambda e: e.tag == "tr" and "data-box" in e.attrs)
    }
    assert {box: cells[1:3] for box, cells in boxes.items()} == {
        "box-a": ["rome", "online"],
        "box-b": ["milan", "offline"],
        "box-c": ["not heard from", "unknown"],
    }
    legend = root.find_all(lambda e: e.tag == "text" and "data-series" in e.attrs)
    assert {e.attrs["data-series"] for e in legend} >= {"rome", "milan", "milan · sales"}
    # the withheld bucket is marked on the line chart, not drawn as a zero
    mark = root.find(lambda e: e.attrs.get("data-period") == "2026-03-04" and e.tag == "text")
    assert "withheld (fewer than 10 calls)" in mark.text()

    for key, body in _shown(PUBLISHED).items():
        card = root.find(
            lambda e, key=key: e.tag == "section" and e.attrs.get("data-series") == key
        )
        shown = card.find(lambda e: "card-body" in e.classes())
        assert shown.attrs["data-period"] == body["period"]
        kpis = {
            kpi.children[1].text(): kpi.children[0].text()
            for kpi in card.find_all(lambda e: "kpi" in e.classes())
        }
        # as the page's toFixed(1) rounds the summary's rate (check_api compared it to the body)
        rate = rates[key, body["period"]]
        rate = "withheld" if rate is None else f"{_half_up(rate * 100)} %"
        assert kpis == {
            "calls seen": str(body["calls_seen"]),
            "calls analysed": str(body["calls_analysed"]),
            "sampled": "10.0 %",
            "tension rate": rate,
        }
        for topic in TOPICS:
            row = card.find(lambda e, t=topic: e.tag == "g" and e.attrs.get("data-label") == t)
            count = body["histograms"][f"topic.{topic}"]["counts"][1]
            value = row.find(lambda e: "value" in e.classes()).text()
            assert value == ("withheld" if count is None else str(count)), (key, topic)

    rows = {
        (r.attrs["data-series"], r.attrs["data-period"]): [td.text() for td in r.children]
        for r in root.find_all(lambda e: e.tag == "tr" and "data-period" in e.attrs)
    }
    for box, body in PUBLISHED:
        cells = rows[_series(SITES[box], body["queue"]), body["period"]]
        assert cells[1] == (body["queue"] or "—")  # a site's calls that no queue claims
        if body["suppressed"]:
            assert cells[4:] == ["withheld (fewer than 10 calls)"]
        else:
            assert cells[4:6] == [str(body["calls_seen"]), str(body["calls_analysed"])]


def _output_dir(factory: pytest.TempPathFactory) -> Path:
    """Where pictures for people go: $CALLVEIL_TEST_OUTPUT, or "output" in pytest's basetemp
    (which keeps only its last few runs)."""
    chosen = os.environ.get("CALLVEIL_TEST_OUTPUT")
    return Path(chosen) if chosen else factory.getbasetemp() / "output"


def check_screenshot(path: Path, keep: Path) -> None:
    image = Image.open(path)
    image.verify()  # a well-formed PNG, not just bytes
    image = Image.open(path)
    assert (image.format, image.size) == ("PNG", (1280, 900))
    pixels = np.asarray(image.convert("RGB")).astype(int)
    assert pixels.std() > 10, "the screenshot is blank"
    for rgb in SERIES_RGB:  # each series' line or points were drawn
        close = np.abs(pixels - np.array(rgb)).sum(axis=2) < 30
        assert close.sum() > 20, f"no pixel of the colour {rgb} in the screenshot"
    keep.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, keep)
    print(f"dashboard screenshot: {keep}")


def test_the_dashboard_shows_what_the_boxes_published(
    broker: Broker, providers: dict, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    chromium()
    keys = tmp_path / "boxes"
    keys.mkdir()
    for box in ("box-a", "box-b"):
        (keys / f"{box}.pem").write_bytes(providers[box].public_key_pem())
    (keys / "box-c.pem").write_bytes(_public_pem())  # registered, never heard from
    db, port = tmp_path / "central.db", free_port()
    base = f"http://{HOST}:{port}"
    cert, key = broker.certs["feed"]
    publishers = {
        box: start_publisher(broker, providers[box], tmp_path / f"{box}.outbox", box=box)
        for box in ("box-a", "box-b")
    }
    with (tmp_path / "feed.log").open("w+") as log:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "gateway.cli", "feed", "--host", HOST,
                "--port", str(broker.port), "--ca", str(broker.ca.ca_file), "--cert", str(cert),
                "--key", str(key), "--keys", str(keys), "--db", str(db),
                "--serve", "--listen", f"{HOST}:{port}",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )  # fmt: skip
        try:
            assert all(p.wait_connected(5) for p in publishers.values())
            # both retained births reached the feed: it is subscribed and serving
            online = {"box-a": "online", "box-b": "online", "box-c": "unknown"}
            assert wait_until(lambda: _states(_summary(base)) == online, 20)
            for box, body in PUBLISHED:
                publishers[box].publish(body)
            assert all(p.wait_idle(10) for p in publishers.values())
            publishers.pop("box-b").close()  # its clean goodbye: "offline", retained
            assert wait_until(
                lambda: (
                    (s := _summary(base)) is not None
                    and len(s["buckets"]) == len(PUBLISHED)
                    and _states(s)["box-b"] == "offline"
                ),
                10,
            )
            summary = _summary(base)
            check_api(summary)
            for bucket in summary["buckets"]:
                # each bucket may carry its own period label and nothing finer
                assert scan({"body": bucket}) == [], bucket["period"]
            assert scan({k: v for k, v in summary.items() if k != "buckets"}) == []
            newest = _summary(base, "?periods=1")
            assert {(b["site"], b["queue"], b["period"]) for b in newest["buckets"]} == {
                ("rome", None, "2026-03-04"),
                ("milan", None, "2026-03-03"),
                ("milan", "sales", "2026-03-03"),
            }

            page = run_chromium(f"{base}/", tmp_path / "profile", "--dump-dom")
            check_dom(parse_dom(page.stdout), summary)
            shot = tmp_path / "dashboard.png"
            run_chromium(
                f"{base}/",
                tmp_path / "profile",
                f"--screenshot={shot}",
                "--window-size=1280,900",
                "--hide-scrollbars",
            )
            check_screenshot(shot, _output_dir(tmp_path_factory) / "dashboard.png")
        finally:
            for publisher in publishers.values():
                publisher.close()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
        log.seek(0)
        err = log.read()
    assert proc.returncode == 0, err
    assert "dashboard_serving" in err and "feed_stopped" in err


EVIL_SITE = '<img src=x onerror="document.title=1">'
EVIL_TOPIC = "<script>document.title=2</script>"
EVIL_BOX = "<b id=evil>box</b>"


def test_the_page_shows_hostile_labels_as_text_and_the_server_says_what_is_wrong(
    tmp_path: Path,
) -> None:
    """Labels are checked at the feed, but the page must not depend on it: a box's histogram
    names are not, and a database may come from elsewhere."""
    chromium()
    body = released_body("2026-03-02", 40, seed=1)
    body["histograms"][f"topic.{EVIL_TOPIC}"] = {"labels": ["no", "yes"], "counts": [None, 33]}
    db = tmp_path / "feed.db"
    with FeedStore(db) as store:
        store.add_bucket(Received(topics.AGGREGATES, EVIL_SITE, "box-a", 1, body))
        status = {"state": "online", "release": "<i>1</i>", "key_fingerprint": "0" * 64}
        store.set_status(Received(topics.STATUS, EVIL_SITE, EVIL_BOX, 1, status))
        with Dashboard(db, (HOST, free_port())).start() as dashboard:
            base = "http://{}:{}".format(*dashboard.address)
            root = parse_dom(run_chromium(f"{base}/", tmp_path / "profile", "--dump-dom").stdout)

            status_code, headers, _ = _get(f"{base}/", method="HEAD")
            assert status_code == 200
            assert "script-src 'self'" in headers["Content-Security-Policy"]
            assert headers["X-Content-Type-Options"] == "nosniff"
            status_code, _, answer = _get(f"{base}/api/summary?periods=0")
            assert status_code == 400 and b"from 1 to 366" in answer
            status_code, _, answer = _get(f"{base}/etc/passwd")
            assert status_code == 404 and b"the dashboard is at /" in answer

    assert root.find(lambda e: e.tag == "html").attrs["data-state"] == "ready"
    assert not root.find_all(lambda e: e.tag in {"img", "b", "i"} or e.attrs.get("id") == "evil")
    assert not [e for e in root.find_all(lambda e: e.tag == "script") if e.text()]
    card = root.find(lambda e: e.tag == "section" and e.attrs.get("data-series") == EVIL_SITE)
    assert card.find(lambda e: e.tag == "h3").text() == EVIL_SITE
    row = card.find(lambda e: e.tag == "g" and e.attrs.get("data-label") == EVIL_TOPIC)
    assert row.text() == f"{EVIL_TOPIC}33"
    box = root.find(lambda e: e.tag == "tr" and e.attrs.get("data-box") == EVIL_BOX)
    assert [td.text() for td in box.children][:4] == [EVIL_BOX, EVIL_SITE, "online", "<i>1</i>"]


def test_an_unreadable_database_is_a_503_that_says_why(tmp_path: Path) -> None:
    with Dashboard(tmp_path / "missing.db", (HOST, free_port())).start() as dashboard:
        status, _, answer = _get("http://{}:{}/api/summary".format(*dashboard.address))
    assert status == 503
    assert "the feed database cannot be read" in json.loads(answer)["error"]


def test_listen_mistakes_exit_2_with_the_fix(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        feed_main(["--host", HOST, "--ca", "c", "--cert", "c", "--key", "k", "--keys", "k",
                   "--db", "d", "--serve", "--listen", "8080"])  # fmt: skip
    assert exit_info.value.code == 2
    assert "'8080' is not HOST:PORT (for example 127.0.0.1:8080)" in capsys.readouterr().err
    args = ["--host", HOST, "--ca", "c", "--cert", "c", "--key", "k", "--keys", "k", "--db", "d"]
    assert feed_main([*args, "--listen", f"{HOST}:8080"]) == 2
    assert "--listen needs --serve" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot listen on {HOST}:{port} .*--listen"):
            Dashboard(tmp_path / "feed.db", (HOST, port))
