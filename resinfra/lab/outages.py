"""A gateway of a pair dying in a running lab, timed: continuous pings between a worker of its site and a worker of every
other site, both ways, and each direction's outage. Shared by ``tests/lab/test_lab_pairs.py`` and ``bench/failover.py``.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from resinfra.lab.actions import kill
from resinfra.lab.failover import first_workers
from resinfra.lab.observe import ping
from resinfra.lab.pairs import active_member
from resinfra.lab.preconditions import root_of
from resinfra.lab.state import LabState, MachineRecord, load
from resinfra.netlab import LabError, wait_for

PING_INTERVAL = 0.1


@dataclass(frozen=True)
class Outage:
    """Pings from one worker to another around a gateway's death."""

    source: str
    target: str
    restored_after: float
    """Seconds from the kill to the first answer after the gap around it."""
    longest_gap: float
    """The longest time without an answer in the whole series (seconds)."""


def directions(lab: LabState, site: str) -> list[tuple[MachineRecord, MachineRecord]]:
    """(source, target) between ``site``'s first worker and every other site's, both ways."""
    first = first_workers(lab)
    return [pair for other in sorted(first) if other != site for pair in ((first[site], first[other]), (first[other], first[site]))]


def reachable(lab: LabState, pairs: list[tuple[MachineRecord, MachineRecord]]) -> bool:
    return all(ping(lab, a.name, b.name) for a, b in pairs)


@contextlib.contextmanager
def pinging(pairs: list[tuple[MachineRecord, MachineRecord]]) -> Iterator[dict[tuple[str, str], subprocess.Popen[str]]]:
    """A ``ping -D`` (each answer's time) every :data:`PING_INTERVAL` per direction, stopped on exit."""
    processes = {}
    for a, b in pairs:
        argv = ["ip", "netns", "exec", a.namespace, "ping", "-D", "-n", "-i", str(PING_INTERVAL), "-W", "1", b.private_ip]
        processes[(a.name, b.name)] = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield processes
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def outages(processes: Mapping[tuple[str, str], subprocess.Popen[str]], killed_at: float) -> list[Outage]:
    """Each direction's outage from its answers' times: the gap around the kill (from the last answer before it to the
    first after it), and the longest gap of the series."""
    out = []
    for (a, b), process in processes.items():
        text = process.stdout.read() if process.stdout else ""
        answers = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", text, flags=re.MULTILINE)]
        before = [t for t in answers if t <= killed_at]
        after = [t for t in answers if t > killed_at]
        if not before or not after:
            raise LabError(f"{a} -> {b}: no answer before or after the kill")
        gaps = [(y - x, y) for x, y in itertools.pairwise([before[-1], *after])]
        _, restored = max(gaps)
        longest = max((y - x for x, y in itertools.pairwise(answers)), default=0.0)
        out.append(Outage(a, b, restored - killed_at, longest))
    return out


@dataclass(frozen=True)
class Failover:
    """One kill of a pair's active gateway."""

    victim: MachineRecord
    successor: str
    """The gateway that took over."""
    master_after: float
    """Seconds from the kill until the other gateway's notify script had run for MASTER (polled every 0.1 s)."""
    outages: list[Outage]

    @property
    def restored_after(self) -> float:
        """The worst direction's time from the kill to its first answer after the gap."""
        return max(o.restored_after for o in self.outages)


def fail_over(name: str, site: str, timeout: float = 60.0) -> Failover:
    """Kill ``site``'s active gateway (as ``lab kill`` does) while its first worker and every other site's ping each
    other; returns once the site's other gateway is active and every direction answers again."""
    lab = load(root_of(name))
    victim = active_member(lab, site)
    if victim is None:
        raise LabError(f"{site} has no single active gateway")
    pairs = directions(lab, site)
    with pinging(pairs) as processes:
        wait_for(lambda: reachable(lab, pairs), 30, "every direction answering before the kill", interval=0.2)
        time.sleep(1.0)
        killed_at = time.time()
        kill(name, victim.name)
        master_after = wait_for(lambda: active_member(load(root_of(name)), site) is not None, timeout, f"{site}'s other gateway active", interval=0.1)
        wait_for(lambda: reachable(lab, pairs), timeout, "every direction answering again", interval=0.2)
        time.sleep(1.0)
    successor = active_member(load(root_of(name)), site)
    return Failover(victim, successor.name if successor else "", master_after, outages(processes, killed_at))
