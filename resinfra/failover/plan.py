"""What each gateway of a pair runs for its failover, decided from the address plan (pure).

A pair's two VMs run keepalived with unicast VRRP between their private addresses (Hetzner's
networks are routed layer 3 and carry no multicast; Proxmox bridges would, but unicast keeps
the election between the two addresses the firewall admits). The active one (MASTER) holds
the shared addresses and the tunnels; a notify script (``render/failover.py``) moves what the
cloud must move (Hetzner: the Floating IP and the network routes, through the API) and loads
the tunnels, which initiate at once.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field, fields

from resinfra.addressing import GatewayPair, SiteAddresses

HCLOUD_ENDPOINT = "https://api.hetzner.cloud/v1"
"""The Hetzner Cloud API (docs.hetzner.cloud: every request over HTTPS with ``Authorization: Bearer <token>``)."""
PRIORITIES = (150, 100)
"""VRRP priorities of the pair's first and second VM. Both start as BACKUP with ``nopreempt``: the first wins the first
election; afterwards whichever is MASTER stays so, and a replaced VM coming back does not take the tunnels again."""
ADVERT_INTERVAL = 1
"""VRRP advertisement interval, seconds (VRRPv2's smallest). The backup declares the master dead after three missed
adverts plus a skew of (256 - priority)/256 s: 3.6 s for the second VM (RFC 3768 section 6.1, keepalived.conf(5))."""


class FailoverProvider(enum.StrEnum):
    """Where a pair runs: what the notify script must move besides the addresses keepalived holds."""

    HETZNER = "hetzner"
    PROXMOX = "proxmox"


class Interface(enum.StrEnum):
    """Which NIC of a gateway an address lives on (the names are found on the machine: ``PUBLIC_IF``/``PRIVATE_IF``)."""

    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True)
class SharedAddress:
    """An address the active gateway holds (keepalived adds it on MASTER, removes it otherwise)."""

    address: str
    """``ip/prefix``."""
    interface: Interface


@dataclass(frozen=True)
class FailoverLayout:
    """Where a gateway's failover files and tools are. The lab moves them under its state directory."""

    script: str = "/usr/local/sbin/resinfra-failover"
    env_file: str = "/etc/resinfra/failover/gateway.env"
    keepalived_conf: str = "/etc/keepalived/keepalived.conf"
    interfaces_conf: str = "/etc/keepalived/resinfra-interfaces.conf"
    """Written on the machine by ``resinfra-failover ENV interfaces``: the NIC names, which the program cannot know
    (Hetzner names the private NIC ``ens10`` or ``enp7s0`` by server type)."""
    swanctl_file: str = "/etc/resinfra/failover/swanctl.conf"
    """The pair's tunnels: outside ``/etc/swanctl/conf.d``, so charon loads them only when this VM is MASTER."""
    token_file: str = "/etc/resinfra/failover/hcloud-token"
    state_dir: str = "/run/resinfra-failover"
    textfile_dir: str = "/var/lib/prometheus/node-exporter"
    """node_exporter's textfile collector directory (Debian's default ``--collector.textfile.directory``)."""
    vici_uri: str = ""
    """charon's control socket for swanctl; empty: swanctl's default (``unix:///var/run/charon.vici``)."""


@dataclass(frozen=True)
class HetznerMoves:
    """What a Hetzner gateway moves to itself through the API when it becomes MASTER."""

    floating_ip_id: int
    network_id: int
    server_id: int
    """This VM's server id (the Floating IP's new assignee)."""
    routes: tuple[str, ...]
    """Network route destinations (every other site's block) whose gateway becomes this VM's private address."""
    endpoint: str = HCLOUD_ENDPOINT


@dataclass(frozen=True)
class GatewayFailover:
    """Everything one gateway of a pair needs: its keepalived.conf and the notify script's environment file."""

    site: str
    node: str
    provider: FailoverProvider
    router_id: int
    """VRRP virtual router id: the site number (unicast with disjoint peers may repeat it; keepalived.conf(5))."""
    priority: int
    private_ip: str
    """This VM's own private address: the VRRP source."""
    peer_private_ip: str
    """The other VM's: the one unicast peer whose adverts are accepted."""
    public_ip: str
    """This VM's own public address (how the script finds the public NIC)."""
    shared: tuple[SharedAddress, ...]
    backup_route: tuple[str, str] | None = None
    """(destination, via) a Proxmox backup routes through the active VM: the other sites, reached via the pair's VRRP
    address (while MASTER, its tunnels' routes do it)."""
    hetzner: HetznerMoves | None = None
    layout: FailoverLayout = field(default_factory=FailoverLayout)
    advert_interval: int = ADVERT_INTERVAL


@dataclass(frozen=True)
class HetznerPair:
    """A Hetzner pair's cloud values, known once the cloud created its resources."""

    floating_ip: str
    floating_ip_id: int
    network_id: int
    server_ids: tuple[int, int]
    public_ips: tuple[str, str]
    """Each VM's own Primary IP."""
    routes: tuple[str, ...]
    """The network routes' destinations (every other site's block)."""


def pair_failover(
    site: str,
    addresses: SiteAddresses,
    supernet: str,
    *,
    public_prefix: int | None = None,
    hetzner: HetznerPair | None = None,
) -> tuple[GatewayFailover, GatewayFailover]:
    """The failover of a pair's two VMs: a Hetzner pair (``hetzner`` given) or a Proxmox one (``public_prefix`` given).

    + site: the site's name
    + addresses: the site's address plan (with its ``pair``)
    + supernet: ``resinfra:supernet``
    + public_prefix: the Proxmox public range's prefix length
    + hetzner: a Hetzner pair's cloud values

    Example: on Proxmox both VMs share ``10.10.64.4/24`` (private) and the range's first address (public); the first
    has priority 150 and the second's adverts as its only peer.
    """
    pair = addresses.pair
    if pair is None:
        raise ValueError(f"{site} has no gateway pair")
    provider = FailoverProvider.HETZNER if hetzner is not None else FailoverProvider.PROXMOX
    shared = _shared(pair, addresses, public_prefix, hetzner)
    backup_route = (supernet, str(pair.shared_private_ip)) if pair.shared_private_ip is not None else None
    out = []
    for i, (me, other) in enumerate(((pair.members[0], pair.members[1]), (pair.members[1], pair.members[0]))):
        public_ip = hetzner.public_ips[i] if hetzner is not None else str(me.public_ip or "")
        if not public_ip:
            raise ValueError(f"{me.name} has no public address")
        moves = HetznerMoves(hetzner.floating_ip_id, hetzner.network_id, hetzner.server_ids[i], hetzner.routes) if hetzner is not None else None
        out.append(
            GatewayFailover(
                site=site,
                node=me.name,
                provider=provider,
                router_id=addresses.number,
                priority=PRIORITIES[i],
                private_ip=str(me.private_ip),
                peer_private_ip=str(other.private_ip),
                public_ip=public_ip,
                shared=shared,
                backup_route=backup_route,
                hetzner=moves,
            )
        )
    return out[0], out[1]


def _shared(pair: GatewayPair, addresses: SiteAddresses, public_prefix: int | None, hetzner: HetznerPair | None) -> tuple[SharedAddress, ...]:
    if hetzner is not None:
        # Hetzner routes the Floating IP to the server it is assigned to; the OS must carry it (a /32 on the public NIC:
        # Hetzner Cloud FAQ, "What are floating IPs and how do they work?"; docs.hetzner.com/cloud/floating-ips/persistent-configuration).
        return (SharedAddress(f"{hetzner.floating_ip}/32", Interface.PUBLIC),)
    if pair.shared_public_ip is None or pair.shared_private_ip is None or public_prefix is None:
        raise ValueError("a Proxmox pair shares a public and a private address")
    return (
        SharedAddress(f"{pair.shared_public_ip}/{public_prefix}", Interface.PUBLIC),
        SharedAddress(f"{pair.shared_private_ip}/{addresses.subnet.prefixlen}", Interface.PRIVATE),
    )


# -- the environment file: every value the notify script reads, one KEY=value per line ---------------------------

_SAFE = re.compile(r"^[A-Za-z0-9._:/@,+ -]*$")
"""Characters a value may hold: the file is sourced by bash, so nothing in it may need quoting beyond double quotes."""


def env_values(failover: GatewayFailover) -> dict[str, str]:
    """The notify script's settings, by variable name (:func:`parse_env` reads them back)."""
    layout = failover.layout
    hetzner = failover.hetzner
    values = {
        "SITE": failover.site,
        "NODE": failover.node,
        "PROVIDER": failover.provider.value,
        "ROUTER_ID": str(failover.router_id),
        "PRIORITY": str(failover.priority),
        "PRIVATE_IP": failover.private_ip,
        "PEER_PRIVATE_IP": failover.peer_private_ip,
        "PUBLIC_IP": failover.public_ip,
        "SHARED_ADDRESSES": " ".join(f"{s.address}@{s.interface.value}" for s in failover.shared),
        "BACKUP_ROUTE": " via ".join(failover.backup_route) if failover.backup_route else "",
        "ADVERT_INTERVAL": str(failover.advert_interval),
        "HCLOUD_ENDPOINT": hetzner.endpoint if hetzner else "",
        "FLOATING_IP_ID": str(hetzner.floating_ip_id) if hetzner else "",
        "NETWORK_ID": str(hetzner.network_id) if hetzner else "",
        "SERVER_ID": str(hetzner.server_id) if hetzner else "",
        "ROUTES": " ".join(hetzner.routes) if hetzner else "",
    }
    values.update({f"LAYOUT_{f.name.upper()}": str(getattr(layout, f.name)) for f in fields(layout)})
    for key, value in values.items():
        if not _SAFE.match(value):
            raise ValueError(f"{key}: {value!r} holds a character the environment file cannot carry")
    return values


def parse_env(text: str) -> GatewayFailover:
    """A gateway's failover from its environment file (the inverse of :func:`env_values`, as rendered by
    ``render.failover.render_env``): the lab reads the rendered file and moves its paths."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not (value.startswith('"') and value.endswith('"')):
            raise ValueError(f'not a KEY="value" line: {line!r}')
        values[key] = value[1:-1]
    layout = FailoverLayout(**{f.name: values[f"LAYOUT_{f.name.upper()}"] for f in fields(FailoverLayout)})
    shared = []
    for item in values["SHARED_ADDRESSES"].split():
        address, _, interface = item.partition("@")
        ipaddress.IPv4Interface(address)
        shared.append(SharedAddress(address, Interface(interface)))
    via = values["BACKUP_ROUTE"].split(" via ") if values["BACKUP_ROUTE"] else None
    hetzner = (
        HetznerMoves(
            int(values["FLOATING_IP_ID"]), int(values["NETWORK_ID"]), int(values["SERVER_ID"]), tuple(values["ROUTES"].split()), values["HCLOUD_ENDPOINT"]
        )
        if values["HCLOUD_ENDPOINT"]
        else None
    )
    return GatewayFailover(
        site=values["SITE"],
        node=values["NODE"],
        provider=FailoverProvider(values["PROVIDER"]),
        router_id=int(values["ROUTER_ID"]),
        priority=int(values["PRIORITY"]),
        private_ip=values["PRIVATE_IP"],
        peer_private_ip=values["PEER_PRIVATE_IP"],
        public_ip=values["PUBLIC_IP"],
        shared=tuple(shared),
        backup_route=(via[0], via[1]) if via else None,
        hetzner=hetzner,
        layout=layout,
        advert_interval=int(values["ADVERT_INTERVAL"]),
    )
