"""Sites in network namespaces on one machine: gateways on a shared underlay, nodes behind
them, userspace-ESP charons (and bird2 where BGP runs). Needs root.

Layout for a lab named ``rm``::

    rm-wan          holds bridge ``wanbr`` (the "internet"); one veth per site
    rm-<site>       a strongSwan gateway: ``wan`` (its public addresses as /32s), ``lan`` (site subnet);
                    or an emulated cloud's network (:class:`CloudNetwork`): ``wan`` without addresses,
                    ``lan``, and the cloud's route table
    rm-<site>-<k>   a tunnel or a gateway instance of an emulated cloud (``k`` its key, ``vpn-...``)
    rm-<site>-gw-<k> a gateway pair's VM k (:class:`PairNetwork`): ``wan`` (its own public address), ``lan`` on the
                    bridge of ``rm-<site>``, which then plays the site's network instead of a gateway
    rm-<site>-n<i>  node i of the site (or ``rm-<site>-<name>`` with ``node_names``): ``eth0`` on the
                    site subnet, default via the gateway

The underlay resolves nothing: every namespace on it has a permanent neighbour entry for
every public address of the others. A cloud's site namespace owns none of its public
addresses; it forwards each (peer, address) pair to the namespace of the one tunnel that
answers it, where one charon runs that one tunnel. So a route can name a tunnel, as a
cloud's route table does: userspace ESP picks a packet's SA by the selectors of the charon's
own policies (libipsec ``ipsec_policy_mgr.c``: by selector size, newest first among equals),
never by route, and with one tunnel per charon the route alone decides. A packet a route
sends into a tunnel whose selectors do not cover it is dropped there (libipsec
``ipsec_processor.c``: no matching outbound policy), as a cloud drops it.

Every charon runs with its own strongswan.conf (kernel-libipsec before kernel-netlink: there
is no kernel ESP here), its own vici socket and its own /run (charon's pid file path is
fixed), all under the lab's work directory. Processes are ended by their own PID.

One adaptation to userspace ESP is made to every swanctl.conf loaded (:func:`pin_reqids`):
libipsec picks a packet's outbound SA by reqid alone, while the kernel also matches the
peer's address; when several tunnels negotiate at once (both ends re-initiating after an
outage), charon's dynamic reqids can end up swapped between two tunnels, which the kernel
shrugs off and libipsec does not (traffic leaves through the other tunnel's SA).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CHARON = "/usr/lib/ipsec/charon"
CHARON_PLUGINS = (
    "random nonce openssl pem pkcs1 gcm aes sha2 hmac kdf curve25519 "
    # kernel-libipsec must come before kernel-netlink: it provides the IPsec backend,
    # kernel-netlink the routes and addresses.
    "kernel-libipsec kernel-netlink socket-default vici"
)
RETRANSMIT_TIMEOUT = 1.0
RETRANSMIT_BASE = 1.4
RETRANSMIT_TRIES = 4
"""The lab's IKE retransmits (changes.py item 8): after 1 s, 1.4 s, ... four times, then the peer is dead."""


def dead_peer_seconds(dpd_delay: float) -> float:
    """How long after a peer goes silent its tunnel is declared down: ``dpd_delay`` without traffic, then every
    retransmit's wait: timeout x base^n for n = 0..tries (strongSwan's "Retransmission" documentation: the defaults
    4 s, 1.8, 5 tries give 165 s)."""
    return dpd_delay + sum(RETRANSMIT_TIMEOUT * RETRANSMIT_BASE**n for n in range(RETRANSMIT_TRIES + 1))


STRONGSWAN_CONF = """\
# Rendered by resinfra.netlab: one charon per network namespace, userspace ESP.
charon {{
    load_modular = no
    load = {plugins}
    install_routes = yes
    retransmit_timeout = {retransmit_timeout}
    retransmit_base = {retransmit_base}
    retransmit_tries = {retransmit_tries}
    plugins {{
        vici {{
            socket = unix://{vici}
        }}
    }}
    filelog {{
        lab {{
            path = {log}
            time_format = %H:%M:%S
            flush_line = yes
            default = 1
            ike = 1
        }}
    }}
}}
"""
SITE = ""
"""The key of a cloud's own namespace (``rm-<site>``) among its routers."""
TUNNEL_TABLE = 100
"""In a tunnel's namespace, the table for what its router sends it: everything into the tunnel."""
DEMUX_TABLE_BASE = 1000
"""In a cloud's namespace, table ``DEMUX_TABLE_BASE + i`` forwards tunnel i's public address to it."""


def tunnel_device(index: int) -> str:
    """The interface toward a cloud's ``index``-th tunnel in the router its inner side hangs off."""
    return f"t{index}"


_CHILD_TS = re.compile(r"^(?P<indent>\s+)local_ts = ", re.MULTILINE)
_REQID = re.compile(r"^\s+reqid = \d+\n", re.MULTILINE)


def pin_reqids(swanctl_conf: str) -> str:
    """The same swanctl.conf with a fixed ``reqid`` per CHILD_SA, numbered in order (1, 2, ...).

    Example: a child block's ``local_ts = 10.10.48.0/20`` line gets ``reqid = 1`` before it.
    """
    counter = iter(range(1, 1 << 16))
    unpinned = _REQID.sub("", swanctl_conf)  # pinning twice gives the same text
    return _CHILD_TS.sub(lambda m: f"{m['indent']}reqid = {next(counter)}\n{m[0]}", unpinned)


def fixed_mac(address: str) -> str:
    """A locally administered MAC derived from an address. A bridge without a fixed MAC takes its lowest port's and
    changes when that port goes; a node created again would get a new one. Either way its neighbours' ARP entries
    would point nowhere for up to half a minute."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


class LabError(RuntimeError):
    """A lab command failed or a condition was not reached in time."""


def run(*command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``condition`` until true; returns the seconds it took. Raises LabError on timeout."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise LabError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


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


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Lab:
    """A set of sites in namespaces. Use as a context manager: everything is removed on exit.

    Charons and birds are known by their namespace's key (``<site>`` or ``<site>-<k>``).
    """

    name: str
    workdir: Path
    sites: dict[str, LabSite] = field(default_factory=dict)
    charons: dict[str, Daemon] = field(default_factory=dict)
    birds: dict[str, Daemon] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    detach: bool = False
    """Start charon and bird in their own sessions, so they outlive the process that started them (the lab)."""
    failed: set[str] = field(default_factory=set)
    """Keys of cloud routers taken down (:meth:`set_router`): their tunnels are not expected up; and of pair members
    killed and not replaced yet."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", self.name):
            raise ValueError("lab name: 1-6 lowercase letters or digits")

    # -- names -----------------------------------------------------------------
    @property
    def wan_ns(self) -> str:
        return f"{self.name}-wan"

    def gw_ns(self, key: str) -> str:
        """The namespace of a site (``key`` a site) or of a cloud's tunnel or router (``<site>-<k>``)."""
        return f"{self.name}-{key}"

    def node_ns(self, key: str, index: int) -> str:
        names = self.sites[key].node_names if key in self.sites else ()
        return f"{self.name}-{key}-{names[index - 1] if names else f'n{index}'}"

    @staticmethod
    def wan_port(key: str) -> str:
        """The underlay bridge's port toward a site's gateway (in the ``wan`` namespace)."""
        return f"p-{key}"[:15]

    @staticmethod
    def part_key(site: str, part: str) -> str:
        """The key of a cloud router (``part`` = :data:`SITE`: the site itself) or tunnel."""
        return f"{site}-{part}" if part else site

    def site_of(self, key: str) -> str:
        """The site a namespace key belongs to (a site's own key, or one of its cloud's tunnels or routers)."""
        for site in self.sites.values():
            parts = () if site.cloud is None else (*site.cloud.routers, *site.cloud.tunnels)
            members = {m.key for m in site.pair.members} if site.pair is not None else set()
            if key == site.key or key in members or key in {self.part_key(site.key, p.key) for p in parts}:
                return site.key
        raise KeyError(key)

    def site_dir(self, key: str) -> Path:
        return self.workdir / key

    def charon_keys(self, expected_only: bool = False) -> list[str]:
        """Every namespace that runs a charon: strongSwan sites and cloud tunnels (only those expected up)."""
        keys = []
        for site in self.sites.values():
            if site.pair is not None:
                keys += [m.key for m in site.pair.members if not expected_only or m.key not in self.failed]
            elif site.cloud is None:
                keys.append(site.key)
            else:
                failed = {r.key for r in site.cloud.routers if self.part_key(site.key, r.key) in self.failed}
                keys += [self.part_key(site.key, t.key) for t in site.cloud.tunnels if not expected_only or (t.expected and t.router not in failed)]
        return keys

    # -- building ----------------------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _netns(self, name: str) -> None:
        if Path(f"/run/netns/{name}").exists():
            run("ip", "netns", "del", name, check=False)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "dev", "lo", "up")

    def ns(self, namespace: str, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", namespace, *command, check=check, timeout=timeout)

    def _router_ns(self, namespace: str) -> None:
        """Forwarding on; no reverse-path filter (an answer may come back through another tunnel than its request); ICMP
        errors not rate-limited, so a trace (:mod:`resinfra.lab.paths`) hears from every hop."""
        settings = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.icmp_ratelimit=0")
        self.ns(namespace, "sysctl", "-qw", *settings)

    def build(self, sites: Iterable[LabSite]) -> None:
        """Create the underlay, every site's gateway (or cloud network) and nodes, addresses and routes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sites = {s.key: s for s in sites}
        self._netns(self.wan_ns)
        run("ip", "-n", self.wan_ns, "link", "add", "name", "wanbr", "address", fixed_mac("0.0.0.1"), "type", "bridge")
        run("ip", "-n", self.wan_ns, "link", "set", "dev", "wanbr", "up")
        ports = [self.wan_port(key) for site in self.sites.values() for key in ([m.key for m in site.pair.members] if site.pair else [site.key])]
        if len(set(ports)) != len(ports):
            raise LabError(f"site names give clashing interface names (at most 15 characters): {ports}")
        for site in self.sites.values():
            gw = self.gw_ns(site.key)
            self._netns(gw)
            if site.pair is None:
                self._plug_underlay(gw, site.key, site.public_ips[0], () if site.cloud is not None else site.public_ips)
            self._router_ns(gw)
            run("ip", "-n", gw, "link", "add", "name", "lan", "address", fixed_mac(str(site.lan.ip)), "type", "bridge")
            run("ip", "-n", gw, "addr", "add", str(site.lan), "dev", "lan")
            run("ip", "-n", gw, "link", "set", "dev", "lan", "up")
            if site.cloud is not None:
                self._build_cloud(site, site.cloud)
            if site.pair is not None:
                # The site's network routes (Hetzner), it never redirects: a worker must not learn a gateway's address.
                self.ns(gw, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.lan.send_redirects=0")
                for member in site.pair.members:
                    self.add_pair_member(site.key, member.key)
            for index in range(1, len(site.nodes) + 1):
                self.add_node(site.key, index)
            self.site_dir(site.key).mkdir(parents=True, exist_ok=True)

    def _underlay(self) -> dict[str, tuple[str, str]]:
        """Every fixed address on the underlay: (its namespace key, the MAC of the ``wan`` that holds it)."""
        out = {}
        for site in self.sites.values():
            if site.pair is None:
                out.update({ip: (site.key, fixed_mac(site.public_ips[0])) for ip in site.public_ips})
            else:
                out.update({m.public_ip: (m.key, fixed_mac(m.public_ip)) for m in site.pair.members})
        return out

    def _plug_underlay(self, namespace: str, key: str, first_ip: str, own: tuple[str, ...], prefix: int = 32) -> None:
        """Give ``namespace`` its ``wan`` on the underlay bridge (port :meth:`wan_port` of ``key``), its own addresses,
        and a route and a permanent neighbour entry for every other fixed address (no ARP: see the module docstring);
        a pair's addresses that move by ARP are routed on-link without one."""
        # Created straight inside the namespaces: nothing appears in the root namespace.
        port = self.wan_port(key)
        run("ip", "link", "add", "name", "wan", "netns", namespace, "address", fixed_mac(first_ip), "type", "veth", "peer", "name", port, "netns", self.wan_ns)
        run("ip", "-n", self.wan_ns, "link", "set", "dev", port, "master", "wanbr", "up")
        run("ip", "-n", namespace, "link", "set", "dev", "wan", "up")
        for ip in own:
            run("ip", "-n", namespace, "addr", "add", f"{ip}/{prefix}", "dev", "wan")
        src = ("src", own[0]) if own else ()
        for ip, (owner, mac) in self._underlay().items():
            if owner != key:
                run("ip", "-n", namespace, "route", "replace", f"{ip}/32", "dev", "wan", *src)
                run("ip", "-n", namespace, "neigh", "replace", ip, "lladdr", mac, "dev", "wan", "nud", "permanent")
        for site in self.sites.values():
            if site.pair is not None and key not in {m.key for m in site.pair.members}:
                for ip in site.pair.arp_addresses:
                    run("ip", "-n", namespace, "route", "replace", f"{ip}/32", "dev", "wan", *src)

    def pair_site(self, key: str) -> LabSite | None:
        """The site whose pair has member ``key``."""
        return next((s for s in self.sites.values() if s.pair is not None and key in {m.key for m in s.pair.members}), None)

    def add_pair_member(self, site_key: str, key: str) -> str:
        """Create a pair member's namespace (again, after a replacement): ``wan`` on the underlay with its own public
        address, ``lan`` on the site's bridge with its private one, the routes its networks give it. Returns the
        namespace. What it shares (keepalived's addresses) and its daemons are :mod:`resinfra.lab.pairs`'."""
        site = self.sites[site_key]
        assert site.pair is not None
        member = site.pair.member(key)
        index = site.pair.members.index(member) + 1
        ns = self.gw_ns(key)
        self._netns(ns)
        self._router_ns(ns)
        self._plug_underlay(ns, key, member.public_ip, (member.public_ip,), member.public_prefix)
        lan = ipaddress.IPv4Interface(member.lan)
        port = f"m{index}"
        run(
            "ip",
            "link",
            "add",
            "name",
            "lan",
            "netns",
            ns,
            "address",
            fixed_mac(str(lan.ip)),
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.gw_ns(site_key),
        )
        run("ip", "-n", self.gw_ns(site_key), "link", "set", "dev", port, "master", "lan", "up")
        run("ip", "-n", ns, "addr", "add", str(lan), "dev", "lan")
        run("ip", "-n", ns, "link", "set", "dev", "lan", "up")
        for destination, via in site.pair.lan_routes:
            run("ip", "-n", ns, "route", "replace", destination, "via", via, "dev", "lan")
        self.site_dir(key).mkdir(parents=True, exist_ok=True)
        return ns

    def remove_pair_member(self, site_key: str, key: str) -> None:
        """Delete a pair member's namespace and its veths (its processes must be gone), so it can be created again."""
        site = self.sites[site_key]
        assert site.pair is not None
        index = site.pair.members.index(site.pair.member(key)) + 1
        run("ip", "-n", self.gw_ns(site_key), "link", "del", "dev", f"m{index}", check=False)
        run("ip", "-n", self.wan_ns, "link", "del", "dev", self.wan_port(key), check=False)
        run("ip", "netns", "del", self.gw_ns(key), check=False)
        if self.gw_ns(key) in self.namespaces:
            self.namespaces.remove(self.gw_ns(key))

    def _build_cloud(self, site: LabSite, cloud: CloudNetwork) -> None:
        """A cloud's routers and tunnels behind its site namespace, the forwarding of its public addresses, its routes."""
        gw = self.gw_ns(site.key)
        if cloud.multipath_linkdown:
            self.ns(gw, "sysctl", "-qw", "net.ipv4.conf.all.ignore_routes_with_linkdown=1", "net.ipv4.conf.default.ignore_routes_with_linkdown=1")
        for ip in cloud.loopbacks:
            run("ip", "-n", gw, "addr", "add", f"{ip}/32", "dev", "lo")
        for index, router in enumerate(cloud.routers):
            ns = self.gw_ns(self.part_key(site.key, router.key))
            self._netns(ns)
            self._router_ns(ns)
            run("ip", "link", "add", "name", "up", "netns", ns, "type", "veth", "peer", "name", f"g{index}", "netns", gw)
            run("ip", "-n", ns, "link", "set", "dev", "up", "up")
            run("ip", "-n", gw, "link", "set", "dev", f"g{index}", "up")
            run("ip", "-n", ns, "addr", "add", f"{router.address}/32", "dev", "up")
            for ip in router.loopbacks:
                run("ip", "-n", ns, "addr", "add", f"{ip}/32", "dev", "lo")
        pairs = [(t.peer_address, t.local_address) for t in cloud.tunnels]
        if len(set(pairs)) != len(pairs):
            raise LabError(f"{site.key}: two tunnels between the same addresses: {pairs}")
        for index, tunnel in enumerate(cloud.tunnels):
            ns = self.gw_ns(self.part_key(site.key, tunnel.key))
            router_ns = self.gw_ns(self.part_key(site.key, tunnel.router))
            self._netns(ns)
            self._router_ns(ns)
            # Outer side: the public address, reached from the peer through the site namespace.
            run("ip", "link", "add", "name", "wan", "netns", ns, "type", "veth", "peer", "name", f"o{index}", "netns", gw)
            # Inner side: toward the router whose routes name the tunnel.
            run("ip", "link", "add", "name", "in", "netns", ns, "type", "veth", "peer", "name", tunnel_device(index), "netns", router_ns)
            for namespace, dev in ((ns, "wan"), (ns, "in"), (gw, f"o{index}"), (router_ns, tunnel_device(index))):
                run("ip", "-n", namespace, "link", "set", "dev", dev, "up")
            run("ip", "-n", ns, "addr", "add", f"{tunnel.local_address}/32", "dev", "wan")
            run("ip", "-n", ns, "addr", "add", f"{tunnel.address}/32", "dev", "in")
            # The tunnel's namespace resolves its peer through the site namespace's proxy. What it sends into the tunnel
            # itself (an ICMP error for the far side) leaves toward its router and comes back: accept its own source.
            self.ns(gw, "sysctl", "-qw", f"net.ipv4.conf.o{index}.proxy_arp=1")
            self.ns(ns, "sysctl", "-qw", "net.ipv4.conf.in.accept_local=1")
            # What the router sends is for the tunnel (table TUNNEL_TABLE gets ipsec0 once charon made it); everything
            # else the namespace handles (IKE, decrypted packets) follows its main table, never charon's table 220.
            run("ip", "-n", ns, "rule", "add", "pref", "100", "iif", "in", "lookup", str(TUNNEL_TABLE))
            run("ip", "-n", ns, "rule", "add", "pref", "110", "lookup", "main")
            table = str(DEMUX_TABLE_BASE + index)
            run("ip", "-n", gw, "rule", "add", "pref", table, "from", tunnel.peer_address, "to", tunnel.local_address, "iif", "wan", "lookup", table)
        self._route_cloud(site, cloud)

    def _route_cloud(self, site: LabSite, cloud: CloudNetwork) -> None:
        """Every route of a cloud's namespaces, installed or put back (a link taken down took its routes with it)."""
        gw = self.gw_ns(site.key)
        address = {SITE: str(site.lan.ip)}
        device: dict[str, dict[str, str]] = {SITE: {}}  # per router: its device toward each neighbour's key
        for index, router in enumerate(cloud.routers):
            run("ip", "-n", gw, "route", "replace", f"{router.address}/32", "dev", f"g{index}")
            address[router.key] = router.address
            device[SITE][router.key] = f"g{index}"
            device[router.key] = {SITE: "up"}
        for index, tunnel in enumerate(cloud.tunnels):
            ns = self.gw_ns(self.part_key(site.key, tunnel.key))
            run("ip", "-n", ns, "route", "replace", f"{tunnel.peer_address}/32", "dev", "wan")
            run("ip", "-n", ns, "route", "replace", "default", "via", address[tunnel.router], "dev", "in", "onlink")
            run("ip", "-n", self.gw_ns(self.part_key(site.key, tunnel.router)), "route", "replace", f"{tunnel.address}/32", "dev", tunnel_device(index))
            run("ip", "-n", gw, "route", "replace", f"{tunnel.local_address}/32", "dev", f"o{index}", "table", str(DEMUX_TABLE_BASE + index))
            address[tunnel.key] = tunnel.address
            device.setdefault(tunnel.router, {})[tunnel.key] = tunnel_device(index)
        for route in cloud.routes:
            hops = [("nexthop", "via", address[v], "dev", device[route.router][v], "onlink") for v in route.via]
            spec = hops[0][1:] if len(hops) == 1 else tuple(word for hop in hops for word in hop)
            ns = self.gw_ns(self.part_key(site.key, route.router))
            # What the router itself sends (an ICMP error) leaves from its own address, inside the tunnels' selectors.
            run("ip", "-n", ns, "route", "replace", route.prefix, "metric", str(route.metric), "src", address[route.router], *spec)

    def add_node(self, key: str, index: int) -> str:
        """Create node ``index`` of site ``key``: its namespace, a veth into the gateway's LAN bridge, its address and
        default route. Returns the namespace."""
        site = self.sites[key]
        ns, gw, port = self.node_ns(key, index), self.gw_ns(key), f"n{index}"
        self._netns(ns)
        address = site.nodes[index - 1]
        # Created again, the node keeps its MAC as it keeps its address (see fixed_mac).
        run("ip", "link", "add", "name", "eth0", "netns", ns, "address", fixed_mac(str(address.ip)), "type", "veth", "peer", "name", port, "netns", gw)
        run("ip", "-n", gw, "link", "set", "dev", port, "master", "lan", "up")
        run("ip", "-n", ns, "addr", "add", str(address), "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "dev", "eth0", "up")
        run("ip", "-n", ns, "route", "add", "default", "via", str(site.lan.ip))
        return ns

    def remove_node(self, key: str, index: int) -> None:
        """Delete node ``index``: its veth (both ends, at once) and its namespace (its processes must be gone), so the
        node can be created again under the same names. Either may already be gone."""
        ns = self.node_ns(key, index)
        # Not left to the namespace's teardown, which the kernel does asynchronously (seconds on a busy machine).
        run("ip", "-n", self.gw_ns(key), "link", "del", "dev", f"n{index}", check=False)
        run("ip", "netns", "del", ns, check=False)
        if ns in self.namespaces:
            self.namespaces.remove(ns)

    def set_uplink(self, key: str, up: bool) -> None:
        """Cut (or restore) a site's only way to the underlay: its bridge port goes down (a pair's: both), the gateway's
        ``wan`` loses carrier (its addresses and routes stay, as on a VM whose upstream link failed)."""
        pair = self.sites[key].pair
        for port_key in [m.key for m in pair.members] if pair is not None else [key]:
            run("ip", "-n", self.wan_ns, "link", "set", "dev", self.wan_port(port_key), "up" if up else "down")

    # -- a cloud's gateway instance ------------------------------------------------
    def set_router(self, site: str, router: str, up: bool) -> None:
        """Take a cloud router (an Azure gateway instance) off its links, or put it back: its link to the site
        namespace and its tunnels' outer sides. Its daemons are the caller's (:meth:`kill_router`, :meth:`start_cloud`)."""
        cloud = self.sites[site].cloud
        assert cloud is not None
        state = "up" if up else "down"
        (self.failed.discard if up else self.failed.add)(self.part_key(site, router))
        run("ip", "-n", self.gw_ns(self.part_key(site, router)), "link", "set", "dev", "up", state)
        for tunnel in cloud.tunnels_of(router):
            run("ip", "-n", self.gw_ns(self.part_key(site, tunnel.key)), "link", "set", "dev", "wan", state)
        if up:
            self._route_cloud(self.sites[site], cloud)

    # -- charon ------------------------------------------------------------------
    def vici(self, key: str) -> str:
        return f"unix://{self.site_dir(key) / 'charon.vici'}"

    def swanctl(self, key: str, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``swanctl COMMAND`` against the charon of namespace ``key``."""
        return run("swanctl", command, "--uri", self.vici(key), *args, check=check)

    def start_charon(self, key: str, swanctl_conf: str) -> None:
        """Start the charon of namespace ``key`` (a strongSwan site or a cloud tunnel) and load ``swanctl_conf``."""
        site_dir = self.site_dir(key)
        rundir = site_dir / "run"
        rundir.mkdir(parents=True, exist_ok=True)
        # A killed charon's pid file stays; its process may linger as a zombie, which charon's check takes for alive.
        (rundir / "charon.pid").unlink(missing_ok=True)
        conf = site_dir / "strongswan.conf"
        log = site_dir / "charon.log"
        conf.write_text(
            STRONGSWAN_CONF.format(
                plugins=CHARON_PLUGINS,
                vici=site_dir / "charon.vici",
                log=log,
                retransmit_timeout=RETRANSMIT_TIMEOUT,
                retransmit_base=RETRANSMIT_BASE,
                retransmit_tries=RETRANSMIT_TRIES,
            )
        )
        log.unlink(missing_ok=True)  # one log per run: charon writes from the start of an existing file
        self.write_swanctl(key, swanctl_conf)
        (site_dir / "charon.vici").unlink(missing_ok=True)
        env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
        # ip netns exec gives the process its own mount namespace: /run is private to it.
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.gw_ns(key), "sh", "-c", f'mount --bind "{rundir}" /run && exec {CHARON}'],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
        )
        self.charons[key] = Daemon(process, log)
        wait_for(lambda: (site_dir / "charon.vici").exists() or process.poll() is not None, 10, f"charon of {key}")
        if process.poll() is not None:
            raise LabError(f"charon of {key} exited {process.returncode}; see {log}")
        if key not in self.sites and self.pair_site(key) is None:
            # A cloud tunnel: what its router sends goes into the tunnel device charon just created.
            run("ip", "-n", self.gw_ns(key), "route", "replace", "default", "dev", "ipsec0", "table", str(TUNNEL_TABLE))
        self.load(key)

    def start_cloud(self, site: str, router: str | None = None) -> None:
        """Start a cloud's tunnels' charons, then its BGP speakers (only ``router``'s with a router key)."""
        cloud = self.sites[site].cloud
        assert cloud is not None
        for tunnel in cloud.tunnels:
            if router is None or tunnel.router == router:
                self.start_charon(self.part_key(site, tunnel.key), tunnel.swanctl)
        for bird in cloud.birds:
            if router is None or bird.router == router:
                self.start_bird(self.part_key(site, bird.router), bird.conf)

    def kill_router(self, site: str, router: str) -> None:
        """End a cloud router's daemons abruptly (SIGKILL: its tunnels' charons and its bird), as a failed instance."""
        cloud = self.sites[site].cloud
        assert cloud is not None
        for tunnel in cloud.tunnels_of(router):
            self.kill_charon(self.part_key(site, tunnel.key))
        daemon = self.birds.pop(self.part_key(site, router), None)
        if daemon is not None:
            _kill(daemon)

    def write_swanctl(self, key: str, swanctl_conf: str) -> Path:
        path = self.site_dir(key) / "swanctl.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pin_reqids(swanctl_conf))
        path.chmod(0o600)
        return path

    def load(self, key: str) -> None:
        """(Re)load the gateway's swanctl.conf, as the push does with ``swanctl --load-all``."""
        self.swanctl(key, "--load-all", "--noprompt", "--file", str(self.site_dir(key) / "swanctl.conf"))

    def kill_charon(self, key: str) -> None:
        """End the gateway's charon abruptly (SIGKILL), as a crash would."""
        daemon = self.charons.pop(key, None)
        if daemon is not None:
            _kill(daemon)

    def loaded(self, key: str) -> dict[str, int]:
        """Loaded connections and their number of children."""
        result = self.swanctl(key, "--list-conns", "--raw")
        conns: dict[str, int] = {}
        for line in result.stdout.splitlines():
            match = re.match(r"list-conn event \{(\S+) \{", line)
            if match:
                conns[match.group(1)] = len(re.findall(r"mode=TUNNEL", line))
        return conns

    def child_sas(self, key: str) -> list[dict[str, str]]:
        """Installed CHILD_SAs of established IKE_SAs: connection, child name, byte and packet counters."""
        result = self.swanctl(key, "--list-sas", "--raw", check=False)
        children = []
        for line in result.stdout.splitlines():
            match = re.match(r"list-sa event \{(\S+) \{", line)
            head, _, tail = line.partition("child-sas")
            if not match or "state=ESTABLISHED" not in head:
                continue
            for body in re.findall(r"\S+?-\d+ \{([^{}]*)\}", tail):
                fields = dict(re.findall(r"(\S+?)=(\S*)", body))
                if fields.get("state") == "INSTALLED":
                    children.append({"connection": match.group(1), **fields})
        return children

    def all_children_up(self, key: str) -> set[str]:
        """Connections whose every configured child is installed (duplicates from
        simultaneous initiation count once)."""
        expected = self.loaded(key)
        installed: dict[str, set[str]] = {}
        for child in self.child_sas(key):
            installed.setdefault(child["connection"], set()).add(child["name"])
        return {name for name, count in expected.items() if len(installed.get(name, set())) >= count}

    def tunnels_up(self) -> bool:
        """Every charon's every connection installed (a cloud's unanswered tunnels aside); of a pair, the active member
        carries them all (the standby loads none)."""
        pairs = {m.key for s in self.sites.values() if s.pair is not None for m in s.pair.members}
        singles = [key for key in self.charon_keys(expected_only=True) if key not in pairs]
        if not all(set(self.loaded(key)) <= self.all_children_up(key) for key in singles):
            return False
        return all(self.pair_carrier(site.key) is not None for site in self.sites.values() if site.pair is not None and len(self.sites) > 1)

    def pair_carrier(self, site: str) -> str | None:
        """The member of ``site``'s pair whose charon has the site's tunnels loaded and every one installed, if any."""
        pair = self.sites[site].pair
        assert pair is not None
        for member in pair.members:
            if member.key in self.failed:
                continue
            try:
                loaded = self.loaded(member.key)
            except LabError:
                continue
            if loaded and set(loaded) <= self.all_children_up(member.key):
                return member.key
        return None

    # -- bird --------------------------------------------------------------------
    def start_bird(self, key: str, bird_conf: str) -> None:
        site_dir = self.site_dir(key)
        site_dir.mkdir(parents=True, exist_ok=True)
        conf = site_dir / "bird.conf"
        conf.write_text(bird_conf)
        run("bird", "-p", "-c", str(conf))
        sock = site_dir / "bird.ctl"
        sock.unlink(missing_ok=True)
        log = site_dir / "bird.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.gw_ns(key), "bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(site_dir / "bird.pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detach,
            )
        self.birds[key] = Daemon(process, log)
        wait_for(lambda: sock.exists() or process.poll() is not None, 10, f"bird of {key}")
        if process.poll() is not None:
            raise LabError(f"bird of {key} exited {process.returncode}; see {log}")

    def birdc(self, key: str, *command: str) -> str:
        return run("birdc", "-s", str(self.site_dir(key) / "bird.ctl"), *command).stdout

    def learned(self, key: str) -> set[str]:
        """Prefixes bird learned over BGP."""
        out = self.birdc(key, "show", "route", "where", "source = RTS_BGP")
        return set(re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", out, flags=re.MULTILINE))

    # -- traffic -----------------------------------------------------------------
    def ping(self, key: str, index: int, target: str, timeout: float = 1.0) -> bool:
        # -w bounds the whole run: without it a send the kernel refuses (no SA yet) can retry for long.
        deadline = str(max(1, math.ceil(timeout)))
        result = self.ns(self.node_ns(key, index), "ping", "-c", "1", "-W", str(timeout), "-w", deadline, "-q", target, check=False, timeout=timeout + 5)
        return result.returncode == 0

    # -- teardown ----------------------------------------------------------------
    def destroy(self) -> None:
        """Stop every daemon this lab started (by PID) and delete its namespaces."""
        for daemons in (self.birds, self.charons):
            for key in list(daemons):
                _stop(daemons.pop(key))
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def _kill(daemon: Daemon) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(daemon.process.pid, signal.SIGKILL)
    daemon.process.wait(timeout=10)


def _stop(daemon: Daemon) -> None:
    """SIGTERM, then SIGKILL after 5 s: this lab's own process only."""
    with contextlib.suppress(ProcessLookupError):
        daemon.process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        daemon.process.wait(timeout=5)
    if daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait(timeout=5)


def require_tools() -> list[str]:
    """Tools the lab needs that are missing."""
    missing = [tool for tool in ("ip", "swanctl", "bird", "birdc", "ping") if shutil.which(tool) is None]
    if not Path(CHARON).exists():
        missing.append(CHARON)
    return missing
