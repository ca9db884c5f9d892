"""The lab on the prod stack's topology (root): active-active Azure, one worker per site, through ``resinfra lab``.

Both Azure instances bring up their tunnels (the strongSwan gateways accept both, GCP's HA VPN
takes one per interface); every machine reaches every other site's machines over the two
sites' own tunnel; and either Azure instance can die without a pair of sites losing each
other for longer than the peers take to notice (dead-peer detection, BGP hold time).
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator

import pytest

from resinfra.lab import failover
from resinfra.lab.observe import audit_events, tunnel_report
from resinfra.lab.preconditions import root_of
from resinfra.lab.state import LabState, load
from resinfra.netlab import wait_for
from resinfra.netlab.pair_members import pair_carrier
from tests.conftest import lab_name_for_tests
from tests.lab import running

# Derived from the end-to-end test's name, so two checkouts running both stay apart.
NAME = lab_name_for_tests("RESINFRA_TEST_LAB_NAME", "rlt", "p")
TIMEOUT = 60.0
FAILOVER_TIMEOUT = 240.0
"""Seconds a pair may stay apart after an instance dies: strongSwan's dead-peer detection (10 s idle, then the lab's
retransmits, about 11 s) and BGP's hold time (60 s with the Cloud Router's default keepalive), with room."""


def lab_command(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return running.lab_command(NAME, *args, timeout=timeout)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    for state_, output in running.lab_up(NAME, "--stack", "prod", "--workers", "1"):
        assert "proxmox: publicRange 203.0.113.64/28 is in 203.0.113.0/24" in output, "the placeholder range is replaced"
        yield state_


def state() -> LabState:
    return load(root_of(NAME))


def test_both_azure_instances_bring_up_their_tunnels(lab: LabState) -> None:
    assert lab.tunnels == 9, "two per link to Azure, one per other link"
    wait_for(lambda: all(all(c.values()) for c in tunnel_report(state().netlab()).values()), TIMEOUT, "every tunnel up")
    report = tunnel_report(lab.netlab())
    assert sum(len(c) for c in report.values()) == 2 * lab.tunnels
    for site in ("hetzner", "proxmox"):
        # prod runs a gateway pair on both: the active member carries the site's tunnels.
        carrier = pair_carrier(lab.netlab(), site)
        assert carrier is not None and set(report[carrier]) >= {f"azure-{site}-0", f"azure-{site}-1"}, "a connection to each Azure instance"
        for instance in (0, 1):
            assert report[f"azure-vpn-gw{instance}-{site}-0"] == {f"azure-{site}-conn0-inst{instance}": True}
    # GCP's HA VPN: interface i to instance i; the instances' other attempts are not answered.
    assert report["gcp-vpn-azure-0"] == {"gcp-azure-0": True} and report["gcp-vpn-azure-1"] == {"gcp-azure-1": True}
    assert "azure-vpn-gw0-gcp-1" not in report and "azure-vpn-gw1-gcp-0" not in report
    netlab = lab.netlab()
    assert not netlab.all_children_up("azure-vpn-gw1-gcp-0"), "GCP has no tunnel from instance 1 to interface 0"


def test_every_machine_reaches_every_other_sites_machines(lab: LabState) -> None:
    wait_for(lambda: not failover.apart(lab), TIMEOUT, "every pair of sites reachable")


def test_the_vnet_sends_through_both_instances(lab: LabState) -> None:
    """Azure routes the VNet's traffic to both instances (equal-cost): flows from many sources use both."""
    netlab = lab.netlab()
    table = netlab.ns(netlab.gw_ns("azure"), "ip", "route", "show", "default").stdout
    assert re.findall(r"nexthop via (\S+) dev (g\d)", table) == [("10.30.47.228", "g0"), ("10.30.47.229", "g1")], table
    chosen = set()
    for host in range(10, 40):
        out = netlab.ns(netlab.gw_ns("azure"), "ip", "route", "get", "10.30.48.10", "from", f"10.30.32.{host}", "iif", "lan").stdout
        chosen |= set(re.findall(r"dev (g\d)", out))
    assert chosen == {"g0", "g1"}


def test_the_path_between_two_sites_is_their_own_tunnel(lab: LabState) -> None:
    running.assert_own_tunnels(lab, TIMEOUT)


@pytest.mark.parametrize("instance", [0, 1])
def test_killing_an_azure_instance_that_carries_traffic_keeps_every_pair_reachable(lab: LabState, instance: int) -> None:
    """Each instance in turn dies while it carries the strongSwan sites' traffic to Azure; every pair of sites reaches
    each other again once the peers notice, through the other instance."""
    load_ = failover.make_carrier(NAME, "azure", instance, TIMEOUT, {"hetzner", "proxmox"})
    killed = time.time()
    try:
        took = failover.fail_instance(NAME, "azure", instance, FAILOVER_TIMEOUT)
        print(f"instance {instance} (carrying {sorted(load_[instance])}) killed: every pair reachable again {took:.1f} s later")
        after = failover.carrying(state(), "azure")
        assert after == {instance: set(), 1 - instance: {"gcp", "hetzner", "proxmox"}}, f"the other instance receives it all: {after}"
        assert [e for e in audit_events(state()) if e["event"] == "repair-started" and e["ts"] >= killed] == [], "no machine is replaced"
    finally:
        revived = lab_command("revive-instance", "azure", str(instance))
        assert revived.returncode == 0, revived.stdout + revived.stderr
    wait_for(lambda: failover.tunnels_up(state()), TIMEOUT, "every tunnel back")
