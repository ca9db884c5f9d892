"""Healing time on loopback: node_exporter killed -> the healer starts its repair -> NodeDown resolved at the healer.

Run (as root: the mesh probes use ICMP): ``uv run python bench/heal.py [--runs N] [--production]``.

Starts the dev stack's monitoring on loopback (real Prometheus, Alertmanager,
blackbox_exporter, one node_exporter per machine; ``resinfra.monitoring_local``) and the
real healer at its address (``resinfra.healer.local``), whose local action restarts the
killed exporter in place of ``pulumi up --replace``. Per run it kills one worker's
exporter and times, from the kill: NodeDown at the healer, the repair started, and the
"resolved" at the healer. Runs use different workers (the healer's backoff would hold a
machine repaired a moment ago). Prints median, min and max.

Default timings are the test ones (scrape and evaluation 1 s, ``for`` 3 s); ``--production``
uses the production timings (15 s scrapes, NodeDown after 60 s: about 100 s per run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import dev_stack, summary

from resinfra import stack
from resinfra.healer.inventory import parse_inventory
from resinfra.healer.local import running_healer
from resinfra.monitoring_local import LOCAL_TIMINGS, running
from resinfra.render.monitoring import AlertTimings

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description="Healing time on loopback: exporter killed -> repair started -> alert resolved.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--production", action="store_true", help="production timings (slow)")
    args = parser.parse_args()
    timings = AlertTimings() if args.production else LOCAL_TIMINGS
    run = dev_stack()
    plan = stack.monitoring_plan(run.config, run.result.sites)
    machines = parse_inventory(run.outputs["inventory"])
    timeout = 3 * (timings.scrape_interval + timings.node_down_for + timings.evaluation_interval) + 30
    fired, started, resolved = [], [], []
    with (
        tempfile.TemporaryDirectory(prefix="rh-heal-") as workdir,
        running(plan, Path(workdir), timings, healer_stand_in=False) as local,
        running_healer(local, machines, Path(workdir)) as healer,
    ):
        local.wait_for_all_targets(timeout=180)
        workers = [n for n in plan.nodes if n.role == "worker"]
        for i in range(args.runs):
            node = workers[i % len(workers)].node
            killed = time.time()
            local.kill_node(node)
            alert = healer.wait_for_event(
                lambda r, node=node: r["event"] == "alert" and r["alertname"] == "NodeDown" and r["status"] == "firing" and r["labels"].get("node") == node,
                killed,
                timeout,
            )
            repair = healer.wait_for_event(lambda r, node=node: r["event"] == "repair-started" and r["machine"] == node, killed, timeout)
            back = healer.wait_for_event(
                lambda r, node=node: r["event"] == "alert" and r["alertname"] == "NodeDown" and r["status"] == "resolved" and r["labels"].get("node") == node,
                killed,
                timeout,
            )
            fired.append(alert["ts"] - killed)
            started.append(repair["ts"] - killed)
            resolved.append(back["ts"] - killed)
            print(
                f"run {i + 1}: {node}: NodeDown {fired[-1]:.2f} s, repair started {started[-1]:.2f} s, resolved {resolved[-1]:.2f} s after the kill",
                flush=True,
            )
            local.wait_for_all_targets(timeout=180)
    print()
    print(f"timings: scrape {timings.scrape_interval} s, evaluation {timings.evaluation_interval} s, NodeDown for {timings.node_down_for} s")
    print(summary("kill -> NodeDown at the healer", fired, 36))
    print(summary("kill -> repair started", started, 36))
    print(summary("kill -> NodeDown resolved at the healer", resolved, 40))
    print(
        f"decision time (NodeDown at the healer -> repair started): median {statistics.median(s - f for s, f in zip(started, fired, strict=True)) * 1000:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
