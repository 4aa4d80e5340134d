"""``callveil feed`` as people run it: a process that collects until it is told to stop."""

from __future__ import annotations

import csv
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from gateway.cli import main
from tests.aggregates.summaries import released_body
from tests.publish.broker import HOST, Broker
from tests.publish.clients import start_publisher, wait_until

REPO = Path(__file__).resolve().parents[2]


def _rows(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []


def test_the_feed_command_collects_and_stops_cleanly(
    broker: Broker, providers: dict, keys_dir: Path, tmp_path: Path
) -> None:
    db, out = tmp_path / "central.db", tmp_path / "central.csv"
    cert, key = broker.certs["feed"]
    with start_publisher(broker, providers["box-a"], tmp_path / "outbox.db") as publisher:
        assert publisher.wait_connected(5)  # its birth is retained at the broker
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "gateway.cli", "feed", "--host", HOST,
                "--port", str(broker.port), "--ca", str(broker.ca.ca_file), "--cert", str(cert),
                "--key", str(key), "--keys", str(keys_dir), "--db", str(db), "--csv", str(out),
                "--client-id", "central",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            # the retained birth arriving means the feed is subscribed
            assert wait_until(lambda: _rows(db, "SELECT state FROM status") == [("online",)], 15)
            publisher.publish(released_body("2026-03-02"))
            assert wait_until(lambda: bool(_rows(db, "SELECT * FROM merged")), 10)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    analysed = next(r for r in rows if r["label"] == "analysed")
    assert (analysed["site"], analysed["period"], analysed["count"]) == ("rome", "2026-03-02", "40")
    assert "feed_stopped" in err


def test_bad_arguments_exit_2_with_the_fix(tmp_path: Path, capsys) -> None:
    ca = tmp_path / "ca.crt"
    args = ["feed", "--host", HOST, "--ca", str(ca), "--cert", "c", "--key", "k"]
    assert main([*args, "--keys", str(tmp_path), "--db", str(tmp_path / "f.db")]) == 2
    assert f"--ca = '{ca}': no such file" in capsys.readouterr().err
    assert main([*args, "--keys", "k", "--db", "d", "--port", "70000"]) == 2
    assert "--port 70000 is not a port" in capsys.readouterr().err
