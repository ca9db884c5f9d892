"""Detect, HTTP part: Alertmanager's webhook (bearer token, size limit, version 4 JSON), ``/metrics`` and ``/healthz``, on Tornado.

Why Tornado (docs/ARCHITECTURE.md compares it with uvicorn, waitress and the standard library's
server): one event loop serves every connection (no thread per connection), and its HTTP/1
parser gives each request a *deadline* for its headers and another for its body
(``tornado/http1connection.py``: ``gen.with_timeout(io_loop.time() + header_timeout, ...)``),
not a timeout that restarts with every byte. What Tornado leaves to the application is
added here: a cap on open connections (below the process's file limit), a per-source cap on
connections that have not yet shown the token, and a count of every refusal.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import resource
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tornado import httpserver, iostream, netutil, web

from resinfra.healer.alerts import Alert, PayloadError, parse_payload
from resinfra.healer.observe import Metrics

log = logging.getLogger("resinfra.healer.receiver")

WEBHOOK_PATH = "/alerts"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
MAX_BODY = 1024 * 1024
"""Bytes. Alertmanager groups the healer's alerts per alert, site and node, so a body is a few KB;
1 MiB leaves room for a whole-site group and refuses anything absurd before reading it."""
MAX_HEADERS = 16 * 1024
"""Bytes of request line and headers (Alertmanager sends under 1 KB)."""
HEADER_DEADLINE = 5.0
"""Seconds from a connection's first byte (or the end of its previous request) to the end of the headers, in total."""
BODY_DEADLINE = 5.0
"""Seconds for the whole body once the headers are in: a request never holds a connection longer than both."""
BACKLOG = 1024
"""Listen backlog (the standard library's server used 5): bursts wait in the kernel, not in refusals."""
PER_SOURCE_SHARE = 2
"""One address may hold at most 1/2 of the connection slots with connections that have not shown the token; over it,
its oldest such connection is closed. Alertmanager shows the token in its first request and then reuses the connection,
so a flood from elsewhere never takes its place, and a flood from its own address still leaves room for it (the
event loop answers a whole request in well under a millisecond, the flood's connections wait for their deadline)."""
FILE_RESERVE = 256
"""File descriptors kept back from connections for the journal, the audit log, the action and its pipes (a quarter of
the limit when that is less)."""
MAX_BODY_DIGITS = len(str(MAX_BODY))
_CONTENT_LENGTH = re.compile(f"[0-9]{{1,{MAX_BODY_DIGITS + 1}}}")
HealthCheck = Callable[[], tuple[bool, str]]
"""``/healthz``: (healthy, text)."""


def max_connections(reserve: int = FILE_RESERVE) -> int:
    """Open connections the server accepts at once: the process's file limit less ``reserve``, at least 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65_536
    return max(16, soft - min(reserve, soft // 4))


@dataclass
class _Connection:
    stream: iostream.IOStream
    source: str
    opened: float
    authenticated: bool = False
    busy: bool = False
    """A request of it is being answered (never shed while so)."""
    started: int = 0
    answered: int = 0


class _Connections:
    """Open connections by stream, per source: who is shed when the caps are reached."""

    def __init__(self, limit: int, per_source: int, metrics: Metrics, header_deadline: float):
        self.limit = limit
        self.per_source = per_source
        self.header_deadline = header_deadline
        self._metrics = metrics
        self._open: dict[int, _Connection] = {}

    def __len__(self) -> int:
        return len(self._open)

    def admit(self, stream: iostream.IOStream, source: str) -> None:
        """Record a new connection; close what the caps say must go to make room for it."""
        unauthenticated = [c for c in self._open.values() if c.source == source and not c.authenticated and not c.busy]
        if len(unauthenticated) >= self.per_source:
            self._shed(min(unauthenticated, key=lambda c: c.opened), "source-limit")
        if len(self._open) >= self.limit:
            idle = [c for c in self._open.values() if not c.busy]
            if idle:
                # Unauthenticated first, then the oldest.
                self._shed(min(idle, key=lambda c: (c.authenticated, c.opened)), "connection-limit")
        self._open[id(stream)] = _Connection(stream, source, time.monotonic())

    def _shed(self, connection: _Connection, why: str) -> None:
        self._metrics.rejected.labels(why).inc()
        self._open.pop(id(connection.stream), None)
        connection.stream.close()

    def get(self, stream: iostream.IOStream) -> _Connection | None:
        return self._open.get(id(stream))

    def closed(self, stream: iostream.IOStream) -> None:
        connection = self._open.pop(id(stream), None)
        if connection is None:
            return
        # Ended without a whole request: cut off by a deadline (or the client left). An idle keep-alive connection
        # closed after its requests were answered is no refusal.
        cut = connection.started > connection.answered
        never = connection.started == 0 and time.monotonic() - connection.opened >= self.header_deadline * 0.9
        if cut or never:
            self._metrics.rejected.labels("incomplete").inc()


class _Server(httpserver.HTTPServer):
    """Tornado's HTTP server with the connection caps (``handle_stream``/``on_close`` are its documented hooks)."""

    connections: _Connections

    def handle_stream(self, stream: iostream.IOStream, address: Any) -> None:
        source = address[0] if isinstance(address, tuple) else str(address)
        self.connections.admit(stream, source)
        super().handle_stream(stream, address)

    def on_close(self, server_conn: Any) -> None:
        self.connections.closed(server_conn.stream)
        super().on_close(server_conn)


class Receiver:
    """The healer's HTTP endpoint, served from a thread of its own (one event loop).

    + host, port: where to listen (127.0.0.1 on the tooling VM; port 0 picks a free one)
    + token: the bearer token Alertmanager presents (``credentials_file`` of its webhook)
    + on_alerts: called with each accepted payload's alerts, on the event loop: it must not block
      (the service queues them); returning False answers 503 (Alertmanager retries)
    + metrics: counts refusals and serves ``/metrics``
    + health: what ``/healthz`` answers
    """

    def __init__(
        self,
        host: str,
        port: int,
        token: str,
        on_alerts: Callable[[list[Alert]], bool | None],
        metrics: Metrics,
        max_body: int = MAX_BODY,
        health: HealthCheck | None = None,
        connection_limit: int | None = None,
        per_source_unauthenticated: int | None = None,
        header_deadline: float = HEADER_DEADLINE,
        body_deadline: float = BODY_DEADLINE,
    ):
        if not token:
            raise ValueError("the healer needs a bearer token")
        self._expected = f"Bearer {token}".encode()
        self.on_alerts = on_alerts
        self.metrics = metrics
        self.max_body = max_body
        self.health: HealthCheck = health or (lambda: (True, "ok"))
        self._limit = connection_limit or max_connections()
        self._per_source = per_source_unauthenticated or max(1, self._limit // PER_SOURCE_SHARE)
        self._deadlines = (header_deadline, body_deadline)
        # Bound now: the port is known at once and a taken port fails here, not in the thread.
        self._sockets = netutil.bind_sockets(port, address=host, family=socket.AF_INET, backlog=BACKLOG)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def host(self) -> str:
        return str(self._sockets[0].getsockname()[0])

    @property
    def port(self) -> int:
        return int(self._sockets[0].getsockname()[1])

    def authorised(self, header: str | None) -> bool:
        # Constant-time comparison: the token is a secret.
        return header is not None and hmac.compare_digest(header.encode("latin-1", "replace"), self._expected)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="healer-http", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def _serve(self) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        # Refusals are logged by the handler itself (without what was presented as a token).
        app = web.Application([(r".*", _Handler, {"receiver": self})], compress_response=False, log_function=_access_log)
        server = _Server(
            app,
            # Tornado passes idle_connection_timeout as the headers' deadline (httpserver.py: header_timeout=...).
            idle_connection_timeout=self._deadlines[0],
            body_timeout=self._deadlines[1],
            max_header_size=MAX_HEADERS,
            max_body_size=self.max_body,
            xheaders=False,
        )
        server.connections = _Connections(self._limit, self._per_source, self.metrics, self._deadlines[0])
        server.add_sockets(self._sockets)
        self._server = server
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None:
            for sock in self._sockets:
                sock.close()
            return

        async def shutdown() -> None:
            server.stop()
            await server.close_all_connections()
            loop.stop()

        loop.call_soon_threadsafe(lambda: loop.create_task(shutdown()))
        if self._thread is not None:
            self._thread.join(10)

    @property
    def open_connections(self) -> int:
        return len(self._server.connections) if self._server is not None else 0


def _access_log(handler: web.RequestHandler) -> None:
    log.debug("%d %s %s (%s)", handler.get_status(), handler.request.method, handler.request.path, handler.request.remote_ip)


def _decode_error(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg}"
    if isinstance(err, UnicodeDecodeError):
        return f"not JSON: {err.reason}"
    if isinstance(err, RecursionError):
        return "not JSON: nested too deep"
    return f"not JSON: {err}"


@web.stream_request_body
class _Handler(web.RequestHandler):
    """Every path and method: authentication first (an anonymous client learns nothing, not even what exists)."""

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS")

    def initialize(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._body = bytearray()
        self._accepting = False

    def _connection(self) -> _Connection | None:
        server = self.receiver._server
        connection = self.request.connection
        stream = getattr(connection, "stream", None)
        return server.connections.get(stream) if server is not None and stream is not None else None

    def set_default_headers(self) -> None:
        self.clear_header("Server")
        self.set_header("Content-Type", "text/plain; charset=utf-8")

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.set_status(status.value)
        self.set_header("Content-Type", content_type)
        self.finish(body)

    def _refuse(self, status: HTTPStatus, why: str, message: str) -> None:
        self.receiver.metrics.rejected.labels(why).inc()
        # Never log what was presented as a token: it may be a mistyped real one.
        log.warning("refused %s %s from %s: %s (%d)", self.request.method, self.request.path, self.request.remote_ip, message, status.value)
        if status is HTTPStatus.UNAUTHORIZED:
            self.set_header("WWW-Authenticate", 'Bearer realm="resinfra-healer"')
        # The body of a refused request is not read: the connection ends with the answer.
        self.set_header("Connection", "close")
        self._reply(status, (message + "\n").encode())

    def prepare(self) -> None:
        connection = self._connection()
        if connection is not None:
            connection.busy = True
            connection.started += 1
        method, path = self.request.method, self.request.path
        if method == "GET" and path in (METRICS_PATH, HEALTH_PATH):
            return
        if not self.receiver.authorised(self.request.headers.get("Authorization")):
            self._refuse(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
            return
        if connection is not None:
            connection.authenticated = True
        if path != WEBHOOK_PATH:
            self._refuse(HTTPStatus.NOT_FOUND, "not-found", f"nothing at {path}; Alertmanager posts to {WEBHOOK_PATH}")
            return
        if method != "POST":
            self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "not-found", f"{method} is not served; Alertmanager uses POST")
            return
        length = self.request.headers.get("Content-Length")
        if length is None:
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "malformed", "a Content-Length is required")
            return
        # ASCII digits only and few of them: "²" is a digit to str.isdigit() and 5,000 digits are too many for int().
        if _CONTENT_LENGTH.fullmatch(length) is None:
            if re.fullmatch(r"[0-9]+", length):
                self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-large", f"body of {len(length)} digits is over the {self.receiver.max_body} byte limit")
            else:
                self._refuse(HTTPStatus.BAD_REQUEST, "malformed", "Content-Length is not a number")
            return
        if int(length) > self.receiver.max_body:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-large", f"body of {length} bytes is over the {self.receiver.max_body} byte limit")
            return
        self._accepting = True

    def on_finish(self) -> None:
        connection = self._connection()
        if connection is not None:
            connection.busy = False
            connection.answered += 1

    def on_connection_close(self) -> None:
        connection = self._connection()
        if connection is not None:
            connection.busy = False

    def data_received(self, chunk: bytes) -> None:
        if self._accepting:
            self._body += chunk

    def get(self) -> None:
        path = self.request.path
        if path == METRICS_PATH:
            self._reply(HTTPStatus.OK, generate_latest(self.receiver.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == HEALTH_PATH:
            healthy, text = self.receiver.health()
            self._reply(HTTPStatus.OK if healthy else HTTPStatus.SERVICE_UNAVAILABLE, (text + "\n").encode())

    def post(self) -> None:
        try:
            body: Any = json.loads(bytes(self._body))
            alerts = parse_payload(body)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError and int()'s digit limit are ValueErrors
            if isinstance(err, PayloadError):
                self._refuse(HTTPStatus.BAD_REQUEST, "malformed", f"not an Alertmanager webhook payload: {err}")
            else:
                self._refuse(HTTPStatus.BAD_REQUEST, "malformed", _decode_error(err))
            return
        for alert in alerts:
            source = alert.name if alert.name in ("NodeDown", "SiteUnreachable", "TunnelDown") else "other"
            self.receiver.metrics.alerts_received.labels(source, alert.status).inc()
        if self.receiver.on_alerts(alerts) is False:
            self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, "overloaded", "too many alerts waiting to be decided; Alertmanager retries")
            return
        self._reply(HTTPStatus.OK, b"ok\n")

    def _not_served(self) -> None:
        """Prepare refused every request that reaches here."""

    put = delete = patch = head = options = _not_served

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # A bug answering one request is logged and counted; the server goes on.
        self.receiver.metrics.errors.labels("receiver").inc()
        log.error("error answering %s %s: %s", self.request.method, self.request.path, value, exc_info=(typ, value, tb))
