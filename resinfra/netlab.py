"""Sites in network namespaces on one machine: gateways on a shared underlay, nodes behind
them, one userspace-ESP charon (and optionally bird2) per gateway. Needs root.

Layout for a lab named ``rm``::

    rm-wan          holds bridge ``wanbr`` (the "internet"); one veth per gateway
    rm-<site>       gateway: ``wan`` (public addresses as /32s), ``lan`` (site subnet)
    rm-<site>-n<i>  node i of the site (or ``rm-<site>-<name>`` with ``node_names``): ``eth0`` on the
                    site subnet, default via the gateway

Every charon runs with its own strongswan.conf (kernel-libipsec before kernel-netlink: there
is no kernel ESP here), its own vici socket and its own /run (charon's pid file path is
fixed), all under the lab's work directory. Processes are ended by their own PID.

One adaptation to userspace ESP is made to every swanctl.conf loaded (:func:`pin_reqids`):
libipsec picks a packet's outbound SA by reqid alone, while the kernel also matches the
peer's address; when several tunnels negotiate at once (both ends re-initiating after an
outage), charon's dynamic reqids can end up swapped between two tunnels, which the kernel
shrugs off and libipsec does not (traffic leaves through the other tunnel's SA).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CHARON = "/usr/lib/ipsec/charon"
CHARON_PLUGINS = (
    "random nonce openssl pem pkcs1 gcm aes sha2 hmac kdf curve25519 "
    # kernel-libipsec must come before kernel-netlink: it provides the IPsec backend,
    # kernel-netlink the routes and addresses.
    "kernel-libipsec kernel-netlink socket-default vici"
)
STRONGSWAN_CONF = """\
# Rendered by resinfra.netlab: one charon per network namespace, userspace ESP.
charon {{
    load_modular = no
    load = {plugins}
    install_routes = yes
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    retransmit_tries = 4
    plugins {{
        vici {{
            socket = unix://{vici}
        }}
    }}
    filelog {{
        lab {{
            path = {log}
            time_format = %H:%M:%S
            flush_line = yes
            default = 1
            ike = 1
        }}
    }}
}}
"""


_CHILD_TS = re.compile(r"^(?P<indent>\s+)local_ts = ", re.MULTILINE)
_REQID = re.compile(r"^\s+reqid = \d+\n", re.MULTILINE)


def pin_reqids(swanctl_conf: str) -> str:
    """The same swanctl.conf with a fixed ``reqid`` per CHILD_SA, numbered in order (1, 2, ...).

    Example: a child block's ``local_ts = 10.10.48.0/20`` line gets ``reqid = 1`` before it.
    """
    counter = iter(range(1, 1 << 16))
    unpinned = _REQID.sub("", swanctl_conf)  # pinning twice gives the same text
    return _CHILD_TS.sub(lambda m: f"{m['indent']}reqid = {next(counter)}\n{m[0]}", unpinned)


def fixed_mac(address: str) -> str:
    """A locally administered MAC derived from an address. A bridge without a fixed MAC takes its lowest port's and
    changes when that port goes; a node created again would get a new one. Either way its neighbours' ARP entries
    would point nowhere for up to half a minute."""
    octets = ipaddress.IPv4Address(address).packed
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


class LabError(RuntimeError):
    """A lab command failed or a condition was not reached in time."""


def run(*command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(command)}: exit {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``condition`` until true; returns the seconds it took. Raises LabError on timeout."""
    started = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise LabError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass(frozen=True)
class LabSite:
    """One site of the lab."""

    key: str
    """Short name (namespace names are ``<lab>-<key>``)."""
    public_ips: tuple[str, ...]
    """The gateway's underlay addresses (a managed gateway may have several)."""
    lan: ipaddress.IPv4Interface
    """The gateway's address on the site subnet."""
    nodes: tuple[ipaddress.IPv4Interface, ...]
    loopbacks: tuple[str, ...] = ()
    """/32s on the gateway's ``lo`` (BGP APIPA addresses): present before charon starts."""
    bgp_peers: tuple[str, ...] = ()
    """Peer BGP addresses reached through ``ipsec0``."""
    node_names: tuple[str, ...] = ()
    """Namespace suffix of each node (``worker-1`` gives ``<lab>-<key>-worker-1``); ``n<i>`` when not given."""


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    log: Path


@dataclass
class Lab:
    """A set of sites in namespaces. Use as a context manager: everything is removed on exit."""

    name: str
    workdir: Path
    sites: dict[str, LabSite] = field(default_factory=dict)
    charons: dict[str, Daemon] = field(default_factory=dict)
    birds: dict[str, Daemon] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    detach: bool = False
    """Start charon and bird in their own sessions, so they outlive the process that started them (the lab)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{0,5}", self.name):
            raise ValueError("lab name: 1-6 lowercase letters or digits")

    # -- names -----------------------------------------------------------------
    @property
    def wan_ns(self) -> str:
        return f"{self.name}-wan"

    def gw_ns(self, key: str) -> str:
        return f"{self.name}-{key}"

    def node_ns(self, key: str, index: int) -> str:
        names = self.sites[key].node_names if key in self.sites else ()
        return f"{self.name}-{key}-{names[index - 1] if names else f'n{index}'}"

    @staticmethod
    def wan_port(key: str) -> str:
        """The underlay bridge's port toward a site's gateway (in the ``wan`` namespace)."""
        return f"p-{key}"[:15]

    def site_dir(self, key: str) -> Path:
        return self.workdir / key

    # -- building ----------------------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    def _netns(self, name: str) -> None:
        if Path(f"/run/netns/{name}").exists():
            run("ip", "netns", "del", name, check=False)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        run("ip", "-n", name, "link", "set", "dev", "lo", "up")

    def ns(self, namespace: str, *command: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", namespace, *command, check=check, timeout=timeout)

    def build(self, sites: Iterable[LabSite]) -> None:
        """Create the underlay, every site's gateway and nodes, addresses and routes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sites = {s.key: s for s in sites}
        self._netns(self.wan_ns)
        run("ip", "-n", self.wan_ns, "link", "add", "name", "wanbr", "address", fixed_mac("0.0.0.1"), "type", "bridge")
        run("ip", "-n", self.wan_ns, "link", "set", "dev", "wanbr", "up")
        all_public = [ip for s in self.sites.values() for ip in s.public_ips]
        ports = [self.wan_port(key) for key in self.sites]
        if len(set(ports)) != len(ports):
            raise LabError(f"site names give clashing interface names (at most 15 characters): {ports}")
        for site in self.sites.values():
            gw = self.gw_ns(site.key)
            self._netns(gw)
            # Created straight inside the namespaces: nothing appears in the root namespace.
            port = self.wan_port(site.key)
            run("ip", "link", "add", "name", "wan", "netns", gw, "type", "veth", "peer", "name", port, "netns", self.wan_ns)
            run("ip", "-n", self.wan_ns, "link", "set", "dev", port, "master", "wanbr", "up")
            run("ip", "-n", gw, "link", "set", "dev", "wan", "up")
            for ip in site.public_ips:
                run("ip", "-n", gw, "addr", "add", f"{ip}/32", "dev", "wan")
            for ip in all_public:
                if ip not in site.public_ips:
                    run("ip", "-n", gw, "route", "add", f"{ip}/32", "dev", "wan", "src", site.public_ips[0])
            for ip in site.loopbacks:
                run("ip", "-n", gw, "addr", "add", f"{ip}/32", "dev", "lo")
            self.ns(gw, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            run("ip", "-n", gw, "link", "add", "name", "lan", "address", fixed_mac(str(site.lan.ip)), "type", "bridge")
            run("ip", "-n", gw, "addr", "add", str(site.lan), "dev", "lan")
            run("ip", "-n", gw, "link", "set", "dev", "lan", "up")
            for index in range(1, len(site.nodes) + 1):
                self.add_node(site.key, index)
            self.site_dir(site.key).mkdir(parents=True, exist_ok=True)

    def add_node(self, key: str, index: int) -> str:
        """Create node ``index`` of site ``key``: its namespace, a veth into the gateway's LAN bridge, its address and
        default route. Returns the namespace."""
        site = self.sites[key]
        ns, gw, port = self.node_ns(key, index), self.gw_ns(key), f"n{index}"
        self._netns(ns)
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
        """Cut (or restore) a site's only way to the underlay: its bridge port goes down, the gateway's ``wan`` loses
        carrier (its addresses and routes stay, as on a VM whose upstream link failed)."""
        run("ip", "-n", self.wan_ns, "link", "set", "dev", self.wan_port(key), "up" if up else "down")

    # -- charon ------------------------------------------------------------------
    def vici(self, key: str) -> str:
        return f"unix://{self.site_dir(key) / 'charon.vici'}"

    def swanctl(self, key: str, command: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``swanctl COMMAND`` against the gateway's charon."""
        return run("swanctl", command, "--uri", self.vici(key), *args, check=check)

    def start_charon(self, key: str, swanctl_conf: str) -> None:
        """Start the gateway's charon and load ``swanctl_conf`` into it."""
        site_dir = self.site_dir(key)
        rundir = site_dir / "run"
        rundir.mkdir(exist_ok=True)
        (site_dir / "charon.pid").unlink(missing_ok=True)
        conf = site_dir / "strongswan.conf"
        log = site_dir / "charon.log"
        conf.write_text(STRONGSWAN_CONF.format(plugins=CHARON_PLUGINS, vici=site_dir / "charon.vici", log=log))
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
        for peer in self.sites[key].bgp_peers:
            # The tunnel's route lands in table 220; bird's multihop session needs one in the
            # main table, on the ipsec0 device this charon just created.
            self.ns(self.gw_ns(key), "ip", "route", "replace", f"{peer}/32", "dev", "ipsec0")
        self.load(key)

    def write_swanctl(self, key: str, swanctl_conf: str) -> Path:
        path = self.site_dir(key) / "swanctl.conf"
        path.write_text(pin_reqids(swanctl_conf))
        path.chmod(0o600)
        return path

    def load(self, key: str) -> None:
        """(Re)load the gateway's swanctl.conf, as the push does with ``swanctl --load-all``."""
        self.swanctl(key, "--load-all", "--noprompt", "--file", str(self.site_dir(key) / "swanctl.conf"))

    def kill_charon(self, key: str) -> None:
        """End the gateway's charon abruptly (SIGKILL), as a crash would."""
        daemon = self.charons.pop(key, None)
        if daemon is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.process.pid, signal.SIGKILL)
        daemon.process.wait(timeout=10)

    def loaded(self, key: str) -> dict[str, int]:
        """Loaded connections and their number of children."""
        result = self.swanctl(key, "--list-conns", "--raw")
        conns: dict[str, int] = {}
        for line in result.stdout.splitlines():
            match = re.match(r"list-conn event \{(\S+) \{", line)
            if match:
                conns[match.group(1)] = len(re.findall(r"mode=TUNNEL", line))
        return conns

    def all_children_up(self, key: str) -> set[str]:
        """Connections whose every configured child is installed (duplicates from
        simultaneous initiation count once)."""
        expected = self.loaded(key)
        result = self.swanctl(key, "--list-sas", "--raw", check=False)
        installed: dict[str, set[str]] = {}
        for line in result.stdout.splitlines():
            match = re.match(r"list-sa event \{(\S+) \{", line)
            if not match or "state=ESTABLISHED" not in line.split("child-sas", 1)[0]:
                continue
            for child, state in re.findall(r"(\S+?)-\d+ \{[^{}]*?state=(\w+)", line.split("child-sas", 1)[-1]):
                if state == "INSTALLED":
                    installed.setdefault(match.group(1), set()).add(child)
        return {name for name, count in expected.items() if len(installed.get(name, set())) >= count}

    # -- bird --------------------------------------------------------------------
    def start_bird(self, key: str, bird_conf: str) -> None:
        site_dir = self.site_dir(key)
        conf = site_dir / "bird.conf"
        conf.write_text(bird_conf)
        run("bird", "-p", "-c", str(conf))
        sock = site_dir / "bird.ctl"
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
                _stop(daemons.pop(key))
        for name in reversed(self.namespaces):
            run("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def _stop(daemon: Daemon) -> None:
    """SIGTERM, then SIGKILL after 5 s: this lab's own process only."""
    with contextlib.suppress(ProcessLookupError):
        daemon.process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        daemon.process.wait(timeout=5)
    if daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait(timeout=5)


def require_tools() -> list[str]:
    """Tools the lab needs that are missing."""
    missing = [tool for tool in ("ip", "swanctl", "bird", "birdc", "ping") if shutil.which(tool) is None]
    if not Path(CHARON).exists():
        missing.append(CHARON)
    return missing
