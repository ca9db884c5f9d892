"""Managed gateways (Azure, GCP) emulated by strongSwan and bird2, configured only from the
descriptions of what the program hands the clouds (``describe.py``'s JSON files).

Userspace ESP cannot carry route-based any-to-any tunnels next to the policy-based ones, so
a BGP link's emulation narrows its selectors to what each side announces (the prefixes BGP
would route into the tunnel) and adds a CHILD_SA between the two APIPA addresses for the
session itself. Everything else (peer address, PSK, proposals, ASNs, BGP addresses, static
selectors) is taken as handed over.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resinfra.addressing import SiteAddresses
from resinfra.mesh import crypto
from resinfra.netlab import Lab, LabSite
from resinfra.render.bird import BirdSession, render_bird
from resinfra.render.swanctl import SwanChild, SwanConnection, render_swanctl

if TYPE_CHECKING:
    from resinfra.offline import OfflineRun

MANAGED_LAN_HOST = 1
"""The emulated cloud router's address in the site subnet (both clouds use the first host)."""


@dataclass(frozen=True)
class EmulatedGateway:
    """One managed gateway, as strongSwan (and bird for BGP) will play it."""

    site: str
    public_ips: tuple[str, ...]
    swanctl: str
    bird: str | None
    loopbacks: tuple[str, ...]
    """Its APIPA BGP addresses."""
    bgp_peers: tuple[str, ...]


def crypto_of(description: Mapping[str, Any]) -> crypto.CryptoPolicy:
    """The suite the cloud negotiates with what it was handed."""
    if description["ikeVersion"] != crypto.IKE_VERSION:
        raise ValueError(f"{description['link']}: IKE version {description['ikeVersion']}")
    if description["cloud"] == "azure":
        return crypto.policy_from_azure(description["ipsecPolicy"])
    return crypto.policy_from_gcp(description["cipherSuite"])


def _peer_description(descriptions: Sequence[Mapping[str, Any]], description: Mapping[str, Any]) -> Mapping[str, Any]:
    for other in descriptions:
        if other["link"] == description["link"] and other["site"] == description["peerSite"]:
            return other
    raise ValueError(f"{description['link']}: BGP emulation needs {description['peerSite']}'s description too")


def emulate(descriptions: Sequence[Mapping[str, Any]]) -> dict[str, EmulatedGateway]:
    """Emulated gateways by site name.

    + descriptions: every managed end's description (parsed JSON), all links
    """
    by_site: dict[str, list[Mapping[str, Any]]] = {}
    for description in descriptions:
        by_site.setdefault(description["site"], []).append(description)
    out = {}
    for site, own in sorted(by_site.items()):
        connections: list[SwanConnection] = []
        sessions: list[BirdSession] = []
        announce: set[str] = set()
        public: list[str] = []
        loopbacks: list[str] = []
        peers: list[str] = []
        for description in own:
            policy = crypto_of(description)
            for tunnel in description["tunnels"]:
                public.append(tunnel["localAddress"])
                children = []
                if description["routing"] == "bgp":
                    bgp = tunnel["bgp"]
                    announce.update(description["advertises"])
                    remote = _peer_description(descriptions, description)["advertises"]
                    children.append(SwanChild("net", tuple(description["advertises"]), tuple(remote)))
                    children.append(SwanChild("bgp", (f"{bgp['localAddress']}/32",), (f"{bgp['peerAddress']}/32",)))
                    loopbacks.append(bgp["localAddress"])
                    peers.append(bgp["peerAddress"])
                    sessions.append(
                        BirdSession(
                            f"{description['link']}_{tunnel['index']}".replace("-", "_"),
                            bgp["localAddress"],
                            bgp["localAsn"],
                            bgp["peerAddress"],
                            bgp["peerAsn"],
                        )
                    )
                else:
                    children.append(SwanChild("net", tuple(tunnel["localTrafficSelectors"]), tuple(tunnel["remoteTrafficSelectors"])))
                connections.append(
                    SwanConnection(
                        name=f"{description['link']}-{tunnel['index']}",
                        local_address=tunnel["localAddress"],
                        remote_address=tunnel["peerAddress"],
                        psk=tunnel["psk"],
                        children=tuple(children),
                        ike_proposal=policy.ike_proposal,
                        esp_proposal=policy.esp_proposal,
                    )
                )
        bird = render_bird(loopbacks[0], sessions, sorted(announce)) if sessions else None
        out[site] = EmulatedGateway(
            site=site,
            public_ips=tuple(dict.fromkeys(public)),
            swanctl=render_swanctl(connections),
            bird=bird,
            loopbacks=tuple(dict.fromkeys(loopbacks)),
            bgp_peers=tuple(dict.fromkeys(peers)),
        )
    return out


def read_descriptions(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Descriptions from the JSON files ``resinfra render`` wrote."""
    return [json.loads(path.read_text()) for path in sorted(paths)]


@dataclass(frozen=True)
class MeshGateway:
    """A site's gateway in the lab: rendered by the program (strongSwan) or emulated."""

    site: str
    lab_site: LabSite
    swanctl: str
    bird: str | None = None


def mesh_gateways(
    plan: Mapping[str, SiteAddresses],
    strongswan: Mapping[str, tuple[str, str]],
    emulated: Mapping[str, EmulatedGateway],
    nodes_per_site: int = 1,
) -> list[MeshGateway]:
    """Every site's gateway and first nodes, ready for :class:`resinfra.netlab.Lab`.

    + plan: the address plan by site name
    + strongswan: for strongSwan sites, (public address, rendered swanctl.conf) by site name
    + emulated: the emulated managed gateways by site name
    """
    gateways = []
    for name, addresses in plan.items():
        prefix = addresses.subnet.prefixlen
        nodes = tuple(ipaddress.IPv4Interface(f"{w.private_ip}/{prefix}") for w in addresses.workers[:nodes_per_site])
        if name in strongswan:
            assert addresses.gateway_vm is not None
            public, text = strongswan[name]
            lan = ipaddress.IPv4Interface(f"{addresses.gateway_vm.private_ip}/{prefix}")
            gateways.append(MeshGateway(name, LabSite(name, (public,), lan, nodes), text))
            continue
        emu = emulated[name]
        lan = ipaddress.IPv4Interface(f"{addresses.subnet.network_address + MANAGED_LAN_HOST}/{prefix}")
        lab_site = LabSite(name, emu.public_ips, lan, nodes, loopbacks=emu.loopbacks, bgp_peers=emu.bgp_peers)
        gateways.append(MeshGateway(name, lab_site, emu.swanctl, emu.bird))
    return gateways


def run_gateways(run: OfflineRun, nodes_per_site: int = 1) -> list[MeshGateway]:
    """Every site's gateway from an offline run's rendered files: each strongSwan gateway VM's swanctl.conf and public
    address, and the managed ends emulated from their descriptions (what ``resinfra render`` writes)."""
    strongswan = {}
    for name, addresses in run.result.plan.items():
        if addresses.gateway_vm is not None:
            # A stack of one site has no links: its gateway VM gets no swanctl.conf, and its charon loads nothing.
            text = next((f.content for f in run.files if f.purpose == "swanctl" and f.machine == addresses.gateway_vm.name), "")
            strongswan[name] = (run.outputs["sites"][name]["gateway"]["publicIps"][0], text)
    emulated = emulate([json.loads(f.content) for f in run.files if f.purpose == "managed-ipsec"])
    return mesh_gateways(run.result.plan, strongswan, emulated, nodes_per_site)


def start_mesh(lab: Lab, gateways: Sequence[MeshGateway]) -> None:
    """Build the lab and start every gateway's charon, then bird where BGP runs."""
    lab.build(g.lab_site for g in gateways)
    start_gateways(lab, gateways)


def start_gateways(lab: Lab, gateways: Sequence[MeshGateway]) -> None:
    """Start every gateway's charon, then bird where BGP runs (the lab is built)."""
    for gateway in gateways:
        lab.start_charon(gateway.site, gateway.swanctl)
    for gateway in gateways:
        if gateway.bird is not None:
            lab.start_bird(gateway.site, gateway.bird)
