"""What the tooling VM monitors and where its services live: the one typed input of every tooling renderer.

Everything a renderer needs that could differ between a cloud VM, a test on loopback
and the lab (addresses, ports, paths, timings) lives in :class:`ToolingLayout`,
:class:`AlertTimings` and the target addresses of :class:`MonitoringPlan`, so those
callers change only these values and render the same files.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from resinfra.addressing import Role
from resinfra.naming import link_name
from resinfra.render.cloud_init import NODE_EXPORTER_PORT

PROMETHEUS_PORT = 9090
ALERTMANAGER_PORT = 9093
BLACKBOX_PORT = 9115
GRAFANA_PORT = 3000
HEALER_PORT = 9797
"""Where the healer listens for Alertmanager's webhooks: 127.0.0.1 on the tooling VM
(Alertmanager is its only client). The one place this number is written down."""
HEALER_WEBHOOK_PATH = "/alerts"
LOOPBACK = "127.0.0.1"


class Job(enum.StrEnum):
    """Prometheus job names: the rules and dashboards select on them."""

    NODE = "node"
    """node_exporter on every machine."""
    MESH = "mesh"
    """ICMP probes from one prober per site to every other site."""
    PROMETHEUS = "prometheus"
    ALERTMANAGER = "alertmanager"
    HEALER = "healer"
    """The healer's /metrics on the tooling VM."""


class Scope(enum.StrEnum):
    """What an alert is about; Alertmanager routes on it."""

    NODE = "node"
    SITE = "site"
    MESH = "mesh"
    RESINFRA_VM = "resinfra-vm"


HEALER_SCOPES = (Scope.NODE, Scope.SITE)
"""Alerts the healer receives: node deaths and site partitions."""


@dataclass(frozen=True)
class Endpoint:
    """A host and port a service listens on."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self}/"


@dataclass(frozen=True)
class ToolingLayout:
    """Where the tooling VM's services listen and keep their files.

    Prometheus, Alertmanager and blackbox_exporter listen on loopback only: their APIs have
    no authentication (an Alertmanager silence would blind the healer). Grafana, which
    has a login, listens on the private address so it is also reachable across the mesh.
    """

    grafana: Endpoint = Endpoint(LOOPBACK, GRAFANA_PORT)
    prometheus: Endpoint = Endpoint(LOOPBACK, PROMETHEUS_PORT)
    alertmanager: Endpoint = Endpoint(LOOPBACK, ALERTMANAGER_PORT)
    blackbox: Endpoint = Endpoint(LOOPBACK, BLACKBOX_PORT)
    healer: Endpoint = Endpoint(LOOPBACK, HEALER_PORT)
    config_dir: str = "/etc/prometheus"
    prometheus_data_dir: str = "/var/lib/prometheus/metrics2"
    alertmanager_data_dir: str = "/var/lib/prometheus/alertmanager"
    grafana_dir: str = "/etc/grafana"
    systemd_dir: str = "/etc/systemd/system"
    service_user: str = "prometheus"
    """User of Prometheus, Alertmanager and blackbox_exporter (the Debian packages' user)."""
    grafana_user: str = "grafana"
    prometheus_bin: str = "/usr/bin/prometheus"
    alertmanager_bin: str = "/usr/bin/prometheus-alertmanager"
    blackbox_bin: str = "/usr/bin/prometheus-blackbox-exporter"
    retention: str = "30d"

    @property
    def prometheus_config(self) -> str:
        return f"{self.config_dir}/prometheus.yml"

    @property
    def rules_file(self) -> str:
        return f"{self.config_dir}/rules/resinfra.rules.yml"

    @property
    def file_sd_dir(self) -> str:
        return f"{self.config_dir}/file_sd"

    @property
    def nodes_file(self) -> str:
        return f"{self.file_sd_dir}/nodes.json"

    @property
    def mesh_file(self) -> str:
        return f"{self.file_sd_dir}/mesh.json"

    @property
    def alertmanager_config(self) -> str:
        return f"{self.config_dir}/alertmanager.yml"

    @property
    def blackbox_config(self) -> str:
        return f"{self.config_dir}/blackbox.yml"

    @property
    def secrets_dir(self) -> str:
        return f"{self.config_dir}/secrets"

    @property
    def healer_token_file(self) -> str:
        """Bearer token Alertmanager presents to the healer (readable by the service user only)."""
        return f"{self.secrets_dir}/healer-token"

    @property
    def grafana_ini(self) -> str:
        return f"{self.grafana_dir}/grafana.ini"

    @property
    def grafana_password_file(self) -> str:
        return f"{self.grafana_dir}/secrets/admin-password"

    @property
    def grafana_datasources_file(self) -> str:
        return f"{self.grafana_dir}/provisioning/datasources/resinfra.yaml"

    @property
    def grafana_dashboard_provider_file(self) -> str:
        return f"{self.grafana_dir}/provisioning/dashboards/resinfra.yaml"

    @property
    def grafana_dashboards_dir(self) -> str:
        return f"{self.grafana_dir}/dashboards/resinfra"

    @property
    def healer_url(self) -> str:
        return f"http://{self.healer}{HEALER_WEBHOOK_PATH}"


@dataclass(frozen=True)
class AlertTimings:
    """How fast things are noticed, in seconds. The defaults are production's; tests and
    the lab shrink them (the rules' logic is the same at any scale)."""

    scrape_interval: int = 15
    evaluation_interval: int = 15
    node_down_for: int = 60
    """Four missed scrapes: a single failed scrape (a blip) never fires NodeDown."""
    site_unreachable_for: int = 60
    tunnel_down_for: int = 120
    latency_for: int = 600
    resource_for: int = 300
    healer_group_wait: int = 0
    """The healer gets each new alert at once; it applies its own grace periods."""
    healer_group_interval: int = 10
    healer_repeat_interval: int = 300
    """Firing alerts are re-sent every 5 minutes so a restarted healer relearns the state."""
    notify_group_wait: int = 30
    notify_group_interval: int = 300
    notify_repeat_interval: int = 4 * 3600

    @property
    def probe_timeout(self) -> int:
        """Blackbox probe timeout: below the scrape interval so a lost reply never overlaps the next probe."""
        return max(1, min(5, self.scrape_interval - 1))


@dataclass(frozen=True)
class Thresholds:
    """Alert thresholds."""

    latency_seconds: float = 0.25
    """Round trip between two sites above which CrossSiteLatencyHigh fires."""
    disk_free_ratio: float = 0.10
    memory_available_ratio: float = 0.10


@dataclass(frozen=True)
class InventoryNode:
    """A machine as the stack's inventory lists it (the part monitoring needs)."""

    name: str
    site: str
    provider: str
    role: Role
    private_ip: str


@dataclass(frozen=True)
class ScrapeTarget:
    """A node_exporter Prometheus scrapes."""

    node: str
    site: str
    provider: str
    role: Role
    address: str
    """host:port."""


@dataclass(frozen=True)
class Prober:
    """The blackbox_exporter that probes other sites from one site."""

    site: str
    node: str
    address: str
    """host:port of its blackbox_exporter."""


@dataclass(frozen=True)
class ProbeTarget:
    """An address that answers ICMP when its site is reachable through the mesh."""

    site: str
    node: str
    role: Role
    address: str


@dataclass(frozen=True)
class MonitoringPlan:
    """Everything the tooling VM's renderers need."""

    tooling_site: str
    tooling_node: str
    nodes: tuple[ScrapeTarget, ...]
    probers: tuple[Prober, ...]
    probe_targets: tuple[ProbeTarget, ...]
    layout: ToolingLayout
    timings: AlertTimings = field(default_factory=AlertTimings)
    thresholds: Thresholds = field(default_factory=Thresholds)
    healer: bool = True
    """Whether the healer runs on the tooling VM (``resinfra:healer.backendUrl`` is set):
    its scrape job and the HealerDown alert exist only then."""

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(n.site for n in self.nodes))

    def tunnel_name(self, a: str, b: str) -> str:
        """The link between two sites as the mesh names it (``gcp-azure``, the site first in the
        inventory first), whichever end probes."""
        first, second = sorted((a, b), key=self.sites.index)
        return link_name(first, second)

    def probe_pairs(self) -> list[tuple[Prober, ProbeTarget]]:
        """Every (prober, target) with the target on another site: the mesh job's targets."""
        return [(p, t) for p in self.probers for t in self.probe_targets if t.site != p.site]


def prober_of(site: str, nodes: Iterable[InventoryNode], tooling_node: InventoryNode) -> InventoryNode | None:
    """Which machine probes the other sites from ``site``.

    The tooling VM on its own site; elsewhere the first worker (every site has one, and
    it measures what workloads see).
    """
    if site == tooling_node.site:
        return tooling_node
    # The inventory lists workers in index order: this is worker PROBER_WORKER_INDEX.
    return next((n for n in nodes if n.site == site and n.role is Role.WORKER), None)


def probe_targets_of(site: str, nodes: Iterable[InventoryNode]) -> list[ProbeTarget]:
    """What answers when ``site`` is reachable through its tunnels.

    A strongSwan gateway VM is the tunnel's end: probe it, and both VMs of a pair (the
    backup answers through the active one), so the site counts as reachable while either
    does and each VM's own reachability shows. A managed gateway (Azure VNet gateway, GCP
    HA VPN) has no address that answers ICMP from across a tunnel (GCP's BGP addresses
    are link-local and Cloud VPN does not reply to pings; Azure answers on its BGP address
    only to BGP peers), so the site's workers stand in for it: the site counts as reachable
    while any of them answers.
    """
    members = [n for n in nodes if n.site == site]
    gateways = [n for n in members if n.role is Role.GATEWAY]
    return [ProbeTarget(site, n.name, n.role, n.private_ip) for n in (gateways or [n for n in members if n.role is Role.WORKER])]


def monitoring_plan(
    inventory: Iterable[InventoryNode],
    layout: ToolingLayout,
    timings: AlertTimings | None = None,
    thresholds: Thresholds | None = None,
    healer: bool = True,
) -> MonitoringPlan:
    """The monitoring plan for a stack's inventory.

    + inventory: every machine (the stack's ``inventory`` output), sites in number order
      (their order names the links: :meth:`MonitoringPlan.tunnel_name`)
    + layout: where the tooling VM's services listen and keep files

    Example: ``monitoring_plan(nodes, ToolingLayout(Endpoint("10.10.48.5", 3000)))``.
    """
    nodes = list(inventory)
    (tooling,) = [n for n in nodes if n.role is Role.TOOLING]
    sites = list(dict.fromkeys(n.site for n in nodes))
    probers = []
    for site in sites:
        prober = prober_of(site, nodes, tooling)
        if prober is None:
            continue
        address = str(layout.blackbox) if prober is tooling else f"{prober.private_ip}:{BLACKBOX_PORT}"
        probers.append(Prober(site, prober.name, address))
    return MonitoringPlan(
        tooling_site=tooling.site,
        tooling_node=tooling.name,
        nodes=tuple(ScrapeTarget(n.name, n.site, n.provider, n.role, f"{n.private_ip}:{NODE_EXPORTER_PORT}") for n in nodes),
        probers=tuple(probers),
        probe_targets=tuple(t for site in sites for t in probe_targets_of(site, nodes)),
        layout=layout,
        timings=timings or AlertTimings(),
        thresholds=thresholds or Thresholds(),
        healer=healer,
    )


PROBER_WORKER_INDEX = 1
"""Sites without the tooling VM probe the others from their first worker."""


def ssh_tunnel_command(layout: ToolingLayout, admin_user: str, public_ip: str) -> str:
    """The one-liner that forwards Grafana, Prometheus and Alertmanager to the operator's machine.

    Example: ``ssh -N -L 3000:10.10.48.5:3000 -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093 resinfra@203.0.113.7``,
    then open http://localhost:3000.
    """
    forwards = " ".join(f"-L {e.port}:{e.host}:{e.port}" for e in (layout.grafana, layout.prometheus, layout.alertmanager))
    return f"ssh -N {forwards} {admin_user}@{public_ip}"
