"""What the engine plans for the two everyday changes, on the deployed dev stack:
a new SSH key (every machine's user-data) and one more worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from resinfra.cli import read_stack_config
from resinfra.offline import OfflineRun, run_offline
from tests.engine.harness import Project, changed, replaced, resource_name

NEW_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx0E6Ya3fLhQe0Qq0x8QyJmNnVq4V5m3y2mN1cHk3Xf rotated-key"


@contextmanager
def config_set(project: Project, key: str, value: str, path: bool = False) -> Iterator[None]:
    """``key`` set to ``value`` in the dev stack file for the block, then the file as it was."""
    before = project.stack_file("dev").read_text()
    project.pulumi("config", "set", *(["--path"] if path else []), key, value, stack="dev")
    try:
        yield
    finally:
        project.stack_file("dev").write_text(before)


def offline(project: Project) -> OfflineRun:
    """The program's declarations for the stack file as it is now (under mocks)."""
    values, secret_keys = read_stack_config(project.stack_file("dev"))
    return run_offline(values, stack_name="dev", secret_keys=secret_keys)


def test_new_ssh_key_replaces_the_machines_and_what_follows_them(project: Project, dev: dict[str, str]) -> None:
    """README: a machine whose user-data changes (a new SSH key) is replaced, on every provider; a
    roll takes the machine's dependents too (its firewall, its pushes). Nothing else changes."""
    before = offline(project)
    old_key = before.config.ssh_public_key
    machines = {m["urn"] for m in before.outputs["inventory"]}
    # By name: the mock engine's URNs name only the direct parent's type, the engine's the whole chain.
    carriers = {r.name for r in before.resources if r.custom and old_key in json.dumps(r.inputs)}
    followers = {r.name for r in before.resources if set(r.replace_with) & machines}
    pushes = {r.name for r in before.resources if r.type == "command:remote:Command" and set(r.dependencies) & machines}
    with config_set(project, "resinfra:sshPublicKey", NEW_KEY):
        ops = project.preview("dev")
    assert machines <= replaced(ops)
    assert {resource_name(urn) for urn in replaced(ops)} == {resource_name(urn) for urn in machines} | carriers | followers | pushes
    assert set(changed(ops)) == replaced(ops), "a new key changes nothing in place"


def test_one_more_worker_adds_its_resources_and_the_inventory_pushes(project: Project, dev: dict[str, str]) -> None:
    """A third Hetzner worker: its own resources are created; the pushes that carry the inventory
    (the tooling VM's scrape targets) and the stack file (the healer's bundle) re-run; nothing else."""
    before = offline(project)
    hetzner = next(i for i, s in enumerate(project.stack_config("dev")["resinfra:sites"]) if s["provider"] == "hetzner")
    with config_set(project, f"resinfra:sites[{hetzner}].workers", "3", path=True):
        after = offline(project)
        ops = project.preview("dev")
    new = {r.name for r in after.resources} - {r.name for r in before.resources}
    assert new == {"ri-dev-hetzner-worker-3"}
    created = {resource_name(urn) for urn, o in ops.items() if o == {"create"}}
    assert created == new
    rerun = {resource_name(urn) for urn in replaced(ops)}
    assert rerun == {"ri-dev-hetzner-tooling-services-push-targets", "ri-dev-hetzner-tooling-services-push-healer"}
    assert {resource_name(urn) for urn in changed(ops)} == created | rerun


@pytest.mark.parametrize("gateway", ["ri-dev-hetzner-gw", "ri-dev-proxmox-gw"])
def test_a_replaced_gateway_vm_gets_its_configuration_pushed_again(project: Project, dev: dict[str, str], gateway: str) -> None:
    """README's roll (``pulumi up --target <machine URN> --target-dependents``, here with ``--replace``): the new
    gateway VM boots without its swanctl.conf, so the push runs again, whether or not the provider gives
    the new VM a new id (Hetzner does; Proxmox keeps the VM id, GCE and Azure the resource path)."""
    urn = next(m["urn"] for m in project.outputs("dev")["inventory"] if m["name"] == gateway)
    ran = len(project.cloud("dev", "command").get("log", []))
    project.pulumi("up", "--yes", "--skip-preview", "--replace", urn, "--target", urn, "--target-dependents", stack="dev")
    commands = [entry["urn"].split("::")[-1] for entry in project.cloud("dev", "command")["log"][ran:]]
    assert commands == [f"{gateway}-swanctl"]
    project.pulumi("preview", "--expect-no-changes", stack="dev")
