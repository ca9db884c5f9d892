"""Time ``resinfra plan``: the whole command with and without compiled bytecode, where its time goes, and a big stack.

Run: ``uv run python bench/plan.py [--runs N] [--no-big]``. Prints the machine it ran on, then:

- the whole ``resinfra plan`` command on the dev stack (the virtualenv's script, and as ``uv run resinfra plan``), warm (the SDKs' bytecode compiled, as
  after a first run or ``uv sync --compile-bytecode``) and cold (no bytecode at
  all and none written, as with ``PYTHONDONTWRITEBYTECODE=1`` in a virtualenv installed without
  compiling: every run compiles the SDKs from source), median of ``--runs`` each;
- in one process: importing the ``resinfra`` command, the first offline run (which loads the
  provider SDKs it uses), and a second run (the program under mocks alone); then the two runs again with CPython's
  default garbage-collector thresholds (``resinfra/gc_thresholds.py`` raises the first one while the program runs);
- the offline run of a 4-site x 100-worker stack against the dev stack's.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import summary
from machine import ROOT, LoadSampler, describe

PHASES = """
import contextlib, io, os, time
started = time.perf_counter()
from resinfra import cli, gc_thresholds
if os.environ.get("BENCH_DEFAULT_GC"):
    gc_thresholds.PROGRAM_FIRST_THRESHOLD = 0  # max(0, 700): CPython's default first threshold while the program runs
imported = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    cli.main(["plan"])
first = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    cli.main(["plan"])
second = time.perf_counter()
print(imported - started, first - imported, second - first)
"""


def dev_values() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]


def big_values(workers: int = 100) -> dict[str, Any]:
    values = copy.deepcopy(dev_values())
    for site in values["resinfra:sites"]:
        site["workers"] = workers
        if site["provider"] == "proxmox":
            site.update(publicRange="203.0.113.0/25", publicGateway="203.0.113.1")
    return values


def whole_command(runs: int, env: dict[str, str], via_uv: bool = False) -> list[float]:
    command = ["uv", "run", "resinfra", "plan"] if via_uv else [str(Path(sys.executable).parent / "resinfra"), "plan"]
    subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)  # the disk cache, not the bytecode
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env, cwd=ROOT)
        samples.append(time.perf_counter() - started)
    return samples


def phases(runs: int, default_gc: bool = False) -> list[tuple[float, ...]]:
    env = dict(os.environ, BENCH_DEFAULT_GC="1") if default_gc else dict(os.environ)
    out = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", PHASES], check=True, capture_output=True, text=True, cwd=ROOT, env=env)
        out.append(tuple(float(x) for x in done.stdout.split()))
    return out


def offline_seconds(values: dict[str, Any], runs: int) -> tuple[float, int]:
    from resinfra.offline import run_offline

    run_offline(values)  # warm-up: imports and caches
    samples = []
    resources = 0
    for _ in range(runs):
        started = time.perf_counter()
        run = run_offline(values)
        samples.append(time.perf_counter() - started)
        resources = len([r for r in run.resources if r.custom])
    return statistics.median(samples), resources


def main() -> None:
    parser = argparse.ArgumentParser(description="Time resinfra plan.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-big", action="store_true", help="skip the 4 x 100-worker stack")
    args = parser.parse_args()
    print(describe(), flush=True)
    with LoadSampler(interval=2) as load, tempfile.TemporaryDirectory(prefix="plan-bench-nopyc-") as empty:
        warm = whole_command(args.runs, dict(os.environ))
        print(summary("`resinfra plan`, dev stack, warm bytecode", warm, width=44), flush=True)
        # What a user types: uv checks the environment first.
        print(summary("`uv run resinfra plan`, warm bytecode", whole_command(args.runs, dict(os.environ), via_uv=True), width=44), flush=True)
        # An empty bytecode cache that nothing is written to: every module is compiled from source, every run.
        cold_env = dict(os.environ, PYTHONPYCACHEPREFIX=empty, PYTHONDONTWRITEBYTECODE="1")
        cold = whole_command(max(2, args.runs // 2), cold_env)
        print(summary("`resinfra plan`, dev stack, no bytecode", cold, width=44), flush=True)
        split = phases(args.runs)
        print(summary("  import the resinfra command", [s[0] for s in split], width=44))
        print(summary("  first offline run (loads the SDKs it uses)", [s[1] for s in split], width=44))
        print(summary("  second offline run (the program alone)", [s[2] for s in split], width=44), flush=True)
        # resinfra/gc_thresholds.py: the same phases with CPython's default collector thresholds while the program runs.
        default = phases(args.runs, default_gc=True)
        print(summary("  first offline run, default gc thresholds", [s[1] for s in default], width=44))
        print(summary("  second offline run, default gc thresholds", [s[2] for s in default], width=44), flush=True)
        if not args.no_big:
            dev_seconds, dev_resources = offline_seconds(dev_values(), 3)
            big_seconds, big_resources = offline_seconds(big_values(), 3)
            print(f"offline run, dev stack: {dev_resources} resources in {dev_seconds:.2f} s; 4 sites x 100 workers: {big_resources} in {big_seconds:.2f} s")
    print(load.summary())


if __name__ == "__main__":
    main()
