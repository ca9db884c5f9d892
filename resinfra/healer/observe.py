"""What the healer tells the world: Prometheus metrics, the JSON-lines audit log, the notification webhook."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from resinfra.healer.alerts import format_time
from resinfra.healer.policy import Decision, Kind, Reason

log = logging.getLogger("resinfra.healer")

METRIC_PREFIX = "resinfra_healer"
ALERTS_RECEIVED = f"{METRIC_PREFIX}_alerts_received_total"
DECISIONS = f"{METRIC_PREFIX}_decisions_total"
REPAIRS_STARTED = f"{METRIC_PREFIX}_repairs_started_total"
REPAIRS_SUCCEEDED = f"{METRIC_PREFIX}_repairs_succeeded_total"
REPAIRS_FAILED = f"{METRIC_PREFIX}_repairs_failed_total"
REPAIR_DURATION = f"{METRIC_PREFIX}_repair_duration_seconds"
REPAIR_IN_FLIGHT = f"{METRIC_PREFIX}_repair_in_flight"
DRY_RUN = f"{METRIC_PREFIX}_dry_run"
REJECTED_REQUESTS = f"{METRIC_PREFIX}_rejected_requests_total"
"""Metric names, as the dashboard and tests spell them (prometheus_client adds ``_total`` to counters itself).
The repair counters label the machine's role ``machine_role``: the scrape job's own ``role`` label (the resinfra VM's) would shadow ``role``."""

REPAIR_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 7200)
"""Seconds: a Hetzner server is replaced in about a minute, an Azure VM in several."""
SOURCES = ("NodeDown", "SiteUnreachable", "TunnelDown", "other")
REJECTIONS = ("unauthorized", "malformed", "too-large", "not-found")


@dataclass
class Metrics:
    """The healer's metrics in their own registry (served on ``/metrics``).

    Every label combination is created up front, so each series exists (at 0) from the
    start: dashboards and ``increase()`` see the first event instead of nothing.
    """

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.alerts_received = Counter(ALERTS_RECEIVED.removesuffix("_total"), "Alerts received from Alertmanager.", ["alertname", "status"], registry=r)
        self.decisions = Counter(DECISIONS.removesuffix("_total"), "Decisions taken, by kind and reason.", ["kind", "reason"], registry=r)
        self.repairs_started = Counter(REPAIRS_STARTED.removesuffix("_total"), "Repairs started.", ["machine_role"], registry=r)
        self.repairs_succeeded = Counter(REPAIRS_SUCCEEDED.removesuffix("_total"), "Repairs that finished well.", ["machine_role"], registry=r)
        self.repairs_failed = Counter(
            REPAIRS_FAILED.removesuffix("_total"), "Repairs that failed, timed out or found the stack locked.", ["machine_role"], registry=r
        )
        self.repair_duration = Histogram(REPAIR_DURATION, "Duration of repairs, from start to end.", registry=r, buckets=REPAIR_BUCKETS)
        self.in_flight = Gauge(REPAIR_IN_FLIGHT, "1 while a repair runs.", registry=r)
        self.dry_run = Gauge(DRY_RUN, "1 when the healer only logs what it would do.", registry=r)
        self.rejected = Counter(REJECTED_REQUESTS.removesuffix("_total"), "HTTP requests refused.", ["why"], registry=r)
        for name in SOURCES:
            for status in ("firing", "resolved"):
                self.alerts_received.labels(name, status)
        for kind in Kind:
            for reason in Reason:
                self.decisions.labels(kind.value, reason.value)
        for role in ("worker", "gateway"):
            for counter in (self.repairs_started, self.repairs_succeeded, self.repairs_failed):
                counter.labels(role)
        for why in REJECTIONS:
            self.rejected.labels(why)


def audit_alert(name: str, status: str, **labels: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the audit log's record of an alert the healer received (``AuditLog.read`` records)."""
    return lambda e: e["event"] == "alert" and e["alertname"] == name and e["status"] == status and all(e["labels"].get(k) == v for k, v in labels.items())


class AuditLog:
    """One JSON object per line for every decision and repair event, appended and flushed at once."""

    def __init__(self, path: Path | str | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, now: float, **fields: Any) -> dict[str, Any]:
        record = {"time": format_time(now), "ts": round(now, 3), "event": event, **fields}
        line = json.dumps(record, sort_keys=True)
        log.info("%s", line)
        if self.path is not None:
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        return record

    def decision(self, d: Decision, now: float) -> dict[str, Any]:
        return self.write("decision", now, **d.as_dict())

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


NOTIFY_TIMEOUT = 10.0


class Notifier:
    """Posts repairs and refusals to the notification webhook (``resinfra:notificationWebhookUrl``), in the background.

    The body is JSON with a ``text`` line (what Slack-style incoming webhooks show) and the
    structured fields. A failed post is logged, never retried, never raised: a notification
    must not hold up a repair. The URL is a secret and is never logged.
    """

    def __init__(self, url: str | None):
        self._url = url
        self.sent: list[dict[str, Any]] = []
        self._threads: list[threading.Thread] = []

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    def notify(self, text: str, **fields: Any) -> None:
        body = {"source": "resinfra-healer", "text": text, **fields}
        self.sent.append(body)
        if not self._url:
            return
        thread = threading.Thread(target=self._post, args=(self._url, body), daemon=True)
        self._threads.append(thread)
        thread.start()

    @staticmethod
    def _post(url: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT) as response:
                response.read()
        except OSError as err:
            log.warning("notification webhook failed: %s", type(err).__name__)

    def flush(self, timeout: float = NOTIFY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [t for t in self._threads if t.is_alive()]
