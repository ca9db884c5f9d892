"""The lab, timed (root): ``resinfra lab up`` on a stack (dev by default); the path between every two sites (trace
and SA counters); a worker killed -> the healer's repair started -> its NodeDown resolved; a site partitioned ->
replacements started meanwhile (must be 0) -> tunnels and targets back; an active-active Azure instance killed while
it carries traffic -> every pair of sites reachable again.

Run: ``sudo .venv/bin/python bench/lab.py [--stack S] [--runs N] [--workers N] [--partitions N] [--partition-seconds S]
[--failovers N]``; the prod topology's figures: ``--stack prod --workers 1 --runs 0 --partitions 0 --failovers 4``.

``lab up`` is timed as the command a user runs (a new process: imports, the program
offline, namespaces, gateways, every daemon, until every tunnel is established and every
target scraped). Kills rotate over workers of different sites (the healer's cooldown holds a
machine repaired a moment ago); a site keeps a worker up, so its death is a NodeDown, not a
partition. Timings are the lab's (resinfra/lab/changes.py), printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from common import ROOT, summary

from resinfra.addressing import Role
from resinfra.healer.observe import audit_alert
from resinfra.lab import changes, failover
from resinfra.lab.actions import kill, set_instance, set_partition
from resinfra.lab.cluster import down
from resinfra.lab.observe import audit_events, targets_healthy, tunnels_up, wait_for_event
from resinfra.lab.preconditions import root_of
from resinfra.lab.state import LabState, load
from resinfra.netlab import wait_for

NAME = os.environ.get("RESINFRA_BENCH_LAB_NAME", "rlb")
"""Overridable, so that two checkouts on one machine can run it at once."""
TIMEOUT = 120.0
FAILOVER_TIMEOUT = 300.0


def healthy(name: str) -> bool:
    state = load(root_of(name))
    return tunnels_up(state.netlab()) and targets_healthy(state)


def victims(state: LabState, runs: int) -> list[str]:
    """Workers to kill, a site after another, on sites with another machine (a site's only machine killed is a dark
    site, a partition); no machine twice while there are others (the healer's cooldown would hold it)."""
    by_site: dict[str, list[str]] = {}
    for m in state.machines.values():
        if m.role is Role.WORKER and any(o.site == m.site and o.name != m.name for o in state.machines.values()):
            by_site.setdefault(m.site, []).append(m.name)
    order = [names[-(i + 1)] for i in range(max((len(n) for n in by_site.values()), default=0)) for names in by_site.values() if i < len(names)]
    if not order:
        raise SystemExit("no site has a second machine: a kill would be a partition; use --workers 2 or more")
    return [order[i % len(order)] for i in range(runs)]


def worker_kills(state: LabState, runs: int) -> tuple[list[float], list[float]]:
    """Kill -> the healer's repair started, and kill -> NodeDown resolved, for ``runs`` workers in turn."""
    to_started, to_resolved = [], []
    for i, machine in enumerate(victims(state, runs)):
        wait_for(lambda: healthy(NAME), TIMEOUT, "a healthy lab", interval=0.5)
        killed = time.time()
        kill(NAME, machine)
        started = wait_for_event(state, lambda e, m=machine: e["event"] == "repair-started" and e["machine"] == m, killed, TIMEOUT)
        resolved = wait_for_event(state, audit_alert("NodeDown", "resolved", node=machine), killed, TIMEOUT)
        to_started.append(started["ts"] - killed)
        to_resolved.append(resolved["ts"] - killed)
        print(f"run {i + 1}: {machine}: repair started {to_started[-1]:.2f} s, NodeDown resolved {to_resolved[-1]:.2f} s after the kill", flush=True)
    return to_started, to_resolved


def partitions(state: LabState, count: int, seconds: float) -> tuple[list[float], list[float], int]:
    """Partitions of the sites other than the tooling VM's in turn: SiteUnreachable seen, back after the heal, and the
    replacements started meanwhile (must be 0)."""
    tooling_site = next(m.site for m in state.machines.values() if m.role is Role.TOOLING)
    sites = [s.key for s in state.sites if s.key != tooling_site]
    wait_for(lambda: healthy(NAME), TIMEOUT, "a healthy lab", interval=0.5)
    before = len([e for e in audit_events(state) if e["event"] == "repair-started"])
    detected, recovered = [], []
    for i in range(count):
        site = sites[i % len(sites)]
        cut = time.time()
        set_partition(NAME, site, True)
        fired = wait_for_event(state, audit_alert("SiteUnreachable", "firing", site=site), cut, TIMEOUT)
        detected.append(fired["ts"] - cut)
        time.sleep(max(0.0, seconds - (time.time() - cut)))
        set_partition(NAME, site, False)
        healed = time.monotonic()
        wait_for(lambda: healthy(NAME), TIMEOUT, "tunnels and targets back", interval=0.25)
        recovered.append(time.monotonic() - healed)
        print(f"partition {i + 1}: {site} for {seconds:g} s: SiteUnreachable after {detected[-1]:.2f} s, back {recovered[-1]:.2f} s after the heal", flush=True)
    time.sleep(5)  # what the healer might still do after the last site is back
    return detected, recovered, len([e for e in audit_events(state) if e["event"] == "repair-started"]) - before


def instance_failovers(state: LabState, rounds: int) -> list[float]:
    """An Azure instance (0, 1, 0, ...) made the one the strongSwan gateways send to, then killed: the seconds until every
    pair of sites reaches each other again; revived after each round."""
    site = next(s.key for s in state.sites if s.cloud is not None and len(s.cloud.routers) == 2)
    seconds = []
    for i in range(rounds):
        instance = i % 2
        strongswan = {s.key for s in state.sites if s.cloud is None}
        carried = failover.make_carrier(NAME, site, instance, TIMEOUT, strongswan)[instance]
        seconds.append(failover.fail_instance(NAME, site, instance, FAILOVER_TIMEOUT))
        print(f"failover {i + 1}: {site} instance {instance} (carrying {sorted(carried)}) killed: every pair back after {seconds[-1]:.1f} s", flush=True)
        set_instance(NAME, site, instance, alive_=True)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description="Time lab up, kill -> repair -> resolved, partitions, and an Azure instance's failover.")
    parser.add_argument("--stack", default="dev", help="the stack (Pulumi.STACK.yaml), default dev")
    parser.add_argument("--runs", type=int, default=5, help="worker kills to time (median of these; at least 3, or 0 to skip)")
    parser.add_argument("--workers", type=int, default=2, help="workers per site (at least 2, so a kill is a NodeDown)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions, of the sites other than the tooling VM's in turn (0 to skip)")
    parser.add_argument("--partition-seconds", type=float, default=40.0, help="how long a site stays cut off (past dead-peer detection, about 25 s)")
    parser.add_argument("--failovers", type=int, default=0, help="Azure instance failovers to time (active-active stacks: prod), alternating instances")
    args = parser.parse_args()
    if 0 < args.runs < 3:
        parser.error("--runs: at least 3 (a median), or 0")
    down(NAME, out=lambda line: None)
    command = [sys.executable, "-m", "resinfra.cli", "lab", "up", "--name", NAME, "--stack", args.stack, "--workers", str(args.workers)]
    began = time.monotonic()
    subprocess.run(command, check=True, cwd=ROOT)
    up_seconds = time.monotonic() - began
    try:
        state = load(root_of(NAME))
        evidence = failover.own_tunnels(state)
        to_started, to_resolved = worker_kills(state, args.runs) if args.runs else ([], [])
        detected, recovered, false_replacements = partitions(state, args.partitions, args.partition_seconds) if args.partitions else ([], [], 0)
        failovers = instance_failovers(state, args.failovers) if args.failovers else []
    finally:
        down(NAME, out=lambda line: None)

    t = changes.LAB_TIMINGS
    print()
    print(
        f"lab timings: scrape {t.scrape_interval} s, NodeDown after {t.node_down_for} s, healer tick {changes.HEALER_TICK_SECONDS:g} s, replacement {changes.REPLACE_SECONDS:g} s"
    )
    print(f"resinfra lab up ({args.stack} stack, {args.workers} workers per site, whole command): {up_seconds:.1f} s")
    print("path between the first workers of every two sites (trace hops; SAs that counted a burst):")
    for (a, b), path in evidence.items():
        hops = " > ".join(h.place.namespace.removeprefix(f"{NAME}-") if h.place else h.address for h in path.hops)
        counted = ", ".join(f"{key}:{connection}" for key, connection in sorted(path.counted))
        print(f"  {a} -> {b}: {hops}; counted on {counted}" + (f"; PROBLEMS: {'; '.join(path.problems)}" if path.problems else ""))
    if to_started:
        print(summary("kill -> repair started", to_started, 40))
        print(summary("kill -> NodeDown resolved", to_resolved, 40))
    if detected:
        print(summary("partition -> SiteUnreachable at healer", detected, 40))
        print(summary("heal -> every tunnel and target up", recovered, 40))
        print(f"replacements started during {args.partitions} partitions of {args.partition_seconds:g} s and 5 s after: {false_replacements} (must be 0)")
    if failovers:
        print(summary("Azure instance killed -> every pair back", failovers, 40))
    bad_paths = [pair for pair, path in evidence.items() if path.problems]
    return 1 if false_replacements or bad_paths else 0


if __name__ == "__main__":
    sys.exit(main())
