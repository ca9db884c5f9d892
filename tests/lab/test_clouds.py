"""Azure and GCP as the lab plays them, without root: what each builds from the program's descriptions."""

from __future__ import annotations

import copy
import ipaddress
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from resinfra.lab import changes
from resinfra.lab.clouds import CloudRefusal, EmulatedCloud, emulate
from resinfra.lab.clouds.gcp import RESERVED_PEER_RANGES, emulate_gcp
from resinfra.netlab.topology import SITE
from resinfra.offline import OfflineRun, run_offline
from tests.conftest import ROOT, dev_config


def descriptions(run: OfflineRun) -> list[dict[str, Any]]:
    return [json.loads(f.content) for f in run.files if f.purpose == "managed-ipsec"]


@pytest.fixture(scope="module")
def dev_run() -> OfflineRun:
    return run_offline(changes.with_lab_addresses(dev_config())[0])


@pytest.fixture(scope="module")
def prod_run() -> OfflineRun:
    import yaml

    values = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())["config"]
    values["resinfra:sshPrivateKey"] = dev_config()["resinfra:sshPrivateKey"]
    return run_offline(changes.with_lab_addresses(values)[0], stack_name="prod")


@pytest.fixture(scope="module")
def dev(dev_run: OfflineRun) -> dict[str, EmulatedCloud]:
    return emulate(descriptions(dev_run), dev_run.result.plan)


@pytest.fixture(scope="module")
def prod(prod_run: OfflineRun) -> dict[str, EmulatedCloud]:
    return emulate(descriptions(prod_run), prod_run.result.plan)


def selectors(swanctl: str) -> tuple[str, str]:
    local = re.search(r"local_ts = (\S+)", swanctl)
    remote = re.search(r"remote_ts = (\S+)", swanctl)
    assert local and remote, swanctl
    return local.group(1), remote.group(1)


def gcp_classic(run: OfflineRun, site: str = "gcp") -> list[dict[str, Any]]:
    return [d for d in descriptions(run) if d["site"] == site and d["gateway"]["type"] == "CLASSIC"]


@pytest.mark.parametrize("reserved", RESERVED_PEER_RANGES, ids=str)
def test_gcp_refuses_a_classic_vpn_peer_in_every_reserved_range(reserved: ipaddress.IPv4Network, dev_run: OfflineRun) -> None:
    for address in (reserved.network_address, reserved.broadcast_address):
        refused = copy.deepcopy(gcp_classic(dev_run))
        refused[0]["tunnels"][0]["peerAddress"] = str(address)
        with pytest.raises(CloudRefusal, match=rf"peer_ip {re.escape(str(address))} is in the reserved range {re.escape(str(reserved))}"):
            emulate_gcp("gcp", refused, dev_run.result.plan["gcp"])


def test_gcp_takes_a_routable_peer_and_the_first_address_after_a_reserved_range(dev_run: OfflineRun) -> None:
    for address in ("100.127.0.66", "203.0.114.0", "11.0.0.1"):
        taken = copy.deepcopy(gcp_classic(dev_run))
        taken[0]["tunnels"][0]["peerAddress"] = address
        emulate_gcp("gcp", taken, dev_run.result.plan["gcp"])


def test_gcp_ha_vpn_negotiates_any_to_any_and_classic_vpn_the_given_selectors(dev: dict[str, EmulatedCloud]) -> None:
    tunnels = {t.key: t for t in dev["gcp"].network.tunnels}
    assert selectors(tunnels["vpn-azure-0"].swanctl) == ("0.0.0.0/0", "0.0.0.0/0")
    assert selectors(tunnels["vpn-hetzner-0"].swanctl) == ("10.10.16.0/20", "10.10.48.0/20")
    assert selectors(tunnels["vpn-proxmox-0"].swanctl) == ("10.10.16.0/20", "10.10.64.0/20")


def test_gcp_routes_are_the_declared_ones_with_their_priority_and_learned_ones_lose_a_tie(dev: dict[str, EmulatedCloud]) -> None:
    network = dev["gcp"].network
    # The static routes as declared: the halves of each strongSwan block into its Classic VPN tunnel, priority 1000.
    assert {(r.prefix, r.via, r.metric) for r in network.routes} == {
        ("10.10.48.0/21", ("vpn-hetzner-0",), 2000),
        ("10.10.56.0/21", ("vpn-hetzner-0",), 2000),
        ("10.10.64.0/21", ("vpn-proxmox-0",), 2000),
        ("10.10.72.0/21", ("vpn-proxmox-0",), 2000),
    }
    (bird,) = network.birds
    # A learned route's metric: twice its MED plus one, so at equal priority the static route (twice, plus none) wins.
    assert "krt_metric = 1 + 2 * bgp_med;" in bird.conf and "else krt_metric = 1;" in bird.conf
    assert "merge paths yes;" in bird.conf, "equal learned routes share the traffic"


def test_gcp_cloud_router_announces_the_subnets_with_its_priority_and_keeps_its_timers(dev_run: OfflineRun, dev: dict[str, EmulatedCloud]) -> None:
    (bird,) = dev["gcp"].network.birds
    assert "route 10.10.16.0/24 blackhole;" in bird.conf and bird.conf.count("blackhole;") == 1, "DEFAULT mode: the VPC's subnets"
    assert "bgp_med = 100;" in bird.conf
    # The program sets 60 s (Azure's fixed timers); unset, Cloud Router's default is 20 s.
    assert "hold time 180;" in bird.conf and "keepalive time 60;" in bird.conf
    ha = [d for d in descriptions(dev_run) if d["site"] == "gcp" and d["gateway"]["type"] == "HA_VPN"]
    del ha[0]["cloudRouter"]["keepaliveIntervalSeconds"]
    default = emulate_gcp("gcp", ha, dev_run.result.plan["gcp"])
    assert "hold time 60;" in default.network.birds[0].conf and "keepalive time 20;" in default.network.birds[0].conf


def test_azure_active_active_brings_up_a_tunnel_per_instance_per_connection(prod: dict[str, EmulatedCloud]) -> None:
    network = prod["azure"].network
    assert [r.key for r in network.routers] == ["vpn-gw0", "vpn-gw1"]
    assert sorted(t.key for t in network.tunnels) == sorted(f"vpn-gw{i}-{peer}" for i in (0, 1) for peer in ("gcp-0", "gcp-1", "hetzner-0", "proxmox-0"))
    for tunnel in network.tunnels:
        instance = int(tunnel.router[-1])
        assert tunnel.router == f"vpn-gw{instance}"
        assert tunnel.local_address == prod["azure"].public_ips[instance], "each instance from its own public address"
    # GCP's HA VPN answers interface i from instance i only: those are the tunnels the program expects up.
    expected = {t.key for t in network.tunnels if t.expected}
    assert expected == {"vpn-gw0-gcp-0", "vpn-gw1-gcp-1", "vpn-gw0-hetzner-0", "vpn-gw1-hetzner-0", "vpn-gw0-proxmox-0", "vpn-gw1-proxmox-0"}
    # The VNet sends to both instances; a failed instance's link is skipped.
    assert (SITE, "0.0.0.0/0", ("vpn-gw0", "vpn-gw1")) in {(r.router, r.prefix, r.via) for r in network.routes}
    assert network.multipath_linkdown


def test_azure_policy_based_connections_propose_the_vnet_and_the_lngs_prefixes(prod: dict[str, EmulatedCloud]) -> None:
    tunnels = {t.key: t for t in prod["azure"].network.tunnels}
    assert selectors(tunnels["vpn-gw1-hetzner-0"].swanctl) == ("10.30.32.0/20", "10.30.48.0/20")
    assert selectors(tunnels["vpn-gw0-gcp-1"].swanctl) == ("0.0.0.0/0", "0.0.0.0/0"), "route-based (BGP): any-to-any"
    routes = {(r.router, r.prefix): r.via for r in prod["azure"].network.routes}
    assert routes["vpn-gw1", "10.30.48.0/20"] == ("vpn-gw1-hetzner-0",), "an LNG's prefix into that connection's tunnel"
    assert routes["vpn-gw0", "10.30.32.0/20"] == (SITE,), "the VNet's prefix into the VNet"


def test_azure_advertises_its_vnet_every_lng_prefix_and_what_it_learned(prod: dict[str, EmulatedCloud]) -> None:
    birds = {b.router: b.conf for b in prod["azure"].network.birds}
    assert set(birds) == {"vpn-gw0", "vpn-gw1"}, "each instance speaks BGP"
    for conf in birds.values():
        announced = set(re.findall(r"route (\S+) blackhole;", conf))
        assert announced == {"10.30.32.0/20", "10.30.48.0/20", "10.30.64.0/20"}, "the VNet and the static LNGs' prefixes"
        assert "if source = RTS_BGP then accept;" in conf, "transit between BGP peers"
        assert "if net = 10.30.32.0/20 then reject;" in conf, "a learned VNet prefix is rejected"
        assert "bgp_med" not in conf.split("filter advertised")[1].split("}")[0], "no MED documented, none sent"
        assert "hold time 180;" in conf and "keepalive time 60;" in conf
    # Each instance speaks from its own custom APIPA address.
    assert "local 169.254.21.2 as 65515;" in birds["vpn-gw0"] and "local 169.254.21.6 as 65515;" in birds["vpn-gw1"]


@pytest.mark.skipif(shutil.which("bird") is None, reason="bird2 is not installed (see .ci/run)")
def test_every_bgp_speaker_config_is_valid_bird(dev: dict[str, EmulatedCloud], prod: dict[str, EmulatedCloud], tmp_path: Path) -> None:
    for cloud in (*dev.values(), *prod.values()):
        for bird in cloud.network.birds:
            conf = tmp_path / f"{cloud.site}-{bird.router}.conf"
            conf.write_text(bird.conf)
            result = subprocess.run(["bird", "-p", "-c", str(conf)], capture_output=True, text=True, check=False)
            assert result.returncode == 0, result.stderr


def test_the_lab_shortens_only_the_cloud_routers_hold_time(dev_run: OfflineRun) -> None:
    """changes.py item 9: the lab's GCP keeps Cloud Router's default timers; the program's stay 60/180 s."""
    from resinfra.lab.changes import with_lab_bgp_timers

    rendered = descriptions(dev_run)
    changed = with_lab_bgp_timers(rendered)
    routers = [d["cloudRouter"]["keepaliveIntervalSeconds"] for d in changed if "cloudRouter" in d]
    assert routers and set(routers) == {20}
    assert {d["cloudRouter"]["keepaliveIntervalSeconds"] for d in rendered if "cloudRouter" in d} == {60}, "the program's descriptions untouched"
    assert [{k: v for k, v in d.items() if k != "cloudRouter"} for d in changed] == [{k: v for k, v in d.items() if k != "cloudRouter"} for d in rendered]
