"""The act layer: the exact update asked for (stack, backend, replace/target lists), the Automation API driven
against a stand-in ``pulumi`` executable that records every invocation, the refusal without a CLI, local actions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from resinfra import cli
from resinfra.addressing import Role
from resinfra.healer.act import (
    CommandActuator,
    Outcome,
    PulumiActuator,
    PulumiCliMissing,
    RepairResult,
    StackRef,
    UpRequest,
    automation_up,
    read_stack_inventory,
    require_pulumi_cli,
    up_request,
)
from resinfra.healer.inventory import Machine
from tests.conftest import ROOT

URN = "urn:pulumi:dev::resinfra::resinfra:sites:GcpSite$gcp:compute/instance:Instance::ri-dev-gcp-worker-1"
MACHINE = Machine("ri-dev-gcp-worker-1", "gcp", "gcp", Role.WORKER, URN)
REF = StackRef("dev", "/var/lib/resinfra-healer/project", "gs://ri-dev-state", {"HCLOUD_TOKEN": "token-sentinel"})


def test_the_update_replaces_and_targets_exactly_the_machine() -> None:
    request = up_request(REF, MACHINE, "node-down")
    assert request.stack == "dev" and request.work_dir == "/var/lib/resinfra-healer/project"
    assert request.env["PULUMI_BACKEND_URL"] == "gs://ri-dev-state" and request.env["HCLOUD_TOKEN"] == "token-sentinel"
    assert request.replace == (URN,) and request.target == (URN,) and request.target_dependents is True
    assert request.config == {"resinfra:pushVia": "private"}
    assert "ri-dev-gcp-worker-1" in request.message and "node-down" in request.message


def test_the_actuator_hands_that_request_to_the_adapter(tmp_path: Path) -> None:
    (tmp_path / "pulumi").write_text("#!/bin/sh\n")
    (tmp_path / "pulumi").chmod(0o755)
    seen: list[tuple[UpRequest, float]] = []
    actuator = PulumiActuator(REF, run=lambda r, t: seen.append((r, t)) or RepairResult(Outcome.SUCCEEDED), cli_path=str(tmp_path))
    assert actuator.replace(MACHINE, "node-down", 1800).outcome is Outcome.SUCCEEDED
    assert seen == [(up_request(REF, MACHINE, "node-down"), 1800)]


def test_no_cli_no_actuator(tmp_path: Path) -> None:
    with pytest.raises(PulumiCliMissing, match="pulumi CLI is not on PATH"):
        PulumiActuator(REF, cli_path=str(tmp_path))
    with pytest.raises(PulumiCliMissing):
        require_pulumi_cli(str(tmp_path))


def test_resinfra_heal_refuses_to_start_without_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cli.main(["heal", "--settings", str(tmp_path / "healer.json")]) == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "pulumi CLI is not on PATH" in err and "--action-command" in err


FAKE_PULUMI = """#!{python}
# Stands in for the pulumi CLI: records each invocation, answers like the CLI does.
import json, os, sys
args = [a for a in sys.argv[1:] if a != "--non-interactive"]
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps({{"argv": args, "cwd": os.getcwd(), "backend": os.environ.get("PULUMI_BACKEND_URL"), "hcloud": os.environ.get("HCLOUD_TOKEN")}}) + "\\n")
if args[:1] == ["version"]:
    print("v3.205.0")
elif args[:1] == ["up"] and os.environ.get("FAKE_PULUMI_UP") == "locked":
    print("error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete the lock file", file=sys.stderr)
    sys.exit(255)
elif args[:1] == ["up"] and os.environ.get("FAKE_PULUMI_UP") == "fail":
    print("error: update failed", file=sys.stderr)
    sys.exit(255)
elif args[:2] == ["stack", "history"]:
    print(json.dumps([{{"kind": "update", "startTime": "2026-11-26T07:00:00.000Z", "message": "", "environment": {{}}, "config": {{}},
        "result": "succeeded", "endTime": "2026-11-26T07:01:00.000Z", "version": 7, "resourceChanges": {{"replace": 1, "same": 40}}}}]))
elif args[:2] == ["stack", "output"]:
    print(json.dumps({{"inventory": json.load(open(os.environ["FAKE_PULUMI_INVENTORY"]))}}))
elif args[:2] == ["stack", "export"]:
    print(json.dumps({{"version": 3, "deployment": {{"resources": [{{"urn": "{urn}", "created": "2026-11-26T06:00:00.123456789Z"}}]}}}}))
"""


@pytest.fixture
def fake_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "pulumi"
    script.write_text(FAKE_PULUMI.format(python=sys.executable, urn=URN))
    script.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps([{"name": MACHINE.name, "site": "gcp", "provider": "gcp", "role": "worker", "urn": URN, "privateIp": "10.10.16.10"}]))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(log))
    monkeypatch.setenv("FAKE_PULUMI_INVENTORY", str(inventory))
    return log


def calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def project(tmp_path: Path) -> StackRef:
    work = tmp_path / "project"
    work.mkdir()
    (work / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text())
    return StackRef("dev", str(work), "gs://ri-dev-state", {"HCLOUD_TOKEN": "token-sentinel"})


def test_the_automation_api_runs_pulumi_up_with_replace_and_target(fake_cli: Path, tmp_path: Path) -> None:
    ref = project(tmp_path)
    result = automation_up(up_request(ref, MACHINE, "node-down"), timeout=60)
    assert result.outcome is Outcome.SUCCEEDED, result.detail
    invocations = calls(fake_cli)
    (up,) = [c for c in invocations if c["argv"][0] == "up"]
    argv = up["argv"]
    assert argv[argv.index("--replace") + 1] == URN and argv[argv.index("--target") + 1] == URN and "--target-dependents" in argv
    assert argv[argv.index("--stack") + 1] == "dev" and "--yes" in argv and "--skip-preview" in argv
    assert argv.count("--replace") == 1 and argv.count("--target") == 1, "the one machine only"
    assert up["cwd"] == ref.project_dir and up["backend"] == "gs://ri-dev-state" and up["hcloud"] == "token-sentinel"
    # Before the update, the healer's copy of the stack config pushes over private addresses.
    (config,) = [c for c in invocations if c["argv"][:2] == ["config", "set"]]
    assert config["argv"][2] == "resinfra:pushVia" and config["argv"][-1] == "private"
    assert invocations.index(config) < invocations.index(up)


@pytest.mark.parametrize(("mode", "outcome"), [("locked", Outcome.LOCKED), ("fail", Outcome.FAILED)])
def test_a_locked_stack_is_reported_as_such(fake_cli: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, outcome: Outcome) -> None:
    monkeypatch.setenv("FAKE_PULUMI_UP", mode)
    result = automation_up(up_request(project(tmp_path), MACHINE, "node-down"), timeout=60)
    assert result.outcome is outcome


def test_the_inventory_and_creation_times_come_from_the_stack(fake_cli: Path, tmp_path: Path) -> None:
    machines, created = read_stack_inventory(project(tmp_path))
    assert [m.name for m in machines] == [MACHINE.name]
    assert created == {URN: pytest.approx(1795672800.123457)}
    assert [c["argv"][:2] for c in calls(fake_cli) if c["argv"][0] == "stack"][-1] == ["stack", "export"]


def test_a_local_command_gets_the_machine_in_its_environment(tmp_path: Path) -> None:
    out = tmp_path / "env"
    action = CommandActuator(["sh", "-c", f'echo "$RESINFRA_MACHINE $RESINFRA_SITE $RESINFRA_ROLE $RESINFRA_URN" > {out}'])
    assert action.replace(MACHINE, "node-down", 10).outcome is Outcome.SUCCEEDED
    assert out.read_text().split() == [MACHINE.name, "gcp", "worker", URN]
    assert CommandActuator(["sh", "-c", "exit 3"]).replace(MACHINE, "node-down", 10).outcome is Outcome.FAILED
    assert CommandActuator(["sleep", "5"]).replace(MACHINE, "node-down", 0.2).outcome is Outcome.TIMEOUT


def test_the_update_runs_in_a_process_group_of_its_own(fake_cli: Path, tmp_path: Path) -> None:
    """The default actuator's update: ``python -m resinfra.healer.act`` on a leash, the request (with credentials) on stdin."""
    from resinfra.healer import leash
    from resinfra.healer.act import automation_up_leashed

    groups: list[int] = []
    with leash.on_spawn(lambda pgid, _: groups.append(pgid)):
        result = automation_up_leashed(up_request(project(tmp_path), MACHINE, "node-down"), timeout=60)
    assert result.outcome is Outcome.SUCCEEDED, result.detail
    (up,) = [c for c in calls(fake_cli) if c["argv"][0] == "up"]
    assert up["hcloud"] == "token-sentinel" and up["argv"][up["argv"].index("--replace") + 1] == URN
    assert len(groups) == 1 and groups[0] != os.getpgid(0), "not the healer's own group"


def test_a_stopped_leash_takes_its_whole_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild"
    action = CommandActuator(["sh", "-c", f"(sleep 30; touch {marker}) & sleep 30"], stop_grace=1)
    began = time.monotonic()
    assert action.replace(MACHINE, "node-down", 0.5).outcome is Outcome.TIMEOUT
    assert time.monotonic() - began < 10
    time.sleep(0.5)
    assert not marker.exists()
    assert subprocess.run(["pgrep", "-f", f"touch {marker}"], capture_output=True, check=False).returncode == 1, "the grandchild is gone too"
