"""The real healer beside the loopback monitoring (``resinfra.monitoring_local``): its local action restarts a
"machine" (that machine's node_exporter). Used by the end-to-end test and ``bench/heal.py``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resinfra.healer.act import CallableActuator
from resinfra.healer.inventory import Machine
from resinfra.healer.journal import Journal
from resinfra.healer.observe import AuditLog, Metrics, Notifier
from resinfra.healer.policy import PolicySettings
from resinfra.healer.receiver import Receiver
from resinfra.healer.service import Healer
from resinfra.monitoring_local import HEALER_TOKEN, LOCAL_TIMINGS, LocalMonitoring
from resinfra.render.healer import settle_seconds

LOCAL_POLICY = PolicySettings(startup_grace=0, cooldown=30, max_backoff=120, settle=settle_seconds(LOCAL_TIMINGS))
"""The production rules with the waits a test can afford (the machines here were "created" when the run started)."""


@dataclass(frozen=True)
class FixedInventory:
    """The stack's inventory as the offline run printed it; every machine created ``created`` seconds ago."""

    machines: tuple[Machine, ...]
    created: float

    def load(self) -> tuple[list[Machine], dict[str, float]]:
        return list(self.machines), {m.urn: self.created for m in self.machines}


@dataclass
class LocalHealer:
    healer: Healer
    receiver: Receiver
    actuator: CallableActuator
    audit: AuditLog
    metrics: Metrics

    def wait_for_event(self, match: Callable[[dict[str, Any]], bool], since: float, timeout: float) -> dict[str, Any]:
        """The first audit record after ``since`` (POSIX time) that ``match`` accepts."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.audit.read():
                if record["ts"] >= since and match(record):
                    return record
            time.sleep(0.05)
        raise TimeoutError(f"no matching healer event within {timeout} s; last events: {self.audit.read()[-5:]}")


@contextmanager
def running_healer(local: LocalMonitoring, machines: list[Machine], workdir: Path, policy: PolicySettings = LOCAL_POLICY) -> Iterator[LocalHealer]:
    """Start the healer at the layout's healer address, acting by restarting the killed exporter; stop it afterwards."""
    metrics = Metrics()
    audit = AuditLog(workdir / "healer" / "audit.jsonl")
    actuator = CallableActuator(lambda m: local.start_node(m.name))
    healer = Healer(
        policy,
        FixedInventory(tuple(machines), time.time() - 86400),
        actuator,
        Journal(workdir / "healer" / "journal.sqlite"),
        audit,
        metrics,
        Notifier(None),
        repair_timeout=60,
        alert_ttl=120,
        tick=1,
    )
    endpoint = local.plan.layout.healer
    receiver = Receiver(endpoint.host, endpoint.port, HEALER_TOKEN, healer.submit, metrics, health=healer.health)
    healer.start()
    receiver.start()
    try:
        yield LocalHealer(healer, receiver, actuator, audit, metrics)
    finally:
        receiver.stop()
        healer.stop()
