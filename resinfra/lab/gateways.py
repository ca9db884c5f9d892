"""Every site's gateway as the lab runs it: the strongSwan VMs' rendered swanctl.conf, the clouds emulated from what
the program hands them (:mod:`resinfra.lab.clouds`)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resinfra.addressing import SiteAddresses
from resinfra.lab.changes import with_lab_bgp_timers
from resinfra.lab.clouds import EmulatedCloud, emulate
from resinfra.lab.pairs import network_lan, pair_network
from resinfra.netlab import Lab, LabError
from resinfra.netlab.cloud_network import start_cloud
from resinfra.netlab.topology import LabSite, PairNetwork

if TYPE_CHECKING:
    from resinfra.offline import OfflineRun


@dataclass(frozen=True)
class MeshGateway:
    """A site's gateway in the lab: a strongSwan VM (its rendered swanctl.conf) or an emulated cloud (in ``lab_site``)."""

    site: str
    lab_site: LabSite
    swanctl: str = ""


def read_descriptions(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Descriptions from the JSON files ``resinfra render`` wrote."""
    return [json.loads(path.read_text()) for path in sorted(paths)]


def mesh_gateways(
    plan: Mapping[str, SiteAddresses],
    strongswan: Mapping[str, tuple[str, str]],
    clouds: Mapping[str, EmulatedCloud],
    nodes_per_site: int = 1,
    pairs: Mapping[str, PairNetwork] | None = None,
) -> list[MeshGateway]:
    """Every site's gateway and first nodes, ready for :class:`resinfra.netlab.Lab`.

    + plan: the address plan by site name
    + strongswan: for strongSwan sites, (public address, rendered swanctl.conf) by site name
    + clouds: the emulated clouds by site name
    + pairs: for gateway pairs, their members by site name (:func:`resinfra.lab.pairs.pair_network`)
    """
    gateways = []
    for name, addresses in plan.items():
        prefix = addresses.subnet.prefixlen
        nodes = tuple(ipaddress.IPv4Interface(f"{w.private_ip}/{prefix}") for w in addresses.workers[:nodes_per_site])
        if pairs and name in pairs:
            gateways.append(MeshGateway(name, LabSite(name, (), network_lan(addresses), nodes, pair=pairs[name])))
            continue
        if name in strongswan:
            assert addresses.gateway_vm is not None
            public, text = strongswan[name]
            lan = ipaddress.IPv4Interface(f"{addresses.gateway_vm.private_ip}/{prefix}")
            gateways.append(MeshGateway(name, LabSite(name, (public,), lan, nodes), text))
            continue
        cloud = clouds[name]
        gateways.append(MeshGateway(name, LabSite(name, cloud.public_ips, cloud.lan, nodes, cloud=cloud.network)))
    public = [ip for g in gateways for ip in g.lab_site.public_ips]
    public += [m.public_ip for g in gateways if g.lab_site.pair for m in g.lab_site.pair.members]
    clashes = sorted({ip for ip in public if public.count(ip) > 1})
    if clashes:
        raise LabError(f"two sites share public addresses {clashes}: the lab's underlay needs each once (see resinfra/lab/changes.py)")
    return gateways


def run_gateways(run: OfflineRun, nodes_per_site: int = 1) -> list[MeshGateway]:
    """Every site's gateway from an offline run's rendered files: each strongSwan gateway VM's swanctl.conf and public
    address, and the clouds emulated from their descriptions (what ``resinfra render`` writes)."""
    strongswan = {}
    for name, addresses in run.result.plan.items():
        if addresses.gateway_vm is not None:
            # A stack of one site has no links: its gateway VM gets no swanctl.conf, and its charon loads nothing.
            text = next((f.content for f in run.files if f.purpose == "swanctl" and f.machine == addresses.gateway_vm.name), "")
            strongswan[name] = (run.outputs["sites"][name]["gateway"]["publicIps"][0], text)
    descriptions = with_lab_bgp_timers([json.loads(f.content) for f in run.files if f.purpose == "managed-ipsec"])
    clouds = emulate(descriptions, run.result.plan)
    pairs = {name: pair_network(run, name) for name, addresses in run.result.plan.items() if addresses.pair is not None}
    return mesh_gateways(run.result.plan, strongswan, clouds, nodes_per_site, pairs)


def start_mesh(lab: Lab, gateways: Sequence[MeshGateway]) -> None:
    """Build the lab and start every gateway."""
    lab.build(g.lab_site for g in gateways)
    start_gateways(lab, gateways)


def start_gateways(lab: Lab, gateways: Sequence[MeshGateway]) -> None:
    """Start every strongSwan gateway's charon and every cloud's tunnels and BGP speakers (the lab is built)."""
    for gateway in gateways:
        if gateway.lab_site.cloud is None and gateway.lab_site.pair is None:
            lab.start_charon(gateway.site, gateway.swanctl)
    for gateway in gateways:
        if gateway.lab_site.cloud is not None:
            start_cloud(lab, gateway.site)
