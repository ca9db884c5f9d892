"""The healer's journal on disk (SQLite): repairs started and finished, down episodes, first sightings.

A repair is written as started (and committed) before the Automation API is called, and
as finished after it returns. A healer that finds a started, unfinished repair when it
opens the journal was killed mid-repair: it marks that repair ``interrupted`` and the
policy refuses to start another replacement of the machine during the same outage.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from pathlib import Path

from resinfra.healer.policy import INTERRUPTED, History, Repair

SCHEMA = """
CREATE TABLE IF NOT EXISTS repairs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    machine TEXT NOT NULL,
    urn TEXT NOT NULL,
    reason TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    outcome TEXT,
    detail TEXT NOT NULL DEFAULT ''
);
-- At most one repair without an end: one update of the stack at a time, enforced by the database.
CREATE UNIQUE INDEX IF NOT EXISTS one_repair_in_flight ON repairs ((finished IS NULL)) WHERE finished IS NULL;
CREATE TABLE IF NOT EXISTS episodes (
    machine TEXT NOT NULL,
    started REAL NOT NULL,
    PRIMARY KEY (machine, started)
);
CREATE TABLE IF NOT EXISTS first_seen (
    machine TEXT PRIMARY KEY,
    seen REAL NOT NULL
);
"""


class RepairInFlightError(RuntimeError):
    """A repair was asked to start while another one has not finished."""


class Journal:
    """The journal at ``path`` (created when missing). Thread-safe; every write is committed at once."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # autocommit off, explicit transactions; check_same_thread off: the lock serialises access.
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def recover(self, now: float) -> list[Repair]:
        """Mark repairs a previous process left unfinished as interrupted; returns them."""
        with self._lock:
            rows = self._db.execute("SELECT machine, started FROM repairs WHERE finished IS NULL").fetchall()
            self._db.execute(
                "UPDATE repairs SET finished = ?, outcome = ?, detail = 'the healer stopped during the repair' WHERE finished IS NULL", (now, INTERRUPTED)
            )
        return [Repair(machine, started, now, INTERRUPTED) for machine, started in rows]

    def start_repair(self, machine: str, urn: str, reason: str, now: float) -> int:
        """Record a repair as started (durably) and return its id; refuses a second one in flight."""
        with self._lock:
            try:
                cursor = self._db.execute("INSERT INTO repairs (machine, urn, reason, started) VALUES (?, ?, ?, ?)", (machine, urn, reason, now))
            except sqlite3.IntegrityError:
                raise RepairInFlightError(f"a repair is already in flight; not starting one of {machine}") from None
            return int(cursor.lastrowid or 0)

    def finish_repair(self, repair_id: int, outcome: str, detail: str, now: float) -> None:
        with self._lock:
            self._db.execute("UPDATE repairs SET finished = ?, outcome = ?, detail = ? WHERE id = ?", (now, outcome, detail[-2000:], repair_id))

    def record_episode(self, machine: str, started: float) -> None:
        """A NodeDown episode of ``machine`` that began at ``started`` (idempotent)."""
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO episodes (machine, started) VALUES (?, ?)", (machine, started))

    def first_seen(self, machines: list[str], now: float) -> dict[str, float]:
        """When each machine was first seen (recording ``now`` for new ones)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR IGNORE INTO first_seen (machine, seen) VALUES (?, ?)", [(m, now) for m in machines])
            self._db.execute("COMMIT")
            return dict(self._db.execute("SELECT machine, seen FROM first_seen").fetchall())

    def history(self, since: float) -> History:
        """Repairs and episodes from ``since`` on, plus any repair still in flight."""
        repairs: dict[str, list[Repair]] = defaultdict(list)
        episodes: dict[str, list[float]] = defaultdict(list)
        with self._lock:
            rows = self._db.execute(
                "SELECT machine, started, finished, outcome FROM repairs WHERE started >= ? OR finished IS NULL ORDER BY started", (since,)
            ).fetchall()
            for machine, started, finished, outcome in rows:
                repairs[machine].append(Repair(machine, started, finished, outcome))
            for machine, started in self._db.execute("SELECT machine, started FROM episodes WHERE started >= ? ORDER BY started", (since,)):
                episodes[machine].append(started)
        return History(dict(repairs), dict(episodes))

    def repairs(self) -> list[tuple[str, float, float | None, str | None]]:
        """Every repair: (machine, started, finished, outcome), oldest first."""
        with self._lock:
            return list(self._db.execute("SELECT machine, started, finished, outcome FROM repairs ORDER BY id").fetchall())
