"""The systemd notification protocol, spoken by the real daemon to a real notify socket."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from tests.daemon.boxes import DEMO_PCAP, demo_box


def test_ready_status_watchdog_and_stopping_reach_the_socket(tmp_path: Path) -> None:
    box = demo_box(tmp_path / "box")
    path = tmp_path / "notify"
    messages: list[str] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.2)
        # read while it runs, as systemd does: a full datagram queue would block the sender
        listener = threading.Thread(
            target=receive, args=(sock, messages, done := threading.Event())
        )
        listener.start()
        try:
            result = box.run(
                "--pcap",
                str(DEMO_PCAP),
                env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "200000"},
            )
        finally:
            done.set()
            listener.join()
        assert result.returncode == 0, result.stderr
    fields = [line for message in messages for line in message.splitlines()]
    assert fields.index("READY=1") < fields.index("STOPPING=1")
    assert "WATCHDOG=1" in fields  # the demo takes seconds; pings every 0.1 s
    statuses = [f for f in fields if f.startswith("STATUS=")]
    assert any("analysed" in s and "queue" in s for s in statuses)
    assert statuses[-1].startswith("STATUS=draining")


def receive(sock: socket.socket, messages: list[str], done: threading.Event) -> None:
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            if done.is_set():
                return


def test_without_a_notify_socket_nothing_is_sent_and_the_run_succeeds(tmp_path: Path) -> None:
    box = demo_box(tmp_path / "box")
    result = box.run("--pcap", str(DEMO_PCAP), env={"NOTIFY_SOCKET": ""})
    assert result.returncode == 0, result.stderr
