"""Regression (root): the routing design before issue 12 (GCP's static route to a strongSwan site = its whole block at
priority 1000) fails against Azure and GCP played as they document themselves.

Azure advertises every local network gateway's prefixes over BGP, the strongSwan sites' blocks
included; GCP takes a learned route's priority from its MED (none: 0), lower than the static
route's 1000, so at equal length the learned route wins: GCP sends Hetzner's and Proxmox's
traffic to Azure, whose tunnels to them carry only Azure's block, and it is dropped there.
The fixed design (the halves of the block, longer than anything Azure advertises) passes
tests/integration/test_mesh_tunnels.py on the same emulation.
"""

from __future__ import annotations

import itertools
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra.lab import changes
from resinfra.lab.gateways import run_gateways, start_mesh
from resinfra.lab.paths import BURST_BYTES, burst, grew, sa_bytes
from resinfra.mesh import describe, gcp, plan
from resinfra.netlab import Lab, wait_for
from resinfra.netlab.charon import CHARON
from resinfra.offline import run_offline
from tests.conftest import dev_config, lab_name_for_tests, require_root, require_tool

NAME = lab_name_for_tests("RESINFRA_TEST_MESH_LAB_NAME", "rmt", "o")
TIMEOUT = 60.0
CUT_OFF = {("gcp", "hetzner"), ("gcp", "proxmox")}


def whole_block_routes(link: plan.LinkPlan, site: str) -> list[plan.StaticRoute]:
    """GCP's routes as main declared them before issue 12: the peer's whole block, priority 1000."""
    return [plan.StaticRoute(link.peer(site).block, tunnel.index, 1000) for tunnel in link.tunnels]


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    require_root()
    for tool in ("ip", "swanctl", "bird", "birdc", "ping"):
        require_tool(tool)
    if not Path(CHARON).exists():
        pytest.skip(f"{CHARON} is not installed (strongswan-charon, see .ci/run)")
    with pytest.MonkeyPatch.context() as patch:
        for module in (describe, gcp):
            patch.setattr(module, "gcp_static_routes", whole_block_routes)
        run = run_offline(changes.with_lab_addresses(dev_config())[0])
    routes = [r for f in run.files if f.purpose == "managed-ipsec" for r in json.loads(f.content).get("routes", [])]
    assert {(r["destRange"], r["priority"]) for r in routes} == {("10.10.48.0/20", 1000), ("10.10.64.0/20", 1000)}, "the old design"
    with tempfile.TemporaryDirectory(prefix="rm-old-") as workdir, Lab(NAME, Path(workdir)) as running:
        start_mesh(running, run_gateways(run))
        wait_for(running.tunnels_up, TIMEOUT, "every tunnel up")
        wait_for(lambda: {"10.10.48.0/20", "10.10.64.0/20"} <= running.learned("gcp"), TIMEOUT, "Azure's routes learned by the Cloud Router")
        yield running


def reachable(lab: Lab, a: str, b: str) -> bool:
    return lab.ping(a, 1, str(lab.sites[b].nodes[0].ip), timeout=0.5)


def test_gcp_sends_the_strongswan_sites_traffic_to_azure_and_loses_it(lab: Lab) -> None:
    # Every pair but GCP <-> Hetzner and GCP <-> Proxmox works, and those never do.
    cut = {frozenset(pair) for pair in CUT_OFF}
    wait_for(lambda: all(reachable(lab, a, b) for a, b in itertools.permutations(lab.sites, 2) if frozenset((a, b)) not in cut), TIMEOUT, "the rest")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for a, b in CUT_OFF:
            assert not reachable(lab, a, b) and not reachable(lab, b, a), f"{a} <-> {b} reachable with the old routes"
    # Why: the learned /20 (priority 0) beats the static /20 (priority 1000), so the route is Azure's HA VPN tunnel.
    chosen = lab.ns(lab.gw_ns("gcp"), "ip", "route", "get", "10.10.48.10").stdout
    assert " dev t0 " in chosen, chosen
    before = sa_bytes(lab)
    burst(lab, lab.node_ns("gcp", 1), str(lab.sites["hetzner"].nodes[0].ip))
    moved = grew(before, sa_bytes(lab), BURST_BYTES)
    # GCP -> Azure carried it; Azure did not pass it on to Hetzner (its tunnel's selectors are Azure's block), nor did
    # GCP's own tunnel to Hetzner see it.
    assert ("gcp-vpn-azure-0", "gcp-azure-0") in moved and ("azure-vpn-gw0-gcp-0", "gcp-azure-conn0-inst0") in moved, moved
    assert not {key for key, _ in moved} & {"hetzner", "azure-vpn-gw0-hetzner-0", "gcp-vpn-hetzner-0"}, moved
