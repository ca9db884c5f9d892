"""Gateway pair failover, timed (root): a site's active gateway dies -> traffic flows again through the other.

The pair lab (:mod:`resinfra.lab.pair`): a Hetzner and a Proxmox pair of the dev stack, keepalived, the notify script
and charon as rendered, the Hetzner API emulated (each action takes ``--action-seconds``). Each run kills the active
gateway of each site in turn while the workers ping each other both ways every 0.1 s, waits until every pair answers
again, then revives the dead one (the standby). Reported per site: the median over the runs of the time from the kill to
the first answer after it (the worse of the two directions), and the longest single gap seen in any ping series;
the machine's load average with them.

Run: ``sudo .venv/bin/python bench/failover.py [--runs N] [--action-seconds S]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, summary

from resinfra.lab import pair
from resinfra.lab.changes import STATE_ROOT
from resinfra.netlab import wait_for

NAME = os.environ.get("RESINFRA_BENCH_LAB_NAME", "rlb")
TARGET = 10.0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--action-seconds", type=float, default=0.5, help="how long an emulated Hetzner API action takes")
    args = parser.parse_args()
    values: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    restored: dict[str, list[float]] = {}
    longest = 0.0
    loads = []
    lab = pair.build(NAME, STATE_ROOT / f"{NAME}-pair", values, action_seconds=args.action_seconds)
    try:
        wait_for(lambda: all(lab.active(s) is not None for s in lab.workers), 30, "an active gateway per site", interval=0.2)
        wait_for(lab.tunnels_up, 60, "the tunnels", interval=0.5)
        for run in range(1, args.runs + 1):
            for site in lab.workers:
                victim, outages = pair.fail_over(lab, site)
                worst = max(o.restored_after for o in outages)
                restored.setdefault(site, []).append(worst)
                longest = max(longest, *(o.longest_gap for o in outages))
                loads.append(os.getloadavg()[0])
                print(
                    f"run {run} {site}: {victim.namespace} killed; every pair answers again after {worst:.2f} s (longest gap {max(o.longest_gap for o in outages):.2f} s)"
                )
                lab.revive_gateway(victim)
                wait_for(lambda v=victim: lab.state(v) == "BACKUP", 30, "the revived gateway as the standby", interval=0.2)
                time.sleep(2)
    finally:
        lab.destroy()
    print()
    every = [t for ts in restored.values() for t in ts]
    for site, times in restored.items():
        print(summary(f"{site}: kill -> traffic again", times))
    print(summary("both sites", every))
    print(f"longest single outage seen: {longest:.2f} s; target <= {TARGET:g} s: {'met' if statistics.median(every) <= TARGET else 'NOT met'}")
    print(f"emulated API action: {args.action_seconds:g} s; VRRP advert 1 s (backup declares the master dead after ~3.6 s)")
    print(f"load average (1 min) during the runs: median {statistics.median(loads):.2f}, max {max(loads):.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
