"""Detection time: node_exporter killed -> NodeDown delivered to the healer's webhook.

Run (as root: the mesh probes use ICMP): ``uv run python bench/detect.py [--runs N] [--production]``.

Starts the dev stack's monitoring on loopback (real Prometheus, Alertmanager,
blackbox_exporter, one node_exporter per machine; ``resinfra.monitoring_local``), then
per run kills one worker's exporter and times the webhook delivery of its NodeDown, then
restarts it and times the "resolved". Finally kills every exporter of one site and times
SiteUnreachable. Prints median, min and max.

Default timings are the test ones (scrape and evaluation 1 s, ``for`` 3 s); ``--production``
uses the production timings (scrape 15 s, NodeDown after 60 s: about 80 s per run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from common import dev_stack, summary

from resinfra import stack
from resinfra.monitoring_local import LOCAL_TIMINGS, nodes_of, running, webhook_alert
from resinfra.render.monitoring import AlertTimings

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description="Detection time on loopback: node_exporter killed -> NodeDown at the webhook.")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--production", action="store_true", help="production timings (slow)")
    args = parser.parse_args()
    timings = AlertTimings() if args.production else LOCAL_TIMINGS
    run = dev_stack()
    plan = stack.monitoring_plan(run.config, run.result.sites)
    timeout = 3 * (timings.scrape_interval + timings.node_down_for + timings.evaluation_interval) + 10
    detect, resolve = [], []
    with tempfile.TemporaryDirectory(prefix="rt-detect-") as workdir, running(plan, Path(workdir), timings) as local:
        local.wait_for_all_targets(timeout=120)
        workers = [n for n in plan.nodes if n.role == "worker"]
        for i in range(args.runs):
            node = workers[i % len(workers)]
            killed = local.kill_node(node.node)
            fired = local.webhook.wait_for(webhook_alert("NodeDown", "firing", node=node.node, site=node.site), killed, timeout)
            local.start_node(node.node)
            restarted = time.monotonic()
            resolved = local.webhook.wait_for(webhook_alert("NodeDown", "resolved", node=node.node), restarted, timeout)
            detect.append(fired - killed)
            resolve.append(resolved - restarted)
            print(f"run {i + 1}: {node.node}: NodeDown after {fired - killed:.2f} s, resolved {resolved - restarted:.2f} s after restart", flush=True)
            local.wait_for_all_targets(timeout=120)
        site = "gcp"
        started = min(local.kill_node(n.node) for n in nodes_of(plan, site))
        unreachable = local.webhook.wait_for(webhook_alert("SiteUnreachable", "firing", site=site), started, timeout)
    print()
    print(
        f"timings: scrape {timings.scrape_interval} s, evaluation {timings.evaluation_interval} s, NodeDown for {timings.node_down_for} s, "
        f"SiteUnreachable for {timings.site_unreachable_for} s, healer group_wait {timings.healer_group_wait} s"
    )
    print(summary("kill -> NodeDown at webhook", detect))
    print(summary("restart -> resolved at webhook", resolve))
    print(f"{'kill site -> SiteUnreachable':32s} {unreachable - started:6.2f} s")
    bound = timings.scrape_interval + timings.node_down_for + timings.evaluation_interval + timings.healer_group_wait
    print(f"bound from the timings: NodeDown arrives between {timings.node_down_for} s and about {bound} s after a machine dies")
    return 0


if __name__ == "__main__":
    sys.exit(main())
