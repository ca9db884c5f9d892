"""The service wired together in-process: a webhook's alert becomes a repair; metrics, audit log and notifications
record it; a decision repeated unchanged is logged once; refusals are notified; the notification URL never leaks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from resinfra.healer.act import CallableActuator
from resinfra.healer.inventory import Machine
from resinfra.healer.journal import Journal
from resinfra.healer.observe import AuditLog, Metrics, Notifier
from resinfra.healer.policy import PolicySettings
from resinfra.healer.service import Healer
from tests.healer.helpers import inventory, node_down, site_unreachable


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class StaticInventory:
    def __init__(self, machines: list[Machine]):
        self.machines = machines

    def load(self) -> tuple[list[Machine], dict[str, float]]:
        return self.machines, {m.urn: time.time() - 86400 for m in self.machines}


class Harness:
    def __init__(self, tmp_path: Path, settings: PolicySettings, notify_url: str | None = None, **service: Any):
        self.clock = Clock()
        self.replaced: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.actuator = CallableActuator(lambda m: (self.gate.wait(10), self.replaced.append(m.name)))
        self.metrics = Metrics()
        self.audit = AuditLog(tmp_path / "audit.jsonl")
        self.notifier = Notifier(notify_url)
        self.journal = Journal(tmp_path / "journal.sqlite")
        self.healer = Healer(
            settings,
            StaticInventory(inventory()),
            self.actuator,
            self.journal,
            self.audit,
            self.metrics,
            self.notifier,
            clock=self.clock,
            **{"repair_timeout": 60, "tick": 3600, **service},
        )

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.audit.read() if r["event"] == event]

    def wait_repairs_done(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if all(f is not None for _, _, f, _ in self.journal.repairs()) and self.sample("resinfra_healer_repair_in_flight") == 0:
                return
            time.sleep(0.02)
        raise TimeoutError("repair did not finish")


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, NO_SETTLE)
    h.healer.start()
    yield h
    h.healer.stop()


W1 = "ri-dev-gcp-worker-1"
NO_SETTLE = PolicySettings(settle=0)
"""The settle window has its own tests below; the others decide at once."""


def test_a_node_down_alert_becomes_one_repair_with_its_records(harness: Harness) -> None:
    harness.healer.on_alerts([node_down(W1, harness.clock.now - 60)])
    harness.wait_repairs_done()
    assert harness.replaced == [W1]
    assert harness.sample("resinfra_healer_repairs_started_total", machine_role="worker") == 1
    assert harness.sample("resinfra_healer_repairs_succeeded_total", machine_role="worker") == 1
    assert harness.sample("resinfra_healer_repair_duration_seconds_count") == 1
    assert harness.sample("resinfra_healer_decisions_total", kind="replace", reason="node-down") == 1
    (decision,) = [d for d in harness.events("decision") if d["kind"] == "replace"]
    assert decision["machine"] == W1 and decision["reason"] == "node-down" and decision["urn"].endswith(W1)
    assert [e["outcome"] for e in harness.events("repair-finished")] == ["succeeded"]
    assert [n["event"] for n in harness.notifier.sent] == ["repair-started", "repair-finished"]


def test_a_repeated_alert_is_decided_again_but_logged_once(harness: Harness) -> None:
    alert = node_down(W1, harness.clock.now - 60)
    harness.healer.on_alerts([alert])
    harness.wait_repairs_done()
    for _ in range(3):
        harness.clock.now += 10
        harness.healer.on_alerts([alert])  # Alertmanager's repeat; the machine is in its backoff now
    waits = [d for d in harness.events("decision") if d["kind"] == "wait"]
    assert [(d["machine"], d["reason"]) for d in waits] == [(W1, "backoff")]
    assert harness.replaced == [W1]


def test_one_repair_at_a_time_even_across_webhooks(harness: Harness) -> None:
    harness.gate.clear()  # the first repair hangs
    harness.healer.on_alerts([node_down(W1, harness.clock.now - 60)])
    harness.healer.on_alerts([node_down("ri-dev-azure-worker-1", harness.clock.now - 50)])
    assert [d["reason"] for d in harness.events("decision") if d["machine"] == "ri-dev-azure-worker-1"] == ["repair-in-flight"]
    harness.gate.set()
    harness.wait_repairs_done()
    time.sleep(0.2)
    harness.wait_repairs_done()
    assert harness.replaced == [W1, "ri-dev-azure-worker-1"], "the second goes after the first finished"


def test_a_resolved_alert_ends_the_matter(harness: Harness) -> None:
    harness.gate.clear()
    harness.healer.on_alerts([node_down("ri-dev-azure-worker-1", harness.clock.now - 60)])
    harness.healer.on_alerts([node_down(W1, harness.clock.now - 50)])
    harness.healer.on_alerts([node_down(W1, harness.clock.now - 50, status="resolved")])
    harness.gate.set()
    harness.wait_repairs_done()
    time.sleep(0.2)
    assert harness.replaced == ["ri-dev-azure-worker-1"]


def test_refusals_are_notified_once(harness: Harness) -> None:
    for _ in range(3):
        harness.healer.on_alerts([site_unreachable("gcp", harness.clock.now - 60)])
    partitions = [n for n in harness.notifier.sent if n.get("reason") == "site-partitioned"]
    assert len(partitions) == 1 and "site gcp" in partitions[0]["text"]
    assert harness.replaced == []


class Capture(BaseHTTPRequestHandler):
    bodies: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        Capture.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_notification_webhook_gets_repairs_and_the_url_stays_secret(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Capture)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks/notify-url-sentinel-73"
    h = Harness(tmp_path, replace(NO_SETTLE, dry_run=True), notify_url=url)
    try:
        h.healer.start()
        h.healer.on_alerts([node_down(W1, h.clock.now - 60)])
        h.notifier.flush()
    finally:
        h.healer.stop()
        server.shutdown()
        server.server_close()
    (body,) = [b for b in Capture.bodies if b.get("event") == "decision"]
    assert body["kind"] == "would-replace" and body["machine"] == W1 and "dry-run" in body["text"]
    assert h.replaced == [], "dry-run replaces nothing"
    assert "notify-url-sentinel-73" not in caplog.text and "notify-url-sentinel-73" not in (tmp_path / "audit.jsonl").read_text()


def test_a_node_down_settles_and_a_partition_heard_meanwhile_cancels_it(tmp_path: Path) -> None:
    h = Harness(tmp_path, PolicySettings(settle=45))
    h.healer.start()
    try:
        h.healer.on_alerts([node_down(W1, h.clock.now - 60)])
        h.clock.now += 1  # the site's SiteUnreachable, a scrape later, in a payload of its own
        h.healer.on_alerts([site_unreachable("gcp", h.clock.now - 60)])
        h.clock.now += 60
        h.healer.evaluate()
        assert h.replaced == [] and h.journal.repairs() == []
        assert [d["reason"] for d in h.events("decision") if d["machine"] == W1] == ["settling", "site-partitioned"]
    finally:
        h.healer.stop()


def test_without_a_partition_the_node_is_replaced_once_settled(tmp_path: Path) -> None:
    h = Harness(tmp_path, PolicySettings(settle=45))
    h.healer.start()
    try:
        h.healer.on_alerts([node_down(W1, h.clock.now - 60)])
        h.clock.now += 44
        h.healer.evaluate()
        assert h.journal.repairs() == []
        h.clock.now += 2
        h.healer.evaluate()
        h.wait_repairs_done()
        assert h.replaced == [W1]
    finally:
        h.healer.stop()


def test_a_repair_that_never_returns_is_finished_by_the_watchdog(tmp_path: Path) -> None:
    h = Harness(tmp_path, NO_SETTLE, repair_timeout=0.2, watchdog_grace=0.3, tick=0.05)
    h.gate.clear()  # the action hangs
    h.healer.start()
    try:
        h.healer.on_alerts([node_down(W1, h.clock.now - 60)])
        deadline = time.monotonic() + 10
        while not h.events("repair-finished") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [(e["machine"], e["outcome"]) for e in h.events("repair-finished")] == [(W1, "timeout")]
        assert [(m, o) for m, _, _, o in h.journal.repairs()] == [(W1, "timeout")]
        assert h.sample("resinfra_healer_errors_total", component="action") == 1
        assert h.sample("resinfra_healer_repair_in_flight") == 0
    finally:
        h.gate.set()
        h.healer.stop()


def test_a_journal_that_cannot_be_written_stops_repairs_and_turns_health_red(tmp_path: Path) -> None:
    h = Harness(tmp_path, NO_SETTLE)
    h.healer.start()
    try:
        assert h.healer.health()[0]
        h.journal._db.execute("PRAGMA query_only = ON")  # every write now fails, as on a full or read-only disk
        h.healer.on_alerts([node_down(W1, h.clock.now - 60)])
        healthy, text = h.healer.health()
        assert not healthy and "journal" in text, text
        assert h.replaced == [] and h.sample("resinfra_healer_errors_total", component="journal") >= 1
        assert h.sample("resinfra_healer_healthy") == 0
        h.journal._db.execute("PRAGMA query_only = OFF")
        h.healer.evaluate()
        h.wait_repairs_done()
        assert h.replaced == [W1] and h.healer.health()[0], "it repairs again once the journal works"
    finally:
        h.healer.stop()


def test_queued_alerts_are_bounded_and_unknown_machines_are_notified_together(tmp_path: Path) -> None:
    h = Harness(tmp_path, NO_SETTLE, max_alerts=100, tick=0.05)
    h.healer.start()
    try:
        ghosts = [
            replace(node_down(W1, h.clock.now - 60), labels={"alertname": "NodeDown", "node": f"ghost-{i}", "site": "gcp"}, fingerprint=f"g{i}")
            for i in range(150)
        ]
        accepted = [h.healer.submit([g]) for g in ghosts]
        assert accepted.count(False) >= 50, "beyond the bound, a webhook is refused (Alertmanager retries)"
        assert h.healer.submit([ghosts[0]]), "an alert already held is always taken"
        deadline = time.monotonic() + 5
        while h.sample("resinfra_healer_decisions_total", kind="refuse", reason="unknown-machine") < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        unknown = [n for n in h.notifier.sent if n.get("reason") == "unknown-machine"]
        assert len(unknown) == 1 and unknown[0]["count"] >= 1
    finally:
        h.healer.stop()
