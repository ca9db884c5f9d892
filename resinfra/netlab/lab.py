"""The lab's sites in network namespaces on one machine: gateways on a shared underlay, nodes behind them, their
userspace-ESP charons (and bird2 where BGP runs). Needs root.

Layout for a lab named ``rm``::

    rm-wan          holds bridge ``wanbr`` (the "internet"); one veth per site
    rm-<site>       a strongSwan gateway: ``wan`` (its public addresses as /32s), ``lan`` (site subnet);
                    or an emulated cloud's network (:mod:`resinfra.netlab.cloud_network`): ``wan`` without
                    addresses, ``lan``, and the cloud's route table
    rm-<site>-<k>   a tunnel or a gateway instance of an emulated cloud (``k`` its key, ``vpn-...``)
    rm-<site>-gw-<k> a gateway pair's VM k (:mod:`resinfra.netlab.pair_members`): ``wan`` (its own public address),
                    ``lan`` on the bridge of ``rm-<site>``, which then plays the site's network instead of a gateway
    rm-<site>-n<i>  node i of the site (or ``rm-<site>-<name>`` with ``node_names``): ``eth0`` on the
                    site subnet, default via the gateway

The underlay resolves nothing: every namespace on it has a permanent neighbour entry for
every public address of the others. Processes are ended by their own PID.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from resinfra.netlab.charon import CHARON, pin_reqids, strongswan_conf
from resinfra.netlab.charon_state import CharonUnreachable, installed_children, loaded_connections, stream
from resinfra.netlab.cloud_network import TUNNEL_TABLE, build_cloud
from resinfra.netlab.pair_members import add_pair_member, pair_carrier, pair_site
from resinfra.netlab.process import Daemon, LabError, kill_daemon, run, stop_daemon, wait_for
from resinfra.netlab.topology import LabSite, fixed_mac


@dataclass
class Lab:
    """A set of sites in namespaces. Use as a context manager: everything is removed on exit.

    Charons and birds are known by their namespace's key (``<site>`` or ``<site>-<k>``).
    """

    name: str
    workdir: Path
    sites: dict[str, LabSite] = field(default_factory=dict)
    charons: dict[str, Daemon] = field(default_factory=dict)
    birds: dict[str, Daemon] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    detach: bool = False
    """Start charon and bird in their own sessions, so they outlive the process that started them (the lab)."""
    failed: set[str] = field(default_factory=set)
    """Keys of cloud routers taken down (:func:`~resinfra.netlab.cloud_network.set_router`): their tunnels are not expected up; and of pair members
    killed and not replaced yet."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", self.name):
            raise ValueError("lab name: 1-6 lowercase letters or digits")

    # -- names -----------------------------------------------------------------
    @property
    def wan_ns(self) -> str:
        return f"{self.name}-wan"

    def gw_ns(self, key: str) -> str:
        """The namespace of a site (``key`` a site) or of a cloud's tunnel or router (``<site>-<k>``)."""
        return f"{self.name}-{key}"

    def node_ns(self, key: str, index: int) -> str:
        names = self.sites[key].node_names if key in self.sites else ()
        return f"{self.name}-{key}-{names[index - 1] if names else f'n{index}'}"

    @staticmethod
    def wan_port(key: str) -> str:
        """The underlay bridge's port toward a site's gateway (in the ``wan`` namespace)."""
        return f"p-{key}"[:15]

    @staticmethod
    def part_key(site: str, part: str) -> str:
        """The key of a cloud router (``part`` = :data:`SITE`: the site itself) or tunnel."""
        return f"{site}-{part}" if part else site

    def site_of(self, key: str) -> str:
        """The site a namespace key belongs to (a site's own key, or one of its cloud's tunnels or routers)."""
        for site in self.sites.values():
            parts = () if site.cloud is None else (*site.cloud.routers, *site.cloud.tunnels)
            members = {m.key for m in site.pair.members} if site.pair is not None else set()
            if key == site.key or key in members or key in {self.part_key(site.key, p.key) for p in parts}:
                return site.key
        raise KeyError(key)

    def site_dir(self, key: str) -> Path:
        return self.workdir / key

    def charon_keys(self, expected_only: bool = False) -> list[str]:
        """Every namespace that runs a charon: strongSwan sites and cloud tunnels (only those expected up)."""
        keys = []
        for site in self.sites.values():
            if site.pair is not None:
                keys += [m.key for m in site.pair.members if not expected_only or m.key not in self.failed]
            elif site.cloud is None:
                keys.append(site.key)
            else:
                failed = {r.key for r in site.cloud.routers if self.part_key(site.key, r.key) in self.failed}
                keys += [self.part_key(site.key, t.key) for t in site.cloud.tunnels if not expected_only or (t.expected and t.router not in failed)]
        return keys

    # -- building ----------------------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def create_namespace(self, name: str) -> None:
        if Path(f"/run/netns/{name}").exists():
            run("ip", "netns", "del", name, check=False)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "dev", "lo", "up")

    def ns(self, namespace: str, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", namespace, *command, check=check, timeout=timeout)

    def make_router(self, namespace: str) -> None:
        """Forwarding on; no reverse-path filter (an answer may come back through another tunnel than its request); ICMP
        errors not rate-limited, so a trace (:mod:`resinfra.lab.paths`) hears from every hop."""
        settings = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.icmp_ratelimit=0")
        self.ns(namespace, "sysctl", "-qw", *settings)

    def build(self, sites: Iterable[LabSite]) -> None:
        """Create the underlay, every site's gateway (or cloud network) and nodes, addresses and routes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sites = {s.key: s for s in sites}
        self.create_namespace(self.wan_ns)
        run("ip", "-n", self.wan_ns, "link", "add", "name", "wanbr", "address", fixed_mac("0.0.0.1"), "type", "bridge")
        run("ip", "-n", self.wan_ns, "link", "set", "dev", "wanbr", "up")
        ports = [self.wan_port(key) for site in self.sites.values() for key in ([m.key for m in site.pair.members] if site.pair else [site.key])]
        if len(set(ports)) != len(ports):
            raise LabError(f"site names give clashing interface names (at most 15 characters): {ports}")
        for site in self.sites.values():
            gw = self.gw_ns(site.key)
            self.create_namespace(gw)
            if site.pair is None:
                self.plug_underlay(gw, site.key, site.public_ips[0], () if site.cloud is not None else site.public_ips)
            self.make_router(gw)
            run("ip", "-n", gw, "link", "add", "name", "lan", "address", fixed_mac(str(site.lan.ip)), "type", "bridge")
            run("ip", "-n", gw, "addr", "add", str(site.lan), "dev", "lan")
            run("ip", "-n", gw, "link", "set", "dev", "lan", "up")
            if site.cloud is not None:
                build_cloud(self, site, site.cloud)
            if site.pair is not None:
                # The site's network routes (Hetzner), it never redirects: a worker must not learn a gateway's address.
                self.ns(gw, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.lan.send_redirects=0")
                for member in site.pair.members:
                    add_pair_member(self, site.key, member.key)
            for index in range(1, len(site.nodes) + 1):
                self.add_node(site.key, index)
            self.site_dir(site.key).mkdir(parents=True, exist_ok=True)

    def _underlay(self) -> dict[str, tuple[str, str]]:
        """Every fixed address on the underlay: (its namespace key, the MAC of the ``wan`` that holds it)."""
        out = {}
        for site in self.sites.values():
            if site.pair is None:
                out.update({ip: (site.key, fixed_mac(site.public_ips[0])) for ip in site.public_ips})
            else:
                out.update({m.public_ip: (m.key, fixed_mac(m.public_ip)) for m in site.pair.members})
        return out

    def plug_underlay(self, namespace: str, key: str, first_ip: str, own: tuple[str, ...], prefix: int = 32) -> None:
        """Give ``namespace`` its ``wan`` on the underlay bridge (port :meth:`wan_port` of ``key``), its own addresses,
        and a route and a permanent neighbour entry for every other fixed address (no ARP: see the module docstring);
        a pair's addresses that move by ARP are routed on-link without one."""
        # Created straight inside the namespaces: nothing appears in the root namespace.
        port = self.wan_port(key)
        run("ip", "link", "add", "name", "wan", "netns", namespace, "address", fixed_mac(first_ip), "type", "veth", "peer", "name", port, "netns", self.wan_ns)
        run("ip", "-n", self.wan_ns, "link", "set", "dev", port, "master", "wanbr", "up")
        run("ip", "-n", namespace, "link", "set", "dev", "wan", "up")
        for ip in own:
            run("ip", "-n", namespace, "addr", "add", f"{ip}/{prefix}", "dev", "wan")
        src = ("src", own[0]) if own else ()
        for ip, (owner, mac) in self._underlay().items():
            if owner != key:
                run("ip", "-n", namespace, "route", "replace", f"{ip}/32", "dev", "wan", *src)
                run("ip", "-n", namespace, "neigh", "replace", ip, "lladdr", mac, "dev", "wan", "nud", "permanent")
        for site in self.sites.values():
            if site.pair is not None and key not in {m.key for m in site.pair.members}:
                for ip in site.pair.arp_addresses:
                    run("ip", "-n", namespace, "route", "replace", f"{ip}/32", "dev", "wan", *src)

    def add_node(self, key: str, index: int) -> str:
        """Create node ``index`` of site ``key``: its namespace, a veth into the gateway's LAN bridge, its address and
        default route. Returns the namespace."""
        site = self.sites[key]
        ns, gw, port = self.node_ns(key, index), self.gw_ns(key), f"n{index}"
        self.create_namespace(ns)
        address = site.nodes[index - 1]
        # Created again, the node keeps its MAC as it keeps its address (see fixed_mac).
        run("ip", "link", "add", "name", "eth0", "netns", ns, "address", fixed_mac(str(address.ip)), "type", "veth", "peer", "name", port, "netns", gw)
        run("ip", "-n", gw, "link", "set", "dev", port, "master", "lan", "up")
        run("ip", "-n", ns, "addr", "add", str(address), "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "dev", "eth0", "up")
        run("ip", "-n", ns, "route", "add", "default", "via", str(site.lan.ip))
        return ns

    def remove_node(self, key: str, index: int) -> None:
        """Delete node ``index``: its veth (both ends, at once) and its namespace (its processes must be gone), so the
        node can be created again under the same names. Either may already be gone."""
        ns = self.node_ns(key, index)
        # Not left to the namespace's teardown, which the kernel does asynchronously (seconds on a busy machine).
        run("ip", "-n", self.gw_ns(key), "link", "del", "dev", f"n{index}", check=False)
        run("ip", "netns", "del", ns, check=False)
        if ns in self.namespaces:
            self.namespaces.remove(ns)

    def set_uplink(self, key: str, up: bool) -> None:
        """Cut (or restore) a site's only way to the underlay: its bridge port goes down (a pair's: both), the gateway's
        ``wan`` loses carrier (its addresses and routes stay, as on a VM whose upstream link failed)."""
        pair = self.sites[key].pair
        for port_key in [m.key for m in pair.members] if pair is not None else [key]:
            run("ip", "-n", self.wan_ns, "link", "set", "dev", self.wan_port(port_key), "up" if up else "down")

    # -- charon ------------------------------------------------------------------
    def vici_socket(self, key: str) -> Path:
        return self.site_dir(key) / "charon.vici"

    def vici(self, key: str) -> str:
        return f"unix://{self.vici_socket(key)}"

    def swanctl(self, key: str, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``swanctl COMMAND`` against the charon of namespace ``key``."""
        return run("swanctl", command, "--uri", self.vici(key), *args, check=check)

    def start_charon(self, key: str, swanctl_conf: str) -> None:
        """Start the charon of namespace ``key`` (a strongSwan site or a cloud tunnel) and load ``swanctl_conf``."""
        site_dir = self.site_dir(key)
        rundir = site_dir / "run"
        rundir.mkdir(parents=True, exist_ok=True)
        # A killed charon's pid file stays; its process may linger as a zombie, which charon's check takes for alive.
        (rundir / "charon.pid").unlink(missing_ok=True)
        conf = site_dir / "strongswan.conf"
        log = site_dir / "charon.log"
        conf.write_text(strongswan_conf(site_dir / "charon.vici", log))
        log.unlink(missing_ok=True)  # one log per run: charon writes from the start of an existing file
        self.write_swanctl(key, swanctl_conf)
        (site_dir / "charon.vici").unlink(missing_ok=True)
        env = {**os.environ, "STRONGSWAN_CONF": str(conf)}
        # ip netns exec gives the process its own mount namespace: /run is private to it.
        process = subprocess.Popen(
            ["ip", "netns", "exec", self.gw_ns(key), "sh", "-c", f'mount --bind "{rundir}" /run && exec {CHARON}'],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=self.detach,
        )
        self.charons[key] = Daemon(process, log)
        wait_for(lambda: (site_dir / "charon.vici").exists() or process.poll() is not None, 10, f"charon of {key}")
        if process.poll() is not None:
            raise LabError(f"charon of {key} exited {process.returncode}; see {log}")
        if key not in self.sites and pair_site(self, key) is None:
            # A cloud tunnel: what its router sends goes into the tunnel device charon just created.
            run("ip", "-n", self.gw_ns(key), "route", "replace", "default", "dev", "ipsec0", "table", str(TUNNEL_TABLE))
        self.load(key)

    def write_swanctl(self, key: str, swanctl_conf: str) -> Path:
        path = self.site_dir(key) / "swanctl.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pin_reqids(swanctl_conf))
        path.chmod(0o600)
        return path

    def load(self, key: str) -> None:
        """(Re)load the gateway's swanctl.conf, as the push does with ``swanctl --load-all``."""
        self.swanctl(key, "--load-all", "--noprompt", "--file", str(self.site_dir(key) / "swanctl.conf"))

    def kill_charon(self, key: str) -> None:
        """End the gateway's charon abruptly (SIGKILL), as a crash would."""
        daemon = self.charons.pop(key, None)
        if daemon is not None:
            kill_daemon(daemon)

    def loaded(self, key: str) -> dict[str, int]:
        """Loaded connections and their number of children (tunnel mode). Raises LabError when the charon does not
        answer."""
        try:
            return loaded_connections(stream(self.vici_socket(key), "list-conns"))
        except CharonUnreachable as error:
            raise LabError(f"charon of {key}: {error}") from error

    def child_sas(self, key: str) -> list[dict[str, str]]:
        """Installed CHILD_SAs of established IKE_SAs: connection, child name, byte and packet counters. None from a
        charon that does not answer."""
        try:
            return installed_children(stream(self.vici_socket(key), "list-sas"))
        except CharonUnreachable:
            return []

    def all_children_up(self, key: str) -> set[str]:
        """Connections whose every configured child is installed (duplicates from
        simultaneous initiation count once)."""
        expected = self.loaded(key)
        installed: dict[str, set[str]] = {}
        for child in self.child_sas(key):
            installed.setdefault(child["connection"], set()).add(child["name"])
        return {name for name, count in expected.items() if len(installed.get(name, set())) >= count}

    def tunnels_up(self) -> bool:
        """Every charon's every connection installed (a cloud's unanswered tunnels aside); of a pair, the active member
        carries them all (the standby loads none)."""
        pairs = {m.key for s in self.sites.values() if s.pair is not None for m in s.pair.members}
        singles = [key for key in self.charon_keys(expected_only=True) if key not in pairs]
        if not all(set(self.loaded(key)) <= self.all_children_up(key) for key in singles):
            return False
        return all(pair_carrier(self, site.key) is not None for site in self.sites.values() if site.pair is not None and len(self.sites) > 1)

    # -- bird --------------------------------------------------------------------
    def start_bird(self, key: str, bird_conf: str) -> None:
        site_dir = self.site_dir(key)
        site_dir.mkdir(parents=True, exist_ok=True)
        conf = site_dir / "bird.conf"
        conf.write_text(bird_conf)
        run("bird", "-p", "-c", str(conf))
        sock = site_dir / "bird.ctl"
        sock.unlink(missing_ok=True)
        log = site_dir / "bird.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", self.gw_ns(key), "bird", "-f", "-c", str(conf), "-s", str(sock), "-P", str(site_dir / "bird.pid")],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=self.detach,
            )
        self.birds[key] = Daemon(process, log)
        wait_for(lambda: sock.exists() or process.poll() is not None, 10, f"bird of {key}")
        if process.poll() is not None:
            raise LabError(f"bird of {key} exited {process.returncode}; see {log}")

    def birdc(self, key: str, *command: str) -> str:
        return run("birdc", "-s", str(self.site_dir(key) / "bird.ctl"), *command).stdout

    def learned(self, key: str) -> set[str]:
        """Prefixes bird learned over BGP."""
        out = self.birdc(key, "show", "route", "where", "source = RTS_BGP")
        return set(re.findall(r"^(\d+\.\d+\.\d+\.\d+/\d+)", out, flags=re.MULTILINE))

    # -- traffic -----------------------------------------------------------------
    def ping(self, key: str, index: int, target: str, timeout: float = 1.0) -> bool:
        # -w bounds the whole run: without it a send the kernel refuses (no SA yet) can retry for long.
        deadline = str(max(1, math.ceil(timeout)))
        result = self.ns(self.node_ns(key, index), "ping", "-c", "1", "-W", str(timeout), "-w", deadline, "-q", target, check=False, timeout=timeout + 5)
        return result.returncode == 0

    # -- teardown ----------------------------------------------------------------
    def destroy(self) -> None:
        """Stop every daemon this lab started (by PID) and delete its namespaces."""
        for daemons in (self.birds, self.charons):
            for key in list(daemons):
                stop_daemon(daemons.pop(key))
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def require_tools() -> list[str]:
    """Tools the lab needs that are missing."""
    missing = [tool for tool in ("ip", "swanctl", "bird", "birdc", "ping") if shutil.which(tool) is None]
    if not Path(CHARON).exists():
        missing.append(CHARON)
    return missing
