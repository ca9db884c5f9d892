"""Which files the tooling VM (and each site's prober) gets, and how: at first boot or pushed.

The packages (and Grafana's apt repository) come with the role: images/provision/tooling.sh,
baked into a Packer image or run by cloud-init at first boot. Everything the program may
change later is pushed over SSH, because a changed user-data replaces the VM on Hetzner,
Azure and Proxmox, and with it Prometheus' history:

- ``config``: prometheus.yml, rules, blackbox.yml, units, Grafana provisioning and dashboards;
- ``targets``: the file_sd lists drawn from the inventory (Prometheus watches them: no reload);
- ``secrets``: the healer's token, Grafana's admin password and alertmanager.yml (which
  holds the notification URL), readable by their service's user only.

Probers on other sites need only blackbox_exporter with a static config: that is in their
user-data.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from resinfra.render.alertmanager import render_alertmanager_config
from resinfra.render.blackbox import render_blackbox_config
from resinfra.render.cloud_init import WriteFile
from resinfra.render.grafana import render_dashboard_provider, render_dashboards, render_datasources, render_grafana_ini
from resinfra.render.monitoring import BLACKBOX_PORT, AlertTimings, Endpoint, MonitoringPlan, ToolingLayout
from resinfra.render.prometheus import render_mesh_file_sd, render_nodes_file_sd, render_prometheus_config, render_rules
from resinfra.render.push_script import WAIT_FOR_CLOUD_INIT, FileToPush
from resinfra.render.tooling_units import (
    ALERTMANAGER_UNIT,
    BLACKBOX_UNIT,
    GRAFANA_UNIT,
    PROMETHEUS_UNIT,
    blackbox_service,
    render_unit,
    tooling_services,
)

TOOLING_UNITS = (PROMETHEUS_UNIT, ALERTMANAGER_UNIT, BLACKBOX_UNIT, GRAFANA_UNIT)


@dataclass(frozen=True)
class BootExtras:
    """What a machine's user-data adds for monitoring (see ``CloudInitSpec``): files and commands only.

    Packages come with the machine's role (images/provision), never with its user-data.
    """

    files: tuple[WriteFile, ...] = ()
    commands: tuple[tuple[str, ...], ...] = ()


def prober_layout(private_ip: str) -> ToolingLayout:
    """A prober's blackbox_exporter listens on its private address (the tooling VM scrapes it across the mesh)."""
    return ToolingLayout(blackbox=Endpoint(private_ip, BLACKBOX_PORT))


def prober_boot(private_ip: str, timings: AlertTimings) -> BootExtras:
    """A site's prober (its first worker): blackbox_exporter with the ICMP module, on the private address.

    Every worker has blackbox_exporter installed and disabled (images/provision/worker.sh), so
    whichever machine is the prober, or replaces it, only needs this.
    """
    layout = prober_layout(private_ip)
    # Deferred: on an image the package's own files exist first, then these replace them.
    return BootExtras(
        files=(
            WriteFile(layout.blackbox_config, render_blackbox_config(timings), defer=True),
            WriteFile(f"{layout.systemd_dir}/{BLACKBOX_UNIT}", render_unit(blackbox_service(layout)), defer=True),
        ),
        commands=(("systemctl", "daemon-reload"), ("systemctl", "enable", BLACKBOX_UNIT), ("systemctl", "restart", BLACKBOX_UNIT)),
    )


@dataclass(frozen=True)
class PushSet:
    """Files pushed together, with the commands around them."""

    purpose: str
    files: tuple[FileToPush, ...]
    before: tuple[str, ...]
    then: tuple[str, ...]


def _dirs(*specs: tuple[str, str, str]) -> tuple[str, ...]:
    """``install -d`` commands: (path, mode, owner:group); an existing directory gets the mode and owner too."""
    out = []
    for path, mode, owner in specs:
        user, group = owner.split(":")
        out.append(f"install -d -m {mode} -o {shlex.quote(user)} -g {shlex.quote(group)} {shlex.quote(path)}")
    return tuple(out)


def _readable_dirs(layout: ToolingLayout) -> tuple[str, ...]:
    """Directories the services read: world-traversable, root-owned (the push's umask is 077)."""
    return _dirs(
        *(
            (d, "0755", "root:root")
            for d in (
                layout.config_dir,
                layout.file_sd_dir,
                layout.rules_file.rsplit("/", 1)[0],
                f"{layout.grafana_dir}/provisioning/datasources",
                f"{layout.grafana_dir}/provisioning/dashboards",
                layout.grafana_dashboards_dir,
            )
        )
    )


def config_push(plan: MonitoringPlan) -> PushSet:
    """Everything that changes only with the program: configs, rules, units, Grafana provisioning."""
    layout = plan.layout
    files = [
        FileToPush(layout.prometheus_config, render_prometheus_config(plan)),
        FileToPush(layout.rules_file, render_rules(plan)),
        FileToPush(layout.blackbox_config, render_blackbox_config(plan.timings)),
        *(FileToPush(f"{layout.systemd_dir}/{s.unit}", render_unit(s)) for s in tooling_services(layout)),
        FileToPush(layout.grafana_ini, render_grafana_ini(layout), "0640", f"root:{layout.grafana_user}"),
        FileToPush(layout.grafana_datasources_file, render_datasources(layout), "0640", f"root:{layout.grafana_user}"),
        FileToPush(layout.grafana_dashboard_provider_file, render_dashboard_provider(layout), "0640", f"root:{layout.grafana_user}"),
        *(FileToPush(f"{layout.grafana_dashboards_dir}/{name}", text) for name, text in render_dashboards(plan).items()),
    ]
    units = " ".join(TOOLING_UNITS)
    return PushSet(
        purpose="config",
        files=tuple(files),
        before=(
            WAIT_FOR_CLOUD_INIT,
            *_readable_dirs(layout),
            # The units may write only here (ProtectSystem=strict); make sure both exist.
            *_dirs(*((d, "0750", f"{layout.service_user}:{layout.service_user}") for d in (layout.prometheus_data_dir, layout.alertmanager_data_dir))),
        ),
        then=("systemctl daemon-reload", f"systemctl enable {units}", f"systemctl restart {units}"),
    )


def targets_push(plan: MonitoringPlan) -> PushSet:
    """The scrape and probe targets from the inventory. Prometheus watches file_sd files: no reload."""
    layout = plan.layout
    return PushSet(
        purpose="targets",
        files=(FileToPush(layout.nodes_file, render_nodes_file_sd(plan)), FileToPush(layout.mesh_file, render_mesh_file_sd(plan))),
        before=(WAIT_FOR_CLOUD_INIT, *_readable_dirs(layout)),
        then=(),
    )


def secrets_push(plan: MonitoringPlan, healer_token: str, grafana_password: str, notification_url: str | None) -> PushSet:
    """The secrets as files readable by their service's user only, and alertmanager.yml (which may hold a URL that is a secret).

    Runs before the ``config`` push starts the services (a first start without them would
    fail); afterwards a changed secret restarts the services that read it.
    """
    layout = plan.layout
    service = f"root:{layout.service_user}"
    grafana = f"root:{layout.grafana_user}"
    return PushSet(
        purpose="secrets",
        files=(
            FileToPush(layout.healer_token_file, healer_token, "0640", service),
            FileToPush(layout.grafana_password_file, grafana_password, "0640", grafana),
            FileToPush(layout.alertmanager_config, render_alertmanager_config(plan, notification_url), "0640", service),
        ),
        before=(
            WAIT_FOR_CLOUD_INIT,
            *_dirs(
                (layout.config_dir, "0755", "root:root"),
                (layout.secrets_dir, "0750", service),
                (layout.grafana_password_file.rsplit("/", 1)[0], "0750", grafana),
            ),
        ),
        # try-restart: before the first config push the services are not running yet.
        then=(f"systemctl try-restart {ALERTMANAGER_UNIT} {GRAFANA_UNIT}",),
    )
