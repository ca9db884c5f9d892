"""The healer service: webhooks feed the alert book, the policy decides, one repair at a time runs in the background.

Wiring only: what to do is :func:`resinfra.healer.policy.decide`, how is an
:class:`resinfra.healer.act.Actuator`, what survives a restart is the
:class:`resinfra.healer.journal.Journal`.

It fails loudly and safely: every failure inside it (journal, audit log, notification,
action, a loop) is caught where it happens, counted (``resinfra_healer_errors_total``),
written to the journal when the journal works, and ``/healthz`` turns unhealthy when it can
no longer decide or act. A repair whose action never returns is finished as failed by the
watchdog. Webhooks only queue their alerts (de-duplicated by fingerprint); one decision loop
applies them in batches, so the work per webhook is bounded.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from resinfra.healer import leash
from resinfra.healer.act import INTERRUPT_GRACE, Actuator, Outcome, RepairResult, StackRef, read_stack_inventory
from resinfra.healer.alerts import FIRING, NODE_DOWN, Alert, AlertBook, format_time
from resinfra.healer.inventory import Machine, load_inventory, with_created
from resinfra.healer.journal import Journal, RepairInFlightError
from resinfra.healer.observe import AuditLog, Metrics, Notifier
from resinfra.healer.policy import Decision, Kind, PolicySettings, Reason, decide

log = logging.getLogger("resinfra.healer")

T = TypeVar("T")

MAX_ALERTS = 10_000
"""Distinct alerts (fingerprints) held at once, queued and active; a webhook beyond that is answered 503."""
STUCK_TICKS = 4
"""The decision loop not having run for this many ticks makes ``/healthz`` unhealthy (and HealerStuck fire)."""
WATCHDOG_GRACE = INTERRUPT_GRACE + 120
"""Seconds past a repair's timeout after which the watchdog finishes it as failed: the actuators stop their own
update after the timeout (SIGINT, then SIGTERM after INTERRUPT_GRACE); this is the backstop when one does not return."""
DEGRADED_FOR = 900.0
"""A failure is reported as "degraded" on ``/healthz`` for this long after it happened."""
UNKNOWN_NOTIFY_INTERVAL = 300.0
"""Alerts naming machines the inventory does not know are notified together, at most this often."""
EARLIER_ACTION_WAIT = INTERRUPT_GRACE + 30
"""At start, how long to wait for an action of an earlier healer process that still runs (it was told to stop)."""


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


class EarlierActionRunning(RuntimeError):
    """An action of an earlier healer process still runs: starting another could overlap it."""


@dataclass
class Job:
    repair_id: int
    machine: Machine
    reason: str
    started: float
    started_monotonic: float
    pgid: int | None = None
    pgid_start: int | None = None
    result: RepairResult | None = None
    """Set once the repair has ended (by its action or the watchdog)."""
    recorded: bool = False
    """The end is in the journal."""


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
        watchdog_grace: float = WATCHDOG_GRACE,
        max_alerts: int = MAX_ALERTS,
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
        self.watchdog_grace = watchdog_grace
        self.max_alerts = max_alerts
        self.book = AlertBook(alert_ttl)
        self.machines: list[Machine] | None = None
        self._inventory_loaded_at = 0.0
        self._last: dict[tuple[str, str | None], tuple[Kind, str]] = {}
        self._lock = threading.RLock()
        self._pending: dict[str, Alert] = {}
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._loop: threading.Thread | None = None
        self._last_pass = time.monotonic()
        self._job: Job | None = None
        self._job_thread: threading.Thread | None = None
        self._journal_error: str | None = None
        self._faults: dict[str, tuple[float, str]] = {}
        self._unknown: set[str] = set()
        self._unknown_notified = float("-inf")
        audit.on_error = self.fault
        notifier.on_error = self.fault
        metrics.dry_run.set(1 if policy.dry_run else 0)
        metrics.tick_interval.set(tick)
        metrics.repair_timeout.set(repair_timeout)

    # -- failures

    def fault(self, component: str, err: BaseException) -> None:
        """A failure inside the healer: counted, logged, written to the journal (when it is not the journal that failed)."""
        now = self.clock()
        message = f"{type(err).__name__}: {err}"
        self.metrics.errors.labels(component).inc()
        self._faults[component] = (now, message)
        log.error("%s failed: %s", component, message)
        if component == "journal":
            self._journal_error = message
            return
        try:
            self.journal.record_failure(component, message, now)
        except (sqlite3.Error, OSError) as journal_err:
            self._journal_failed(journal_err)

    def _journal_failed(self, err: BaseException) -> None:
        self.fault("journal", err)

    def _journal(self, call: Callable[[], T], write: bool = True) -> T | None:
        """A journal operation; None (and a counted failure) when the journal cannot be read or written.

        Only a write that succeeds clears a journal failure: a disk that is full still reads.
        """
        try:
            value = call()
        except (sqlite3.Error, OSError) as err:
            self._journal_failed(err)
            return None
        if write:
            self._journal_error = None
        return value

    def health(self) -> tuple[bool, str]:
        """What ``/healthz`` says: unhealthy when the healer can no longer decide or act; degraded after a recent failure."""
        problems = []
        if self._loop is not None and not self._loop.is_alive():
            problems.append("the decision loop has stopped")
        elif (silent := time.monotonic() - self._last_pass) > STUCK_TICKS * self.tick:
            problems.append(f"no decision for {silent:.0f} s")
        if self._journal_error is not None:
            problems.append(f"the journal cannot be used ({self._journal_error})")
        job = self._job
        if job is not None and job.result is None and time.monotonic() - job.started_monotonic > self.repair_timeout:
            problems.append(f"the repair of {job.machine.name} has run past its timeout")
        self.metrics.healthy.set(0 if problems else 1)
        now = self.clock()
        degraded = sorted(f"{c} ({m})" for c, (t, m) in self._faults.items() if now - t < DEGRADED_FOR)
        text = "unhealthy: " + "; ".join(problems) if problems else "ok"
        if degraded:
            text += "; degraded: " + "; ".join(degraded)
        return not problems, text

    # -- life cycle

    def start(self, earlier_action_wait: float = EARLIER_ACTION_WAIT) -> None:
        """Wait for an earlier process's action still running (:class:`EarlierActionRunning` if it does not end), close what it
        left open, load the inventory, and start the decision loop."""
        now = self.clock()
        for machine, pgid, ticks in self.journal.actions_in_flight():
            if leash.group_alive(pgid, ticks):
                self.audit.write("earlier-action-running", now, machine=machine, processGroup=pgid)
                log.warning("the repair of %s by an earlier healer still runs (process group %d): waiting for it to end", machine, pgid)
                if not leash.wait_for_group(pgid, earlier_action_wait, ticks):
                    raise EarlierActionRunning(
                        f"the repair of {machine} started by an earlier healer process still runs (process group {pgid}) after "
                        f"{earlier_action_wait:g} s; not starting another action beside it. It was sent SIGINT when that healer died; "
                        f"stop it (kill -INT -{pgid}) or wait"
                    )
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
        self._last_pass = time.monotonic()
        self.metrics.last_tick.set(now)
        self._loop = threading.Thread(target=self._decision_loop, name="healer-decide", daemon=True)
        self._loop.start()

    @property
    def repairing(self) -> bool:
        job = self._job
        return job is not None and job.result is None

    def stop(self, repair_grace: float = 5) -> None:
        """Stop deciding; interrupt a running repair's action (SIGINT to its group) and give it ``repair_grace`` seconds to end."""
        self._stop.set()
        self._wake.set()
        job, thread = self._job, self._job_thread
        waited = 0.0
        if job is not None and job.result is None and job.pgid is not None:
            log.warning("stopping during the repair of %s: its action is interrupted", job.machine.name)
            began = time.monotonic()
            leash.stop_group(job.pgid, repair_grace, job.pgid_start)
            waited = time.monotonic() - began
        if thread is not None:
            # The action is gone: what is left is recording its end.
            thread.join(max(5.0, repair_grace - waited))
        if self._loop is not None:
            self._loop.join(5)
        self.notifier.flush()

    # -- detect

    def refresh_inventory(self) -> bool:
        try:
            machines, created = self.inventory_source.load()
        except Exception as err:  # keep the last inventory; a backend hiccup must not stop the service
            log.error("could not read the inventory: %s", err)
            return False
        now = self.clock()
        first_seen = self._journal(lambda: self.journal.first_seen([m.name for m in machines], now))
        with self._lock:
            self.machines = with_created(machines, created, first_seen or {})
            self._inventory_loaded_at = now
        return True

    def submit(self, alerts: list[Alert]) -> bool:
        """A webhook's alerts, queued for the decision loop (called on the receiver's event loop: never blocks).

        Alerts are kept by fingerprint, the latest state winning, so a flood of repeats costs
        nothing more; False when too many distinct alerts are held already (the receiver answers 503).
        """
        with self._pending_lock:
            new = {a.fingerprint for a in alerts if a.fingerprint not in self._pending and a.fingerprint not in self.book}
            if new and len(self._pending) + len(self.book) + len(new) > self.max_alerts:
                return False
            for alert in alerts:
                self._pending[alert.fingerprint] = alert
        self._wake.set()
        return True

    def on_alerts(self, alerts: list[Alert]) -> None:
        """A webhook's alerts, applied and decided on at once (in the caller's thread)."""
        self._apply(alerts)
        self.evaluate()

    def _apply(self, alerts: list[Alert]) -> None:
        """Record alerts; note new down episodes; audit what changed (a repeated firing alert changes nothing)."""
        now = self.clock()
        with self._lock:
            for alert in self.book.apply(alerts, now):
                node = alert.label("node")
                if alert.name == NODE_DOWN and alert.status == FIRING and node:
                    self._journal(lambda node=node, alert=alert: self.journal.record_episode(node, alert.starts_at))
                self.audit.write("alert", now, alertname=alert.name, status=alert.status, labels=dict(alert.labels), startsAt=format_time(alert.starts_at))

    # -- decide

    def evaluate(self) -> list[Decision]:
        """Decide for the present moment; log changed decisions; start a repair when one is decided."""
        with self._lock:
            if self.machines is None:
                log.warning("no inventory yet: not deciding")
                return []
            now = self.clock()
            horizon = max(self.policy.backoff_window, self.policy.flap_window)
            history = self._journal(lambda: self.journal.history(now - horizon), write=False)
            if history is None:
                return []  # without its record the healer cannot decide safely
            decisions = decide(self.machines, self.book.active(now), history, now, self.policy)
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
        if d.reason is Reason.UNKNOWN_MACHINE and d.machine is not None:
            self._unknown.add(d.machine)  # told together (see _notify_unknown)
        elif d.kind in (Kind.REFUSE, Kind.WOULD_REPLACE):
            subject = d.machine or f"site {d.site}"
            self.notifier.notify(f"resinfra healer: {d.kind.value} {subject}: {d.reason.value}: {d.detail}", event="decision", **d.as_dict())

    def _notify_unknown(self, now: float) -> None:
        if not self._unknown or now - self._unknown_notified < UNKNOWN_NOTIFY_INTERVAL:
            return
        names = sorted(self._unknown)
        self._unknown.clear()
        self._unknown_notified = now
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        self.notifier.notify(
            f"resinfra healer: refuse: alerts name {len(names)} machine(s) the stack's inventory does not have ({shown}); nothing to replace",
            event="decision",
            kind=Kind.REFUSE.value,
            reason=Reason.UNKNOWN_MACHINE.value,
            machines=names[:100],
            count=len(names),
        )

    def _start_repair(self, d: Decision, now: float) -> None:
        machine = next(m for m in self.machines or [] if m.name == d.machine)
        try:
            repair_id = self.journal.start_repair(machine.name, machine.urn, d.reason.value, now)
        except RepairInFlightError as err:
            log.warning("%s", err)
            return
        except (sqlite3.Error, OSError) as err:
            self._journal_failed(err)  # no record, no repair
            return
        self._journal_error = None
        job = Job(repair_id, machine, d.reason.value, now, time.monotonic())
        self._job = job
        self.metrics.in_flight.set(1)
        self.metrics.repair_started.set(now)
        self.metrics.repairs_started.labels(machine.role.value).inc()
        self.audit.write("repair-started", now, machine=machine.name, site=machine.site, urn=machine.urn, reason=d.reason.value)
        self.notifier.notify(
            f"resinfra healer: replacing {machine.name} ({machine.role.value} on {machine.site}): {d.reason.value}: {d.detail}",
            event="repair-started",
            machine=machine.name,
            site=machine.site,
            reason=d.reason.value,
        )
        # Its own thread, which waits for the action: the action's leash watches this thread (see resinfra.healer.leash).
        self._job_thread = threading.Thread(target=self._run, args=(job,), name=f"healer-repair-{repair_id}", daemon=True)
        self._job_thread.start()

    # -- act

    def _run(self, job: Job) -> None:
        def started(pgid: int, ticks: int | None) -> None:
            job.pgid, job.pgid_start = pgid, ticks
            self._journal(lambda: self.journal.set_action(job.repair_id, pgid, ticks))

        try:
            with leash.on_spawn(started):
                result = self.actuator.replace(job.machine, job.reason, self.repair_timeout)
        except Exception as err:  # an actuator's failure (no file descriptor left, a bug) is the repair's failure
            self.fault("action", err)
            result = RepairResult(Outcome.FAILED, f"{type(err).__name__}: {err}")
        try:
            self._finish(job, result)
        except Exception as err:  # never leave the loop without a word
            self.fault("thread", err)
        self._wake.set()

    def _finish(self, job: Job, result: RepairResult) -> None:
        seconds = time.monotonic() - job.started_monotonic
        with self._lock:
            if job.result is not None:
                return  # the watchdog finished it already
            job.result = result
            self.metrics.in_flight.set(0)
            self.metrics.repair_started.set(0)
            self.metrics.repair_duration.observe(seconds)
            role = job.machine.role.value
            (self.metrics.repairs_succeeded if result.outcome is Outcome.SUCCEEDED else self.metrics.repairs_failed).labels(role).inc()
            self._record_finish(job)
            self.audit.write(
                "repair-finished", self.clock(), machine=job.machine.name, outcome=result.outcome.value, seconds=round(seconds, 3), detail=result.detail[-500:]
            )
        self.notifier.notify(
            f"resinfra healer: replacing {job.machine.name} {result.outcome.value} after {seconds:.0f} s",
            event="repair-finished",
            machine=job.machine.name,
            outcome=result.outcome.value,
        )
        # The replacement has a new creation time (its startup grace starts now).
        self.refresh_inventory()

    def _record_finish(self, job: Job) -> None:
        """The repair's end in the journal; retried by the loop while the journal fails (the repair stays in flight there)."""
        assert job.result is not None
        done = self._journal(
            lambda: self.journal.finish_repair(
                job.repair_id, job.result.outcome.value if job.result else "", job.result.detail if job.result else "", self.clock()
            )
        )
        if done is not None:
            job.recorded = True

    def _watchdog(self) -> None:
        job = self._job
        if job is None:
            return
        if job.result is not None:
            if not job.recorded:
                with self._lock:
                    self._record_finish(job)
            return
        overdue = time.monotonic() - job.started_monotonic - self.repair_timeout
        if overdue <= self.watchdog_grace:
            return
        self.fault("action", TimeoutError(f"the repair of {job.machine.name} gave no result {overdue:.0f} s after its timeout"))
        if job.pgid is not None:
            pgid, start = job.pgid, job.pgid_start
            threading.Thread(target=leash.stop_group, args=(pgid, 10.0, start), name="healer-stop-action", daemon=True).start()
        self._finish(job, RepairResult(Outcome.TIMEOUT, f"finished by the watchdog: no result {overdue:.0f} s after the {self.repair_timeout:g} s timeout"))

    # -- the loop

    def _decision_loop(self) -> None:
        """Batches of queued alerts, then a decision; at least every ``tick`` (grace and backoff end by themselves)."""
        while not self._stop.is_set():
            self._wake.wait(self.tick)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._pass()
            except Exception as err:  # counted and logged; the loop goes on
                self.fault("thread", err)
            self._last_pass = time.monotonic()
            self.metrics.last_tick.set(self.clock())
            self.health()

    def _pass(self) -> None:
        with self._pending_lock:
            batch, self._pending = list(self._pending.values()), {}
        if batch:
            self._apply(batch)
        now = self.clock()
        if now - self._inventory_loaded_at >= self.inventory_refresh:
            self.refresh_inventory()
        self._watchdog()
        self.evaluate()
        self._notify_unknown(now)
