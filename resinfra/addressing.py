"""The address plan: site blocks, subnets and every machine's addresses, as pure functions.

A site's block is picked by its stable ``number`` (or set explicitly with
``addressBlock``), never by its position in the list, so adding or removing a site never
moves another site. Inside a block the layout is fixed::

    block (e.g. 10.10.16.0/20)
    ├── first /24   worker subnet: .4 gateway VM, .5 tooling VM, .10+ workers
    └── last /27    Azure's GatewaySubnet (reserved on every provider)

Block 0 of the supernet is never given to a site: it holds provider router addresses
(Hetzner uses the first address of its network range as the network's router).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from resinfra.config import MAX_WORKERS, Problem, Provider, ProxmoxSite, Site, StackConfig, key_path

GATEWAY_VM_PROVIDERS = frozenset({Provider.HETZNER, Provider.PROXMOX})
"""Providers without a managed VPN gateway: the program runs a strongSwan VM there."""

WORKER_SUBNET_PREFIX = 24
GATEWAY_SUBNET_PREFIX = 27
"""Azure requires a subnet named GatewaySubnet; /27 is its recommended minimum."""
GATEWAY_HOST_OFFSET = 4
"""Azure reserves the first four addresses of a subnet, GCP the first two: start at .4."""
TOOLING_HOST_OFFSET = 5
FIRST_WORKER_HOST_OFFSET = 10
# The layout must fit the worker subnet (last address is broadcast, GCP also keeps the one before).
assert FIRST_WORKER_HOST_OFFSET + MAX_WORKERS < 2 ** (32 - WORKER_SUBNET_PREFIX) - 2
APIPA_POOL = (IPv4Network("169.254.21.0/24"), IPv4Network("169.254.22.0/24"))
"""Link-local /30s for BGP sessions over tunnels. Azure accepts custom APIPA BGP addresses
only in 169.254.21.0-169.254.22.255 (learn.microsoft.com, "VPN Gateway BGP": APIPA range);
GCP Cloud Router accepts any /30 of 169.254.0.0/16, so one pool serves both ends."""
APIPA_PREFIX = 30
MAX_TUNNELS_PER_LINK = 2
"""APIPA slots are reserved for two tunnels per link whether or not both exist, so turning
Azure's activeActive on or off never moves the first tunnel's addresses."""
PROXMOX_PUBLIC_SLOTS_BEFORE_WORKERS = 2
"""Public range slots: gateway VM, tooling VM, then workers (stable whether or not the
tooling VM lives on the site)."""


class Role(enum.StrEnum):
    """What a machine is for."""

    WORKER = "worker"
    GATEWAY = "gateway"
    TOOLING = "tooling"


@dataclass(frozen=True)
class NodeAddress:
    """A machine of the plan: its name, role and fixed addresses."""

    name: str
    site: str
    role: Role
    index: int
    """1-based index among the site's machines of this role."""
    private_ip: IPv4Address
    public_ip: IPv4Address | None = None
    """Only where the program assigns public addresses itself (Proxmox)."""


@dataclass(frozen=True)
class SiteAddresses:
    """The address plan of one site."""

    site: str
    number: int
    block: IPv4Network
    subnet: IPv4Network
    """Where the site's machines live."""
    gateway_subnet: IPv4Network
    remote_blocks: dict[str, IPv4Network]
    """Block of every other site by site name, in site-number order: what the gateway routes."""
    workers: tuple[NodeAddress, ...]
    gateway_vm: NodeAddress | None = None
    """The strongSwan gateway VM, on sites without a managed gateway."""
    tooling_vm: NodeAddress | None = None
    """The tooling VM, on the one site that hosts it."""

    @property
    def machines(self) -> tuple[NodeAddress, ...]:
        """Every machine of the site: gateway VM, tooling VM, then workers."""
        return tuple(m for m in (self.gateway_vm, self.tooling_vm) if m) + self.workers


def site_block(supernet: IPv4Network, site_prefix_length: int, number: int) -> IPv4Network:
    """The ``number``-th block of ``site_prefix_length`` inside ``supernet``.

    Example: ``site_block(IPv4Network("10.10.0.0/16"), 20, 1)`` is ``10.10.16.0/20``.
    """
    size = 2 ** (32 - site_prefix_length)
    return IPv4Network((int(supernet.network_address) + number * size, site_prefix_length))


def block_of(cfg: StackConfig, site: Site) -> IPv4Network:
    """The site's block: explicit ``addressBlock`` or the one its number picks."""
    if site.address_block is not None:
        return IPv4Network(site.address_block)
    return site_block(cfg.supernet_network, cfg.site_prefix_length, site.number)


def worker_subnet(block: IPv4Network) -> IPv4Network:
    """The first /24 of a block."""
    return next(block.subnets(new_prefix=WORKER_SUBNET_PREFIX))


def gateway_subnet(block: IPv4Network) -> IPv4Network:
    """The last /27 of a block (Azure's GatewaySubnet)."""
    return IPv4Network((int(block.broadcast_address) - 2 ** (32 - GATEWAY_SUBNET_PREFIX) + 1, GATEWAY_SUBNET_PREFIX))


def host(subnet: IPv4Network, offset: int) -> IPv4Address:
    """The address ``offset`` hosts into ``subnet``."""
    return subnet.network_address + offset


def node_name(prefix: str, site: str, role: Role, index: int = 1) -> str:
    """Host and resource name of a machine: ``ri-dev-hetzner-worker-2``, ``ri-dev-gcp-gw``."""
    if role is Role.WORKER:
        return f"{prefix}-{site}-worker-{index}"
    if role is Role.GATEWAY:
        return f"{prefix}-{site}-gw"
    return f"{prefix}-{site}-tooling"


def proxmox_public_hosts(site: ProxmoxSite) -> list[IPv4Address]:
    """Usable addresses of a Proxmox public range, without its router, in order."""
    gateway = IPv4Address(site.public_gateway)
    return [a for a in IPv4Network(site.public_range).hosts() if a != gateway]


def plan_site(cfg: StackConfig, site: Site) -> SiteAddresses:
    """Every address of one site.

    + cfg: the validated stack config
    + site: one of ``cfg.sites``
    """
    block = block_of(cfg, site)
    subnet = worker_subnet(block)
    public: list[IPv4Address] = proxmox_public_hosts(site) if isinstance(site, ProxmoxSite) else []

    def public_slot(slot: int) -> IPv4Address | None:
        return public[slot] if slot < len(public) else None

    def machine(role: Role, index: int, host_offset: int, public_slot_index: int) -> NodeAddress:
        return NodeAddress(
            name=node_name(cfg.prefix, site.name, role, index),
            site=site.name,
            role=role,
            index=index,
            private_ip=host(subnet, host_offset),
            public_ip=public_slot(public_slot_index),
        )

    workers = tuple(machine(Role.WORKER, k, FIRST_WORKER_HOST_OFFSET + k - 1, PROXMOX_PUBLIC_SLOTS_BEFORE_WORKERS + k - 1) for k in range(1, site.workers + 1))
    gateway_vm = machine(Role.GATEWAY, 1, GATEWAY_HOST_OFFSET, 0) if Provider(site.provider) in GATEWAY_VM_PROVIDERS else None
    tooling_vm = machine(Role.TOOLING, 1, TOOLING_HOST_OFFSET, 1) if site.name == cfg.tooling_site else None
    others = sorted((s for s in cfg.sites if s.name != site.name), key=lambda s: s.number)
    return SiteAddresses(
        site=site.name,
        number=site.number,
        block=block,
        subnet=subnet,
        gateway_subnet=gateway_subnet(block),
        remote_blocks={s.name: block_of(cfg, s) for s in others},
        workers=workers,
        gateway_vm=gateway_vm,
        tooling_vm=tooling_vm,
    )


def plan(cfg: StackConfig) -> dict[str, SiteAddresses]:
    """The address plan of every site, by site name."""
    return {site.name: plan_site(cfg, site) for site in cfg.sites}


def check_addresses(cfg: StackConfig) -> list[Problem]:
    """Address rules: blocks inside the supernet, no overlaps, public ranges big enough."""
    problems: list[Problem] = []
    supernet = cfg.supernet_network
    reserved = site_block(supernet, cfg.site_prefix_length, 0)
    placed: list[tuple[int, IPv4Network]] = []
    for i, site in enumerate(cfg.sites):
        block = block_of(cfg, site)
        key = key_path(["sites", i, "addressBlock" if site.address_block else "number"])
        if not block.subnet_of(supernet):
            problems.append(Problem(key, f"address block {block} is outside resinfra:supernet {supernet}", f"use a block inside {supernet}"))
            continue
        if block.prefixlen > WORKER_SUBNET_PREFIX - 1:
            problems.append(
                Problem(key, f"address block {block} is smaller than a /23", "use a /23 or larger: it holds the /24 worker subnet and the /27 GatewaySubnet")
            )
            continue
        if block.overlaps(reserved):
            problems.append(
                Problem(
                    key,
                    f"address block {block} overlaps {reserved}, the supernet's first block",
                    "the first block is reserved for provider routers; pick another block or site number",
                )
            )
        for j, other in placed:
            if block.overlaps(other):
                # Blame an explicit addressBlock over a number-derived block: it is the odd one out.
                at, this, that, k = (j, other, block, i) if site.address_block is None and cfg.sites[j].address_block else (i, block, other, j)
                blamed = key_path(["sites", at, "addressBlock" if cfg.sites[at].address_block else "number"])
                problems.append(
                    Problem(
                        blamed,
                        f"address block {this} overlaps {that} of resinfra:sites[{k}]",
                        "give the sites disjoint blocks (change the site number or addressBlock)",
                    )
                )
        placed.append((i, block))

        if isinstance(site, ProxmoxSite):
            rng = ipaddress.IPv4Network(site.public_range)
            needed = PROXMOX_PUBLIC_SLOTS_BEFORE_WORKERS + site.workers
            have = len(proxmox_public_hosts(site))
            if have < needed:
                problems.append(
                    Problem(
                        key_path(["sites", i, "publicRange"]),
                        f"{rng} has {have} usable addresses besides publicGateway; the gateway VM, the tooling VM slot and {site.workers} workers need {needed}",
                        f"use a larger range (a /{_prefix_for(needed + 1)} fits) or fewer workers",
                    )
                )
            if rng.overlaps(supernet):
                problems.append(
                    Problem(key_path(["sites", i, "publicRange"]), f"{rng} overlaps resinfra:supernet {supernet}", "use the public range of the Proxmox host")
                )
    return problems


def apipa_slot(number_a: int, number_b: int, tunnel: int) -> int:
    """Stable index of a tunnel's /30 in :data:`APIPA_POOL`, keyed on the two site numbers.

    Pairs are numbered triangularly by the higher site number (1-2 is pair 0, 1-3 pair 1,
    2-3 pair 2, ...), so adding or removing a site never moves another link's addresses.

    Example: ``apipa_slot(1, 2, 0)`` is 0 and ``apipa_slot(2, 1, 1)`` is 1.
    """
    low, high = sorted((number_a, number_b))
    if low < 1 or low == high or not 0 <= tunnel < MAX_TUNNELS_PER_LINK:
        raise ValueError(f"no APIPA slot for sites {number_a}, {number_b} tunnel {tunnel}")
    pair = (high - 1) * (high - 2) // 2 + (low - 1)
    return pair * MAX_TUNNELS_PER_LINK + tunnel


APIPA_SLOTS = sum(n.num_addresses for n in APIPA_POOL) // 2 ** (32 - APIPA_PREFIX)


def apipa_network(number_a: int, number_b: int, tunnel: int) -> IPv4Network:
    """The /30 of one tunnel between two sites: the lower-numbered site takes its first
    host address, the higher-numbered site the second.

    Example: ``apipa_network(1, 2, 0)`` is ``169.254.21.0/30`` (site 1 on .1, site 2 on .2).
    """
    slot = apipa_slot(number_a, number_b, tunnel)
    if slot >= APIPA_SLOTS:
        raise ValueError(f"sites {number_a} and {number_b} have no APIPA /30 left in 169.254.21.0-169.254.22.255")
    # The pool's two /24s are contiguous: count from the first.
    return IPv4Network((int(APIPA_POOL[0].network_address) + slot * 2 ** (32 - APIPA_PREFIX), APIPA_PREFIX))


def apipa_address(network: IPv4Network, number: int, peer_number: int) -> IPv4Address:
    """The address of site ``number`` in a link's /30 (first host for the lower number)."""
    return network.network_address + (1 if number < peer_number else 2)


def max_bgp_site_number() -> int:
    """Highest site number whose BGP links all get an APIPA /30 (for config checks)."""
    number = 2
    while apipa_slot(number - 1, number, MAX_TUNNELS_PER_LINK - 1) < APIPA_SLOTS:
        number += 1
    return number - 1


def _prefix_for(hosts: int) -> int:
    """Smallest prefix whose range holds ``hosts`` usable addresses."""
    prefix = 30
    while 2 ** (32 - prefix) - 2 < hosts:
        prefix -= 1
    return prefix
