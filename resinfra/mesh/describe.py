"""What the program hands a managed gateway (Azure or GCP) for one link, as plain data.

``resinfra render`` writes one JSON file per managed end and link; the emulated managed ends
of the real-tunnel tests are configured from these files only, and the mocks tests check
that every value equals what the declared resources receive.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resinfra.config import Provider
from resinfra.mesh import crypto
from resinfra.mesh.plan import LinkPlan, Routing, azure_connection_bgp_addresses, gcp_static_routes

ANY = "0.0.0.0/0"
"""Route-based tunnels negotiate any-to-any selectors; BGP decides what goes where."""


@dataclass(frozen=True)
class TunnelValues:
    """One tunnel's resolved values, seen from the managed end."""

    index: int
    local_address: str
    peer_address: str
    psk: str


@dataclass(frozen=True)
class GatewayValues:
    """The managed gateway of the described end, resolved (site-wide, not per link)."""

    public_addresses: Sequence[str]
    """Azure: one per instance; GCP HA VPN: one per interface."""
    address_space: Sequence[str]
    """Azure: the VNet's address space; GCP: the VPC's subnet ranges."""
    classic_address: str | None = None
    """GCP: the Classic VPN gateway's address (static links)."""
    custom_bgp_addresses: Sequence[Sequence[str]] = ()
    """Azure: the custom APIPA addresses of each instance (IP configuration)."""
    advertise_mode: str | None = None
    """GCP: the Cloud Router's advertisement mode."""


def traffic_selectors(link: LinkPlan, site: str) -> tuple[list[str], list[str]]:
    """(local, remote) selectors of ``site``'s end: the two site blocks on static links."""
    if link.routing is Routing.BGP:
        return [ANY], [ANY]
    return [str(link.end(site).block)], [str(link.peer(site).block)]


def advertised(link: LinkPlan, site: str) -> list[str]:
    """What a managed BGP speaker announces: Azure its VNet address space (the site block),
    Cloud Router in DEFAULT mode the VPC's subnets."""
    end = link.end(site)
    return [str(end.block if end.provider is Provider.AZURE else end.subnet)]


def describe_managed_end(link: LinkPlan, site: str, tunnels: Sequence[TunnelValues], gateway: GatewayValues) -> dict[str, Any]:
    """The description of ``site``'s (Azure or GCP) end of ``link``: the resource settings as
    the cloud receives them (``gateway``, ``connections``, ``routes``, ``cloudRouter``) and the
    tunnels the program expects to come up.

    + link: the planned link
    + site: the managed end's site name
    + tunnels: resolved addresses and PSK per tunnel
    + gateway: the site's managed gateway, resolved
    """
    end, peer = link.end(site), link.peer(site)
    local_ts, remote_ts = traffic_selectors(link, site)
    description: dict[str, Any] = {
        "link": link.name,
        "kind": link.kind.value,
        "routing": link.routing.value,
        "cloud": end.provider.value,
        "site": end.site,
        "peerSite": peer.site,
        "ikeVersion": crypto.IKE_VERSION,
    }
    if end.provider is Provider.AZURE:
        description["ipsecPolicy"] = crypto.azure_policy(link.crypto)
        description["dpdTimeoutSeconds"] = crypto.DPD_TIMEOUT_SECONDS
        description["policyBasedTrafficSelectors"] = link.routing is Routing.STATIC
        description["gateway"] = _azure_gateway(end.asn, gateway)
        description["connections"] = _azure_connections(link, site, tunnels, gateway)
    else:
        description["cipherSuite"] = crypto.gcp_cipher_suite(link.crypto)
        description["subnets"] = list(gateway.address_space)
        if link.routing is Routing.BGP:
            description["gateway"] = {"type": "HA_VPN", "interfaces": [{"id": i, "ipAddress": a} for i, a in enumerate(gateway.public_addresses)]}
            description["cloudRouter"] = {"asn": end.asn, "advertiseMode": gateway.advertise_mode, "advertisedGroups": [], "advertisedIpRanges": []}
        else:
            description["gateway"] = {"type": "CLASSIC", "ipAddress": gateway.classic_address}
            description["routes"] = [
                {"destRange": str(r.destination), "priority": r.priority, "nextHopTunnel": r.tunnel} for r in gcp_static_routes(link, site)
            ]
    if link.routing is Routing.BGP:
        description["advertises"] = advertised(link, site)
    description["tunnels"] = []
    for values in tunnels:
        plan = link.tunnels[values.index]
        bgp = None
        if plan.bgp is not None:
            bgp = {
                "ipRange": str(plan.bgp.network),
                "localAsn": end.asn,
                "localAddress": str(link.bgp_address(plan, site)),
                "peerAsn": peer.asn,
                "peerAddress": str(link.bgp_address(plan, peer.site)),
            }
        tunnel: dict[str, Any] = {
            "index": values.index,
            "connection": plan.connection,
            "localAddress": values.local_address,
            "peerAddress": values.peer_address,
            "psk": values.psk,
            "localTrafficSelectors": local_ts,
            "remoteTrafficSelectors": remote_ts,
            "bgp": bgp,
        }
        if end.provider is Provider.GCP and link.routing is Routing.BGP:
            # HA VPN: interface i to the peer's interface (Azure instance) i.
            tunnel["gatewayInterface"] = tunnel["peerInterface"] = values.index
        description["tunnels"].append(tunnel)
    return description


def _azure_gateway(asn: int | None, gateway: GatewayValues) -> dict[str, Any]:
    instances = []
    for index, address in enumerate(gateway.public_addresses):
        custom = gateway.custom_bgp_addresses[index] if index < len(gateway.custom_bgp_addresses) else ()
        instances.append({"index": index, "publicAddress": address, "customBgpAddresses": list(custom)})
    return {"activeActive": len(instances) == 2, "asn": asn, "vnetAddressSpace": list(gateway.address_space), "instances": instances}


def _azure_connections(link: LinkPlan, site: str, tunnels: Sequence[TunnelValues], gateway: GatewayValues) -> list[dict[str, Any]]:
    """One entry per Azure connection: its local network gateway, key and BGP settings."""
    peer = link.peer(site)
    out = []
    for connection in link.connections:
        members = [v for v in tunnels if link.tunnels[v.index].connection == connection]
        first = link.tunnels[members[0].index]
        lng: dict[str, Any] = {"gatewayIpAddress": members[0].peer_address, "addressPrefixes": [], "bgp": None}
        entry: dict[str, Any] = {"index": connection, "psk": members[0].psk, "enableBgp": link.routing is Routing.BGP}
        if link.routing is Routing.BGP:
            lng["bgp"] = {"asn": peer.asn, "peeringAddress": str(link.bgp_address(first, peer.site))}
            entry["customBgpAddresses"] = [
                {"instance": i, "address": str(a)} for i, a in azure_connection_bgp_addresses(link, site, len(gateway.public_addresses))
            ]
            entry["usePolicyBasedTrafficSelectors"] = False
        else:
            lng["addressPrefixes"] = [str(peer.block)]
            entry["customBgpAddresses"] = []
            entry["usePolicyBasedTrafficSelectors"] = True
        entry["localNetworkGateway"] = lng
        out.append(entry)
    return out


def to_json(description: dict[str, Any]) -> str:
    return json.dumps(description, indent=2, sort_keys=True) + "\n"
