"""A pytest plugin for ``bench/suite.py --record``: each test module's wall time (its tests' setup, call and
teardown), written to ``$RESINFRA_MODULE_TIMES`` at the end of the run, for ``tests/module_seconds.json``.

Loaded with ``-p module_times`` (``bench/`` on ``PYTHONPATH``). Under pytest-xdist the controller receives every
worker's reports, so it alone writes the file.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import pytest

SECONDS: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    SECONDS[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("RESINFRA_MODULE_TIMES")
    if target and not hasattr(session.config, "workerinput"):  # the controller, or a run without xdist
        Path(target).write_text(json.dumps(dict(SECONDS), indent=1, sort_keys=True) + "\n")
