"""strongSwan end of a link: its swanctl connections, from the link plan and resolved values (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resinfra.mesh.describe import traffic_selectors
from resinfra.mesh.plan import LinkPlan, Routing
from resinfra.render.swanctl import SwanChild, SwanConnection

NET_CHILD = "net"
"""The CHILD_SA carrying the site blocks."""


def connection_name(link: LinkPlan, tunnel: int) -> str:
    """Name of a tunnel's connection on both of its ends: ``hetzner-proxmox-0``."""
    return f"{link.name}-{tunnel}"


@dataclass(frozen=True)
class ResolvedTunnel:
    """A tunnel of a strongSwan end with its addresses and PSK known."""

    link: LinkPlan
    index: int
    local_address: str
    peer_address: str
    psk: str


def swan_connections(site: str, tunnels: Sequence[ResolvedTunnel]) -> list[SwanConnection]:
    """The swanctl connections of ``site``'s strongSwan gateway: one per tunnel, a single
    CHILD_SA between the two site blocks (static routing; mirrors the managed end's selectors)."""
    connections = []
    for tunnel in tunnels:
        if tunnel.link.routing is not Routing.STATIC:
            raise ValueError(f"{tunnel.link.name}: strongSwan gateways only take statically routed links")
        local_ts, remote_ts = traffic_selectors(tunnel.link, site)
        connections.append(
            SwanConnection(
                name=connection_name(tunnel.link, tunnel.index),
                local_address=tunnel.local_address,
                remote_address=tunnel.peer_address,
                psk=tunnel.psk,
                children=(SwanChild(NET_CHILD, tuple(local_ts), tuple(remote_ts)),),
                ike_proposal=tunnel.link.crypto.ike_proposal,
                esp_proposal=tunnel.link.crypto.esp_proposal,
            )
        )
    return connections
