"""What a running lab consists of, on disk: its namespaces, its processes (by PID) and its sites and machines.

``lab up`` writes it step by step, before and after each thing it creates; every later
command (``status``, ``kill``, the healer's replacement, ``down``) reads it, changes it under
a file lock and writes it back atomically. A process is known by its PID *and* its start
time, so a recycled PID is never signalled.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from resinfra.netlab import Lab
from resinfra.netlab.topology import CloudNetwork, LabSite, PairNetwork
from resinfra.roles import Role

STATE_FILE = "state.json"
LOCK_FILE = "lock"


class LabStateError(RuntimeError):
    """No lab of that name, or one that is not in the state a command needs."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProcessRecord(_Model):
    """A process the lab started."""

    pid: int
    start_ticks: int
    """Field 22 of /proc/PID/stat: with the PID, identifies the process across PID reuse."""
    argv: list[str]
    namespace: str
    log: str


class SiteRecord(_Model):
    """A site as :class:`resinfra.netlab.topology.LabSite` describes it."""

    key: str
    public_ips: list[str]
    lan: str
    nodes: list[str]
    node_names: list[str]
    cloud: CloudNetwork | None = None
    """An emulated cloud's network (Azure, GCP): its tunnels' swanctl.conf, routes and BGP speakers."""
    pair: PairNetwork | None = None
    """A gateway pair's members (``gateways: 2``)."""
    failed_routers: list[str] = []
    """Gateway instances killed (``lab kill-instance``) and not revived."""

    @property
    def swanctl_emulated(self) -> bool:
        """A managed gateway (Azure, GCP), played by strongSwan and bird."""
        return self.cloud is not None

    def lab_site(self) -> LabSite:
        return LabSite(
            key=self.key,
            public_ips=tuple(self.public_ips),
            lan=ipaddress.IPv4Interface(self.lan),
            nodes=tuple(ipaddress.IPv4Interface(n) for n in self.nodes),
            node_names=tuple(self.node_names),
            cloud=self.cloud,
            pair=self.pair,
        )

    @staticmethod
    def of(site: LabSite) -> SiteRecord:
        return SiteRecord(
            key=site.key,
            public_ips=list(site.public_ips),
            lan=str(site.lan),
            nodes=[str(n) for n in site.nodes],
            node_names=list(site.node_names),
            cloud=site.cloud,
            pair=site.pair,
        )


class MachinePlace(_Model):
    """Where a machine of the stack's inventory lives in the lab."""

    name: str
    site: str
    role: Role
    private_ip: str
    namespace: str
    node_index: int | None
    """Its index among its site's lab nodes (its own namespace); None for a gateway VM, which is its site's gateway namespace."""
    paired: bool = False
    """One of a gateway pair: a namespace of its own (``<lab>-<site>-gw-<k>``) with charon and keepalived (:mod:`resinfra.lab.pairs`)."""

    @property
    def own_namespace(self) -> bool:
        """Workers and the tooling VM have their own namespace; a gateway VM is its site's gateway namespace."""
        return self.node_index is not None


class MachineRecord(MachinePlace):
    """A machine of the lab as it runs."""

    root: str
    """Its directory: the user-data it boots from, the files that writes, its logs."""
    created: float
    """When its namespace was (re)created: the healer reads it as the state's creation time."""
    dead: bool = False
    """Killed with ``lab kill`` and not replaced since."""


class LabState(_Model):
    """The state file of one lab."""

    name: str
    root: str
    created: float
    boot_id: str
    """The kernel's boot id when the lab came up: after a reboot its namespaces and processes are gone."""
    stack: str
    config_file: str
    workers: int | None
    namespaces: list[str]
    """Every namespace the lab creates (recorded before it is created): ``down`` removes these and nothing else."""
    processes: dict[str, ProcessRecord] = {}
    """By key: ``<machine>/<unit>`` for a machine's services, ``<namespace key>/charon`` and ``/bird`` (a site, or a cloud's
    ``<site>-<tunnel or instance>``), ``healer``, ``forward``."""
    sites: list[SiteRecord] = []
    machines: dict[str, MachineRecord] = {}
    ui: dict[str, int] = {}
    """Host ports on 127.0.0.1 by UI name."""
    ui_targets: dict[str, str] = {}
    """What each UI port reaches inside the tooling VM's namespace (host:port)."""
    partitioned: list[str] = []
    partitioned_at: dict[str, float] = {}
    """When each partitioned site was cut (POSIX time): its tunnels look up until dead-peer detection notices."""
    tunnels: int = 0
    expected_targets: int = 0
    """Scrape targets of the node and mesh jobs (each must be up)."""
    tooling_namespace: str = ""
    inventory_file: str = ""
    audit_log: str = ""
    healer_argv: list[str] = []
    healer_log: str = ""

    @property
    def net_dir(self) -> Path:
        return Path(self.root) / "net"

    def netlab(self) -> Lab:
        """The namespaces and gateways as :class:`resinfra.netlab.Lab` sees them (for swanctl, pings, nodes, uplinks)."""
        failed = {Lab.part_key(s.key, r) for s in self.sites for r in s.failed_routers}
        failed |= {m.namespace.removeprefix(f"{self.name}-") for m in self.machines.values() if m.paired and m.dead}
        return Lab(self.name, self.net_dir, sites={s.key: s.lab_site() for s in self.sites}, detach=True, failed=failed)

    def machine(self, name: str) -> MachineRecord:
        if name not in self.machines:
            raise LabStateError(f"no machine {name!r} in lab {self.name}; machines: {', '.join(self.machines)}")
        return self.machines[name]

    def site(self, key: str) -> SiteRecord:
        for site in self.sites:
            if site.key == key:
                return site
        raise LabStateError(f"no site {key!r} in lab {self.name}; sites: {', '.join(s.key for s in self.sites)}")


# -- the file ------------------------------------------------------------------


def state_path(root: Path) -> Path:
    return root / STATE_FILE


def require_lab(root: Path) -> None:
    if not state_path(root).exists():
        raise LabStateError(f"no lab is up in {root} (start one with: resinfra lab up)")


def load(root: Path) -> LabState:
    require_lab(root)
    return LabState.model_validate_json(state_path(root).read_text())


def save(state: LabState) -> None:
    """Write atomically: a reader (another command, the healer's action) never sees half a file."""
    path = state_path(Path(state.root))
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the lab's lock (released by the kernel if the holder dies)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def changing(root: Path) -> Iterator[LabState]:
    """Load the state under the lock, let the caller change it, save it."""
    require_lab(root)  # before the lock: taking it would leave a directory for a lab that was never up
    with locked(root):
        state = load(root)
        yield state
        save(state)


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


# -- processes -----------------------------------------------------------------


def start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def alive(record: ProcessRecord) -> bool:
    _reap(record.pid)
    return start_ticks(record.pid) == record.start_ticks


def _reap(pid: int) -> None:
    """Collect the exit status if this process is the parent (a test that ran ``lab up`` in-process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def spawn(namespace: str, argv: Sequence[str], log: Path, pass_fds: Sequence[int] = (), network_only: bool = False) -> ProcessRecord:
    """Start ``argv`` in ``namespace`` in its own session (it outlives the command that started it), output to ``log``.

    ``ip netns exec`` also gives the process a mount namespace of its own, and namespaces are bind mounts under
    /run/netns: one that such a process (or its children) adds with ``ip netns add`` is mounted in its mount namespace
    only, and one it deletes stays mounted everywhere else. The healer, whose action replaces machines, therefore
    enters the network namespace alone (``network_only``: ``nsenter --net``) and keeps this mount namespace.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    enter = ["nsenter", f"--net=/run/netns/{namespace}", "--"] if network_only else ["ip", "netns", "exec", namespace]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*enter, *argv],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    return record_of(process.pid, list(argv), namespace, log)


def record_of(pid: int, argv: list[str], namespace: str, log: Path) -> ProcessRecord:
    ticks = start_ticks(pid)
    if ticks is None:
        raise LabStateError(f"{argv[0]} exited at once; see {log}")
    return ProcessRecord(pid=pid, start_ticks=ticks, argv=argv, namespace=namespace, log=str(log))


def stop(record: ProcessRecord, grace: float = 5.0, sig: signal.Signals = signal.SIGTERM) -> None:
    """End a process the lab started: ``sig``, then SIGKILL after ``grace`` seconds. Only if it is still that process."""
    if not alive(record):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(record.pid, sig)
    deadline = time.monotonic() + grace
    while alive(record) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(record):
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while alive(record) and time.monotonic() < deadline:
            time.sleep(0.05)


def namespace_pids(namespace: str) -> list[int]:
    """PIDs of the processes in a namespace (``ip netns pids``): what is left after the recorded ones stopped."""
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit() and p != str(os.getpid())]


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def existing_namespaces() -> set[str]:
    netns = Path("/run/netns")
    return {p.name for p in netns.iterdir()} if netns.is_dir() else set()
