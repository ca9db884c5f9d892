"""Time the dev stack's mesh in network namespaces (root): gateways started -> every tunnel
up, and a gateway's charon killed and restarted -> pings flowing again.

Run: ``sudo uv run python bench/mesh.py``. Uses the swanctl.conf files ``resinfra render``
writes and Azure and GCP as the lab plays them (:mod:`resinfra.lab.clouds`: a charon per cloud
tunnel); userspace ESP (kernel-libipsec), so the figures are for configuration and IKE, not for
a kernel data path. Prints the median of 5 rounds.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from resinfra.lab import changes
from resinfra.lab.gateways import run_gateways, start_gateways
from resinfra.netlab import Lab, wait_for
from resinfra.netlab.lab import require_tools
from resinfra.offline import run_offline

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 5
RESTARTED = "hetzner"
NAME = os.environ.get("RESINFRA_BENCH_LAB_NAME", "rmb")
"""Overridable, so that two checkouts on one machine can run it at once."""


def dev_values() -> dict[str, object]:
    import yaml

    values = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    values["resinfra:sshPrivateKey"] = "bench-placeholder"
    return changes.with_lab_addresses(values)[0]


def main() -> int:
    missing = require_tools()
    if missing:
        print(f"missing: {', '.join(missing)} (see .ci/run)", file=sys.stderr)
        return 1
    run = run_offline(dev_values())
    gateways = run_gateways(run)
    restarted = next(g for g in gateways if g.site == RESTARTED)
    up_times, recovery_times = [], []
    charons = 0
    tunnels = sum(t["tunnels"] for t in run.outputs["tunnels"])
    for _ in range(ROUNDS):
        with tempfile.TemporaryDirectory(prefix="rm-bench-") as workdir, Lab(NAME, Path(workdir)) as lab:
            lab.build(g.lab_site for g in gateways)
            started = time.monotonic()
            start_gateways(lab, gateways)
            charons = len(lab.charon_keys())
            wait_for(lab.tunnels_up, 60, "every tunnel up")
            up_times.append(time.monotonic() - started)
            targets = [str(lab.sites[s].nodes[0].ip) for s in lab.sites if s != RESTARTED]
            lab.kill_charon(RESTARTED)
            restarted_at = time.monotonic()
            lab.start_charon(RESTARTED, restarted.swanctl)
            wait_for(
                lambda lab=lab, targets=targets: all(lab.ping(RESTARTED, 1, t, timeout=0.2) for t in targets),
                60,
                "pings from the restarted site",
                interval=0.01,
            )
            recovery_times.append(time.monotonic() - restarted_at)
    print(
        f"gateways started -> all {tunnels} tunnels up: median {statistics.median(up_times):.2f} s (min {min(up_times):.2f}, max {max(up_times):.2f}, {ROUNDS} rounds; from starting {charons} charons)"
    )
    print(
        f"{RESTARTED} charon killed and restarted -> pings to every other site: median {statistics.median(recovery_times):.2f} s (min {min(recovery_times):.2f}, max {max(recovery_times):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
