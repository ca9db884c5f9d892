"""How the suite's modules are spread over pytest-xdist's workers: longest first, and no long module queued behind
another.

``--dist loadscope`` sends a module's tests to one worker, so a lab, daemons or an engine project they share is set
up once. Two things made the suite take as long as its two slowest modules in a row: the modules ran in collection
order, and xdist tops a worker up with the next module as soon as it has two tests or fewer left to run (it must
know a worker's next test before running the current one; xdist ``LoadScopeScheduling._reschedule``, and its
``schedule`` "at least two work units" pass, pytest-xdist#277). A worker that has just started the one-test,
three-minute partitions module was handed the next long module, to run after it.

So the modules are ordered by how long they took (``tests/module_seconds.json``, written by
``bench/suite.py --record``), and a worker whose remaining tests belong to a long module is topped up from the
quick end of the queue instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from xdist.remote import Producer
from xdist.scheduler import LoadScopeScheduling
from xdist.workermanage import WorkerController

MODULE_SECONDS_FILE = Path(__file__).with_name("module_seconds.json")
LONG_SECONDS = 60.0
"""A module this long is not worth waiting behind: its worker is topped up with quick modules only."""
UNMEASURED_SECONDS = {True: 30.0, False: 1.0}
"""A module not in the table yet: one sharing a lab, daemons or an engine project (True) is guessed slow."""


def measured_seconds() -> dict[str, float]:
    """Each module's measured wall time (setup, calls and teardown of its tests), by path from the repository."""
    return {module: float(seconds) for module, seconds in json.loads(MODULE_SECONDS_FILE.read_text())["seconds"].items()}


def module_of(nodeid: str) -> str:
    return nodeid.split("::")[0]


def expected_seconds(module: str, shares_a_slow_fixture: bool, table: dict[str, float]) -> float:
    return table.get(module, UNMEASURED_SECONDS[shares_a_slow_fixture])


class LongestFirstScopeScheduling(LoadScopeScheduling):
    """``loadscope`` over a queue ordered longest first (the collection order, see ``tests/conftest.py``; run with
    ``--no-loadscope-reorder``), except that a worker busy with a long module is topped up from the queue's end."""

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        self.table = measured_seconds()

    def _busy_with_a_long_module(self, node: WorkerController) -> bool:
        return any(
            not done and self.table.get(module_of(scope), 0.0) >= LONG_SECONDS
            for scope, unit in self.assigned_work.get(node, {}).items()
            for done in unit.values()
        )

    def _assign_work_unit(self, node: WorkerController) -> None:
        if self._busy_with_a_long_module(node) and len(self.workqueue) > 1:
            quickest = next(reversed(self.workqueue))
            self.workqueue.move_to_end(quickest, last=False)  # the base class takes the queue's first unit
        super()._assign_work_unit(node)
