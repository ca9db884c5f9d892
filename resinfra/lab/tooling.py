"""The tooling VM's processes in the lab: its pushed files written, its services and the healer started with them, and
the forwarder that brings its UIs to this machine's loopback."""

from __future__ import annotations

import secrets
import shlex
import socket
import sys
from pathlib import Path

from resinfra.lab.plan import LabPlan
from resinfra.lab.state import changing, spawn, write_atomic
from resinfra.render.monitoring import Endpoint
from resinfra.render.tooling_units import tooling_services

UIS = ("prometheus", "alertmanager", "healer")


def start_tooling(plan: LabPlan, root: Path) -> None:
    """Write the tooling VM's pushed files (the three push sets) and its healer's, and start its services."""
    from resinfra.monitoring_local import write_files

    token = secrets.token_urlsafe(32)
    write_files(plan.monitoring, None, healer_token=token, grafana_password=secrets.token_urlsafe(16))
    layout = plan.monitoring.layout
    for directory in (layout.prometheus_data_dir, layout.alertmanager_data_dir):
        Path(directory).mkdir(parents=True, exist_ok=True)
    for secret in (layout.healer_token_file, layout.grafana_password_file, layout.alertmanager_config, plan.healer_layout.token_file):
        if Path(secret).exists():
            Path(secret).chmod(0o600)
    write_atomic(Path(plan.healer_layout.token_file), token, 0o600)
    write_atomic(Path(plan.healer_layout.settings_file), plan.healer.model_dump_json(by_alias=True, indent=2) + "\n", 0o600)
    logs = root / "logs"
    namespace = plan.tooling.namespace
    healer_argv = healer_command(plan)
    with changing(root) as state:
        for service in tooling_services(layout):
            key = f"{plan.tooling.name}/{service.unit.removesuffix('.service')}"
            state.processes[key] = spawn(namespace, service.argv, logs / f"{plan.tooling.name}.{service.unit.removesuffix('.service')}.log")
        state.healer_argv = healer_argv
        state.healer_log = str(logs / "healer.log")
        state.processes["healer"] = spawn(namespace, healer_argv, Path(state.healer_log), network_only=True)


def healer_command(plan: LabPlan) -> list[str]:
    """``resinfra heal`` as on the tooling VM, with the lab's settings, its inventory file and the lab's replacement as
    the local action (instead of ``pulumi up --replace``)."""
    action = shlex.join([sys.executable, "-m", "resinfra.lab.cli", "replace", "--name", plan.name])
    return [
        sys.executable,
        "-m",
        "resinfra.cli",
        "heal",
        "--settings",
        plan.healer_layout.settings_file,
        "--inventory",
        str(plan.inventory_file),
        "--action-command",
        action,
    ]


def start_forwarder(plan: LabPlan, root: Path) -> None:
    layout = plan.monitoring.layout
    targets: dict[str, Endpoint] = {"prometheus": layout.prometheus, "alertmanager": layout.alertmanager, "healer": layout.healer}
    listeners = {}
    for ui in UIS:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        listeners[ui] = listener
    specs = [f"{listeners[ui].fileno()}={targets[ui]}" for ui in UIS]
    try:
        record = spawn(
            plan.tooling.namespace,
            [sys.executable, "-m", "resinfra.lab.forward", *specs],
            root / "logs" / "forward.log",
            pass_fds=[s.fileno() for s in listeners.values()],
        )
    finally:
        ports = {ui: int(listener.getsockname()[1]) for ui, listener in listeners.items()}
        for listener in listeners.values():
            listener.close()
    with changing(root) as state:
        state.processes["forward"] = record
        state.ui = ports
        state.ui_targets = {ui: str(targets[ui]) for ui in UIS}
