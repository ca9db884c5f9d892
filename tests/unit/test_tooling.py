"""The tooling VM's software under mocks: where it runs, what it exposes, how it is pushed, secrets."""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from resinfra import config
from resinfra.offline import OfflineRun, run_offline
from resinfra.remote import script_hash
from resinfra.tooling import TYPE_TOKEN
from tests.conftest import STACK_SHAPES, dev_config, shape
from tests.images.test_one_source import boot_provisioning, listing
from tests.unit.test_stack import ADMIN_CIDRS, public_rules

SENTINEL_URL = "https://hooks.example.org/services/notify-url-sentinel-42"


def tooling_of(run: OfflineRun) -> dict[str, Any]:
    return run.outputs["tooling"]


def pushes(run: OfflineRun) -> dict[str, Any]:
    return {r.name.rsplit("-push-", 1)[1]: r for r in run.of_type("command:remote:Command") if "-push-" in r.name}


@pytest.mark.parametrize("shape_name", list(STACK_SHAPES))
def test_the_tooling_component_runs_on_the_default_site(shape_name: str, offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs[shape_name]
    providers = STACK_SHAPES[shape_name]
    site = "hetzner" if "hetzner" in providers else providers[0]
    assert tooling_of(run)["site"] == site and tooling_of(run)["name"] == f"ri-dev-{site}-tooling"
    (component,) = run.of_type(TYPE_TOKEN)
    assert component.name == f"ri-dev-{site}-tooling-services"
    commands = pushes(run)
    assert set(commands) == {"secrets", "targets", "config", "healer-secrets", "healer"}
    for command in commands.values():
        assert run.descends_from(command, component)
        assert command.inputs["connection"]["host"] == tooling_of(run)["publicIp"]
        assert any(d.endswith(f"::ri-dev-{site}-tooling") for d in command.dependencies), "a replaced tooling VM is pushed again"
    # Secrets first, then targets, then the configs that start the services; then the healer's secrets and program.
    assert commands["secrets"].urn in commands["targets"].dependencies
    assert commands["targets"].urn in commands["config"].dependencies
    assert commands["config"].urn in commands["healer-secrets"].dependencies
    assert commands["healer-secrets"].urn in commands["healer"].dependencies


@functools.cache
def tooling_on(site: str) -> OfflineRun:
    """The dev stack with its tooling VM on ``site``, run once for the two tests that read it."""
    values = copy.deepcopy(dev_config())
    values["resinfra:tooling"] = {"site": site}
    return run_offline(values)


@pytest.mark.parametrize("site", ["gcp", "azure", "hetzner", "proxmox"])
def test_tooling_site_picks_any_provider(site: str) -> None:
    run = tooling_on(site)
    assert tooling_of(run)["site"] == site
    vm = next(r for r in run.resources if r.name == f"ri-dev-{site}-tooling" and r.custom)
    assert run.ancestor_types(vm)[0].endswith("Site")
    assert pushes(run)["config"].inputs["connection"]["host"] == tooling_of(run)["publicIp"]
    # The mesh probes from the tooling VM itself on its site, from the first worker elsewhere.
    user_data = {f.machine: yaml.safe_load(f.content) for f in run.files if f.purpose == "cloud-init"}
    # Every worker has blackbox_exporter (images/provision/worker.sh); the prober's user-data enables it.
    enables_blackbox = ["systemctl", "enable", "prometheus-blackbox-exporter.service"]
    assert enables_blackbox not in user_data[f"ri-dev-{site}-worker-1"]["runcmd"]
    for other in {"gcp", "azure", "hetzner", "proxmox"} - {site}:
        assert enables_blackbox in user_data[f"ri-dev-{other}-worker-1"]["runcmd"]
        assert enables_blackbox not in user_data[f"ri-dev-{other}-worker-2"]["runcmd"]
    assert user_data[f"ri-dev-{site}-tooling"]["runcmd"][0] == ["bash", "/usr/local/lib/resinfra/provision/provision.sh", "tooling"]


@pytest.mark.parametrize("site", ["gcp", "azure", "hetzner", "proxmox"])
def test_the_resinfra_vm_exposes_only_ssh_from_admin_networks(site: str) -> None:
    run = tooling_on(site)
    applies_to_tooling = {"hetzner": "tooling", "proxmox": "ri-dev-proxmox-tooling-fw-rules", "gcp": "network", "azure": "subnet"}[site]
    rules = [rule for rule in public_rules(run) if rule[0].startswith(f"ri-dev-{site}") and rule[1] == applies_to_tooling]
    assert rules, "the tooling VM's firewall was found"
    for _, _, protocol, port, sources in rules:
        assert (protocol, port, sources) == ("tcp", "22", ADMIN_CIDRS)


def test_the_user_data_installs_grafana_from_its_repository(offline_runs: dict[str, OfflineRun], tmp_path: Path) -> None:
    run = offline_runs["all-four"]
    user_data = next(f.content for f in run.files if f.machine == "ri-dev-hetzner-tooling" and f.purpose == "cloud-init")
    role, root, _ = boot_provisioning(user_data, tmp_path, "tooling")
    items = listing(root, role, tmp_path)
    assert "apt-source grafana B53AE77BADB630A683046005963FA27710458545 https://apt.grafana.com stable main" in items
    assert {f"package {p}" for p in ("prometheus", "prometheus-alertmanager", "prometheus-blackbox-exporter", "grafana")} <= set(items)
    # The repository comes before the packages it serves.
    assert items.index("apt-source grafana B53AE77BADB630A683046005963FA27710458545 https://apt.grafana.com stable main") < items.index("package grafana")


def secret_run() -> OfflineRun:
    values = {**shape("hetzner", "proxmox"), "resinfra:notificationWebhookUrl": SENTINEL_URL}
    return run_offline(values, secret_keys=["resinfra:sshPrivateKey", "resinfra:notificationWebhookUrl"])


def test_secrets_stay_secret() -> None:
    run = secret_run()
    token = next(r for r in run.of_type("random:index/randomPassword:RandomPassword") if r.name.endswith("-healer-token")).outputs["result"]
    password = next(r for r in run.of_type("random:index/randomPassword:RandomPassword") if r.name.endswith("-grafana-admin")).outputs["result"]
    assert len(token) == 48 and len(password) == 32
    commands = pushes(run)
    assert {"stdin", "triggers"} <= commands["secrets"].secret_inputs
    for sentinel in (SENTINEL_URL, token, password):
        assert sentinel in commands["secrets"].inputs["stdin"], "the secrets push carries it"
        assert sentinel not in repr(run.outputs)
        for name in ("targets", "config"):
            assert sentinel not in commands[name].inputs["stdin"]
        for f in run.files:
            assert f.secret or sentinel not in f.content, f"{f.machine}/{f.filename} holds a secret but is not marked secret"
    assert run.secret_outputs == set()
    secret_files = {f.filename for f in run.files if f.secret and f.machine == run.outputs["tooling"]["name"]}
    assert secret_files == {
        "etc/prometheus/secrets/healer-token",
        "etc/grafana/secrets/admin-password",
        "etc/prometheus/alertmanager.yml",
        "etc/resinfra-healer/secrets/token",
        "etc/resinfra-healer/secrets/environment",
        "etc/resinfra-healer/secrets/notification-url",
    }
    alertmanager = yaml.safe_load(next(f.content for f in run.files if f.filename == "etc/prometheus/alertmanager.yml"))
    assert alertmanager["route"]["receiver"] == "notify"
    assert alertmanager["receivers"][-1]["webhook_configs"][0]["url"] == SENTINEL_URL


def test_without_a_notification_url_alerts_go_to_the_healer_only(offline_runs: dict[str, OfflineRun]) -> None:
    run = offline_runs["hetzner-proxmox"]
    alertmanager = yaml.safe_load(next(f.content for f in run.files if f.filename == "etc/prometheus/alertmanager.yml"))
    assert [r["name"] for r in alertmanager["receivers"]] == ["healer", "discard"]


def test_a_new_worker_updates_the_targets_push_and_nothing_else(offline_runs: dict[str, OfflineRun]) -> None:
    """The same `pulumi up` that adds or replaces a node re-pushes the targets; the tooling VM and its configs stay."""
    small = offline_runs["hetzner-proxmox"]
    values = shape("hetzner", "proxmox")
    next(s for s in values["resinfra:sites"] if s["provider"] == "proxmox")["workers"] = 3
    bigger = run_offline(values)
    before, after = pushes(small), pushes(bigger)
    assert before["targets"].inputs["triggers"][0] != after["targets"].inputs["triggers"][0]
    assert "10.10.64.12:9100" in after["targets"].inputs["stdin"] and "10.10.64.12:9100" not in before["targets"].inputs["stdin"]
    assert before["config"].inputs["triggers"] == after["config"].inputs["triggers"]
    assert small.by_name("ri-dev-hetzner-tooling").inputs == bigger.by_name("ri-dev-hetzner-tooling").inputs
    assert before["targets"].inputs["triggers"][0] == script_hash(before["targets"].inputs["stdin"])


@pytest.mark.parametrize("value", ["not a url", "ftp://hooks.example.org/x", "https:/hooks.example.org"])
def test_a_bad_notification_url_is_refused_without_showing_it(value: str) -> None:
    values = {**dev_config(), "resinfra:notificationWebhookUrl": value}
    with pytest.raises(config.ConfigError) as caught:
        config.load(values)
    (problem,) = caught.value.problems
    assert problem.key == "resinfra:notificationWebhookUrl" and "pulumi config set --secret" in problem.fix
    assert value not in str(caught.value)


def test_the_notification_url_is_optional() -> None:
    assert config.load(dev_config()).tooling.latency_threshold_ms == 250
