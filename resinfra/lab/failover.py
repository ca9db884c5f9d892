"""A cloud's gateway instance dying in a running lab: who carries traffic, which pairs of sites are apart, how long for.

Shared by ``tests/lab/test_lab_prod.py`` and ``bench/lab.py``.
"""

from __future__ import annotations

import itertools
import re

from resinfra.addressing import Role
from resinfra.lab.cluster import load, ping, root_of, set_instance, tunnel_report
from resinfra.lab.paths import PathEvidence, pair_path
from resinfra.lab.state import LabState, MachineRecord
from resinfra.netlab import wait_for

BURST = 200 * 1200
"""Bytes a burst of pings puts on a tunnel: far above the scrapes and probes crossing it meanwhile (about 10 kB/s)."""
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
    return {(a, b): pair_path(netlab, a, b, first[a].namespace, first[b].private_ip, BURST) for a, b in itertools.combinations(sorted(first), 2)}


def carrying(lab: LabState, site: str) -> dict[int, set[str]]:
    """Which of ``site``'s gateway instances carries each other site's traffic to it now: a burst from that site's first
    worker, and the instance whose tunnel's SAs counted it."""
    netlab = lab.netlab()
    first = first_workers(lab)
    record = lab.site(site)
    out: dict[int, set[str]] = {i: set() for i in range(len(record.cloud.routers) if record.cloud else 0)}
    for other in sorted(first):
        if other == site:
            continue
        evidence = pair_path(netlab, other, site, first[other].namespace, first[site].private_ip, BURST)
        for key, _ in evidence.counted:
            match = _INSTANCE.search(f"-{key}-")
            if match and key.startswith(f"{site}-"):
                out[int(match.group(1))].add(other)
    return out


def tunnels_up(lab: LabState) -> bool:
    return all(all(c.values()) for c in tunnel_report(lab.netlab()).values())


def make_carrier(name: str, site: str, instance: int, timeout: float) -> None:
    """Restart an instance so the strongSwan gateways send to it (their newest tunnel to the site wins: libipsec's policy
    order), and wait until every tunnel is up and every pair reachable."""
    set_instance(name, site, instance, alive_=False)
    set_instance(name, site, instance, alive_=True)
    wait_for(lambda: tunnels_up(load(root_of(name))) and not apart(load(root_of(name))), timeout, "every tunnel up and every pair reachable")


def fail_instance(name: str, site: str, instance: int, timeout: float) -> float:
    """Kill ``site``'s gateway instance ``instance``; the seconds until every pair of sites reaches each other again."""
    set_instance(name, site, instance, alive_=False)
    return wait_for(lambda: not apart(load(root_of(name))), timeout, f"every pair reachable with {site}'s instance {instance} dead", interval=0.5)
