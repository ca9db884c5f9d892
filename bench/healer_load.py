"""The healer's webhook under load on loopback: requests/s, p50/p99 latency and peak RSS for valid, invalid and slow-connection loads.

Run: ``uv run python bench/healer_load.py [--server healer|stdlib|uvicorn] [--slow 2000]``.

``healer`` is the real service (``resinfra heal`` with a local action, its Tornado receiver).
The others replay its receiver's work (bearer token, size limit, JSON, webhook parsing) on
another server, to compare the candidates on the same loads: ``stdlib`` is the standard
library's ThreadingHTTPServer as the healer used it before (a thread per connection, listen
backlog 5, a 10 s timeout per read, no LimitNOFILE: 1,024 files); ``uvicorn`` needs
``uv run --with uvicorn==0.54.0`` (not a project dependency).

Loads: ``valid`` (webhooks with the token, each naming another machine, from 16 keep-alive
clients), ``invalid`` (a wrong token, a broken body), ``slow`` (``--slow`` connections that send
half their headers and then a byte a second, reopened when closed, while one valid webhook
a second is timed). The target: 2,000 slow connections do not delay a valid alert past 1 s.
Each server process gets the file limit the healer's unit sets (8,192; ``stdlib``: 1,024).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from resinfra.addressing import Role
from resinfra.healer.alerts import format_time
from resinfra.render.healer import HEALER_NOFILE

TOKEN = "bench-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
STDLIB_NOFILE = 1024
"""systemd's default soft file limit, which the healer's unit had before it set LimitNOFILE."""


def webhook(i: int, starts: float) -> bytes:
    """An Alertmanager version 4 body: NodeDown for machine ``ghost-<i>`` (not in the inventory: refused, never acted on)."""
    labels = {"alertname": "NodeDown", "node": f"ghost-{i}", "site": "gcp", "role": "worker", "scope": "node"}
    alert = {
        "status": "firing",
        "labels": labels,
        "annotations": {},
        "startsAt": format_time(starts),
        "endsAt": "0001-01-01T00:00:00Z",
        "fingerprint": f"g{i:08d}",
    }
    return json.dumps({"version": "4", "status": "firing", "receiver": "healer", "alerts": [alert]}).encode()


# -- the servers


STDLIB_SERVER = """
import hmac, json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from resinfra.healer.alerts import parse_payload
expected = ("Bearer " + sys.argv[1]).encode()
class H(BaseHTTPRequestHandler):
    timeout = 10.0
    def log_message(self, *a): pass
    def reply(self, code):
        self.send_response(code); self.send_header("Content-Length", "0"); self.end_headers()
    def do_POST(self):
        auth = self.headers.get("Authorization")
        if auth is None or not hmac.compare_digest(auth.encode(), expected):
            return self.reply(401)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit() or int(length) > 1048576:
            return self.reply(400)
        try:
            parse_payload(json.loads(self.rfile.read(int(length))))
        except ValueError:
            return self.reply(400)
        self.reply(200)
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
server.daemon_threads = True
print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
server.serve_forever()
"""

UVICORN_SERVER = """
import hmac, json, sys
import uvicorn
from resinfra.healer.alerts import parse_payload
expected = ("Bearer " + sys.argv[1]).encode()
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = dict(scope["headers"])
    async def reply(code):
        await send({"type": "http.response.start", "status": code, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
    auth = headers.get(b"authorization")
    if auth is None or not hmac.compare_digest(auth, expected):
        return await reply(401)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > 1048576:
            return await reply(413)
        if not message.get("more_body"):
            break
    try:
        parse_payload(json.loads(body))
    except (ValueError, RecursionError):
        return await reply(400)
    await reply(200)
sock_config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", backlog=1024, limit_concurrency=None)
print("listening on 127.0.0.1:%s" % sys.argv[2], flush=True)
uvicorn.Server(sock_config).run()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def server(kind: str, workdir: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start ``kind`` in a process of its own with its file limit; yields (process, port)."""
    nofile = STDLIB_NOFILE if kind == "stdlib" else HEALER_NOFILE
    if kind == "healer":
        (workdir / "token").write_text(TOKEN)
        inventory = [{"name": "ri-bench-worker-1", "site": "gcp", "provider": "gcp", "role": Role.WORKER.value, "urn": "urn:pulumi:bench::r::t::w1"}]
        (workdir / "inventory.json").write_text(json.dumps(inventory))
        settings = {
            "listenHost": "127.0.0.1",
            "listenPort": 0,
            "tokenFile": str(workdir / "token"),
            "journal": str(workdir / "journal.sqlite"),
            "auditLog": str(workdir / "audit.jsonl"),
            "policy": {},
            "tickSeconds": 1,
        }
        (workdir / "healer.json").write_text(json.dumps(settings))
        argv = [
            sys.executable,
            "-m",
            "resinfra.cli",
            "heal",
            "--settings",
            str(workdir / "healer.json"),
            "--inventory",
            str(workdir / "inventory.json"),
            "--action-command",
            "true",
        ]
    elif kind == "stdlib":
        argv = [sys.executable, "-c", STDLIB_SERVER, TOKEN]
    else:
        argv = [sys.executable, "-c", UVICORN_SERVER, TOKEN, str(free_port())]

    def limits() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log = (workdir / f"{kind}.log").open("ab")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT, preexec_fn=limits)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"{kind} did not start: {(workdir / f'{kind}.log').read_text()[-2000:]}")
        port = int(line.rsplit(":", 1)[1])
        wait_until_listening(port)  # uvicorn prints before it binds
        yield process, port
    finally:
        process.kill()
        process.wait(10)
        log.close()


def wait_until_listening(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- the loads


def post(connection: http.client.HTTPConnection, body: bytes, token: str = TOKEN) -> tuple[int, float]:
    began = time.perf_counter()
    connection.request("POST", "/alerts", body, {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    return response.status, time.perf_counter() - began


def run_clients(
    port: int, count: int, clients: int, request: Callable[[http.client.HTTPConnection, int], tuple[int, float]]
) -> tuple[float, list[float], dict[int, int]]:
    """``count`` requests from ``clients`` keep-alive connections: (requests/s, latencies, answers by status)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def client(first: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(first, count, clients):
            try:
                status, seconds = request(connection, i)
            except (OSError, http.client.HTTPException) as err:
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status, seconds = 0, float("nan")
                with lock:
                    errors[type(err).__name__] = errors.get(type(err).__name__, 0) + 1
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
                if status:
                    latencies.append(seconds)
        connection.close()

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    if errors:
        print(f"  (client errors: {', '.join(f'{k} {v}' for k, v in sorted(errors.items()))})")
    return count / (time.perf_counter() - began), latencies, statuses


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def line(label: str, rate: float | None, latencies: list[float], statuses: dict[int, int], rss: float) -> str:
    answers = ", ".join(f"{k or 'no answer'}: {v}" for k, v in sorted(statuses.items()))
    shown = f"{rate:7.0f} req/s" if rate is not None else "           "
    p50, p99 = percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000
    return f"  {label:8s} {shown}   p50 {p50:8.1f} ms   p99 {p99:8.1f} ms   max {max(latencies, default=float('nan')) * 1000:8.1f} ms   peak RSS {rss:6.1f} MB   ({answers})"


class Slow:
    """Slow connections: half a request's headers, then a byte every second; reopened when the server closes them."""

    def __init__(self, port: int, count: int):
        self.port = port
        self.socks: list[socket.socket] = []
        self.reopened = 0
        for _ in range(count):
            self.socks += self._open()
            time.sleep(0.005)  # slow enough for a short listen backlog to accept each (see tests/healer/test_faults.py)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _open(self) -> list[socket.socket]:
        sock = socket.socket()
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", self.port))
            sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: healer\r\nContent-Length: 100\r\n")
        except OSError:
            sock.close()
            return []
        return [sock]

    def _trickle(self) -> None:
        while not self._stop.wait(1.0):
            for i, sock in enumerate(self.socks):
                try:
                    sock.sendall(b"X")
                except OSError:
                    sock.close()
                    self.socks[i : i + 1] = self._open() or [sock]
                    self.reopened += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def main() -> int:
    parser = argparse.ArgumentParser(description="The healer's webhook under valid, invalid and slow-connection loads (loopback).")
    parser.add_argument("--server", choices=("healer", "stdlib", "uvicorn"), default="healer")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--slow", type=int, default=2000, help="slow connections (default 2,000)")
    parser.add_argument("--seconds", type=int, default=30, help="how long valid alerts are timed under the slow connections")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.slow + 1024)), hard))
    print(f"{args.server}: {os.cpu_count()} cores shared with other work; loopback; {args.requests} requests per load, {args.slow} slow connections")
    starts = time.time() - 120
    with tempfile.TemporaryDirectory(prefix="healer-load-") as tmp, server(args.server, Path(tmp)) as (process, port):
        rate, latencies, statuses = run_clients(port, args.requests, 16, lambda c, i: post(c, webhook(i, starts)))
        print(line("valid", rate, latencies, statuses, peak_rss_mb(process.pid)))
        rate, latencies, statuses = run_clients(
            port, args.requests, 16, lambda c, i: post(c, webhook(i, starts), token="wrong") if i % 2 else post(c, b"{not json")
        )
        print(line("invalid", rate, latencies, statuses, peak_rss_mb(process.pid)))
        slow = Slow(port, args.slow)
        try:
            valid: list[float] = []
            statuses = {}
            for i in range(args.seconds):
                time.sleep(1)
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    status, seconds = post(connection, webhook(10**6 + i, starts))
                    valid.append(seconds)
                except OSError:
                    status = 0
                finally:
                    connection.close()
                statuses[status] = statuses.get(status, 0) + 1
            print(line("slow", None, valid, statuses, peak_rss_mb(process.pid)) + f"  [{len(slow.socks)} slow connections held, {slow.reopened} reopened]")
            met = statuses.get(200) == args.seconds and max(valid) < 1.0
            print(f"  target (every valid alert answered within 1 s under {args.slow} slow connections): {'met' if met else 'MISSED'}")
        finally:
            slow.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
