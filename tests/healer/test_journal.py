"""The journal: one repair in flight at most, interrupted repairs found at start-up, and the service killed mid-repair
(a real process, SIGKILL between "repair started" and "repair finished") does not replace the machine again."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from resinfra.healer.journal import Journal, RepairInFlightError
from resinfra.healer.observe import AuditLog
from resinfra.healer.policy import INTERRUPTED
from tests.healer.helpers import NOW, node_down, webhook
from tests.healer.process import Service, wait_for, write_settings


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


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().split() if path.exists() else []


def slow_action(tmp_path: Path) -> str:
    calls_file = tmp_path / "calls"
    return f"sh -c {shlex.quote(f'echo $RESINFRA_MACHINE >> {calls_file}; sleep 30')}"


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[Service]]:
    write_settings(tmp_path)
    started: list[Service] = []
    yield started
    for service in started:
        service.end()


def test_killed_mid_repair_then_restarted_does_not_replace_again(tmp_path: Path, services: list[Service]) -> None:
    down = webhook(node_down(WORKER, time.time() - 120))
    first = Service(tmp_path, slow_action(tmp_path))
    services.append(first)
    first.post(down)
    wait_for(lambda: calls(tmp_path) == [WORKER], "the repair started")
    first.kill()  # between "repair started" and "repair finished"

    second = Service(tmp_path, slow_action(tmp_path))
    services.append(second)
    second.post(down)  # Alertmanager repeats the still-firing alert
    audit = AuditLog(tmp_path / "audit.jsonl")

    def refused() -> bool:
        return any(r.get("machine") == WORKER and r.get("reason") == "repair-interrupted" for r in audit.read())

    wait_for(refused, "the restarted healer refuses the interrupted machine")
    assert any(r["event"] == "repair-interrupted" for r in audit.read())
    # The service still works: another machine is repaired, the interrupted one is not.
    second.post(webhook(node_down(OTHER, time.time() - 60)))
    wait_for(lambda: OTHER in calls(tmp_path), "another machine is repaired")
    time.sleep(2)  # a few more ticks
    assert calls(tmp_path).count(WORKER) == 1
    outcomes = [(m, o) for m, _, _, o in Journal(tmp_path / "journal.sqlite").repairs()]
    assert outcomes[0] == (WORKER, INTERRUPTED) and outcomes[1][0] == OTHER
