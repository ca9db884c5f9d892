"""GCP as the lab plays it: Cloud VPN tunnels (Classic and HA), the VPC's route table and the Cloud Router.

Built from the settings the program hands GCP (the GCP ends' descriptions) and from GCP's
documentation, never from what the program expects to happen:

- A Classic VPN tunnel's ``peer_ip`` in a reserved range is refused (terraform-provider-google
  ``google/services/compute/resource_compute_vpn_tunnel.go``, ``validatePeerAddr``: RFC 5735 ranges).
- HA VPN tunnels negotiate any-to-any traffic selectors; Classic VPN tunnels with static routing
  negotiate the selectors they were given (cloud.google.com/network-connectivity/docs/vpn/concepts/
  choosing-networks-routing, "Traffic selectors").
- The VPC picks a route by the most specific destination, then by priority, lowest first; routes
  equal in both share the traffic (ECMP) (cloud.google.com/vpc/docs/routes, "Routing order").
  The site namespace's kernel table is that table: a static route's metric is twice its declared
  priority, a learned route's twice its priority plus one, so at equal priority the static route
  is chosen (our reading of "Routing order"; see :data:`DYNAMIC_TIE_OFFSET`).
- A learned route's priority is the MED the peer sent (its base priority, in the Cloud Router's
  own region) (cloud.google.com/network-connectivity/docs/router/concepts/learned-routes); a
  route without MED counts as MED 0, as BGP reads a missing MED (RFC 4271, 9.1.2.2 c).
- In DEFAULT advertisement mode the Cloud Router announces the VPC's subnets (with regional
  dynamic routing, those of its region); in CUSTOM mode the groups and ranges it was given
  (ALL_SUBNETS: the subnets). It sends its advertised route priority as MED, 100 unless set
  (cloud.google.com/network-connectivity/docs/router/concepts/overview, "Advertisement modes",
  "Advertised route priority").
- BGP keepalive every 20 s unless ``keepaliveIntervalSeconds`` says otherwise, hold time three
  keepalives (same page, "BGP timers").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from resinfra.addressing import SiteAddresses
from resinfra.cloud_rules import GCP_REFUSED_PEER_RANGES
from resinfra.lab.clouds import ANY, CloudRefusal, EmulatedCloud, crypto_of, inner_addresses, lan_of, one_tunnel, take
from resinfra.netlab.topology import SITE, CloudBird, CloudNetwork, CloudRoute, CloudTunnel, tunnel_device
from resinfra.render.bird import BirdSession, BirdSpeaker, render_bird

RESERVED_PEER_RANGES = tuple(r.network for r in GCP_REFUSED_PEER_RANGES)
"""``invalidPeerAddrs`` of terraform-provider-google's ``resource_compute_vpn_tunnel.go`` (255.255.255.255 is in 240/4):
the one list, kept with its source in ``cloud_rules``, that GCP's API applies."""
DEFAULT_KEEPALIVE_SECONDS = 20
HOLD_KEEPALIVES = 3
DEFAULT_ADVERTISED_PRIORITY = 100
STATIC_METRIC_PER_PRIORITY = 2
DYNAMIC_TIE_OFFSET = 1
"""A learned route's metric is one above a static route's of the same priority: the static route wins the tie."""


def refused_peer(address: str) -> ipaddress.IPv4Network | None:
    """The reserved range GCP refuses ``address`` as a tunnel's peer for, or None."""
    ip = ipaddress.IPv4Address(address)
    return next((net for net in RESERVED_PEER_RANGES if ip in net), None)


def tunnel_key(description: Mapping[str, Any], tunnel: Mapping[str, Any]) -> str:
    """``vpn-<peer site>-<tunnel index>``: the tunnel's namespace ``<lab>-<site>-vpn-...``."""
    return f"vpn-{description['peerSite']}-{tunnel['index']}"


def emulate_gcp(site: str, descriptions: Sequence[Mapping[str, Any]], addresses: SiteAddresses) -> EmulatedCloud:
    """The GCP site ``site``: one namespace per VPN tunnel, the VPC's table in the site namespace, the Cloud Router."""
    pool = inner_addresses(addresses)
    tunnels: list[CloudTunnel] = []
    routes: list[CloudRoute] = []
    sessions: list[BirdSession] = []
    public: list[str] = []
    router: Mapping[str, Any] | None = None
    subnets: list[str] = []
    for description in descriptions:
        gateway = description["gateway"]
        subnets = list(description["subnets"])
        policy = crypto_of(description)
        ha = gateway["type"] == "HA_VPN"
        public += [i["ipAddress"] for i in gateway["interfaces"]] if ha else [gateway["ipAddress"]]
        keys = {}
        for tunnel in description["tunnels"]:
            if ha:
                local = next(i["ipAddress"] for i in gateway["interfaces"] if i["id"] == tunnel["gatewayInterface"])
                local_ts, remote_ts = [ANY], [ANY]
            else:
                local = gateway["ipAddress"]
                local_ts, remote_ts = tunnel["localTrafficSelectors"], tunnel["remoteTrafficSelectors"]
                refused = refused_peer(tunnel["peerAddress"])
                if refused is not None:
                    raise CloudRefusal(
                        f"GCP refuses the VPN tunnel of {description['link']} ({site} to {description['peerSite']}): peer_ip "
                        f"{tunnel['peerAddress']} is in the reserved range {refused} (validatePeerAddr). Give the peer a "
                        "routable public address."
                    )
            key = keys[tunnel["index"]] = tunnel_key(description, tunnel)
            name = f"{description['link']}-{tunnel['index']}"
            swanctl = one_tunnel(name, local, tunnel["peerAddress"], tunnel["psk"], local_ts, remote_ts, policy)
            tunnels.append(CloudTunnel(key, SITE, description["peerSite"], local, tunnel["peerAddress"], take(pool, site), swanctl))
            if tunnel["bgp"] is not None:
                router = cloud_router = description["cloudRouter"]
                bgp = tunnel["bgp"]
                inner = tunnels[-1].address, tunnel_device(len(tunnels) - 1)
                sessions.append(BirdSession(key.replace("-", "_"), bgp["localAddress"], cloud_router["asn"], bgp["peerAddress"], bgp["peerAsn"], *inner))
        for route in description.get("routes", []):
            metric = STATIC_METRIC_PER_PRIORITY * int(route["priority"])
            routes.append(CloudRoute(SITE, route["destRange"], (keys[route["nextHopTunnel"]],), metric))
    birds, loopbacks = _cloud_router(router, sessions, subnets)
    network = CloudNetwork(routers=(), tunnels=tuple(tunnels), routes=_merge_equal(routes), birds=birds, loopbacks=loopbacks)
    return EmulatedCloud(site, tuple(dict.fromkeys(public)), lan_of(addresses), network)


def _merge_equal(routes: list[CloudRoute]) -> tuple[CloudRoute, ...]:
    """Static routes of equal destination and priority become one route over all their tunnels (ECMP)."""
    merged: dict[tuple[str, str, int], tuple[str, ...]] = {}
    for route in routes:
        key = (route.router, route.prefix, route.metric)
        merged[key] = merged.get(key, ()) + route.via
    return tuple(CloudRoute(router, prefix, via, metric) for (router, prefix, metric), via in merged.items())


def _cloud_router(router: Mapping[str, Any] | None, sessions: list[BirdSession], subnets: list[str]) -> tuple[tuple[CloudBird, ...], tuple[str, ...]]:
    """The Cloud Router's bird (in the site namespace, where the VPC's table is) and its BGP addresses."""
    if router is None:
        return (), ()
    mode = router["advertiseMode"]
    if mode == "DEFAULT":
        announce = list(subnets)
    else:
        announce = (list(subnets) if "ALL_SUBNETS" in router["advertisedGroups"] else []) + [r["range"] for r in router["advertisedIpRanges"]]
    keepalive = int(router.get("keepaliveIntervalSeconds") or DEFAULT_KEEPALIVE_SECONDS)
    speaker = BirdSpeaker(
        router_id=sessions[0].local_address,
        sessions=tuple(sessions),
        announce=tuple(announce),
        hold_seconds=HOLD_KEEPALIVES * keepalive,
        keepalive_seconds=keepalive,
        announce_med=DEFAULT_ADVERTISED_PRIORITY,
        metric_base=DYNAMIC_TIE_OFFSET,
        metric_per_med=STATIC_METRIC_PER_PRIORITY,
    )
    return (CloudBird(SITE, render_bird(speaker)),), tuple(dict.fromkeys(s.local_address for s in sessions))
