"""systemd units of Prometheus, Alertmanager and blackbox_exporter, and the command lines they run.

The command lines are built here once: the units use them, and so do the loopback tests
and the lab, which start the same programs with the same flags (only the layout's
addresses and paths differ).
"""

from __future__ import annotations

from dataclasses import dataclass

from resinfra.render.jinja import render_template
from resinfra.render.monitoring import ToolingLayout

PROMETHEUS_UNIT = "prometheus.service"
ALERTMANAGER_UNIT = "prometheus-alertmanager.service"
BLACKBOX_UNIT = "prometheus-blackbox-exporter.service"
GRAFANA_UNIT = "grafana-server.service"
"""Grafana keeps its package's unit (its binary's path and flags change between releases);
it is configured through grafana.ini."""
CAP_NET_RAW = "CAP_NET_RAW"


@dataclass(frozen=True)
class ServiceSpec:
    """A long-running service: what it runs, as whom, what it may write."""

    unit: str
    description: str
    documentation: str
    user: str
    argv: tuple[str, ...]
    writable_paths: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()


def prometheus_service(layout: ToolingLayout) -> ServiceSpec:
    """Prometheus with the rendered config, its TSDB and a loopback listener."""
    return ServiceSpec(
        unit=PROMETHEUS_UNIT,
        description="Prometheus on the tooling VM",
        documentation="https://prometheus.io/docs/",
        user=layout.service_user,
        argv=(
            layout.prometheus_bin,
            f"--config.file={layout.prometheus_config}",
            f"--storage.tsdb.path={layout.prometheus_data_dir}",
            f"--storage.tsdb.retention.time={layout.retention}",
            f"--web.listen-address={layout.prometheus}",
            f"--web.external-url={layout.prometheus.url}",
        ),
        writable_paths=(layout.prometheus_data_dir,),
    )


def alertmanager_service(layout: ToolingLayout) -> ServiceSpec:
    """Alertmanager alone (no gossip cluster: one tooling VM), on loopback."""
    return ServiceSpec(
        unit=ALERTMANAGER_UNIT,
        description="Alertmanager on the tooling VM",
        documentation="https://prometheus.io/docs/alerting/latest/alertmanager/",
        user=layout.service_user,
        argv=(
            layout.alertmanager_bin,
            f"--config.file={layout.alertmanager_config}",
            f"--storage.path={layout.alertmanager_data_dir}",
            f"--web.listen-address={layout.alertmanager}",
            f"--web.external-url={layout.alertmanager.url}",
            # Empty: no cluster listener (it would bind *:9094 and wait for peers).
            "--cluster.listen-address=",
        ),
        writable_paths=(layout.alertmanager_data_dir,),
    )


def blackbox_service(layout: ToolingLayout) -> ServiceSpec:
    """blackbox_exporter; ICMP needs CAP_NET_RAW (and nothing else)."""
    return ServiceSpec(
        unit=BLACKBOX_UNIT,
        description="blackbox_exporter: ICMP probes across the mesh",
        documentation="https://github.com/prometheus/blackbox_exporter",
        user=layout.service_user,
        argv=(
            layout.blackbox_bin,
            f"--config.file={layout.blackbox_config}",
            f"--web.listen-address={layout.blackbox}",
        ),
        capabilities=(CAP_NET_RAW,),
    )


def tooling_services(layout: ToolingLayout) -> list[ServiceSpec]:
    """The services the tooling VM runs from rendered units."""
    return [prometheus_service(layout), alertmanager_service(layout), blackbox_service(layout)]


def render_unit(spec: ServiceSpec) -> str:
    """A hardened systemd unit for ``spec``.

    Example: ``render_unit(prometheus_service(ToolingLayout()))`` starts ``/usr/bin/prometheus``
    with ``--web.listen-address=127.0.0.1:9090``.
    """
    if any(" " in arg for arg in spec.argv):
        raise ValueError(f"{spec.unit}: arguments must not contain spaces (systemd splits ExecStart on them)")
    return render_template("tooling-service.service.j2", spec=spec)
