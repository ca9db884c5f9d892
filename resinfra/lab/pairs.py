"""Gateway pairs in the lab (``gateways: 2``): each member a namespace of its own running charon, keepalived and the
notify script as rendered; the Hetzner API's address moves emulated in one place (:mod:`resinfra.lab.hcloud_api`).

A pair site's namespace ``<lab>-<site>`` plays the site's network: a Hetzner network's router at the subnet's ``.1``
(its routes to the other sites point at the member the API names), or a Proxmox bridge (its ``.1`` stands for the
host's own address; the workers route the other sites through the pair's VRRP address, as rendered). Each member
``<lab>-<site>-gw-<k>`` has ``wan`` on the underlay (its own public address) and ``lan`` on that bridge
(:func:`resinfra.netlab.pair_members.add_pair_member`). Every other site reaches a Proxmox pair's VRRP address by ARP
(keepalived's gratuitous ARPs move it) and a Hetzner Floating IP through the member the emulated API assigned it to.

Killing a member is a VM dying: every process in its namespace frozen, its links down, then SIGKILL (keepalived sends
no priority-0 advert, charon no IKE delete). Its replacement is created anew and boots as the standby (``nopreempt``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resinfra.addressing import SiteAddresses
from resinfra.failover.plan import FailoverLayout, GatewayFailover, Interface, parse_env
from resinfra.lab.changes import HCLOUD_ACTION_SECONDS
from resinfra.lab.changes import LAB_FAILOVER_TOKEN as TOKEN
from resinfra.lab.state import LabState, MachineRecord, ProcessRecord, alive, namespace_pids, record_of, spawn, write_atomic
from resinfra.netlab import Lab, LabError, run, wait_for
from resinfra.netlab.charon import pin_reqids
from resinfra.netlab.pair_members import add_pair_member, remove_pair_member
from resinfra.netlab.topology import PairMember, PairNetwork
from resinfra.render.failover import render_env, render_failover_script, render_keepalived

if TYPE_CHECKING:
    from resinfra.offline import OfflineRun

API_PORT = 8080
NETWORK_GATEWAY_OFFSET = 1
"""Hetzner networks route through their first address (docs.hetzner.com/cloud/networks/faq: the gateway is .1)."""
API_PROCESS = "{site}/hcloud-api"
"""The state's key of a Hetzner site's emulated API."""


def member_key(site: str, index: int) -> str:
    """A member's namespace key: ``hetzner-gw-1`` (namespace ``<lab>-hetzner-gw-1``; the VM is ``<prefix>-hetzner-gw-1``)."""
    return f"{site}-gw-{index}"


def network_lan(addresses: SiteAddresses) -> ipaddress.IPv4Interface:
    """The pair site's network namespace's address: the subnet's ``.1``."""
    return ipaddress.IPv4Interface(f"{addresses.subnet.network_address + NETWORK_GATEWAY_OFFSET}/{addresses.subnet.prefixlen}")


def rendered(run_: OfflineRun, machine: str, purpose: str) -> str:
    return next(str(f.content) for f in run_.files if f.machine == machine and f.purpose == purpose)


def rendered_failovers(run_: OfflineRun, site: str) -> list[GatewayFailover]:
    """The pair's members' failover settings, as rendered (their environment files)."""
    return [parse_env(rendered(run_, m.name, "failover")) for m in run_.result.plan[site].gateway_vms]


def pair_network(run_: OfflineRun, site: str) -> PairNetwork:
    """What :class:`resinfra.netlab.Lab` builds for a pair site, from the rendered failover settings (pure)."""
    addresses = run_.result.plan[site]
    failovers = rendered_failovers(run_, site)
    members = []
    for k, (vm, failover) in enumerate(zip(addresses.gateway_vms, failovers, strict=True), start=1):
        public = [s for s in failover.shared if s.interface is Interface.PUBLIC]
        # A Proxmox member's own address is in the range with the VRRP address (on-link); a Primary IP is a /32.
        prefix = ipaddress.IPv4Interface(public[0].address).network.prefixlen if failover.hetzner is None else 32
        members.append(PairMember(member_key(site, k), failover.public_ip, prefix, f"{vm.private_ip}/{addresses.subnet.prefixlen}"))
    shared = [s.address.split("/")[0] for s in failovers[0].shared if s.interface is Interface.PUBLIC]
    hetzner = failovers[0].hetzner is not None
    # Hetzner's DHCP gives a server's private NIC a route to the network's whole range via its gateway
    # (docs.hetzner.com/cloud/networks/server-configuration): a standby reaches the other sites through the active member.
    lan_routes = ((run_.config.supernet, str(network_lan(addresses).ip)),) if hetzner else ()
    return PairNetwork(
        members=tuple(members),
        arp_addresses=() if hetzner else tuple(shared),
        routed_addresses=tuple(shared) if hetzner else (),
        lan_routes=lan_routes,
    )


def lab_failover(failover: GatewayFailover, directory: Path, vici_uri: str, endpoint: str | None) -> GatewayFailover:
    """A member's failover with its files under ``directory`` (keepalived refuses a notify script in a directory others
    may write: the lab's state directory is root's), its charon's socket and, on Hetzner, the emulated API's endpoint."""
    layout = FailoverLayout(
        script=str(directory / "resinfra-failover"),
        env_file=str(directory / "gateway.env"),
        keepalived_conf=str(directory / "keepalived.conf"),
        interfaces_conf=str(directory / "interfaces.conf"),
        swanctl_file=str(directory / "swanctl.conf"),
        token_file=str(directory / "hcloud-token"),
        state_dir=str(directory / "state"),
        textfile_dir=str(directory / "textfile"),
        vici_uri=vici_uri,
    )
    hetzner = dataclasses.replace(failover.hetzner, endpoint=endpoint) if failover.hetzner is not None and endpoint else failover.hetzner
    return dataclasses.replace(failover, layout=layout, hetzner=hetzner)


def failover_dir(machine_root: Path) -> Path:
    return machine_root / "failover"


def api_endpoint(addresses: SiteAddresses) -> str:
    return f"http://{network_lan(addresses).ip}:{API_PORT}/v1"


def write_member_files(run_: OfflineRun, lab: Lab, machine: str, key: str, machine_root: Path) -> GatewayFailover:
    """Write a member's pushed files (what ``GatewayPair`` pushes: the script, its settings, keepalived.conf, the pair's
    swanctl.conf, the token) under its machine directory, with the lab's paths; returns its failover."""
    site = lab.site_of(key)
    addresses = run_.result.plan[site]
    directory = failover_dir(machine_root)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    original = parse_env(rendered(run_, machine, "failover"))
    failover = lab_failover(original, directory, lab.vici(key), api_endpoint(addresses) if original.hetzner is not None else None)
    layout = failover.layout
    write_atomic(Path(layout.script), render_failover_script(), 0o755)
    write_atomic(Path(layout.env_file), render_env(failover))
    write_atomic(Path(layout.keepalived_conf), render_keepalived(failover))
    write_atomic(Path(layout.swanctl_file), pin_reqids(rendered(run_, machine, "swanctl")), 0o600)
    if failover.hetzner is not None:
        write_atomic(Path(layout.token_file), TOKEN, 0o400)
    return failover


def member_failover(machine: MachineRecord) -> GatewayFailover:
    """A member's failover as the lab wrote it (its environment file)."""
    return parse_env((failover_dir(Path(machine.root)) / "gateway.env").read_text())


def api_settings(run_: OfflineRun, lab: Lab, site: str, log: Path, action_seconds: float) -> dict[str, Any]:
    """The emulated Hetzner project of a Hetzner pair (:class:`resinfra.lab.hcloud_api.Settings`): its servers, the
    Floating IP (unassigned, as the program creates it), the network's routes as declared (every other site's block
    via the pair's first member: ``sites/hetzner.py``), and the namespaces that play the cloud's routing."""
    addresses = run_.result.plan[site]
    failovers = rendered_failovers(run_, site)
    first = failovers[0].hetzner
    assert first is not None
    pair = lab.sites[site].pair
    assert pair is not None
    own = {m.key for m in pair.members}
    underlay = [lab.gw_ns(k) for s in lab.sites.values() for k in ([m.key for m in s.pair.members] if s.pair else [s.key]) if k not in own]
    return {
        "listen_host": str(network_lan(addresses).ip),
        "listen_port": API_PORT,
        "token": TOKEN,
        "servers": {f.hetzner.server_id: f.public_ip for f in failovers if f.hetzner is not None},
        "floating_ips": {first.floating_ip_id: {"ip": pair.routed_addresses[0], "server": None}},
        "networks": {first.network_id: [[r, str(addresses.gateway_vms[0].private_ip)] for r in first.routes]},
        "network_namespace": lab.gw_ns(site),
        "underlay_namespaces": underlay,
        "underlay_device": "wan",
        "action_seconds": action_seconds,
        "log": str(log),
    }


def start_api(namespace: str, settings: Mapping[str, Any], directory: Path) -> ProcessRecord:
    """Start a Hetzner pair's emulated API in its network's namespace; returns it once it listens."""
    settings_file = directory / "hcloud-api.json"
    write_atomic(settings_file, json.dumps(settings), 0o600)
    record = spawn(namespace, [sys.executable, "-m", "resinfra.lab.hcloud_api", str(settings_file)], directory / "hcloud-api.out")
    port = f":{settings['listen_port']} "

    def listening() -> bool:
        return port in run("ip", "netns", "exec", namespace, "ss", "-ltnH", check=False).stdout

    wait_for(lambda: listening() or not alive(record), 20, f"the emulated Hetzner API in {namespace}", interval=0.1)
    if not alive(record):
        raise LabError(f"the emulated Hetzner API exited; see {directory / 'hcloud-api.out'}")
    return record


def start_member(lab: Lab, machine: MachineRecord, logs: Path) -> dict[str, ProcessRecord]:
    """Boot a member's pushed services: charon running with nothing loaded (as on the VM: the pair's tunnels are loaded
    by the notify script on MASTER), the NIC names written (the script's ``interfaces``), then keepalived."""
    key = machine.namespace.removeprefix(f"{lab.name}-")
    layout = member_failover(machine).layout
    (Path(layout.state_dir) / "state").unlink(missing_ok=True)  # a dead VM's /run is gone with it
    lab.start_charon(key, "")
    charon = lab.charons[key]
    started = {f"{machine.name}/charon": record_of(charon.process.pid, ["charon"], machine.namespace, charon.log)}
    lab.ns(machine.namespace, layout.script, layout.env_file, "interfaces")
    argv = ["keepalived", "--dont-fork", "--log-console", "--log-detail", "--vrrp", "--use-file", layout.keepalived_conf]
    argv += ["--pid", str(Path(layout.state_dir).parent / "keepalived.pid"), "--vrrp_pid", str(Path(layout.state_dir).parent / "vrrp.pid")]
    started[f"{machine.name}/keepalived"] = spawn(machine.namespace, argv, logs / f"{machine.name}.keepalived.log")
    return started


def kill_member(state: LabState, machine: MachineRecord) -> None:
    """The VM dies: every process in its namespace (charon, keepalived and its VRRP child, a notify script) frozen, its
    links down, then SIGKILL. Nothing reacts on the way out: no priority-0 advert (keepalived's VRRP child sends one on
    its parent's death or a link's loss), no IKE delete."""
    pids = namespace_pids(machine.namespace)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    for link in ("wan", "lan"):
        run("ip", "-n", machine.namespace, "link", "set", "dev", link, "down", check=False)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for key in [k for k in state.processes if k.startswith(f"{machine.name}/")]:
        state.processes.pop(key)


def recreate_member(lab: Lab, machine: MachineRecord) -> None:
    """A new VM in the dead one's place: its namespace created anew, and the cloud's routes to every Floating IP as the
    emulated API has them (a new namespace has none)."""
    key = machine.namespace.removeprefix(f"{lab.name}-")
    site = lab.site_of(key)
    for stale in Path(member_failover(machine).layout.textfile_dir).glob("*.prom"):
        stale.unlink()  # a new VM's disk: no gauge of the dead one's
    remove_pair_member(lab, site, key)
    add_pair_member(lab, site, key)
    for other in lab.sites.values():
        if other.pair is None or not other.pair.routed_addresses or other.key == site:
            continue
        settings = json.loads((lab.site_dir(other.key) / "hcloud-api.json").read_text())
        for ident, fip in settings["floating_ips"].items():
            url = f"http://{settings['listen_host']}:{API_PORT}/v1/floating_ips/{ident}"
            answer = lab.ns(lab.gw_ns(other.key), "curl", "-sf", "-H", f"Authorization: Bearer {TOKEN}", url).stdout
            server = json.loads(answer)["floating_ip"]["server"]
            via = settings["servers"].get(str(server))
            route = [f"{fip['ip']}/32", "via", via, "dev", "wan"] if via else ["unreachable", f"{fip['ip']}/32"]
            run("ip", "-n", machine.namespace, "route", "replace", *route)


def member_state(machine: MachineRecord) -> str:
    """keepalived's state of a member as its notify script recorded it (MASTER, BACKUP, FAULT), "" before any."""
    path = Path(member_failover(machine).layout.state_dir) / "state"
    return path.read_text().strip() if path.exists() else ""


def pair_states(state: LabState) -> dict[str, list[dict[str, str]]]:
    """Per pair site, each member: its machine, namespace key and state (keepalived's, ``dead`` when killed and not
    replaced yet, ``starting`` before its first election)."""
    out: dict[str, list[dict[str, str]]] = {}
    for machine in sorted((m for m in state.machines.values() if m.paired), key=lambda m: m.name):
        current = "dead" if machine.dead else member_state(machine) or "starting"
        out.setdefault(machine.site, []).append({"machine": machine.name, "key": machine.namespace.removeprefix(f"{state.name}-"), "state": current})
    return out


def textfile_args(machine: MachineRecord) -> tuple[str, ...]:
    """node_exporter's textfile collector on the member's directory, where the notify script writes
    ``resinfra_gateway_active`` (changes.py, change 10)."""
    return ("--collector.textfile", f"--collector.textfile.directory={member_failover(machine).layout.textfile_dir}")


def start_pairs(run_: OfflineRun, lab: Lab, state: LabState, logs: Path, action_seconds: float = HCLOUD_ACTION_SECONDS) -> None:
    """Write every member's pushed files, start each Hetzner pair's emulated API, then every member's charon and
    keepalived (both start as BACKUP; the first member wins the first election); recorded in ``state``."""
    members = sorted((m for m in state.machines.values() if m.paired), key=lambda m: m.name)
    for machine in members:
        write_member_files(run_, lab, machine.name, machine.namespace.removeprefix(f"{lab.name}-"), Path(machine.root))
        Path(member_failover(machine).layout.textfile_dir).mkdir(parents=True, exist_ok=True)
    for site in lab.sites.values():
        if site.pair is not None and site.pair.routed_addresses:
            directory = lab.site_dir(site.key)
            settings = api_settings(run_, lab, site.key, directory / "hcloud-api.log", action_seconds)
            state.processes[API_PROCESS.format(site=site.key)] = start_api(lab.gw_ns(site.key), settings, directory)
    for machine in members:
        state.processes.update(start_member(lab, machine, logs))


def active_member(state: LabState, site: str) -> MachineRecord | None:
    """The one live member of ``site``'s pair that is MASTER (None when none or both are)."""
    masters = [m for m in state.machines.values() if m.paired and m.site == site and not m.dead and member_state(m) == "MASTER"]
    return masters[0] if len(masters) == 1 else None
