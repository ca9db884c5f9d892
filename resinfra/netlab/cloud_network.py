"""An emulated cloud's network in the lab: its routers and tunnels, each a namespace behind the cloud's site namespace,
the forwarding of its public addresses to its tunnels, its route table; a gateway instance taken off its links and back.

A cloud's site namespace owns none of its public addresses; it forwards each (peer, address)
pair to the namespace of the one tunnel that answers it, where one charon runs that one
tunnel. So a route can name a tunnel, as a cloud's route table does: userspace ESP picks a
packet's SA by the selectors of the charon's own policies (libipsec ``ipsec_policy_mgr.c``:
by selector size, newest first among equals), never by route, and with one tunnel per charon
the route alone decides. A packet a route sends into a tunnel whose selectors do not cover it
is dropped there (libipsec ``ipsec_processor.c``: no matching outbound policy), as a cloud
drops it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from resinfra.netlab.process import LabError, run
from resinfra.netlab.topology import SITE, CloudNetwork, LabSite, tunnel_device

if TYPE_CHECKING:
    from resinfra.netlab.lab import Lab

TUNNEL_TABLE = 100
"""In a tunnel's namespace, the table for what its router sends it: everything into the tunnel."""
DEMUX_TABLE_BASE = 1000
"""In a cloud's namespace, table ``DEMUX_TABLE_BASE + i`` forwards tunnel i's public address to it."""


# -- building ----------------------------------------------------------------------


def build_cloud(lab: Lab, site: LabSite, cloud: CloudNetwork) -> None:
    """A cloud's routers and tunnels behind its site namespace, the forwarding of its public addresses, its routes."""
    gw = lab.gw_ns(site.key)
    if cloud.multipath_linkdown:
        lab.ns(gw, "sysctl", "-qw", "net.ipv4.conf.all.ignore_routes_with_linkdown=1", "net.ipv4.conf.default.ignore_routes_with_linkdown=1")
    for ip in cloud.loopbacks:
        run("ip", "-n", gw, "addr", "add", f"{ip}/32", "dev", "lo")
    for index, router in enumerate(cloud.routers):
        ns = lab.gw_ns(lab.part_key(site.key, router.key))
        lab.create_namespace(ns)
        lab.make_router(ns)
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
        ns = lab.gw_ns(lab.part_key(site.key, tunnel.key))
        router_ns = lab.gw_ns(lab.part_key(site.key, tunnel.router))
        lab.create_namespace(ns)
        lab.make_router(ns)
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
        lab.ns(gw, "sysctl", "-qw", f"net.ipv4.conf.o{index}.proxy_arp=1")
        lab.ns(ns, "sysctl", "-qw", "net.ipv4.conf.in.accept_local=1")
        # What the router sends is for the tunnel (table TUNNEL_TABLE gets ipsec0 once charon made it); everything
        # else the namespace handles (IKE, decrypted packets) follows its main table, never charon's table 220.
        run("ip", "-n", ns, "rule", "add", "pref", "100", "iif", "in", "lookup", str(TUNNEL_TABLE))
        run("ip", "-n", ns, "rule", "add", "pref", "110", "lookup", "main")
        table = str(DEMUX_TABLE_BASE + index)
        run("ip", "-n", gw, "rule", "add", "pref", table, "from", tunnel.peer_address, "to", tunnel.local_address, "iif", "wan", "lookup", table)
    route_cloud(lab, site, cloud)


def route_cloud(lab: Lab, site: LabSite, cloud: CloudNetwork) -> None:
    """Every route of a cloud's namespaces, installed or put back (a link taken down took its routes with it)."""
    gw = lab.gw_ns(site.key)
    address = {SITE: str(site.lan.ip)}
    device: dict[str, dict[str, str]] = {SITE: {}}  # per router: its device toward each neighbour's key
    for index, router in enumerate(cloud.routers):
        run("ip", "-n", gw, "route", "replace", f"{router.address}/32", "dev", f"g{index}")
        address[router.key] = router.address
        device[SITE][router.key] = f"g{index}"
        device[router.key] = {SITE: "up"}
    for index, tunnel in enumerate(cloud.tunnels):
        ns = lab.gw_ns(lab.part_key(site.key, tunnel.key))
        run("ip", "-n", ns, "route", "replace", f"{tunnel.peer_address}/32", "dev", "wan")
        run("ip", "-n", ns, "route", "replace", "default", "via", address[tunnel.router], "dev", "in", "onlink")
        run("ip", "-n", lab.gw_ns(lab.part_key(site.key, tunnel.router)), "route", "replace", f"{tunnel.address}/32", "dev", tunnel_device(index))
        run("ip", "-n", gw, "route", "replace", f"{tunnel.local_address}/32", "dev", f"o{index}", "table", str(DEMUX_TABLE_BASE + index))
        address[tunnel.key] = tunnel.address
        device.setdefault(tunnel.router, {})[tunnel.key] = tunnel_device(index)
    for route in cloud.routes:
        hops = [("nexthop", "via", address[v], "dev", device[route.router][v], "onlink") for v in route.via]
        spec = hops[0][1:] if len(hops) == 1 else tuple(word for hop in hops for word in hop)
        ns = lab.gw_ns(lab.part_key(site.key, route.router))
        # What the router itself sends (an ICMP error) leaves from its own address, inside the tunnels' selectors.
        run("ip", "-n", ns, "route", "replace", route.prefix, "metric", str(route.metric), "src", address[route.router], *spec)


# -- a cloud's gateway instance ------------------------------------------------


def set_router(lab: Lab, site: str, router: str, up: bool) -> None:
    """Take a cloud router (an Azure gateway instance) off its links, or put it back: its link to the site
    namespace and its tunnels' outer sides. Its daemons are the caller's (:func:`start_cloud`)."""
    cloud = lab.sites[site].cloud
    assert cloud is not None
    state = "up" if up else "down"
    (lab.failed.discard if up else lab.failed.add)(lab.part_key(site, router))
    run("ip", "-n", lab.gw_ns(lab.part_key(site, router)), "link", "set", "dev", "up", state)
    for tunnel in cloud.tunnels_of(router):
        run("ip", "-n", lab.gw_ns(lab.part_key(site, tunnel.key)), "link", "set", "dev", "wan", state)
    if up:
        route_cloud(lab, lab.sites[site], cloud)


def start_cloud(lab: Lab, site: str, router: str | None = None) -> None:
    """Start a cloud's tunnels' charons, then its BGP speakers (only ``router``'s with a router key)."""
    cloud = lab.sites[site].cloud
    assert cloud is not None
    for tunnel in cloud.tunnels:
        if router is None or tunnel.router == router:
            lab.start_charon(lab.part_key(site, tunnel.key), tunnel.swanctl)
    for bird in cloud.birds:
        if router is None or bird.router == router:
            lab.start_bird(lab.part_key(site, bird.router), bird.conf)
