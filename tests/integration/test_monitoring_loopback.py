"""Loopback integration: the dev stack's rendered monitoring with real Prometheus, Alertmanager,
blackbox_exporter and one node_exporter per machine; a webhook receiver stands in for the healer.

Only addresses, paths and timings differ from the tooling VM (``monitoring_local.local_plan``).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra import stack
from resinfra.monitoring_local import LOCAL_TIMINGS, LocalMonitoring, nodes_of, running, webhook_alert
from resinfra.offline import OfflineRun
from resinfra.render.grafana import dashboard_queries
from tests.conftest import require_root, require_tool

TIMEOUT = 30.0
"""Seconds to wait for an alert: several times what it needs (about for + 2 intervals)."""


@pytest.fixture(scope="module")
def monitoring(offline_runs: dict[str, OfflineRun], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMonitoring]:
    for tool in ("prometheus", "prometheus-alertmanager", "prometheus-node-exporter", "prometheus-blackbox-exporter"):
        require_tool(tool)
    require_root()  # ICMP probes
    run = offline_runs["all-four"]
    plan = stack.monitoring_plan(run.config, run.result.sites)
    with running(plan, tmp_path_factory.mktemp("monitoring")) as local:
        local.wait_for_all_targets()
        yield local


@pytest.fixture
def healthy(monitoring: LocalMonitoring) -> Iterator[LocalMonitoring]:
    """Every target up before and after the test (a test restarts what it killed)."""
    monitoring.wait_for_all_targets()
    yield monitoring
    for node in monitoring.exporter_ports:
        if f"node-{node}" not in monitoring.processes:
            monitoring.start_node(node)
    monitoring.wait_for_all_targets()


def test_every_target_is_scraped_with_its_labels(monitoring: LocalMonitoring) -> None:
    up = monitoring.query('up{job="node"}')
    assert {(r["metric"]["node"], r["metric"]["site"], r["metric"]["role"]) for r in up} == {(n.node, n.site, n.role.value) for n in monitoring.plan.nodes}
    probes = monitoring.query('probe_success{job="mesh"}')
    assert len(probes) == len(monitoring.plan.probe_pairs())
    assert all({"site", "role", "node", "source_site", "tunnel"} <= set(r["metric"]) for r in probes)


def test_node_down_arrives_with_its_node_and_site_then_resolves(healthy: LocalMonitoring) -> None:
    node = nodes_of(healthy.plan, "azure")[0]
    killed = healthy.kill_node(node.node)
    fired = healthy.webhook.wait_for(webhook_alert("NodeDown", "firing", node=node.node, site="azure", role="worker"), killed, TIMEOUT)
    # Not before its `for`: one failed scrape is not a dead node.
    assert fired - killed >= LOCAL_TIMINGS.node_down_for
    healthy.start_node(node.node)
    restarted = time.monotonic()
    healthy.webhook.wait_for(webhook_alert("NodeDown", "resolved", node=node.node, site="azure"), restarted, TIMEOUT)
    assert healthy.webhook.refused == 0, "Alertmanager presented the healer's bearer token"


def test_a_dark_site_arrives_as_site_unreachable_and_no_node_down(healthy: LocalMonitoring) -> None:
    site = "gcp"
    started = time.monotonic()
    for node in nodes_of(healthy.plan, site):
        healthy.kill_node(node.node)
    fired = healthy.webhook.wait_for(webhook_alert("SiteUnreachable", "firing", site=site), started, TIMEOUT)
    # Give NodeDown every chance to show up: two more of its `for` periods.
    time.sleep(2 * LOCAL_TIMINGS.node_down_for)
    node_downs = [a for _, a in healthy.webhook.alerts(started) if a["labels"]["alertname"] == "NodeDown" and a["labels"]["site"] == site]
    assert node_downs == [], "nodes of an unreachable site are a partition, not dead nodes"
    for node in nodes_of(healthy.plan, site):
        healthy.start_node(node.node)
    healthy.webhook.wait_for(webhook_alert("SiteUnreachable", "resolved", site=site), fired, TIMEOUT)


def test_the_receiver_refuses_a_request_without_the_token(monitoring: LocalMonitoring) -> None:
    """The stand-in checks the token, so the deliveries above prove Alertmanager sent it."""
    request = urllib.request.Request(monitoring.plan.layout.healer_url, data=b"{}", method="POST")
    before = monitoring.webhook.refused
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)
    assert caught.value.code == 401 and monitoring.webhook.refused == before + 1


LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")
METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def as_promql(expr: str, site: str) -> str:
    """A dashboard query as Grafana would send it: variables filled in."""
    return expr.replace("$site", site).replace("$__rate_interval", "30s").replace("$__range", "1h")


def dashboard_files(monitoring: LocalMonitoring) -> list[Path]:
    files = sorted(Path(monitoring.plan.layout.grafana_dashboards_dir).glob("*.json"))
    assert {f.name for f in files} == {"nodes.json", "latency.json", "tunnels.json", "healing.json"}
    return files


def test_dashboard_queries_use_only_metrics_the_exporters_provide(monitoring: LocalMonitoring) -> None:
    url = f"{monitoring.plan.layout.prometheus.url}api/v1/label/__name__/values"
    with urllib.request.urlopen(url, timeout=5) as response:
        known = set(json.load(response)["data"])
    for path in dashboard_files(monitoring):
        for expr in dashboard_queries(path.read_text()):
            names = set(METRIC.findall(expr)) | ({expr} if ":" in expr and " " not in expr else set())
            assert names, f"{path.name}: found no metric in {expr!r}"
            assert names <= known, f"{path.name}: {expr!r} uses {names - known}, which no exporter or rule provides"


def test_every_dashboard_query_returns_data(monitoring: LocalMonitoring) -> None:
    # Rates need a few samples: wait for half a minute of history.
    monitoring.wait_until(lambda: bool(monitoring.query('rate(node_cpu_seconds_total{job="node"}[30s])')), 60, "CPU rates")
    site = monitoring.plan.tooling_site
    for path in dashboard_files(monitoring):
        for expr in dashboard_queries(path.read_text()):
            variable = LABEL_VALUES.match(expr)
            if variable:
                result = monitoring.query(variable["selector"])
                assert {r["metric"].get(variable["label"]) for r in result} >= set(monitoring.plan.sites), f"{path.name}: variable {expr!r}"
                continue
            assert monitoring.query(as_promql(expr, site)), f"{path.name}: {expr!r} returns nothing"
