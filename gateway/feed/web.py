"""``callveil feed --serve``: the dashboard page and ``/api/summary`` over plain HTTP.

The standard library's threading HTTP server, in a thread beside the feed. It has no
authentication and no TLS: it binds to loopback by default and is meant to sit behind the
central team's reverse proxy, which does both. The page's three files ship with the package;
every response forbids framing, sniffing and any script or style from elsewhere.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import socketserver
import sqlite3
import threading
from collections.abc import Callable, Iterable
from contextlib import closing
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from gateway.closing import Closing
from gateway.feed.summary import DEFAULT_PERIODS, MAX_PERIODS, open_reader, summary

log = structlog.get_logger(__name__)

DEFAULT_LISTEN = "127.0.0.1:8080"
_PAGE = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_JSON = "application/json"
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def parse_listen(text: str) -> tuple[str, int]:
    """(host, port) of "HOST:PORT" ("[::1]:8080" for IPv6); ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example {DEFAULT_LISTEN})")
    return host, int(port)


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: Dashboard) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer would look up the host's FQDN, which stalls where DNS is unreachable
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "callveil-feed"
    sys_version = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        url = urlsplit(self.path)
        if url.path == "/api/summary":
            status, content = self.server.app.api(url.query)
            kind, cache = _JSON, "no-store"
        elif url.path in _PAGE:
            name, kind = _PAGE[url.path]
            status, content, cache = HTTPStatus.OK, self.server.app.files[name], "no-cache"
        else:
            status, kind, cache = HTTPStatus.NOT_FOUND, _JSON, "no-store"
            content = _error(f"nothing at {url.path}; the dashboard is at /")
        self.send_response(status)
        for name, value in {**_HEADERS, "Content-Type": kind, "Cache-Control": cache}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if body:
            self.wfile.write(content)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("dashboard_request", request=format % args)


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class Dashboard(Closing):
    """Serves the dashboard of the feed database ``db`` on ``listen``; ``start()`` it.

    ``registered`` gives the registered boxes, so one never heard from shows as "unknown".
    Binding happens here, so a port in use is an OSError before anything starts.
    """

    def __init__(
        self,
        db: Path,
        listen: tuple[str, int],
        *,
        registered: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self._db = db
        self._registered = registered
        page = resources.files(__package__).joinpath("dashboard")
        self.files = {name: page.joinpath(name).read_bytes() for name, _ in _PAGE.values()}
        try:
            self._server = _Server(listen, self)
        except OSError as exc:
            raise OSError(
                f"the dashboard cannot listen on {listen[0]}:{listen[1]} "
                f"({exc.strerror or exc}); choose another address (--listen)"
            ) from None
        self._thread: threading.Thread | None = None
        if not is_loopback(listen[0]):
            log.warning(
                "dashboard_not_on_loopback",
                listen=listen[0],
                hint="the dashboard has no authentication; serve it on loopback behind the "
                "central reverse proxy",
            )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> Dashboard:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dashboard", daemon=True
        )
        self._thread.start()
        log.info("dashboard_serving", url="http://{}:{}/".format(*self.address))
        return self

    def api(self, query: str) -> tuple[HTTPStatus, bytes]:
        """The status and body of ``/api/summary?<query>``."""
        asked = parse_qs(query).get("periods", [str(DEFAULT_PERIODS)])[-1]
        if not asked.isdigit() or not 1 <= int(asked) <= MAX_PERIODS:
            return HTTPStatus.BAD_REQUEST, _error(
                f"periods={asked!r}: give a whole number of periods from 1 to {MAX_PERIODS}"
            )
        try:
            with closing(open_reader(self._db)) as db:
                data = summary(db, periods=int(asked), registered=self._registered())
        except sqlite3.Error as exc:
            log.error("dashboard_store_unreadable", reason=str(exc))
            message = f"the feed database cannot be read ({exc})"
            return HTTPStatus.SERVICE_UNAVAILABLE, _error(message)
        return HTTPStatus.OK, json.dumps(data, separators=(",", ":")).encode()

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()
