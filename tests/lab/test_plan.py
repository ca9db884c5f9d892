"""The lab's plan and boot, without root: it runs what the program renders, changed only where resinfra/lab/changes.py says."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from resinfra import stack
from resinfra.addressing import Role
from resinfra.healer.inventory import parse_inventory
from resinfra.lab import changes
from resinfra.lab.boot import BootError, boot_plan
from resinfra.lab.cli import main as lab_main
from resinfra.lab.clouds import CloudRefusal
from resinfra.lab.forward import parse_spec
from resinfra.lab.names import NAME_PATTERN
from resinfra.lab.plan import LabPlan, inventory_document, lab_plan
from resinfra.netlab import Lab
from resinfra.netlab.charon import pin_reqids
from resinfra.netlab.topology import fixed_mac
from resinfra.offline import OfflineRun, run_offline
from resinfra.render.cloud_init import NODE_EXPORTER_PORT
from resinfra.render.monitoring import BLACKBOX_PORT, PROBER_WORKER_INDEX
from tests.conftest import STACK_SHAPES, dev_config, shape

ROOT = Path("/var/lib/resinfra-lab/rlx")


@pytest.fixture(scope="module")
def lab_runs() -> dict[str, OfflineRun]:
    """The offline run of each stack shape as ``lab up`` makes it: placeholder public addresses replaced."""
    return {name: run_offline(changes.with_lab_addresses(shape(*providers))[0], stack_name="dev") for name, providers in STACK_SHAPES.items()}


@pytest.fixture(scope="module")
def dev(lab_runs: dict[str, OfflineRun]) -> tuple[OfflineRun, LabPlan]:
    run = lab_runs["all-four"]
    return run, lab_plan(run, "rlx", ROOT)


def rendered(run: OfflineRun, purpose: str, machine: str) -> str:
    return next(f.content for f in run.files if f.purpose == purpose and f.machine == machine)


def test_every_machine_of_the_inventory_runs_once_in_a_namespace_of_the_lab(dev: tuple[OfflineRun, LabPlan]) -> None:
    run, plan = dev
    assert sorted(m.name for m in plan.machines) == sorted(m["name"] for m in run.outputs["inventory"])
    namespaces = plan.namespaces()
    assert len(set(namespaces)) == len(namespaces)
    assert all(ns.startswith("rlx-") for ns in namespaces), "down removes the lab's own namespaces only"
    for machine in plan.machines:
        assert machine.namespace in namespaces
        # Gateway VMs are their site's gateway namespace; everything else has its own.
        assert machine.own_namespace is (machine.role is not Role.GATEWAY)
    assert {g.site for g in plan.gateways} == {s.name for s in run.config.sites}
    ports = [Lab.wan_port(g.site) for g in plan.gateways]
    assert len(set(ports)) == len(ports) and all(len(p) <= 15 for p in ports)


def test_strongswan_gateways_run_the_rendered_swanctl_conf(dev: tuple[OfflineRun, LabPlan]) -> None:
    run, plan = dev
    vms = {m.site: m.name for m in plan.machines if m.role is Role.GATEWAY}
    assert set(vms) == {"hetzner", "proxmox"}
    for gateway in plan.gateways:
        if gateway.site in vms:
            assert gateway.swanctl == rendered(run, "swanctl", vms[gateway.site])
            assert gateway.lab_site.lan.ip.exploded == next(m.private_ip for m in plan.machines if m.name == vms[gateway.site])


def test_pinning_reqids_only_adds_one_per_child() -> None:
    text = run_offline(dev_config()).files
    conf = next(f.content for f in text if f.purpose == "swanctl")
    pinned = pin_reqids(conf)
    added = [line.strip() for line in pinned.splitlines() if line not in conf.splitlines()]
    assert added == [f"reqid = {i}" for i in range(1, conf.count("local_ts = ") + 1)]
    assert pin_reqids(pinned) == pinned
    assert "\n".join(line for line in pinned.splitlines() if "reqid" not in line) == conf.rstrip("\n")


def test_bridge_and_node_macs_are_fixed_and_locally_administered() -> None:
    assert fixed_mac("10.10.48.10") == "02:00:0a:0a:30:0a"
    assert fixed_mac("10.10.48.10") != fixed_mac("10.10.48.11")


def test_monitoring_differs_from_the_resinfra_vm_only_in_paths_and_timings(dev: tuple[OfflineRun, LabPlan]) -> None:
    run, plan = dev
    production = stack.monitoring_plan(run.config, run.result.sites)
    assert dataclasses.replace(plan.monitoring, layout=production.layout, timings=production.timings) == production
    for endpoint in ("prometheus", "alertmanager", "blackbox", "healer", "grafana"):
        assert getattr(plan.monitoring.layout, endpoint) == getattr(production.layout, endpoint), "the VM's namespace keeps its addresses"
    assert plan.monitoring.timings == changes.LAB_TIMINGS
    assert plan.monitoring.layout.prometheus_config.startswith(str(ROOT))
    # Every target keeps its production address: each machine has its own namespace.
    assert {n.address for n in plan.monitoring.nodes} == {f"{m['privateIp']}:{NODE_EXPORTER_PORT}" for m in run.outputs["inventory"]}


def test_the_healer_runs_the_stacks_policy_with_the_labs_waits(dev: tuple[OfflineRun, LabPlan]) -> None:
    run, plan = dev
    policy = plan.healer.policy
    assert policy.startup_grace_seconds == changes.STARTUP_GRACE_SECONDS
    assert policy.cooldown_seconds == changes.COOLDOWN_SECONDS
    same = {"startup_grace_seconds", "cooldown_seconds"}
    assert policy.model_dump(exclude=same) == run.config.healer.model_dump(exclude=same)
    assert plan.healer.stack is None, "a local action, no Pulumi stack"
    assert (plan.healer.listen_host, plan.healer.listen_port) == (plan.monitoring.layout.healer.host, plan.monitoring.layout.healer.port)


def test_machines_boot_from_their_user_data(dev: tuple[OfflineRun, LabPlan]) -> None:
    run, plan = dev
    providers = {s.name: s.provider for s in run.config.sites}
    for machine in plan.machines:
        root = ROOT / "machines" / machine.name
        boot = boot_plan(machine.name, machine.user_data, root)
        daemons = {s.unit: s for s in boot.services if not s.oneshot}
        node = daemons.pop("prometheus-node-exporter")
        assert f"--web.listen-address={machine.private_ip}:{NODE_EXPORTER_PORT}" in node.argv
        is_prober = machine.role is Role.WORKER and machine.name.endswith(f"-{PROBER_WORKER_INDEX}") and machine.site != plan.tooling.site
        if is_prober:
            blackbox = daemons.pop("prometheus-blackbox-exporter")
            assert f"--web.listen-address={machine.private_ip}:{BLACKBOX_PORT}" in blackbox.argv
            assert f"--config.file={root}/etc/prometheus/blackbox.yml" in blackbox.argv
            assert (root / "etc/prometheus/blackbox.yml") in {path for path, _ in boot.files}
        assert daemons == {}, f"{machine.name}: no other daemon"
        oneshots = [s for s in boot.services if s.oneshot]
        if providers[machine.site] == "proxmox" and machine.role is not Role.GATEWAY:
            assert [s.unit for s in oneshots] == ["resinfra-routes"]
            assert oneshots[0].commands[0][:3] == ("/usr/sbin/ip", "route", "replace")
        else:
            assert oneshots == []


def test_a_service_the_lab_cannot_run_is_an_error() -> None:
    user_data = "#cloud-config\nruncmd:\n- [systemctl, restart, ssh]\n- [systemctl, enable, --now, mystery.service]\n"
    with pytest.raises(BootError, match="mystery"):
        boot_plan("m", user_data, ROOT)
    with pytest.raises(BootError, match="listen address"):
        boot_plan("m", "#cloud-config\nruncmd:\n- [systemctl, restart, prometheus-node-exporter]\n", ROOT)


def test_placeholder_public_addresses_are_replaced_with_the_labs_own() -> None:
    values, notes = changes.with_lab_addresses(dev_config())
    proxmox = next(s for s in values["resinfra:sites"] if s["provider"] == "proxmox")
    assert (proxmox["publicRange"], proxmox["publicGateway"]) == ("100.127.0.64/28", "100.127.0.65"), "site 4's /28, same offset"
    assert notes == ["proxmox: publicRange 203.0.113.16/28 is in 203.0.113.0/24, which GCP refuses as a VPN peer; the lab uses 100.127.0.64/28"]
    rest = [s for s in values["resinfra:sites"] if s["provider"] != "proxmox"]
    assert rest == [s for s in dev_config()["resinfra:sites"] if s["provider"] != "proxmox"], "nothing else changes"
    routable = dev_config()
    next(s for s in routable["resinfra:sites"] if s["provider"] == "proxmox").update(publicRange="100.100.0.0/28", publicGateway="100.100.0.1")
    assert changes.with_lab_addresses(routable) == (routable, []), "a routable range is the user's: kept"


def test_the_emulated_gcp_refuses_a_placeholder_peer_as_gcp_does(offline_runs: dict[str, OfflineRun]) -> None:
    with pytest.raises(CloudRefusal, match=r"gcp-proxmox .*peer_ip 203\.0\.113\.18 is in the reserved range 203\.0\.113\.0/24"):
        lab_plan(offline_runs["all-four"], "rlx", ROOT)


def test_workers_override_every_site() -> None:
    values = changes.with_workers(dev_config(), 1)
    assert {s["workers"] for s in values["resinfra:sites"]} == {1}
    assert changes.with_workers(dev_config(), None) == dev_config()


def test_the_inventory_file_is_what_the_healer_reads(dev: tuple[OfflineRun, LabPlan]) -> None:
    run, _ = dev
    created = {m["name"]: 1_800_000_000.0 + i for i, m in enumerate(run.outputs["inventory"])}
    machines = parse_inventory(json.loads(inventory_document(run.outputs["inventory"], created)))
    assert {m.name: m.created for m in machines} == created
    assert {m.urn for m in machines} == {m["urn"] for m in run.outputs["inventory"]}


def test_forward_specs() -> None:
    assert parse_spec("3=127.0.0.1:9090") == (3, ("127.0.0.1", 9090))
    with pytest.raises(ValueError, match="FD=HOST:PORT"):
        parse_spec("127.0.0.1:9090")


def test_lab_commands_refuse_to_run_without_root(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    for argv in (["up"], ["status"], ["down"], ["kill", "x"], ["partition", "gcp"], ["restart-healer"], ["replace", "x"]):
        assert lab_main(argv) == 2
        assert "needs root" in capsys.readouterr().err


def test_a_lab_name_is_a_short_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        lab_main(["status", "--name", "Not-A-Name"])
    assert "1-6 lowercase" in capsys.readouterr().err


def test_a_bad_stack_config_is_refused_before_anything_is_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from resinfra.config import ConfigError
    from resinfra.lab import cluster

    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(cluster, "missing_tools", list)
    monkeypatch.setattr(cluster, "root_of", lambda name: tmp_path / "labs" / name)
    monkeypatch.setattr(cluster, "down", lambda *a, **k: pytest.fail("nothing was started, nothing to take down"))
    bad = tmp_path / "Pulumi.bad.yaml"
    config = dev_config()
    config["resinfra:supernet"] = "10.10.0.0/33"
    bad.write_text(json.dumps({"config": config}))
    lines: list[str] = []
    with pytest.raises(ConfigError, match="resinfra:supernet"):
        cluster.up("rbad", None, str(bad), None, out=lines.append)
    assert lines[-1] == "lab up refused the stack config; nothing was started"
    assert not (tmp_path / "labs").exists(), "no state, no kept logs"


@pytest.mark.parametrize("shape_name", sorted(STACK_SHAPES))
def test_every_stack_shape_has_a_lab_plan(shape_name: str, lab_runs: dict[str, OfflineRun]) -> None:
    """One site (no links, so no swanctl.conf for its gateway VM) up to four: every machine and gateway is planned."""
    run = lab_runs[shape_name]
    plan = lab_plan(run, "rlx", ROOT)
    assert {g.site for g in plan.gateways} == set(STACK_SHAPES[shape_name])
    assert {m.name for m in plan.machines} == {m["name"] for m in run.outputs["inventory"]}
    assert plan.tunnels == len(run.outputs["tunnels"])


def test_test_labs_of_parallel_workers_have_valid_distinct_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The names the lab and integration tests use (tests/conftest.py): valid lab names, none shared between two
    pytest-xdist workers or two modules, with the longest names a user may give."""
    from tests.conftest import lab_name_for_tests

    modules = [("RESINFRA_TEST_LAB_NAME", "rlt", s) for s in ("", "x", "p", "g")]
    modules += [("RESINFRA_TEST_MESH_LAB_NAME", "rmt", ""), ("RESINFRA_TEST_MESH_LAB_NAME", "rmt", "o")]
    for given in (None, ("flab", "fmesh"), ("labsix", "meshsx")):
        names = []
        for worker in (None, *(f"gw{n}" for n in range(12))):
            if worker is None:
                monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
            else:
                monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
            if given is not None:
                monkeypatch.setenv("RESINFRA_TEST_LAB_NAME", given[0])
                monkeypatch.setenv("RESINFRA_TEST_MESH_LAB_NAME", given[1])
            names += [lab_name_for_tests(*module) for module in modules]
        assert all(re.fullmatch(NAME_PATTERN, name) for name in names), names
        assert len(set(names)) == len(names), sorted(n for n in names if names.count(n) > 1)


def test_a_pair_site_gets_its_network_and_two_member_namespaces() -> None:
    """``gateways: 2``: the site's namespace plays its network (``.1``), each member has its own namespace and underlay
    port; the Proxmox VRRP address moves by ARP, the Hetzner Floating IP by the emulated API's routes."""
    values = dev_config()
    for site in values["resinfra:sites"]:
        if site["provider"] in ("hetzner", "proxmox"):
            site["gateways"] = 2
    run = run_offline(changes.with_lab_addresses(values)[0], stack_name="dev")
    plan = lab_plan(run, "rlx", ROOT)
    namespaces = plan.namespaces()
    assert len(set(namespaces)) == len(namespaces)
    ports = [Lab.wan_port(m.key) for g in plan.gateways if g.lab_site.pair for m in g.lab_site.pair.members]
    ports += [Lab.wan_port(g.site) for g in plan.gateways if not g.lab_site.pair]
    assert len(set(ports)) == len(ports) and all(len(p) <= 15 for p in ports)
    for name in ("hetzner", "proxmox"):
        gateway = next(g for g in plan.gateways if g.site == name)
        pair = gateway.lab_site.pair
        assert pair is not None and gateway.lab_site.public_ips == () and gateway.swanctl == ""
        subnet = run.result.plan[name].subnet
        assert gateway.lab_site.lan.ip == subnet.network_address + 1
        members = sorted((m for m in plan.machines if m.site == name and m.role is Role.GATEWAY), key=lambda m: m.name)
        assert [m.paired for m in members] == [True, True] and [m.namespace for m in members] == [f"rlx-{name}-gw-1", f"rlx-{name}-gw-2"]
        assert all(m.namespace in namespaces for m in members)
        assert [m.key for m in pair.members] == [f"{name}-gw-1", f"{name}-gw-2"]
        assert [m.lan.split("/")[0] for m in pair.members] == [m.private_ip for m in members]
        shared = run.outputs["sites"][name]["gateway"]["publicIps"]
        if name == "hetzner":
            assert pair.routed_addresses == tuple(shared) and pair.arp_addresses == ()
            assert pair.lan_routes == ((run.config.supernet, str(subnet.network_address + 1)),)
        else:
            assert pair.arp_addresses == tuple(shared) and pair.routed_addresses == () and pair.lan_routes == ()
