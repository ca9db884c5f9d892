"""Gateway pair failover, timed (root): a site's active gateway dies -> traffic flows again through the other.

The lab (``resinfra lab up``) on the dev stack with ``gateways: 2`` on its Hetzner and Proxmox sites and one worker per
site: keepalived, the notify script and charon as rendered, the Hetzner API emulated (each action takes
``changes.HCLOUD_ACTION_SECONDS``). Each run kills the active gateway of each pair site in turn while the site's worker
and a worker of every other site (GCP and Azure too) ping each other both ways every 0.1 s, waits until every direction
answers again, then replaces the dead one with the lab's replacement (the healer's action; the healer runs with
``dryRun`` here, so its per-machine backoff does not stretch the runs) and waits for the pair to be redundant again.

Reported per site: the median over the runs of the time from the kill to the first answer after it (the worst
direction), of the time until the other gateway was MASTER (VRRP: 3 missed adverts of 1 s plus the skew), and the
longest single gap in any ping series; the machine's load average with them.

Run: ``sudo .venv/bin/python bench/failover.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, summary

from resinfra.lab import changes, outages
from resinfra.lab.actions import replace
from resinfra.lab.cluster import down, up
from resinfra.lab.observe import targets_healthy
from resinfra.lab.pairs import pair_states
from resinfra.lab.preconditions import root_of
from resinfra.lab.state import load
from resinfra.netlab import wait_for

NAME = os.environ.get("RESINFRA_BENCH_LAB_NAME", "rlb")
TARGET = 10.0
PAIR_SITES = ("hetzner", "proxmox")


def redundant(site: str) -> bool:
    now = load(root_of(NAME))
    return sorted(m["state"] for m in pair_states(now)[site]) == ["BACKUP", "MASTER"] and targets_healthy(now)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    values: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    for site in values["resinfra:sites"]:
        if site["provider"] in PAIR_SITES:
            site["gateways"] = 2
    values.setdefault("resinfra:healer", {})["dryRun"] = True
    restored: dict[str, list[float]] = {}
    master: dict[str, list[float]] = {}
    longest = 0.0
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "Pulumi.pairs.yaml"
        config.write_text(yaml.safe_dump({"config": values}))
        if root_of(NAME).exists():
            down(NAME, out=lambda line: None)
        up(NAME, None, str(config), 1, out=lambda line: None)
    try:
        for run in range(1, args.runs + 1):
            for site in PAIR_SITES:
                wait_for(lambda s=site: redundant(s), 120, f"{site}'s pair redundant", interval=0.5)
                failover = outages.fail_over(NAME, site)
                restored.setdefault(site, []).append(failover.restored_after)
                master.setdefault(site, []).append(failover.master_after)
                gap = max(o.longest_gap for o in failover.outages)
                longest = max(longest, gap)
                loads.append(os.getloadavg()[0])
                print(
                    f"run {run} {site}: {failover.victim.name} killed; {failover.successor} MASTER after {failover.master_after:.2f} s, "
                    f"every direction answers again after {failover.restored_after:.2f} s (longest gap {gap:.2f} s)",
                    flush=True,
                )
                replace(NAME, failover.victim.name)
    finally:
        down(NAME, out=lambda line: None)
    print()
    every = [t for ts in restored.values() for t in ts]
    for site in PAIR_SITES:
        print(summary(f"{site}: kill -> other gateway MASTER", master[site], 40))
        print(summary(f"{site}: kill -> traffic again", restored[site], 40))
    print(summary("both sites: kill -> traffic again", every, 40))
    print(f"longest single outage seen: {longest:.2f} s; target <= {TARGET:g} s: {'met' if statistics.median(every) <= TARGET else 'NOT met'}")
    print(f"emulated Hetzner API action: {changes.HCLOUD_ACTION_SECONDS:g} s each; VRRP advert 1 s (the backup takes over after ~3.6 s)")
    print(f"load average (1 min) during the runs: median {statistics.median(loads):.2f}, max {max(loads):.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
