"""The lab end to end (root): the dev stack with one worker per site, through the ``resinfra lab`` commands.

Up: every tunnel established, every worker reaches a worker of every other site, every
scrape target up. A killed worker is replaced by the healer and scraped again; a
partitioned site fires SiteUnreachable and nothing is replaced, and it recovers when
healed; a healer killed during a repair does not repair twice; a killed gateway VM darkens
its site (nothing replaced) until it is replaced; down leaves nothing.
The tests run in this order and share one lab.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra.addressing import Role
from resinfra.healer.observe import audit_alert
from resinfra.lab.actions import HOLD_REPLACE_FILE
from resinfra.lab.observe import audit_events, ping, prometheus_query, scrape_targets, targets_healthy, tunnel_report, tunnels_up, wait_for_event
from resinfra.lab.preconditions import root_of
from resinfra.lab.state import LabState, alive, existing_namespaces, load
from resinfra.netlab import wait_for
from tests.conftest import lab_name_for_tests
from tests.lab import running

# Overridable so that two checkouts on one machine can run the lab tests at once.
NAME = lab_name_for_tests("RESINFRA_TEST_LAB_NAME", "rlt")
MARK = "192.0.2.1/32"
TIMEOUT = 60.0
"""Seconds for anything the lab's timings do in under 10."""


def lab_command(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return running.lab_command(NAME, *args, timeout=timeout)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    for state_, _ in running.lab_up(NAME, "--workers", "1"):
        yield state_


def state() -> LabState:
    return load(root_of(NAME))


def workers(lab: LabState) -> list[str]:
    return [m.name for m in lab.machines.values() if m.role is Role.WORKER]


def victim(lab: LabState, tooling_site: bool) -> str:
    """A worker whose site keeps another machine up (its death is a NodeDown, not a dark site)."""
    tooling = next(m.site for m in lab.machines.values() if m.role is Role.TOOLING)
    for m in lab.machines.values():
        others = [o for o in lab.machines.values() if o.site == m.site and o.name != m.name]
        if m.role is Role.WORKER and others and (m.site == tooling) is tooling_site:
            return m.name
    raise AssertionError("no such worker")


def repairs_started(lab: LabState, since: float) -> list[str]:
    return [e["machine"] for e in audit_events(lab) if e["event"] == "repair-started" and e["ts"] >= since]


def test_up_establishes_every_tunnel_and_scrapes_every_target(lab: LabState) -> None:
    netlab = lab.netlab()
    assert sum(len(netlab.loaded(key)) for key in netlab.charon_keys(expected_only=True)) == 2 * lab.tunnels == 12
    wait_for(lambda: tunnels_up(netlab), TIMEOUT, "every tunnel established")
    for source in workers(lab):
        for target in workers(lab):
            if lab.machines[source].site != lab.machines[target].site:
                assert ping(lab, source, target), f"{source} -> {target} across the tunnel"
    assert targets_healthy(lab)
    targets = scrape_targets(lab.ui["prometheus"])
    assert {t["labels"]["job"] for t in targets} == {"node", "mesh", "prometheus", "alertmanager", "healer"}
    assert {t["labels"]["node"] for t in targets if t["labels"]["job"] == "node"} == set(lab.machines)
    assert all(t["health"] == "up" for t in targets)
    # The UIs answer on the host's loopback.
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.ui['healer']}/metrics", timeout=5) as response:
        assert b"resinfra_healer_repairs_started_total" in response.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{lab.ui['alertmanager']}/-/ready", timeout=5) as response:
        assert response.status == 200
    status = lab_command("status")
    assert status.returncode == 0 and "12/12 ends established" in status.stdout, status.stdout + status.stderr


def test_the_path_between_two_sites_is_their_own_tunnel(lab: LabState) -> None:
    """A trace between two sites' workers crosses only their own namespaces; a burst shows on their tunnel's SAs."""
    running.assert_own_tunnels(lab, TIMEOUT)


def test_a_killed_worker_is_replaced_and_scraped_again(lab: LabState) -> None:
    machine = victim(lab, tooling_site=False)
    namespace = lab.machines[machine].namespace
    # A mark in the machine's namespace (namespace inode numbers are reused): a new namespace does not have it.
    subprocess.run(["ip", "-n", namespace, "addr", "add", MARK, "dev", "lo"], check=True)
    exporter = lab.processes[f"{machine}/prometheus-node-exporter"]
    killed = time.time()
    result = lab_command("kill", machine)
    assert result.returncode == 0, result.stderr
    started = wait_for_event(lab, lambda e: e["event"] == "repair-started" and e["machine"] == machine, killed, TIMEOUT)
    assert started["reason"] == "node-down" and started["urn"].endswith(f"::{machine}")
    finished = wait_for_event(lab, lambda e: e["event"] == "repair-finished" and e["machine"] == machine, killed, TIMEOUT)
    assert finished["outcome"] == "succeeded", finished
    resolved = wait_for_event(lab, audit_alert("NodeDown", "resolved", node=machine), killed, TIMEOUT)
    assert prometheus_query(lab.ui["prometheus"], f'up{{job="node", node="{machine}"}} == 1'), "scraped again"
    # Replaced as pulumi up --replace would: a new machine (namespace, exporter) with the same inventory entry.
    after = state()
    # Resolved by the new machine: after it was created (the action's own exit may be recorded a moment later).
    assert started["ts"] <= finished["ts"] and started["ts"] <= after.machines[machine].created <= resolved["ts"]
    assert MARK not in subprocess.run(["ip", "-n", namespace, "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True).stdout
    assert not alive(exporter) and alive(after.processes[f"{machine}/prometheus-node-exporter"])
    assert after.machines[machine].created > killed
    assert repairs_started(after, killed) == [machine], "replaced once"
    # The replacement is a namespace like any other (created in this machine's mount namespace, not only the healer's).
    other = next(w for w in workers(after) if after.machines[w].site != after.machines[machine].site)
    assert ping(after, machine, other) and ping(after, other, machine)


def test_a_partitioned_site_fires_site_unreachable_and_nothing_is_replaced(lab: LabState) -> None:
    site = next(s.key for s in lab.sites if s.swanctl_emulated)
    wait_for(lambda: targets_healthy(state()), TIMEOUT, "every target up")
    cut = time.time()
    assert lab_command("partition", site).returncode == 0
    status = lab_command("status")
    assert f"{site} was cut off" in status.stdout and "until dead-peer detection notices" in status.stdout, status.stdout + status.stderr
    wait_for_event(lab, audit_alert("SiteUnreachable", "firing", site=site), cut, TIMEOUT)
    refused = wait_for_event(lab, lambda e: e["event"] == "decision" and e["site"] == site and e["reason"] == "site-partitioned", cut, TIMEOUT)
    assert refused["kind"] == "refuse"
    # Long enough for dead-peer detection on the other gateways to tear the site's tunnels down: heal must re-establish them.
    netlab = state().netlab()
    wait_for(
        lambda: not any(conns.get(c) for k, conns in tunnel_report(netlab).items() if netlab.site_of(k) != site for c in conns if site in c),
        TIMEOUT,
        "the site's tunnels torn down",
    )
    assert repairs_started(lab, cut) == []
    assert not [e for e in audit_events(lab) if e["ts"] >= cut and e["event"] == "alert" and e["alertname"] == "NodeDown"]
    healed = time.time()
    assert lab_command("heal", site).returncode == 0
    wait_for(lambda: tunnels_up(state().netlab()) and targets_healthy(state()), TIMEOUT, "tunnels and targets back", interval=0.5)
    wait_for_event(lab, audit_alert("SiteUnreachable", "resolved", site=site), healed, TIMEOUT)
    assert repairs_started(lab, cut) == [], "a partition replaces nothing, during or after"
    assert state().partitioned == []


def test_a_healer_killed_during_a_repair_does_not_replace_twice(lab: LabState) -> None:
    machine = victim(lab, tooling_site=True)
    wait_for(lambda: targets_healthy(state()), TIMEOUT, "every target up")
    hold = root_of(NAME) / HOLD_REPLACE_FILE
    hold.touch()  # the repair stays in flight until the crash, however slowly the crash command starts
    try:
        killed = time.time()
        assert lab_command("kill", machine).returncode == 0
        wait_for_event(lab, lambda e: e["event"] == "repair-started" and e["machine"] == machine, killed, TIMEOUT)
        crash = lab_command("restart-healer", "--crash")  # the healer and the repair it runs die together
        assert crash.returncode == 0, crash.stderr
    finally:
        hold.unlink()
    restarted = wait_for_event(lab, lambda e: e["event"] == "repair-interrupted" and e["machine"] == machine, killed, TIMEOUT)
    # Alertmanager repeats the still-firing NodeDown to the restarted healer, which refuses: the outcome is unknown.
    verdict = wait_for_event(
        lab, lambda e: e.get("machine") == machine and (e["event"] == "repair-started" or e.get("kind") == "refuse"), restarted["ts"], TIMEOUT
    )
    assert (verdict["event"], verdict.get("reason")) == ("decision", "repair-interrupted"), f"replaced a second time: {verdict}"
    time.sleep(3)
    assert repairs_started(lab, killed) == [machine], "no second replacement"
    # The operator replaces it by hand, as the refusal says; the alert resolves.
    replaced = time.time()
    assert lab_command("replace", machine).returncode == 0
    wait_for_event(lab, audit_alert("NodeDown", "resolved", node=machine), replaced, TIMEOUT)
    assert repairs_started(lab, killed) == [machine]


def test_a_killed_gateway_vm_takes_its_site_dark_and_its_replacement_brings_it_back(lab: LabState) -> None:
    machine = next(
        m for m in lab.machines.values() if m.role is Role.GATEWAY and m.site != next(t.site for t in lab.machines.values() if t.role is Role.TOOLING)
    )
    wait_for(lambda: targets_healthy(state()), TIMEOUT, "every target up")
    killed = time.time()
    assert lab_command("kill", machine.name).returncode == 0
    # With repairGateways off (the dev stack), the healer sees a partition and replaces nothing.
    wait_for_event(lab, audit_alert("SiteUnreachable", "firing", site=machine.site), killed, TIMEOUT)
    wait_for_event(lab, lambda e: e["event"] == "decision" and e["site"] == machine.site and e["reason"] == "site-partitioned", killed, TIMEOUT)
    replaced = time.time()
    result = lab_command("replace", machine.name)
    assert result.returncode == 0 and "restarted in place" in result.stdout, result.stdout + result.stderr
    wait_for(lambda: tunnels_up(state().netlab()) and targets_healthy(state()), TIMEOUT, "the site back", interval=0.5)
    wait_for_event(lab, audit_alert("SiteUnreachable", "resolved", site=machine.site), replaced, TIMEOUT)
    assert repairs_started(lab, killed) == []


def test_down_stops_every_process_and_removes_every_namespace(lab: LabState) -> None:
    current = state()
    processes = list(current.processes.values())
    assert processes and all(alive(p) for p in processes)
    result = lab_command("down")
    assert result.returncode == 0, result.stderr
    assert not [p for p in processes if alive(p)]
    assert not [ns for ns in existing_namespaces() if ns.startswith(f"{NAME}-")]
    assert not Path(current.root).exists()
    again = lab_command("down")
    assert again.returncode == 0 and "nothing to do" in again.stdout
