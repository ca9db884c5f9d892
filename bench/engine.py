"""Time the engine's build (``tools/engine/install``) and the engine tests.

Run: ``uv run python bench/engine.py [--cold] [--tests]``.

- warm: the install in a copy of the checkout with this machine's Go caches, first with
  nothing built in the copy (a rebuild from the caches), then again (the no-op CI pays on a
  machine that built before).
- ``--cold``: the same with empty Go module and build caches, as on a fresh machine (every
  module downloaded from the proxy, everything compiled; tens of minutes on 2 cores).
- ``--tests``: ``pytest -m engine`` in this checkout (needs ``tools/engine/install`` first).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def checkout_copy(base: Path) -> Path:
    """The tracked files of this checkout (what a fresh clone has) and its virtualenv."""
    copy = base / "checkout"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in (f.decode() for f in files if f):
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, target)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    return copy


def timed_install(copy: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(["bash", "tools/engine/install"], cwd=copy, env=env, check=True)
    return time.monotonic() - start


def build_times(cold: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
        base = Path(tmp)
        copy = checkout_copy(base)
        env = dict(os.environ)
        if cold:
            env.update(GOCACHE=str(base / "gocache"), GOMODCACHE=str(base / "gomodcache"))
        kind = "cold (empty Go caches)" if cold else "warm (this machine's Go caches)"
        print(f"install, {kind}: {timed_install(copy, env):.0f} s", flush=True)
        print(f"install again (up to date): {timed_install(copy, env):.1f} s", flush=True)
        if cold:
            # The module cache is read-only by design; make it removable.
            subprocess.run(["chmod", "-R", "u+w", str(base / "gomodcache")], check=False)


def test_time() -> None:
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "engine", "-q", "-p", "no:cacheprovider"], cwd=ROOT, check=False)
    print(f"engine tests: {time.monotonic() - start:.0f} s (exit {done.returncode})")


def main() -> None:
    parser = argparse.ArgumentParser(description="Time the engine's build and the engine tests.")
    parser.add_argument("--cold", action="store_true", help="also time a build with empty Go caches")
    parser.add_argument("--tests", action="store_true", help="also time pytest -m engine")
    args = parser.parse_args()
    build_times(cold=False)
    if args.cold:
        build_times(cold=True)
    if args.tests:
        test_time()


if __name__ == "__main__":
    main()
