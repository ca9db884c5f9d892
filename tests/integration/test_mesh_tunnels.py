"""Real tunnels: the dev stack's rendered swanctl.conf files and emulated Azure and GCP ends,
one charon per gateway in network namespaces, userspace ESP (root)."""

from __future__ import annotations

import base64
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra import cli
from resinfra.mesh.emulate import MeshGateway, emulate, mesh_gateways, read_descriptions, start_mesh
from resinfra.netlab import CHARON, Lab, wait_for
from resinfra.offline import run_offline
from tests.conftest import dev_config, require_root, require_tool

UP_TIMEOUT = 30.0
# Overridable so that two checkouts on one machine can run the mesh tests at once.
LAB_NAME = os.environ.get("RESINFRA_TEST_MESH_LAB_NAME", "rmt")


@pytest.fixture(scope="module")
def rendered() -> Iterator[Path]:
    """``resinfra render`` of the dev stack: every swanctl.conf and managed-end description."""
    with tempfile.TemporaryDirectory(prefix="rm-render-") as out:
        assert cli.main(["render", "--out", out]) == 0
        yield Path(out)


@pytest.fixture(scope="module")
def gateways(rendered: Path) -> list[MeshGateway]:
    run = run_offline(dev_config())
    plan = run.result.plan
    strongswan = {}
    for name, addresses in plan.items():
        if addresses.gateway_vm is not None:
            text = (rendered / addresses.gateway_vm.name / "swanctl.conf").read_text()
            strongswan[name] = (run.outputs["sites"][name]["gateway"]["publicIps"][0], text)
    emulated = emulate(read_descriptions(rendered.glob("*-vpn-gw/*.json")))
    assert set(emulated) == {"gcp", "azure"}
    return mesh_gateways(plan, strongswan, emulated)


@pytest.fixture(scope="module")
def lab(gateways: list[MeshGateway]) -> Iterator[Lab]:
    require_root()
    for tool in ("ip", "swanctl", "bird", "birdc", "ping"):
        require_tool(tool)
    if not Path(CHARON).exists():
        pytest.skip(f"{CHARON} is not installed (strongswan-charon, see .ci/run)")
    with tempfile.TemporaryDirectory(prefix="rm-lab-") as workdir, Lab(LAB_NAME, Path(workdir)) as running:
        start_mesh(running, gateways)
        yield running


def expected(lab: Lab) -> dict[str, set[str]]:
    return {site: set(lab.loaded(site)) for site in lab.sites}


def all_up(lab: Lab, skip: frozenset[tuple[str, str]] = frozenset()) -> bool:
    return all({c for c in conns if (site, c) not in skip} <= lab.all_children_up(site) for site, conns in expected(lab).items())


def reachable(lab: Lab, source: str, target: str) -> bool:
    return lab.ping(source, 1, str(lab.sites[target].nodes[0].ip), timeout=0.5)


def test_every_tunnel_establishes_and_every_node_reaches_every_site(lab: Lab) -> None:
    conns = expected(lab)
    assert sum(len(c) for c in conns.values()) == 12, "6 tunnels, two ends each"
    assert all(len(c) == 3 for c in conns.values()), "each gateway has one connection per other site"
    wait_for(lambda: all_up(lab), UP_TIMEOUT, "every tunnel up")
    for source in lab.sites:
        for target in lab.sites:
            if source != target:
                assert wait_for(lambda s=source, t=target: reachable(lab, s, t), 5, f"{source} node -> {target} node") >= 0


def test_bgp_between_emulated_azure_and_gcp_learns_the_remote_subnet(lab: Lab) -> None:
    wait_for(lambda: all_up(lab), UP_TIMEOUT, "every tunnel up")
    wait_for(lambda: "10.10.16.0/24" in lab.learned("azure") and "10.10.32.0/20" in lab.learned("gcp"), UP_TIMEOUT, "BGP routes learned")
    assert lab.learned("azure") == {"10.10.16.0/24"}, "Azure learns the GCP subnet from the Cloud Router"
    assert lab.learned("gcp") == {"10.10.32.0/20"}, "the Cloud Router learns Azure's VNet"
    sessions = lab.birdc("azure", "show", "protocols")
    assert re.search(r"gcp_azure_0\s+BGP\s+---\s+up\s+.*Established", sessions), sessions


def test_a_gateway_whose_charon_is_killed_recovers(lab: Lab, gateways: list[MeshGateway]) -> None:
    wait_for(lambda: all_up(lab), UP_TIMEOUT, "every tunnel up")
    hetzner = next(g for g in gateways if g.site == "hetzner")
    lab.kill_charon("hetzner")
    assert not reachable(lab, "hetzner", "proxmox"), "no tunnel without charon"
    lab.start_charon("hetzner", hetzner.swanctl)
    wait_for(lambda: all(reachable(lab, "hetzner", t) for t in ("gcp", "azure", "proxmox")), UP_TIMEOUT, "pings from hetzner again")
    wait_for(lambda: all_up(lab), UP_TIMEOUT, "every tunnel up again")


def wrong_psk(swanctl: str, connection: str) -> str:
    """The same file with one connection's secret replaced."""
    pattern = re.compile(rf"(ike-{re.escape(connection)} \{{[^}}]*secret = )0s\S+")
    assert pattern.search(swanctl), connection
    return pattern.sub(lambda m: m[1] + "0s" + base64.b64encode(b"not-the-psk-of-this-tunnel-0123456789").decode(), swanctl)


def test_a_wrong_psk_fails_only_that_tunnel(lab: Lab, gateways: list[MeshGateway]) -> None:
    wait_for(lambda: all_up(lab), UP_TIMEOUT, "every tunnel up")
    hetzner = next(g for g in gateways if g.site == "hetzner")
    broken = "hetzner-proxmox-0"
    lab.kill_charon("hetzner")
    lab.start_charon("hetzner", wrong_psk(hetzner.swanctl, broken))
    try:
        # Proxmox may keep its stale SA until DPD; the tunnel carries nothing either way.
        skip = frozenset({("hetzner", broken), ("proxmox", broken)})
        wait_for(lambda: all_up(lab, skip), UP_TIMEOUT, "every other tunnel up")
        assert broken not in lab.all_children_up("hetzner")
        assert reachable(lab, "hetzner", "gcp") and reachable(lab, "hetzner", "azure")
        assert reachable(lab, "proxmox", "gcp") and reachable(lab, "proxmox", "azure")
        assert not reachable(lab, "hetzner", "proxmox") and not reachable(lab, "proxmox", "hetzner")
        # And it failed for the reason given: proxmox refused hetzner's authentication.
        wait_for(lambda: "N(AUTH_FAILED)" in lab.charons["hetzner"].log.read_text(), UP_TIMEOUT, "AUTH_FAILED from proxmox")
    finally:
        lab.kill_charon("hetzner")
        lab.start_charon("hetzner", hetzner.swanctl)
    wait_for(lambda: all_up(lab) and reachable(lab, "hetzner", "proxmox"), UP_TIMEOUT, "the repaired tunnel up")
