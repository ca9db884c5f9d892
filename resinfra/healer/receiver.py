"""Detect, HTTP part: Alertmanager's webhook (bearer token, size limit, version 4 JSON) and ``/metrics``, on the standard library's server."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from resinfra.healer.alerts import Alert, PayloadError, parse_payload
from resinfra.healer.observe import Metrics

log = logging.getLogger("resinfra.healer.receiver")

WEBHOOK_PATH = "/alerts"
METRICS_PATH = "/metrics"
HEALTH_PATH = "/healthz"
MAX_BODY = 1024 * 1024
"""Bytes. Alertmanager groups the healer's alerts per alert, site and node, so a body is a few KB;
1 MiB leaves room for a whole-site group and refuses anything absurd before reading it."""
READ_TIMEOUT = 10.0
"""Seconds a client may take to send its request (a stalled client must not hold a thread)."""


class Receiver:
    """The healer's HTTP endpoint.

    + host, port: where to listen (127.0.0.1 on the resinfra VM; port 0 picks a free one)
    + token: the bearer token Alertmanager presents (``credentials_file`` of its webhook)
    + on_alerts: called with each accepted payload's alerts
    + metrics: counts rejections and serves ``/metrics``
    """

    def __init__(self, host: str, port: int, token: str, on_alerts: Callable[[list[Alert]], None], metrics: Metrics, max_body: int = MAX_BODY):
        if not token:
            raise ValueError("the healer needs a bearer token")
        self._expected = f"Bearer {token}".encode()
        self._on_alerts = on_alerts
        self._metrics = metrics
        self._max_body = max_body
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name="healer-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _authorised(self, header: str | None) -> bool:
        # Constant-time comparison: the token is a secret.
        return header is not None and hmac.compare_digest(header.encode(), self._expected)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "resinfra-healer"
            sys_version = ""
            timeout = READ_TIMEOUT

            def _reply(self, status: HTTPStatus, body: bytes = b"", content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                if status is HTTPStatus.UNAUTHORIZED:
                    self.send_header("WWW-Authenticate", 'Bearer realm="resinfra-healer"')
                self.end_headers()
                self.wfile.write(body)

            def _refuse(self, status: HTTPStatus, why: str, message: str) -> None:
                receiver._metrics.rejected.labels(why).inc()
                # Never log what was presented as a token: it may be a mistyped real one.
                log.warning("refused %s %s from %s: %s (%d)", self.command, self.path, self.client_address[0], message, status.value)
                self.close_connection = True
                self._reply(status, (message + "\n").encode())

            def do_GET(self) -> None:
                if self.path == METRICS_PATH:
                    self._reply(HTTPStatus.OK, generate_latest(receiver._metrics.registry), CONTENT_TYPE_LATEST)
                elif self.path == HEALTH_PATH:
                    self._reply(HTTPStatus.OK, b"ok\n")
                elif not receiver._authorised(self.headers.get("Authorization")):
                    self._refuse(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
                else:
                    self._refuse(HTTPStatus.NOT_FOUND, "not-found", f"nothing at {self.path}")

            def do_POST(self) -> None:
                # Authentication first: an anonymous client learns nothing, not even what exists.
                if not receiver._authorised(self.headers.get("Authorization")):
                    self._refuse(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
                    return
                if self.path != WEBHOOK_PATH:
                    self._refuse(HTTPStatus.NOT_FOUND, "not-found", f"nothing at {self.path}; Alertmanager posts to {WEBHOOK_PATH}")
                    return
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    self._refuse(HTTPStatus.LENGTH_REQUIRED, "malformed", "a Content-Length is required")
                    return
                if int(length) > receiver._max_body:
                    self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "too-large", f"body of {length} bytes is over the {receiver._max_body} byte limit")
                    return
                try:
                    body: Any = json.loads(self.rfile.read(int(length)))
                    alerts = parse_payload(body)
                except (json.JSONDecodeError, UnicodeDecodeError) as err:
                    self._refuse(HTTPStatus.BAD_REQUEST, "malformed", f"not JSON: {err.msg if isinstance(err, json.JSONDecodeError) else err.reason}")
                    return
                except PayloadError as err:
                    self._refuse(HTTPStatus.BAD_REQUEST, "malformed", f"not an Alertmanager webhook payload: {err}")
                    return
                for alert in alerts:
                    source = alert.name if alert.name in ("NodeDown", "SiteUnreachable", "TunnelDown") else "other"
                    receiver._metrics.alerts_received.labels(source, alert.status).inc()
                receiver._on_alerts(alerts)
                self._reply(HTTPStatus.OK, b"ok\n")

            def do_PUT(self) -> None:
                if not receiver._authorised(self.headers.get("Authorization")):
                    self._refuse(HTTPStatus.UNAUTHORIZED, "unauthorized", "missing or wrong bearer token")
                else:
                    self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, "not-found", f"{self.command} is not served; Alertmanager uses POST")

            do_DELETE = do_PUT
            do_PATCH = do_PUT

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("%s " + format, self.client_address[0], *args)

        return Handler
