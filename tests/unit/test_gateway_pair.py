"""Sites with ``gateways: 2`` under mocks: two gateway VMs, the shared address, routes, VRRP between the pair only, the
API token a secret; and the address plan that keeps every other machine where it was."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from resinfra import addressing, config
from resinfra.failover.plan import FailoverLayout
from resinfra.offline import OfflineRun, run_offline
from tests.conftest import FAILOVER_TOKEN_SENTINEL, dev_config, paired_config

SERVER = "hcloud:index/server:Server"
VM = "proxmoxve:index/vmLegacy:VmLegacy"
COMMAND = "command:remote:Command"


@pytest.fixture(scope="module")
def paired() -> OfflineRun:
    return run_offline(paired_config(), secret_keys=["resinfra:hetznerFailoverToken"])


def site_plan(values: dict[str, Any], name: str) -> addressing.SiteAddresses:
    cfg = config.load(values)
    return addressing.plan_site(cfg, next(s for s in cfg.sites if s.name == name))


@pytest.mark.parametrize("name", ["hetzner", "proxmox"])
def test_a_pair_moves_no_other_machine(name: str) -> None:
    """Going from one gateway to two renumbers nothing: the tooling VM and the workers keep their addresses, and .4
    stays the site's gateway address on Proxmox (a VRRP address the workers already route to)."""
    single, pair = site_plan(dev_config(), name), site_plan(paired_config(), name)
    assert pair.workers == single.workers and pair.tooling_vm == single.tooling_vm
    assert single.gateway_vm is not None and pair.pair is not None and pair.gateway_vm is None
    assert [str(m.private_ip) for m in pair.gateway_vms] == [str(single.subnet.network_address + k) for k in (6, 7)]
    if name == "proxmox":
        assert pair.gateway_address == single.gateway_vm.private_ip
        assert pair.pair.shared_public_ip == single.gateway_vm.public_ip
        used = {m.public_ip for m in pair.machines} | {pair.pair.shared_public_ip}
        assert len(used) == len(pair.machines) + 1, "every public address is used once"
    else:
        assert pair.pair.shared_public_ip is None and pair.gateway_address is None


def test_hetzner_pair_two_servers_a_floating_ip_and_routes_it_takes(paired: OfflineRun) -> None:
    servers = {r.name for r in paired.of_type(SERVER)}
    assert {"ri-dev-hetzner-gw-1", "ri-dev-hetzner-gw-2"} <= servers and "ri-dev-hetzner-gw" not in servers
    for k in (1, 2):
        server, primary = paired.by_name(f"ri-dev-hetzner-gw-{k}"), paired.by_name(f"ri-dev-hetzner-gw-{k}-ip")
        assert server.inputs["publicNets"][0]["ipv4"] == int(primary.id)
    (fip,) = paired.of_type("hcloud:index/floatingIp:FloatingIp")
    # Unassigned by the program: the active gateway assigns it (a serverId here would fight every failover).
    assert fip.inputs["type"] == "ipv4" and fip.inputs["homeLocation"] == dev_config()["resinfra:sites"][2]["location"] and "serverId" not in fip.inputs
    gateway = paired.outputs["sites"]["hetzner"]["gateway"]
    assert gateway["publicIps"] == [fip.outputs["ipAddress"]] and gateway["vms"] == ["ri-dev-hetzner-gw-1", "ri-dev-hetzner-gw-2"]
    routes = paired.of_type("hcloud:index/networkRoute:NetworkRoute")
    assert {r.inputs["gateway"] for r in routes} == {"10.10.48.6"} and len(routes) == 3
    assert all(r.ignore_changes == ["gateway"] for r in routes), "the failover owns the routes' gateway"


def test_proxmox_pair_two_vms_sharing_the_gateway_addresses(paired: OfflineRun) -> None:
    ids = {r.name: r.inputs["vmId"] for r in paired.of_type(VM)}
    base = dev_config()["resinfra:sites"][3]["vmIdBase"]
    assert ids["ri-dev-proxmox-gw-1"] == base and ids["ri-dev-proxmox-gw-2"] == base + 2
    gateway = paired.outputs["sites"]["proxmox"]["gateway"]
    assert gateway["publicIps"] == ["203.0.113.18"] and gateway["innerIp"] == "10.10.64.4"
    worker = next(f for f in paired.files if f.machine == "ri-dev-proxmox-worker-1" and f.filename == "user-data.yaml")
    assert "10.10.0.0/16 via 10.10.64.4" in worker.content or "via: 10.10.64.4" in worker.content


def vrrp_rules(run: OfflineRun, name: str) -> list[tuple[str, str]]:
    return [(r["action"], r["source"]) for r in run.by_name(f"{name}-fw-rules").inputs["rules"] if r.get("proto") == "vrrp"]


def test_vrrp_is_accepted_from_the_partner_only(paired: OfflineRun) -> None:
    """Proxmox: the partner's adverts accepted, any other machine's dropped, both before the supernet rule that accepts
    everything else. Hetzner's firewalls filter public traffic only: keepalived admits its unicast peer only."""
    assert vrrp_rules(paired, "ri-dev-proxmox-gw-1") == [("ACCEPT", "10.10.64.7/32"), ("DROP", "10.10.0.0/16")]
    assert vrrp_rules(paired, "ri-dev-proxmox-gw-2") == [("ACCEPT", "10.10.64.6/32"), ("DROP", "10.10.0.0/16")]
    rules = paired.by_name("ri-dev-proxmox-gw-1-fw-rules").inputs["rules"]
    supernet = next(i for i, r in enumerate(rules) if r.get("proto") is None and r["source"] == "10.10.0.0/16")
    assert max(i for i, r in enumerate(rules) if r.get("proto") == "vrrp") < supernet
    assert vrrp_rules(paired, "ri-dev-proxmox-worker-1") == []
    for firewall in paired.of_type("hcloud:index/firewall:Firewall"):
        assert all(r["protocol"] != "vrrp" for r in firewall.inputs.get("rules", []))
    keepalived = next(f.content for f in paired.files if f.machine == "ri-dev-hetzner-gw-1" and f.filename == "keepalived.conf")
    assert "unicast_peer {\n        10.10.48.7\n    }" in keepalived and "check_unicast_src" in keepalived


def test_the_api_token_is_secret_and_only_on_the_hetzner_pair(paired: OfflineRun) -> None:
    for k in (1, 2):
        push = paired.by_name(f"ri-dev-hetzner-gw-{k}-failover")
        assert {"stdin", "triggers"} <= push.secret_inputs
        assert FAILOVER_TOKEN_SENTINEL in str(push.inputs["stdin"])
        token = FailoverLayout().token_file
        assert f"chmod 0400 {token}.resinfra-new" in push.inputs["stdin"] and f"chown root:root {token}.resinfra-new" in push.inputs["stdin"]
    for k in (1, 2):
        assert FAILOVER_TOKEN_SENTINEL not in str(paired.by_name(f"ri-dev-proxmox-gw-{k}-failover").inputs["stdin"])
    text = repr(paired.outputs) + "".join(str(f.content) for f in paired.files)
    assert FAILOVER_TOKEN_SENTINEL not in text
    assert paired.secret_outputs == set()


def test_both_gateways_of_a_pair_get_the_same_tunnels_outside_conf_d(paired: OfflineRun) -> None:
    for site in ("hetzner", "proxmox"):
        texts = [next(f.content for f in paired.files if f.machine == f"ri-dev-{site}-gw-{k}" and f.filename == "swanctl.conf") for k in (1, 2)]
        assert texts[0] == texts[1]
        push = str(paired.by_name(f"ri-dev-{site}-gw-1-swanctl").inputs["stdin"])
        assert FailoverLayout().swanctl_file in push and "/etc/swanctl/conf.d" not in push


def test_peers_use_the_shared_address(paired: OfflineRun) -> None:
    """Every connection to a pair's site names the shared address: strongSwan peers' remote_addrs, and the pair's own
    local_addrs (charon answers from the address the peer knows)."""
    fip = paired.outputs["sites"]["hetzner"]["gateway"]["publicIps"][0]
    hetzner = next(f.content for f in paired.files if f.machine == "ri-dev-hetzner-gw-1" and f.filename == "swanctl.conf")
    proxmox = next(f.content for f in paired.files if f.machine == "ri-dev-proxmox-gw-1" and f.filename == "swanctl.conf")
    assert f"local_addrs = {fip}" in hetzner and "remote_addrs = 203.0.113.18" in hetzner
    assert "local_addrs = 203.0.113.18" in proxmox and f"remote_addrs = {fip}" in proxmox
    for member in ("ri-dev-hetzner-gw-1", "ri-dev-hetzner-gw-2"):
        own = paired.by_name(f"{member}-ip").outputs["ipAddress"]
        assert own not in hetzner + proxmox
    ipaddress.IPv4Address(fip)
