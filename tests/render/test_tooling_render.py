"""Every file the tooling VM gets, checked by its real tool: promtool, amtool, blackbox_exporter,
systemd-analyze; Grafana's provisioning against its documented format and its dashboard schema."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard
from pydantic import BaseModel, ConfigDict

from resinfra import stack
from resinfra.addressing import Role
from resinfra.monitoring_local import write_files
from resinfra.offline import OfflineRun, run_offline
from resinfra.render import grafana
from resinfra.render.alertmanager import render_alertmanager_config
from resinfra.render.blackbox import render_blackbox_config
from resinfra.render.monitoring import AlertTimings, Endpoint, InventoryNode, MonitoringPlan, ToolingLayout, monitoring_plan, ssh_tunnel_command
from resinfra.render.prometheus import render_mesh_file_sd, render_nodes_file_sd
from resinfra.render.push_script import render_push_script
from resinfra.render.tooling_files import config_push, prober_boot, secrets_push, targets_push
from resinfra.render.tooling_units import blackbox_service, render_unit, tooling_services
from tests.conftest import STACK_SHAPES, dev_config, require_tool

NOTIFY_URL = "https://hooks.example.org/services/T000/B000/notify-sentinel"


def plan_of(run: OfflineRun) -> MonitoringPlan:
    return stack.monitoring_plan(run.config, run.result.sites)


def in_dir(plan: MonitoringPlan, root: Path) -> MonitoringPlan:
    """The same plan with every path under ``root`` (addresses unchanged)."""
    layout = dataclasses.replace(
        plan.layout,
        config_dir=str(root / "etc/prometheus"),
        grafana_dir=str(root / "etc/grafana"),
        systemd_dir=str(root / "etc/systemd/system"),
        prometheus_data_dir=str(root / "var/prometheus"),
        alertmanager_data_dir=str(root / "var/alertmanager"),
    )
    return dataclasses.replace(plan, layout=layout)


def check(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool(command[0]), *command[1:]], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("shape", list(STACK_SHAPES))
def test_prometheus_config_and_rules_pass_promtool(shape: str, offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    plan = in_dir(plan_of(offline_runs[shape]), tmp_path)
    write_files(plan, NOTIFY_URL)
    result = check("promtool", "check", "config", plan.layout.prometheus_config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr and "rules found" in result.stdout + result.stderr


def test_promtool_check_config_catches_a_broken_file(offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    plan = in_dir(plan_of(offline_runs["all-four"]), tmp_path)
    write_files(plan)
    path = Path(plan.layout.prometheus_config)
    path.write_text(path.read_text().replace("evaluation_interval", "evaluation_intervall"))
    assert check("promtool", "check", "config", str(path)).returncode != 0


@pytest.mark.parametrize("url", [None, NOTIFY_URL], ids=["healer-only", "with-notifications"])
def test_alertmanager_config_passes_amtool(url: str | None, offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    plan = plan_of(offline_runs["all-four"])
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager_config(plan, url))
    result = check("amtool", "check-config", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{3 if url else 2} receivers" in result.stdout


def test_alertmanager_routes_node_and_site_alerts_to_the_healer(offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    plan = plan_of(offline_runs["all-four"])
    path = tmp_path / "alertmanager.yml"
    path.write_text(render_alertmanager_config(plan, NOTIFY_URL))

    def receivers(*labels: str) -> str:
        return check("amtool", "config", "routes", "test", f"--config.file={path}", *labels).stdout.strip()

    assert receivers("alertname=NodeDown", "scope=node", "site=gcp", "node=ri-dev-gcp-worker-1") == "healer,notify"
    assert receivers("alertname=SiteUnreachable", "scope=site", "site=gcp") == "healer,notify"
    assert receivers("alertname=TunnelDown", "scope=site", "site=gcp") == "healer,notify"
    assert receivers("alertname=CrossSiteLatencyHigh", "scope=mesh") == "notify"
    assert receivers("alertname=ResinfraVmDiskLow", "scope=resinfra-vm") == "notify"
    path.write_text(render_alertmanager_config(plan, None))
    assert receivers("alertname=NodeDown", "scope=node", "site=gcp") == "healer"
    assert receivers("alertname=CrossSiteLatencyHigh", "scope=mesh") == "discard"
    config = yaml.safe_load(path.read_text())
    healer = next(r for r in config["receivers"] if r["name"] == "healer")["webhook_configs"][0]
    assert healer["url"] == "http://127.0.0.1:9797/alerts" and healer["send_resolved"] is True
    assert healer["http_config"]["authorization"] == {"type": "Bearer", "credentials_file": "/etc/prometheus/secrets/healer-token"}


def test_blackbox_config_passes_the_exporter_check(tmp_path: Path) -> None:
    path = tmp_path / "blackbox.yml"
    path.write_text(render_blackbox_config(AlertTimings()))
    result = check("prometheus-blackbox-exporter", "--config.check", f"--config.file={path}")
    assert result.returncode == 0, result.stdout + result.stderr
    path.write_text(path.read_text().replace("timeout: 5s", "timeout: five"))
    assert check("prometheus-blackbox-exporter", "--config.check", f"--config.file={path}").returncode != 0


def analyze(unit: Path) -> subprocess.CompletedProcess[str]:
    return check("systemd-analyze", "verify", str(unit))


def test_units_pass_systemd_analyze_without_warnings(offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    plan = plan_of(offline_runs["all-four"])
    specs = [*tooling_services(plan.layout), blackbox_service(ToolingLayout(blackbox=Endpoint("10.10.16.10", 9115)))]
    for i, spec in enumerate(specs):
        unit = tmp_path / str(i) / spec.unit
        unit.parent.mkdir()
        unit.write_text(render_unit(spec))
        result = analyze(unit)
        assert result.returncode == 0 and not result.stderr.strip(), f"{spec.unit}: {result.stderr}"
    broken = tmp_path / "broken" / "prometheus.service"
    broken.parent.mkdir()
    broken.write_text(render_unit(specs[0]).replace("ProtectSystem=strict", "ProtectSystem=strictest"))
    assert analyze(broken).stderr.strip(), "systemd-analyze reports a bad value"


def test_units_listen_where_the_layout_says(offline_runs: dict[str, OfflineRun]) -> None:
    plan = plan_of(offline_runs["all-four"])
    text = "".join(render_unit(s) for s in tooling_services(plan.layout))
    for flag in (
        "--web.listen-address=127.0.0.1:9090",
        "--web.listen-address=127.0.0.1:9093",
        "--web.listen-address=127.0.0.1:9115",
        "--cluster.listen-address=",
    ):
        assert flag in text
    assert "AmbientCapabilities=CAP_NET_RAW" in render_unit(blackbox_service(plan.layout))
    assert grafana.render_grafana_ini(plan.layout).count("http_addr = 10.10.48.5") == 1


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GrafanaDatasource(_Strict):
    """Fields of a provisioned datasource (grafana.com/docs/grafana/latest/administration/provisioning/#data-sources)."""

    name: str
    uid: str
    type: Literal["prometheus"]
    access: Literal["proxy", "direct"]
    url: str
    isDefault: bool
    editable: bool


class GrafanaDatasources(_Strict):
    apiVersion: Literal[1]
    datasources: list[GrafanaDatasource]


class GrafanaProviderOptions(_Strict):
    path: str
    foldersFromFilesStructure: bool = False


class GrafanaProvider(_Strict):
    """Fields of a dashboard provider (same page, #dashboards)."""

    name: str
    folder: str
    type: Literal["file"]
    disableDeletion: bool
    allowUiUpdates: bool
    updateIntervalSeconds: int
    options: GrafanaProviderOptions


class GrafanaProviders(_Strict):
    apiVersion: Literal[1]
    providers: list[GrafanaProvider]


def test_grafana_provisioning_matches_its_documented_format(offline_runs: dict[str, OfflineRun]) -> None:
    layout = plan_of(offline_runs["all-four"]).layout
    datasources = GrafanaDatasources.model_validate(yaml.safe_load(grafana.render_datasources(layout)))
    assert datasources.datasources[0].url == "http://127.0.0.1:9090" and datasources.datasources[0].uid == grafana.DATASOURCE_UID
    providers = GrafanaProviders.model_validate(yaml.safe_load(grafana.render_dashboard_provider(layout)))
    assert providers.providers[0].options.path == layout.grafana_dashboards_dir


def round_trip(doc: dict[str, Any]) -> dict[str, Any]:
    """The dashboard read and written back through the models generated from Grafana's schema:
    a key the schema does not know is dropped, so the trip changes the document."""
    return json.loads(json.dumps(Dashboard.from_json(doc), cls=JSONEncoder))


def test_dashboards_fit_grafanas_dashboard_schema(offline_runs: dict[str, OfflineRun]) -> None:
    dashboards = grafana.render_dashboards(plan_of(offline_runs["all-four"]))
    assert set(dashboards) == {"nodes.json", "latency.json", "tunnels.json", "healing.json"}
    uids = set()
    for name, text in dashboards.items():
        doc = json.loads(text)
        assert round_trip(doc) == doc, f"{name}: keys outside Grafana's dashboard schema"
        uids.add(doc["uid"])
        assert doc["schemaVersion"] >= 39 and doc["title"].startswith("resinfra / ")
        ids = [p["id"] for p in doc["panels"]]
        assert len(set(ids)) == len(ids), f"{name}: panel ids repeat"
        for panel in doc["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"] == {"type": "prometheus", "uid": grafana.DATASOURCE_UID} and target["refId"] == "A"
    assert len(uids) == len(dashboards)
    broken = json.loads(dashboards["tunnels.json"])
    broken["panels"][0]["colour"] = "red"
    assert round_trip(broken) != broken, "the round trip notices an unknown key"


def test_latency_matrix_has_sites_as_rows_and_columns(offline_runs: dict[str, OfflineRun]) -> None:
    doc = json.loads(grafana.render_dashboards(plan_of(offline_runs["all-four"]))["latency.json"])
    matrix = doc["panels"][0]
    assert matrix["type"] == "table"
    assert matrix["transformations"][0]["id"] == "groupingToMatrix"
    assert matrix["transformations"][0]["options"].items() >= {"rowField": "source_site", "columnField": "site"}.items()
    assert 'probe_icmp_duration_seconds{job="mesh", phase="rtt"}' in matrix["targets"][0]["expr"]


def test_targets_follow_the_inventory(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["all-four"]
    plan = plan_of(run)
    nodes = json.loads(render_nodes_file_sd(plan))
    assert sorted(g["labels"]["node"] for g in nodes) == sorted(m["name"] for m in run.outputs["inventory"])
    for group in nodes:
        machine = next(m for m in run.outputs["inventory"] if m["name"] == group["labels"]["node"])
        assert group["targets"] == [f"{machine['privateIp']}:9100"]
        assert group["labels"] == {"site": machine["site"], "role": machine["role"], "node": machine["name"], "provider": machine["provider"]}
    mesh = json.loads(render_mesh_file_sd(plan))
    targets = {(g["labels"]["source_site"], g["labels"]["site"], g["labels"]["__param_target"]) for g in mesh}
    # strongSwan sites are probed at their gateway's inner address, managed ones at their workers.
    assert ("gcp", "hetzner", "10.10.48.4") in targets and ("gcp", "proxmox", "10.10.64.4") in targets
    assert {("hetzner", "azure", "10.10.32.10"), ("hetzner", "azure", "10.10.32.11")} <= targets
    assert all(source != site for source, site, _ in targets)
    # Every site probes every other site.
    assert {(s, t) for s, t, _ in targets} == {(s, t) for s in plan.sites for t in plan.sites if s != t}
    probers = {g["labels"]["source_site"]: g["targets"][0] for g in mesh}
    assert probers == {"hetzner": "127.0.0.1:9115", "gcp": "10.10.16.10:9115", "azure": "10.10.32.10:9115", "proxmox": "10.10.64.10:9115"}


def test_a_replaced_node_with_a_new_address_is_scraped_there(offline_runs: dict[str, OfflineRun]) -> None:
    """The targets are a pure function of the inventory: a node at a new address moves its target."""
    run = offline_runs["all-four"]
    plan = plan_of(run)
    inventory = [
        (m["name"], m["site"], m["provider"], Role(m["role"]), "10.10.16.99" if m["name"] == "ri-dev-gcp-worker-2" else m["privateIp"])
        for m in run.outputs["inventory"]
    ]
    moved = monitoring_plan([InventoryNode(*m) for m in inventory], plan.layout)
    before, after = render_nodes_file_sd(plan), render_nodes_file_sd(moved)
    assert "10.10.16.11:9100" in before and "10.10.16.99:9100" in after and "10.10.16.11:9100" not in after


def test_prober_user_data_runs_blackbox_on_its_private_address() -> None:
    boot = prober_boot("10.10.32.10", AlertTimings())
    files = {f.path: f.content for f in boot.files}
    assert "--web.listen-address=10.10.32.10:9115" in files["/etc/systemd/system/prometheus-blackbox-exporter.service"]
    assert "prober: icmp" in files["/etc/prometheus/blackbox.yml"] and all(f.defer for f in boot.files)
    # The worker role installs blackbox_exporter disabled: the prober enables it.
    assert ("systemctl", "enable", "prometheus-blackbox-exporter.service") in boot.commands


def test_push_sets_wait_for_first_boot_and_keep_secrets_to_their_users(offline_runs: dict[str, OfflineRun]) -> None:
    plan = plan_of(offline_runs["all-four"])
    secrets = secrets_push(plan, "token", "password", NOTIFY_URL)
    for push in (secrets, targets_push(plan), config_push(plan)):
        assert push.before[0].startswith("cloud-init status --wait")
    modes = {f.path: (f.mode, f.owner) for f in secrets.files}
    assert modes == {
        "/etc/prometheus/secrets/healer-token": ("0640", "root:prometheus"),
        "/etc/grafana/secrets/admin-password": ("0640", "root:grafana"),
        "/etc/prometheus/alertmanager.yml": ("0640", "root:prometheus"),
    }
    assert "install -d -m 0750 -o root -g prometheus /etc/prometheus/secrets" in secrets.before
    assert "$__file{/etc/grafana/secrets/admin-password}" in grafana.render_grafana_ini(plan.layout)


def test_ssh_tunnel_one_liner() -> None:
    layout = ToolingLayout(grafana=Endpoint("10.10.48.5", 3000))
    assert ssh_tunnel_command(layout, "resinfra", "203.0.113.7") == (
        "ssh -N -L 3000:10.10.48.5:3000 -L 9090:127.0.0.1:9090 -L 9093:127.0.0.1:9093 resinfra@203.0.113.7"
    )


def test_rendering_is_deterministic(offline_runs: dict[str, OfflineRun]) -> None:
    plan = plan_of(offline_runs["all-four"])
    first = [f.content for p in (config_push(plan), targets_push(plan)) for f in p.files]
    second = [f.content for p in (config_push(plan), targets_push(plan)) for f in p.files]
    assert first == second


def test_push_scripts_pass_shellcheck(offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    plan = plan_of(offline_runs["all-four"])
    for push in (secrets_push(plan, "token", "password", NOTIFY_URL), targets_push(plan), config_push(plan)):
        script = tmp_path / f"{push.purpose}.sh"
        script.write_text(render_push_script(list(push.files), push.then, push.before))
        result = check("shellcheck", "-s", "bash", str(script))
        assert result.returncode == 0, f"{push.purpose}: {result.stdout}"


@pytest.mark.parametrize("reversed_sites", [False, True], ids=["config-order", "sites-listed-backwards"])
def test_tunnel_labels_name_the_links_as_the_plan_does(reversed_sites: bool, offline_runs: dict[str, OfflineRun]) -> None:
    """A TunnelDown alert's ``tunnel`` is the link's name in `resinfra plan` and the `tunnels`
    output (lower-numbered site first), whichever end probes and in whatever order sites are listed."""
    if reversed_sites:
        values = dev_config()
        values["resinfra:sites"] = values["resinfra:sites"][::-1]
        run = run_offline(values, stack_name="dev")
    else:
        run = offline_runs["all-four"]
    links = {t["name"] for t in run.outputs["tunnels"]}
    assert links == {"gcp-azure", "gcp-hetzner", "gcp-proxmox", "azure-hetzner", "azure-proxmox", "hetzner-proxmox"}
    mesh = json.loads(render_mesh_file_sd(plan_of(run)))
    assert {g["labels"]["tunnel"] for g in mesh} == links


def test_the_healing_dashboard_only_with_the_healer(offline_runs: dict[str, OfflineRun]) -> None:
    plan = plan_of(offline_runs["all-four"])
    assert plan.healer and "healing.json" in grafana.render_dashboards(plan)
    assert set(grafana.render_dashboards(dataclasses.replace(plan, healer=False))) == {"nodes.json", "latency.json", "tunnels.json"}
