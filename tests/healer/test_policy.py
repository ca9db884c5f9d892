"""The policy, table-driven; and for every rule, the case it exists for fails once the rule is left out."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from resinfra.healer import policy
from resinfra.healer.alerts import Alert
from resinfra.healer.inventory import Machine
from resinfra.healer.policy import DEFAULT_RULES, History, Kind, Limit, PolicySettings, Reason, Repair, Rules, backoff_until, decide, without
from tests.healer.helpers import NOW, inventory, node_down, paired_inventory, site_unreachable, tunnel_down

SETTINGS = PolicySettings()
GATEWAYS_ON = replace(SETTINGS, repair_gateways=True)


@dataclass(frozen=True)
class Case:
    id: str
    alerts: list[Alert]
    expected: set[tuple[str, Kind, Reason]]
    """(machine or "site <name>", kind, reason) of every decision."""
    machines: list[Machine] = field(default_factory=inventory)
    history: History = field(default_factory=History)
    settings: PolicySettings = SETTINGS


def repairs(machine: str, *spans: tuple[float, float | None, str | None]) -> dict[str, list[Repair]]:
    return {machine: [Repair(machine, started, finished, outcome) for started, finished, outcome in spans]}


W1, W2 = "ri-dev-gcp-worker-1", "ri-dev-gcp-worker-2"

CASES = [
    Case("nothing-wrong", [], set()),
    Case("dead-node-replaced", [node_down(W1, NOW - 60)], {(W1, Kind.REPLACE, Reason.NODE_DOWN)}),
    Case(
        "startup-grace",
        [node_down(W1, NOW - 60)],
        {(W1, Kind.WAIT, Reason.STARTUP_GRACE)},
        machines=inventory(**{"gcp-worker-1": NOW - 300}),
    ),
    Case(
        "site-partition-replaces-nothing",
        # NodeDown fired just before the whole site went dark.
        [node_down(W1, NOW - 120), site_unreachable("gcp", NOW - 60)],
        {("site gcp", Kind.REFUSE, Reason.SITE_PARTITIONED), (W1, Kind.REFUSE, Reason.SITE_PARTITIONED)},
    ),
    Case(
        "tunnel-to-the-resinfra-vm-down-is-a-partition",
        [node_down("ri-dev-proxmox-worker-1", NOW - 120), tunnel_down("hetzner", "proxmox", NOW - 60)],
        {("site proxmox", Kind.REFUSE, Reason.SITE_PARTITIONED), ("ri-dev-proxmox-worker-1", Kind.REFUSE, Reason.SITE_PARTITIONED)},
    ),
    Case(
        "tunnel-between-other-sites-is-no-partition",
        [node_down("ri-dev-proxmox-worker-1", NOW - 120), tunnel_down("gcp", "proxmox", NOW - 60)],
        {("ri-dev-proxmox-worker-1", Kind.REPLACE, Reason.NODE_DOWN)},
    ),
    Case(
        "max-unhealthy-stops-a-mass-failure",
        # One worker per site (no site over its own limit): 4 of 11 machines, 34 % allows 3.
        [node_down(f"ri-dev-{s}-worker-1", NOW - 60 - i) for i, s in enumerate(("gcp", "azure", "hetzner", "proxmox"))],
        {(f"ri-dev-{s}-worker-1", Kind.REFUSE, Reason.MAX_UNHEALTHY) for s in ("gcp", "azure", "hetzner", "proxmox")},
    ),
    Case(
        "max-unhealthy-per-site",
        [node_down(W1, NOW - 60), node_down(W2, NOW - 50)],
        {(W1, Kind.REFUSE, Reason.MAX_UNHEALTHY_SITE), (W2, Kind.REFUSE, Reason.MAX_UNHEALTHY_SITE)},
    ),
    Case(
        "flapping-node-not-replaced-again",
        # Third time down within the hour; both earlier repairs are past their backoff.
        [node_down(W1, NOW - 100)],
        {(W1, Kind.REFUSE, Reason.FLAPPING)},
        history=History(
            repairs=repairs(W1, (NOW - 3000, NOW - 2900, "succeeded"), (NOW - 2000, NOW - 1900, "succeeded")),
            episodes={W1: [NOW - 3050, NOW - 2050, NOW - 100]},
        ),
    ),
    Case(
        "cooldown-after-a-repair",
        [node_down(W1, NOW - 1000)],
        {(W1, Kind.WAIT, Reason.BACKOFF)},
        history=History(repairs=repairs(W1, (NOW - 900, NOW - 300, "failed"))),
    ),
    Case(
        "backoff-grows-with-each-repair",
        # One repair finished 900 s ago would allow another now (cooldown 600 s); two double it to 1200 s.
        [node_down(W1, NOW - 5000)],
        {(W1, Kind.WAIT, Reason.BACKOFF)},
        history=History(repairs=repairs(W1, (NOW - 4000, NOW - 3000, "failed"), (NOW - 1000, NOW - 900, "failed"))),
    ),
    Case(
        "stack-locked-attempt-adds-no-backoff",
        [node_down(W1, NOW - 1000)],
        {(W1, Kind.REPLACE, Reason.NODE_DOWN)},
        history=History(repairs=repairs(W1, (NOW - 60, NOW - 59, policy.LOCKED))),
    ),
    Case("dry-run-acts-on-nothing", [node_down(W1, NOW - 60)], {(W1, Kind.WOULD_REPLACE, Reason.NODE_DOWN)}, settings=replace(SETTINGS, dry_run=True)),
    Case(
        "one-repair-at-a-time",
        [node_down("ri-dev-azure-worker-2", NOW - 50), node_down(W1, NOW - 60)],
        {(W1, Kind.REPLACE, Reason.NODE_DOWN), ("ri-dev-azure-worker-2", Kind.WAIT, Reason.ONE_AT_A_TIME)},
    ),
    Case(
        "nothing-starts-while-a-repair-runs",
        [node_down(W1, NOW - 60)],
        {(W1, Kind.WAIT, Reason.REPAIR_IN_FLIGHT)},
        history=History(repairs=repairs("ri-dev-azure-worker-1", (NOW - 30, None, None))),
    ),
    Case(
        "its-own-repair-is-running",
        # Not "backoff: repaired recently" while the repair has not finished (issue 16: lab status showed that).
        [node_down(W1, NOW - 60)],
        {(W1, Kind.WAIT, Reason.REPAIR_IN_FLIGHT)},
        history=History(repairs=repairs(W1, (NOW - 30, None, None))),
    ),
    Case(
        "restarted-mid-repair-no-second-replacement",
        [node_down(W1, NOW - 2000)],
        {(W1, Kind.REFUSE, Reason.REPAIR_INTERRUPTED)},
        # Interrupted long enough ago for the backoff to be over: only the interruption holds it back.
        history=History(repairs=repairs(W1, (NOW - 1900, NOW - 1800, policy.INTERRUPTED))),
    ),
    Case(
        "node-down-settles-before-a-replacement",
        # Heard 10 s ago: Prometheus may still report the site's partition (a scrape and an evaluation later).
        [replace(node_down(W1, NOW - 70), noticed=NOW - 10)],
        {(W1, Kind.WAIT, Reason.SETTLING)},
    ),
    Case(
        "a-partition-reported-during-the-settle-window-cancels-the-replacement",
        [replace(node_down(W1, NOW - 70), noticed=NOW - 10), replace(site_unreachable("gcp", NOW - 60), noticed=NOW - 1)],
        {("site gcp", Kind.REFUSE, Reason.SITE_PARTITIONED), (W1, Kind.REFUSE, Reason.SITE_PARTITIONED)},
    ),
    Case("the-resinfra-vm-is-never-replaced", [node_down("ri-dev-hetzner-tooling", NOW - 60)], {("ri-dev-hetzner-tooling", Kind.REFUSE, Reason.RESINFRA_VM)}),
    Case("unknown-machine", [node_down("ri-dev-gcp-worker-9", NOW - 60)], {("ri-dev-gcp-worker-9", Kind.REFUSE, Reason.UNKNOWN_MACHINE)}),
    Case("gateway-repair-off-by-default", [node_down("ri-dev-hetzner-gw", NOW - 60)], {("ri-dev-hetzner-gw", Kind.REFUSE, Reason.GATEWAY_REPAIR_DISABLED)}),
    Case("gateway-repair-on", [node_down("ri-dev-hetzner-gw", NOW - 60)], {("ri-dev-hetzner-gw", Kind.REPLACE, Reason.NODE_DOWN)}, settings=GATEWAYS_ON),
    Case(
        "partitioned-strongswan-site-gets-its-gateway-replaced",
        [site_unreachable("proxmox", NOW - 60)],
        {("site proxmox", Kind.REFUSE, Reason.SITE_PARTITIONED), ("ri-dev-proxmox-gw", Kind.REPLACE, Reason.GATEWAY_UNREACHABLE)},
        settings=GATEWAYS_ON,
    ),
    Case(
        "several-partitions-repair-no-gateway",
        [site_unreachable("proxmox", NOW - 60), site_unreachable("gcp", NOW - 60)],
        {("site proxmox", Kind.REFUSE, Reason.SITE_PARTITIONED), ("site gcp", Kind.REFUSE, Reason.SITE_PARTITIONED)},
        settings=GATEWAYS_ON,
    ),
    # Issue 15: a gateway pair is redundancy. One dead gateway is replaced as a worker would be (its partner carries the
    # tunnels, the site is not partitioned); both dead is a partition, as with one gateway.
    Case(
        "one-gateway-of-a-pair-is-replaced-like-a-worker",
        [node_down("ri-dev-proxmox-gw-1", NOW - 60)],
        {("ri-dev-proxmox-gw-1", Kind.REPLACE, Reason.NODE_DOWN)},
        machines=paired_inventory(),
    ),
    Case(
        "both-gateways-of-a-pair-down-need-repair-gateways",
        [node_down("ri-dev-proxmox-gw-1", NOW - 60), node_down("ri-dev-proxmox-gw-2", NOW - 59)],
        {("ri-dev-proxmox-gw-1", Kind.REFUSE, Reason.GATEWAY_REPAIR_DISABLED), ("ri-dev-proxmox-gw-2", Kind.REFUSE, Reason.GATEWAY_REPAIR_DISABLED)},
        machines=paired_inventory(),
    ),
    Case(
        "a-partitioned-pair-site-replaces-nothing",
        [node_down("ri-dev-proxmox-gw-1", NOW - 120), node_down("ri-dev-proxmox-gw-2", NOW - 119), site_unreachable("proxmox", NOW - 60)],
        {
            ("site proxmox", Kind.REFUSE, Reason.SITE_PARTITIONED),
            ("ri-dev-proxmox-gw-1", Kind.REFUSE, Reason.SITE_PARTITIONED),
            ("ri-dev-proxmox-gw-2", Kind.REFUSE, Reason.SITE_PARTITIONED),
        },
        machines=paired_inventory(),
    ),
    Case(
        "a-partitioned-pair-site-gets-its-gateways-repaired-one-at-a-time",
        [site_unreachable("proxmox", NOW - 60)],
        {
            ("site proxmox", Kind.REFUSE, Reason.SITE_PARTITIONED),
            ("ri-dev-proxmox-gw-1", Kind.REPLACE, Reason.GATEWAY_UNREACHABLE),
            ("ri-dev-proxmox-gw-2", Kind.WAIT, Reason.ONE_AT_A_TIME),
        },
        machines=paired_inventory(),
        settings=GATEWAYS_ON,
    ),
    Case(
        "managed-gateway-site-partition-only-notifies",
        [site_unreachable("azure", NOW - 60)],
        {("site azure", Kind.REFUSE, Reason.SITE_PARTITIONED)},
        settings=GATEWAYS_ON,
    ),
]

RULE_CASES: dict[str, list[str]] = {
    "refuse_unknown": ["unknown-machine"],
    "refuse_resinfra_vm": ["the-resinfra-vm-is-never-replaced"],
    "refuse_partitioned": ["site-partition-replaces-nothing", "tunnel-to-the-resinfra-vm-down-is-a-partition"],
    "refuse_gateway": ["gateway-repair-off-by-default", "both-gateways-of-a-pair-down-need-repair-gateways"],
    "refuse_interrupted": ["restarted-mid-repair-no-second-replacement"],
    "wait_startup_grace": ["startup-grace"],
    "refuse_flapping": ["flapping-node-not-replaced-again"],
    "wait_backoff": ["cooldown-after-a-repair", "backoff-grows-with-each-repair"],
    "refuse_max_unhealthy": ["max-unhealthy-stops-a-mass-failure"],
    "refuse_max_unhealthy_site": ["max-unhealthy-per-site"],
    "wait_repair_in_flight": ["nothing-starts-while-a-repair-runs"],
    "wait_own_repair": ["its-own-repair-is-running"],
    "one_at_a_time": ["one-repair-at-a-time"],
    "wait_settle": ["node-down-settles-before-a-replacement"],
    "dry_run_only_logs": ["dry-run-acts-on-nothing"],
}


def outcome(case: Case, rules: Rules = DEFAULT_RULES) -> set[tuple[str, Kind, Reason]]:
    decisions = decide(case.machines, case.alerts, case.history, NOW, case.settings, rules)
    return {(d.machine or f"site {d.site}", d.kind, d.reason) for d in decisions}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_policy(case: Case) -> None:
    assert outcome(case) == case.expected


@pytest.mark.parametrize("rule", list(RULE_CASES))
def test_each_rule_is_what_makes_its_cases_pass(rule: str) -> None:
    """Leave the rule out: every case it exists for now decides something else."""
    function = getattr(policy, rule)
    assert function in policy.NODE_RULES + policy.FLEET_RULES
    weakened = without(Rules(), function)
    for case_id in RULE_CASES[rule]:
        case = next(c for c in CASES if c.id == case_id)
        assert outcome(case, weakened) != case.expected, f"{case_id} still passes without {rule}"


def test_every_rule_has_a_case() -> None:
    assert {r.__name__ for r in policy.NODE_RULES + policy.FLEET_RULES} == set(RULE_CASES)


def test_at_most_one_replace_whatever_fails() -> None:
    machines = inventory()
    everything = [node_down(m.name, NOW - 100 + i) for i, m in enumerate(machines)]
    lenient = replace(SETTINGS, max_unhealthy=Limit(100, True), max_unhealthy_per_site=Limit(100, True), repair_gateways=True)
    decisions = decide(machines, everything, History(), NOW, lenient)
    assert sum(d.kind is Kind.REPLACE for d in decisions) == 1


@pytest.mark.parametrize(("count", "delay"), [(1, 600), (2, 1200), (3, 2400), (4, 4800), (6, 19200), (7, 21600), (9, 21600)])
def test_backoff_doubles_per_recent_repair_up_to_the_maximum(count: int, delay: float) -> None:
    history = [Repair(W1, NOW - 3600 + i, NOW - 3600 + i, "failed") for i in range(count)]
    until = backoff_until(history, NOW, SETTINGS)
    assert until is not None and until - (NOW - 3600 + count - 1) == delay


def test_old_repairs_stop_counting() -> None:
    old = [Repair(W1, NOW - 2 * 86400, NOW - 2 * 86400, "failed")] * 5
    assert backoff_until(old, NOW, SETTINGS) is None


def test_wait_says_when_it_ends() -> None:
    case = next(c for c in CASES if c.id == "cooldown-after-a-repair")
    (decision,) = decide(case.machines, case.alerts, case.history, NOW, case.settings)
    assert decision.next_check == NOW - 300 + 600


@pytest.mark.parametrize(
    ("limit", "total", "allowed"),
    [("2", 11, 2), ("34%", 11, 3), ("50%", 2, 1), ("50%", 3, 1), ("50%", 1, 1), ("0%", 10, 0), ("0", 10, 0), ("100%", 4, 4)],
)
def test_max_unhealthy_counts_and_percentages(limit: str, total: int, allowed: int) -> None:
    assert Limit.parse(limit).allowed(total) == allowed


def test_a_repaired_machine_still_booting_is_left_alone() -> None:
    """Right after a replacement the alert still fires; the new machine's grace (from the state) holds it back."""
    machines = inventory(**{"gcp-worker-1": NOW - 30})
    history = History(repairs=repairs(W1, (NOW - 200, NOW - 30, "succeeded")))
    (decision,) = decide(machines, [node_down(W1, NOW - 400)], history, NOW, SETTINGS)
    assert (decision.kind, decision.reason) == (Kind.WAIT, Reason.STARTUP_GRACE)
