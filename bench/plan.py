"""Time ``resinfra plan`` on the dev stack and on a 4-site x 100-worker stack.

Run: ``uv run python bench/plan.py``. Prints the in-process time of the offline run
(median of 3, after one warm-up), the wall time of the whole ``resinfra plan`` command
for the dev stack, and the ratio of the two stacks' run times.
"""

from __future__ import annotations

import copy
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from resinfra.offline import run_offline

ROOT = Path(__file__).resolve().parent.parent
RUNS = 3


def dev_values() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]


def big_values(workers: int = 100) -> dict[str, Any]:
    values = copy.deepcopy(dev_values())
    for site in values["resinfra:sites"]:
        site["workers"] = workers
        if site["provider"] == "proxmox":
            site.update(publicRange="203.0.113.0/25", publicGateway="203.0.113.1")
    return values


def time_offline(values: dict[str, Any]) -> tuple[float, int]:
    run_offline(values)  # warm-up: imports and caches
    samples = []
    resources = 0
    for _ in range(RUNS):
        started = time.perf_counter()
        run = run_offline(values)
        samples.append(time.perf_counter() - started)
        resources = len([r for r in run.resources if r.custom])
    return statistics.median(samples), resources


def time_cli() -> float:
    command = [str(Path(sys.executable).parent / "resinfra"), "plan"]
    subprocess.run(command, check=True, capture_output=True)  # warm the disk cache
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    dev_seconds, dev_resources = time_offline(dev_values())
    big_seconds, big_resources = time_offline(big_values())
    cli_seconds = time_cli()
    print(f"dev stack (4 sites x 2 workers): {dev_resources} resources, offline run {dev_seconds:.2f} s (median of {RUNS})")
    print(f"dev stack, whole `resinfra plan` command (warm): {cli_seconds:.2f} s (median of {RUNS})")
    print(f"big stack (4 sites x 100 workers): {big_resources} resources, offline run {big_seconds:.2f} s (median of {RUNS})")
    print(f"ratio big/dev: {big_seconds / dev_seconds:.1f}x for {big_resources / dev_resources:.1f}x the resources")


if __name__ == "__main__":
    main()
