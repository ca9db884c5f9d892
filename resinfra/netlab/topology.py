"""What the lab's namespaces are built from: a site (:class:`LabSite`), an emulated cloud's network (its routers,
tunnels, routes and BGP speakers), a gateway pair's members; and the names and MACs derived from them."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

SITE = ""
"""The key of a cloud's own namespace (``rm-<site>``) among its routers."""


def tunnel_device(index: int) -> str:
    """The interface toward a cloud's ``index``-th tunnel in the router its inner side hangs off."""
    return f"t{index}"


def fixed_mac(address: str) -> str:
    """A locally administered MAC derived from an address. A bridge without a fixed MAC takes its lowest port's and
    changes when that port goes; a node created again would get a new one. Either way its neighbours' ARP entries
    would point nowhere for up to half a minute."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


# -- an emulated cloud's network ---------------------------------------------------


@dataclass(frozen=True)
class CloudRouter:
    """A routing namespace of a cloud besides its site namespace: an Azure gateway instance."""

    key: str
    address: str
    """Its address (in the site block) on its link to the site namespace."""
    loopbacks: tuple[str, ...] = ()
    """Its BGP addresses."""


@dataclass(frozen=True)
class CloudTunnel:
    """One tunnel of a cloud's gateway: its own namespace and charon, its outer side on the public address."""

    key: str
    router: str
    """The router its inner side hangs off (:data:`SITE` or a :class:`CloudRouter` key): where routes name it."""
    peer: str
    """The site at its far end."""
    local_address: str
    peer_address: str
    address: str
    """Its inner address, inside the site block: libipsec installs a policy's route with a source address inside the
    local selector (``kernel_libipsec_ipsec.c``, ``install_route``), and fails the CHILD_SA without one."""
    swanctl: str
    expected: bool = True
    """Whether the program expects it up. Azure's instances each try every connection; the tunnels nobody answers
    (an instance towards the other HA VPN interface) are not waited for."""


@dataclass(frozen=True)
class CloudRoute:
    """A route in a router's table: ``via`` are tunnel or router keys (several: equal-cost)."""

    router: str
    prefix: str
    via: tuple[str, ...]
    metric: int = 0


@dataclass(frozen=True)
class CloudBird:
    """A BGP speaker (bird2) in one of the cloud's routers."""

    router: str
    conf: str


@dataclass(frozen=True)
class CloudNetwork:
    """An emulated cloud site: what replaces a gateway VM's namespace."""

    routers: tuple[CloudRouter, ...]
    tunnels: tuple[CloudTunnel, ...]
    routes: tuple[CloudRoute, ...]
    birds: tuple[CloudBird, ...]
    loopbacks: tuple[str, ...] = ()
    """BGP addresses on the site namespace (GCP's Cloud Router)."""
    multipath_linkdown: bool = False
    """Equal-cost next hops whose link is down are skipped (Azure's platform stops sending to a failed instance)."""

    def tunnel(self, key: str) -> CloudTunnel:
        return next(t for t in self.tunnels if t.key == key)

    def tunnels_of(self, router: str) -> tuple[CloudTunnel, ...]:
        return tuple(t for t in self.tunnels if t.router == router)


# -- a gateway pair ---------------------------------------------------------------


@dataclass(frozen=True)
class PairMember:
    """One gateway VM of a pair (``gateways: 2``): a namespace of its own, ``wan`` on the underlay, ``lan`` on the site's
    bridge."""

    key: str
    """Its namespace key, ``<site>-gw-<k>`` (namespace ``<lab>-<key>``)."""
    public_ip: str
    """Its own public address (a Hetzner Primary IP, an address of the Proxmox range)."""
    public_prefix: int
    lan: str
    """Its address on the site subnet (``ip/prefix``)."""


@dataclass(frozen=True)
class PairNetwork:
    """A site whose gateway is a pair: the site namespace plays the site's network (a Hetzner network's router, a Proxmox
    bridge) and the members' namespaces hang off it and the underlay; keepalived decides which one holds the shared
    addresses (:mod:`resinfra.lab.pairs`)."""

    members: tuple[PairMember, ...]
    arp_addresses: tuple[str, ...] = ()
    """Shared public addresses that move by ARP (a Proxmox pair's VRRP address): every other namespace on the underlay
    reaches them on-link, without a permanent neighbour entry, so keepalived's gratuitous ARPs move them."""
    routed_addresses: tuple[str, ...] = ()
    """Shared public addresses the cloud routes to a member (a Hetzner Floating IP): unreachable until the emulated API
    routes them (:mod:`resinfra.lab.hcloud_api`)."""
    lan_routes: tuple[tuple[str, str], ...] = ()
    """(destination, via) every member routes through its LAN (a Hetzner network's range via its gateway, as the
    network's DHCP announces it)."""

    def member(self, key: str) -> PairMember:
        return next(m for m in self.members if m.key == key)


# -- a site -----------------------------------------------------------------------


@dataclass(frozen=True)
class LabSite:
    """One site of the lab."""

    key: str
    """Short name (namespace names are ``<lab>-<key>``)."""
    public_ips: tuple[str, ...]
    """The site's underlay addresses (a managed gateway has several)."""
    lan: ipaddress.IPv4Interface
    """The gateway's (or the cloud network's) address on the site subnet."""
    nodes: tuple[ipaddress.IPv4Interface, ...]
    node_names: tuple[str, ...] = ()
    """Namespace suffix of each node (``worker-1`` gives ``<lab>-<key>-worker-1``); ``n<i>`` when not given."""
    cloud: CloudNetwork | None = None
    """An emulated cloud's network; None for a strongSwan gateway (one charon in the site namespace)."""
    pair: PairNetwork | None = None
    """A gateway pair's members; the site namespace is then the site's network, not a gateway (and ``public_ips`` is empty)."""
