"""``resinfra heal simulate``: the policy replayed on the dev stack's inventory and recorded payloads; nothing is done."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from resinfra import cli
from resinfra.healer.alerts import format_time, parse_time
from resinfra.offline import OfflineRun
from tests.conftest import ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "alertmanager"


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def files(tmp_path: Path, run: OfflineRun) -> tuple[Path, Path]:
    inventory = tmp_path / "inventory.json"
    # What `pulumi stack output inventory --json` prints.
    inventory.write_text(json.dumps(run.outputs["inventory"], indent=2))
    down = recorded("node-down-firing")
    t0 = parse_time(down["alerts"][0]["startsAt"]) + 1
    arrivals = [
        {"receivedAt": format_time(t0), "payload": down},
        # Alertmanager's repeat while the (simulated, 300 s) repair's backoff runs.
        {"receivedAt": format_time(t0 + 400), "payload": down},
        {"receivedAt": format_time(t0 + 500), "payload": recorded("node-down-resolved")},
        {"receivedAt": format_time(t0 + 600), "payload": recorded("site-unreachable-firing")},
    ]
    alerts = tmp_path / "alerts.json"
    alerts.write_text(json.dumps(arrivals))
    return inventory, alerts


def test_simulate_prints_every_decision_with_its_reason(tmp_path: Path, offline_runs: dict[str, OfflineRun], capsys: pytest.CaptureFixture[str]) -> None:
    inventory, alerts = files(tmp_path, offline_runs["all-four"])
    assert cli.main(["heal", "simulate", "--inventory", str(inventory), "--alerts", str(alerts)]) == 0
    out = capsys.readouterr().out
    lines = [line.split() for line in out.splitlines() if line.startswith("    ")]
    decisions = [(w[0], w[1], w[2]) for w in lines if w[0] != "(nothing"]
    assert decisions[0] == ("wait", "ri-dev-azure-worker-1", "settling"), "a NodeDown settles before anything is replaced"
    assert decisions[1] == ("replace", "ri-dev-azure-worker-1", "node-down")
    assert "re-check: ri-dev-azure-worker-1 settling ends" in out
    assert ("wait", "ri-dev-azure-worker-1", "backoff") in decisions
    assert decisions[-1][:2] == ("refuse", "site") and "site-partitioned" in out
    assert "simulated repair of ri-dev-azure-worker-1 finished" in out


def test_simulate_json_and_the_stack_policy(tmp_path: Path, offline_runs: dict[str, OfflineRun], capsys: pytest.CaptureFixture[str]) -> None:
    inventory, alerts = files(tmp_path, offline_runs["all-four"])
    stack = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    stack["config"]["resinfra:healer"] = {**stack["config"].get("resinfra:healer", {}), "dryRun": True}
    config_file = tmp_path / "Pulumi.review.yaml"
    config_file.write_text(yaml.safe_dump(stack))
    assert cli.main(["heal", "simulate", "--inventory", str(inventory), "--alerts", str(alerts), "--json", "--config-file", str(config_file)]) == 0
    steps = json.loads(capsys.readouterr().out)
    assert [d["kind"] for d in steps[0]["decisions"]] == ["wait"] and steps[1]["cause"].startswith("re-check")
    assert [d["kind"] for d in steps[1]["decisions"]] == ["would-replace"], "a policy change shows before it is deployed"
    assert {"time", "cause", "decisions"} == set(steps[1]) and steps[1]["decisions"][0]["urn"].endswith("ri-dev-azure-worker-1")


def test_simulate_refuses_bad_files(tmp_path: Path, offline_runs: dict[str, OfflineRun], capsys: pytest.CaptureFixture[str]) -> None:
    inventory, alerts = files(tmp_path, offline_runs["all-four"])
    arrivals = json.loads(alerts.read_text())
    alerts.write_text(json.dumps(list(reversed(arrivals))))
    assert cli.main(["heal", "simulate", "--inventory", str(inventory), "--alerts", str(alerts)]) == 2
    assert "time order" in capsys.readouterr().err
    inventory.write_text(json.dumps({"inventory": []}))
    assert cli.main(["heal", "simulate", "--inventory", str(inventory), "--alerts", str(alerts)]) == 2
    assert "pulumi stack output inventory --json" in capsys.readouterr().err


def test_simulate_names_the_file_that_is_not_json(tmp_path: Path, offline_runs: dict[str, OfflineRun], capsys: pytest.CaptureFixture[str]) -> None:
    inventory, alerts = files(tmp_path, offline_runs["all-four"])
    alerts.write_text("- not: json\n")
    assert cli.main(["heal", "simulate", "--inventory", str(inventory), "--alerts", str(alerts)]) == 2
    err = capsys.readouterr().err
    assert f"--alerts {alerts}: not JSON" in err and "line 1" in err, err
    alerts.write_text("[]")
    inventory.write_text("{oops")
    assert cli.main(["heal", "simulate", "--inventory", str(inventory), "--alerts", str(alerts)]) == 2
    assert f"--inventory {inventory}: not JSON" in capsys.readouterr().err


def test_simulate_names_the_entry_whose_payload_is_wrong(tmp_path: Path, offline_runs: dict[str, OfflineRun], capsys: pytest.CaptureFixture[str]) -> None:
    inventory, alerts = files(tmp_path, offline_runs["all-four"])
    arrivals = json.loads(alerts.read_text())
    del arrivals[2]["payload"]["alerts"]
    alerts.write_text(json.dumps(arrivals))
    assert cli.main(["heal", "simulate", "--inventory", str(inventory), "--alerts", str(alerts)]) == 2
    err = capsys.readouterr().err
    assert f"--alerts {alerts}: entry 2 (receivedAt {arrivals[2]['receivedAt']}): payload: alerts is not a list" in err, err
    assert "simulated" not in capsys.readouterr().out, "nothing is replayed from a file with a bad entry"
