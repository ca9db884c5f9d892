"""Time the test suite: the fast part (everything but the real engine) and the engine tests, each with its slowest tests.

Run: ``uv run python bench/suite.py [--part fast|engine|all] [--durations N] [-- PYTEST ARGS]``.
Run it as root with the Debian packages of ``.ci/run`` so nothing skips (``RESINFRA_NO_SKIP=1``
is set). Prints the machine (cores, CPU model, load average, bytecode), the wall time of each
part and the load average while it ran; the machine is shared, so say which load a figure had.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from machine import ROOT, LoadSampler, describe, stamp

PARTS = {"fast": ["-m", "not engine"], "engine": ["-m", "engine"], "all": []}


def run_part(part: str, durations: int, extra: list[str]) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--durations={durations}", *PARTS[part], *extra]
    env = dict(os.environ, RESINFRA_NO_SKIP="1")
    print(f"\n== {part}: {' '.join(command[1:])}  ({stamp()})", flush=True)
    with LoadSampler() as load:
        start = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, check=False)
        seconds = time.monotonic() - start
    print(f"== {part}: {seconds:.0f} s ({seconds / 60:.1f} min), exit {done.returncode}; {load.summary()}", flush=True)
    return done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description="Time the test suite on this machine.")
    parser.add_argument("--part", choices=["fast", "engine", "all", "both"], default="both", help="both: fast then engine, timed apart (default)")
    parser.add_argument("--durations", type=int, default=25, help="how many of the slowest tests to list")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    print(describe(), flush=True)
    parts = ["fast", "engine"] if args.part == "both" else [args.part]
    codes = [run_part(part, args.durations, args.pytest_args) for part in parts]
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
