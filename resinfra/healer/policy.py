"""Decide: a pure function from (inventory, active alerts, history, clock, settings) to one decision per unhealthy machine.

Shaped after Cluster API's MachineHealthCheck: candidates are the machines an alert says
are dead (and, when enabled, the gateway VM of a partitioned site); each candidate goes
through the per-machine rules in order (the first that applies decides), then the fleet
rules (``max_unhealthy``, one repair at a time, dry-run) see the candidates left. Every
decision carries a kind and a named reason (constants below), which the audit log, the
metrics and ``resinfra heal simulate`` print.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from resinfra.addressing import Role
from resinfra.healer.alerts import NODE_DOWN, SITE_UNREACHABLE, TUNNEL_DOWN, Alert, format_time
from resinfra.healer.inventory import Machine


class Kind(enum.StrEnum):
    """What the healer does about a machine or site."""

    REPLACE = "replace"
    """Start ``pulumi up --replace`` on the machine now."""
    WOULD_REPLACE = "would-replace"
    """Dry-run: the same decision as REPLACE, logged only."""
    WAIT = "wait"
    """Not now; reconsidered later without anyone's help (grace, backoff, another repair running)."""
    REFUSE = "refuse"
    """Not while this lasts; a human should look (partition, too many unhealthy, flapping, ...)."""


class Reason(enum.StrEnum):
    """Why a decision was taken (the audit log's and the metrics' ``reason``)."""

    NODE_DOWN = "node-down"
    """NodeDown fires for the machine and no rule holds it back."""
    GATEWAY_UNREACHABLE = "gateway-unreachable"
    """The site is partitioned and its gateway VM is repaired (``repairGateways``)."""
    UNKNOWN_MACHINE = "unknown-machine"
    """The alert names a machine the stack's inventory does not have."""
    RESINFRA_VM = "resinfra-vm"
    """The healer never replaces the machine it runs on."""
    SITE_PARTITIONED = "site-partitioned"
    """SiteUnreachable, or a tunnel from the tooling VM's site to it, is down: a partition, not dead machines."""
    GATEWAY_REPAIR_DISABLED = "gateway-repair-disabled"
    """Gateways are replaced only with ``repairGateways: true``."""
    REPAIR_INTERRUPTED = "repair-interrupted"
    """A repair of this machine was cut off by a healer restart during this same outage; its outcome is unknown."""
    STARTUP_GRACE = "startup-grace"
    """The machine is younger than ``startupGraceSeconds``: it may still be booting."""
    FLAPPING = "flapping"
    """The machine went down ``flapThreshold`` times within ``flapWindowSeconds``."""
    BACKOFF = "backoff"
    """The machine was repaired recently: cooldown doubled per recent repair, up to ``maxBackoffSeconds``."""
    MAX_UNHEALTHY = "max-unhealthy"
    """More machines are unhealthy than ``maxUnhealthy`` allows: remediation stops (a mass failure is no job for the healer)."""
    MAX_UNHEALTHY_SITE = "max-unhealthy-site"
    """More machines of the site are unhealthy than ``maxUnhealthyPerSite`` allows."""
    REPAIR_IN_FLIGHT = "repair-in-flight"
    """A repair is running; one update of the stack at a time."""
    ONE_AT_A_TIME = "one-at-a-time"
    """Another machine goes first (oldest alert first); this one comes after it."""
    SETTLING = "settling"
    """NodeDown was heard of less than ``settleSeconds`` ago: a SiteUnreachable or TunnelDown for its site may still follow."""


@dataclass(frozen=True)
class Limit:
    """``maxUnhealthy``: a count (``2``) or a percentage of the machines in scope (``"34%"``)."""

    value: int
    percent: bool

    @staticmethod
    def parse(text: str | int) -> Limit:
        """``Limit.parse("34%")``, ``Limit.parse(2)``."""
        match = re.fullmatch(r"(\d+)(%?)", str(text).strip())
        if match is None:
            raise ValueError(f"{text!r} is neither a count nor a percentage")
        return Limit(int(match[1]), bool(match[2]))

    def allowed(self, total: int) -> int:
        """How many unhealthy machines of ``total`` still allow remediation.

        A percentage rounds down but never below 1 (a positive percentage of a small site
        still lets one dead machine be replaced); 0 or 0 % allows none.
        """
        if not self.percent:
            return self.value
        if self.value == 0:
            return 0
        return max(1, math.floor(total * self.value / 100))

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"


@dataclass(frozen=True)
class PolicySettings:
    """The thresholds (``resinfra:healer`` in the stack config); the defaults are the safe ones."""

    startup_grace: float = 900
    max_unhealthy: Limit = Limit(34, True)
    max_unhealthy_per_site: Limit = Limit(50, True)
    cooldown: float = 600
    max_backoff: float = 6 * 3600
    backoff_window: float = 24 * 3600
    """Repairs older than this no longer lengthen the backoff."""
    flap_window: float = 3600
    flap_threshold: int = 3
    repair_gateways: bool = False
    dry_run: bool = False
    settle: float = 45.0
    """Seconds a NodeDown must have been known before its machine is replaced, so that a partition of its site
    (SiteUnreachable, TunnelDown), which Prometheus may report a scrape and an evaluation later, cancels it.
    The default is production's (``resinfra.render.healer.settle_seconds`` of the default timings)."""


@dataclass(frozen=True)
class Repair:
    """A repair the journal knows of."""

    machine: str
    started: float
    finished: float | None = None
    outcome: str | None = None
    """``succeeded``, ``failed``, ``locked``, ``timeout``, ``interrupted``; None while running."""


INTERRUPTED = "interrupted"
LOCKED = "locked"
"""Outcomes with a meaning for the policy: an interrupted repair's result is unknown; a
locked one never started (someone else held the stack) and does not lengthen the backoff."""


@dataclass(frozen=True)
class History:
    """What happened before: repairs and down episodes per machine (from the journal)."""

    repairs: Mapping[str, Sequence[Repair]] = field(default_factory=dict)
    episodes: Mapping[str, Sequence[float]] = field(default_factory=dict)
    """Start times of each NodeDown episode per machine (the alert's ``startsAt``)."""

    @property
    def in_flight(self) -> Repair | None:
        return next((r for rs in self.repairs.values() for r in rs if r.finished is None), None)


@dataclass(frozen=True)
class Decision:
    """What to do about one machine (or, with ``machine`` None, a whole site)."""

    kind: Kind
    reason: Reason
    site: str
    machine: str | None = None
    role: str | None = None
    urn: str | None = None
    detail: str = ""
    next_check: float | None = None
    """When a WAIT may change by itself (grace or backoff ends)."""

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "reason": self.reason.value,
            "site": self.site,
            "machine": self.machine,
            "role": self.role,
            "urn": self.urn,
            "detail": self.detail,
            "nextCheck": format_time(self.next_check) if self.next_check is not None else None,
        }


@dataclass(frozen=True)
class Candidate:
    """A machine the alerts say needs a repair."""

    name: str
    site: str
    since: float
    """When its trouble started (the alert's ``startsAt``)."""
    reason: Reason
    machine: Machine | None
    noticed: float | None = None
    """When the healer first heard of the alert (None: unknown, its ``since`` stands in)."""


@dataclass(frozen=True)
class Situation:
    """Everything the rules read, computed once per decision."""

    inventory: Mapping[str, Machine]
    partitioned: Mapping[str, str]
    """Partitioned site -> why (which alert)."""
    unhealthy: Sequence[Candidate]
    history: History
    now: float
    settings: PolicySettings


NodeRule = Callable[[Candidate, Situation], Decision | None]
FleetRule = Callable[[Sequence[Candidate], Situation], dict[str, Decision]]


def _decision(c: Candidate, kind: Kind, reason: Reason, detail: str, next_check: float | None = None) -> Decision:
    m = c.machine
    return Decision(kind, reason, c.site, c.name, m.role.value if m else None, m.urn if m else None, detail, next_check)


# Per-machine rules, in order: the first that returns a decision decides.


def refuse_unknown(c: Candidate, s: Situation) -> Decision | None:
    if c.machine is None:
        return _decision(c, Kind.REFUSE, Reason.UNKNOWN_MACHINE, "not in the stack's inventory; nothing to replace")
    return None


def refuse_resinfra_vm(c: Candidate, s: Situation) -> Decision | None:
    if c.machine is not None and c.machine.role is Role.TOOLING:
        return _decision(c, Kind.REFUSE, Reason.RESINFRA_VM, "the healer runs on it; replace it by hand: pulumi up --replace <urn>")
    return None


def refuse_partitioned(c: Candidate, s: Situation) -> Decision | None:
    if c.site in s.partitioned and c.reason is not Reason.GATEWAY_UNREACHABLE:
        return _decision(c, Kind.REFUSE, Reason.SITE_PARTITIONED, f"site {c.site} is partitioned ({s.partitioned[c.site]}): nothing there is replaced")
    return None


def refuse_gateway(c: Candidate, s: Situation) -> Decision | None:
    if c.machine is None or c.machine.role is not Role.GATEWAY or s.settings.repair_gateways:
        return None
    if c.reason is Reason.NODE_DOWN and _partner_carries_the_site(c, s):
        # One gateway of a pair is redundancy, not the site's link: its partner has taken the tunnels over (issue 15),
        # so it is replaced as a worker would be, whatever repairGateways says (that key is about partitions).
        return None
    return _decision(c, Kind.REFUSE, Reason.GATEWAY_REPAIR_DISABLED, "gateways are replaced only with resinfra:healer.repairGateways true")


def _partner_carries_the_site(c: Candidate, s: Situation) -> bool:
    """Another gateway VM of ``c``'s site (a pair, ``gateways: 2``) is in the inventory and not down itself."""
    partners = [m.name for m in s.inventory.values() if m.site == c.site and m.role is Role.GATEWAY and m.name != c.name]
    down = {u.name for u in s.unhealthy}
    return any(p not in down for p in partners)


def refuse_interrupted(c: Candidate, s: Situation) -> Decision | None:
    for r in s.history.repairs.get(c.name, ()):
        if r.outcome == INTERRUPTED and r.started >= c.since:
            return _decision(
                c,
                Kind.REFUSE,
                Reason.REPAIR_INTERRUPTED,
                f"a repair started {format_time(r.started)} was cut off by a healer restart; its outcome is unknown: check the stack, "
                "then replace by hand or wait for the machine to come back",
            )
    return None


def wait_own_repair(c: Candidate, s: Situation) -> Decision | None:
    """The machine's own repair is running: say so (its backoff would read "repaired recently" before it has finished)."""
    running = next((r for r in s.history.repairs.get(c.name, ()) if r.finished is None), None)
    if running is not None:
        return _decision(c, Kind.WAIT, Reason.REPAIR_IN_FLIGHT, f"its repair is running since {format_time(running.started)}")
    return None


def wait_startup_grace(c: Candidate, s: Situation) -> Decision | None:
    created = c.machine.created if c.machine else None
    if created is not None and s.now < created + s.settings.startup_grace:
        ends = created + s.settings.startup_grace
        return _decision(c, Kind.WAIT, Reason.STARTUP_GRACE, f"created {format_time(created)}; grace ends {format_time(ends)}", ends)
    return None


def refuse_flapping(c: Candidate, s: Situation) -> Decision | None:
    recent = [t for t in s.history.episodes.get(c.name, ()) if t >= s.now - s.settings.flap_window]
    if len(recent) >= s.settings.flap_threshold:
        return _decision(
            c, Kind.REFUSE, Reason.FLAPPING, f"down {len(recent)} times in the last {s.settings.flap_window:g} s (threshold {s.settings.flap_threshold})"
        )
    return None


def backoff_until(repairs: Sequence[Repair], now: float, settings: PolicySettings) -> float | None:
    """When the next repair of a machine may start, given its past repairs (None: now)."""
    counted = [r for r in repairs if r.outcome != LOCKED and r.started >= now - settings.backoff_window]
    if not counted:
        return None
    last = max(counted, key=lambda r: r.started)
    delay = min(settings.cooldown * 2 ** (len(counted) - 1), settings.max_backoff)
    return (last.finished if last.finished is not None else last.started) + delay


def wait_backoff(c: Candidate, s: Situation) -> Decision | None:
    until = backoff_until(s.history.repairs.get(c.name, ()), s.now, s.settings)
    if until is not None and s.now < until:
        return _decision(c, Kind.WAIT, Reason.BACKOFF, f"repaired recently; next attempt not before {format_time(until)}", until)
    return None


def wait_settle(c: Candidate, s: Situation) -> Decision | None:
    if c.reason is not Reason.NODE_DOWN:
        return None
    heard = c.noticed if c.noticed is not None else c.since
    ends = heard + s.settings.settle
    if s.now < ends:
        return _decision(
            c, Kind.WAIT, Reason.SETTLING, f"NodeDown heard {format_time(heard)}; a partition of {c.site} may still be reported until {format_time(ends)}", ends
        )
    return None


NODE_RULES: tuple[NodeRule, ...] = (
    refuse_unknown,
    refuse_resinfra_vm,
    refuse_partitioned,
    refuse_gateway,
    refuse_interrupted,
    wait_own_repair,
    wait_startup_grace,
    refuse_flapping,
    wait_backoff,
    wait_settle,
)


# Fleet rules: each sees the candidates no earlier rule decided and returns decisions for some.


def refuse_max_unhealthy(eligible: Sequence[Candidate], s: Situation) -> dict[str, Decision]:
    counted = [c for c in s.unhealthy if c.machine is not None]
    allowed = s.settings.max_unhealthy.allowed(len(s.inventory))
    if len(counted) <= allowed:
        return {}
    detail = f"{len(counted)} of {len(s.inventory)} machines unhealthy, maxUnhealthy {s.settings.max_unhealthy} allows {allowed}"
    return {c.name: _decision(c, Kind.REFUSE, Reason.MAX_UNHEALTHY, detail) for c in eligible}


def refuse_max_unhealthy_site(eligible: Sequence[Candidate], s: Situation) -> dict[str, Decision]:
    out = {}
    for c in eligible:
        total = sum(1 for m in s.inventory.values() if m.site == c.site)
        counted = sum(1 for u in s.unhealthy if u.site == c.site and u.machine is not None)
        allowed = s.settings.max_unhealthy_per_site.allowed(total)
        if counted > allowed:
            detail = f"{counted} of {total} machines of site {c.site} unhealthy, maxUnhealthyPerSite {s.settings.max_unhealthy_per_site} allows {allowed}"
            out[c.name] = _decision(c, Kind.REFUSE, Reason.MAX_UNHEALTHY_SITE, detail)
    return out


def wait_repair_in_flight(eligible: Sequence[Candidate], s: Situation) -> dict[str, Decision]:
    running = s.history.in_flight
    if running is None:
        return {}
    detail = f"repair of {running.machine} running since {format_time(running.started)}"
    return {c.name: _decision(c, Kind.WAIT, Reason.REPAIR_IN_FLIGHT, detail) for c in eligible}


def one_at_a_time(eligible: Sequence[Candidate], s: Situation) -> dict[str, Decision]:
    if len(eligible) < 2:
        return {}
    first = eligible[0]
    return {c.name: _decision(c, Kind.WAIT, Reason.ONE_AT_A_TIME, f"{first.name} goes first (its trouble started earlier)") for c in eligible[1:]}


def _replace_detail(c: Candidate, s: Situation) -> str:
    what = "NodeDown" if c.reason is Reason.NODE_DOWN else f"site {c.site} partitioned ({s.partitioned.get(c.site, '')})"
    return f"{what} since {format_time(c.since)}"


def dry_run_only_logs(eligible: Sequence[Candidate], s: Situation) -> dict[str, Decision]:
    if not s.settings.dry_run:
        return {}
    return {c.name: _decision(c, Kind.WOULD_REPLACE, c.reason, _replace_detail(c, s) + " (dry-run: nothing is done)") for c in eligible}


def replace_the_rest(eligible: Sequence[Candidate], s: Situation) -> dict[str, Decision]:
    """What no rule held back is replaced."""
    return {c.name: _decision(c, Kind.REPLACE, c.reason, _replace_detail(c, s)) for c in eligible}


FLEET_RULES: tuple[FleetRule, ...] = (refuse_max_unhealthy, refuse_max_unhealthy_site, wait_repair_in_flight, one_at_a_time, dry_run_only_logs)


@dataclass(frozen=True)
class Rules:
    """The rules :func:`decide` applies; tests leave one out to show its case then fails."""

    node: tuple[NodeRule, ...] = NODE_RULES
    fleet: tuple[FleetRule, ...] = FLEET_RULES


DEFAULT_RULES = Rules()


def partitioned_sites(alerts: Sequence[Alert], resinfra_site: str | None) -> dict[str, str]:
    """Sites the tooling VM cannot judge: SiteUnreachable fires, or a tunnel between it and the tooling VM's site is down."""
    out: dict[str, str] = {}
    for a in alerts:
        site = a.label("site")
        if a.name == SITE_UNREACHABLE and site:
            out.setdefault(site, SITE_UNREACHABLE)
        if a.name == TUNNEL_DOWN and resinfra_site is not None:
            source = a.label("source_site")
            ends = {source, site}
            if resinfra_site in ends:
                other = next((e for e in ends if e and e != resinfra_site), None)
                if other:
                    out.setdefault(other, f"{TUNNEL_DOWN} {a.label('tunnel') or ''}".strip())
    return out


def _candidates(inventory: Mapping[str, Machine], alerts: Sequence[Alert], partitioned: Mapping[str, str], settings: PolicySettings) -> list[Candidate]:
    found: dict[str, Candidate] = {}
    for a in alerts:
        name = a.label("node")
        if a.name != NODE_DOWN or not name or name in found:
            continue
        machine = inventory.get(name)
        found[name] = Candidate(name, machine.site if machine else a.label("site") or "?", a.starts_at, Reason.NODE_DOWN, machine, a.noticed)
    # A partition of exactly one site may be its gateway VM's fault; several at once point at
    # the tooling VM's own connectivity, and no remote gateway is to blame.
    if settings.repair_gateways and len(partitioned) == 1:
        (site,) = partitioned
        since = min((a.starts_at for a in alerts if a.label("site") == site and a.name in (SITE_UNREACHABLE, TUNNEL_DOWN)), default=0.0)
        for m in inventory.values():
            if m.site == site and m.role is Role.GATEWAY:
                found[m.name] = Candidate(m.name, site, since, Reason.GATEWAY_UNREACHABLE, m)
    return sorted(found.values(), key=lambda c: (c.since, c.name))


def decide(
    inventory: Sequence[Machine],
    alerts: Sequence[Alert],
    history: History,
    now: float,
    settings: PolicySettings,
    rules: Rules = DEFAULT_RULES,
) -> list[Decision]:
    """Every decision for the present moment: one per unhealthy machine, one per partitioned site.

    + inventory: the stack's machines (with creation times where known)
    + alerts: the firing alerts (see :class:`resinfra.healer.alerts.AlertBook`)
    + history: past repairs and down episodes (the journal)
    + now: the clock, as a POSIX timestamp
    + settings: the thresholds

    At most one decision is REPLACE (or WOULD_REPLACE), and none while a repair runs.

    Example: one worker with NodeDown, nothing else wrong, no recent repair:
    ``[Decision(Kind.REPLACE, Reason.NODE_DOWN, "gcp", "ri-dev-gcp-worker-1", ...)]``.
    """
    by_name = {m.name: m for m in inventory}
    resinfra_site = next((m.site for m in inventory if m.role is Role.TOOLING), None)
    partitioned = partitioned_sites(alerts, resinfra_site)
    candidates = _candidates(by_name, alerts, partitioned, settings)
    unhealthy = [c for c in candidates if c.site not in partitioned or c.reason is Reason.GATEWAY_UNREACHABLE]
    situation = Situation(by_name, partitioned, unhealthy, history, now, settings)

    decided: dict[str, Decision] = {}
    for c in candidates:
        for rule in rules.node:
            verdict = rule(c, situation)
            if verdict is not None:
                decided[c.name] = verdict
                break
    for fleet_rule in rules.fleet:
        eligible = [c for c in candidates if c.name not in decided]
        decided.update(fleet_rule(eligible, situation))
    decided.update(replace_the_rest([c for c in candidates if c.name not in decided], situation))

    site_decisions = [
        Decision(
            Kind.REFUSE,
            Reason.SITE_PARTITIONED,
            site,
            detail=f"{why}: the tooling VM cannot judge the machines of {site}; nothing there is replaced"
            + ("" if settings.repair_gateways and len(partitioned) == 1 else " (no gateway repair: " + _why_no_gateway_repair(settings, partitioned) + ")"),
        )
        for site, why in sorted(partitioned.items())
    ]
    return site_decisions + [decided[c.name] for c in candidates if c.name in decided]


def _why_no_gateway_repair(settings: PolicySettings, partitioned: Mapping[str, str]) -> str:
    if not settings.repair_gateways:
        return "repairGateways is off"
    return f"{len(partitioned)} sites are partitioned at once, which points at the tooling VM's own connectivity"


def without(rules: Rules, rule: NodeRule | FleetRule) -> Rules:
    """``rules`` with one rule left out (for the tests that show each rule matters)."""
    return replace(rules, node=tuple(r for r in rules.node if r is not rule), fleet=tuple(r for r in rules.fleet if r is not rule))
