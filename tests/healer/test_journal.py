"""The journal: one repair in flight at most, interrupted repairs found at start-up, and the service killed mid-repair
(a real process, SIGKILL between "repair started" and "repair finished") does not replace the machine again."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from resinfra.healer.journal import Journal, RepairInFlightError
from resinfra.healer.observe import AuditLog
from resinfra.healer.policy import INTERRUPTED
from tests.healer.helpers import NOW, inventory, node_down, webhook

TOKEN = "journal-test-token-0123456789"


def test_a_second_repair_cannot_start_while_one_is_in_flight(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    first = journal.start_repair("a", "urn:a", "node-down", NOW)
    with pytest.raises(RepairInFlightError):
        journal.start_repair("b", "urn:b", "node-down", NOW + 1)
    journal.finish_repair(first, "succeeded", "", NOW + 60)
    journal.start_repair("b", "urn:b", "node-down", NOW + 61)


def test_an_unfinished_repair_is_interrupted_when_the_journal_is_reopened(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    journal.start_repair("a", "urn:a", "node-down", NOW)
    journal.record_episode("a", NOW - 100)
    journal.close()
    reopened = Journal(tmp_path / "j.sqlite")
    (interrupted,) = reopened.recover(NOW + 30)
    assert (interrupted.machine, interrupted.outcome) == ("a", INTERRUPTED)
    history = reopened.history(NOW - 3600)
    assert history.in_flight is None
    assert [(r.machine, r.finished, r.outcome) for r in history.repairs["a"]] == [("a", NOW + 30, INTERRUPTED)]
    assert history.episodes == {"a": [NOW - 100]}
    assert reopened.recover(NOW + 60) == [], "recovered once"


def test_first_seen_is_kept(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    assert journal.first_seen(["a"], NOW) == {"a": NOW}
    assert journal.first_seen(["a", "b"], NOW + 10) == {"a": NOW, "b": NOW + 10}


# The service as a real process.

WORKER, OTHER = "ri-dev-gcp-worker-1", "ri-dev-azure-worker-1"


def settings_file(tmp_path: Path) -> Path:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    policy = {"startupGraceSeconds": 0, "cooldownSeconds": 60, "maxBackoffSeconds": 60}
    settings = {
        "listenHost": "127.0.0.1",
        "listenPort": 0,
        "tokenFile": str(token),
        "journal": str(tmp_path / "journal.sqlite"),
        "auditLog": str(tmp_path / "audit.jsonl"),
        "policy": policy,
        "tickSeconds": 1,
    }
    path = tmp_path / "healer.json"
    path.write_text(json.dumps(settings))
    inv = [
        {"name": m.name, "site": m.site, "provider": m.provider, "role": m.role.value, "urn": m.urn, "privateIp": "10.0.0.1", "publicIp": ""}
        for m in inventory()
    ]
    (tmp_path / "inventory.json").write_text(json.dumps(inv))
    return path


class Service:
    """``resinfra heal`` with a slow local action, in its own process group (so the action dies with it)."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.calls = tmp_path / "calls"
        action = f"sh -c {shlex.quote(f'echo $RESINFRA_MACHINE >> {self.calls}; sleep 30')}"
        argv = [sys.executable, "-m", "resinfra.cli", "heal", "--settings", str(tmp_path / "healer.json"), "--inventory", str(tmp_path / "inventory.json")]
        self.process = subprocess.Popen(
            [*argv, "--action-command", action], stdout=subprocess.PIPE, stderr=(tmp_path / "healer.log").open("ab"), start_new_session=True, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert "listening on" in line, f"healer did not start: {(tmp_path / 'healer.log').read_text()}"
        self.port = int(line.rsplit(":", 1)[1])

    def post(self, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/alerts", data=json.dumps(body).encode(), headers={"Authorization": f"Bearer {TOKEN}"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def called(self) -> list[str]:
        return self.calls.read_text().split() if self.calls.exists() else []


def wait_for(check: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(what)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    settings_file(tmp_path)
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


def test_killed_mid_repair_then_restarted_does_not_replace_again(tmp_path: Path, services: list[Service]) -> None:
    down = webhook(node_down(WORKER, time.time() - 120))
    first = Service(tmp_path)
    services.append(first)
    first.post(down)
    wait_for(lambda: first.called() == [WORKER], "the repair started")
    first.kill()  # between "repair started" and "repair finished"

    second = Service(tmp_path)
    services.append(second)
    second.post(down)  # Alertmanager repeats the still-firing alert
    audit = AuditLog(tmp_path / "audit.jsonl")

    def refused() -> bool:
        return any(r.get("machine") == WORKER and r.get("reason") == "repair-interrupted" for r in audit.read())

    wait_for(refused, "the restarted healer refuses the interrupted machine")
    assert any(r["event"] == "repair-interrupted" for r in audit.read())
    # The service still works: another machine is repaired, the interrupted one is not.
    second.post(webhook(node_down(OTHER, time.time() - 60)))
    wait_for(lambda: OTHER in second.called(), "another machine is repaired")
    time.sleep(2)  # a few more ticks
    assert second.called().count(WORKER) == 1
    outcomes = [(m, o) for m, _, _, o in Journal(tmp_path / "journal.sqlite").repairs()]
    assert outcomes[0] == (WORKER, INTERRUPTED) and outcomes[1][0] == OTHER
