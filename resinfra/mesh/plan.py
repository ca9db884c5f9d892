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
    """0 or 1; with two tunnels, tunnel i ends on Azure instance i (and on GCP HA VPN interface i)."""
    bgp: BgpSession | None
    connection: int = 0
    """The Azure connection (local network gateway, shared key) the tunnel belongs to: Azure's
    active-active instances each bring up a tunnel per connection, with the connection's one
    key. Every tunnel of a connection shares its PSK."""


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

    @property
    def connections(self) -> tuple[int, ...]:
        """The link's connections (one PSK each), in order."""
        return tuple(sorted({t.connection for t in self.tunnels}))


STATIC_ROUTE_PRIORITY = 1000
"""GCP's default route priority. The halves below win by prefix length whatever it is."""


@dataclass(frozen=True)
class StaticRoute:
    """A GCP static route of a statically routed link (Classic VPN to a strongSwan gateway)."""

    destination: IPv4Network
    tunnel: int
    priority: int = STATIC_ROUTE_PRIORITY

    @property
    def half(self) -> int:
        """0 or 1: which half of the peer's block (names the route)."""
        return int(self.destination.network_address) >> (32 - self.destination.prefixlen) & 1


def gcp_static_routes(link: LinkPlan, site: str) -> list[StaticRoute]:
    """GCP's routes toward the strongSwan peer of a static link: the two halves of the peer's block.

    Why halves and not the block: an Azure VNet gateway with BGP advertises to its BGP peers
    the address prefixes of every local network gateway connected to it, static ones included,
    and they cannot be filtered (Microsoft, "About BGP and VPN Gateway" FAQ). So with an Azure
    site in the stack, GCP's Cloud Router learns every strongSwan site's block from Azure, the
    very prefix of the Classic VPN route. GCP picks among applicable routes by the most
    specific destination first and only then by priority (docs.cloud.google.com/vpc/docs/routes,
    "Routing order"; terraform-provider-google ``resource_compute_route.go``: priority "is used
    to break ties ... of equal prefix length"); a learned route's priority comes from the
    peer's MED, which Azure sets, not us. Two routes one bit longer than anything Azure advertises win on prefix length
    alone, whatever the MED, and cover exactly the block the tunnel's selectors carry.
    Azure's own learned route to the block stays in the table, shadowed; should the Classic
    tunnel's routes go away, GCP would send that traffic to Azure, whose tunnel to the
    strongSwan site carries only Azure's block, so it is dropped there: no link ever carries
    another pair's traffic (no transit).

    Example: Hetzner's 10.10.48.0/20 seen from GCP gives 10.10.48.0/21 and 10.10.56.0/21.
    """
    if link.routing is not Routing.STATIC or link.end(site).provider is not Provider.GCP:
        raise ValueError(f"{link.name}: only GCP's end of a static link has static routes")
    peer_block = link.peer(site).block
    return [StaticRoute(half, tunnel.index) for tunnel in link.tunnels for half in peer_block.subnets(prefixlen_diff=1)]


def tunnel_count(kind: LinkKind, a: Site, b: Site) -> int:
    """Two tunnels on a link to an active-active Azure gateway, else one.

    Azure's active-active instances each bring up their own tunnel for every connection and
    send traffic over both ("About active-active VPN gateways", learn.microsoft.com): a
    strongSwan peer must accept both (one connection, two tunnels); GCP HA VPN takes one tunnel
    per interface (interface i <-> instance i), the 99.99 % configuration.
    """
    azure = next((s for s in (a, b) if isinstance(s, AzureSite)), None)
    if azure is not None and azure.active_active and kind in (LinkKind.AZURE_GCP, LinkKind.AZURE_STRONGSWAN):
        return 2
    return 1


def connection_of(kind: LinkKind, tunnel: int) -> int:
    """The Azure connection of ``tunnel``: one per GCP interface on the BGP link (each has its
    own local network gateway), one for both instances' tunnels to a strongSwan VM's address."""
    return tunnel if kind is LinkKind.AZURE_GCP else 0


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
            tunnels.append(TunnelPlan(index, bgp, connection_of(kind, index)))
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


def azure_connection_bgp_addresses(link: LinkPlan, site: str, instances: int) -> list[tuple[int, IPv4Address]]:
    """(instance, Azure's own APIPA address) that every connection of a BGP link names.

    Each instance speaks BGP from its own address, its address in the /30 of the tunnel it
    ends (tunnel i on instance i). An active-active gateway brings up a tunnel from both
    instances for every connection, so every connection names both (hashicorp/
    terraform-provider-azurerm #22885 and PR #22912: a connection's primary and secondary
    custom BGP addresses, one per instance). The instance-1 tunnel to GCP interface 0 (and
    instance 0's to interface 1) has no GCP tunnel opposite and stays down, as in Google's own
    configuration for Azure (GoogleCloudPlatform/professional-services,
    tools/gcp-azure-ha-vpn: one tunnel per HA VPN interface, interface i to Azure instance i):
    a local network gateway has one BGP peer address, and a Cloud Router interface's /30
    has room for one peer, so a second session to the same GCP address cannot be built.
    """
    by_instance = {min(t.index, instances - 1): t for t in link.tunnels}
    return [(instance, link.bgp_address(tunnel, site)) for instance, tunnel in sorted(by_instance.items())]
