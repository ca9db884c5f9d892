"""Fewer garbage collections while the program runs: more than half its CPU went to the collector.

Measured (``bench/plan.py``, 2 cores): one run of the dev stack under mocks took 1.4-1.8 CPU-seconds with CPython's
default thresholds and 0.6-0.8 with this one. The Pulumi SDK makes tens of thousands of futures, tasks and ``Output``
objects per run (``pulumi/output.py``: each ``Output`` is a task, tracked in ``SETTINGS.outputs`` until it resolves),
most of them alive until the run ends. The collector starts a young collection every 700 net allocations
(``gc.set_threshold``, https://docs.python.org/3.11/library/gc.html) and, every hundred of those, a full one if the
objects promoted since the last full one exceed a quarter of the long-lived ones (CPython 3.11, ``Modules/gcmodule.c``; ``long_lived_pending``
in ``Include/internal/pycore_gc.h``): a workload that keeps what it allocates pays full collections, over the whole
heap with the provider SDKs' classes in it, again and again. A larger first threshold collects the same garbage
less often; the older generations' thresholds are kept.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

PROGRAM_FIRST_THRESHOLD = 10_000
"""Net allocations between two young collections while the program runs (CPython's default: 700). Past about 10,000
the measured gain stops; the peak memory of a dev-stack run grows by about 5 %."""


def for_the_program() -> None:
    """Raise the first threshold for the rest of this process: for ``__main__.py``, whose process only runs the program
    (the Pulumi language host runs the remaining ``Output`` work after the module returns)."""
    first, older, oldest = gc.get_threshold()
    gc.set_threshold(max(PROGRAM_FIRST_THRESHOLD, first), older, oldest)


@contextmanager
def while_the_program_runs() -> Iterator[None]:
    """Raise the first threshold for the block, then put back the one that was set (``run_offline`` runs inside the
    tests' and the lab's processes, which keep their own)."""
    before = gc.get_threshold()
    for_the_program()
    try:
        yield
    finally:
        gc.set_threshold(*before)
