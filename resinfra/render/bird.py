"""bird2 configuration of a BGP speaker over IPsec: sessions on APIPA addresses, announced prefixes, a route table."""

from __future__ import annotations

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
    gateway: str
    """Where the peer's address is reached: the tunnel's inner address."""
    device: str
    """The interface toward ``gateway``."""


@dataclass(frozen=True)
class BirdSpeaker:
    """What a speaker announces, keeps and installs."""

    router_id: str
    sessions: tuple[BirdSession, ...]
    announce: tuple[str, ...]
    """Prefixes it originates (to every session)."""
    hold_seconds: int
    keepalive_seconds: int
    announce_med: int | None = None
    """The MED it sets on what it originates; None sends none."""
    transit: bool = False
    """Re-advertise what it learns from one peer to the others."""
    reject: tuple[str, ...] = ()
    """Prefixes it never accepts."""
    path_metric: bool = True
    """Whether AS path length decides between learned routes (BGP's standard best-path step)."""
    metric_base: int = 0
    """The kernel metric of a learned route is ``metric_base + metric_per_med * MED`` (MED absent: 0)."""
    metric_per_med: int = 0


def render_bird(speaker: BirdSpeaker) -> str:
    """bird.conf: one multihop session per peer (its address reached through its tunnel), the originated prefixes
    announced to each, learned routes installed in the kernel with the metric the speaker's cloud gives them
    (equal ones merged into one multipath route); retries every 2 s, so a session is up soon after its tunnel.

    Example: ``render_bird(BirdSpeaker("169.254.21.1", (BirdSession("gcp_azure_0", "169.254.21.1", 64514,
    "169.254.21.2", 65515, "10.10.31.226", "t0"),), ("10.10.16.0/24",), 60, 20))``.
    """
    return render_template(
        "bird.conf.j2",
        s=speaker,
        sessions=sorted(speaker.sessions, key=lambda s: s.name),
        announce=sorted(speaker.announce),
        reject=sorted(speaker.reject),
    )
