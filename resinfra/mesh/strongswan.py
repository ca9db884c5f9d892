"""strongSwan end of a link: its swanctl connections, from the link plan and resolved values (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resinfra.mesh.describe import traffic_selectors
from resinfra.mesh.plan import LinkPlan, Routing
from resinfra.render.swanctl import SwanChild, SwanConnection
from resinfra.render.xfrm import XfrmInterface

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


XFRM_IF_ID_BASE = 1000


def xfrm_if_id(link: LinkPlan, site: str, tunnel: int) -> int | None:
    """The XFRM interface id of ``site``'s end of a tunnel, or None for a policy-based tunnel.

    A link with two tunnels (to an active-active Azure gateway: the same selectors towards
    each instance) is route-based on the strongSwan end. Two policy-based CHILD_SAs with the
    same selectors cannot both work in the kernel: the in-policy's template names one peer's
    tunnel addresses, so the kernel drops what arrives through the other tunnel. With an
    ``if_id`` per child, each has its own policies and its own interface (strongSwan's
    route-based VPN: ``if_id_in``/``if_id_out``, swanctl.conf since 5.8.0). The id is keyed on
    the peer's site number, unique on the gateway and stable when sites come and go.
    """
    if len(link.tunnels) < 2:
        return None
    return XFRM_IF_ID_BASE + 2 * link.peer(site).number + tunnel


def xfrm_interfaces(site: str, tunnels: Sequence[ResolvedTunnel]) -> list[XfrmInterface]:
    """The XFRM interfaces ``site``'s gateway needs for its route-based tunnels."""
    ids = sorted({i for t in tunnels if (i := xfrm_if_id(t.link, site, t.index)) is not None})
    return [XfrmInterface(f"xfrm{i}", i) for i in ids]


def swan_connections(site: str, tunnels: Sequence[ResolvedTunnel]) -> list[SwanConnection]:
    """The swanctl connections of ``site``'s strongSwan gateway: one per tunnel, a single
    CHILD_SA between the two site blocks (static routing; mirrors the managed end's selectors);
    the two tunnels to an active-active Azure gateway are route-based (:func:`xfrm_if_id`)."""
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
                children=(SwanChild(NET_CHILD, tuple(local_ts), tuple(remote_ts), xfrm_if_id(tunnel.link, site, tunnel.index)),),
                ike_proposal=tunnel.link.crypto.ike_proposal,
                esp_proposal=tunnel.link.crypto.esp_proposal,
            )
        )
    return connections
