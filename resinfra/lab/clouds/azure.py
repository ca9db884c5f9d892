"""Azure as the lab plays it: a VNet gateway (one or two instances), its connections, its BGP speakers, the VNet.

Built from the settings the program hands Azure (the Azure ends' descriptions: the gateway,
its connections and their local network gateways) and from Microsoft's documentation:

- Active-active: each instance has its own public address and brings up its own tunnel for every
  connection, to the connection's local network gateway address, with the connection's key; the
  VNet sends its traffic to both instances at once, and when one fails the other carries
  everything (learn.microsoft.com/azure/vpn-gateway/about-active-active-gateways and
  .../vpn-gateway-highlyavailable: "routed through both tunnels simultaneously"). In the lab the
  VNet's route is an equal-cost route over the instances that skips a failed instance's link.
- With ``usePolicyBasedTrafficSelectors`` a connection proposes the combinations of the VNet's
  prefixes and the local network gateway's prefixes; otherwise any-to-any
  (learn.microsoft.com/azure/vpn-gateway/vpn-gateway-connect-multiple-policybased-rm-ps).
- An instance routes a local network gateway's prefixes into that connection's tunnel and what
  BGP taught it into the tunnel of the session it came over; the VNet's prefixes into the VNet.
- BGP: it advertises the VNet's address space, the address prefixes of every local network
  gateway connected to it (static connections' too; they cannot be filtered) and what it learned
  from its other BGP peers (it transits between them); it rejects learned routes identical to a
  VNet prefix (learn.microsoft.com/azure/vpn-gateway/vpn-gateway-bgp-overview and the VPN Gateway
  FAQ, "BGP and routing"). Each instance speaks from its own custom APIPA address on each
  connection (``gatewayCustomBgpIpAddresses``). Keepalive 60 s, hold time 180 s, not lowered by
  the peer's wish (VPN Gateway FAQ, "BGP timers"). Azure documents no MED for what it
  advertises: none is sent; its AS number leads the AS path, as eBGP does.

Not documented, so chosen and said: a local network gateway's prefix and a learned route of the
same length: the local network gateway's wins (:data:`STATIC_METRIC` below :data:`LEARNED_METRIC`);
the instances do not exchange routes with each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from resinfra.addressing import SiteAddresses
from resinfra.lab.clouds import ANY, EmulatedCloud, crypto_of, inner_addresses, lan_of, one_tunnel, take
from resinfra.netlab.topology import SITE, CloudBird, CloudNetwork, CloudRoute, CloudRouter, CloudTunnel, tunnel_device
from resinfra.render.bird import BirdSession, BirdSpeaker, render_bird

KEEPALIVE_SECONDS = 60
HOLD_SECONDS = 180
STATIC_METRIC = 10
LEARNED_METRIC = 20


def instance_key(index: int) -> str:
    """``vpn-gw<i>``: instance i's namespace ``<lab>-<site>-vpn-gw<i>``."""
    return f"vpn-gw{index}"


def tunnel_key(instance: int, description: Mapping[str, Any], connection: Mapping[str, Any]) -> str:
    return f"{instance_key(instance)}-{description['peerSite']}-{connection['index']}"


def emulate_azure(site: str, descriptions: Sequence[Mapping[str, Any]], addresses: SiteAddresses) -> EmulatedCloud:
    """The Azure site ``site``: the VNet in the site namespace, a namespace per gateway instance, a namespace per
    (instance, connection) tunnel."""
    gateway = descriptions[0]["gateway"]
    vnet = tuple(gateway["vnetAddressSpace"])
    pool = inner_addresses(addresses)
    instances = sorted(gateway["instances"], key=lambda i: i["index"])
    routers = tuple(CloudRouter(instance_key(i["index"]), take(pool, site)) for i in instances)
    tunnels: list[CloudTunnel] = []
    routes = [CloudRoute(SITE, ANY, tuple(r.key for r in routers))]
    sessions: dict[int, list[BirdSession]] = {i["index"]: [] for i in instances}
    lng_prefixes: list[str] = []
    for description in descriptions:
        policy = crypto_of(description)
        expected = {(t["localAddress"], t["peerAddress"]) for t in description["tunnels"]}
        for connection in description["connections"]:
            lng = connection["localNetworkGateway"]
            lng_prefixes += lng["addressPrefixes"]
            local_ts, remote_ts = (vnet, lng["addressPrefixes"]) if connection["usePolicyBasedTrafficSelectors"] else ([ANY], [ANY])
            for instance in instances:
                i, local, peer = instance["index"], instance["publicAddress"], lng["gatewayIpAddress"]
                key = tunnel_key(i, description, connection)
                name = f"{description['link']}-conn{connection['index']}-inst{i}"
                swanctl = one_tunnel(name, local, peer, connection["psk"], local_ts, remote_ts, policy)
                tunnels.append(CloudTunnel(key, instance_key(i), description["peerSite"], local, peer, take(pool, site), swanctl, (local, peer) in expected))
                if lng["addressPrefixes"]:
                    routes += [CloudRoute(instance_key(i), prefix, (key,), STATIC_METRIC) for prefix in lng["addressPrefixes"]]
                own = next((a["address"] for a in connection["customBgpAddresses"] if a["instance"] == i), None)
                if connection["enableBgp"] and lng["bgp"] is not None and own is not None:
                    inner = tunnels[-1].address, tunnel_device(len(tunnels) - 1)
                    sessions[i].append(BirdSession(key.replace("-", "_"), own, gateway["asn"], lng["bgp"]["peeringAddress"], lng["bgp"]["asn"], *inner))
    routes += [CloudRoute(r.key, prefix, (SITE,)) for r in routers for prefix in vnet]
    birds = []
    for router, instance in zip(routers, instances, strict=True):
        own_sessions = sessions[instance["index"]]
        if not own_sessions:
            continue
        speaker = BirdSpeaker(
            router_id=own_sessions[0].local_address,
            sessions=tuple(own_sessions),
            announce=tuple(dict.fromkeys((*vnet, *lng_prefixes))),
            hold_seconds=HOLD_SECONDS,
            keepalive_seconds=KEEPALIVE_SECONDS,
            transit=True,
            reject=vnet,
            metric_base=LEARNED_METRIC,
        )
        birds.append(CloudBird(router.key, render_bird(speaker)))
    with_loopbacks = tuple(
        CloudRouter(r.key, r.address, tuple(dict.fromkeys(s.local_address for s in sessions[i["index"]]))) for r, i in zip(routers, instances, strict=True)
    )
    network = CloudNetwork(routers=with_loopbacks, tunnels=tuple(tunnels), routes=tuple(routes), birds=tuple(birds), multipath_linkdown=True)
    public = tuple(i["publicAddress"] for i in instances)
    return EmulatedCloud(site, public, lan_of(addresses), network)
