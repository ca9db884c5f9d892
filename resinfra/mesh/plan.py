"""Link planning, pure: which pairs get a link, of which kind, and every value both ends need.

One link per unordered pair of sites; its kind follows from the two gateway kinds. End
``a`` is always the lower-numbered site, so a link's name, its APIPA addresses and which
side is which never depend on the order of ``resinfra:sites``.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from resinfra.addressing import GATEWAY_VM_PROVIDERS, SiteAddresses, apipa_address, apipa_network
from resinfra.config import AzureSite, GcpSite, Provider, Site, StackConfig
from resinfra.mesh.crypto import POLICY, CryptoPolicy
from resinfra.naming import link_name
from resinfra.sites.base import GatewayKind


class LinkKind(enum.StrEnum):
    """How a pair of gateways is joined."""

    AZURE_GCP = "azure-gcp-ha-vpn-bgp"
    """Azure VNet gateway <-> GCP HA VPN, routes by BGP (HA VPN only routes dynamically)."""
    AZURE_STRONGSWAN = "azure-strongswan"
    """Azure VNet gateway <-> strongSwan VM: local network gateway, custom IPsec policy,
    policy-based traffic selectors (the site blocks)."""
    GCP_STRONGSWAN = "gcp-classic-vpn-strongswan"
    """GCP Classic VPN <-> strongSwan VM: static routes and traffic selectors."""
    STRONGSWAN_STRONGSWAN = "strongswan-strongswan"
    """Both ends rendered by us."""


class Routing(enum.StrEnum):
    STATIC = "static"
    BGP = "bgp"


def gateway_kind(provider: Provider) -> GatewayKind:
    """Who runs a site's gateway."""
    if provider in GATEWAY_VM_PROVIDERS:
        return GatewayKind.STRONGSWAN
    return GatewayKind.AZURE_VNET_GATEWAY if provider is Provider.AZURE else GatewayKind.GCP_HA_VPN


_KINDS: dict[frozenset[GatewayKind], LinkKind] = {
    frozenset({GatewayKind.AZURE_VNET_GATEWAY, GatewayKind.GCP_HA_VPN}): LinkKind.AZURE_GCP,
    frozenset({GatewayKind.AZURE_VNET_GATEWAY, GatewayKind.STRONGSWAN}): LinkKind.AZURE_STRONGSWAN,
    frozenset({GatewayKind.GCP_HA_VPN, GatewayKind.STRONGSWAN}): LinkKind.GCP_STRONGSWAN,
    frozenset({GatewayKind.STRONGSWAN}): LinkKind.STRONGSWAN_STRONGSWAN,
}


def link_kind(a: GatewayKind, b: GatewayKind) -> LinkKind:
    """The kind of link between two gateway kinds (config refuses the pairs with none)."""
    try:
        return _KINDS[frozenset({a, b})]
    except KeyError:
        raise ValueError(f"no link kind joins {a} and {b}") from None


@dataclass(frozen=True)
class LinkEnd:
    """One end of a link: the site and what the other end must know about it."""

    site: str
    number: int
    provider: Provider
    gateway: GatewayKind
    block: IPv4Network
    """The site's address block: its traffic selector and what it routes."""
    subnet: IPv4Network
    asn: int | None


@dataclass(frozen=True)
class BgpSession:
    """A BGP session over one tunnel: each end's APIPA address in the tunnel's /30."""

    network: IPv4Network
    a_address: IPv4Address
    b_address: IPv4Address


@dataclass(frozen=True)
class TunnelPlan:
    index: int
    """0 or 1; with two tunnels, tunnel i uses GCP HA VPN interface i and Azure instance i."""
    bgp: BgpSession | None


@dataclass(frozen=True)
class LinkPlan:
    """Everything both ends of one link are built from."""

    a: LinkEnd
    b: LinkEnd
    kind: LinkKind
    routing: Routing
    tunnels: tuple[TunnelPlan, ...]
    crypto: CryptoPolicy = POLICY

    @property
    def name(self) -> str:
        """``gcp-azure``: the lower-numbered site first."""
        return link_name(self.a.site, self.b.site)

    def end(self, site: str) -> LinkEnd:
        return self.a if site == self.a.site else self.b

    def peer(self, site: str) -> LinkEnd:
        """The other end, seen from ``site``."""
        return self.b if site == self.a.site else self.a

    def bgp_address(self, tunnel: TunnelPlan, site: str) -> IPv4Address:
        """``site``'s BGP address in ``tunnel``."""
        assert tunnel.bgp is not None
        return tunnel.bgp.a_address if site == self.a.site else tunnel.bgp.b_address


def tunnel_count(kind: LinkKind, a: Site, b: Site) -> int:
    """Two tunnels for the 99.99 % HA VPN configuration (Azure activeActive), else one."""
    if kind is LinkKind.AZURE_GCP:
        azure = a if isinstance(a, AzureSite) else b
        assert isinstance(azure, AzureSite)
        return 2 if azure.active_active else 1
    return 1


def _end(site: Site, addresses: SiteAddresses) -> LinkEnd:
    provider = Provider(site.provider)
    return LinkEnd(
        site=site.name,
        number=site.number,
        provider=provider,
        gateway=gateway_kind(provider),
        block=addresses.block,
        subnet=addresses.subnet,
        asn=site.asn if isinstance(site, GcpSite | AzureSite) else None,
    )


def plan_links(cfg: StackConfig, plan: dict[str, SiteAddresses]) -> list[LinkPlan]:
    """Every link of the stack, ordered by the site numbers of its ends.

    + cfg: the validated stack config
    + plan: the address plan (:func:`resinfra.addressing.plan`)

    Example: the dev stack's four sites give six links, ``gcp-azure`` first.
    """
    links = []
    for first, second in itertools.combinations(sorted(cfg.sites, key=lambda s: s.number), 2):
        a, b = _end(first, plan[first.name]), _end(second, plan[second.name])
        kind = link_kind(a.gateway, b.gateway)
        routing = Routing.BGP if kind is LinkKind.AZURE_GCP else Routing.STATIC
        tunnels = []
        for index in range(tunnel_count(kind, first, second)):
            bgp = None
            if routing is Routing.BGP:
                network = apipa_network(a.number, b.number, index)
                bgp = BgpSession(network, apipa_address(network, a.number, b.number), apipa_address(network, b.number, a.number))
            tunnels.append(TunnelPlan(index, bgp))
        links.append(LinkPlan(a=a, b=b, kind=kind, routing=routing, tunnels=tuple(tunnels)))
    return links


def azure_bgp_addresses(links: list[LinkPlan], site: str, instances: int) -> tuple[tuple[str, ...], ...]:
    """Custom APIPA BGP addresses of an Azure gateway, per gateway instance (ip configuration).

    Tunnel ``i`` of a BGP link ends on instance ``i`` (instance 0 when there is one).
    """
    per_instance: list[list[str]] = [[] for _ in range(instances)]
    for link in links:
        if link.routing is not Routing.BGP or site not in (link.a.site, link.b.site):
            continue
        for tunnel in link.tunnels:
            per_instance[min(tunnel.index, instances - 1)].append(str(link.bgp_address(tunnel, site)))
    return tuple(tuple(addresses) for addresses in per_instance)
