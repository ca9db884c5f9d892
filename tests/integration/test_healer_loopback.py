"""End to end on loopback: real Prometheus, Alertmanager, blackbox_exporter and node_exporters from the rendered
configs, and the real healer at its address with a local action that restarts the "machine" (its exporter).

Kill an exporter: NodeDown reaches the healer, the policy decides, the action restarts it, the machine is
scraped again and the alert resolves. A whole site killed is a partition: nothing is replaced.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra import stack
from resinfra.healer.inventory import parse_inventory
from resinfra.healer.local import LocalHealer, running_healer
from resinfra.healer.observe import audit_alert
from resinfra.monitoring_local import LocalMonitoring, nodes_of, running
from resinfra.offline import OfflineRun
from resinfra.render.grafana import dashboard_queries
from tests.conftest import require_root, require_tool

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def loop(offline_runs: dict[str, OfflineRun], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalMonitoring, LocalHealer]]:
    for tool in ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "prometheus-blackbox-exporter"):
        require_tool(tool)
    require_root()  # ICMP probes
    run = offline_runs["all-four"]
    plan = stack.monitoring_plan(run.config, run.result.sites)
    workdir = tmp_path_factory.mktemp("healer-loop")
    with running(plan, workdir, healer_stand_in=False) as local, running_healer(local, parse_inventory(run.outputs["inventory"]), workdir) as healer:
        local.wait_for_all_targets()
        yield local, healer


def test_a_killed_machine_is_replaced_and_its_alert_resolves(loop: tuple[LocalMonitoring, LocalHealer]) -> None:
    local, healer = loop
    node = nodes_of(local.plan, "proxmox")[1].node
    killed = time.time()
    local.kill_node(node)
    fired = healer.wait_for_event(audit_alert("NodeDown", "firing", node=node), killed, TIMEOUT)
    started = healer.wait_for_event(lambda r: r["event"] == "repair-started" and r["machine"] == node, killed, TIMEOUT)
    assert started["reason"] == "node-down" and started["urn"].endswith(f"::{node}")
    finished = healer.wait_for_event(lambda r: r["event"] == "repair-finished" and r["machine"] == node, killed, TIMEOUT)
    assert finished["outcome"] == "succeeded"
    # The machine is back: scraped again, and Alertmanager tells the healer its NodeDown resolved.
    local.wait_until(lambda: bool(local.query(f'up{{job="node", node="{node}"}} == 1')), TIMEOUT, f"{node} scraped again")
    resolved = healer.wait_for_event(audit_alert("NodeDown", "resolved", node=node), killed, TIMEOUT)
    assert fired["ts"] <= started["ts"] <= finished["ts"] <= resolved["ts"]
    assert [name for name, _ in healer.actuator.calls] == [node], "one machine, replaced once"
    # Prometheus scrapes the healer: the repair shows in its metrics.
    local.wait_until(
        lambda: bool(local.query('resinfra_healer_repairs_succeeded_total{job="healer", machine_role="worker"} == 1')), TIMEOUT, "the healer's metrics scraped"
    )


def test_a_dark_site_is_a_partition_and_nothing_is_replaced(loop: tuple[LocalMonitoring, LocalHealer]) -> None:
    local, healer = loop
    before = len(healer.actuator.calls)
    started = time.time()
    site = "gcp"
    for node in nodes_of(local.plan, site):
        local.kill_node(node.node)
    healer.wait_for_event(lambda r: r["event"] == "alert" and r["alertname"] == "SiteUnreachable" and r["status"] == "firing", started, TIMEOUT)
    healer.wait_for_event(lambda r: r["event"] == "decision" and r["site"] == site and r["reason"] == "site-partitioned", started, TIMEOUT)
    time.sleep(3)  # a few evaluations
    assert len(healer.actuator.calls) == before, "a partition replaces nothing"
    for node in nodes_of(local.plan, site):
        local.start_node(node.node)
    local.wait_for_all_targets()


def test_the_healing_dashboard_reads_the_real_healer(loop: tuple[LocalMonitoring, LocalHealer]) -> None:
    local, _ = loop
    text = (Path(local.plan.layout.grafana_dashboards_dir) / "healing.json").read_text()
    for expr in dashboard_queries(text):
        promql = expr.replace("$__rate_interval", "30s").replace("$__range", "1h")
        local.wait_until(lambda promql=promql: bool(local.query(promql)), TIMEOUT, f"{promql} returns data")
