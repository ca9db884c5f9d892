"""Bringing the lab up and taking it down: the program run offline and realised in namespaces (``lab up``), every
process stopped and every namespace deleted (``lab down``); and what both share with the repairs of
:mod:`resinfra.lab.actions`: booting a machine, recording the gateways' daemons, the inventory file.

Every command works from the lab's state directory (:mod:`resinfra.lab.state`), so the lab
outlives ``lab up``: its daemons run in their own sessions and later commands find them by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resinfra.addressing import Role
from resinfra.cli import StackFileError
from resinfra.config import ConfigError
from resinfra.lab import changes, pairs
from resinfra.lab.boot import boot_plan
from resinfra.lab.names import LAB_NAME
from resinfra.lab.observe import targets_healthy, tunnels_up
from resinfra.lab.plan import LabPlan, inventory_document
from resinfra.lab.preconditions import LabUsageError, missing_tools, require_root, root_of
from resinfra.lab.state import (
    LabState,
    MachineRecord,
    ProcessRecord,
    SiteRecord,
    alive,
    boot_id,
    changing,
    existing_namespaces,
    load,
    locked,
    namespace_pids,
    record_of,
    save,
    spawn,
    state_path,
    stop,
    write_atomic,
)
from resinfra.lab.status import format_ui
from resinfra.lab.tooling import start_forwarder, start_tooling
from resinfra.netlab import Lab, LabError, wait_for
from resinfra.render.cloud_init import NODE_EXPORTER_UNIT

UP_TIMEOUT = 90.0
"""Seconds to wait for every tunnel, then for every scrape target (each), before ``lab up`` gives up."""


# -- progress -------------------------------------------------------------------


@dataclass
class Progress:
    """Prints each step of ``lab up`` with how long it took."""

    out: Callable[[str], None] = print
    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        began = time.monotonic()
        self.out(f"  {what} ...")
        yield
        seconds = time.monotonic() - began
        self.steps.append((what, seconds))
        self.out(f"    done in {seconds:.1f} s")

    @property
    def total(self) -> float:
        return time.monotonic() - self.started


# -- machines -------------------------------------------------------------------


def boot_machine(lab: Lab, machine: MachineRecord, logs: Path) -> dict[str, ProcessRecord]:
    """Boot a machine from its user-data: write its files, run its oneshots, start its daemons (returned by key)."""
    root = Path(machine.root)
    boot = boot_plan(machine.name, (root / "user-data.yaml").read_text(), root)
    for path, content in boot.files:
        write_atomic(path, content)
    started = {}
    for service in boot.services:
        if service.oneshot:
            for command in service.commands:
                lab.ns(machine.namespace, *command)
            continue
        key = f"{machine.name}/{service.unit}"
        argv = service.argv
        if machine.paired and service.unit == NODE_EXPORTER_UNIT:
            argv = (*argv, *pairs.textfile_args(machine))  # changes.py, change 10
        started[key] = spawn(machine.namespace, argv, logs / f"{machine.name}.{service.unit}.log")
    return started


def write_inventory(state: LabState, inventory: Sequence[Mapping[str, Any]]) -> None:
    created = {name: m.created for name, m in state.machines.items()}
    write_atomic(Path(state.inventory_file), inventory_document(inventory, created))


def read_inventory(state: LabState) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "created"} for m in json.loads(Path(state.inventory_file).read_text())]


# -- up -------------------------------------------------------------------------


def up(
    name: str,
    stack_name: str | None,
    config_file: str | None,
    workers: int | None,
    out: Callable[[str], None] = print,
) -> LabState:
    """Run the program offline and realise what it declares on this machine; returns the running lab's state.

    Raises :class:`LabUsageError` (not root, tools missing, already up), a config error, or
    :class:`resinfra.netlab.LabError` (something did not come up; everything started is stopped again).
    """
    require_root("up")
    missing = missing_tools()
    if missing:
        raise LabUsageError("the lab needs tools that are not installed: " + "; ".join(missing) + ". `bash .ci/run --packages`, as root, installs them.")
    root = root_of(name)
    if state_path(root).exists() and load(root).boot_id != boot_id():
        out(f"lab {name} was up before this machine rebooted: clearing its state")
        shutil.rmtree(root)
    if state_path(root).exists():
        raise LabUsageError(f"lab {name} is already up ({root}); take it down first: resinfra lab down --name {name}")
    leftovers = sorted(ns for ns in existing_namespaces() if ns.startswith(f"{name}-"))
    if leftovers:
        raise LabUsageError(
            f"namespaces named like lab {name}'s exist but no lab {name} is recorded: {', '.join(leftovers)}. "
            "They were not created by a lab this machine knows of; remove them with `ip netns del NAME` if they are stale, or use --name."
        )
    if root.exists():
        shutil.rmtree(root)  # a directory without a state file: an `up` that died before it created anything
    progress = Progress(out)
    out(f"resinfra lab up: lab {name}, state in {root}")
    try:
        return _up(name, root, stack_name, config_file, workers, progress)
    except (ConfigError, StackFileError):
        # Refused before anything was created: no logs to keep, nothing to stop.
        out("lab up refused the stack config; nothing was started")
        raise
    except BaseException:
        kept = keep_logs(root)
        out(f"lab up failed after {progress.total:.1f} s; stopping what it started (logs kept in {kept})")
        down(name, out=lambda line: None)
        raise


def _up(name: str, root: Path, stack_name: str | None, config_file: str | None, workers: int | None, progress: Progress) -> LabState:
    from resinfra import cli
    from resinfra.lab.plan import lab_plan
    from resinfra.offline import run_offline

    out = progress.out
    with progress.step("running the program offline (the path of resinfra plan and render)"):
        stack, path = cli.stack_file(stack_name, config_file)
        values, secret_keys = cli.read_stack_config(path)
        values, replaced = changes.with_lab_addresses(changes.with_workers(values, workers))
        for note in replaced:
            out(f"    {note}")
        run_ = run_offline(values, stack_name=stack, secret_keys=secret_keys)
        plan = lab_plan(run_, name, root)
        out(
            f"    stack {stack} ({path}): {len(plan.gateways)} sites, {len(plan.machines)} machines, {plan.tunnels} tunnels"
            + (f" ({workers} worker(s) per site)" if workers is not None else "")
        )
    state = _record_plan(plan, stack, path, workers)
    lab = state.netlab()
    with progress.step(f"creating {len(state.namespaces)} network namespaces ({name}-*): the internet bridge, a gateway per site, a namespace per machine"):
        lab.build(g.lab_site for g in plan.gateways)
    with progress.step(
        "starting the gateways: the rendered swanctl.conf on strongSwan VMs; Azure and GCP played from the settings handed to "
        "them (a charon per tunnel, their route tables, BGP)"
    ):
        lab.workdir.mkdir(parents=True, exist_ok=True)
        start_gateways_recorded(lab, plan, root)
    logs = root / "logs"
    if any(g.lab_site.pair is not None for g in plan.gateways):
        step = "starting the gateway pairs: charon, keepalived and the notify script as rendered; the Hetzner API emulated"
        with progress.step(step), changing(root) as state:
            pairs.start_pairs(run_, lab, state, logs)
    with progress.step("booting every machine from its user-data (node_exporter; blackbox_exporter on probers)"), changing(root) as state:
        for machine in state.machines.values():
            state.processes.update(boot_machine(lab, machine, logs))
    with progress.step("starting the tooling VM: Prometheus, Alertmanager, blackbox_exporter and the healer with the rendered configs"):
        start_tooling(plan, root)
    with progress.step("forwarding the UIs to this machine's loopback"):
        start_forwarder(plan, root)
    state = load(root)
    with progress.step(f"waiting for every tunnel ({plan.tunnels}) to be established"):
        wait_for(lambda: tunnels_up(state.netlab()), UP_TIMEOUT, "every tunnel established", interval=0.2)
    with progress.step(f"waiting for Prometheus to scrape every machine and probe ({state.expected_targets} targets) across the tunnels"):
        wait_for(lambda: targets_healthy(state), UP_TIMEOUT, "every scrape target up", interval=0.5)
    out(f"lab {name} is up in {progress.total:.1f} s")
    out("")
    out(format_ui(state))
    out("")
    out(
        f"Timings are the lab's, not production's (resinfra/lab/changes.py): scrapes every {changes.LAB_TIMINGS.scrape_interval} s, "
        f"NodeDown after {changes.LAB_TIMINGS.node_down_for} s (production: 15 s and 60 s), healer startup grace "
        f"{changes.STARTUP_GRACE_SECONDS} s, cooldown {changes.COOLDOWN_SECONDS} s."
    )
    tries = ["resinfra lab status"]
    victim = kill_suggestion(state)
    if victim is not None:
        tries.append(f"lab kill {victim}")
    for record in state.sites:
        active = pairs.active_member(state, record.key) if record.pair is not None else None
        if active is not None:
            tries.append(f"lab kill {active.name} (the active gateway of {record.key}'s pair)")
    # A partition cuts a site off from the tooling VM's: a stack of one site has none to cut.
    site = next((s.key for s in state.sites if s.key != state.machines[plan.tooling.name].site), None)
    if site is not None:
        tries += [f"lab partition {site}", f"lab heal {site}"]
    out("Try: " + " | ".join([*tries, "lab down"]) + (f"  (all with --name {name})" if name != LAB_NAME else ""))
    return state


def kill_suggestion(state: LabState) -> str | None:
    """A worker whose death is a NodeDown: its site keeps another machine (else the site goes dark, a partition),
    preferably across a tunnel from the tooling VM."""
    tooling_site = next(m.site for m in state.machines.values() if m.role is Role.TOOLING)
    candidates = [m for m in state.machines.values() if m.role is Role.WORKER and any(o.site == m.site and o.name != m.name for o in state.machines.values())]
    ranked = sorted(candidates, key=lambda m: (m.site == tooling_site, -(m.node_index or 0)))
    return ranked[0].name if ranked else None


def _record_plan(plan: LabPlan, stack: str, path: Path, workers: int | None) -> LabState:
    """The state before anything exists: every namespace the lab may create, its sites and machines."""
    plan.root.mkdir(parents=True, exist_ok=True)
    plan.root.chmod(0o700)
    now = time.time()
    machines = {}
    for m in plan.machines:
        root = plan.machine_root(m.name)
        write_atomic(root / "user-data.yaml", m.user_data)
        machines[m.name] = MachineRecord(**m.model_dump(exclude={"user_data"}), root=str(root), created=now)
    state = LabState(
        name=plan.name,
        root=str(plan.root),
        created=now,
        boot_id=boot_id(),
        stack=stack,
        config_file=str(path),
        workers=workers,
        namespaces=plan.namespaces(),
        sites=[SiteRecord.of(g.lab_site) for g in plan.gateways],
        machines=machines,
        tunnels=plan.tunnels,
        expected_targets=len(plan.monitoring.nodes) + len(plan.monitoring.probe_pairs()),
        tooling_namespace=plan.tooling.namespace,
        inventory_file=str(plan.inventory_file),
        audit_log=plan.healer.audit_log,
    )
    with locked(plan.root):
        save(state)
        write_inventory(state, plan.inventory)
    return state


def start_gateways_recorded(lab: Lab, plan: LabPlan, root: Path) -> None:
    """Every gateway's charon (a cloud's: one per tunnel), then bird where BGP runs; their PIDs recorded."""
    from resinfra.lab.gateways import start_gateways

    try:
        start_gateways(lab, plan.gateways)
    finally:
        record_daemons(lab, root)


def record_daemons(lab: Lab, root: Path) -> None:
    """Record the charons and birds ``lab`` started (by namespace key) in the state."""
    with changing(root) as state:
        for kind, daemons in (("charon", lab.charons), ("bird", lab.birds)):
            for key, daemon in daemons.items():
                if daemon.process.poll() is None:
                    state.processes[f"{key}/{kind}"] = record_of(daemon.process.pid, [kind], lab.gw_ns(key), daemon.log)


def keep_logs(root: Path) -> Path:
    """Copy a lab's logs out of its state directory (which ``down`` removes)."""
    kept = root.with_name(f"{root.name}-failed-logs")
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for log in [*root.glob("logs/*.log"), *root.glob("net/*/*.log")]:
        shutil.copy(log, kept / (f"{log.parent.name}.{log.name}" if log.parent.name != "logs" else log.name))
    return kept


# -- down -----------------------------------------------------------------------


def down(name: str, out: Callable[[str], None] = print) -> bool:
    """Stop every process the lab started (by PID) and delete the namespaces it created; returns whether there was a lab.

    Safe to run twice, and on a lab whose ``up`` failed half-way.
    """
    require_root("down")
    root = root_of(name)
    if not root.exists():
        out(f"no lab {name} is up: nothing to do")
        return False
    started = time.monotonic()
    stopped = removed = swept = 0
    if state_path(root).exists():
        state = load(root)
        healer = state.processes.get("healer")
        if healer is not None and alive(healer):
            stopped += 1
            # First, and without the lock: a repair in progress holds it. Its action dies with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(healer.pid, signal.SIGTERM)
            with contextlib.suppress(LabError):
                wait_for(lambda: not alive(healer), 5, "the healer gone")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(healer.pid, signal.SIGKILL)
        with locked(root):
            state = load(root)
            for record in reversed(list(state.processes.values())):
                if alive(record):
                    stop(record)
                    stopped += 1
            present = existing_namespaces()
            for namespace in reversed(state.namespaces):
                if namespace not in present:
                    continue
                # Anything still inside a namespace of the lab was started in it (a repair's daemon not yet recorded).
                for pid in namespace_pids(namespace):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    swept += 1
                subprocess.run(["ip", "netns", "del", namespace], check=False, capture_output=True)
                removed += 1
    shutil.rmtree(root, ignore_errors=True)
    out(
        f"lab {name} is down in {time.monotonic() - started:.1f} s: {stopped} processes stopped"
        + (f" (and {swept} left in its namespaces)" if swept else "")
        + f", {removed} namespaces removed, {root} deleted"
    )
    return True
