"""The address plan: site blocks, subnets and every machine's addresses, as pure functions.

A site's block is picked by its stable ``number`` (or set explicitly with
``addressBlock``), never by its position in the list, so adding or removing a site never
moves another site. Inside a block the layout is fixed::

    block (e.g. 10.10.16.0/20)
    ├── first /24   worker subnet: .4 gateway VM (or a Proxmox pair's VRRP address), .5 tooling VM,
    │               .6 and .7 a gateway pair's VMs (``gateways: 2``), .10+ workers
    └── last /27    Azure's GatewaySubnet (reserved on every provider)

Block 0 of the supernet is never given to a site: it holds provider router addresses
(Hetzner uses the first address of its network range as the network's router).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from resinfra.config import MAX_WORKERS, Problem, Provider, ProxmoxSite, Site, StackConfig, key_path
from resinfra.roles import Role

GATEWAY_VM_PROVIDERS = frozenset({Provider.HETZNER, Provider.PROXMOX})
"""Providers without a managed VPN gateway: the program runs a strongSwan VM there."""

WORKER_SUBNET_PREFIX = 24
GATEWAY_SUBNET_PREFIX = 27
"""Azure requires a subnet named GatewaySubnet; /27 is its recommended minimum."""
GATEWAY_HOST_OFFSET = 4
"""Azure reserves the first four addresses of a subnet, GCP the first two: start at .4."""
TOOLING_HOST_OFFSET = 5
PAIR_HOST_OFFSETS = (6, 7)
"""The two VMs of a gateway pair. ``.4`` stays the site's gateway address (a Proxmox pair's VRRP address: workers keep
their route when a site goes from one gateway to two) and ``.5`` the tooling VM's; ``.10`` onwards the workers'."""
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
"""Public range slots: gateway VM (or a pair's VRRP address), tooling VM, then workers (stable whether or not the
tooling VM lives on the site)."""
PROXMOX_PAIR_PUBLIC_SLOTS = 2
"""A Proxmox gateway pair's VMs take the last two usable addresses of the range: adding workers never moves them."""


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
class GatewayPair:
    """The two gateway VMs of a site with ``gateways: 2`` and the addresses they share (held by the active one)."""

    members: tuple[NodeAddress, NodeAddress]
    shared_private_ip: IPv4Address | None
    """Proxmox: ``.4`` on the private bridge, a VRRP address. Hetzner: None: its networks are routed (layer 3), so no
    address can move without the API; the network routes point at the active VM instead."""
    shared_public_ip: IPv4Address | None
    """Proxmox: the range's first slot, a VRRP address on the public bridge (what every peer is configured with).
    Hetzner: None here: a Floating IP, whose address the cloud picks."""


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
    gateway_vms: tuple[NodeAddress, ...] = ()
    """The strongSwan gateway VM, or the two of a pair, on sites without a managed gateway."""
    tooling_vm: NodeAddress | None = None
    """The tooling VM, on the one site that hosts it."""
    pair: GatewayPair | None = None
    """The gateway pair and its shared addresses (``gateways: 2``)."""

    @property
    def machines(self) -> tuple[NodeAddress, ...]:
        """Every machine of the site: gateway VM(s), tooling VM, then workers."""
        return self.gateway_vms + tuple(m for m in (self.tooling_vm,) if m) + self.workers

    @property
    def gateway_vm(self) -> NodeAddress | None:
        """The site's one gateway VM (None on a managed-gateway site and for a pair)."""
        return self.gateway_vms[0] if len(self.gateway_vms) == 1 else None

    @property
    def gateway_address(self) -> IPv4Address | None:
        """The private address the site's own machines send other sites' traffic to, where they route it themselves
        (Proxmox): the gateway VM's, or a Proxmox pair's VRRP address. None on managed sites and a Hetzner pair (routed
        by the network's routes)."""
        if self.pair is not None:
            return self.pair.shared_private_ip
        return self.gateway_vm.private_ip if self.gateway_vm is not None else None


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


def node_name(prefix: str, site: str, role: Role, index: int = 1, paired: bool = False) -> str:
    """Host and resource name of a machine: ``ri-dev-hetzner-worker-2``, ``ri-dev-hetzner-gw``, and a pair's
    ``ri-dev-hetzner-gw-1`` and ``-gw-2`` (``paired``)."""
    if role is Role.WORKER:
        return f"{prefix}-{site}-worker-{index}"
    if role is Role.GATEWAY:
        return f"{prefix}-{site}-gw" + (f"-{index}" if paired else "")
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
        return public[slot] if 0 <= slot < len(public) else None

    def machine(role: Role, index: int, host_offset: int, public_slot_index: int, paired: bool = False) -> NodeAddress:
        return NodeAddress(
            name=node_name(cfg.prefix, site.name, role, index, paired),
            site=site.name,
            role=role,
            index=index,
            private_ip=host(subnet, host_offset),
            public_ip=public_slot(public_slot_index),
        )

    workers = tuple(machine(Role.WORKER, k, FIRST_WORKER_HOST_OFFSET + k - 1, PROXMOX_PUBLIC_SLOTS_BEFORE_WORKERS + k - 1) for k in range(1, site.workers + 1))
    gateway_vms: tuple[NodeAddress, ...] = ()
    pair = None
    if Provider(site.provider) in GATEWAY_VM_PROVIDERS and gateway_count(site) == 2:
        first, second = (
            machine(Role.GATEWAY, k, offset, len(public) - PROXMOX_PAIR_PUBLIC_SLOTS + k - 1, paired=True) for k, offset in enumerate(PAIR_HOST_OFFSETS, 1)
        )
        gateway_vms = (first, second)
        proxmox = isinstance(site, ProxmoxSite)
        pair = GatewayPair((first, second), host(subnet, GATEWAY_HOST_OFFSET) if proxmox else None, public_slot(0) if proxmox else None)
    elif Provider(site.provider) in GATEWAY_VM_PROVIDERS:
        gateway_vms = (machine(Role.GATEWAY, 1, GATEWAY_HOST_OFFSET, 0),)
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
        gateway_vms=gateway_vms,
        tooling_vm=tooling_vm,
        pair=pair,
    )


def gateway_count(site: Site) -> int:
    """strongSwan gateway VMs of a site: its ``gateways`` (Hetzner, Proxmox), 0 where the cloud runs the VPN gateway."""
    if Provider(site.provider) not in GATEWAY_VM_PROVIDERS:
        return 0
    return int(getattr(site, "gateways", 1))


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
            pair = site.gateways == 2
            needed = PROXMOX_PUBLIC_SLOTS_BEFORE_WORKERS + site.workers + (PROXMOX_PAIR_PUBLIC_SLOTS if pair else 0)
            have = len(proxmox_public_hosts(site))
            if have < needed:
                what = "the pair's VRRP address, the tooling VM slot, " if pair else "the gateway VM, the tooling VM slot and "
                problems.append(
                    Problem(
                        key_path(["sites", i, "publicRange"]),
                        f"{rng} has {have} usable addresses besides publicGateway; {what}{site.workers} workers"
                        + (" and the two gateway VMs" if pair else "")
                        + f" need {needed}",
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
