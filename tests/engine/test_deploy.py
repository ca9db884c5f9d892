"""Every committed stack deploys from empty in one ``pulumi up``; a second preview, and one after a
refresh, is empty; the outputs are what ``resinfra plan`` computes; the state keeps every secret encrypted."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from resinfra import config
from tests.engine.harness import ROOT, Project, init_stack

STACKS = ("dev", "staging", "prod")

_deployed: dict[str, dict[str, str]] = {}


def deployed(project: Project, stack: str) -> dict[str, str]:
    """``stack`` deployed once per module (from empty, one ``up``); its sentinel secrets."""
    if stack not in _deployed:
        sentinels = init_stack(project, stack)
        project.pulumi("up", "--yes", "--skip-preview", stack=stack)
        _deployed[stack] = sentinels
    return _deployed[stack]


@pytest.fixture(scope="module", autouse=True)
def _fresh_module() -> None:
    _deployed.clear()


@pytest.mark.parametrize("stack", STACKS)
def test_one_up_converges(project: Project, stack: str) -> None:
    """After one ``up`` from empty, ``preview --expect-no-changes`` passes (a second update would change nothing)."""
    deployed(project, stack)
    project.pulumi("preview", "--expect-no-changes", stack=stack)


def plan_json(project: Project, stack: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "resinfra.cli", "plan", "--config-file", str(project.stack_file(stack)), "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize("stack", STACKS)
def test_outputs_are_the_plan(project: Project, stack: str) -> None:
    """The stack's sites, inventory and tunnels equal what ``resinfra plan --json`` prints for the same stack file."""
    deployed(project, stack)
    outputs = project.outputs(stack)
    plan = plan_json(project, stack)
    assert outputs["inventory"] == plan["machines"]
    assert outputs["tunnels"] == plan["tunnels"]
    for site in plan["sites"]:
        deployed_site = outputs["sites"][site["name"]]
        assert {k: deployed_site[k] for k in ("provider", "block", "subnet", "gateway")} == {k: site[k] for k in ("provider", "block", "subnet", "gateway")}
        assert len(deployed_site["workers"]) == site["workers"]
    assert sorted(outputs["sites"]) == sorted(s["name"] for s in plan["sites"])


@pytest.mark.parametrize("stack", STACKS)
def test_refresh_changes_nothing(project: Project, stack: str) -> None:
    """``pulumi refresh`` finds the clouds as the state says, and the preview after it is still empty."""
    deployed(project, stack)
    project.pulumi("refresh", "--yes", "--skip-preview", stack=stack)
    project.pulumi("preview", "--expect-no-changes", stack=stack)


def generated_secrets(state: dict[str, Any]) -> list[str]:
    """Every value a RandomPassword generated (PSKs, the healer's token, Grafana's password), from the decrypted state."""
    found = []
    for res in state["deployment"]["resources"]:
        if res["type"] == "random:index/randomPassword:RandomPassword":
            value = res["outputs"]["result"]
            found.append(value["plaintext"] if isinstance(value, dict) else value)
    return [json.loads(v) if v.startswith('"') else v for v in found]


@pytest.mark.parametrize("stack", STACKS)
def test_state_holds_no_plaintext_secret(project: Project, stack: str) -> None:
    """``pulumi stack export`` holds no secret in plaintext: no configured sentinel, no generated PSK, token or password."""
    sentinels = deployed(project, stack)
    revealed = json.loads(project.export(stack, show_secrets=True))
    generated = generated_secrets(revealed)
    assert len(generated) >= 3, "the stack generates PSKs, the healer's token and Grafana's password"
    exported = project.export(stack)
    # A Hetzner gateway pair's token is read only by stacks that have one (config.conditional_secret_keys).
    values = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    unused = {f"{config.NAMESPACE}:{config.FAILOVER_TOKEN_KEY}"} - {f"{config.NAMESPACE}:{k}" for k in config.conditional_secret_keys(values)}
    for key, value in sentinels.items():
        marker = value if not value.startswith("{") else json.loads(value)["private_key"]
        assert key in unused or marker in json.dumps(revealed), f"{key}'s sentinel should reach the state (encrypted)"
        assert marker not in exported, f"{key} is in the exported state in plaintext"
    for value in generated:
        assert value not in exported, "a generated secret is in the exported state in plaintext"
