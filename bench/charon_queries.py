"""CPU per query of a charon's state, as the lab polls it: over VICI (:mod:`resinfra.netlab.charon_state`) and, for
comparison, through the ``swanctl`` binary (``--list-sas --raw``, ``--list-conns --raw``), which the lab ran before.

Run as root: ``uv run python bench/charon_queries.py``. Brings up the dev stack's mesh in namespaces (as
``bench/mesh.py``), waits for every tunnel, then asks one gateway's charon ``CALLS`` times each way. CPU is this
process's plus its children's (swanctl runs as a child); the charon's own share is the same either way (the same VICI
request) and not counted.
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mesh import dev_values

from resinfra.lab.gateways import run_gateways, start_gateways
from resinfra.netlab import Lab, wait_for
from resinfra.netlab.lab import require_tools
from resinfra.offline import run_offline

CALLS = 100
ASKED = "hetzner"
NAME = os.environ.get("RESINFRA_BENCH_LAB_NAME", "rmq")
"""Overridable, so that two checkouts on one machine can run it at once."""


def cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def per_call(query: Callable[[], object]) -> tuple[float, float]:
    """(CPU ms, wall ms) per call of ``query``, over ``CALLS`` calls."""
    cpu, wall = cpu_seconds(), time.monotonic()
    for _ in range(CALLS):
        query()
    return (cpu_seconds() - cpu) * 1000 / CALLS, (time.monotonic() - wall) * 1000 / CALLS


def main() -> int:
    missing = require_tools()
    if missing:
        print(f"missing: {', '.join(missing)} (see .ci/run)", file=sys.stderr)
        return 1
    gateways = run_gateways(run_offline(dev_values()))
    with tempfile.TemporaryDirectory(prefix="rm-bench-") as workdir, Lab(NAME, Path(workdir)) as lab:
        lab.build(g.lab_site for g in gateways)
        start_gateways(lab, gateways)
        wait_for(lab.tunnels_up, 60, "every tunnel up")
        queries = {
            "child_sas over VICI": lambda: lab.child_sas(ASKED),
            "loaded over VICI": lambda: lab.loaded(ASKED),
            "swanctl --list-sas --raw": lambda: lab.swanctl(ASKED, "--list-sas", "--raw"),
            "swanctl --list-conns --raw": lambda: lab.swanctl(ASKED, "--list-conns", "--raw"),
        }
        print(f"{ASKED}'s charon: {len(lab.loaded(ASKED))} connections, {len(lab.child_sas(ASKED))} installed CHILD_SAs; {CALLS} calls each")
        for what, query in queries.items():
            cpu, wall = per_call(query)
            print(f"{what}: {cpu:.2f} ms CPU, {wall:.2f} ms wall per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
