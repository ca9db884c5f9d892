"""bird2 configuration of a BGP speaker over IPsec: sessions on APIPA addresses, announced prefixes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from resinfra.render.jinja import render_template


@dataclass(frozen=True)
class BirdSession:
    """One eBGP session to a peer's APIPA address (multihop: it runs over the tunnel)."""

    name: str
    local_address: str
    local_asn: int
    peer_address: str
    peer_asn: int


def render_bird(router_id: str, sessions: Sequence[BirdSession], announce: Sequence[str]) -> str:
    """bird.conf: announce ``announce`` to every session, learn everything into bird's table.

    Learned routes stay in bird (no kernel export): forwarding follows the tunnels' own
    routes, BGP tells what each side announces.

    Example: ``render_bird("169.254.21.2", [BirdSession("gcp_azure_0", "169.254.21.2", 65515,
    "169.254.21.1", 64514)], ["10.10.32.0/20"])``.
    """
    return render_template("bird.conf.j2", router_id=router_id, sessions=sorted(sessions, key=lambda s: s.name), announce=sorted(announce))
