"""``lab status`` as a user reads it, from a report (no root): whole decision texts, a partition's tunnels before
dead-peer detection notices, and each command's own reason when not run as root."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from resinfra.lab import preconditions, status
from resinfra.lab.cli import main as lab_main
from resinfra.lab.state import LabStateError, changing

LONG_DETAIL = (
    "a repair started 2026-12-01T20:00:00Z was cut off by a healer restart; its outcome is unknown: check the stack, "
    "then replace by hand or wait for the machine to come back"
)


def report(**changes: Any) -> dict[str, Any]:
    """A status report of a running two-site lab, as :func:`resinfra.lab.status.status_report` returns it."""
    base: dict[str, Any] = {
        "name": "flab",
        "stack": "dev",
        "configFile": "Pulumi.dev.yaml",
        "workers": 1,
        "upSeconds": 60.0,
        "ui": {"prometheus": "http://127.0.0.1:1/"},
        "partitioned": [],
        "partitionedSeconds": {},
        "failedInstances": {},
        "gatewayPairs": {},
        "tunnels": {"hetzner": {"hetzner-proxmox": True}, "proxmox": {"hetzner-proxmox": True}},
        "tunnelSites": {"hetzner": "hetzner", "proxmox": "proxmox"},
        "expectedTunnels": 1,
        "processes": {"healer": True},
        "deadMachines": [],
        "targets": [],
        "alerts": [],
        "healer": [],
    }
    return {**base, **changes}


def test_a_decision_is_printed_whole() -> None:
    event = {"time": "2026-12-01T20:01:00Z", "event": "decision", "machine": "ri-dev-hetzner-worker-1", "kind": "refuse", "reason": "repair-interrupted"}
    text = status.format_status(report(healer=[{**event, "detail": LONG_DETAIL}]))
    printed = " ".join(text.split("Healer (", 1)[1].split("Processes:", 1)[0].split())
    assert " ".join(LONG_DETAIL.split()) in printed, printed
    assert all(len(line) <= 160 for line in text.splitlines()), "long details wrap onto the next lines"


def test_a_fresh_partition_says_dead_peer_detection_is_pending() -> None:
    text = status.format_status(report(partitioned=["proxmox"], partitionedSeconds={"proxmox": 5.0}))
    assert "proxmox" in text and "dead-peer detection" in text, text
    seconds = status.dead_peer_seconds()
    assert 15 < seconds < 30 and f"about {seconds:.0f} s after the cut" in text, text
    later = status.format_status(report(partitioned=["proxmox"], partitionedSeconds={"proxmox": seconds + 5}))
    assert "dead-peer detection" not in later


COMMANDS: list[tuple[list[str], str]] = [
    (["up"], "creates network namespaces"),
    (["status"], "reads the lab's state"),
    (["kill", "ri-dev-gcp-worker-1"], "kills the machine's processes"),
    (["replace", "ri-dev-gcp-worker-1"], "re-creates the machine's namespace"),
    (["partition", "gcp"], "changes links inside the lab's namespaces"),
    (["heal", "gcp"], "changes links inside the lab's namespaces"),
    (["kill-instance", "azure", "0"], "changes links inside the lab's namespaces"),
    (["revive-instance", "azure", "0"], "starts processes in the lab's namespaces"),
    (["restart-healer"], "signals the healer"),
    (["down"], "stops the lab's processes and deletes its namespaces"),
]


@pytest.mark.parametrize(("args", "words"), COMMANDS, ids=[c[0][0] for c in COMMANDS])
def test_each_command_says_why_it_needs_root(args: list[str], words: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(preconditions.os, "geteuid", lambda: 1000)
    assert lab_main([*args, "--name", "nobody"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"resinfra lab {args[0]} needs root") and words in err, err
    assert "sudo" not in err and re.search(r"as root", err), err


def test_a_command_on_a_lab_that_is_not_up_leaves_nothing_behind(tmp_path: Path) -> None:
    # `lab partition gcp --name typo` must say there is no such lab, not create /var/lib/resinfra-lab/typo.
    root = tmp_path / "typo"
    with pytest.raises(LabStateError, match="no lab is up"), changing(root):
        pass
    assert not root.exists()
