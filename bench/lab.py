"""The lab, timed (root): ``resinfra lab up`` on the dev stack; a worker killed -> the healer's repair started -> its
NodeDown resolved; a site partitioned -> replacements started meanwhile (must be 0) -> tunnels and targets back.

Run: ``sudo .venv/bin/python bench/lab.py [--runs N] [--workers N] [--partitions N] [--partition-seconds S]``.

``lab up`` is timed as the command a user runs (a new process: imports, the program
offline, namespaces, gateways, every daemon, until every tunnel is established and every
target scraped). Kills rotate over workers of different sites (the healer's cooldown holds a
machine repaired a moment ago); a site keeps a worker up, so its death is a NodeDown, not a
partition. Timings are the lab's (resinfra/lab/changes.py), printed with the figures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import ROOT, summary

from resinfra.addressing import Role
from resinfra.healer.observe import audit_alert
from resinfra.lab import changes
from resinfra.lab.cluster import audit_events, down, kill, load, root_of, set_partition, targets_healthy, tunnels_up, wait_for_event
from resinfra.lab.state import LabState
from resinfra.netlab import wait_for

NAME = "rlb"
TIMEOUT = 120.0


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


def main() -> int:
    parser = argparse.ArgumentParser(description="Time lab up, kill -> repair -> resolved, and count replacements during a partition.")
    parser.add_argument("--runs", type=int, default=5, help="kills to time (median of these; at least 3)")
    parser.add_argument("--workers", type=int, default=2, help="workers per site (at least 2, so a kill is a NodeDown)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions, of the sites other than the resinfra VM's in turn")
    parser.add_argument("--partition-seconds", type=float, default=40.0, help="how long a site stays cut off (past dead-peer detection, about 25 s)")
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs: at least 3 (a median)")
    down(NAME, out=lambda line: None)
    command = [sys.executable, "-m", "resinfra.cli", "lab", "up", "--name", NAME, "--workers", str(args.workers)]
    began = time.monotonic()
    subprocess.run(command, check=True, cwd=ROOT)
    up_seconds = time.monotonic() - began
    try:
        state = load(root_of(NAME))
        to_started, to_resolved = [], []
        for i, machine in enumerate(victims(state, args.runs)):
            wait_for(lambda: healthy(NAME), TIMEOUT, "a healthy lab", interval=0.5)
            killed = time.time()
            kill(NAME, machine)
            started = wait_for_event(state, lambda e, m=machine: e["event"] == "repair-started" and e["machine"] == m, killed, TIMEOUT)
            resolved = wait_for_event(state, audit_alert("NodeDown", "resolved", node=machine), killed, TIMEOUT)
            to_started.append(started["ts"] - killed)
            to_resolved.append(resolved["ts"] - killed)
            print(f"run {i + 1}: {machine}: repair started {to_started[-1]:.2f} s, NodeDown resolved {to_resolved[-1]:.2f} s after the kill", flush=True)

        tooling_site = next(m.site for m in state.machines.values() if m.role is Role.TOOLING)
        sites = [s.key for s in state.sites if s.key != tooling_site]
        wait_for(lambda: healthy(NAME), TIMEOUT, "a healthy lab", interval=0.5)
        before = len([e for e in audit_events(state) if e["event"] == "repair-started"])
        detected, recovered = [], []
        for i in range(args.partitions):
            site = sites[i % len(sites)]
            cut = time.time()
            set_partition(NAME, site, True)
            fired = wait_for_event(state, audit_alert("SiteUnreachable", "firing", site=site), cut, TIMEOUT)
            detected.append(fired["ts"] - cut)
            time.sleep(max(0.0, args.partition_seconds - (time.time() - cut)))
            set_partition(NAME, site, False)
            healed = time.monotonic()
            wait_for(lambda: healthy(NAME), TIMEOUT, "tunnels and targets back", interval=0.25)
            recovered.append(time.monotonic() - healed)
            print(
                f"partition {i + 1}: {site} for {args.partition_seconds:g} s: SiteUnreachable after {detected[-1]:.2f} s, back {recovered[-1]:.2f} s after the heal",
                flush=True,
            )
        time.sleep(5)  # what the healer might still do after the last site is back
        false_replacements = len([e for e in audit_events(state) if e["event"] == "repair-started"]) - before
    finally:
        down(NAME, out=lambda line: None)

    t = changes.LAB_TIMINGS
    print()
    print(
        f"lab timings: scrape {t.scrape_interval} s, NodeDown after {t.node_down_for} s, healer tick {changes.HEALER_TICK_SECONDS:g} s, replacement {changes.REPLACE_SECONDS:g} s"
    )
    print(f"resinfra lab up (dev stack, {args.workers} workers per site, whole command): {up_seconds:.1f} s")
    print(summary("kill -> repair started", to_started, 40))
    print(summary("kill -> NodeDown resolved", to_resolved, 40))
    print(summary("partition -> SiteUnreachable at healer", detected, 40))
    print(summary("heal -> every tunnel and target up", recovered, 40))
    print(f"replacements started during {args.partitions} partitions of {args.partition_seconds:g} s and 5 s after: {false_replacements} (must be 0)")
    return 1 if false_replacements else 0


if __name__ == "__main__":
    sys.exit(main())
