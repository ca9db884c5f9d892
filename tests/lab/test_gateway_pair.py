"""Gateway pairs in the lab (root): a Hetzner and a Proxmox site with ``gateways: 2``, keepalived, the notify script
and charon running as rendered, the Hetzner API emulated (resinfra/lab/pair.py, resinfra/lab/hcloud_api.py).

One bring-up for the module. For each site: the active gateway dies while the workers ping each other both ways ->
every pair reachable again through the other gateway, within the issue's 10 s; the dead one comes back (as the
healer's replacement would boot) as the standby, so the pair is redundant again; the other dies next -> fails over
back. Both of a site's gateways dead is a partition: nothing answers, and no address moves to a dead VM.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from resinfra.lab import pair
from resinfra.lab.changes import STATE_ROOT
from resinfra.netlab import wait_for
from tests.conftest import dev_config, require_root, require_tool

NAME = os.environ.get("RESINFRA_TEST_LAB_NAME", "rlt")[:5]
TARGET_SECONDS = 10.0
"""The issue's bound on a failover (every cross-site path restored)."""


@pytest.fixture(scope="module")
def lab() -> Iterator[pair.PairLab]:
    require_root()
    for tool in ("keepalived", "swanctl", "curl", "jq"):
        require_tool(tool)
    running = pair.build(NAME, STATE_ROOT / f"{NAME}-pair", dev_config())
    try:
        wait_for(lambda: all(running.active(s) is not None for s in running.workers), 30, "an active gateway per site", interval=0.2)
        wait_for(running.tunnels_up, 60, "the tunnels between the active gateways", interval=0.5)
        wait_for(running.all_pairs_reach, 30, "every pair of workers reachable", interval=0.5)
        yield running
    finally:
        running.destroy()


def api(lab: pair.PairLab, path: str) -> dict[str, object]:
    """A GET on the emulated Hetzner API, from inside its namespace's network (as a gateway calls it)."""
    hetzner = next(g for g in lab.gateways if g.provider == "hetzner")
    assert hetzner.failover.hetzner is not None
    out = lab.ns(lab.api_namespace, "curl", "-sf", "-H", f"Authorization: Bearer {pair.TOKEN}", hetzner.failover.hetzner.endpoint + path)
    return json.loads(out.stdout)


def hetzner_moves_point_at(lab: pair.PairLab, gateway: pair.Gateway) -> bool:
    moves = gateway.failover.hetzner
    assert moves is not None
    fip = api(lab, f"/floating_ips/{moves.floating_ip_id}")["floating_ip"]
    routes = api(lab, f"/networks/{moves.network_id}")["network"]["routes"]  # type: ignore[index]
    return fip["server"] == moves.server_id and all(r["gateway"] == gateway.failover.private_ip for r in routes)  # type: ignore[index]


@pytest.mark.parametrize("site", ["hetzner", "proxmox"])
def test_either_gateway_of_a_pair_can_die(lab: pair.PairLab, site: str) -> None:
    first = lab.active(site)
    assert first is not None
    if site == "hetzner":
        assert hetzner_moves_point_at(lab, first), "the first election moved the Floating IP and the routes to it"
    victim, outages = pair.fail_over(lab, site)
    second = lab.active(site)
    assert victim is first and second is not None and second is not victim
    assert all(o.restored_after <= TARGET_SECONDS for o in outages), outages
    if site == "hetzner":
        assert hetzner_moves_point_at(lab, second), "the API now names the other gateway"
    # The dead one comes back (the healer's replacement boots): the standby, not the carrier (nopreempt).
    lab.revive_gateway(victim)
    wait_for(lambda: lab.state(victim) == "BACKUP", 30, f"{victim.namespace} back as the standby", interval=0.2)
    assert lab.active(site) is second
    # ... so the pair is redundant again: the other one dies next, and the first carries the links again.
    again, outages = pair.fail_over(lab, site)
    assert again is second and lab.active(site) is victim
    assert all(o.restored_after <= TARGET_SECONDS for o in outages), outages
    lab.revive_gateway(second)
    wait_for(lambda: lab.state(second) == "BACKUP", 30, f"{second.namespace} back as the standby", interval=0.2)


def test_a_site_with_both_gateways_dead_is_apart_and_nothing_moves_to_them(lab: pair.PairLab) -> None:
    """Both of Proxmox's gateways dead: a partition (no path, as with one gateway); the Hetzner pair keeps its state."""
    hetzner_active = lab.active("hetzner")
    for gateway in lab.pair("proxmox"):
        lab.kill_gateway(gateway)
    try:
        assert not lab.ping("hetzner", "proxmox", timeout=2)
        assert lab.active("hetzner") is hetzner_active and hetzner_active is not None and hetzner_moves_point_at(lab, hetzner_active)
    finally:
        for gateway in lab.pair("proxmox"):
            lab.revive_gateway(gateway)
        wait_for(lambda: lab.active("proxmox") is not None, 30, "proxmox's pair back", interval=0.2)
        wait_for(lab.all_pairs_reach, 60, "every pair reachable again", interval=0.5)


def test_the_api_refuses_a_request_without_the_token(lab: pair.PairLab) -> None:
    hetzner = next(g for g in lab.gateways if g.provider == "hetzner")
    assert hetzner.failover.hetzner is not None
    result = lab.ns(lab.api_namespace, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", hetzner.failover.hetzner.endpoint + "/networks/1", check=False)
    assert result.stdout == "401"
