"""Alert rules under ``promtool test rules``: each alert fires after its ``for``, stays silent
through a blip, and a dark site raises SiteUnreachable instead of NodeDown.

The rules are the dev stack's, rendered with production timings (15 s scrapes and
evaluations, NodeDown after 60 s); the input series carry the labels the real scrape
configuration gives (``job``, ``site``, ``role``, ``node``, ...).
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from resinfra import stack
from resinfra.offline import OfflineRun
from resinfra.render.monitoring import Job, MonitoringPlan, ProbeTarget, ScrapeTarget, ToolingLayout
from resinfra.render.prometheus import ALERT_NAMES, alert_rules, render_rules
from resinfra.render.yamltext import dump_yaml
from tests.conftest import require_tool

STEPS = 60
"""Samples per input series: 15 minutes at 15 s."""


@pytest.fixture(scope="module")
def plan(offline_runs: dict[str, OfflineRun], tmp_path_factory: pytest.TempPathFactory) -> MonitoringPlan:
    run = offline_runs["all-four"]
    base = stack.monitoring_plan(run.config, run.result.sites)
    rules_dir = tmp_path_factory.mktemp("rules")
    return dataclasses.replace(base, layout=ToolingLayout(config_dir=str(rules_dir)))


def node_series(n: ScrapeTarget) -> str:
    return f'up{{job="{Job.NODE}", instance="{n.address}", site="{n.site}", role="{n.role}", node="{n.node}", provider="{n.provider}"}}'


def probe_series(plan: MonitoringPlan, source: str, t: ProbeTarget, metric: str = "probe_success", extra: str = "") -> str:
    prober = next(p for p in plan.probers if p.site == source)
    return (
        f'{metric}{{job="{Job.MESH}", instance="{t.address}", source_site="{source}", prober="{prober.node}", '
        f'site="{t.site}", role="{t.role}", node="{t.node}", tunnel="{plan.tunnel_name(source, t.site)}"{extra}}}'
    )


def healthy(plan: MonitoringPlan) -> dict[str, str]:
    """Every series of a healthy stack: all nodes up, every probe answered."""
    series = {node_series(n): f"1x{STEPS}" for n in plan.nodes}
    for prober, target in plan.probe_pairs():
        series[probe_series(plan, prober.site, target)] = f"1x{STEPS}"
    return series


def expand(template: str, labels: dict[str, str]) -> str:
    """Fill ``{{ $labels.x }}`` the way Prometheus does (the annotations of these alerts use nothing else)."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), template)


def annotations_of(plan: MonitoringPlan, alert: str, labels: dict[str, str]) -> dict[str, str]:
    rule = next(r for g in alert_rules(plan)["groups"] for r in g["rules"] if r.get("alert") == alert)
    return {k: expand(v, labels) for k, v in rule["annotations"].items()}


def expected(plan: MonitoringPlan, alert: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    rule = next(r for g in alert_rules(plan)["groups"] for r in g["rules"] if r.get("alert") == alert)
    all_labels = {**labels, **rule["labels"]}
    return {"exp_labels": all_labels, "exp_annotations": annotations or annotations_of(plan, alert, all_labels)}


def node_labels(n: ScrapeTarget) -> dict[str, str]:
    return {"job": "node", "instance": n.address, "site": n.site, "role": n.role.value, "node": n.node, "provider": n.provider}


def run_promtool(plan: MonitoringPlan, tmp_path: Path, series: dict[str, str], checks: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    rules = Path(plan.layout.rules_file)
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text(render_rules(plan))
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": f"{plan.timings.evaluation_interval}s",
        "tests": [
            {
                "interval": f"{plan.timings.scrape_interval}s",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": checks,
            }
        ],
    }
    path = tmp_path / "test.yml"
    path.write_text(dump_yaml(test))
    return subprocess.run([require_tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True, check=False)


def assert_passes(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stdout + result.stderr


def worker(plan: MonitoringPlan, site: str, index: int = 0) -> ScrapeTarget:
    return [n for n in plan.nodes if n.site == site and n.role == "worker"][index]


def none(alert: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": alert, "exp_alerts": []}


def test_the_rules_pass_promtool_check(plan: MonitoringPlan, tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(plan))
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {r["alert"] for g in alert_rules(plan)["groups"] for r in g["rules"] if "alert" in r} == set(ALERT_NAMES)


def test_node_down_fires_after_its_for(plan: MonitoringPlan, tmp_path: Path) -> None:
    series = healthy(plan)
    dead = worker(plan, "azure")
    series[node_series(dead)] = f"1 1 0x{STEPS - 2}"  # down from 30 s
    result = run_promtool(
        plan,
        tmp_path,
        series,
        [
            none("NodeDown", "75s"),  # down for 45 s: pending
            {"eval_time": "90s", "alertname": "NodeDown", "exp_alerts": [expected(plan, "NodeDown", node_labels(dead))]},
            none("SiteUnreachable", "5m"),
        ],
    )
    assert_passes(result)


def test_node_down_stays_silent_during_a_scrape_blip(plan: MonitoringPlan, tmp_path: Path) -> None:
    series = healthy(plan)
    series[node_series(worker(plan, "gcp"))] = f"1 1 0 1x{STEPS - 3}"  # one failed scrape
    series[node_series(worker(plan, "hetzner"))] = f"1 1 0 0 0 1x{STEPS - 5}"  # three: 45 s, still under 60 s
    result = run_promtool(plan, tmp_path, series, [none("NodeDown", t) for t in ("45s", "60s", "75s", "90s", "2m", "5m")])
    assert_passes(result)


@pytest.mark.parametrize("site", ["azure", "proxmox"])
def test_a_dark_site_is_unreachable_not_a_set_of_dead_nodes(plan: MonitoringPlan, tmp_path: Path, site: str) -> None:
    """Every node of the site stops answering, and so do the tooling VM's probes to it
    (a managed gateway's site: its workers; a strongSwan site: its gateway VM)."""
    series = healthy(plan)
    for n in plan.nodes:
        if n.site == site:
            series[node_series(n)] = f"1 1 0x{STEPS - 2}"
    for prober, target in plan.probe_pairs():
        if target.site == site:
            series[probe_series(plan, prober.site, target)] = f"1 1 0x{STEPS - 2}"
    result = run_promtool(
        plan,
        tmp_path,
        series,
        [
            none("SiteUnreachable", "75s"),
            {"eval_time": "90s", "alertname": "SiteUnreachable", "exp_alerts": [expected(plan, "SiteUnreachable", {"site": site})]},
            none("NodeDown", "90s"),
            none("NodeDown", "10m"),
        ],
    )
    assert_passes(result)


def test_a_failing_tunnel_probe_alone_makes_the_site_unreachable(plan: MonitoringPlan, tmp_path: Path) -> None:
    """The nodes were scraped a moment ago but the probe through the tunnel fails: partition, not node deaths."""
    series = healthy(plan)
    gateway_target = next(t for t in plan.probe_targets if t.site == "proxmox")
    series[probe_series(plan, plan.tooling_site, gateway_target)] = f"1 1 0x{STEPS - 2}"
    dead = worker(plan, "proxmox")
    series[node_series(dead)] = f"1 1 0x{STEPS - 2}"
    result = run_promtool(
        plan,
        tmp_path,
        series,
        [
            {"eval_time": "90s", "alertname": "SiteUnreachable", "exp_alerts": [expected(plan, "SiteUnreachable", {"site": "proxmox"})]},
            none("NodeDown", "90s"),
        ],
    )
    assert_passes(result)


def test_a_node_down_on_another_site_is_still_reported_during_a_partition(plan: MonitoringPlan, tmp_path: Path) -> None:
    series = healthy(plan)
    for n in plan.nodes:
        if n.site == "gcp":
            series[node_series(n)] = f"1 1 0x{STEPS - 2}"
    dead = worker(plan, "hetzner", 1)
    series[node_series(dead)] = f"1 1 0x{STEPS - 2}"
    result = run_promtool(
        plan,
        tmp_path,
        series,
        [{"eval_time": "2m", "alertname": "NodeDown", "exp_alerts": [expected(plan, "NodeDown", node_labels(dead))]}],
    )
    assert_passes(result)


def tunnel_labels(source: str, site: str, tunnel: str) -> dict[str, str]:
    return {"source_site": source, "site": site, "tunnel": tunnel}


def test_tunnel_down_fires_after_its_for_and_not_on_a_blip(plan: MonitoringPlan, tmp_path: Path) -> None:
    series = healthy(plan)
    # gcp's prober loses azure (both azure workers stop answering it) from 30 s on.
    for target in (t for t in plan.probe_targets if t.site == "azure"):
        series[probe_series(plan, "gcp", target)] = f"1 1 0x{STEPS - 2}"
    # proxmox's prober misses one probe to hetzner's gateway.
    hetzner_gw = next(t for t in plan.probe_targets if t.site == "hetzner")
    series[probe_series(plan, "proxmox", hetzner_gw)] = f"1 1 0 1x{STEPS - 3}"
    down = {"eval_time": "150s", "alertname": "TunnelDown", "exp_alerts": [expected(plan, "TunnelDown", tunnel_labels("gcp", "azure", "gcp-azure"))]}
    result = run_promtool(plan, tmp_path, series, [none("TunnelDown", "135s"), down, {**down, "eval_time": "10m"}])
    assert_passes(result)


def test_cross_site_latency_fires_when_sustained(plan: MonitoringPlan, tmp_path: Path) -> None:
    series = healthy(plan)
    slow = next(t for t in plan.probe_targets if t.site == "proxmox")
    quick = next(t for t in plan.probe_targets if t.site == "gcp")
    rtt = ', phase="rtt"'
    series[probe_series(plan, "azure", slow, "probe_icmp_duration_seconds", rtt)] = f"0.3x{STEPS}"
    # A single slow reply and failed probes (rtt 0) never count.
    series[probe_series(plan, "azure", quick, "probe_icmp_duration_seconds", rtt)] = f"0.02 0.9 0 0 0.02x{STEPS - 4}"
    labels = {
        **tunnel_labels("azure", "proxmox", "azure-proxmox"),
        **next(r for g in alert_rules(plan)["groups"] for r in g["rules"] if r.get("alert") == "CrossSiteLatencyHigh")["labels"],
    }
    annotations = {"summary": "round trip azure -> proxmox is 300ms", "description": f"Above {plan.thresholds.latency_seconds} s for 600s."}
    result = run_promtool(
        plan,
        tmp_path,
        series,
        [
            none("CrossSiteLatencyHigh", "9m45s"),
            {"eval_time": "10m", "alertname": "CrossSiteLatencyHigh", "exp_alerts": [{"exp_labels": labels, "exp_annotations": annotations}]},
        ],
    )
    assert_passes(result)


@pytest.mark.parametrize(
    ("alert", "available", "total", "summary"),
    [
        ("ResinfraVmDiskLow", "node_filesystem_avail_bytes", "node_filesystem_size_bytes", "the tooling VM's root filesystem is 5% free"),
        ("ResinfraVmMemoryLow", "node_memory_MemAvailable_bytes", "node_memory_MemTotal_bytes", "the tooling VM has 5% of its memory available"),
    ],
)
def test_resinfra_vm_resources(plan: MonitoringPlan, tmp_path: Path, alert: str, available: str, total: str, summary: str) -> None:
    """5 % left on the tooling VM from 30 s on fires after 5 minutes; a worker as low (from the start) never does."""
    fs = {"mountpoint": "/", "fstype": "ext4", "device": "/dev/sda1"} if alert == "ResinfraVmDiskLow" else {}
    tooling = next(n for n in plan.nodes if n.role == "tooling")
    series = healthy(plan)
    for n, available_values in ((tooling, f"60 60 5x{STEPS - 2}"), (worker(plan, "hetzner"), f"5x{STEPS}")):
        body = ", ".join(f'{k}="{v}"' for k, v in (node_labels(n) | fs).items())
        series[f"{available}{{{body}}}"] = available_values
        series[f"{total}{{{body}}}"] = f"100x{STEPS}"
    rule = next(r for g in alert_rules(plan)["groups"] for r in g["rules"] if r.get("alert") == alert)
    exp = {"exp_labels": node_labels(tooling) | fs | rule["labels"], "exp_annotations": {"summary": summary, "description": rule["annotations"]["description"]}}
    result = run_promtool(plan, tmp_path, series, [none(alert, "5m15s"), {"eval_time": "5m30s", "alertname": alert, "exp_alerts": [exp]}])
    assert_passes(result)


def test_promtool_is_not_a_rubber_stamp(plan: MonitoringPlan, tmp_path: Path) -> None:
    """An expectation that contradicts the rules fails: a dead node is not silent at 90 s."""
    series = healthy(plan)
    series[node_series(worker(plan, "azure"))] = f"1 1 0x{STEPS - 2}"
    result = run_promtool(plan, tmp_path, series, [none("NodeDown", "90s")])
    assert result.returncode != 0 and "NodeDown" in result.stdout + result.stderr


def test_healer_down(plan: MonitoringPlan, tmp_path: Path) -> None:
    """A healer that stops answering raises HealerDown after its ``for``; a one-scrape blip does not."""
    series = healthy(plan)
    healer = f'up{{job="{Job.HEALER}", instance="{plan.layout.healer}", site="{plan.tooling_site}", role="tooling", node="{plan.tooling_node}"}}'
    series[healer] = f"1 0 1 1 0x{STEPS - 4}"
    rule = next(r for g in alert_rules(plan)["groups"] for r in g["rules"] if r.get("alert") == "HealerDown")
    labels = {"job": Job.HEALER.value, "instance": str(plan.layout.healer), "site": plan.tooling_site, "role": "tooling", "node": plan.tooling_node}
    exp = {"exp_labels": labels | rule["labels"], "exp_annotations": rule["annotations"]}
    # Down from 60 s on, `for` 60 s: silent at 1m45s, firing at 2m.
    result = run_promtool(
        plan, tmp_path, series, [none("HealerDown", "30s"), none("HealerDown", "1m45s"), {"eval_time": "2m", "alertname": "HealerDown", "exp_alerts": [exp]}]
    )
    assert_passes(result)


def healer_series(plan: MonitoringPlan, metric: str, extra: str = "") -> str:
    return f'{metric}{{job="{Job.HEALER}", instance="{plan.layout.healer}", site="{plan.tooling_site}", role="tooling", node="{plan.tooling_node}"{extra}}}'


def healer_labels(plan: MonitoringPlan) -> dict[str, str]:
    return {"job": Job.HEALER.value, "instance": str(plan.layout.healer), "site": plan.tooling_site, "role": "tooling", "node": plan.tooling_node}


def test_healer_stuck_on_a_repair_past_its_timeout(plan: MonitoringPlan, tmp_path: Path) -> None:
    """A repair started at 0 with a 120 s timeout: past it at 2m, HealerStuck after its ``for`` (60 s)."""
    series = healthy(plan)
    step = plan.timings.scrape_interval
    series[healer_series(plan, "resinfra_healer_repair_in_flight")] = f"1x{STEPS}"
    series[healer_series(plan, "resinfra_healer_repair_started_timestamp_seconds")] = f"0x{STEPS}"
    series[healer_series(plan, "resinfra_healer_repair_timeout_seconds")] = f"120x{STEPS}"
    series[healer_series(plan, "resinfra_healer_tick_interval_seconds")] = f"{step}x{STEPS}"
    series[healer_series(plan, "resinfra_healer_last_tick_timestamp_seconds")] = f"0+{step}x{STEPS}"  # the loop ticks on
    exp = expected(plan, "HealerStuck", healer_labels(plan))
    result = run_promtool(
        plan,
        tmp_path,
        series,
        [none("HealerStuck", "2m"), none("HealerStuck", "2m45s"), {"eval_time": "3m15s", "alertname": "HealerStuck", "exp_alerts": [exp]}],
    )
    assert_passes(result)


def test_healer_stuck_on_a_stopped_decision_loop(plan: MonitoringPlan, tmp_path: Path) -> None:
    """The loop ticks every scrape interval until 60 s, then stops: stale after four ticks, HealerStuck a ``for`` later."""
    series = healthy(plan)
    step = plan.timings.scrape_interval
    ticks = 60 // step
    series[healer_series(plan, "resinfra_healer_repair_in_flight")] = f"0x{STEPS}"
    series[healer_series(plan, "resinfra_healer_repair_started_timestamp_seconds")] = f"0x{STEPS}"
    series[healer_series(plan, "resinfra_healer_repair_timeout_seconds")] = f"2700x{STEPS}"
    series[healer_series(plan, "resinfra_healer_tick_interval_seconds")] = f"{step}x{STEPS}"
    series[healer_series(plan, "resinfra_healer_last_tick_timestamp_seconds")] = f"0+{step}x{ticks} {60}x{STEPS - ticks - 1}"
    exp = expected(plan, "HealerStuck", healer_labels(plan))
    # Stale (more than 4 ticks old) from 60 + 4 * step on; firing a `for` (60 s) after that.
    stale = 60 + 4 * step
    result = run_promtool(
        plan,
        tmp_path,
        series,
        [none("HealerStuck", f"{stale + 30}s"), {"eval_time": f"{stale + 60 + 2 * step}s", "alertname": "HealerStuck", "exp_alerts": [exp]}],
    )
    assert_passes(result)


def test_healer_degraded_on_any_failure_inside_it(plan: MonitoringPlan, tmp_path: Path) -> None:
    """One audit-log write failing at 2m: HealerDegraded fires at once and names the component."""
    series = healthy(plan)
    series[healer_series(plan, "resinfra_healer_errors_total", ', component="audit-log"')] = f"0x8 1x{STEPS - 9}"
    series[healer_series(plan, "resinfra_healer_errors_total", ', component="journal"')] = f"0x{STEPS}"
    labels = healer_labels(plan) | {"component": "audit-log"}
    exp = expected(plan, "HealerDegraded", labels)
    result = run_promtool(plan, tmp_path, series, [none("HealerDegraded", "1m"), {"eval_time": "3m", "alertname": "HealerDegraded", "exp_alerts": [exp]}])
    assert_passes(result)


def test_without_the_healer_there_is_no_healer_job_or_rule(plan: MonitoringPlan) -> None:
    from resinfra.render.prometheus import render_prometheus_config

    without = dataclasses.replace(plan, healer=False)
    assert "HealerDown" not in {r.get("alert") for g in alert_rules(without)["groups"] for r in g["rules"]}
    assert f"job_name: {Job.HEALER.value}" not in render_prometheus_config(without)
    assert f"job_name: {Job.HEALER.value}" in render_prometheus_config(plan)


def gateway_active(node: str, k: int) -> str:
    return (
        f'resinfra_gateway_active{{job="{Job.NODE}", instance="10.10.64.{5 + k}:9100", site="proxmox", role="gateway", node="{node}-{k}", provider="proxmox"}}'
    )


@pytest.mark.parametrize(
    ("case", "first", "second", "fires_at", "silent_at"),
    [
        # gw-1 carries the tunnels, dies at 5 min (its series goes stale); gw-2 takes over at the next scrape.
        ("failover", "1x20 stale", f"0x20 1x{STEPS - 21}", ["5m30s", "9m"], ["5m", "11m"]),
        # A pair's first election: gw-1 BACKUP for one scrape, then MASTER; gw-2 stays BACKUP. Nothing moved.
        ("first-election", f"0 1x{STEPS - 1}", f"0x{STEPS}", [], ["1m", "5m", "10m"]),
        # Both claim the tunnels (VRRP adverts lost between them): worth a look too.
        ("split-brain", f"1x{STEPS}", f"0x10 1x{STEPS - 11}", ["3m"], ["2m"]),
    ],
)
def test_gateway_failover(plan: MonitoringPlan, tmp_path: Path, case: str, first: str, second: str, fires_at: list[str], silent_at: list[str]) -> None:
    series = healthy(plan)
    series[gateway_active("ri-dev-proxmox-gw", 1)] = first
    series[gateway_active("ri-dev-proxmox-gw", 2)] = second
    exp = expected(plan, "GatewayFailover", {"site": "proxmox"})
    checks = [none("GatewayFailover", t) for t in silent_at] + [{"eval_time": t, "alertname": "GatewayFailover", "exp_alerts": [exp]} for t in fires_at]
    assert_passes(run_promtool(plan, tmp_path, series, checks))
