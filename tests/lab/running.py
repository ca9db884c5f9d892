"""What the root lab tests share: the ``resinfra lab`` command as a user runs it, a lab up for a module, path checks."""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator

import pytest

from resinfra.lab import failover
from resinfra.lab.observe import ping
from resinfra.lab.preconditions import missing_tools, root_of
from resinfra.lab.state import LabState, load
from resinfra.netlab import wait_for
from tests.conftest import ROOT, require_root


def lab_command(name: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``resinfra lab ARGS --name NAME`` as a separate process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "resinfra.cli", "lab", *args, "--name", name], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def lab_up(name: str, *args: str) -> Iterator[tuple[LabState, str]]:
    """A lab up for the module's tests (``lab up ARGS``), taken down after them; yields its state and ``up``'s output."""
    require_root()
    missing = missing_tools()
    if missing:
        pytest.skip(f"the lab needs {', '.join(missing)} (see .ci/run)")
    lab_command(name, "down")
    up = lab_command(name, "up", *args)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"lab {name} is up in" in up.stdout and up.stdout.count("done in") >= 8, up.stdout
        yield load(root_of(name)), up.stdout
    finally:
        lab_command(name, "down")


def assert_own_tunnels(lab: LabState, timeout: float) -> None:
    """Between the first workers of every two sites, the trace crosses only the two sites' namespaces and a burst shows
    on the SAs of their own tunnel, at both ends, and of no other."""
    first = failover.first_workers(lab)
    for a, b in itertools.combinations(sorted(first), 2):
        wait_for(lambda a=a, b=b: ping(lab, first[a].name, first[b].name), timeout, f"{a} -> {b}")
    problems = {pair: evidence for pair, evidence in failover.own_tunnels(lab).items() if evidence.problems}
    assert not problems, problems
