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
from resinfra.mesh.plan import LinkPlan, Routing

ANY = "0.0.0.0/0"
"""Route-based tunnels negotiate any-to-any selectors; BGP decides what goes where."""


@dataclass(frozen=True)
class TunnelValues:
    """One tunnel's resolved values, seen from the managed end."""

    index: int
    local_address: str
    peer_address: str
    psk: str


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


def describe_managed_end(link: LinkPlan, site: str, tunnels: Sequence[TunnelValues]) -> dict[str, Any]:
    """The description of ``site``'s (Azure or GCP) end of ``link``.

    + link: the planned link
    + site: the managed end's site name
    + tunnels: resolved addresses and PSK per tunnel
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
    else:
        description["cipherSuite"] = crypto.gcp_cipher_suite(link.crypto)
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
        description["tunnels"].append(
            {
                "index": values.index,
                "localAddress": values.local_address,
                "peerAddress": values.peer_address,
                "psk": values.psk,
                "localTrafficSelectors": local_ts,
                "remoteTrafficSelectors": remote_ts,
                "bgp": bgp,
            }
        )
    return description


def to_json(description: dict[str, Any]) -> str:
    return json.dumps(description, indent=2, sort_keys=True) + "\n"
