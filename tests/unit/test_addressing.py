"""The address plan: blocks by site number, the fixed layout inside a block."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from resinfra import addressing, config
from resinfra.addressing import Role
from tests.conftest import dev_config


@pytest.mark.parametrize(
    ("supernet", "prefix", "number", "block"),
    [
        ("10.10.0.0/16", 20, 1, "10.10.16.0/20"),
        ("10.10.0.0/16", 20, 15, "10.10.240.0/20"),
        ("10.10.0.0/16", 23, 2, "10.10.4.0/23"),
        ("172.16.0.0/12", 16, 3, "172.19.0.0/16"),
    ],
)
def test_site_block(supernet: str, prefix: int, number: int, block: str) -> None:
    assert addressing.site_block(IPv4Network(supernet), prefix, number) == IPv4Network(block)


def test_layout_inside_a_block() -> None:
    block = IPv4Network("10.10.48.0/20")
    assert addressing.worker_subnet(block) == IPv4Network("10.10.48.0/24")
    assert addressing.gateway_subnet(block) == IPv4Network("10.10.63.224/27")


def test_dev_plan() -> None:
    plan = addressing.plan(config.load(dev_config()))
    hetzner = plan["hetzner"]
    assert hetzner.gateway_vm is not None and hetzner.gateway_vm.private_ip == IPv4Address("10.10.48.4")
    assert hetzner.tooling_vm is not None and hetzner.tooling_vm.private_ip == IPv4Address("10.10.48.5")
    assert [w.private_ip for w in hetzner.workers] == [IPv4Address("10.10.48.10"), IPv4Address("10.10.48.11")]
    assert list(hetzner.remote_blocks) == ["gcp", "azure", "proxmox"]
    assert plan["gcp"].gateway_vm is None and plan["azure"].gateway_vm is None
    proxmox = plan["proxmox"]
    # 203.0.113.16/28 without its router .17: gateway .18, tooling slot .19, workers .20 and .21.
    assert proxmox.gateway_vm is not None and proxmox.gateway_vm.public_ip == IPv4Address("203.0.113.18")
    assert proxmox.tooling_vm is None, "the tooling VM defaults to the Hetzner site"
    assert [w.public_ip for w in proxmox.workers] == [IPv4Address("203.0.113.20"), IPv4Address("203.0.113.21")]
    assert all(w.role is Role.WORKER for w in proxmox.workers)


def test_explicit_address_block_is_used() -> None:
    values = dev_config()
    values["resinfra:sites"][0]["addressBlock"] = "10.10.128.0/22"
    plan = addressing.plan(config.load(values))
    assert plan["gcp"].block == IPv4Network("10.10.128.0/22")
    assert plan["hetzner"].remote_blocks["gcp"] == IPv4Network("10.10.128.0/22")


def test_max_workers_fit_the_worker_subnet() -> None:
    values = dev_config()
    values["resinfra:sites"][2]["workers"] = config.MAX_WORKERS
    plan = addressing.plan(config.load(values))["hetzner"]
    last = plan.workers[-1].private_ip
    assert last in plan.subnet and last < plan.subnet.broadcast_address - 1


def test_apipa_slots_are_unique_stable_and_inside_azures_range() -> None:
    from itertools import combinations

    from resinfra.addressing import apipa_address, apipa_network, max_bgp_site_number

    limit = max_bgp_site_number()
    assert limit == 11
    networks = [apipa_network(a, b, t) for a, b in combinations(range(1, limit + 1), 2) for t in (0, 1)]
    assert len(set(networks)) == len(networks)
    assert all(IPv4Address("169.254.21.0") <= n.network_address and n.broadcast_address <= IPv4Address("169.254.22.255") for n in networks)
    assert all(n.prefixlen == 30 for n in networks)
    # Keyed on the numbers only: the order of the pair does not matter.
    assert apipa_network(3, 1, 0) == apipa_network(1, 3, 0) == IPv4Network("169.254.21.8/30")
    assert apipa_address(apipa_network(1, 3, 0), 1, 3) == IPv4Address("169.254.21.9")
    assert apipa_address(apipa_network(1, 3, 0), 3, 1) == IPv4Address("169.254.21.10")
    with pytest.raises(ValueError):
        apipa_network(limit, limit + 1, 1)
