"""Proxmox VE risks on a first real ``pulumi up``: clone retries, stop on destroy, the datacenter
firewall checked before any VM exists, and the node's SSH address for snippet uploads."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from resinfra import config
from resinfra.offline import OfflineRun, run_offline
from resinfra.sites.proxmox import CLONE_RETRIES, check_host, datacenter_firewall_check
from tests.conftest import require_tool, shape

VM = "proxmoxve:index/vmLegacy:VmLegacy"
COMMAND = "command:remote:Command"


@pytest.fixture(scope="module")
def run() -> OfflineRun:
    return run_offline(shape("hetzner", "proxmox"))


def firewall_check(run: OfflineRun) -> Any:
    (check,) = [r for r in run.of_type(COMMAND) if r.name.endswith("-dc-fw-check")]
    return check


def test_every_full_clone_retries(run: OfflineRun) -> None:
    vms = run.of_type(VM)
    assert len(vms) == 3
    for vm in vms:
        assert vm.inputs["clone"]["full"] is True
        assert vm.inputs["clone"]["retries"] == CLONE_RETRIES > 1, vm.name


def test_every_vm_is_stopped_not_shut_down_on_destroy(run: OfflineRun) -> None:
    for vm in run.of_type(VM):
        assert vm.inputs["stopOnDestroy"] is True, vm.name


def test_the_datacenter_firewall_is_checked_before_any_vm_is_created(run: OfflineRun) -> None:
    check = firewall_check(run)
    assert "ProxmoxSite" in check.parent
    assert check.inputs["create"] == datacenter_firewall_check()
    assert check.inputs["connection"]["host"] == "pve1"  # no nodeAddress, no endpoint: the node's name
    for vm in run.of_type(VM):
        assert check.urn in vm.dependencies, f"{vm.name} does not wait for the datacenter firewall check"


def test_a_node_address_goes_to_the_provider_and_the_check() -> None:
    values = shape("hetzner", "proxmox")
    values["resinfra:sites"][1].update(nodeAddress="pve1.example.org", nodeSshPort=2222)
    run = run_offline(values)
    (provider,) = [r for r in run.resources if r.type == "pulumi:providers:proxmoxve"]
    ssh = provider.inputs["ssh"]
    ssh = ssh if isinstance(ssh, dict) else json.loads(ssh)  # provider config may travel as JSON text
    assert ssh["nodes"] == [{"name": "pve1", "address": "pve1.example.org", "port": 2222}]
    connection = firewall_check(run).inputs["connection"]
    assert (connection["host"], connection["port"]) == ("pve1.example.org", 2222)


def test_without_a_node_address_the_provider_resolves_the_node(run: OfflineRun) -> None:
    (provider,) = [r for r in run.resources if r.type == "pulumi:providers:proxmoxve"]
    assert "ssh" not in provider.inputs or "nodes" not in str(provider.inputs["ssh"])


def test_the_check_logs_in_where_the_config_points() -> None:
    site = config.load(shape("proxmox")).sites[0]
    assert isinstance(site, config.ProxmoxSite)
    assert check_host(site, "https://pve.example.org:8006/") == "pve.example.org"
    assert check_host(site, None) == "pve1"
    assert check_host(site.model_copy(update={"node_address": "192.0.2.10"}), "https://pve.example.org:8006/") == "192.0.2.10"


CLUSTER_FW_CASES = [
    ("enabled", "[OPTIONS]\n\nenable: 1\npolicy_in: DROP\n\n[RULES]\n\nIN SSH(ACCEPT) -i vmbr0\n", 0),
    ("disabled", "[OPTIONS]\nenable: 0\n", 1),
    ("no-enable-option", "[OPTIONS]\npolicy_in: DROP\n", 1),
    ("enable-outside-options", "[OPTIONS]\npolicy_in: DROP\n[RULES]\nenable: 1\n", 1),
    ("no-file", None, 1),
]


@pytest.mark.parametrize(("case", "content", "status"), CLUSTER_FW_CASES, ids=[c[0] for c in CLUSTER_FW_CASES])
def test_the_check_passes_only_with_the_datacenter_firewall_on(case: str, content: str | None, status: int, tmp_path: Path) -> None:
    path = tmp_path / "cluster.fw"
    if content is not None:
        path.write_text(content)
    # Run by sh, as the SSH session's shell would; sudo is never reached where cat succeeds or fails fast.
    done = subprocess.run(["sh", "-c", datacenter_firewall_check(str(path))], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == status, done.stderr
    if status:
        assert "datacenter firewall is not enabled" in done.stderr and "Fix:" in done.stderr


def test_the_check_script_passes_shellcheck(tmp_path: Path) -> None:
    shellcheck = require_tool("shellcheck")
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\n" + datacenter_firewall_check())
    done = subprocess.run([shellcheck, "--shell=sh", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout
