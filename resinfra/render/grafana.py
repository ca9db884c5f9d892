"""Grafana on the resinfra VM: grafana.ini, the Prometheus datasource, the dashboard provider and the dashboards.

Dashboards are built with Grafana's own Foundation SDK (types generated from Grafana's
dashboard schema, so pyright checks every field) and written as JSON for file
provisioning. The healing-events dashboard reads the healer's own metrics
(``resinfra.healer.observe``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as gmodel
from grafana_foundation_sdk.models import prometheus as gprom_model

from resinfra.render.jinja import render_template
from resinfra.render.monitoring import Job, MonitoringPlan, ToolingLayout
from resinfra.render.prometheus import SITE_TUNNEL_UP
from resinfra.render.yamltext import dump_yaml

DATASOURCE_UID = "resinfra-prometheus"
DATASOURCE = gmodel.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)
FOLDER = "resinfra"
NODE, MESH, HEALER = Job.NODE.value, Job.MESH.value, Job.HEALER.value


def render_grafana_ini(layout: ToolingLayout) -> str:
    """grafana.ini: listen on the private address, admin password from a file, no sign-up,
    no anonymous access, no phoning home.

    Grafana reads the password with ``$__file{...}`` so the secret is never in this file.
    """
    return render_template("grafana.ini.j2", layout=layout)


def render_datasources(layout: ToolingLayout) -> str:
    """Provisioned datasource: the local Prometheus, read-only in the UI."""
    config = {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": f"http://{layout.prometheus}",
                "isDefault": True,
                "editable": False,
            }
        ],
    }
    return "# Rendered by resinfra: Grafana datasources.\n" + dump_yaml(config)


def render_dashboard_provider(layout: ToolingLayout) -> str:
    """Provisioned dashboard provider: every JSON file in the dashboards directory, not editable in the UI."""
    config = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "resinfra",
                "folder": FOLDER,
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": layout.grafana_dashboards_dir},
            }
        ],
    }
    return "# Rendered by resinfra: Grafana dashboard provider.\n" + dump_yaml(config)


def query(expr: str, legend: str | None = None, instant: bool = False) -> gprom.Dataquery:
    """A Prometheus query on the provisioned datasource."""
    q = gprom.Dataquery().expr(expr).datasource(DATASOURCE).ref_id("A")
    if legend is not None:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(gprom_model.PromQueryFormat.TABLE)
    return q


UP_DOWN_MAPPING = gmodel.ValueMap(
    options={
        "0": gmodel.ValueMappingResult(text="DOWN", color="red", index=0),
        "1": gmodel.ValueMappingResult(text="UP", color="green", index=1),
    }
)


def _base(title: str, uid: str, description: str) -> gdash.Dashboard:
    return (
        gdash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["resinfra"])
        .readonly()
        .time("now-6h", "now")
        .refresh("30s")
        .timezone(common.TimeZoneBrowser)
    )


def nodes_dashboard(plan: MonitoringPlan) -> gdash.Dashboard:
    """One row per site (repeated over the ``site`` variable): node state, CPU, memory, root disk, network."""
    sel = f'job="{NODE}", site="$site"'
    site_variable = (
        gdash.QueryVariable("site")
        .label("Site")
        .datasource(DATASOURCE)
        .query(f'label_values(up{{job="{NODE}"}}, site)')
        .refresh(gmodel.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .current(gmodel.VariableOption(selected=True, text="All", value="$__all"))
    )
    percent = "percentunit"
    board = (
        _base("resinfra / Nodes", "resinfra-nodes", "Every machine of every site, from the stack's inventory.")
        .with_variable(site_variable)
        .with_row(gdash.Row("Site $site").repeat("site"))
        .with_panel(
            stat.Panel()
            .title("Nodes up")
            .description("1 while Prometheus scrapes the node's node_exporter.")
            .with_target(query(f"up{{{sel}}}", "{{node}}"))
            .mappings([UP_DOWN_MAPPING])
            .height(4)
            .span(24)
        )
    )
    per_node = [
        ("CPU busy", percent, f'1 - avg by (node) (rate(node_cpu_seconds_total{{{sel}, mode="idle"}}[$__rate_interval]))', 8),
        ("Memory used", percent, f"1 - node_memory_MemAvailable_bytes{{{sel}}} / node_memory_MemTotal_bytes{{{sel}}}", 8),
        ("Root filesystem free", percent, f'node_filesystem_avail_bytes{{{sel}, mountpoint="/"}} / node_filesystem_size_bytes{{{sel}, mountpoint="/"}}', 8),
        ("Network received", "Bps", f'sum by (node) (rate(node_network_receive_bytes_total{{{sel}, device!="lo"}}[$__rate_interval]))', 12),
        ("Network sent", "Bps", f'sum by (node) (rate(node_network_transmit_bytes_total{{{sel}, device!="lo"}}[$__rate_interval]))', 12),
    ]
    for title, unit, expr, width in per_node:
        panel = timeseries.Panel().title(title).unit(unit).with_target(query(expr, "{{node}}")).height(8).span(width)
        board = board.with_panel(panel.min(0).max(1) if unit == percent else panel)
    return board


def _latency_thresholds(plan: MonitoringPlan) -> gdash.ThresholdsConfig:
    limit = plan.thresholds.latency_seconds
    return (
        gdash.ThresholdsConfig()
        .mode(gmodel.ThresholdsMode.ABSOLUTE)
        .steps(
            [
                gmodel.Threshold(value=None, color="green"),
                gmodel.Threshold(value=limit / 2, color="yellow"),
                gmodel.Threshold(value=limit, color="red"),
            ]
        )
    )


def latency_dashboard(plan: MonitoringPlan) -> gdash.Dashboard:
    """The cross-site round-trip matrix (rows: probing site, columns: probed site) and its history."""
    rtt = f'probe_icmp_duration_seconds{{job="{MESH}", phase="rtt"}} > 0'
    return (
        _base(
            "resinfra / Cross-site latency",
            "resinfra-latency",
            f"ICMP round trips between sites through the tunnels; CrossSiteLatencyHigh fires above {plan.thresholds.latency_seconds} s.",
        )
        .with_panel(
            table.Panel()
            .title("Round trip: from (row) to (column)")
            .description("Average ICMP round trip from each site's prober to the other sites' gateway (or workers where the gateway is managed).")
            .unit("s")
            .thresholds(_latency_thresholds(plan))
            .with_target(query(f"avg by (source_site, site) ({rtt})", instant=True))
            .with_transformation(
                gmodel.DataTransformerConfig(
                    id_val="groupingToMatrix",
                    options={"columnField": "site", "rowField": "source_site", "valueField": "Value", "emptyValue": "null"},
                )
            )
            .height(10)
            .span(24)
        )
        .with_panel(
            timeseries.Panel()
            .title("Round trip per tunnel and direction")
            .unit("s")
            .thresholds(_latency_thresholds(plan))
            .with_target(query(f"avg by (source_site, site) ({rtt})", "{{source_site}} → {{site}}"))
            .height(10)
            .span(24)
        )
    )


def tunnels_dashboard(plan: MonitoringPlan) -> gdash.Dashboard:
    """Tunnel state per direction over time, which sites the resinfra VM reaches now, and (with gateway pairs) which
    gateway of a pair carries its site's links."""
    success = f'max by (source_site, site) (probe_success{{job="{MESH}"}})'
    board = (
        _base("resinfra / Tunnels", "resinfra-tunnels", "ICMP probes through every tunnel of the mesh, in both directions.")
        .with_panel(
            stat.Panel()
            .title(f"Sites reachable from the resinfra VM ({plan.tooling_site})")
            .description("SiteUnreachable fires when one stays DOWN.")
            .with_target(query(SITE_TUNNEL_UP, "{{site}}"))
            .mappings([UP_DOWN_MAPPING])
            .height(4)
            .span(24)
        )
        .with_panel(
            statetimeline.Panel()
            .title("Tunnel state: from → to")
            .with_target(query(success, "{{source_site}} → {{site}}"))
            .mappings([UP_DOWN_MAPPING])
            .height(12)
            .span(24)
        )
    )
    gateways = [n.site for n in plan.nodes if n.role == "gateway"]
    if any(gateways.count(site) > 1 for site in gateways):
        # Only with a pair: the metric comes from a pair's notify script (resinfra/render/failover.py).
        board = board.with_panel(
            statetimeline.Panel()
            .title("Active gateway: which VM of a pair carries its site's links")
            .description("1 while a gateway holds its pair's shared address and tunnels (keepalived MASTER); GatewayFailover fires when it moves.")
            .with_target(query(f'max by (site, node) (resinfra_gateway_active{{job="{Job.NODE.value}"}})', "{{node}}"))
            .height(6)
            .span(24)
        )
    return board


def healing_dashboard(plan: MonitoringPlan) -> gdash.Dashboard:
    """What the healer did: repairs, decisions by kind and reason, repair durations, the alerts it got and the requests it refused."""
    from resinfra.healer import observe

    sel = f'job="{HEALER}"'
    window = "$__range"
    state = [
        ("Repair running", f"{observe.REPAIR_IN_FLIGHT}{{{sel}}}", "1 while pulumi up replaces a machine (one at a time)."),
        ("Dry-run", f"{observe.DRY_RUN}{{{sel}}}", "1 when the healer only logs what it would do."),
        ("Healer up", f"up{{{sel}}}", "Prometheus scrapes the healer's /metrics."),
    ]
    board = _base("resinfra / Healing", "resinfra-healing", "The healer on the resinfra VM: what it decided and why, and every repair.")
    for title, expr, description in state:
        board = board.with_panel(stat.Panel().title(title).description(description).with_target(query(expr)).height(4).span(8))
    for title, metric in (
        ("Repairs started", observe.REPAIRS_STARTED),
        ("Repairs succeeded", observe.REPAIRS_SUCCEEDED),
        ("Repairs failed", observe.REPAIRS_FAILED),
    ):
        expr = f"sum(increase({metric}{{{sel}}}[{window}]))"
        board = board.with_panel(stat.Panel().title(title).description("In the dashboard's time range.").with_target(query(expr)).height(4).span(8))
    counts = [
        (
            "Decisions by kind and reason",
            f"sum by (kind, reason) (increase({observe.DECISIONS}{{{sel}}}[$__rate_interval]))",
            "{{kind}}: {{reason}}",
            "replace, would-replace (dry-run), wait (grace, backoff, one at a time), refuse (partition, max-unhealthy, flapping, ...).",
        ),
        (
            "Repair duration",
            f"histogram_quantile(0.9, sum by (le) (rate({observe.REPAIR_DURATION}_bucket{{{sel}}}[{window}])))",
            "p90",
            "From the start of pulumi up to its end.",
        ),
        (
            "Alerts received",
            f"sum by (alertname, status) (increase({observe.ALERTS_RECEIVED}{{{sel}}}[$__rate_interval]))",
            "{{alertname}} {{status}}",
            "Webhooks from Alertmanager: NodeDown, SiteUnreachable, TunnelDown.",
        ),
        (
            "Requests refused",
            f"sum by (why) (increase({observe.REJECTED_REQUESTS}{{{sel}}}[$__rate_interval]))",
            "{{why}}",
            "Wrong or missing token, malformed or oversized bodies: anything but Alertmanager.",
        ),
    ]
    for title, expr, legend, description in counts:
        board = board.with_panel(timeseries.Panel().title(title).description(description).with_target(query(expr, legend)).min(0).height(8).span(12))
    return board


DASHBOARDS: dict[str, Callable[[MonitoringPlan], gdash.Dashboard]] = {
    "nodes.json": nodes_dashboard,
    "latency.json": latency_dashboard,
    "tunnels.json": tunnels_dashboard,
    "healing.json": healing_dashboard,
}


def dashboard_json(builder: cogbuilder.Builder[gmodel.Dashboard]) -> str:
    """The dashboard as provisioning JSON, its panels numbered in order (stable ids keep links working)."""
    board = builder.build()
    for number, panel in enumerate(board.panels or [], start=1):
        panel.id_val = number
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def render_dashboards(plan: MonitoringPlan) -> dict[str, str]:
    """Every dashboard as JSON, by file name (the healing one only when the healer is deployed).

    Example: ``render_dashboards(plan)["latency.json"]`` holds the cross-site latency matrix.
    """
    # Without the healer nothing feeds the healing dashboard: an empty board only misleads.
    return {name: dashboard_json(build(plan)) for name, build in DASHBOARDS.items() if plan.healer or build is not healing_dashboard}


def dashboard_queries(text: str) -> list[str]:
    """Every PromQL expression in a dashboard's JSON (panels and variables)."""
    doc: dict[str, Any] = json.loads(text)
    exprs = [t["expr"] for p in doc.get("panels", []) for t in p.get("targets", []) if "expr" in t]
    for variable in doc.get("templating", {}).get("list", []):
        q = variable.get("query")
        if isinstance(q, str):
            exprs.append(q)
    return exprs
