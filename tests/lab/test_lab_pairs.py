"""Gateway pairs in the lab (root): the dev stack with ``gateways: 2`` on its Hetzner and Proxmox sites, through
``resinfra lab``: two gateway namespaces per such site, keepalived, the notify script and charon as rendered, the
Hetzner API's address moves emulated (resinfra/lab/pairs.py, resinfra/lab/hcloud_api.py).

For each pair site: continuous pings between a worker of the site and a worker of every other site (GCP and Azure
included, both ways) while the active gateway is killed -> every direction answers again within the issue's 10 s,
through the other gateway; the healer replaces the dead one, which boots as the standby, so the pair is redundant
again (both alive, one MASTER, one BACKUP, both scraped); then the other gateway is killed and the same holds. Then
each pair site is partitioned whole: the healer replaces nothing, and the site is back after ``lab heal``.
The tests run in this order and share one lab.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from resinfra.lab import outages
from resinfra.lab.failover import apart, first_workers, tunnels_up
from resinfra.lab.observe import audit_events, prometheus_query, targets_healthy, wait_for_event
from resinfra.lab.pairs import TOKEN, active_member, member_failover, pair_states
from resinfra.lab.preconditions import root_of
from resinfra.lab.state import LabState, MachineRecord, load
from resinfra.netlab import run, wait_for
from tests.conftest import dev_config, lab_name_for_tests
from tests.lab import running

NAME = lab_name_for_tests("RESINFRA_TEST_LAB_NAME", "rlt", "g")
PAIR_SITES = ("hetzner", "proxmox")
RESTORED_SECONDS = 15.0
"""Every cross-site path restored through the other gateway. The issue's target, 10 s, is measured by
``bench/failover.py`` on a quiet machine (Hetzner 6-7 s: VRRP's ~3.6 s, then the API's route moves one after another);
this test runs beside the rest of the suite on two busy cores, so it allows 15 s. That the other gateway carries the
traffic, not a replacement of the dead one, is asserted by name."""
TIMEOUT = 60.0
HEAL_TIMEOUT = 120.0
"""The lab's NodeDown (3 s), the healer's settle window, the replacement's wait and boot, with room on a busy machine."""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabState]:
    values = dev_config()
    for site in values["resinfra:sites"]:
        if site["provider"] in PAIR_SITES:
            site["gateways"] = 2
    config = Path(tmp_path_factory.mktemp("pairs")) / "Pulumi.pairs.yaml"
    config.write_text(yaml.safe_dump({"config": values}))
    for state_, output in running.lab_up(NAME, "--config-file", str(config), "--workers", "1"):
        assert "starting the gateway pairs" in output, output
        yield state_


def state() -> LabState:
    return load(root_of(NAME))


def redundant(site: str) -> bool:
    """Both gateways of ``site`` alive, one MASTER and one BACKUP, and every scrape target (both gateways') up."""
    now = state()
    return sorted(m["state"] for m in pair_states(now)[site]) == ["BACKUP", "MASTER"] and targets_healthy(now)


def api(path: str) -> dict[str, object]:
    """A GET on the emulated Hetzner API from the Hetzner network's namespace (where a gateway calls it)."""
    now = state()
    url = api_endpoint_of(now) + path
    return json.loads(run("ip", "netns", "exec", f"{NAME}-hetzner", "curl", "-sf", "-H", f"Authorization: Bearer {TOKEN}", url).stdout)


def api_endpoint_of(now: LabState) -> str:
    member = next(m for m in now.machines.values() if m.paired and m.site == "hetzner")
    moves = member_failover(member).hetzner
    assert moves is not None
    return moves.endpoint


def hetzner_moves_point_at(gateway: MachineRecord) -> bool:
    """The Floating IP is assigned to ``gateway``'s server and every network route goes through its private address."""
    moves = member_failover(gateway).hetzner
    assert moves is not None
    fip = api(f"/floating_ips/{moves.floating_ip_id}")["floating_ip"]
    routes = api(f"/networks/{moves.network_id}")["network"]["routes"]  # type: ignore[index]
    return fip["server"] == moves.server_id and all(r["gateway"] == gateway.private_ip for r in routes)  # type: ignore[index]


def test_each_pair_site_runs_two_gateways_one_active_both_scraped(lab: LabState) -> None:
    wait_for(lambda: all(redundant(s) for s in PAIR_SITES), TIMEOUT, "both pairs redundant", interval=0.5)
    wait_for(lambda: tunnels_up(state()) and not apart(state()), TIMEOUT, "every tunnel up, every pair of sites reachable", interval=0.5)
    now = state()
    for site in PAIR_SITES:
        members = [m for m in now.machines.values() if m.paired and m.site == site]
        assert len(members) == 2 and len({m.namespace for m in members}) == 2
        active = active_member(now, site)
        assert active is not None
        # Each gateway is scraped; its notify script's gauge says which one carries the tunnels.
        gauge = prometheus_query(now.ui["prometheus"], f'resinfra_gateway_active{{site="{site}"}}')
        assert {r["metric"]["node"]: r["value"][1] for r in gauge} == {m.name: "1" if m.name == active.name else "0" for m in members}, gauge
    hetzner = active_member(now, "hetzner")
    assert hetzner is not None and hetzner_moves_point_at(hetzner), "the first election moved the Floating IP and the routes"
    code = run("ip", "netns", "exec", f"{NAME}-hetzner", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", api_endpoint_of(now) + "/networks/1")
    assert code.stdout == "401", "the emulated API refuses a request without the token"


@pytest.mark.parametrize("site", PAIR_SITES)
def test_killing_the_active_gateway_fails_over_and_the_healer_restores_the_pair(lab: LabState, site: str) -> None:
    killed = []
    for _ in range(2):
        wait_for(lambda: redundant(site), HEAL_TIMEOUT, f"{site}'s pair redundant", interval=0.5)
        began = time.time()
        failover = outages.fail_over(NAME, site)
        victim, seen = failover.victim, failover.outages
        other = active_member(state(), site)
        assert other is not None and other.name != victim.name
        assert {(o.source, o.target) for o in seen} == {(a.name, b.name) for a, b in outages.directions(state(), site)}
        assert len(seen) == 2 * (len(first_workers(state())) - 1), "a worker of every other site, both ways"
        worst = max(o.restored_after for o in seen)
        print(f"\n{site}: {victim.name} killed; every direction answers again after {worst:.2f} s, through {other.name}")
        assert worst <= RESTORED_SECONDS, seen
        if site == "hetzner":
            assert hetzner_moves_point_at(other), "the API names the other gateway"
        # No human: the healer replaces the dead gateway, which boots as the standby (nopreempt).
        wait_for_event(
            state(), lambda e, v=victim.name: e["event"] == "repair-finished" and e["machine"] == v and e["outcome"] == "succeeded", began, HEAL_TIMEOUT
        )
        wait_for(lambda: redundant(site), HEAL_TIMEOUT, f"{site}'s pair redundant again", interval=0.5)
        now = state()
        assert now.machines[victim.name].created > began, "a new machine"
        assert active_member(now, site) == other, "the replacement is the standby; the other keeps the tunnels"
        killed.append(victim.name)
    assert len(set(killed)) == 2, f"the second kill hit the other gateway: {killed}"


@pytest.mark.parametrize("site", PAIR_SITES)
def test_a_partitioned_pair_site_is_not_repaired(lab: LabState, site: str) -> None:
    wait_for(lambda: all(redundant(s) for s in PAIR_SITES) and not apart(state()), HEAL_TIMEOUT, "both pairs redundant, every site reachable")
    cut = time.time()
    assert running.lab_command(NAME, "partition", site).returncode == 0
    try:
        wait_for_event(state(), lambda e: e["event"] == "decision" and e["reason"] == "site-partitioned", cut, TIMEOUT)
        now = state()
        cut_off = apart(now)
        assert cut_off and all(site in (now.machines[a].site, now.machines[b].site) for a, b in cut_off), f"only {site} is cut off: {cut_off}"
        time.sleep(10)  # past NodeDown, the settle window and a healer tick
    finally:
        assert running.lab_command(NAME, "heal", site).returncode == 0
    wait_for(lambda: tunnels_up(state()) and not apart(state()), HEAL_TIMEOUT, "every site reachable after heal", interval=0.5)
    started = [e["machine"] for e in audit_events(state()) if e["event"] == "repair-started" and e["ts"] >= cut]
    assert started == [], f"a partition of {site} replaced {started}"


def test_both_gateways_of_a_pair_dead_is_a_partition(lab: LabState) -> None:
    """Both of Proxmox's gateways die: the site is dark, as a partition, and the healer replaces neither (as with one
    gateway); a human replaces them (``lab replace``), and the pair and every path are back."""
    wait_for(lambda: all(redundant(s) for s in PAIR_SITES) and not apart(state()), HEAL_TIMEOUT, "both pairs redundant, every site reachable")
    members = sorted(m.name for m in state().machines.values() if m.paired and m.site == "proxmox")
    hetzner_active = active_member(state(), "hetzner")
    active = active_member(state(), "proxmox")
    assert active is not None
    # The standby first, then the active one: killing the active one first made the first `lab kill` wait for the
    # standby to take over (VRRP, seconds), and on a loaded machine the healer could decide on one dead gateway with a
    # live partner (an ordinary repair, rightly) before the second died: a race of the test, not of the healer.
    order = [next(m for m in members if m != active.name), active.name]
    cut = time.time()
    killed = [running.lab_command(NAME, "kill", order[0])]
    second = time.time()
    killed.append(running.lab_command(NAME, "kill", order[1]))
    assert [k.returncode for k in killed] == [0, 0]
    assert f"proxmox: {active.name} is the active gateway now" in killed[0].stdout, killed[0].stdout
    assert "proxmox: both gateways are dead" in killed[1].stdout, killed[1].stdout
    try:
        wait_for_event(state(), lambda e: e["event"] == "decision" and e.get("site") == "proxmox" and e["reason"] == "site-partitioned", cut, TIMEOUT)
        time.sleep(10)  # past the settle window and a healer tick
        started = [e["machine"] for e in audit_events(state()) if e["event"] == "repair-started" and e["ts"] >= cut]
        assert started == [], f"both gateways dead is a partition, yet {started} were replaced (the second kill began {second - cut:.1f} s after the first)"
        assert active_member(state(), "hetzner") == hetzner_active, "the other pair is untouched"
    finally:
        for member in members:
            assert running.lab_command(NAME, "replace", member).returncode == 0
    wait_for(lambda: redundant("proxmox") and tunnels_up(state()) and not apart(state()), HEAL_TIMEOUT, "the Proxmox pair and every path back")
