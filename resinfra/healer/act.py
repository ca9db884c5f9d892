"""Act: replace a machine. The Automation API adapter (``pulumi up --replace URN --target URN --target-dependents``)
and the local actions the loopback tests and the lab use instead, behind one interface.

Everything up to the Automation API call is pure (:func:`up_request`) and unit-tested; the
call itself (:func:`automation_up`) is a thin adapter, run against the real Pulumi CLI and the
project's cloud emulators by ``tests/engine/test_healer.py`` (no cloud is reachable from a test
machine).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from resinfra.healer import leash
from resinfra.healer.inventory import Machine, created_times, parse_inventory

log = logging.getLogger("resinfra.healer.act")

PULUMI_CLI = "pulumi"
PULUMI_CLI_MISSING = (
    "the pulumi CLI is not on PATH: the healer acts through the Pulumi Automation API, which runs the CLI. "
    "Install it (the resinfra VM's healer push puts it in /opt/pulumi/bin) or run `resinfra heal` with --inventory and --action-command "
    "for a local action"
)


class PulumiCliMissing(RuntimeError):
    """The Automation API cannot work: no ``pulumi`` executable."""


def require_pulumi_cli(path: str | None = None) -> str:
    """Path of the ``pulumi`` CLI, or :class:`PulumiCliMissing` with what to do (checked at start-up, not at the first repair).

    Without it every Automation API call fails with a bare ``FileNotFoundError`` from
    ``pulumi version``, which says nothing about the cause.
    """
    found = shutil.which(PULUMI_CLI, path=path)
    if found is None:
        raise PulumiCliMissing(PULUMI_CLI_MISSING)
    return found


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    LOCKED = "locked"
    """Another update holds the stack's lock (an operator's or CI's ``pulumi up``): nothing was done, try later."""
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class RepairResult:
    outcome: Outcome
    detail: str = ""


class Actuator(Protocol):
    """Replaces one machine; blocks until done or ``timeout`` seconds have passed."""

    def replace(self, machine: Machine, reason: str, timeout: float) -> RepairResult: ...


@dataclass(frozen=True)
class StackRef:
    """The stack the healer acts on: the same project, stack and backend as the deployer's."""

    stack: str
    """Stack name (``dev``), or fully qualified for Pulumi Cloud (``org/resinfra/dev``)."""
    project_dir: str
    """The project (``Pulumi.yaml``, ``Pulumi.<stack>.yaml``, the program) the healer runs."""
    backend_url: str
    """``gs://bucket``, ``azblob://container``, ``s3://bucket`` or ``https://api.pulumi.com``."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Credentials for the backend, the secrets provider and the providers (``HCLOUD_TOKEN``, ...)."""
    config_overrides: Mapping[str, str] = field(default_factory=lambda: {"resinfra:pushVia": "private"})
    """Set in the healer's own copy of the stack file before each update: from the resinfra VM
    configuration pushes reach machines on their private addresses (public SSH admits the admin CIDRs only)."""


@dataclass(frozen=True)
class UpRequest:
    """Exactly what the Automation API is asked to do (the act layer's tested surface)."""

    stack: str
    work_dir: str
    env: Mapping[str, str]
    config: Mapping[str, str]
    replace: tuple[str, ...]
    target: tuple[str, ...]
    target_dependents: bool
    message: str


def up_request(ref: StackRef, machine: Machine, reason: str) -> UpRequest:
    """The update that replaces ``machine``: its VM replaced and targeted, dependents included.

    ``--target`` keeps the update to that machine (and what depends on it, such as the
    pushes to a replaced gateway); ``--replace`` forces the new VM. Example:
    ``up_request(ref, machine, "node-down").replace == (machine.urn,)``.
    """
    return UpRequest(
        stack=ref.stack,
        work_dir=ref.project_dir,
        env={**ref.env, "PULUMI_BACKEND_URL": ref.backend_url, "PULUMI_SKIP_UPDATE_CHECK": "true"},
        config=dict(ref.config_overrides),
        replace=(machine.urn,),
        target=(machine.urn,),
        target_dependents=True,
        message=f"resinfra healer: replace {machine.name} ({machine.role.value} on {machine.site}): {reason}",
    )


def _pulumi_children() -> list[int]:
    """PIDs of ``pulumi`` processes this process started (Linux /proc)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == me and comm == PULUMI_CLI:
            found.append(int(entry.name))
    return found


def interrupt_pulumi() -> int:
    """SIGINT to every ``pulumi`` CLI this process started (Pulumi finishes the operations in progress, then stops); returns how many."""
    children = _pulumi_children()
    for pid in children:
        os.kill(pid, signal.SIGINT)
    return len(children)


INTERRUPT_GRACE = 120.0
"""Seconds between SIGINT (Pulumi finishes the resource operations in progress, then stops)
and SIGTERM, after a repair's timeout."""


def _stack(request: UpRequest) -> Any:
    from pulumi import automation as auto

    workspace = auto.LocalWorkspaceOptions(work_dir=request.work_dir, env_vars=dict(request.env))
    stack = auto.select_stack(stack_name=request.stack, work_dir=request.work_dir, opts=workspace)
    for key, value in request.config.items():
        stack.set_config(key, auto.ConfigValue(value=value))
    return stack


def automation_up(request: UpRequest, timeout: float) -> RepairResult:
    """Run the update through the Automation API (the thin adapter; needs the CLI and the backend)."""
    from pulumi import automation as auto

    result: dict[str, Any] = {}

    def run() -> None:
        try:
            stack = _stack(request)
            up = stack.up(
                replace=list(request.replace),
                target=list(request.target),
                target_dependents=request.target_dependents,
                message=request.message,
                color="never",
                on_output=lambda line: log.info("pulumi: %s", line),
            )
            result["value"] = RepairResult(Outcome.SUCCEEDED, f"update {up.summary.result}: {up.summary.resource_changes}")
        except auto.ConcurrentUpdateError as err:
            result["value"] = RepairResult(Outcome.LOCKED, str(err)[-1000:])
        except auto.CommandError as err:
            result["value"] = RepairResult(Outcome.FAILED, str(err)[-2000:])
        except Exception as err:  # the SDK parsing the CLI's answer, a missing project: a failed repair, not a dead worker
            result["value"] = RepairResult(Outcome.FAILED, f"{type(err).__name__}: {err}"[-2000:])

    worker = threading.Thread(target=run, name="pulumi-up", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        # Never `pulumi cancel`: that may cut a resource operation in half. SIGINT lets the
        # CLI finish what is in progress and stop; SIGTERM if it does not.
        interrupt_pulumi()
        worker.join(INTERRUPT_GRACE)
        for pid in _pulumi_children():
            os.kill(pid, signal.SIGTERM)
        worker.join(30)
        return RepairResult(Outcome.TIMEOUT, f"no result within {timeout:g} s; the update was interrupted")
    return result.get("value", RepairResult(Outcome.FAILED, "the update ended without a result"))


def read_stack_inventory(ref: StackRef) -> tuple[list[Machine], dict[str, float]]:
    """The stack's ``inventory`` output and every resource's creation time (from the exported state)."""
    request = UpRequest(ref.stack, ref.project_dir, {**ref.env, "PULUMI_BACKEND_URL": ref.backend_url}, {}, (), (), False, "")
    stack = _stack(request)
    outputs = stack.outputs()
    if "inventory" not in outputs:
        raise RuntimeError(f"stack {ref.stack} has no inventory output: run pulumi up once before starting the healer")
    deployment = stack.export_stack().deployment or {}
    return parse_inventory(outputs["inventory"].value), created_times(deployment)


def request_json(request: UpRequest) -> bytes:
    return json.dumps({**dataclasses.asdict(request), "env": dict(request.env), "config": dict(request.config)}).encode()


def request_from_json(data: bytes) -> UpRequest:
    raw = json.loads(data)
    return UpRequest(**{**raw, "replace": tuple(raw["replace"]), "target": tuple(raw["target"])})


RESULT_MARK = "resinfra-repair-result: "


def automation_up_leashed(request: UpRequest, timeout: float) -> RepairResult:
    """:func:`automation_up` in a process group of its own (``python -m resinfra.healer.act``, the request on stdin: it
    carries credentials), so the Pulumi CLI it starts is stopped with the healer (:mod:`resinfra.healer.leash`)."""
    # The child interrupts its own update after ``timeout``; the leash's deadline is the backstop.
    done = leash.run(
        [sys.executable, "-m", "resinfra.healer.act", str(timeout)], os.environ, timeout + INTERRUPT_GRACE + 60, INTERRUPT_GRACE, request_json(request) + b"\n"
    )
    for line in reversed(done.output.splitlines()):
        if line.startswith(RESULT_MARK):
            raw = json.loads(line.removeprefix(RESULT_MARK))
            return RepairResult(Outcome(raw["outcome"]), raw["detail"])
    if done.returncode is None:
        return RepairResult(Outcome.TIMEOUT, f"no result within {timeout:g} s; the update was stopped")
    return RepairResult(Outcome.FAILED, f"the update process ended without a result (exit {done.returncode}): {done.output[-1000:]}")


def main() -> int:
    """The leashed update: an :class:`UpRequest` as JSON on stdin, ``automation_up(request, timeout)``, the result on stdout."""
    # SIGINT reaches the whole group: the Pulumi CLI finishes what it started; this process waits for it.
    signal.signal(signal.SIGINT, lambda *_: None)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    request = request_from_json(sys.stdin.buffer.readline())
    timeout = float(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_UP_TIMEOUT
    result = automation_up(request, timeout)
    print(RESULT_MARK + json.dumps({"outcome": result.outcome.value, "detail": result.detail}), flush=True)
    return 0


DEFAULT_UP_TIMEOUT = 2700.0


class PulumiActuator:
    """Replaces machines with ``pulumi up`` through the Automation API, in its own process group. Refuses to exist without the CLI."""

    def __init__(self, ref: StackRef, run: Callable[[UpRequest, float], RepairResult] = automation_up_leashed, cli_path: str | None = None):
        self.cli = require_pulumi_cli(cli_path)
        self.ref = ref
        self._run = run

    def replace(self, machine: Machine, reason: str, timeout: float) -> RepairResult:
        return self._run(up_request(self.ref, machine, reason), timeout)


COMMAND_STOP_GRACE = 10.0
"""Seconds a local action gets between SIGINT and SIGTERM after its timeout."""


@dataclass
class CommandActuator:
    """A local action: runs ``argv`` with the machine in its environment (``RESINFRA_MACHINE``, ``_SITE``, ``_ROLE``, ``_URN``).

    For the lab and loopback runs, where "replacing" a machine means restarting what stands in for it.
    It runs in its own process group on a leash (:mod:`resinfra.healer.leash`).
    """

    argv: Sequence[str]
    stop_grace: float = COMMAND_STOP_GRACE

    def replace(self, machine: Machine, reason: str, timeout: float) -> RepairResult:
        env = {
            **os.environ,
            "RESINFRA_MACHINE": machine.name,
            "RESINFRA_SITE": machine.site,
            "RESINFRA_ROLE": machine.role.value,
            "RESINFRA_URN": machine.urn,
            "RESINFRA_REASON": reason,
        }
        try:
            done = leash.run(self.argv, env, timeout, self.stop_grace)
        except OSError as err:
            return RepairResult(Outcome.FAILED, f"{self.argv[0]}: {err}")
        output = done.output.strip()[-1000:]
        if done.returncode is None:
            return RepairResult(Outcome.TIMEOUT, f"{self.argv[0]} did not finish within {timeout:g} s: {output}")
        return RepairResult(Outcome.SUCCEEDED if done.returncode == 0 else Outcome.FAILED, f"exit {done.returncode}: {output}")


@dataclass
class CallableActuator:
    """A local action in-process: ``action(machine)``; an exception is a failed repair."""

    action: Callable[[Machine], None]
    calls: list[tuple[str, float]] = field(default_factory=list)

    def replace(self, machine: Machine, reason: str, timeout: float) -> RepairResult:
        self.calls.append((machine.name, time.time()))
        try:
            self.action(machine)
        except Exception as err:  # a local action's failure is the repair's failure
            return RepairResult(Outcome.FAILED, f"{type(err).__name__}: {err}")
        return RepairResult(Outcome.SUCCEEDED, "local action done")


if __name__ == "__main__":
    sys.exit(main())
