"""Breaking and repairing a running lab: kill or replace a machine, kill or revive a cloud's gateway instance, cut or
restore a site's uplink, restart the healer."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from resinfra.lab.preconditions import LabUsageError, require_root, root_of
from resinfra.lab.state import LabState, MachineRecord, ProcessRecord, alive, changing, existing_namespaces, load, namespace_pids, record_of, spawn, stop
from resinfra.netlab import Lab, wait_for
from resinfra.netlab.cloud_network import set_router, start_cloud
from resinfra.netlab.pair_members import remove_pair_member
from resinfra.roles import Role

# The lab's plan and boot (the program, the renderers) and its gateway pairs load in the actions that need them:
# `lab partition` and `lab heal` run many times in a session and only change links.


def _machine_processes(state: LabState, machine: MachineRecord) -> list[str]:
    keys = [k for k in state.processes if k.startswith(f"{machine.name}/")]
    if machine.role is Role.GATEWAY:
        keys += [k for k in (f"{machine.site}/charon", f"{machine.site}/bird") if k in state.processes]
    return keys


def _stop_machine(state: LabState, machine_name: str) -> tuple[MachineRecord, Lab]:
    """SIGKILL a machine's processes (a gateway VM's charon and bird too); the tooling VM is refused: the monitoring and
    the healer run on it (the healer never replaces it either)."""
    from resinfra.lab import pairs

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


def replace(name: str, machine_name: str, boot_seconds: float | None = None) -> MachineRecord:
    """Replace a machine the way ``pulumi up --replace`` does in a cloud: destroy it, wait for the "provider", create
    it again and boot it from the same user-data; its inventory entry gets the new creation time.

    A worker's namespace is destroyed and created anew (a fresh node_exporter at the same
    address). A gateway VM's namespace also carries its site's network, so it is restarted
    in place (charon with the same swanctl.conf, node_exporter). Safe to run again after
    an interruption at any point. ``boot_seconds``: the "provider"'s wait (default ``changes.REPLACE_SECONDS``).
    """
    from resinfra.lab import changes, pairs
    from resinfra.lab.cluster import boot_machine, read_inventory, write_inventory

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
    time.sleep(changes.REPLACE_SECONDS if boot_seconds is None else boot_seconds)
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
        write_inventory(state, read_inventory(state))
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
        from resinfra.lab.cluster import record_daemons

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
