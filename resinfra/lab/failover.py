"""A cloud's gateway instance dying in a running lab: who carries traffic, which pairs of sites are apart, how long for.

Shared by ``tests/lab/test_lab_prod.py`` and ``bench/lab.py``.
"""

from __future__ import annotations

import itertools
import re

from resinfra.addressing import Role
from resinfra.lab.actions import set_instance
from resinfra.lab.observe import ping, tunnel_report
from resinfra.lab.paths import BURST_BYTES, PathEvidence, burst, pair_path, sa_bytes
from resinfra.lab.preconditions import root_of
from resinfra.lab.state import LabState, MachineRecord, load
from resinfra.netlab import LabError, wait_for

_INSTANCE = re.compile(r"-vpn-gw(\d+)-")


def machines(lab: LabState) -> list[str]:
    """Every machine but the gateway VMs (they are their sites' gateways)."""
    return sorted(m.name for m in lab.machines.values() if m.role is not Role.GATEWAY)


def apart(lab: LabState) -> list[tuple[str, str]]:
    """The pairs of machines of different sites that do not reach each other."""
    pairs = itertools.permutations(machines(lab), 2)
    return [(a, b) for a, b in pairs if lab.machines[a].site != lab.machines[b].site and not ping(lab, a, b, timeout=0.5)]


def first_workers(lab: LabState) -> dict[str, MachineRecord]:
    """Each site's first worker."""
    workers = sorted((m for m in lab.machines.values() if m.role is Role.WORKER), key=lambda m: m.name, reverse=True)
    return {m.site: m for m in workers}


def own_tunnels(lab: LabState) -> dict[tuple[str, str], PathEvidence]:
    """The path evidence between the first workers of every two sites."""
    netlab = lab.netlab()
    first = first_workers(lab)
    return {(a, b): pair_path(netlab, a, b, first[a].namespace, first[b].private_ip, BURST_BYTES) for a, b in itertools.combinations(sorted(first), 2)}


def carrying(lab: LabState, site: str) -> dict[int, set[str]]:
    """Which of ``site``'s gateway instances receives each other site's traffic now: a burst from that site's first
    worker, and the instance whose tunnel's SAs counted it coming in (the answers may leave through another)."""
    netlab = lab.netlab()
    first = first_workers(lab)
    cloud = lab.site(site).cloud
    instance = {}
    for tunnel in cloud.tunnels if cloud is not None else ():
        match = _INSTANCE.search(f"-{tunnel.key}-")
        if match:
            instance[netlab.part_key(site, tunnel.key)] = int(match.group(1))
    out: dict[int, set[str]] = {i: set() for i in sorted(set(instance.values()))}
    for other in sorted(first):
        if other == site:
            continue
        before = sa_bytes(netlab, instance)
        burst(netlab, first[other].namespace, first[site].private_ip)
        for pair, (bytes_in, _) in sa_bytes(netlab, instance).items():
            if bytes_in - before.get(pair, (0, 0))[0] >= BURST_BYTES:
                out[instance[pair[0]]].add(other)
    return out


def tunnels_up(lab: LabState) -> bool:
    return all(all(c.values()) for c in tunnel_report(lab.netlab()).values())


def make_carrier(name: str, site: str, instance: int, timeout: float, senders: set[str], tries: int = 3) -> dict[int, set[str]]:
    """Restart an instance until ``senders`` send to it (a strongSwan gateway sends through its newest tunnel to the site:
    libipsec's policy order), every tunnel up and every pair reachable; returns who sends to which instance."""
    found: dict[int, set[str]] = {}
    for _ in range(tries):
        set_instance(name, site, instance, alive_=False)
        set_instance(name, site, instance, alive_=True)
        wait_for(lambda: tunnels_up(load(root_of(name))) and not apart(load(root_of(name))), timeout, "every tunnel up and every pair reachable")
        found = carrying(load(root_of(name)), site)
        if senders <= found[instance]:
            return found
    raise LabError(f"{sorted(senders)} do not send to {site}'s instance {instance} after {tries} restarts: {found}")


def fail_instance(name: str, site: str, instance: int, timeout: float) -> float:
    """Kill ``site``'s gateway instance ``instance``; the seconds until every pair of sites reaches each other again."""
    set_instance(name, site, instance, alive_=False)
    return wait_for(lambda: not apart(load(root_of(name))), timeout, f"every pair reachable with {site}'s instance {instance} dead", interval=0.5)
