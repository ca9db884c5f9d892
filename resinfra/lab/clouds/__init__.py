"""Azure's and GCP's VPN gateways as the lab plays them: built from the resource settings the program hands each
cloud (``resinfra render``'s ``<prefix>-<site>-vpn-gw/<link>.json``), behaving as the cloud documents.

One module per cloud (:mod:`.azure`, :mod:`.gcp`); each behaviour cites its source there. What
they produce is a :class:`resinfra.netlab.topology.CloudNetwork`: a namespace and a charon per tunnel,
routers with the cloud's route table, bird2 where the cloud speaks BGP.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resinfra.addressing import SiteAddresses
from resinfra.mesh import crypto
from resinfra.netlab import LabError
from resinfra.netlab.topology import CloudNetwork
from resinfra.render.swanctl import SwanChild, SwanConnection, render_swanctl

CLOUD_LAN_HOST = 1
"""The cloud's router in the site subnet: both clouds answer on the subnet's first host (Azure reserves .1 for the
default gateway, GCP's subnet gateway is .1)."""
ANY = "0.0.0.0/0"


class CloudRefusal(LabError):
    """What the emulated cloud's API refuses, as the real one would (the lab stops before building anything)."""


@dataclass(frozen=True)
class EmulatedCloud:
    """A cloud site as the lab runs it."""

    site: str
    public_ips: tuple[str, ...]
    lan: ipaddress.IPv4Interface
    network: CloudNetwork


def crypto_of(description: Mapping[str, Any]) -> crypto.CryptoPolicy:
    """The suite the cloud negotiates with what it was handed."""
    if description["ikeVersion"] != crypto.IKE_VERSION:
        raise CloudRefusal(f"{description['link']}: IKE version {description['ikeVersion']}")
    if description["cloud"] == "azure":
        return crypto.policy_from_azure(description["ipsecPolicy"])
    return crypto.policy_from_gcp(description["cipherSuite"])


def one_tunnel(name: str, local: str, peer: str, psk: str, local_ts: Sequence[str], remote_ts: Sequence[str], policy: crypto.CryptoPolicy) -> str:
    """swanctl.conf of a tunnel namespace: the one connection its charon runs."""
    child = SwanChild("net", tuple(local_ts), tuple(remote_ts))
    return render_swanctl([SwanConnection(name, local, peer, psk, (child,), policy.ike_proposal, policy.esp_proposal)])


def inner_addresses(addresses: SiteAddresses) -> Iterator[str]:
    """Addresses for a cloud's routers and tunnels: the block's GatewaySubnet, past the four addresses Azure keeps
    (where Azure puts its gateway instances; unused on GCP). They must lie inside the block: a tunnel's charon needs a
    local address inside its local selector."""
    for host in list(addresses.gateway_subnet.hosts())[3:]:
        yield str(host)


def take(addresses: Iterator[str], site: str) -> str:
    try:
        return next(addresses)
    except StopIteration:
        raise LabError(f"{site}: more tunnels than the lab has addresses for in the GatewaySubnet") from None


def lan_of(addresses: SiteAddresses) -> ipaddress.IPv4Interface:
    return ipaddress.IPv4Interface(f"{addresses.subnet.network_address + CLOUD_LAN_HOST}/{addresses.subnet.prefixlen}")


def emulate(descriptions: Sequence[Mapping[str, Any]], plan: Mapping[str, SiteAddresses]) -> dict[str, EmulatedCloud]:
    """Every cloud site of the descriptions, by site name.

    + descriptions: every managed end's description (parsed JSON), all links
    + plan: the address plan by site name
    """
    from resinfra.lab.clouds import azure, gcp

    by_site: dict[str, list[Mapping[str, Any]]] = {}
    for description in descriptions:
        by_site.setdefault(description["site"], []).append(description)
    out = {}
    for site, own in sorted(by_site.items()):
        clouds = {d["cloud"] for d in own}
        if len(clouds) != 1:
            raise LabError(f"{site}: descriptions of several clouds: {sorted(clouds)}")
        build = azure.emulate_azure if clouds == {"azure"} else gcp.emulate_gcp
        out[site] = build(site, sorted(own, key=lambda d: d["link"]), plan[site])
    return out
