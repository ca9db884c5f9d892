"""The healer's production act (``PulumiActuator``: the Automation API, the real CLI) on the deployed
dev stack: one worker replaced with its dependents, the stack lock respected, a timeout interrupted cleanly."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resinfra.emulators.provider import HOLD_ENV
from resinfra.healer.act import Outcome, PulumiActuator, StackRef, read_stack_inventory
from resinfra.healer.inventory import Machine, created_times, parse_inventory
from tests.engine.harness import Project

WORKER = "ri-dev-proxmox-worker-1"
"""A Proxmox worker: its firewall resources must be replaced with it (replaceWith)."""


@pytest.fixture(scope="module")
def healer_copy(project: Project, dev: dict[str, str]) -> Path:
    """The healer's own copy of the project (as on the tooling VM): it sets ``resinfra:pushVia``
    in its stack file, which the deployer's copy never sees."""
    copy = project.dir.parent / "healer-project"
    shutil.copytree(project.dir, copy, ignore=shutil.ignore_patterns(".venv", "__pycache__"))
    return copy


@pytest.fixture()
def healer_env(project: Project, healer_copy: Path, monkeypatch: pytest.MonkeyPatch) -> StackRef:
    """The healer's process environment: the engine on PATH (the Automation API runs `pulumi` from there)."""
    for key in ("PATH", "PULUMI_HOME", "PULUMI_SKIP_UPDATE_CHECK", "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "RESINFRA_EMULATOR_STATE"):
        monkeypatch.setenv(key, project.env[key])
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    return StackRef(
        stack="dev",
        project_dir=str(healer_copy),
        backend_url=project.env["PULUMI_BACKEND_URL"],
        env={"PULUMI_CONFIG_PASSPHRASE": project.env["PULUMI_CONFIG_PASSPHRASE"]},
    )


def state(project: Project) -> dict[str, Any]:
    return json.loads(project.export("dev"))["deployment"]


def worker(ref: StackRef) -> Machine:
    machines, _ = read_stack_inventory(ref)
    return next(m for m in machines if m.name == WORKER)


def test_replaces_exactly_the_machine_and_its_followers(project: Project, healer_env: StackRef) -> None:
    """``pulumi up --replace --target --target-dependents`` through the Automation API: the worker and
    the resources that follow it (replaceWith) get new creation times; nothing else is re-created."""
    ref = healer_env
    machine = worker(ref)
    before = state(project)
    followers = {r["urn"] for r in before["resources"] if machine.urn in r.get("replaceWith", [])}
    assert followers, "a Proxmox VM's firewall options and rules follow it"

    result = PulumiActuator(ref).replace(machine, "node-down", timeout=600)
    assert result.outcome is Outcome.SUCCEEDED, result.detail

    after = state(project)
    old, new = created_times(before), created_times(after)
    recreated = {urn for urn in new if urn in old and new[urn] != old[urn]}
    assert recreated == {machine.urn} | followers
    assert set(new) == set(old), "nothing added or lost"
    machines, created = read_stack_inventory(ref)
    assert machine in machines, "the inventory keeps the machine (same name, site, role and URN)"
    assert created[machine.urn] > old[machine.urn]
    project.pulumi("preview", "--expect-no-changes", stack="dev")


@pytest.fixture()
def hold(tmp_path: Path) -> Iterator[Path]:
    """A held cloud: creates, updates and deletes wait while the file exists."""
    path = tmp_path / "hold"
    path.touch()
    yield path
    path.unlink(missing_ok=True)


def wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.2)


def test_a_held_lock_is_reported_and_the_repair_succeeds_later(project: Project, healer_env: StackRef, hold: Path) -> None:
    """While an operator's ``pulumi up`` holds the stack lock the repair is ``locked`` and changes nothing; after it, the repair succeeds."""
    ref = healer_env
    machine = worker(ref)
    other = next(m for m in parse_inventory(project.outputs("dev")["inventory"]) if m.name == "ri-dev-hetzner-worker-1")
    operator = subprocess.Popen(
        ["pulumi", "up", "--yes", "--skip-preview", "--stack", "dev", "--replace", other.urn, "--target", other.urn],
        cwd=project.dir,
        env={**project.env, HOLD_ENV: str(hold)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(Path(f"{hold}.waiting"), 120)
        before = created_times(state(project))
        locked = PulumiActuator(ref).replace(machine, "node-down", timeout=300)
        assert locked.outcome is Outcome.LOCKED, locked.detail
        assert created_times(state(project)) == before
    finally:
        hold.unlink()
        assert operator.wait(timeout=300) == 0
    later = PulumiActuator(ref).replace(machine, "node-down", timeout=600)
    assert later.outcome is Outcome.SUCCEEDED, later.detail


def test_a_repair_past_its_timeout_is_interrupted_and_leaves_no_pending_operation(
    project: Project, healer_env: StackRef, hold: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The update is still in a cloud operation at the timeout: SIGINT, Pulumi finishes that
    operation and stops; the state has no pending operation and the next update converges."""
    ref = healer_env
    machine = worker(ref)
    monkeypatch.setenv(HOLD_ENV, str(hold))
    timeout = 45.0
    """Past the program's run (about 10 s here): the timeout falls while a cloud operation is held."""
    waiting = Path(f"{hold}.waiting")
    seen: dict[str, float] = {}

    def release_after_the_interrupt() -> None:
        wait_for(waiting, timeout)
        seen["held"] = time.monotonic()
        while time.monotonic() < started + timeout + 3:
            time.sleep(0.2)
        hold.unlink()

    started = time.monotonic()
    threading.Thread(target=release_after_the_interrupt, daemon=True).start()
    result = PulumiActuator(ref).replace(machine, "node-down", timeout=timeout)
    assert result.outcome is Outcome.TIMEOUT, result.detail
    assert seen.get("held", float("inf")) < started + timeout, "the timeout fell while an operation was in flight"
    assert time.monotonic() - started < timeout + 60, "SIGINT let the CLI stop once the operation in flight finished"
    monkeypatch.delenv(HOLD_ENV)
    exported = state(project)
    assert not exported.get("pending_operations"), exported.get("pending_operations")
    project.pulumi("up", "--yes", "--skip-preview", stack="dev")
    project.pulumi("preview", "--expect-no-changes", stack="dev")
