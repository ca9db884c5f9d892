"""Real tunnels: the dev stack's rendered swanctl.conf files and Azure and GCP played from what the program hands them
(:mod:`resinfra.lab.clouds`), a charon per gateway and per cloud tunnel in network namespaces, userspace ESP (root)."""

from __future__ import annotations

import base64
import itertools
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra import cli
from resinfra.lab import changes
from resinfra.lab.clouds import emulate
from resinfra.lab.gateways import MeshGateway, mesh_gateways, read_descriptions, start_mesh
from resinfra.lab.paths import BURST_BYTES, pair_path
from resinfra.netlab import Lab, wait_for
from resinfra.netlab.charon import CHARON
from resinfra.offline import run_offline
from tests.conftest import dev_config, lab_name_for_tests, require_root, require_tool

UP_TIMEOUT = 30.0
BGP_TIMEOUT = 60.0
# Overridable so that two checkouts on one machine can run the mesh tests at once.
LAB_NAME = lab_name_for_tests("RESINFRA_TEST_MESH_LAB_NAME", "rmt")


def dev_values() -> dict[str, object]:
    values, _ = changes.with_lab_addresses(dev_config())
    return values


@pytest.fixture(scope="module")
def rendered() -> Iterator[Path]:
    """``resinfra render`` of the dev stack (its placeholder Proxmox range replaced, as the lab does): every swanctl.conf
    and every managed end's description."""
    with tempfile.TemporaryDirectory(prefix="rm-render-") as out:
        config = Path(out) / "Pulumi.lab.yaml"
        import yaml

        config.write_text(yaml.safe_dump({"config": dev_values()}))
        assert cli.main(["render", "--config-file", str(config), "--out", str(Path(out) / "files")]) == 0
        yield Path(out) / "files"


@pytest.fixture(scope="module")
def gateways(rendered: Path) -> list[MeshGateway]:
    run = run_offline(dev_values())
    plan = run.result.plan
    strongswan = {}
    for name, addresses in plan.items():
        if addresses.gateway_vm is not None:
            text = (rendered / addresses.gateway_vm.name / "swanctl.conf").read_text()
            strongswan[name] = (run.outputs["sites"][name]["gateway"]["publicIps"][0], text)
    clouds = emulate(read_descriptions(rendered.glob("*-vpn-gw/*.json")), plan)
    assert set(clouds) == {"gcp", "azure"}
    return mesh_gateways(plan, strongswan, clouds)


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


def all_up(lab: Lab, skip: frozenset[tuple[str, str]] = frozenset()) -> bool:
    return all({c for c in lab.loaded(key) if (key, c) not in skip} <= lab.all_children_up(key) for key in lab.charon_keys(expected_only=True))


def reachable(lab: Lab, source: str, target: str) -> bool:
    return lab.ping(source, 1, str(lab.sites[target].nodes[0].ip), timeout=0.5)


def every_pair_reachable(lab: Lab) -> bool:
    return all(reachable(lab, a, b) for a, b in itertools.permutations(lab.sites, 2))


def test_every_tunnel_establishes_and_every_node_reaches_every_site(lab: Lab) -> None:
    strongswan = {key: lab.loaded(key) for key in ("hetzner", "proxmox")}
    assert all(len(conns) == 3 for conns in strongswan.values()), "a strongSwan gateway has one connection per other site"
    clouds = [key for key in lab.charon_keys() if key not in strongswan]
    assert sorted(clouds) == [
        "azure-vpn-gw0-gcp-0",
        "azure-vpn-gw0-hetzner-0",
        "azure-vpn-gw0-proxmox-0",
        "gcp-vpn-azure-0",
        "gcp-vpn-hetzner-0",
        "gcp-vpn-proxmox-0",
    ], "a charon per cloud tunnel"
    wait_for(lambda: all_up(lab), UP_TIMEOUT, "every tunnel up")
    wait_for(lambda: every_pair_reachable(lab), BGP_TIMEOUT, "every node reaching every other site")


def test_azure_advertises_its_local_network_gateways_and_gcp_routes_by_prefix_then_priority(lab: Lab) -> None:
    wait_for(lambda: "10.10.16.0/24" in lab.learned("azure-vpn-gw0") and "10.10.32.0/20" in lab.learned("gcp"), BGP_TIMEOUT, "BGP routes learned")
    # Azure announces its VNet and the prefixes of every local network gateway, the static strongSwan ones included.
    assert lab.learned("gcp") == {"10.10.32.0/20", "10.10.48.0/20", "10.10.64.0/20"}
    assert lab.learned("azure-vpn-gw0") == {"10.10.16.0/24"}, "the Cloud Router announces the VPC's subnets"
    table = lab.ns(lab.gw_ns("gcp"), "ip", "route", "show").stdout
    # Learned without MED: priority 0, metric 1; the static halves (priority 1000) win by prefix length.
    assert re.search(r"^10\.10\.48\.0/20 via \S+ dev t0 proto bird metric 1 onlink", table, re.MULTILINE), table
    assert re.search(r"^10\.10\.48\.0/21 via \S+ dev t1 .*metric 2000", table, re.MULTILINE), table
    chosen = lab.ns(lab.gw_ns("gcp"), "ip", "route", "get", "10.10.48.10").stdout
    assert " dev t1 " in chosen, f"GCP sends Hetzner's traffic into its Classic VPN tunnel to Hetzner: {chosen}"
    sessions = lab.birdc("azure-vpn-gw0", "show", "protocols")
    assert re.search(r"vpn_gw0_gcp_0\s+BGP\s+---\s+up\s+.*Established", sessions), sessions


def test_the_path_between_two_sites_is_their_own_tunnel(lab: Lab) -> None:
    wait_for(lambda: every_pair_reachable(lab), BGP_TIMEOUT, "every pair reachable")
    for a, b in itertools.combinations(lab.sites, 2):
        evidence = pair_path(lab, a, b, lab.node_ns(a, 1), str(lab.sites[b].nodes[0].ip), BURST_BYTES)
        assert not evidence.problems, f"{a} -> {b}: {evidence}"


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
        wait_for(lambda: reachable(lab, "hetzner", "gcp") and reachable(lab, "hetzner", "azure"), UP_TIMEOUT, "hetzner's other tunnels")
        assert reachable(lab, "proxmox", "gcp") and reachable(lab, "proxmox", "azure")
        assert not reachable(lab, "hetzner", "proxmox") and not reachable(lab, "proxmox", "hetzner")
        # And it failed for the reason given: proxmox refused hetzner's authentication.
        wait_for(lambda: "N(AUTH_FAILED)" in lab.charons["hetzner"].log.read_text(), UP_TIMEOUT, "AUTH_FAILED from proxmox")
    finally:
        lab.kill_charon("hetzner")
        lab.start_charon("hetzner", hetzner.swanctl)
    wait_for(lambda: all_up(lab) and reachable(lab, "hetzner", "proxmox"), UP_TIMEOUT, "the repaired tunnel up")
