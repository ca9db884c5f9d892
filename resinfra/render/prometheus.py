"""Prometheus on the tooling VM: prometheus.yml, the file_sd target lists and the alert rules."""

from __future__ import annotations

import json
from typing import Any

from resinfra.render.monitoring import Job, MonitoringPlan, Scope
from resinfra.render.yamltext import dump_yaml


def seconds(value: int) -> str:
    """A Prometheus duration: ``seconds(60)`` is ``"60s"``."""
    return f"{value}s"


def render_nodes_file_sd(plan: MonitoringPlan) -> str:
    """file_sd list of every node_exporter, labelled with its site, role, node and provider.

    Example: one entry per machine,
    ``{"targets": ["10.10.48.10:9100"], "labels": {"site": "hetzner", "role": "worker", ...}}``.
    """
    groups = [
        {"targets": [n.address], "labels": {"site": n.site, "role": n.role.value, "node": n.node, "provider": n.provider}}
        for n in sorted(plan.nodes, key=lambda n: (n.site, n.node))
    ]
    return json.dumps(groups, indent=2) + "\n"


def render_mesh_file_sd(plan: MonitoringPlan) -> str:
    """file_sd list of the mesh probes: one entry per (prober, remote target).

    The target's address is the prober's blackbox_exporter; ``__param_target`` is what it
    pings. ``site``/``node``/``role`` describe the pinged machine, ``source_site`` the prober's
    site and ``tunnel`` the mesh link between the two sites (its name in the plan), whatever the direction.
    """
    groups = [
        {
            "targets": [prober.address],
            "labels": {
                "__param_target": target.address,
                "source_site": prober.site,
                "prober": prober.node,
                "site": target.site,
                "role": target.role.value,
                "node": target.node,
                "tunnel": plan.tunnel_name(prober.site, target.site),
            },
        }
        for prober, target in sorted(plan.probe_pairs(), key=lambda pair: (pair[0].site, pair[1].site, pair[1].node))
    ]
    return json.dumps(groups, indent=2) + "\n"


def render_prometheus_config(plan: MonitoringPlan) -> str:
    """prometheus.yml: node and mesh jobs from file_sd, the rules, the local Alertmanager.

    Targets live in file_sd files that Prometheus watches, so a changed inventory needs
    no reload; this file changes only with the program.
    """
    layout, timings = plan.layout, plan.timings
    tooling_labels = {"site": plan.tooling_site, "role": "tooling", "node": plan.tooling_node}
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": seconds(timings.scrape_interval),
            "scrape_timeout": seconds(max(1, timings.scrape_interval - 1)),
            "evaluation_interval": seconds(timings.evaluation_interval),
        },
        "rule_files": [layout.rules_file],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [str(layout.alertmanager)]}]}]},
        "scrape_configs": [
            {"job_name": Job.NODE.value, "file_sd_configs": [{"files": [layout.nodes_file]}]},
            {
                "job_name": Job.MESH.value,
                "metrics_path": "/probe",
                "params": {"module": ["icmp"]},
                "file_sd_configs": [{"files": [layout.mesh_file]}],
                # Series are told apart by what was pinged, not by which exporter pinged it.
                "relabel_configs": [{"source_labels": ["__param_target"], "target_label": "instance"}],
            },
            {"job_name": Job.PROMETHEUS.value, "static_configs": [{"targets": [str(layout.prometheus)], "labels": tooling_labels}]},
            {"job_name": Job.ALERTMANAGER.value, "static_configs": [{"targets": [str(layout.alertmanager)], "labels": tooling_labels}]},
        ],
    }
    if plan.healer:
        # The healer serves /metrics next to its webhook (loopback; Prometheus needs no token for it).
        config["scrape_configs"].append({"job_name": Job.HEALER.value, "static_configs": [{"targets": [str(layout.healer)], "labels": tooling_labels}]})
    return "# Rendered by resinfra: Prometheus on the tooling VM.\n" + dump_yaml(config)


# Recording rules the alerts share: per site, is any node scraped, does any probe target answer.
SITE_NODES_UP = "site:resinfra_nodes_up:max"
SITE_TUNNEL_UP = "site:resinfra_tunnel_probe_success:max"


def site_dark_expr() -> str:
    """PromQL: sites the tooling VM cannot reach (every node down, or no probe target answering)."""
    return f"{SITE_NODES_UP} == 0\nor on (site)\n{SITE_TUNNEL_UP} == 0"


def alert_rules(plan: MonitoringPlan) -> dict[str, Any]:
    """The rule groups as data (see :func:`render_rules`)."""
    t, th = plan.timings, plan.thresholds
    node, mesh = Job.NODE.value, Job.MESH.value
    site_dark = site_dark_expr()
    indented_site_dark = site_dark.replace("\n", "\n  ")
    return {
        "groups": [
            {
                "name": "resinfra-availability",
                "interval": seconds(t.evaluation_interval),
                "rules": [
                    {"record": SITE_NODES_UP, "expr": f'max by (site) (up{{job="{node}"}})'},
                    {
                        # Only the tooling VM's own probes decide whether it can reach a site.
                        "record": SITE_TUNNEL_UP,
                        "expr": f'max by (site) (probe_success{{job="{mesh}", source_site="{plan.tooling_site}"}})',
                    },
                    {
                        "alert": "NodeDown",
                        # Nodes of a site the tooling VM cannot reach at all are not "down": that is a
                        # partition (SiteUnreachable), and the healer must not replace them.
                        "expr": f'up{{job="{node}"}} == 0\nunless on (site) (\n  {indented_site_dark}\n)\n',
                        "for": seconds(t.node_down_for),
                        "labels": {"severity": "critical", "scope": Scope.NODE.value},
                        "annotations": {
                            "summary": "{{ $labels.node }} ({{ $labels.role }} on {{ $labels.site }}) is down",
                            "description": "node_exporter on {{ $labels.instance }} has not answered for "
                            + seconds(t.node_down_for)
                            + " while other machines of site {{ $labels.site }} are reachable.",
                        },
                    },
                    {
                        "alert": "SiteUnreachable",
                        "expr": site_dark + "\n",
                        "for": seconds(t.site_unreachable_for),
                        "labels": {"severity": "critical", "scope": Scope.SITE.value},
                        "annotations": {
                            "summary": "site {{ $labels.site }} is unreachable from the tooling VM",
                            "description": "No machine of site {{ $labels.site }} answers (all scrapes fail or its tunnel probe fails): "
                            "a partition or a site outage. Machines there are not replaced while it lasts.",
                        },
                    },
                    {
                        "alert": "TunnelDown",
                        "expr": f'max by (source_site, site, tunnel) (probe_success{{job="{mesh}"}}) == 0\n',
                        "for": seconds(t.tunnel_down_for),
                        "labels": {"severity": "critical", "scope": Scope.SITE.value},
                        "annotations": {
                            "summary": "tunnel {{ $labels.tunnel }}: {{ $labels.site }} does not answer pings from {{ $labels.source_site }}",
                            "description": "Every ICMP probe from {{ $labels.source_site }} to {{ $labels.site }} has failed for "
                            + seconds(t.tunnel_down_for)
                            + ".",
                        },
                    },
                ],
            },
            {
                "name": "resinfra-mesh",
                "interval": seconds(t.evaluation_interval),
                "rules": [
                    {
                        "alert": "CrossSiteLatencyHigh",
                        # Failed probes report no round trip (0): only answered probes count.
                        "expr": f'min by (source_site, site, tunnel) (probe_icmp_duration_seconds{{job="{mesh}", phase="rtt"}} > 0) > {th.latency_seconds}\n',
                        "for": seconds(t.latency_for),
                        "labels": {"severity": "warning", "scope": Scope.MESH.value},
                        "annotations": {
                            "summary": "round trip {{ $labels.source_site }} -> {{ $labels.site }} is {{ $value | humanizeDuration }}",
                            "description": f"Above {th.latency_seconds} s for {seconds(t.latency_for)}.",
                        },
                    },
                    gateway_failover_rule(plan),
                ],
            },
            {
                "name": "resinfra-vm",
                "interval": seconds(t.evaluation_interval),
                "rules": [
                    {
                        "alert": "ResinfraVmDiskLow",
                        "expr": (
                            f'node_filesystem_avail_bytes{{job="{node}", role="tooling", mountpoint="/"}}\n'
                            f'/ node_filesystem_size_bytes{{job="{node}", role="tooling", mountpoint="/"}}\n'
                            f"< {th.disk_free_ratio}\n"
                        ),
                        "for": seconds(t.resource_for),
                        "labels": {"severity": "warning", "scope": Scope.RESINFRA_VM.value},
                        "annotations": {
                            "summary": "the tooling VM's root filesystem is {{ $value | humanizePercentage }} free",
                            "description": "Prometheus' TSDB and the healer's journal live there; resize the VM's disk or lower the retention.",
                        },
                    },
                    *([healer_down_rule(plan), healer_stuck_rule(plan), healer_degraded_rule(plan)] if plan.healer else []),
                    {
                        "alert": "ResinfraVmMemoryLow",
                        "expr": (
                            f'node_memory_MemAvailable_bytes{{job="{node}", role="tooling"}}\n'
                            f'/ node_memory_MemTotal_bytes{{job="{node}", role="tooling"}}\n'
                            f"< {th.memory_available_ratio}\n"
                        ),
                        "for": seconds(t.resource_for),
                        "labels": {"severity": "warning", "scope": Scope.RESINFRA_VM.value},
                        "annotations": {
                            "summary": "the tooling VM has {{ $value | humanizePercentage }} of its memory available",
                            "description": "Set a larger resinfra:tooling.size.",
                        },
                    },
                ],
            },
        ]
    }


def healer_down_rule(plan: MonitoringPlan) -> dict[str, Any]:
    """HealerDown: nothing repairs the cluster while the healer does not answer (it goes to
    the notification webhook, never to the healer itself)."""
    return {
        "alert": "HealerDown",
        "expr": f'up{{job="{Job.HEALER.value}"}} == 0\n',
        "for": seconds(plan.timings.node_down_for),
        "labels": {"severity": "critical", "scope": Scope.RESINFRA_VM.value},
        "annotations": {
            "summary": "the healer on the tooling VM does not answer",
            "description": "No machine is repaired automatically while it is down: check `systemctl status resinfra-healer` and its audit log on the tooling VM.",
        },
    }


GATEWAY_FAILOVER_WINDOW = "5m"
"""GatewayFailover fires while two gateways of one site were each active within this window."""


def gateway_failover_rule(plan: MonitoringPlan) -> dict[str, Any]:
    """GatewayFailover: the active gateway of a pair changed (to the notifications only: the mesh scope; the pair has
    already healed the site's tunnels, and the healer replaces a dead gateway from its own NodeDown).

    Each gateway's notify script exports ``resinfra_gateway_active`` (node_exporter's textfile collector). Two gateways
    of one site active within the window means the tunnels moved, or both claim them (a split brain): either is worth a
    human's look. A pair's first election makes only one gateway active, so it stays silent.
    """
    return {
        "alert": "GatewayFailover",
        "expr": f'count by (site) (max_over_time(resinfra_gateway_active{{job="{Job.NODE.value}"}}[{GATEWAY_FAILOVER_WINDOW}]) == 1) > 1\n',
        "labels": {"severity": "warning", "scope": Scope.MESH.value},
        "annotations": {
            "summary": "the active gateway of {{ $labels.site }} changed",
            "description": "Two gateway VMs of {{ $labels.site }} carried its tunnels within "
            + GATEWAY_FAILOVER_WINDOW
            + ": a failover (the other VM died or lost its adverts) or both claiming them. See the Tunnels dashboard's "
            '"Active gateway" panel and /run/resinfra-failover/failover.log on the gateways.',
        },
    }


HEALER_STUCK_TICKS = 4
"""The healer's decision loop not having run for this many of its ticks is HealerStuck (and its /healthz unhealthy)."""
HEALER_DEGRADED_WINDOW = "15m"


def healer_stuck_rule(plan: MonitoringPlan) -> dict[str, Any]:
    """HealerStuck: the healer answers but no longer repairs: a repair older than its timeout, or a decision loop that stopped."""
    healer = f'{{job="{Job.HEALER.value}"}}'
    return {
        "alert": "HealerStuck",
        "expr": (
            f"(\n  resinfra_healer_repair_in_flight{healer} == 1\n"
            f"  and\n  time() - resinfra_healer_repair_started_timestamp_seconds{healer} > resinfra_healer_repair_timeout_seconds{healer}\n)\n"
            f"or\n  time() - resinfra_healer_last_tick_timestamp_seconds{healer} > {HEALER_STUCK_TICKS} * resinfra_healer_tick_interval_seconds{healer}\n"
        ),
        "for": seconds(plan.timings.node_down_for),
        "labels": {"severity": "critical", "scope": Scope.RESINFRA_VM.value},
        "annotations": {
            "summary": "the healer answers but no longer repairs",
            "description": "A repair has run past its timeout, or the healer's decision loop has stopped: no machine is repaired. "
            "See `curl -s 127.0.0.1:9797/healthz` and `journalctl -u resinfra-healer` on the tooling VM.",
        },
    }


def healer_degraded_rule(plan: MonitoringPlan) -> dict[str, Any]:
    """HealerDegraded: something inside the healer failed (a write, a notification, an action) within the last 15 minutes."""
    return {
        "alert": "HealerDegraded",
        "expr": f'increase(resinfra_healer_errors_total{{job="{Job.HEALER.value}"}}[{HEALER_DEGRADED_WINDOW}]) > 0\n',
        "labels": {"severity": "warning", "scope": Scope.RESINFRA_VM.value},
        "annotations": {
            "summary": "the healer's {{ $labels.component }} failed",
            "description": "It keeps deciding and repairing, but its {{ $labels.component }} failed in the last "
            + HEALER_DEGRADED_WINDOW
            + " (a full disk, too many open files, an unreachable webhook): see `journalctl -u resinfra-healer` and the failures table of its journal.",
        },
    }


ALERT_NAMES = (
    "NodeDown",
    "SiteUnreachable",
    "TunnelDown",
    "CrossSiteLatencyHigh",
    "GatewayFailover",
    "ResinfraVmDiskLow",
    "HealerDown",
    "HealerStuck",
    "HealerDegraded",
    "ResinfraVmMemoryLow",
)


def render_rules(plan: MonitoringPlan) -> str:
    """The alert rules file.

    NodeDown (per node, after ``node_down_for``), SiteUnreachable (every node of a site
    down, or the tooling VM's probes to it failing; NodeDown is held back for that site),
    TunnelDown (per pair of sites), CrossSiteLatencyHigh, and the tooling VM's own disk
    and memory.
    """
    return "# Rendered by resinfra: alert rules of the tooling VM.\n" + dump_yaml(alert_rules(plan))
