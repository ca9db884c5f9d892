"""The webhook receiver: payloads recorded from a real Alertmanager (0.25, webhook version 4), bad tokens,
malformed JSON, oversized bodies; and /metrics."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resinfra.healer.alerts import Alert, PayloadError, parse_payload, parse_time
from resinfra.healer.observe import Metrics
from resinfra.healer.receiver import MAX_BODY, Receiver

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"
TOKEN = "receiver-test-token-0123456789abcdef"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


class Running:
    def __init__(self, **limits: Any) -> None:
        self.received: list[list[Alert]] = []
        self.metrics = Metrics()
        self.receiver = Receiver("127.0.0.1", 0, TOKEN, self.received.append, self.metrics, **limits)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.receiver.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def post(self, body: bytes, token: str | None = TOKEN, path: str = "/alerts") -> int:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.request("POST", path, body, headers)[0]

    def rejected(self, why: str) -> float:
        return self.metrics.registry.get_sample_value("resinfra_healer_rejected_requests_total", {"why": why}) or 0.0


@pytest.fixture
def server() -> Iterator[Running]:
    running = Running()
    running.receiver.start()
    yield running
    running.receiver.stop()


@pytest.mark.parametrize("name", ["node-down-firing", "node-down-resolved", "site-unreachable-firing", "site-unreachable-resolved"])
def test_recorded_payloads_are_accepted(server: Running, name: str) -> None:
    payload = recorded(name)
    assert server.post(json.dumps(payload).encode()) == 200
    (alerts,) = server.received
    raw = payload["alerts"]
    assert [(a.name, a.status, a.fingerprint) for a in alerts] == [(r["labels"]["alertname"], r["status"], r["fingerprint"]) for r in raw]
    assert alerts[0].starts_at == parse_time(raw[0]["startsAt"])


def test_node_down_carries_what_the_policy_reads(server: Running) -> None:
    server.post(json.dumps(recorded("node-down-firing")).encode())
    (alert,) = server.received[0]
    assert alert.name == "NodeDown" and alert.status == "firing"
    assert {k: alert.labels[k] for k in ("node", "site", "role", "scope")} == {
        "node": "ri-dev-azure-worker-1",
        "site": "azure",
        "role": "worker",
        "scope": "node",
    }
    counted = server.metrics.registry.get_sample_value("resinfra_healer_alerts_received_total", {"alertname": "NodeDown", "status": "firing"})
    assert counted == 1


def test_site_unreachable_names_its_site(server: Running) -> None:
    server.post(json.dumps(recorded("site-unreachable-firing")).encode())
    alert = server.received[0][0]
    assert (alert.name, alert.labels["site"], alert.labels["scope"]) == ("SiteUnreachable", "gcp", "site")


@pytest.mark.parametrize("token", [None, "", "presented-token-sentinel-77", TOKEN + "x", TOKEN.upper()], ids=["missing", "empty", "wrong", "longer", "case"])
def test_anything_but_the_token_is_refused_with_401_and_logged(server: Running, token: str | None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="resinfra.healer.receiver"):
        assert server.post(json.dumps(recorded("node-down-firing")).encode(), token=token) == 401
    assert server.received == []
    assert server.rejected("unauthorized") == 1
    (record,) = [r for r in caplog.records if "refused" in r.getMessage()]
    assert "401" in record.getMessage() and "127.0.0.1" in record.getMessage()
    if token:
        assert token not in caplog.text, "a presented token is never logged"


def test_other_authorisation_schemes_are_refused(server: Running) -> None:
    status, _ = server.request("POST", "/alerts", b"{}", {"Authorization": f"Basic {TOKEN}"})
    assert status == 401


def test_unknown_paths_and_methods_are_refused_before_anything_else(server: Running) -> None:
    assert server.post(b"{}", token=None, path="/admin") == 401
    assert server.request("GET", "/alerts")[0] == 401
    assert server.request("DELETE", "/alerts")[0] == 401
    assert server.request("DELETE", "/alerts", headers={"Authorization": f"Bearer {TOKEN}"})[0] == 405
    assert server.post(json.dumps(recorded("node-down-firing")).encode(), path="/other") == 404


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"\xff\xfe", b"[]", b'{"version": "3", "alerts": []}', b'{"version": "4", "alerts": [{"labels": {}}]}', b'{"version": "4"}'],
    ids=["broken-json", "not-utf8", "a-list", "version-3", "alert-without-labels", "no-alerts"],
)
def test_malformed_bodies_get_400(server: Running, body: bytes) -> None:
    assert server.post(body) == 400
    assert server.received == [] and server.rejected("malformed") == 1


def test_oversized_bodies_get_413_without_being_read(server: Running) -> None:
    # Only the headers are sent: the answer comes without the body ever being read.
    with socket.create_connection(("127.0.0.1", server.receiver.port), timeout=10) as raw:
        raw.sendall(f"POST /alerts HTTP/1.1\r\nHost: healer\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode())
        assert raw.recv(4096).split(b" ")[1] == b"413"
    assert server.received == [] and server.rejected("too-large") == 1
    # Exactly at the limit is still read (and refused only for what it is).
    at_limit = json.dumps(recorded("node-down-firing")).encode()
    at_limit += b" " * (MAX_BODY - len(at_limit))
    assert server.post(at_limit) == 200


def test_a_body_without_length_gets_411(server: Running) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.receiver.port, timeout=10)
    connection.putrequest("POST", "/alerts")
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"0\r\n\r\n")
    assert connection.getresponse().status == 411
    connection.close()


def test_metrics_and_health_need_no_token(server: Running) -> None:
    status, body = server.request("GET", "/metrics")
    assert status == 200
    text = body.decode()
    for name in ("resinfra_healer_decisions_total", "resinfra_healer_repairs_started_total", "resinfra_healer_repair_duration_seconds_bucket"):
        assert name in text
    assert server.request("GET", "/healthz")[0] == 200


def test_parse_payload_rejects_what_is_not_version_4() -> None:
    with pytest.raises(PayloadError, match="version"):
        parse_payload({**recorded("node-down-firing"), "version": "5"})
    with pytest.raises(PayloadError, match="RFC 3339"):
        parse_payload({**recorded("node-down-firing"), "alerts": [{**recorded("node-down-firing")["alerts"][0], "startsAt": "yesterday"}]})


def test_nanosecond_times_parse() -> None:
    assert parse_time("2026-11-26T07:30:42.962123456Z") == pytest.approx(parse_time("2026-11-26T07:30:42Z") + 0.962123, abs=1e-6)


# Defect: some malformed requests got no HTTP answer at all (a traceback instead) and went uncounted.


def raw_exchange(port: int, request: bytes, timeout: float = 5) -> bytes:
    """Send ``request`` as is and read the answer until the server closes or answers (b"" when it closes without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
        raw.sendall(request)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer:
                chunk = raw.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            pass
        return answer


def post_raw(content_length: str, body: bytes) -> bytes:
    head = (
        f"POST /alerts HTTP/1.1\r\nHost: healer\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {content_length}\r\n\r\n"
    )
    # Header bytes as HTTP carries them (ISO-8859-1): "\u00b2" is the single byte 0xB2.
    return head.encode("latin-1") + body


def with_starts_at(starts_at: str) -> bytes:
    payload = recorded("node-down-firing")
    payload["alerts"][0]["startsAt"] = starts_at
    return json.dumps(payload).encode()


BIG_INTEGER = b'{"version": "4", "alerts": [], "truncatedAlerts": ' + b"7" * 5000 + b"}"

MALFORMED_REQUESTS = {
    # Content-Length: a digit Python's str.isdigit() accepts and int() does not; a number int() refuses to convert.
    "content-length-superscript": post_raw("\u00b2", b"{}"),
    "content-length-5000-digits": post_raw("9" * 5000, b"{}"),
    "starts-at-month-13": post_raw(str(len(with_starts_at("2026-13-01T00:00:00Z"))), with_starts_at("2026-13-01T00:00:00Z")),
    "starts-at-year-0": post_raw(str(len(with_starts_at("0000-01-01T00:00:00Z"))), with_starts_at("0000-01-01T00:00:00Z")),
    "integer-5000-digits": post_raw(str(len(BIG_INTEGER)), BIG_INTEGER),
    "json-nested-100000-deep": post_raw(str(200_000), b"[" * 100_000 + b"]" * 100_000),
}


@pytest.mark.parametrize("name", list(MALFORMED_REQUESTS))
def test_every_malformed_request_gets_an_http_answer_and_is_counted(server: Running, name: str) -> None:
    answer = raw_exchange(server.receiver.port, MALFORMED_REQUESTS[name])
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1:2] in ([b"400"], [b"413"]), f"{name}: answered {status_line!r}"
    assert server.received == []
    assert server.rejected("malformed") + server.rejected("too-large") == 1, "the rejection is counted"


# Defect: slow clients held a thread each, with a read timeout that restarted at every byte.


def test_a_request_has_a_deadline_however_slowly_it_trickles() -> None:
    running = Running(header_deadline=1.0)
    running.receiver.start()
    try:
        with socket.create_connection(("127.0.0.1", running.receiver.port), timeout=5) as slow:
            slow.sendall(b"POST /alerts HTTP/1.1\r\n")
            began = time.monotonic()
            closed = False
            while time.monotonic() - began < 4:
                try:
                    slow.sendall(b"X")  # a byte every 0.1 s: a per-byte timeout would never end it
                    time.sleep(0.1)
                    if slow.recv(1, socket.MSG_DONTWAIT) == b"":
                        closed = True
                        break
                except BlockingIOError:
                    continue
                except OSError:
                    closed = True
                    break
            assert closed and time.monotonic() - began < 2.0, "cut off at its deadline"
        wait_until(lambda: running.rejected("incomplete") == 1)
    finally:
        running.receiver.stop()


def test_one_source_cannot_hold_every_connection() -> None:
    running = Running(connection_limit=20, per_source_unauthenticated=5)
    running.receiver.start()
    try:
        flood = []
        for _ in range(8):
            sock = socket.socket()
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", running.receiver.port))
            flood.append(sock)
            time.sleep(0.02)
        wait_until(lambda: running.rejected("source-limit") == 3)
        # The oldest of that source were closed; another source is served at once.
        assert flood[0].recv(1) == b""
        assert running.post(json.dumps(recorded("node-down-firing")).encode()) == 200
        for sock in flood:
            sock.close()
    finally:
        running.receiver.stop()


def wait_until(check: Any, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_slow_connections_hold_no_thread_each(server: Running) -> None:
    before = threading.active_count()
    slow = []
    for _ in range(200):
        sock = socket.create_connection(("127.0.0.1", server.receiver.port), timeout=5)
        sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: healer\r\n")
        slow.append(sock)
    try:
        time.sleep(0.5)
        assert threading.active_count() - before < 5, f"{threading.active_count() - before} threads for 200 slow connections"
        assert server.post(json.dumps(recorded("node-down-firing")).encode()) == 200
    finally:
        for sock in slow:
            sock.close()


def test_the_listen_backlog_holds_a_burst(server: Running) -> None:
    """``ss`` shows a listening socket's backlog as its Send-Q."""
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{server.receiver.port}"], capture_output=True, text=True, check=True).stdout.split()
    assert int(listening[2]) >= 1024, f"listen backlog {listening[2]}"
