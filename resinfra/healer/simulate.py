"""What-if: the policy replayed over a recorded inventory and a time-ordered list of Alertmanager payloads; nothing is done.

A REPLACE decision is played as a repair that takes ``repair_seconds`` and succeeds, so
backoff, one-at-a-time and flapping show as they would on the tooling VM.
"""

from __future__ import annotations

import heapq
import itertools
import json
from dataclasses import dataclass
from typing import Any

from resinfra.healer.alerts import FIRING, NODE_DOWN, AlertBook, PayloadError, format_time, parse_payload, parse_time
from resinfra.healer.inventory import Machine
from resinfra.healer.policy import Decision, History, Kind, PolicySettings, Repair, decide

DEFAULT_REPAIR_SECONDS = 300.0


@dataclass(frozen=True)
class Arrival:
    """One payload and the time it arrived."""

    received: float
    payload: dict[str, Any]


def parse_arrivals(document: Any) -> list[Arrival]:
    """The alerts file: a JSON list of ``{"receivedAt": RFC 3339, "payload": <Alertmanager webhook body>}``, in time order."""
    if not isinstance(document, list):
        raise PayloadError("the alerts file is not a JSON list of {receivedAt, payload}")
    arrivals = []
    for i, entry in enumerate(document):
        if not isinstance(entry, dict) or not isinstance(entry.get("receivedAt"), str) or not isinstance(entry.get("payload"), dict):
            raise PayloadError(f"entry {i} needs receivedAt (RFC 3339) and payload (the webhook body)")
        # Both checked here, before anything is replayed, so the message can say which entry it is.
        try:
            received = parse_time(entry["receivedAt"])
        except PayloadError as err:
            raise PayloadError(f"entry {i}: receivedAt: {err}") from None
        try:
            parse_payload(entry["payload"])
        except PayloadError as err:
            raise PayloadError(f"entry {i} (receivedAt {entry['receivedAt']}): payload: {err}") from None
        arrivals.append(Arrival(received, entry["payload"]))
    if any(b.received < a.received for a, b in itertools.pairwise(arrivals)):
        raise PayloadError("the alerts file is not in time order (receivedAt must not decrease)")
    return arrivals


@dataclass(frozen=True)
class Step:
    """The decisions at one moment, and what brought the moment about."""

    time: float
    cause: str
    decisions: list[Decision]


def simulate(
    inventory: list[Machine], arrivals: list[Arrival], settings: PolicySettings, repair_seconds: float = DEFAULT_REPAIR_SECONDS, alert_ttl: float = 900
) -> list[Step]:
    """Run the policy at every arrival and every simulated repair's end; returns each moment's decisions."""
    book = AlertBook(alert_ttl)
    repairs: dict[str, list[Repair]] = {}
    episodes: dict[str, list[float]] = {}
    events: list[tuple[float, int, str, Any]] = [(a.received, i, "webhook", a) for i, a in enumerate(arrivals)]
    heapq.heapify(events)
    counter = len(arrivals)
    steps = []
    rechecks: set[tuple[float, str | None]] = set()
    while events:
        now, _, cause, item = heapq.heappop(events)
        if cause == "webhook":
            alerts = parse_payload(item.payload)
            for alert in book.apply(alerts, now):
                node = alert.label("node")
                if alert.name == NODE_DOWN and alert.status == FIRING and node and alert.starts_at not in episodes.setdefault(node, []):
                    episodes[node].append(alert.starts_at)
            what = ", ".join(f"{a.name} {a.status} {a.label('node') or a.label('site') or ''}".strip() for a in alerts)
            label = f"webhook: {what}"
        elif cause == "re-check":
            label = f"re-check: {item}"
        else:
            machine = item
            repairs[machine] = [r if r.finished is not None else Repair(r.machine, r.started, now, "succeeded") for r in repairs[machine]]
            label = f"simulated repair of {machine} finished"
        decisions = decide(inventory, book.active(now), History(repairs, episodes), now, settings)
        for d in decisions:
            if d.kind is Kind.REPLACE and d.machine is not None:
                repairs.setdefault(d.machine, []).append(Repair(d.machine, now))
                counter += 1
                heapq.heappush(events, (now + repair_seconds, counter, "repair-done", d.machine))
            elif d.kind is Kind.WAIT and d.next_check is not None and d.next_check > now and (d.next_check, d.machine) not in rechecks:
                # A wait that ends by itself (settle, grace, backoff) is decided again then, as the service's tick does.
                rechecks.add((d.next_check, d.machine))
                counter += 1
                heapq.heappush(events, (d.next_check, counter, "re-check", f"{d.machine} {d.reason.value} ends"))
        steps.append(Step(now, label, decisions))
    return steps


def format_steps(steps: list[Step]) -> str:
    """Human-readable: each moment, then one line per decision with its reason."""
    lines = []
    for step in steps:
        lines.append(f"{format_time(step.time)}  {step.cause}")
        if not step.decisions:
            lines.append("    (nothing to decide)")
        for d in step.decisions:
            subject = d.machine or f"site {d.site}"
            lines.append(f"    {d.kind.value:13s} {subject:32s} {d.reason.value:24s} {d.detail}")
    return "\n".join(lines)


def steps_json(steps: list[Step]) -> str:
    return json.dumps([{"time": format_time(s.time), "cause": s.cause, "decisions": [d.as_dict() for d in s.decisions]} for s in steps], indent=2)
