"""The systemd notification protocol: readiness, status, watchdog, stopping, reloading.

Without ``NOTIFY_SOCKET`` (started by hand, or by a supervisor other than systemd) every call
is a no-op. The watchdog interval is the one systemd announces in ``WATCHDOG_USEC``; pings
are sent at half of it, and only while the pipeline's heartbeat says that no stage is stuck.
"""

from __future__ import annotations

import os
import time

from systemd import daemon as sd_daemon


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        mine = not pid or pid == str(os.getpid())
        self.watchdog_s = int(usec) / 1e6 if usec.isdigit() and mine and self.enabled else None
        self._next_ping = 0.0

    def _send(self, *fields: str) -> None:
        if self.enabled:
            sd_daemon.notify("\n".join(fields))

    def ready(self, status: str) -> None:
        self._send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def reloading(self) -> None:
        # systemd 253 wants MONOTONIC_USEC with RELOADING=1; older ones ignore the extra field
        self._send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str) -> None:
        self._send("STOPPING=1", f"STATUS={status}")

    def heartbeat(self, healthy: bool) -> None:
        """Ping the watchdog when it is due and ``healthy``; a stuck stage stops the pings."""
        if self.watchdog_s is None or not healthy:
            return
        now = time.monotonic()
        if now >= self._next_ping:
            self._send("WATCHDOG=1")
            self._next_ping = now + self.watchdog_s / 2
