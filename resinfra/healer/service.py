"""The healer service: webhooks feed the alert book, the policy decides, one repair at a time runs in the background.

Wiring only: what to do is :func:`resinfra.healer.policy.decide`, how is an
:class:`resinfra.healer.act.Actuator`, what survives a restart is the
:class:`resinfra.healer.journal.Journal`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from resinfra.healer.act import Actuator, Outcome, RepairResult, StackRef, read_stack_inventory
from resinfra.healer.alerts import NODE_DOWN, Alert, AlertBook, format_time
from resinfra.healer.inventory import Machine, load_inventory, with_created
from resinfra.healer.journal import Journal, RepairInFlightError
from resinfra.healer.observe import AuditLog, Metrics, Notifier
from resinfra.healer.policy import Decision, Kind, PolicySettings, decide

log = logging.getLogger("resinfra.healer")


class InventorySource(Protocol):
    """Where the machines come from: (machines, creation time by URN)."""

    def load(self) -> tuple[list[Machine], dict[str, float]]: ...


@dataclass(frozen=True)
class StackInventory:
    """The stack's ``inventory`` output and the state's creation times (Automation API)."""

    ref: StackRef

    def load(self) -> tuple[list[Machine], dict[str, float]]:
        return read_stack_inventory(self.ref)


@dataclass(frozen=True)
class FileInventory:
    """An inventory file as ``pulumi stack output inventory --json`` prints it (local runs, the lab)."""

    path: Path

    def load(self) -> tuple[list[Machine], dict[str, float]]:
        return load_inventory(self.path.read_text()), {}


@dataclass(frozen=True)
class Job:
    repair_id: int
    machine: Machine
    reason: str
    started: float


class Healer:
    """Detect → decide → act, with the journal, metrics, audit log and notifications."""

    def __init__(
        self,
        policy: PolicySettings,
        inventory: InventorySource,
        actuator: Actuator,
        journal: Journal,
        audit: AuditLog,
        metrics: Metrics,
        notifier: Notifier,
        *,
        repair_timeout: float,
        alert_ttl: float = 900,
        tick: float = 15,
        inventory_refresh: float = 300,
        clock: Callable[[], float] = time.time,
    ):
        self.policy = policy
        self.inventory_source = inventory
        self.actuator = actuator
        self.journal = journal
        self.audit = audit
        self.metrics = metrics
        self.notifier = notifier
        self.repair_timeout = repair_timeout
        self.tick = tick
        self.inventory_refresh = inventory_refresh
        self.clock = clock
        self.book = AlertBook(alert_ttl)
        self.machines: list[Machine] | None = None
        self._inventory_loaded_at = 0.0
        self._last: dict[tuple[str, str | None], tuple[Kind, str]] = {}
        self._lock = threading.RLock()
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        metrics.dry_run.set(1 if policy.dry_run else 0)

    # -- life cycle

    def start(self) -> None:
        now = self.clock()
        for repair in self.journal.recover(now):
            self.audit.write("repair-interrupted", now, machine=repair.machine, started=format_time(repair.started))
            self.notifier.notify(
                f"resinfra healer: the repair of {repair.machine} started {format_time(repair.started)} was interrupted by a restart; "
                "it is not repeated during this outage. Check the stack.",
                event="repair-interrupted",
                machine=repair.machine,
            )
        self.refresh_inventory()
        self.audit.write("started", now, dryRun=self.policy.dry_run)
        for target, name in ((self._work, "healer-repairs"), (self._tick, "healer-tick")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def repairing(self) -> bool:
        return self.journal.history(self.clock()).in_flight is not None

    def stop(self, repair_grace: float = 5) -> None:
        """Stop deciding; give a running repair ``repair_grace`` seconds to end (else the journal marks it interrupted at the next start)."""
        self._stop.set()
        self._jobs.put(None)
        for thread in self._threads:
            thread.join(timeout=repair_grace if thread.name == "healer-repairs" else 5)
        self.notifier.flush()

    # -- detect

    def refresh_inventory(self) -> bool:
        try:
            machines, created = self.inventory_source.load()
        except Exception as err:  # keep the last inventory; a backend hiccup must not stop the service
            log.error("could not read the inventory: %s", err)
            return False
        now = self.clock()
        first_seen = self.journal.first_seen([m.name for m in machines], now)
        with self._lock:
            self.machines = with_created(machines, created, first_seen)
            self._inventory_loaded_at = now
        return True

    def on_alerts(self, alerts: list[Alert]) -> None:
        """A webhook's alerts: record them, note new down episodes, decide again."""
        now = self.clock()
        with self._lock:
            for alert in self.book.apply(alerts, now):
                node = alert.label("node")
                if alert.name == NODE_DOWN and node:
                    self.journal.record_episode(node, alert.starts_at)
            for alert in alerts:
                self.audit.write("alert", now, alertname=alert.name, status=alert.status, labels=dict(alert.labels), startsAt=format_time(alert.starts_at))
        self.evaluate()

    # -- decide

    def evaluate(self) -> list[Decision]:
        """Decide for the present moment; log changed decisions; start a repair when one is decided."""
        with self._lock:
            if self.machines is None:
                log.warning("no inventory yet: not deciding")
                return []
            now = self.clock()
            horizon = max(self.policy.backoff_window, self.policy.flap_window)
            decisions = decide(self.machines, self.book.active(now), self.journal.history(now - horizon), now, self.policy)
            current = {(d.site, d.machine) for d in decisions}
            for key in [k for k in self._last if k not in current]:
                del self._last[key]
            for d in decisions:
                self._record(d, now)
                if d.kind is Kind.REPLACE:
                    self._start_repair(d, now)
            return decisions

    def _record(self, d: Decision, now: float) -> None:
        key = (d.site, d.machine)
        # A decision repeated unchanged on the next evaluation is neither logged nor counted again.
        if self._last.get(key) == (d.kind, d.reason.value) and d.kind is not Kind.REPLACE:
            return
        self._last[key] = (d.kind, d.reason.value)
        self.metrics.decisions.labels(d.kind.value, d.reason.value).inc()
        self.audit.decision(d, now)
        if d.kind in (Kind.REFUSE, Kind.WOULD_REPLACE):
            subject = d.machine or f"site {d.site}"
            self.notifier.notify(f"resinfra healer: {d.kind.value} {subject}: {d.reason.value}: {d.detail}", event="decision", **d.as_dict())

    def _start_repair(self, d: Decision, now: float) -> None:
        machine = next(m for m in self.machines or [] if m.name == d.machine)
        try:
            repair_id = self.journal.start_repair(machine.name, machine.urn, d.reason.value, now)
        except RepairInFlightError as err:
            log.warning("%s", err)
            return
        self.metrics.in_flight.set(1)
        self.metrics.repairs_started.labels(machine.role.value).inc()
        self.audit.write("repair-started", now, machine=machine.name, site=machine.site, urn=machine.urn, reason=d.reason.value)
        self.notifier.notify(
            f"resinfra healer: replacing {machine.name} ({machine.role.value} on {machine.site}): {d.reason.value}: {d.detail}",
            event="repair-started",
            machine=machine.name,
            site=machine.site,
            reason=d.reason.value,
        )
        self._jobs.put(Job(repair_id, machine, d.reason.value, now))

    # -- act

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._jobs.get()
            if job is None:
                return
            started = time.monotonic()
            try:
                result = self.actuator.replace(job.machine, job.reason, self.repair_timeout)
            except Exception as err:  # an actuator bug must not kill the worker and leave the repair open
                result = RepairResult(Outcome.FAILED, f"{type(err).__name__}: {err}")
            self._finish(job, result, time.monotonic() - started)

    def _finish(self, job: Job, result: RepairResult, seconds: float) -> None:
        now = self.clock()
        with self._lock:
            self.journal.finish_repair(job.repair_id, result.outcome.value, result.detail, now)
            self.metrics.in_flight.set(0)
            self.metrics.repair_duration.observe(seconds)
            role = job.machine.role.value
            (self.metrics.repairs_succeeded if result.outcome is Outcome.SUCCEEDED else self.metrics.repairs_failed).labels(role).inc()
            self.audit.write(
                "repair-finished", now, machine=job.machine.name, outcome=result.outcome.value, seconds=round(seconds, 3), detail=result.detail[-500:]
            )
        self.notifier.notify(
            f"resinfra healer: replacing {job.machine.name} {result.outcome.value} after {seconds:.0f} s",
            event="repair-finished",
            machine=job.machine.name,
            outcome=result.outcome.value,
        )
        # The replacement has a new creation time (its startup grace starts now).
        self.refresh_inventory()
        self.evaluate()

    def _tick(self) -> None:
        while not self._stop.wait(self.tick):
            if self.clock() - self._inventory_loaded_at >= self.inventory_refresh:
                self.refresh_inventory()
            self.evaluate()
