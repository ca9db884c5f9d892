"""The healer under faults and abuse, as a real ``resinfra heal`` process on loopback: a write failing mid-repair, file
descriptors running out, slow connections, a flood of distinct alerts, a damaged journal, ``kill -9`` during an action.

Each test is one defect the service once had (see docs/ARCHITECTURE.md, "The healer under faults").
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import resource
import shlex
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from resinfra.healer.alerts import Alert
from resinfra.render.healer import HealerLayout, render_healer_unit
from tests.healer.helpers import node_down, site_unreachable, webhook
from tests.healer.process import TOKEN, Service, audit, wait_for, write_settings

W1, OTHER = "ri-dev-gcp-worker-1", "ri-dev-azure-worker-1"
SYSTEMD_DEFAULT_NOFILE = 1024
"""systemd's soft DefaultLimitNOFILE (man 5 systemd-system.conf: "defaults to 1024:524288"), which a unit without
LimitNOFILE gets."""


def unit_nofile() -> int:
    """The file limit the rendered unit gives the healer (systemd's default soft limit when it sets none)."""
    match = re.search(r"^LimitNOFILE=(\d+)", render_healer_unit(HealerLayout()), re.MULTILINE)
    return int(match[1]) if match else SYSTEMD_DEFAULT_NOFILE


def recording_action(tmp_path: Path, seconds: float = 0, extra: str = "", signals: str = "INT TERM") -> str:
    """An action that logs "start MACHINE TIME" / "end MACHINE TIME", notes any overlap with another action, and sleeps."""
    log, running = tmp_path / "actions.log", tmp_path / "action-running"
    script = f"""
echo "start $RESINFRA_MACHINE $(date +%s.%N)" >> {log}
if [ -e {running} ]; then echo "overlap $RESINFRA_MACHINE $(cat {running})" >> {log}; fi
echo "$RESINFRA_MACHINE" > {running}
{extra}
trap 'kill $pid 2>/dev/null; rm -f {running}; echo "end $RESINFRA_MACHINE $(date +%s.%N)" >> {log}; exit 1' {signals}
sleep {seconds} & pid=$!
wait $pid
rm -f {running}
echo "end $RESINFRA_MACHINE $(date +%s.%N)" >> {log}
"""
    return f"sh -c {shlex.quote(script)}"


def actions(tmp_path: Path) -> list[tuple[str, str, float]]:
    """(what, machine, time) lines of the recording action's log."""
    path = tmp_path / "actions.log"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        what, machine, *rest = line.split()
        out.append((what, machine, float(rest[0]) if rest and rest[0].replace(".", "").isdigit() else 0.0))
    return out


def started(tmp_path: Path) -> list[str]:
    return [m for what, m, _ in actions(tmp_path) if what == "start"]


def outcomes(tmp_path: Path) -> list[tuple[str, str | None]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite")) as db:
        return list(db.execute("SELECT machine, outcome FROM repairs ORDER BY id"))


@pytest.fixture
def services() -> Iterator[list[Service]]:
    running: list[Service] = []
    yield running
    for service in running:
        service.end()


def start(services: list[Service], tmp_path: Path, action: str, **kwargs: Any) -> Service:
    service = Service(tmp_path, action, **kwargs)
    services.append(service)
    return service


def down(machine: str, ago: float = 120) -> dict[str, object]:
    return webhook(node_down(machine, time.time() - ago))


# 1. One failed write stopped all repairs while /healthz stayed green.


def test_the_audit_log_unwritable_mid_repair_stops_nothing_and_is_reported(tmp_path: Path, services: list[Service]) -> None:
    write_settings(tmp_path)
    audit_log = tmp_path / "audit.jsonl"
    # The first action replaces the audit log by a directory: every later write to it fails.
    breaker = f'if [ "$RESINFRA_MACHINE" = {W1} ]; then rm -f {audit_log}; mkdir {audit_log}; fi'
    healer = start(services, tmp_path, recording_action(tmp_path, 0.5, breaker))
    healer.post(down(W1))
    wait_for(lambda: healer.metric("resinfra_healer_repair_in_flight") == 0 and W1 in started(tmp_path), "the first repair ends")
    assert wait_for(lambda: [o for m, o in outcomes(tmp_path) if m == W1] == ["succeeded"], "the first repair is finished in the journal")
    assert (healer.metric("resinfra_healer_errors_total", component="audit-log") or 0) >= 1, "the failure is counted (HealerDegraded)"
    _, text = healer.get("/healthz")
    assert "degraded" in text and "audit-log" in text, text
    # The next machine is still repaired.
    healer.post(down(OTHER))
    wait_for(lambda: OTHER in started(tmp_path), "the next machine is repaired", timeout=15)
    assert wait_for(lambda: [o for m, o in outcomes(tmp_path) if m == OTHER] == ["succeeded"], "and its repair finished")
    with contextlib.closing(sqlite3.connect(tmp_path / "journal.sqlite")) as db:
        components = [c for (c,) in db.execute("SELECT component FROM failures")]
    assert "audit-log" in components, "the failure is written to the journal"


# 1 (how it was reached). File descriptors exhausted by slow connections during a repair.


PACE = 0.005
"""Seconds between two new connections: slow enough for a server with a short listen backlog to accept each (faster,
the kernel drops the handshake's last ACK once the backlog is full, and the client believes in a connection the
server never accepted)."""


def slow_connections(port: int, count: int, source: str = "127.0.0.1") -> list[socket.socket]:
    """``count`` connections that send half a request's headers and stop (the client side of slowloris)."""
    out = []
    for i in range(count):
        if i:
            time.sleep(PACE)
        sock = socket.socket()
        sock.settimeout(5)
        sock.bind((source, 0))
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(b"POST /alerts HTTP/1.1\r\nHost: healer\r\nContent-Length: 100\r\n")
        except OSError:
            sock.close()
            continue
        out.append(sock)
    return out


def raise_own_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def timed_post(service: Service, body: dict[str, object], timeout: float = 30) -> float:
    began = time.perf_counter()
    assert service.post(body, timeout=timeout) == 200
    return time.perf_counter() - began


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def test_file_descriptors_exhausted_by_slow_clients_during_a_repair(tmp_path: Path, services: list[Service]) -> None:
    nofile = 256
    write_settings(tmp_path)
    raise_own_file_limit(4096)
    healer = start(services, tmp_path, recording_action(tmp_path, 10), nofile=nofile)
    healer.post(down(W1))
    wait_for(lambda: W1 in started(tmp_path), "the repair starts")
    # While it runs: slow connections until the healer holds (nearly) all its files, or it stops taking more.
    attackers: list[socket.socket] = []
    for _ in range(2 * nofile):
        attackers += slow_connections(healer.port, 1)
        if open_files(healer.pid) >= nofile - 4:
            break
    held = open_files(healer.pid)
    try:
        assert wait_for(lambda: [o for m, o in outcomes(tmp_path) if m == W1] not in ([], [None]), "the repair is finished in the journal", timeout=30)
        assert timed_post(healer, down(OTHER)) < 2, f"a valid alert is still answered (the healer held {held} files)"
        wait_for(lambda: OTHER in started(tmp_path), "and the next repair starts", timeout=15)
        assert healer.get("/healthz")[0] == 200
    finally:
        for sock in attackers:
            sock.close()


# 3. Slowloris without a token blocked the webhook.


class Slowloris:
    """``count`` slow connections kept open: opened at a pace the server can accept, one byte each every ``pace`` seconds
    (never idle long enough for a per-read timeout), reopened when the server closes them."""

    def __init__(self, port: int, count: int, pace: float = 1.0):
        self.port, self.count, self.pace = port, count, pace
        self.socks = slow_connections(port, count)
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._trickle, daemon=True)
        self._thread.start()

    def _trickle(self) -> None:
        while not self._stop.wait(self.pace):
            for i, sock in enumerate(self.socks):
                if self._stop.is_set():
                    return
                try:
                    sock.sendall(b"X")
                except OSError:
                    sock.close()
                    self.socks[i : i + 1] = slow_connections(self.port, 1) or [sock]
                    self.reopened += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for sock in self.socks:
            sock.close()


def test_2000_slow_connections_do_not_delay_a_valid_alert_past_one_second(tmp_path: Path, services: list[Service]) -> None:
    write_settings(tmp_path)
    raise_own_file_limit(8192)
    healer = start(services, tmp_path, recording_action(tmp_path), nofile=unit_nofile())
    attack = Slowloris(healer.port, 2000)
    try:
        assert len(attack.socks) >= 1900, f"the attack opened {len(attack.socks)} connections"
        latencies = []
        # Alerts while the attack goes on: early, and once a server that gives each connection a thread would have run out.
        began = time.monotonic()
        for at, machine in ((2, W1), (12, OTHER), (24, "ri-dev-hetzner-worker-1")):
            time.sleep(max(0.0, began + at - time.monotonic()))
            latencies.append(timed_post(healer, down(machine)))
        assert max(latencies) < 1.0, f"valid alerts answered in {latencies} s under 2,000 slow connections"
        assert healer.get("/healthz", timeout=5)[0] == 200
    finally:
        attack.close()


# 4. Cost grew with every distinct alert.


class Capture(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        Capture.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def ghost_down(i: int) -> Alert:
    labels = {"alertname": "NodeDown", "node": f"ghost-{i}", "site": "gcp", "role": "worker", "scope": "node"}
    return Alert("NodeDown", "firing", labels, time.time() - 120, f"ghost-{i:05d}")


def test_5000_webhooks_naming_distinct_unknown_machines_cost_bounded_threads_and_memory(tmp_path: Path, services: list[Service]) -> None:
    notifications = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=notifications.serve_forever, args=(0.05,), daemon=True).start()
    Capture.bodies = []
    write_settings(tmp_path, notification_url=f"http://127.0.0.1:{notifications.server_address[1]}/notify")
    healer = start(services, tmp_path, recording_action(tmp_path))
    rss_before = healer.status("VmRSS")
    threads: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.05):
            with contextlib.suppress(OSError, KeyError):
                threads.append(healer.status("Threads"))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def send(start_at: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", healer.port, timeout=30)
        for i in range(start_at, 5000, 16):
            body = json.dumps(webhook(ghost_down(i))).encode()
            connection.request("POST", "/alerts", body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
        connection.close()

    began = time.monotonic()
    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(send, range(16), timeout=180))
        flood = time.monotonic() - began
        # Every alert is decided (each unknown machine refused once), then the loop still ticks on its own.
        wait_for(lambda: (healer.metric("resinfra_healer_decisions_total", kind="refuse", reason="unknown-machine") or 0) >= 5000, "every alert decided", 60)
        time.sleep(2)
        last_tick = healer.metric("resinfra_healer_last_tick_timestamp_seconds") or 0
        assert time.time() - last_tick < 2, "the decision loop is alive"
    finally:
        sampling.set()
        sampler.join(5)
        notifications.shutdown()
        notifications.server_close()
    rss_growth_mb = (healer.status("VmRSS") - rss_before) / 1024
    assert max(threads) <= 12, f"at most {max(threads)} threads (a handful, not one per connection or notification)"
    assert rss_growth_mb < 30, f"memory grew by {rss_growth_mb:.0f} MB"
    unknown = [b for b in Capture.bodies if b.get("reason") == "unknown-machine"]
    assert 1 <= len(unknown) <= 2 and sum(b.get("count", 1) for b in unknown) >= 1, f"{len(unknown)} notifications about unknown machines"
    assert flood < 120, f"the flood took {flood:.0f} s"
    # And a real failure is still repaired.
    healer.post(down(W1))
    wait_for(lambda: W1 in started(tmp_path), "a real NodeDown is still repaired")


# 2. A truncated or emptied journal was silently treated as new.


def truncate_to(size: int | None) -> Any:
    def damage(journal: Path) -> None:
        with journal.open("r+b") as f:
            f.truncate(size if size is not None else journal.stat().st_size // 2)

    return damage


def damage_header(journal: Path) -> None:
    with journal.open("r+b") as f:
        f.write(b"not a journal at all...")


def remove_wal(journal: Path) -> None:
    wal = journal.with_name(journal.name + "-wal")
    assert wal.exists() and wal.stat().st_size > 0, "the killed healer left its WAL"
    wal.unlink()


def delete(journal: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        journal.with_name(journal.name + suffix).unlink(missing_ok=True)


DAMAGES = {
    "truncated-to-0": truncate_to(0),
    "truncated-to-half": truncate_to(None),
    "header-damaged": damage_header,
    "wal-removed": remove_wal,
    "deleted": delete,
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_journal_makes_the_healer_refuse_with_exit_2_until_acknowledged(tmp_path: Path, services: list[Service], damage: str) -> None:
    write_settings(tmp_path)
    action = recording_action(tmp_path)
    first = start(services, tmp_path, action)
    first.post(down(W1))
    wait_for(lambda: [o for m, o in outcomes(tmp_path) if m == W1] == ["succeeded"], "the first repair recorded")
    first.kill()  # as a crash would: the WAL is not checkpointed
    DAMAGES[damage](tmp_path / "journal.sqlite")

    refused = start(services, tmp_path, action, expect_start=False)
    try:
        code = refused.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        code = None
    if code is None:  # it started as if new: show what that costs
        refused.post(down(W1))
        time.sleep(2)
    log = (tmp_path / "healer.log").read_text()
    assert code == 2, f"exit {code}; replaced {started(tmp_path)}; log: {log[-2000:]}"
    assert "refusing to act" in log and "acknowledge-journal" in log and log.count("Traceback") == 0
    assert started(tmp_path) == [W1], "nothing replaced again"
    # The unit does not restart it on that exit code (RestartPreventExitStatus), and the documented command lifts it.
    assert re.search(r"^RestartPreventExitStatus=.*\b2\b", render_healer_unit(HealerLayout()), re.MULTILINE)
    from resinfra import cli

    assert cli.main(["heal", "acknowledge-journal", "--settings", str(tmp_path / "healer.json")]) == 0
    again = start(services, tmp_path, action)
    assert again.get("/healthz")[0] == 200
    assert list(tmp_path.glob("journal.sqlite*.damaged-*")), "the damaged files are kept"


def test_a_fresh_install_starts_without_ceremony(tmp_path: Path, services: list[Service]) -> None:
    write_settings(tmp_path)
    healer = start(services, tmp_path, recording_action(tmp_path))
    assert healer.get("/healthz")[0] == 200
    assert (tmp_path / "journal.sqlite.seal").is_file()


# 6. After kill -9 of the healer alone, its action kept running beside the next one.


@pytest.mark.parametrize("interruptible", [True, False], ids=["action-stops-on-sigint", "action-ignores-sigint"])
def test_kill_9_of_the_healer_during_an_action_leaves_no_overlapping_action(tmp_path: Path, services: list[Service], interruptible: bool) -> None:
    """The leash interrupts the action when the healer dies; one that ignores SIGINT is waited for by the restarted healer."""
    write_settings(tmp_path)
    action = recording_action(tmp_path, 4) if interruptible else recording_action(tmp_path, 4, extra="trap '' INT", signals="TERM")
    first = start(services, tmp_path, action)
    first.post(down(W1))
    wait_for(lambda: W1 in started(tmp_path), "the first action runs")
    killed = time.time()
    first.kill()  # the healer process alone, not its group
    second = start(services, tmp_path, action)
    second.post(down(OTHER))
    wait_for(lambda: OTHER in started(tmp_path), "the restarted healer repairs another machine", timeout=30)
    wait_for(lambda: ("end", OTHER) in [(w, m) for w, m, _ in actions(tmp_path)], "that action ends", timeout=30)
    log = actions(tmp_path)
    assert not [entry for entry in log if entry[0] == "overlap"], f"two actions overlapped: {log}"
    first_end = next(t for w, m, t in log if (w, m) == ("end", W1))
    other_start = next(t for w, m, t in log if (w, m) == ("start", OTHER))
    assert first_end <= other_start, log
    if interruptible:
        assert first_end - killed < 2.5, "the action was stopped with the healer (its leash), not left to run its 4 s"
    assert any(r["event"] == "repair-interrupted" and r["machine"] == W1 for r in audit(tmp_path))
    if not interruptible:
        assert any(r["event"] == "earlier-action-running" and r["machine"] == W1 for r in audit(tmp_path)), "the restarted healer waited for it"


# 9. A NodeDown arriving a moment before its site's SiteUnreachable was acted on.


def test_a_partition_reported_just_after_a_node_down_replaces_nothing(tmp_path: Path, services: list[Service]) -> None:
    write_settings(tmp_path, settle=2.0)
    healer = start(services, tmp_path, recording_action(tmp_path))
    now = time.time()
    # Same instant, separate payloads, NodeDown first (as Alertmanager sends two alert groups).
    healer.post(webhook(node_down(W1, now - 60)))
    time.sleep(0.1)
    healer.post(webhook(site_unreachable("gcp", now - 60)))
    time.sleep(4)  # past the settle window, a few ticks
    assert started(tmp_path) == [], "nothing of the partitioned site is replaced"
    decisions = [r for r in audit(tmp_path) if r["event"] == "decision" and r.get("machine") == W1]
    assert [d["reason"] for d in decisions] == ["settling", "site-partitioned"], decisions
