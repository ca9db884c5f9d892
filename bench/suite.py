"""Time the test suite: the fast part (everything but the real engine) and the engine tests, each with its slowest tests.

Run: ``uv run python bench/suite.py [--part fast|engine|all] [--durations N] [--record] [--bytecode compiled|none] [-- PYTEST ARGS]``.
Run it as root with the Debian packages of ``.ci/run`` so nothing skips (``RESINFRA_NO_SKIP=1``
is set). Prints the machine (cores, CPU model, load average, bytecode), the wall time of each
part, the load average and the CPU busy while it ran; the machine is shared, so say which load a figure had.
``--record`` also writes each module's measured time to ``tests/module_seconds.json``, the order in which
the suite hands modules to its workers (``tests/scheduling.py``): the parts run update their modules' entries.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import ROOT, LoadSampler, describe, stamp

PARTS = {"fast": ["-m", "not engine"], "engine": ["-m", "engine"], "all": []}


MODULE_SECONDS = ROOT / "tests" / "module_seconds.json"


def record(measured: Path, machine: str) -> None:
    """Merge one part's module times into tests/module_seconds.json (rounded: the order matters, not the decimals)."""
    table: dict[str, Any] = json.loads(MODULE_SECONDS.read_text()) if MODULE_SECONDS.exists() else {"seconds": {}}
    table["seconds"].update({module: round(seconds, 1) for module, seconds in json.loads(measured.read_text()).items()})
    table["measured"] = f"bench/suite.py --record, {stamp()}; {machine}"
    kept = {module: seconds for module, seconds in table["seconds"].items() if (ROOT / module).is_file()}  # a module gone is dropped
    table["seconds"] = dict(sorted(kept.items(), key=lambda item: -item[1]))
    MODULE_SECONDS.write_text(json.dumps(table, indent=1) + "\n")
    print(f"== recorded {len(table['seconds'])} modules' times in {MODULE_SECONDS.relative_to(ROOT)}", flush=True)


def run_part(part: str, durations: int, extra: list[str], recording: bool) -> int:
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--durations={durations}", *PARTS[part], *extra]
    env = dict(os.environ, RESINFRA_NO_SKIP="1")
    scratch = tempfile.TemporaryDirectory(prefix="module-times-")
    measured = Path(scratch.name) / "module-times.json"
    if recording:
        command[3:3] = ["-p", "module_times"]  # after "python -m pytest": bench/module_times.py
        env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "bench"), env.get("PYTHONPATH")])), RESINFRA_MODULE_TIMES=str(measured))
    print(f"\n== {part}: {' '.join(command[1:])}  ({stamp()})", flush=True)
    with LoadSampler() as load:
        start = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=env, check=False)
        seconds = time.monotonic() - start
    print(f"== {part}: {seconds:.0f} s ({seconds / 60:.1f} min), exit {done.returncode}; {load.summary()}", flush=True)
    if recording and done.returncode == 0:
        record(measured, describe().splitlines()[0])
    scratch.cleanup()
    return done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description="Time the test suite on this machine.")
    parser.add_argument("--part", choices=["fast", "engine", "all", "both"], default="both", help="both: fast then engine, timed apart (default)")
    parser.add_argument("--durations", type=int, default=25, help="how many of the slowest tests to list")
    parser.add_argument("--record", action="store_true", help="write each module's time to tests/module_seconds.json")
    parser.add_argument(
        "--bytecode",
        choices=["compiled", "none"],
        default="compiled",
        help="compiled: run tools/compile-bytecode first (as .ci/run does); none: remove the project's own bytecode first",
    )
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if args.bytecode == "compiled":
        subprocess.run(["bash", str(ROOT / "tools" / "compile-bytecode")], check=True)
    else:
        for cache in [p for top in ("resinfra", "tests", "bench", "tools") for p in (ROOT / top).rglob("__pycache__")]:
            shutil.rmtree(cache)
    print(describe(), flush=True)
    parts = ["fast", "engine"] if args.part == "both" else [args.part]
    codes = [run_part(part, args.durations, args.pytest_args, args.record) for part in parts]
    sys.exit(max(codes))


if __name__ == "__main__":
    main()
