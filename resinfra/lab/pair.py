"""Gateway pairs in namespaces: a Hetzner and a Proxmox site with ``gateways: 2`` each, every gateway running the
rendered keepalived.conf, notify script and swanctl.conf for real, the Hetzner API emulated (:mod:`.hcloud_api`).

Layout for a lab named ``gl`` (namespaces ``glp-*``; the ``p`` keeps them apart from ``resinfra lab up``'s)::

    glp-wan                 bridge ``wanbr``: the internet
    glp-<hz>-net            the Hetzner network: bridge ``lan`` with the network's gateway .1, its routes (every other
                            site's block via the gateway the API names), and the emulated API on .1:8080
    glp-<hz>-gw1, -gw2      the Hetzner pair: ``pub`` (its Primary IP) and ``priv`` (.6, .7 on the network)
    glp-<px>-lan            the Proxmox private bridge (layer 2 only)
    glp-<px>-gw1, -gw2      the Proxmox pair: ``pub`` (its own address in publicRange) and ``priv`` (.6, .7)
    glp-<site>-w1           a worker: Hetzner's default route via the network's .1, Proxmox's via the pair's .4

Every other site reaches a Proxmox pair's VRRP address by ARP on the underlay (keepalived's gratuitous ARPs move it),
and a Hetzner Floating IP through the server the API assigned it to (the emulator's route). Killing a gateway is a VM
dying: its daemons SIGKILLed (keepalived sends no priority-0 advert) and its links down.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import ipaddress
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resinfra.addressing import Role
from resinfra.config import ProxmoxSite
from resinfra.failover.plan import FailoverLayout, GatewayFailover, parse_env
from resinfra.netlab import CHARON, CHARON_PLUGINS, STRONGSWAN_CONF, LabError, pin_reqids, run, wait_for
from resinfra.offline import OfflineRun, run_offline
from resinfra.render.failover import render_env, render_failover_script, render_keepalived

API_PORT = 8080
HETZNER_NETWORK_GATEWAY_OFFSET = 1
"""Hetzner networks route through their first address (docs.hetzner.com/cloud/networks/faq: the gateway is .1)."""
TOKEN = "lab-hcloud-token"
"""The emulated project's token (the lab's; never a real one)."""
PAIR_PROVIDERS = ("hetzner", "proxmox")


def pair_stack(values: Mapping[str, Any], workers: int = 1) -> dict[str, Any]:
    """A stack's config reduced to its Hetzner and Proxmox sites, each with ``gateways: 2`` and ``workers`` workers."""
    out = copy.deepcopy(dict(values))
    out["resinfra:sites"] = [dict(s, gateways=2, workers=workers) for s in out["resinfra:sites"] if s["provider"] in PAIR_PROVIDERS]
    out["resinfra:hetznerFailoverToken"] = TOKEN
    return out


@dataclass
class Gateway:
    site: str
    provider: str
    index: int
    namespace: str
    failover: GatewayFailover
    swanctl: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return Path(self.failover.layout.state_dir).parent


@dataclass
class PairLab:
    """The running pair lab (a context manager: everything is stopped and removed on exit)."""

    name: str
    root: Path
    gateways: list[Gateway] = field(default_factory=list)
    workers: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Site -> (namespace, address) of its worker."""
    namespaces: list[str] = field(default_factory=list)
    api: subprocess.Popen[bytes] | None = None
    api_namespace: str = ""
    api_settings: dict[str, Any] = field(default_factory=dict)
    """Where the emulated Hetzner API listens (the Hetzner network's namespace)."""
    api_log: Path | None = None

    def __enter__(self) -> PairLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- looking ---------------------------------------------------------------
    def ns(self, namespace: str, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", namespace, *command, check=check, timeout=timeout)

    def pair(self, site: str) -> list[Gateway]:
        return [g for g in self.gateways if g.site == site]

    def state(self, gateway: Gateway) -> str:
        path = Path(gateway.failover.layout.state_dir) / "state"
        return path.read_text().strip() if path.exists() else ""

    def active(self, site: str) -> Gateway | None:
        masters = [g for g in self.pair(site) if self.state(g) == "MASTER" and g.processes]
        return masters[0] if len(masters) == 1 else None

    def ping(self, source: str, target: str, timeout: float = 1.0) -> bool:
        ns, _ = self.workers[source]
        address = self.workers[target][1]
        result = self.ns(ns, "ping", "-c", "1", "-W", str(timeout), "-w", str(max(1, int(timeout + 0.999))), "-q", address, check=False, timeout=timeout + 5)
        return result.returncode == 0

    def all_pairs_reach(self) -> bool:
        sites = list(self.workers)
        return all(self.ping(a, b) for a in sites for b in sites if a != b)

    # -- gateways --------------------------------------------------------------
    def start_gateway(self, gateway: Gateway) -> None:
        """Boot a gateway: charon running empty (as on the VM), then keepalived with the rendered configuration."""
        layout = gateway.failover.layout
        rundir = gateway.dir / "run"
        rundir.mkdir(parents=True, exist_ok=True)
        (rundir / "charon.pid").unlink(missing_ok=True)
        vici = gateway.dir / "charon.vici"
        vici.unlink(missing_ok=True)
        conf = gateway.dir / "strongswan.conf"
        conf.write_text(STRONGSWAN_CONF.format(plugins=CHARON_PLUGINS, vici=vici, log=gateway.dir / "charon.log"))
        env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
        charon = subprocess.Popen(
            ["ip", "netns", "exec", gateway.namespace, "sh", "-c", f'mount --bind "{rundir}" /run && exec {CHARON}'],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        gateway.processes["charon"] = charon
        wait_for(lambda: vici.exists() or charon.poll() is not None, 10, f"charon of {gateway.namespace}")
        if charon.poll() is not None:
            raise LabError(f"charon of {gateway.namespace} exited {charon.returncode}")
        # Written by the failover script on the machine (its NICs' names), as the push does before keepalived starts.
        self.ns(gateway.namespace, layout.script, layout.env_file, "interfaces")
        with (gateway.dir / "keepalived.log").open("ab") as log:
            gateway.processes["keepalived"] = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    gateway.namespace,
                    "keepalived",
                    "--dont-fork",
                    "--log-console",
                    "--log-detail",
                    "--vrrp",
                    "--use-file",
                    layout.keepalived_conf,
                    "--pid",
                    str(gateway.dir / "keepalived.pid"),
                    "--vrrp_pid",
                    str(gateway.dir / "vrrp.pid"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill_gateway(self, gateway: Gateway) -> None:
        """The VM dies: every process in its namespace (all started by this lab: charon, keepalived and its VRRP child,
        a notify script) is frozen (SIGSTOP), its links go down, then the processes end (SIGKILL). Nothing reacts on
        the way out: no priority-0 advert (keepalived's VRRP child sends one on its parent's death or a link's loss)
        and no IKE delete."""
        pids = [int(p) for p in run("ip", "netns", "pids", gateway.namespace, check=False).stdout.split()]
        for sig in (signal.SIGSTOP, None, signal.SIGKILL):
            if sig is None:
                for link in ("pub", "priv"):
                    run("ip", "-n", gateway.namespace, "link", "set", link, "down")
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        for process in gateway.processes.values():
            process.wait(timeout=10)
        gateway.processes.clear()

    def revive_gateway(self, gateway: Gateway) -> None:
        """A replacement VM boots: links up, its own addresses only (a dead VM's shared ones are gone with it)."""
        for shared in gateway.failover.shared:
            device = "pub" if shared.interface.value == "public" else "priv"
            run("ip", "-n", gateway.namespace, "addr", "del", shared.address, "dev", device, check=False)
        (Path(gateway.failover.layout.state_dir) / "state").unlink(missing_ok=True)
        for link in ("pub", "priv"):
            run("ip", "-n", gateway.namespace, "link", "set", link, "up")
        self._gateway_routes(gateway)
        self._floating_ip_routes(gateway)
        self.start_gateway(gateway)

    def _floating_ip_routes(self, gateway: Gateway) -> None:
        """The cloud's routing of each Floating IP, as the emulated API has it, in a namespace that lost it with its
        links (the kernel drops a downed link's routes; the internet's route to a Floating IP does not go away)."""
        if not self.api_settings or gateway.namespace not in self.api_settings["underlay_namespaces"]:
            return
        for ident, fip in self.api_settings["floating_ips"].items():
            token = ("-H", f"Authorization: Bearer {TOKEN}")
            url = f"http://{self.api_settings['listen_host']}:{API_PORT}/v1/floating_ips/{ident}"
            server = json.loads(self.ns(self.api_namespace, "curl", "-sf", *token, url).stdout)["floating_ip"]["server"]
            route = [f"{fip['ip']}/32", "via", self.api_settings["servers"][server], "dev", "pub"] if server is not None else ["unreachable", f"{fip['ip']}/32"]
            run("ip", "-n", gateway.namespace, "route", "replace", *route)

    def tunnels_up(self) -> bool:
        """Each site's active gateway has every loaded connection's child installed."""
        for site in {g.site for g in self.gateways}:
            gateway = self.active(site)
            if gateway is None:
                return False
            uri = gateway.failover.layout.vici_uri
            conns = run("swanctl", "--list-conns", "--raw", "--uri", uri, check=False).stdout
            sas = run("swanctl", "--list-sas", "--raw", "--uri", uri, check=False).stdout
            loaded = set(re.findall(r"list-conn event \{(\S+) \{", conns))
            installed = {m for line in sas.splitlines() if "state=INSTALLED" in line for m in re.findall(r"list-sa event \{(\S+) \{", line)}
            if not loaded or not loaded <= installed:
                return False
        return True

    # -- building --------------------------------------------------------------
    def _netns(self, name: str) -> str:
        run("ip", "netns", "del", name, check=False)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")
        settings = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.all.send_redirects=0")
        self.ns(name, "sysctl", "-qw", *settings)
        return name

    def _bridge(self, namespace: str, bridge: str, address: str | None = None) -> None:
        run("ip", "-n", namespace, "link", "add", bridge, "type", "bridge")
        if address:
            run("ip", "-n", namespace, "addr", "add", address, "dev", bridge)
        run("ip", "-n", namespace, "link", "set", bridge, "up")

    def _plug(self, namespace: str, device: str, switch: str, port: str, bridge: str, address: str) -> None:
        run("ip", "link", "add", device, "netns", namespace, "type", "veth", "peer", "name", port, "netns", switch)
        run("ip", "-n", switch, "link", "set", port, "master", bridge, "up")
        run("ip", "-n", namespace, "addr", "add", address, "dev", device)
        run("ip", "-n", namespace, "link", "set", device, "up")

    def _gateway_routes(self, gateway: Gateway) -> None:
        """What the gateway reaches on-link over the underlay: the other site's gateways' own public addresses and a
        Proxmox pair's range (its VRRP address moves by ARP). A Floating IP is routed by the emulated API."""
        for other in self.gateways:
            if other.site != gateway.site:
                run("ip", "-n", gateway.namespace, "route", "replace", f"{other.failover.public_ip}/32", "dev", "pub")
                for shared in other.failover.shared:
                    if other.provider == "proxmox" and shared.interface.value == "public":
                        network = ipaddress.IPv4Interface(shared.address).network
                        run("ip", "-n", gateway.namespace, "route", "replace", str(network), "dev", "pub")

    def destroy(self) -> None:
        """Stop every process this lab started (by PID) and delete its namespaces."""
        for gateway in self.gateways:
            for process in gateway.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=10)
            gateway.processes.clear()
        if self.api is not None:
            with contextlib.suppress(ProcessLookupError):
                self.api.kill()
            self.api.wait(timeout=10)
            self.api = None
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def _short(site: str) -> str:
    return site[:2]


def _rendered(run_: OfflineRun, machine: str, purpose: str) -> str:
    return next(str(f.content) for f in run_.files if f.machine == machine and f.purpose == purpose)


def lab_failover(failover: GatewayFailover, directory: Path, endpoint: str | None) -> GatewayFailover:
    """A gateway's failover with its files under ``directory`` (keepalived refuses a notify script in a directory others
    may write: the lab's state directory is root's) and, on Hetzner, the emulated API's endpoint."""
    layout = FailoverLayout(
        script=str(directory / "resinfra-failover"),
        env_file=str(directory / "gateway.env"),
        keepalived_conf=str(directory / "keepalived.conf"),
        interfaces_conf=str(directory / "interfaces.conf"),
        swanctl_file=str(directory / "swanctl.conf"),
        token_file=str(directory / "hcloud-token"),
        state_dir=str(directory / "state"),
        textfile_dir=str(directory / "textfile"),
        vici_uri=f"unix://{directory / 'charon.vici'}",
    )
    hetzner = dataclasses.replace(failover.hetzner, endpoint=endpoint) if failover.hetzner is not None and endpoint else failover.hetzner
    return dataclasses.replace(failover, layout=layout, hetzner=hetzner)


def build(name: str, root: Path, values: Mapping[str, Any], action_seconds: float = 0.5) -> PairLab:
    """Run the program offline on ``pair_stack(values)`` and start the pair lab from what it renders."""
    run_ = run_offline(pair_stack(values), stack_name="dev", secret_keys=["resinfra:hetznerFailoverToken"])
    prefix = f"{name}p"
    lab = PairLab(name=prefix, root=root)
    try:
        _build(lab, run_, action_seconds)
    except BaseException:
        lab.destroy()
        raise
    return lab


def _build(lab: PairLab, run_: OfflineRun, action_seconds: float) -> None:
    root, prefix = lab.root, lab.name
    shutil.rmtree(root, ignore_errors=True)  # a previous run's logs and state files
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o700)
    wan = lab._netns(f"{prefix}-wan")
    lab._bridge(wan, "wanbr")
    api_settings: dict[str, Any] = {}
    for site in run_.config.sites:
        plan = run_.result.plan[site.name]
        short = _short(site.name)
        lan_ns = lab._netns(f"{prefix}-{short}-lan")
        hetzner = site.provider == "hetzner"
        prefixlen = plan.subnet.prefixlen
        network_gateway = plan.subnet.network_address + HETZNER_NETWORK_GATEWAY_OFFSET
        lab._bridge(lan_ns, "lan", f"{network_gateway}/{prefixlen}" if hetzner else None)
        endpoint = f"http://{network_gateway}:{API_PORT}/v1" if hetzner else None
        for k, member in enumerate(plan.gateway_vms, start=1):
            directory = root / f"{short}-gw{k}"
            directory.mkdir(parents=True, exist_ok=True)
            failover = lab_failover(parse_env(_rendered(run_, member.name, "failover")), directory, endpoint)
            ns = lab._netns(f"{prefix}-{short}-gw{k}")
            public_prefix = ipaddress.IPv4Network(site.public_range).prefixlen if isinstance(site, ProxmoxSite) else 32
            lab._plug(ns, "pub", wan, f"{short}{k}", "wanbr", f"{failover.public_ip}/{public_prefix}")
            lab._plug(ns, "priv", lan_ns, f"g{k}", "lan", f"{member.private_ip}/{prefixlen}")
            layout = failover.layout
            Path(layout.script).write_text(render_failover_script())
            Path(layout.script).chmod(0o755)
            Path(layout.env_file).write_text(render_env(failover))
            Path(layout.keepalived_conf).write_text(render_keepalived(failover))
            swanctl = pin_reqids(_rendered(run_, member.name, "swanctl"))
            Path(layout.swanctl_file).write_text(swanctl)
            Path(layout.swanctl_file).chmod(0o600)
            if hetzner:
                Path(layout.token_file).write_text(TOKEN)
                Path(layout.token_file).chmod(0o400)
            lab.gateways.append(Gateway(site.name, site.provider, k, ns, failover, swanctl))
        worker = next(m for m in plan.machines if m.role is Role.WORKER)
        worker_ns = lab._netns(f"{prefix}-{short}-w1")
        lab._plug(worker_ns, "eth0", lan_ns, "w1", "lan", f"{worker.private_ip}/{prefixlen}")
        via = network_gateway if hetzner else plan.gateway_address
        run("ip", "-n", worker_ns, "route", "add", "default", "via", str(via))
        lab.workers[site.name] = (worker_ns, str(worker.private_ip))
        if hetzner:
            first = lab.pair(site.name)[0].failover
            assert first.hetzner is not None
            api_settings = {
                "listen_host": str(network_gateway),
                "listen_port": API_PORT,
                "token": TOKEN,
                "servers": {g.failover.hetzner.server_id: g.failover.public_ip for g in lab.pair(site.name) if g.failover.hetzner},
                "floating_ips": {first.hetzner.floating_ip_id: {"ip": first.shared[0].address.split("/")[0], "server": None}},
                # As declared: every other site's block via the pair's first gateway (sites/hetzner.py).
                "networks": {first.hetzner.network_id: [[r, str(plan.gateway_vms[0].private_ip)] for r in first.hetzner.routes]},
                "network_namespace": lan_ns,
                "underlay_namespaces": [],
                "underlay_device": "pub",
                "action_seconds": action_seconds,
                "log": str(root / "hcloud-api.log"),
            }
    for gateway in lab.gateways:
        lab._gateway_routes(gateway)
    if api_settings:
        api_settings["underlay_namespaces"] = [g.namespace for g in lab.gateways if g.provider != "hetzner"]
        settings_file = root / "hcloud-api.json"
        settings_file.write_text(json.dumps(api_settings))
        lab.api_log = root / "hcloud-api.out"
        lab.api_namespace = api_settings["network_namespace"]
        lab.api_settings = api_settings
        hetzner_site = next(g.site for g in lab.gateways if g.provider == "hetzner")
        with lab.api_log.open("ab") as out:
            api = lab.api = subprocess.Popen(
                ["ip", "netns", "exec", f"{prefix}-{_short(hetzner_site)}-lan", sys.executable, "-m", "resinfra.lab.hcloud_api", str(settings_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        host, port = api_settings["listen_host"], api_settings["listen_port"]
        wait_for(
            lambda: _listening(lab, f"{prefix}-{_short(hetzner_site)}-lan", port) or api.poll() is not None,
            20,
            f"the emulated Hetzner API on {host}:{port}",
        )
        if api.poll() is not None:
            raise LabError(f"the emulated Hetzner API exited; see {lab.api_log}")
    for gateway in lab.gateways:
        lab.start_gateway(gateway)


def _listening(lab: PairLab, namespace: str, port: int) -> bool:
    return f":{port} " in lab.ns(namespace, "ss", "-ltnH", check=False).stdout


@dataclass(frozen=True)
class Outage:
    """Pings from one worker to another (every ``interval``) around a gateway's death."""

    source: str
    target: str
    restored_after: float
    """Seconds from the kill to the first answer after it."""
    longest_gap: float
    """The longest time without an answer seen (seconds)."""


@contextlib.contextmanager
def pinging(lab: PairLab, interval: float = 0.1) -> Iterator[dict[tuple[str, str], subprocess.Popen[str]]]:
    """Continuous pings between every two sites' workers (both ways), stopped on exit."""
    sites = list(lab.workers)
    processes = {}
    for a in sites:
        for b in sites:
            if a != b:
                processes[(a, b)] = subprocess.Popen(
                    ["ip", "netns", "exec", lab.workers[a][0], "ping", "-D", "-n", "-i", str(interval), "-W", "1", lab.workers[b][1]],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
    try:
        yield processes
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
        for process in processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)


def outages(processes: Mapping[tuple[str, str], subprocess.Popen[str]], killed_at: float) -> list[Outage]:
    """Each direction's outage from the ping output (``-D``: each answer's time): the gap in answers around the kill
    (from the last answer before it to the first after it), and the longest gap of the whole run."""
    out = []
    for (a, b), process in processes.items():
        text = process.stdout.read() if process.stdout else ""
        answers = [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", text, flags=re.MULTILINE)]
        before = [t for t in answers if t <= killed_at]
        after = [t for t in answers if t > killed_at]
        if not before or not after:
            raise LabError(f"{a} -> {b}: no answer before or after the kill")
        sequence = [before[-1], *after]
        gaps = [(y - x, y) for x, y in itertools.pairwise(sequence)]
        _, restored = max(gaps)
        longest = max((y - x for x, y in itertools.pairwise(answers)), default=0.0)
        out.append(Outage(a, b, restored - killed_at, longest))
    return out


def fail_over(lab: PairLab, site: str, timeout: float = 60.0) -> tuple[Gateway, list[Outage]]:
    """Kill ``site``'s active gateway while every pair of workers pings; return it and each direction's outage once
    every direction answers again (through the other gateway)."""
    victim = lab.active(site)
    if victim is None:
        raise LabError(f"{site} has no single active gateway")
    with pinging(lab) as processes:
        wait_for(lab.all_pairs_reach, 30, "every pair reachable before the kill", interval=0.2)
        time.sleep(1.0)
        killed_at = time.time()
        lab.kill_gateway(victim)
        wait_for(lambda: lab.active(site) not in (None, victim), timeout, f"{site}'s other gateway active", interval=0.1)
        wait_for(lab.all_pairs_reach, timeout, "every pair reachable again", interval=0.2)
        time.sleep(1.0)
    return victim, outages(processes, killed_at)
