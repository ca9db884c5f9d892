"""What the healer tells the world: Prometheus metrics, the JSON-lines audit log, the notification webhook."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections import deque
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
ERRORS = f"{METRIC_PREFIX}_errors_total"
HEALTHY = f"{METRIC_PREFIX}_healthy"
LAST_TICK = f"{METRIC_PREFIX}_last_tick_timestamp_seconds"
TICK_INTERVAL = f"{METRIC_PREFIX}_tick_interval_seconds"
REPAIR_STARTED = f"{METRIC_PREFIX}_repair_started_timestamp_seconds"
REPAIR_TIMEOUT = f"{METRIC_PREFIX}_repair_timeout_seconds"
"""Metric names, as the dashboard and tests spell them (prometheus_client adds ``_total`` to counters itself).
The repair counters label the machine's role ``machine_role``: the scrape job's own ``role`` label (the tooling VM's) would shadow ``role``."""

REPAIR_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 7200)
"""Seconds: a Hetzner server is replaced in about a minute, an Azure VM in several."""
SOURCES = ("NodeDown", "SiteUnreachable", "TunnelDown", "other")
REJECTIONS = ("unauthorized", "malformed", "too-large", "not-found", "overloaded", "source-limit", "connection-limit", "incomplete")
"""Why a request or connection was refused: ``source-limit``/``connection-limit`` connections closed to make room,
``incomplete`` connections that ended without a whole request (the deadline, or the client gone)."""
COMPONENTS = ("journal", "audit-log", "notification", "action", "thread", "receiver")
"""Where a failure inside the healer happened (``resinfra_healer_errors_total``); HealerDegraded fires on any."""


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
        self.errors = Counter(ERRORS.removesuffix("_total"), "Failures inside the healer (writes, notifications, actions, threads).", ["component"], registry=r)
        self.healthy = Gauge(HEALTHY, "1 while the healer can decide and act (what /healthz says).", registry=r)
        self.last_tick = Gauge(LAST_TICK, "When the decision loop last ran (POSIX time).", registry=r)
        self.tick_interval = Gauge(TICK_INTERVAL, "How often the decision loop runs without a webhook.", registry=r)
        self.repair_started = Gauge(REPAIR_STARTED, "When the repair in flight started (POSIX time); 0 when none runs.", registry=r)
        self.repair_timeout = Gauge(REPAIR_TIMEOUT, "How long a repair may take before it is stopped.", registry=r)
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
        for component in COMPONENTS:
            self.errors.labels(component)


def audit_alert(name: str, status: str, **labels: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the audit log's record of an alert the healer received (``AuditLog.read`` records)."""
    return lambda e: e["event"] == "alert" and e["alertname"] == name and e["status"] == status and all(e["labels"].get(k) == v for k, v in labels.items())


ErrorSink = Callable[[str, BaseException], None]
"""Told of a failure: (component, error). The service counts it, logs it and records it in the journal."""


def _ignore(component: str, err: BaseException) -> None:
    log.error("%s: %s", component, err)


class AuditLog:
    """One JSON object per line for every decision and repair event, appended and flushed at once.

    A failed write (a full disk, too many open files, an immutable or replaced file) is told to
    ``on_error`` and never raised: the record still reaches the service's log (stderr, the
    systemd journal), and the journal keeps what the policy needs.
    """

    def __init__(self, path: Path | str | None, on_error: ErrorSink = _ignore):
        self.path = Path(path) if path else None
        self.on_error = on_error
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, now: float, **fields: Any) -> dict[str, Any]:
        record = {"time": format_time(now), "ts": round(now, 3), "event": event, **fields}
        line = json.dumps(record, sort_keys=True)
        log.info("%s", line)
        if self.path is not None:
            try:
                with self._lock, self.path.open("a", encoding="utf-8") as out:
                    out.write(line + "\n")
            except OSError as err:
                self.on_error("audit-log", err)
        return record

    def decision(self, d: Decision, now: float) -> dict[str, Any]:
        return self.write("decision", now, **d.as_dict())

    def read(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


NOTIFY_TIMEOUT = 10.0
NOTIFY_QUEUE = 100
"""Notifications waiting to be posted; more are dropped (and counted): a slow webhook must not grow the healer."""


class Notifier:
    """Posts repairs and refusals to the notification webhook (``resinfra:notificationWebhookUrl``) from one background thread.

    The body is JSON with a ``text`` line (what Slack-style incoming webhooks show) and the
    structured fields. A failed post is told to ``on_error``, never retried, never raised: a
    notification must not hold up a repair. The URL is a secret and is never logged.
    """

    def __init__(self, url: str | None, on_error: ErrorSink = _ignore, keep: int = 1000):
        self._url = url
        self.on_error = on_error
        self.sent: deque[dict[str, Any]] = deque(maxlen=keep)
        """The latest notifications (for tests and ``status``), posted or not."""
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(NOTIFY_QUEUE)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self._url)

    def notify(self, text: str, **fields: Any) -> None:
        body = {"source": "resinfra-healer", "text": text, **fields}
        self.sent.append(body)
        if not self._url:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="healer-notify", daemon=True)
                self._thread.start()
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.on_error("notification", RuntimeError(f"{NOTIFY_QUEUE} notifications already waiting; dropped: {text[:200]}"))

    def _run(self) -> None:
        while True:
            body = self._queue.get()
            try:
                self._post(body)
            finally:
                self._queue.task_done()

    def _post(self, body: dict[str, Any]) -> None:
        assert self._url is not None
        request = urllib.request.Request(self._url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=NOTIFY_TIMEOUT) as response:
                response.read()
        except (OSError, ValueError) as err:
            # The error's text may carry the URL: only its type is told.
            self.on_error("notification", RuntimeError(f"notification webhook failed: {type(err).__name__}"))

    def flush(self, timeout: float = NOTIFY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
