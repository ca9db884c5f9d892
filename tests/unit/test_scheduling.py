"""The suite's own scheduling (tests/scheduling.py): long modules first, none queued behind another."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from tests import scheduling
from tests.conftest import ROOT

TABLE = {"tests/lab/test_partitions.py": 170.0, "tests/lab/test_pairs.py": 165.0, "tests/lab/test_prod.py": 138.0}
COLLECTION = [
    "tests/lab/test_partitions.py::test_twenty",  # one test: xdist tops its worker up at once
    *(f"tests/lab/test_pairs.py::test_{i}" for i in range(6)),
    *(f"tests/lab/test_prod.py::test_{i}" for i in range(6)),
    *(f"tests/unit/test_quick_{m}.py::test_{i}" for m in "abcdef" for i in range(3)),
]


class FakeWorker:
    """What the scheduler calls on a worker: the tests it is sent, and shutdown."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.gateway = SimpleNamespace(id=name)
        self.shutting_down = False
        self.sent: list[str] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(COLLECTION[i] for i in indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def modules_sent(kind: type[LoadScopeScheduling], workers: int, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each worker's modules, in the order they were sent, after the scheduler's first distribution."""
    monkeypatch.setattr(scheduling, "measured_seconds", lambda: dict(TABLE))
    config: Any = SimpleNamespace(getvalue=lambda name: [f"{workers}*popen"], option=SimpleNamespace(loadscopereorder=False))
    scheduler = kind(config)
    nodes = [FakeWorker(f"gw{i}") for i in range(workers)]
    for node in nodes:
        scheduler.add_node(node)  # type: ignore[arg-type]
        scheduler.add_node_collection(node, COLLECTION)  # type: ignore[arg-type]
    scheduler.schedule()
    return [list(dict.fromkeys(nodeid.split("::")[0] for nodeid in node.sent)) for node in nodes]


def test_a_worker_busy_with_a_long_module_is_topped_up_with_the_quickest(monkeypatch: pytest.MonkeyPatch) -> None:
    first = modules_sent(scheduling.LongestFirstScopeScheduling, 4, monkeypatch)[0]
    assert first == ["tests/lab/test_partitions.py", "tests/unit/test_quick_f.py"]


def test_xdists_own_loadscope_queues_a_long_module_behind_another(monkeypatch: pytest.MonkeyPatch) -> None:
    # Why tests/scheduling.py exists: on two workers xdist's loadscope queues the third-longest module behind the first.
    assert modules_sent(LoadScopeScheduling, 2, monkeypatch)[0] == ["tests/lab/test_partitions.py", "tests/lab/test_prod.py"]
    assert modules_sent(scheduling.LongestFirstScopeScheduling, 2, monkeypatch)[0] == ["tests/lab/test_partitions.py", "tests/unit/test_quick_f.py"]


def test_the_table_names_only_modules_that_exist() -> None:
    table = scheduling.measured_seconds()
    stale = [module for module in table if not (ROOT / module).is_file()]
    assert stale == [], "tests/module_seconds.json names modules that are gone: run bench/suite.py --record"


def test_unmeasured_modules_sharing_a_lab_are_guessed_slow() -> None:
    table = scheduling.measured_seconds()
    assert scheduling.expected_seconds("tests/lab/test_new.py", True, table) > scheduling.expected_seconds("tests/unit/test_new.py", False, table)
