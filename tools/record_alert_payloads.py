"""Record real Alertmanager webhook payloads (version 4) for the healer's receiver tests.

Run as root (the mesh probes use ICMP): ``uv run python tools/record_alert_payloads.py``.
Starts the dev stack's monitoring on loopback (real Prometheus, Alertmanager, exporters;
``resinfra.monitoring_local``), kills one worker's node_exporter (NodeDown firing, then
resolved after a restart) and every exporter of one site (SiteUnreachable firing, then
resolved), and writes each payload the stand-in receiver got, as it got it, to
``tests/healer/fixtures/alertmanager/``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from resinfra import stack
from resinfra.monitoring_local import nodes_of, running
from resinfra.offline import run_offline

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/healer/fixtures/alertmanager"
TIMEOUT = 60.0


def wait_payload(local: Any, since: float, alertname: str, status: str, **labels: str) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for delivery in list(local.webhook.deliveries):
            if delivery.received < since:
                continue
            for alert in delivery.payload.get("alerts", []):
                if alert["labels"].get("alertname") == alertname and alert["status"] == status and all(alert["labels"].get(k) == v for k, v in labels.items()):
                    return delivery.payload
        time.sleep(0.1)
    raise TimeoutError(f"no {alertname} {status} {labels}")


def main() -> int:
    values: dict[str, Any] = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    run = run_offline(values)
    plan = stack.monitoring_plan(run.config, run.result.sites)
    OUT.mkdir(parents=True, exist_ok=True)
    recorded: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rh-record-") as workdir, running(plan, Path(workdir)) as local:
        local.wait_for_all_targets(timeout=120)
        worker = nodes_of(plan, "azure")[0]
        killed = local.kill_node(worker.node)
        recorded["node-down-firing"] = wait_payload(local, killed, "NodeDown", "firing", node=worker.node)
        local.start_node(worker.node)
        recorded["node-down-resolved"] = wait_payload(local, time.monotonic(), "NodeDown", "resolved", node=worker.node)
        local.wait_for_all_targets(timeout=120)
        started = min(local.kill_node(n.node) for n in nodes_of(plan, "gcp"))
        recorded["site-unreachable-firing"] = wait_payload(local, started, "SiteUnreachable", "firing", site="gcp")
        for n in nodes_of(plan, "gcp"):
            local.start_node(n.node)
        recorded["site-unreachable-resolved"] = wait_payload(local, time.monotonic(), "SiteUnreachable", "resolved", site="gcp")
    for name, payload in recorded.items():
        (OUT / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        print(f"wrote {OUT / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
