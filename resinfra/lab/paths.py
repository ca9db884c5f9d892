"""Which way a packet goes through the lab: the hops of a trace, and the byte counters of the tunnels' SAs.

A trace sends pings with growing TTL and reads who answers "time to live exceeded": every
gateway, cloud router and tunnel namespace forwards, so each shows up under an address of
its own namespace. A burst shows on the SA counters of the tunnels it crossed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from resinfra.netlab import Lab, run

_FROM = re.compile(r"From (\d+\.\d+\.\d+\.\d+)")
_REPLY = re.compile(r"bytes from (\d+\.\d+\.\d+\.\d+)")


@dataclass(frozen=True)
class Place:
    """A namespace of the lab's sites, as a hop of a trace."""

    namespace: str
    site: str
    toward: str | None = None
    """For a cloud's tunnel namespace: the site at its far end."""


@dataclass(frozen=True)
class Hop:
    address: str
    place: Place | None
    """Where ``address`` lives (None: no gateway, router or tunnel namespace; the target itself, or no answer)."""


def places(lab: Lab) -> dict[str, Place]:
    """Every address of the lab's gateway, router and tunnel namespaces, and where it lives."""
    spaces = [Place(lab.gw_ns(key), key) for key in lab.sites]
    for site in lab.sites.values():
        if site.cloud is not None:
            spaces += [Place(lab.gw_ns(lab.part_key(site.key, r.key)), site.key) for r in site.cloud.routers]
            spaces += [Place(lab.gw_ns(lab.part_key(site.key, t.key)), site.key, t.peer) for t in site.cloud.tunnels]
        if site.pair is not None:
            spaces += [Place(lab.gw_ns(m.key), site.key) for m in site.pair.members]
    found: dict[str, Place] = {}
    for place in spaces:
        for line in run("ip", "-n", place.namespace, "-o", "-4", "addr", "show", check=False).stdout.splitlines():
            match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", line)
            if match and not match.group(1).startswith("127."):
                found.setdefault(match.group(1), place)
    return found


def trace(lab: Lab, namespace: str, target: str, max_hops: int = 12, tries: int = 3) -> list[Hop]:
    """The hops from ``namespace`` to ``target``: who answers each TTL, up to the target itself (last). A hop that does
    not answer in ``tries`` is ``*``; the trace stops at the target or at ``max_hops``."""
    where = places(lab)
    hops = []
    for ttl in range(1, max_hops + 1):
        address = "*"
        for _ in range(tries):
            out = lab.ns(namespace, "ping", "-n", "-c", "1", "-W", "1", "-t", str(ttl), target, check=False).stdout
            match = _REPLY.search(out) or _FROM.search(out)
            if match:
                address = match.group(1)
                break
        hops.append(Hop(address, where.get(address)))
        if address == target:
            break
    return hops


def sa_bytes(lab: Lab, keys: Iterable[str] | None = None) -> dict[tuple[str, str], tuple[int, int]]:
    """(bytes in, bytes out) of every connection's installed CHILD_SAs (duplicates summed), by (charon key,
    connection)."""
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for key in lab.charon_keys() if keys is None else keys:
        for child in lab.child_sas(key):
            seen = totals.get((key, child["connection"]), (0, 0))
            totals[key, child["connection"]] = (seen[0] + int(child.get("bytes-in", 0)), seen[1] + int(child.get("bytes-out", 0)))
    return totals


BURST_PINGS = 100
BURST_PING_BYTES = 1200
BURST_BYTES = BURST_PINGS * BURST_PING_BYTES
"""Bytes a burst puts on a tunnel each way: far above what crosses it while the SAs are read (scrapes, probes, BGP and
DPD: about 10 kB/s; a reading lasts about a second). Each packet crosses charon's userspace ESP (kernel-libipsec, see
docs/ARCHITECTURE.md) at both ends: measured on 2 cores, a burst costs about 0.45 CPU-second at 100 pings and about
1 at 200 (the lab's tests send about fifty)."""


def burst(lab: Lab, namespace: str, target: str, count: int = BURST_PINGS, size: int = BURST_PING_BYTES) -> bool:
    """Send ``count`` pings of ``size`` bytes quickly; whether most were answered."""
    result = lab.ns(namespace, "ping", "-q", "-n", "-c", str(count), "-i", "0.005", "-s", str(size), "-W", "1", target, check=False, timeout=60)
    match = re.search(r"(\d+) received", result.stdout)
    return bool(match) and int(match.group(1)) >= count * 0.9


def grew(before: dict[tuple[str, str], tuple[int, int]], after: dict[tuple[str, str], tuple[int, int]], at_least: int) -> set[tuple[str, str]]:
    """The connections whose bytes in or out grew by ``at_least`` between two :func:`sa_bytes` readings."""
    out = set()
    for key, (bytes_in, bytes_out) in after.items():
        old_in, old_out = before.get(key, (0, 0))
        if bytes_in - old_in >= at_least or bytes_out - old_out >= at_least:
            out.add(key)
    return out


@dataclass(frozen=True)
class PathEvidence:
    """How traffic between two sites went: the trace's hops and the SAs that counted a burst."""

    source: str
    target: str
    hops: tuple[Hop, ...]
    counted: frozenset[tuple[str, str]]
    """(charon key, connection) of every SA the burst grew by at least its size."""
    problems: tuple[str, ...]
    """Empty when the path is the two sites' own tunnel and nothing else."""


def pair_path(lab: Lab, a: str, b: str, source: str, target: str, at_least: int) -> PathEvidence:
    """Trace and burst from namespace ``source`` (site ``a``) to ``target`` (an address of site ``b``): every hop must be
    a namespace of ``a`` or ``b`` (a cloud tunnel among them leading to the other one), and the burst must grow the SAs
    of an ``a``-``b`` connection at both ends and no other SA by ``at_least`` bytes."""
    problems = []
    hops = tuple(trace(lab, source, target))
    if hops[-1].address != target:
        problems.append(f"the trace did not reach {target}")
    for hop in hops[:-1]:
        if hop.place is None or hop.place.site not in (a, b):
            problems.append(f"hop {hop.address} is not a namespace of {a} or {b}")
        elif hop.place.toward not in (None, b if hop.place.site == a else a):
            problems.append(f"hop {hop.address} is {hop.place.namespace}, a tunnel to {hop.place.toward}")
    before = sa_bytes(lab)
    if not burst(lab, source, target):
        problems.append("the burst was not answered")
    counted = frozenset(grew(before, sa_bytes(lab), at_least))
    for key, connection in sorted(counted):
        if lab.site_of(key) not in (a, b) or not all(s in connection for s in (a, b)):
            problems.append(f"{key} counted the burst on {connection}")
    if {lab.site_of(key) for key, _ in counted} != {a, b}:
        problems.append(f"the burst was not counted at both ends: {sorted(counted)}")
    return PathEvidence(source, target, hops, counted, tuple(problems))
