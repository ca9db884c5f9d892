"""The lab (root): twenty partitions in a row, alternating between two sites, replace nothing.

A partition is where the healer's settle window earns its keep: the site's nodes stop
answering one scrape at a time, so a NodeDown can reach the healer a moment before the
site's SiteUnreachable. Each round cuts a site's uplink through ``resinfra lab partition``,
waits for the healer to refuse the site, heals it and waits for every target to be back.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from resinfra.addressing import Role
from resinfra.healer.observe import audit_alert
from resinfra.lab.observe import audit_events, targets_healthy, tunnels_up, wait_for_event
from resinfra.lab.preconditions import missing_tools, root_of
from resinfra.lab.state import LabState, load
from resinfra.netlab import wait_for
from tests.conftest import lab_name_for_tests, require_root
from tests.lab import running
from tests.lab.test_lab_end_to_end import TIMEOUT

NAME = lab_name_for_tests("RESINFRA_TEST_LAB_NAME", "rlt", "x")
ROUNDS = 20


def lab_command(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return running.lab_command(NAME, *args, timeout=timeout)


@pytest.fixture(scope="module")
def lab() -> Iterator[LabState]:
    require_root()
    missing = missing_tools()
    if missing:
        pytest.skip(f"the lab needs {', '.join(missing)} (see .ci/run)")
    lab_command("down")
    up = lab_command("up", "--workers", "1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield load(root_of(NAME))
    finally:
        lab_command("down")


def state() -> LabState:
    return load(root_of(NAME))


def test_twenty_partitions_in_a_row_replace_nothing(lab: LabState) -> None:
    tooling = next(m.site for m in lab.machines.values() if m.role is Role.TOOLING)
    # One site with a managed (emulated) gateway and one with a strongSwan gateway VM, neither the tooling VM's.
    emulated = next(s.key for s in lab.sites if s.swanctl_emulated and s.key != tooling)
    strongswan = next(s.key for s in lab.sites if not s.swanctl_emulated and s.key != tooling)
    began = time.time()
    rounds = []
    for i in range(ROUNDS):
        site = (emulated, strongswan)[i % 2]
        wait_for(lambda: tunnels_up(state().netlab()) and targets_healthy(state()), TIMEOUT, "every tunnel and target up", interval=0.5)
        cut = time.time()
        assert lab_command("partition", site).returncode == 0
        wait_for_event(lab, lambda e, site=site: e["event"] == "decision" and e["site"] == site and e["reason"] == "site-partitioned", cut, TIMEOUT)
        healed = time.time()
        assert lab_command("heal", site).returncode == 0
        wait_for_event(lab, audit_alert("SiteUnreachable", "resolved", site=site), healed, TIMEOUT)
        rounds.append(time.time() - cut)
    wait_for(lambda: tunnels_up(state().netlab()) and targets_healthy(state()), TIMEOUT, "every tunnel and target up", interval=0.5)
    time.sleep(3)  # past the settle window after the last heal
    events = [e for e in audit_events(lab) if e["ts"] >= began]
    started = [e["machine"] for e in events if e["event"] == "repair-started"]
    node_downs = [e for e in events if e["event"] == "alert" and e["alertname"] == "NodeDown" and e["status"] == "firing"]
    settled = [e for e in events if e["event"] == "decision" and e["reason"] == "settling"]
    print(
        f"\n{ROUNDS} partitions ({emulated}, {strongswan} alternating) in {time.time() - began:.0f} s "
        f"(per round: median {sorted(rounds)[len(rounds) // 2]:.1f} s, max {max(rounds):.1f} s): "
        f"{len(started)} replacements; {len(node_downs)} NodeDown alerts reached the healer, {len(settled)} settle decisions"
    )
    assert started == [], f"a partition replaced {started}"
