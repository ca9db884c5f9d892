"""Shared fixtures: stack configs of several shapes, and the no-skip rule for CI."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import scheduling

ROOT = Path(__file__).resolve().parent.parent
STRICT_ENV = "RESINFRA_NO_SKIP"
"""Set by .ci/run: a test that would skip (missing tool, not root) fails instead."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(STRICT_ENV) == "1" and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped test counts as a failure under {STRICT_ENV}=1: {reason}"


def require_tool(name: str) -> str:
    """Path of a command-line tool, or skip (fail in CI) saying which package provides it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (see .ci/run for the Debian package)")
    return path


WORKER_MARKS = "0123456789abcdefghijklmnopqrstuvwxyz"


def lab_name_for_tests(variable: str, default: str, suffix: str = "") -> str:
    """A lab name for a test module (1-6 lowercase letters or digits): the first four characters of ``$variable``
    (or ``default``), one character for the pytest-xdist worker (none outside xdist), then ``suffix`` (at most one
    character), so no two workers, and no two modules with different suffixes, ever share a lab."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under pytest-xdist; unset otherwise
    mark = WORKER_MARKS[int(worker.removeprefix("gw"))] if worker.startswith("gw") else ""
    return os.environ.get(variable, default)[:4] + mark + suffix


SHARED_SCOPES = {"package", "module", "class"}


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: three workers per core (or ``$PYTEST_XDIST_AUTO_NUM_WORKERS``). The lab, integration and healer
    tests mostly wait on timers (scrapes, alerts' ``for``, dead-peer detection), not on the CPU: on 2 cores the five
    longest modules (labs, the healer's faults) each get a worker and one more takes the quick ones meanwhile."""
    given = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    return int(given) if given else 3 * (os.cpu_count() or 1)


SLOW_DIRECTORIES = ("tests/lab/", "tests/integration/", "tests/engine/")
"""Where a module's shared fixture is a lab, real daemons or an engine project: minutes, not seconds."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The modules longest first (as measured, ``tests/module_seconds.json``; a module not measured yet is guessed
    slow when it shares a lab, daemons or an engine project), so that under ``--dist loadscope`` (a module to one
    worker, its fixture set up once; ``--no-loadscope-reorder`` keeps this order) the long ones start at once while
    the quick ones fill the gaps (``tests/scheduling.py``)."""
    slow = set()
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else []
        module = scheduling.module_of(item.nodeid)
        if module.startswith(SLOW_DIRECTORIES) and any(d.scope in SHARED_SCOPES for defs in definitions for d in defs):
            slow.add(module)
    table = scheduling.measured_seconds()
    items.sort(key=lambda item: -scheduling.expected_seconds(scheduling.module_of(item.nodeid), scheduling.module_of(item.nodeid) in slow, table))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadscope`` with the longest modules first and none queued behind another (``tests/scheduling.py``)."""
    if config.getoption("dist") != "loadscope":
        return None
    return scheduling.LongestFirstScopeScheduling(config, log)


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")


TEST_PRIVATE_KEY = "-----BEGIN OPENSSH " + "PRIVATE KEY-----\ntest-only, not a key\n-----END OPENSSH " + "PRIVATE KEY-----\n"


def dev_config() -> dict[str, Any]:
    """The dev stack's config values, as in Pulumi.dev.yaml, plus the secret the engine would add."""
    values = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    values["resinfra:sshPrivateKey"] = TEST_PRIVATE_KEY
    return values


def shape(*providers: str) -> dict[str, Any]:
    """The dev config reduced to the sites of ``providers``."""
    values = copy.deepcopy(dev_config())
    values["resinfra:sites"] = [s for s in values["resinfra:sites"] if s["provider"] in providers]
    return values


STACK_SHAPES = {
    "all-four": ("gcp", "azure", "hetzner", "proxmox"),
    "hetzner-only": ("hetzner",),
    "hetzner-proxmox": ("hetzner", "proxmox"),
    "gcp-azure": ("gcp", "azure"),
}


class OfflineRuns(dict[str, Any]):
    """The program's offline run per stack shape, each made the first time a test asks for it: under pytest-xdist every
    worker has its own session, and most workers' tests need only one shape."""

    def __missing__(self, name: str) -> Any:
        from resinfra.offline import run_offline

        self[name] = run_offline(shape(*STACK_SHAPES[name]), stack_name="dev")
        return self[name]


@pytest.fixture(scope="session")
def offline_runs() -> OfflineRuns:
    """One offline run of the program per stack shape (shared: each takes about a second)."""
    return OfflineRuns()


@dataclass(frozen=True)
class CommandResult:
    """What one ``resinfra`` command printed, and its exit code."""

    code: int
    out: str
    err: str


def run_command(argv: list[str]) -> CommandResult:
    """``resinfra ARGV`` in this process, its output captured."""
    from resinfra import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return CommandResult(code, out.getvalue(), err.getvalue())


@dataclass
class DevStackCommands:
    """``resinfra plan``, ``plan --json`` and ``render`` on the dev stack, each run the first time a test asks, for
    the tests that only read what they print or write (a test that changes the config or the files runs its own)."""

    render_dir: Path
    _done: dict[str, CommandResult] = field(default_factory=dict)

    def _once(self, *argv: str) -> CommandResult:
        if argv not in self._done:
            self._done[argv] = run_command(list(argv))
            assert self._done[argv].code == 0, self._done[argv].err
        return self._done[argv]

    @property
    def plan(self) -> CommandResult:
        return self._once("plan")

    @property
    def plan_json(self) -> dict[str, Any]:
        return json.loads(self._once("plan", "--json").out)

    @property
    def render(self) -> tuple[Path, CommandResult]:
        """The directory ``render --out`` wrote (read it, do not change it) and what it printed."""
        return self.render_dir, self._once("render", "--out", str(self.render_dir))


@pytest.fixture(scope="session")
def dev_stack(tmp_path_factory: pytest.TempPathFactory) -> DevStackCommands:
    """The dev stack's plan, JSON plan and render, shared by the tests that only read them (each run takes about a
    second; a dozen tests read the same three)."""
    return DevStackCommands(tmp_path_factory.mktemp("dev-render") / "out")


FAILOVER_TOKEN_SENTINEL = "hcloud-failover-token-sentinel-0123"


def paired_config(*providers: str) -> dict[str, Any]:
    """The dev config reduced to ``providers`` (all four by default), with ``gateways: 2`` on its Hetzner and Proxmox
    sites and the Hetzner pair's API token set (a sentinel to look for)."""
    values = shape(*(providers or STACK_SHAPES["all-four"]))
    for site in values["resinfra:sites"]:
        if site["provider"] in ("hetzner", "proxmox"):
            site["gateways"] = 2
    values["resinfra:hetznerFailoverToken"] = FAILOVER_TOKEN_SENTINEL
    return values
