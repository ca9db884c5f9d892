"""Operating the lab: bring it up, look at it, break it (kill a machine, partition a site), let the healer repair it,
and take it down.

Every command works from the lab's state directory (:mod:`resinfra.lab.state`), so the lab
outlives ``lab up``: its daemons run in their own sessions and later commands find them by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resinfra.addressing import Role
from resinfra.cli import StackFileError
from resinfra.config import ConfigError
from resinfra.lab import changes, pairs
from resinfra.lab.boot import boot_plan
from resinfra.lab.plan import LabPlan, inventory_document
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
from resinfra.mesh.crypto import DPD_DELAY_SECONDS
from resinfra.monitoring_local import NODE_EXPORTER_BIN
from resinfra.netlab import Lab, LabError, run, wait_for
from resinfra.netlab.charon import CHARON
from resinfra.netlab.charon import dead_peer_seconds as netlab_dead_peer_seconds
from resinfra.netlab.cloud_network import set_router, start_cloud
from resinfra.netlab.pair_members import remove_pair_member
from resinfra.render.cloud_init import NODE_EXPORTER_UNIT
from resinfra.render.monitoring import Endpoint
from resinfra.render.tooling_units import tooling_services

TOOLS = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "ping": "iputils-ping",
    "swanctl": "strongswan-swanctl",
    CHARON: "strongswan-charon libcharon-extra-plugins libstrongswan-standard-plugins",
    "bird": "bird2",
    "birdc": "bird2",
    "prometheus": "prometheus",
    "prometheus-alertmanager": "prometheus-alertmanager",
    "prometheus-blackbox-exporter": "prometheus-blackbox-exporter",
    NODE_EXPORTER_BIN: "prometheus-node-exporter",
    "keepalived": "keepalived",
    "curl": "curl",
    "jq": "jq",
}
"""What the lab runs, and the Debian package each comes from (``.ci/run`` installs them all)."""
UP_TIMEOUT = 90.0
"""Seconds to wait for every tunnel, then for every scrape target (each), before ``lab up`` gives up."""
UIS = ("prometheus", "alertmanager", "healer")


class LabUsageError(RuntimeError):
    """The command cannot run here (not root, tools missing, a lab already up)."""


def root_of(name: str) -> Path:
    return changes.STATE_ROOT / name


ROOT_NEEDS = {
    "up": "it creates network namespaces and runs IPsec gateways, the monitoring and the healer in them",
    "status": "it reads the lab's state (root's, under /var/lib/resinfra-lab) and asks the gateways in the lab's namespaces",
    "kill": "it kills the machine's processes and takes its links down inside the lab's namespaces",
    "replace": "it re-creates the machine's namespace and starts its processes",
    "partition": "it changes links inside the lab's namespaces",
    "heal": "it changes links inside the lab's namespaces",
    "kill-instance": "it changes links inside the lab's namespaces and stops the instance's gateways",
    "revive-instance": "it starts processes in the lab's namespaces",
    "restart-healer": "it signals the healer (root's process) and starts it again in the tooling VM's namespace",
    "down": "it stops the lab's processes and deletes its namespaces",
}
"""What each ``lab`` command does that only root may: said when a user runs it as someone else."""


def require_root(command: str) -> None:
    if os.geteuid() != 0:
        raise LabUsageError(
            f"resinfra lab {command} needs root: {ROOT_NEEDS[command]}. Run it as root, with the virtualenv's command: .venv/bin/resinfra lab {command}"
        )


def missing_tools() -> list[str]:
    """Tools the lab needs that are not installed, with their Debian packages."""
    return [
        f"{tool} (Debian: {package})"
        for tool, package in TOOLS.items()
        if not (Path(tool).exists() if tool.startswith("/") else shutil.which(tool) is not None)
    ]


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


# -- Prometheus and Alertmanager, through the host ports -----------------------------


def http_json(url: str, timeout: float = 5) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    body = http_json(f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    if body.get("status") != "success":
        raise LabError(f"{expr}: {body}")
    return list(body["data"]["result"])


def scrape_targets(port: int) -> list[dict[str, Any]]:
    return list(http_json(f"http://127.0.0.1:{port}/api/v1/targets?state=active")["data"]["activeTargets"])


def firing_alerts(port: int) -> list[dict[str, Any]]:
    """Alerts Alertmanager holds as active (what the healer is told about)."""
    return [a for a in http_json(f"http://127.0.0.1:{port}/api/v2/alerts?active=true&silenced=false&inhibited=false") if a["status"]["state"] == "active"]


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


def _machine_processes(state: LabState, machine: MachineRecord) -> list[str]:
    keys = [k for k in state.processes if k.startswith(f"{machine.name}/")]
    if machine.role is Role.GATEWAY:
        keys += [k for k in (f"{machine.site}/charon", f"{machine.site}/bird") if k in state.processes]
    return keys


def _write_inventory(state: LabState, inventory: Sequence[Mapping[str, Any]]) -> None:
    created = {name: m.created for name, m in state.machines.items()}
    write_atomic(Path(state.inventory_file), inventory_document(inventory, created))


def _read_inventory(state: LabState) -> list[dict[str, Any]]:
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
        raise LabUsageError("the lab needs tools that are not installed: " + "; ".join(missing) + ". `sudo bash .ci/run --packages` installs them.")
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
    out("Try: " + " | ".join([*tries, "lab down"]) + (f"  (all with --name {name})" if name != changes.LAB_NAME else ""))
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
        _write_inventory(state, plan.inventory)
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


def keep_logs(root: Path) -> Path:
    """Copy a lab's logs out of its state directory (which ``down`` removes)."""
    kept = root.with_name(f"{root.name}-failed-logs")
    shutil.rmtree(kept, ignore_errors=True)
    kept.mkdir(parents=True)
    for log in [*root.glob("logs/*.log"), *root.glob("net/*/*.log")]:
        shutil.copy(log, kept / (f"{log.parent.name}.{log.name}" if log.parent.name != "logs" else log.name))
    return kept


# -- health ---------------------------------------------------------------------


def tunnels_up(lab: Lab) -> bool:
    return lab.tunnels_up()


def tunnel_report(lab: Lab) -> dict[str, dict[str, bool]]:
    """Per charon (a strongSwan gateway, a cloud's tunnel), each of its connections and whether every child SA of it is
    installed. A cloud's tunnels the program does not expect up (Azure's instances try every connection) are left out."""
    report = {}
    for key in lab.charon_keys(expected_only=True):
        try:
            loaded, established = lab.loaded(key), lab.all_children_up(key)
        except LabError:
            report[key] = {}
            continue
        report[key] = {conn: conn in established for conn in sorted(loaded)}
    return report


def tunnel_sites(lab: Lab) -> dict[str, str]:
    """The site of each charon's namespace key (as :func:`tunnel_report` keys them)."""
    return {key: lab.site_of(key) for key in lab.charon_keys()}


def targets_healthy(state: LabState) -> bool:
    """Every node and mesh target scraped, every probe answered, and Prometheus, Alertmanager and the healer scraped."""
    try:
        targets = scrape_targets(state.ui["prometheus"])
    except OSError:
        return False
    scraped = [t for t in targets if t["labels"]["job"] in ("node", "mesh")]
    if len(scraped) != state.expected_targets or any(t["health"] != "up" for t in targets):
        return False
    failing = prometheus_query(state.ui["prometheus"], 'probe_success{job="mesh"} == 0')
    return not failing


def ping(state: LabState, source: str, target: str, timeout: float = 1.0) -> bool:
    """Whether machine ``source`` gets an answer from machine ``target``'s private address."""
    src, dst = state.machine(source), state.machine(target)
    deadline = str(max(1, int(timeout + 0.999)))
    result = run(
        "ip", "netns", "exec", src.namespace, "ping", "-c", "1", "-W", str(timeout), "-w", deadline, "-q", dst.private_ip, check=False, timeout=timeout + 5
    )
    return result.returncode == 0


# -- status ---------------------------------------------------------------------


def audit_events(state: LabState) -> list[dict[str, Any]]:
    path = Path(state.audit_log)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_event(state: LabState, match: Callable[[dict[str, Any]], bool], since: float, timeout: float) -> dict[str, Any]:
    """The first record of the healer's audit log at or after ``since`` (POSIX time) that ``match`` accepts."""
    found: list[dict[str, Any]] = []

    def seen() -> bool:
        found[:] = [e for e in audit_events(state) if e["ts"] >= since and match(e)][:1]
        return bool(found)

    wait_for(seen, timeout, "a matching event in the healer's audit log", interval=0.05)
    return found[0]


def status_report(name: str, events: int = 10) -> dict[str, Any]:
    """What ``lab status`` shows, as data."""
    require_root("status")  # the state directory is root's
    state = load(root_of(name))
    lab = state.netlab()
    report: dict[str, Any] = {
        "name": state.name,
        "stack": state.stack,
        "configFile": state.config_file,
        "workers": state.workers,
        "upSeconds": round(time.time() - state.created, 1),
        "ui": ui_urls(state),
        "partitioned": state.partitioned,
        "partitionedSeconds": {site: round(time.time() - at, 1) for site, at in state.partitioned_at.items()},
        "failedInstances": {s.key: s.failed_routers for s in state.sites if s.failed_routers},
        "tunnels": tunnel_report(lab),
        "tunnelSites": tunnel_sites(lab),
        "expectedTunnels": state.tunnels,
        "processes": {key: alive(p) for key, p in state.processes.items()},
        "deadMachines": sorted(m.name for m in state.machines.values() if m.dead),
        "gatewayPairs": pairs.pair_states(state),
    }
    try:
        report["targets"] = [
            {
                "job": t["labels"]["job"],
                "node": t["labels"].get("node", ""),
                "site": t["labels"].get("site", ""),
                "source": t["labels"].get("source_site", ""),
                "instance": t["labels"].get("instance", ""),
                "health": t["health"],
            }
            for t in scrape_targets(state.ui["prometheus"])
        ]
        report["alerts"] = [{"name": a["labels"]["alertname"], "labels": a["labels"], "since": a["startsAt"]} for a in firing_alerts(state.ui["alertmanager"])]
    except OSError as err:
        report["targets"], report["alerts"] = [], []
        report["monitoringError"] = f"{type(err).__name__}: {err}"
    report["healer"] = [e for e in audit_events(state) if e["event"] != "alert"][-events:]
    return report


def ui_urls(state: LabState) -> dict[str, str]:
    return {
        "prometheus": f"http://127.0.0.1:{state.ui['prometheus']}/",
        "alertmanager": f"http://127.0.0.1:{state.ui['alertmanager']}/",
        "healer": f"http://127.0.0.1:{state.ui['healer']}/metrics",
    }


def format_ui(state: LabState) -> str:
    urls = ui_urls(state)
    return "\n".join(
        [
            "UIs on this machine (forwarded into the tooling VM's namespace):",
            f"  Prometheus      {urls['prometheus']}   (in the lab: {state.ui_targets['prometheus']})",
            f"  Alertmanager    {urls['alertmanager']}   (in the lab: {state.ui_targets['alertmanager']})",
            f"  healer metrics  {urls['healer']}   (in the lab: {state.ui_targets['healer']})",
        ]
    )


def _target_name(target: dict[str, Any]) -> str:
    """A node's name; a probe's ``prober site -> probed machine``."""
    return f"{target['source']} -> {target['node']}" if target["source"] else target["node"] or target["instance"]


STATUS_WIDTH = 150
"""``lab status`` wraps longer lines at word boundaries."""


def dead_peer_seconds() -> float:
    """How long the lab's charons take to declare a silent peer dead (the mesh's DPD delay, then the lab's retransmits)."""
    return netlab_dead_peer_seconds(DPD_DELAY_SECONDS)


def format_status(report: dict[str, Any]) -> str:
    lines = [
        f"lab {report['name']}: stack {report['stack']} ({report['configFile']})"
        + (f", {report['workers']} worker(s) per site" if report["workers"] is not None else "")
        + f", up {report['upSeconds']:.0f} s",
        "",
        "UIs:",
        *(f"  {ui:13s} {url}" for ui, url in report["ui"].items()),
        "",
    ]
    ends = 2 * report["expectedTunnels"]
    established = sum(sum(conns.values()) for conns in report["tunnels"].values())
    lines.append(f"Tunnels: {report['expectedTunnels']} tunnels, {established}/{ends} ends established")
    members = {m["key"]: m for site_members in report["gatewayPairs"].values() for m in site_members}
    for key, conns in report["tunnels"].items():
        mark = "  PARTITIONED (uplink cut)" if report["tunnelSites"].get(key) in report["partitioned"] else ""
        if not conns and key in members:
            lines.append(f"  {key:24s} {members[key]['state']}: no tunnels loaded{mark}")
            continue
        lines.append(
            f"  {key:24s} "
            + (
                "  ".join(f"{c} {'up' if ok else 'DOWN'}" for c, ok in conns.items())
                or ("no links: a stack of one site" if report["expectedTunnels"] == 0 else "charon not answering")
            )
            + mark
        )
    for site, instances in report.get("failedInstances", {}).items():
        lines.append(f"  {site}: gateway instance(s) {', '.join(instances)} killed (lab revive-instance restores)")
    notice = dead_peer_seconds()
    for site, seconds in sorted(report.get("partitionedSeconds", {}).items()):
        if seconds < notice:
            lines.append(
                f"  {site} was cut off {seconds:.0f} s ago: its tunnels show up until dead-peer detection notices, "
                f"about {notice:.0f} s after the cut ({DPD_DELAY_SECONDS} s without traffic, then the lab's IKE retransmits)"
            )
    if report["gatewayPairs"]:
        lines += ["", "Gateway pairs (keepalived; the MASTER holds the shared address and carries the tunnels):"]
        for site, site_members in report["gatewayPairs"].items():
            lines.append(f"  {site:10s} " + "   ".join(f"{m['machine']} {m['state']}" for m in site_members))
    targets = report["targets"]
    up_count = sum(1 for t in targets if t["health"] == "up")
    lines += ["", f"Scrape targets: {up_count}/{len(targets)} up"]
    for job in sorted({t["job"] for t in targets}):
        of_job = [t for t in targets if t["job"] == job]
        down = [t for t in of_job if t["health"] != "up"]
        lines.append(f"  {job:13s} {len(of_job) - len(down)}/{len(of_job)} up" + ("; down: " + ", ".join(_target_name(t) for t in down) if down else ""))
    if "monitoringError" in report:
        lines.append(f"  (Prometheus/Alertmanager not answering: {report['monitoringError']})")
    lines += ["", f"Firing alerts: {len(report['alerts'])}"]
    for alert in report["alerts"]:
        labels = ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items()) if k in ("site", "node", "source_site", "tunnel"))
        lines.append(f"  {alert['name']:16s} {labels}  since {alert['since'][:19]}")
    lines += ["", "Healer (latest decisions and repairs, from its audit log):"]
    if not report["healer"]:
        lines.append("  none yet")
    for e in report["healer"]:
        what = " ".join(str(e[k]) for k in ("kind", "reason", "outcome") if e.get(k))
        subject = e.get("machine") or (f"site {e['site']}" if e.get("site") else "")
        head = f"  {e['time']}  {e['event']:17s} {subject:28s} {what}"
        # Whole words on lines of at most STATUS_WIDTH: a decision's detail is its reason spelled out.
        lines += textwrap.wrap(f"{head}  {e.get('detail', '')}".rstrip(), STATUS_WIDTH, subsequent_indent=" " * 24, break_long_words=False)
    dead = [k for k, ok in report["processes"].items() if not ok]
    lines += ["", f"Processes: {len(report['processes']) - len(dead)}/{len(report['processes'])} running" + (f"; stopped: {', '.join(dead)}" if dead else "")]
    if report["deadMachines"]:
        lines.append(f"Killed and not replaced yet: {', '.join(report['deadMachines'])}")
    return "\n".join(lines)


# -- breaking and repairing -------------------------------------------------------


def _stop_machine(state: LabState, machine_name: str) -> tuple[MachineRecord, Lab]:
    """SIGKILL a machine's processes (a gateway VM's charon and bird too); the tooling VM is refused: the monitoring and
    the healer run on it (the healer never replaces it either)."""
    machine = state.machine(machine_name)
    if machine.role is Role.TOOLING:
        raise LabUsageError(f"{machine_name} is the tooling VM: it runs the monitoring and the healer, which would then see nothing; use lab down")
    if machine.paired and machine.namespace in existing_namespaces():
        pairs.kill_member(state, machine)
    for key in _machine_processes(state, machine):
        stop(state.processes.pop(key), grace=0, sig=signal.SIGKILL)
    return machine, state.netlab()


def kill(name: str, machine_name: str) -> MachineRecord:
    """Kill a machine as a crash would: its processes get SIGKILL and its network goes dark. The tooling VM cannot be killed."""
    require_root("kill")
    with changing(root_of(name)) as state:
        machine, lab = _stop_machine(state, machine_name)
        # A worker's network goes with it; a gateway VM's site loses its way out. (A namespace that is missing is being
        # replaced right now: the machine is already gone.)
        if machine.namespace in existing_namespaces() and not machine.paired:
            lab.ns(machine.namespace, "ip", "link", "set", "dev", "eth0" if machine.own_namespace else "lan", "down")
        machine.dead = True
        return machine


HOLD_REPLACE_FILE = "hold-replace"
"""While this file exists in the lab's directory, a replacement waits before creating the machine again."""


def replace(name: str, machine_name: str, boot_seconds: float = changes.REPLACE_SECONDS) -> MachineRecord:
    """Replace a machine the way ``pulumi up --replace`` does in a cloud: destroy it, wait for the "provider", create
    it again and boot it from the same user-data; its inventory entry gets the new creation time.

    A worker's namespace is destroyed and created anew (a fresh node_exporter at the same
    address). A gateway VM's namespace also carries its site's network, so it is restarted
    in place (charon with the same swanctl.conf, node_exporter). Safe to run again after
    an interruption at any point.
    """
    require_root("replace")
    root = root_of(name)
    with changing(root) as state:
        machine, lab = _stop_machine(state, machine_name)
        if machine.node_index is not None:
            for pid in namespace_pids(machine.namespace) if machine.namespace in existing_namespaces() else []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            lab.remove_node(machine.site, machine.node_index)
        elif machine.paired:
            remove_pair_member(lab, machine.site, machine.namespace.removeprefix(f"{lab.name}-"))
        machine.dead = True
    time.sleep(boot_seconds)
    # A cloud slow to answer (as the engine emulators' RESINFRA_EMULATOR_HOLD): tests hold a repair in flight this way
    # instead of racing the 2 s "provider" on a loaded machine.
    while (root / HOLD_REPLACE_FILE).exists():
        time.sleep(0.1)
    with changing(root) as state:
        machine = state.machine(machine_name)
        lab = state.netlab()
        if machine.node_index is not None:
            lab.add_node(machine.site, machine.node_index)
        elif machine.paired:
            pairs.recreate_member(lab, machine)
        else:
            _restart_gateway(state, lab, machine)
        state.processes.update(boot_machine(lab, machine, Path(state.root) / "logs"))
        if machine.paired:
            state.processes.update(pairs.start_member(lab, machine, Path(state.root) / "logs"))
        machine.created = time.time()
        machine.dead = False
        _write_inventory(state, _read_inventory(state))
        return machine


def _restart_gateway(state: LabState, lab: Lab, machine: MachineRecord) -> None:
    site_dir = lab.site_dir(machine.site)
    lab.ns(machine.namespace, "ip", "link", "set", "dev", "lan", "up")
    lab.start_charon(machine.site, (site_dir / "swanctl.conf").read_text())
    state.processes[f"{machine.site}/charon"] = record_of(lab.charons[machine.site].process.pid, ["charon"], machine.namespace, lab.charons[machine.site].log)


def set_instance(name: str, site: str, instance: int, alive_: bool) -> str:
    """Kill (``alive_`` false) or revive a cloud's gateway instance: its tunnels' charons and its BGP speaker get SIGKILL
    and its links go down, as a failed Azure instance; revived, they come back as it restarts. Returns its key."""
    require_root("kill-instance" if not alive_ else "revive-instance")
    from resinfra.lab.clouds.azure import instance_key

    key = instance_key(instance)
    root = root_of(name)
    with changing(root) as state:
        record = state.site(site)
        if record.cloud is None or key not in {r.key for r in record.cloud.routers}:
            routers = [r.key for r in record.cloud.routers] if record.cloud is not None else []
            raise LabUsageError(f"site {site} has no gateway instance {instance} (instances: {', '.join(routers) or 'none'})")
        lab = state.netlab()
        parts = [Lab.part_key(site, key), *(Lab.part_key(site, t.key) for t in record.cloud.tunnels_of(key))]
        # Its links go first: a killed process's sockets close, and nothing of a dead instance (a BGP session's FIN)
        # may reach its peers.
        set_router(lab, site, key, alive_)
        for part in parts:
            for kind in ("charon", "bird"):
                process = state.processes.pop(f"{part}/{kind}", None)
                if process is not None:
                    stop(process, grace=0, sig=signal.SIGKILL)
        record.failed_routers = sorted(set(record.failed_routers) - {key} | (set() if alive_ else {key}))
    if alive_:
        start_cloud(lab, site, key)
        record_daemons(lab, root)
    return key


def set_partition(name: str, site: str, partitioned: bool) -> None:
    """Cut (``partition``) or restore (``heal``) a site's uplink: its gateway's only way to the other sites."""
    require_root("partition" if partitioned else "heal")
    with changing(root_of(name)) as state:
        state.site(site)
        state.netlab().set_uplink(site, not partitioned)
        state.partitioned = sorted(set(state.partitioned) - {site} | ({site} if partitioned else set()))
        state.partitioned_at = {s: t for s, t in state.partitioned_at.items() if s in state.partitioned}
        if partitioned:
            state.partitioned_at.setdefault(site, time.time())


def restart_healer(name: str, crash: bool = False) -> ProcessRecord:
    """Restart the healer: as ``systemctl restart`` would (SIGTERM; it lets a running repair finish), or with ``crash``
    as a crash would (SIGKILL to the healer and the repair it is running)."""
    require_root("restart-healer")
    root = root_of(name)
    state = load(root)  # not under the lock: a repair the healer waits for needs it
    old = state.processes.get("healer")
    if old is not None and alive(old):
        if crash:
            # The healer's process group; its running action has a group of its own (healer/leash.py),
            # which the kernel stops when the healer dies (PR_SET_PDEATHSIG), as a crash would.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(old.pid, signal.SIGKILL)
            wait_for(lambda: not alive(old), 10, "the healer gone")
        else:
            stop(old, grace=300)
    with changing(root) as state:
        state.processes["healer"] = spawn(state.tooling_namespace, state.healer_argv, Path(state.healer_log), network_only=True)
        return state.processes["healer"]


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
