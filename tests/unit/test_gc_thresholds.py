"""The collector's first threshold is raised while the program runs (resinfra/gc_thresholds.py), and only then."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from resinfra import gc_thresholds, stack
from resinfra.offline import run_offline
from tests.conftest import ROOT, shape


@pytest.fixture
def default_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's defaults (https://docs.python.org/3.11/library/gc.html)
    try:
        yield gc.get_threshold()
    finally:
        gc.set_threshold(*before)


def test_the_program_runs_with_the_raised_threshold_and_the_callers_comes_back(
    default_thresholds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []
    real_main = stack.main

    def main(export: Callable[[str, Any], None], *, offline: bool = False) -> stack.StackResult:
        seen.append(gc.get_threshold())
        return real_main(export, offline=offline)

    monkeypatch.setattr(stack, "main", main)
    run_offline(shape("hetzner"))
    assert seen == [(gc_thresholds.PROGRAM_FIRST_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == default_thresholds


def test_the_callers_threshold_comes_back_when_the_program_fails(default_thresholds: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    def main(export: Callable[[str, Any], None], *, offline: bool = False) -> stack.StackResult:
        raise RuntimeError("the program failed")

    monkeypatch.setattr(stack, "main", main)
    with pytest.raises(Exception, match="the program failed"):
        run_offline(shape("hetzner"))
    assert gc.get_threshold() == default_thresholds


def test_a_caller_with_a_higher_threshold_keeps_it() -> None:
    before = gc.get_threshold()
    gc.set_threshold(50_000, 10, 10)
    try:
        with gc_thresholds.while_the_program_runs():
            assert gc.get_threshold() == (50_000, 10, 10)
        assert gc.get_threshold() == (50_000, 10, 10)
    finally:
        gc.set_threshold(*before)


def test_the_engines_entry_point_raises_it_for_its_process() -> None:
    """``__main__.py`` as the Pulumi language host runs it (``runpy``), with the program itself stubbed out."""
    probe = (
        "import gc, runpy, resinfra.stack as s; s.main = lambda: None; "
        f"runpy.run_path({str(ROOT / '__main__.py')!r}, run_name='__main__'); print(gc.get_threshold()[0])"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert int(done.stdout) == gc_thresholds.PROGRAM_FIRST_THRESHOLD
