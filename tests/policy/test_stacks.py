"""The example stacks' declared resources (from the mocks run) pass the policy pack; the pack itself loads and reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from resinfra_policies.common import Context, stack_of_urn
from resinfra_policies.labels import LABEL_SUPPORT_FILE
from resinfra_policies.registry import POLICIES, Level, evaluate

from resinfra import cli
from resinfra.offline import OfflineRun, run_offline
from tests.conftest import ROOT

STACKS = ("dev", "staging", "prod")


@pytest.fixture(scope="module")
def stack_runs() -> dict[str, OfflineRun]:
    runs = {}
    for stack in STACKS:
        values, secret_keys = cli.read_stack_config(ROOT / f"Pulumi.{stack}.yaml")
        runs[stack] = run_offline(values, stack_name=stack, secret_keys=secret_keys)
    return runs


def violations(run: OfflineRun, level: Level | None) -> list[str]:
    """Every violation of every declared resource (all of them, so resources added later are covered)."""
    wanted = {p.name for p in POLICIES if level is None or p.level is level}
    providers = {r.urn: r.inputs for r in run.resources if r.type.startswith("pulumi:providers:")}
    found = []
    for resource in run.resources:
        if not resource.custom:
            continue
        provider_urn = resource.provider.rsplit("::", 1)[0]  # a provider reference is "<urn>::<id>"
        context = Context(stack=stack_of_urn(resource.urn), provider_props=providers.get(provider_urn, {}))
        for policy, messages in evaluate(resource.type, resource.inputs, context).items():
            if policy in wanted:
                found += [f"{resource.type} {resource.name}: [{policy}] {m}" for m in messages]
    return found


@pytest.mark.parametrize("stack", STACKS)
def test_stack_passes_every_mandatory_policy(stack: str, stack_runs: dict[str, OfflineRun]) -> None:
    run = stack_runs[stack]
    assert len([r for r in run.resources if r.custom]) > 40  # the whole program ran
    assert violations(run, Level.MANDATORY) == []


@pytest.mark.parametrize("stack", STACKS)
def test_stack_passes_the_advisory_policies_too(stack: str, stack_runs: dict[str, OfflineRun]) -> None:
    assert violations(stack_runs[stack], Level.ADVISORY) == []


def test_provider_props_reach_the_rules(stack_runs: dict[str, OfflineRun]) -> None:
    """The GCP HA VPN gateway carries its labels only through the provider's defaultLabels."""
    run = stack_runs["dev"]
    gateway = next(r for r in run.resources if r.type == "gcp:compute/haVpnGateway:HaVpnGateway")
    assert "labels" not in gateway.inputs
    assert "resinfra-labels" in evaluate(gateway.type, gateway.inputs, Context("dev"))  # without the provider: unlabelled
    assert not any(gateway.name in v for v in violations(run, None))


def test_a_seeded_violation_in_a_stack_is_caught(stack_runs: dict[str, OfflineRun]) -> None:
    """Open SSH to the world in the dev stack's Hetzner firewall: the stack check must fail."""
    run = stack_runs["dev"]
    firewall = next(r for r in run.resources if r.type == "hcloud:index/firewall:Firewall")
    original = json.loads(json.dumps(firewall.inputs))
    try:
        firewall.inputs["rules"][0]["sourceIps"] = ["0.0.0.0/0"]
        assert any("no-public-admin-ports" in v for v in violations(run, Level.MANDATORY))
    finally:
        firewall.inputs.clear()
        firewall.inputs.update(original)


def test_label_support_file_is_current() -> None:
    """Regenerate with ``uv run python tools/label_support.py`` after a provider SDK upgrade."""
    from tools import label_support

    assert LABEL_SUPPORT_FILE.read_text() == label_support.render()


def test_every_labelled_type_the_stacks_declare_is_known(stack_runs: dict[str, OfflineRun]) -> None:
    support = json.loads(LABEL_SUPPORT_FILE.read_text())["types"]
    declared = {r.type for run in stack_runs.values() for r in run.resources if r.custom}
    for typ in ("gcp:compute/instance:Instance", "azure-native:compute:VirtualMachine", "hcloud:index/server:Server", "proxmoxve:index/vmLegacy:VmLegacy"):
        assert typ in declared and typ in support


# ---------------------------------------------------------------------------
# The pack as pulumi-policy runs it


def load_pack() -> Any:
    spec = importlib.util.spec_from_file_location("resinfra_policy_pack", ROOT / "policy" / "__main__.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ is not "__main__": the gRPC server does not start
    return module


def test_pack_builds_one_crossguard_policy_per_rule() -> None:
    from pulumi_policy import EnforcementLevel, ResourceValidationPolicy

    pack = load_pack()
    built = [pack.policy(spec) for spec in POLICIES]
    assert all(isinstance(p, ResourceValidationPolicy) for p in built)
    assert [p.name for p in built] == [s.name for s in POLICIES]
    levels = {p.name: p.enforcement_level for p in built}
    assert levels["no-public-admin-ports"] is EnforcementLevel.MANDATORY
    assert levels["resinfra-labels"] is EnforcementLevel.ADVISORY


def test_pack_reports_violations_through_pulumi_policy() -> None:
    from pulumi_policy import PolicyResourceOptions, ResourceValidationArgs

    pack = load_pack()
    spec = next(s for s in POLICIES if s.name == "vm-size-allow-list")
    opts = PolicyResourceOptions(False, [], None, [], None, [], None)  # type: ignore[arg-type]
    reported: list[str] = []
    args = ResourceValidationArgs(
        "hcloud:index/server:Server",
        {"serverType": "ccx63"},
        "urn:pulumi:dev::resinfra::hcloud:index/server:Server::big",
        "big",
        opts,
        None,
        {},
    )
    pack.policy(spec).validate(args, lambda message, urn=None: reported.append(message))
    assert len(reported) == 1 and "ccx63" in reported[0] and "dev" in reported[0]


def test_pack_requirements_pin_the_policy_sdk() -> None:
    text = (ROOT / "policy" / "requirements.txt").read_text()
    assert "pulumi-policy>=1.21,<2" in text
    assert Path(ROOT / "policy" / "PulumiPolicy.yaml").is_file()
