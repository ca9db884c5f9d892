"""A gateway pair's rendered failover files, checked by the real tools: keepalived's own config test (in a namespace
with the NICs the machine would have) and shellcheck."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra.offline import OfflineRun, run_offline
from tests.conftest import paired_config, require_root, require_tool

NETNS = os.environ.get("RESINFRA_TEST_LAB_NAME", "rlt")[:5] + "-ka"
"""A namespace of this test's own (the lab name keeps engineers' runs apart)."""


@pytest.fixture(scope="module")
def paired() -> OfflineRun:
    return run_offline(paired_config(), secret_keys=["resinfra:hetznerFailoverToken"])


def rendered(run: OfflineRun, machine: str, filename: str) -> str:
    return next(str(f.content) for f in run.files if f.machine == machine and f.filename == filename)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A namespace with a public and a private NIC (a veth pair: keepalived refuses loopback for VRRP, and this kernel
    has no dummy links)."""
    require_root()
    require_tool("keepalived")
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    try:
        subprocess.run(["ip", "-n", NETNS, "link", "add", "pub0", "type", "veth", "peer", "name", "priv0"], check=True)
        for nic in ("pub0", "priv0"):
            subprocess.run(["ip", "-n", NETNS, "link", "set", nic, "up"], check=True)
        yield NETNS
    finally:
        subprocess.run(["ip", "netns", "del", NETNS], check=False)


def config_test(netns: str, tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    """``keepalived -t`` (``--config-test``: parse and exit, non-zero on any error) on ``text``, its NIC names included
    the way ``resinfra-failover ... interfaces`` writes them on the machine."""
    interfaces = tmp_path / "resinfra-interfaces.conf"
    interfaces.write_text("$PUBLIC_IF=pub0\n$PRIVATE_IF=priv0\n")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(text.replace("include /etc/keepalived/resinfra-interfaces.conf", f"include {interfaces}"))
    return subprocess.run(["ip", "netns", "exec", netns, "keepalived", "-t", "-f", str(conf)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("machine", ["ri-dev-hetzner-gw-1", "ri-dev-hetzner-gw-2", "ri-dev-proxmox-gw-1", "ri-dev-proxmox-gw-2"])
def test_keepalived_accepts_the_rendered_config(paired: OfflineRun, netns: str, tmp_path: Path, machine: str) -> None:
    text = rendered(paired, machine, "keepalived.conf")
    result = config_test(netns, tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check refuses a broken config (so it can fail): a keyword keepalived does not know.
    broken = config_test(netns, tmp_path, text.replace("advert_int", "advert_interval"))
    assert broken.returncode != 0 and "Unknown keyword" in broken.stdout + broken.stderr


def test_the_notify_script_passes_shellcheck(paired: OfflineRun, tmp_path: Path) -> None:
    require_tool("shellcheck")
    script = tmp_path / "resinfra-failover"
    script.write_text(rendered(paired, "ri-dev-hetzner-gw-1", "resinfra-failover"))
    result = subprocess.run(["shellcheck", "-s", "bash", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_the_environment_file_reads_back(paired: OfflineRun) -> None:
    """The lab reads the rendered settings back (parse_env): what it runs is what the VM gets."""
    from resinfra.failover.plan import parse_env
    from resinfra.render.failover import render_env

    text = rendered(paired, "ri-dev-proxmox-gw-2", "gateway.env")
    failover = parse_env(text)
    assert render_env(failover) == text
    assert failover.priority == 100 and failover.peer_private_ip == "10.10.64.6" and failover.backup_route == ("10.10.0.0/16", "10.10.64.4")


def test_the_tunnels_dashboard_shows_the_active_gateway_only_with_pairs(paired: OfflineRun, offline_runs: dict[str, OfflineRun]) -> None:
    """With a pair the Tunnels dashboard shows which gateway carries the links; without one there is no such metric."""
    from resinfra import stack
    from resinfra.render.grafana import dashboard_json, tunnels_dashboard

    def panel_shown(run: OfflineRun) -> bool:
        return "resinfra_gateway_active" in dashboard_json(tunnels_dashboard(stack.monitoring_plan(run.config, run.result.sites)))

    assert panel_shown(paired) and not panel_shown(offline_runs["all-four"])
