"""Shared fixtures: stack configs of several shapes, and the no-skip rule for CI."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

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


def lab_name_for_tests(variable: str, default: str, suffix: str = "") -> str:
    """A lab name for a test module (1-6 lowercase letters or digits): ``$variable`` (or ``default``), then the
    pytest-xdist worker's number, then ``suffix``, so two workers, or two checkouts given different names, never share one."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under pytest-xdist; unset otherwise
    number = worker.removeprefix("gw") if worker.startswith("gw") else ""
    base = os.environ.get(variable, default)
    return base[: 6 - len(number) - len(suffix)] + number + suffix


SHARED_SCOPES = {"package", "module", "class"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that share a fixture wider than one test (a lab, running daemons, an engine project) go to one
    pytest-xdist worker (``--dist loadgroup``), so it is set up once; those groups are the slow ones and go first."""
    grouped: list[pytest.Item] = []
    free: list[pytest.Item] = []
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else []
        if any(d.scope in SHARED_SCOPES for defs in definitions for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
            grouped.append(item)
        else:
            free.append(item)
    items[:] = grouped + free


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


@pytest.fixture(scope="session")
def offline_runs() -> dict[str, Any]:
    """One offline run of the program per stack shape (shared: each takes about a second)."""
    from resinfra.offline import run_offline

    return {name: run_offline(shape(*providers), stack_name="dev") for name, providers in STACK_SHAPES.items()}
