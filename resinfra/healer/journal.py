"""The healer's journal on disk (SQLite): repairs started and finished, down episodes, first sightings, failures.

A repair is written as started (and committed) before the action runs, and as finished
after it returns. A healer that finds a started, unfinished repair when it opens the
journal was killed mid-repair: it marks that repair ``interrupted`` and the policy refuses
to start another replacement of the machine during the same outage.

The journal is what prevents a double replacement, so it is opened only when it is whole:
``PRAGMA quick_check`` passes, its ``meta`` row (schema version, id, creation time, write
generation) is there, and it is not behind its *seal*, a small file beside it rewritten
after every write with the journal's id and generation. A journal that is missing or empty
where a seal says one existed, truncated, corrupt, or behind its seal (its WAL removed, an
older copy restored) raises :class:`JournalDamaged`; the service then refuses to start until
an operator runs ``resinfra heal acknowledge-journal``. With neither journal nor seal, it is
a fresh install and starts at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sqlite3
import threading
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from resinfra.healer.policy import INTERRUPTED, History, Repair

SCHEMA_VERSION = 2
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    version INTEGER NOT NULL,
    id TEXT NOT NULL,
    created REAL NOT NULL,
    generation INTEGER NOT NULL
);
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
CREATE TABLE IF NOT EXISTS failures (
    time REAL NOT NULL,
    component TEXT NOT NULL,
    message TEXT NOT NULL
);
"""
ACTION_COLUMNS = ("action_pgid INTEGER", "action_start INTEGER")
"""Added to ``repairs`` in version 2: the action's process group and its leader's start time (``/proc/PID/stat``),
so a restarted healer recognises an action of its predecessor that still runs."""
SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file (https://www.sqlite.org/fileformat.html, "The Database Header")."""
CHECKPOINT_EVERY = 100
"""Writes between checkpoints (and one at every start): between them the latest writes live in the WAL only."""
ACKNOWLEDGE_COMMAND = "resinfra heal acknowledge-journal --settings /etc/resinfra-healer/healer.json"


class RepairInFlightError(RuntimeError):
    """A repair was asked to start while another one has not finished."""


class JournalDamaged(RuntimeError):
    """The journal cannot be trusted: acting on it could replace a machine twice."""

    def __init__(self, path: Path, problem: str):
        super().__init__(
            f"the healer's journal {path} {problem}. It is the record that prevents replacing a machine twice, so the healer "
            f"does not act on it. Check the stack's recent updates (pulumi stack history), then acknowledge the loss: "
            f"{ACKNOWLEDGE_COMMAND} (it keeps the damaged files beside it)"
        )
        self.path = path
        self.problem = problem


def seal_path(path: Path) -> Path:
    return path.with_name(path.name + ".seal")


def _companions(path: Path) -> list[Path]:
    """The journal, its WAL and shared-memory files, and its seal."""
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm"), seal_path(path)]


def _read_seal(path: Path) -> dict[str, object] | None:
    seal = seal_path(path)
    try:
        data = json.loads(seal.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise JournalDamaged(path, f"has a seal ({seal}) that cannot be read: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("generation"), int):
        raise JournalDamaged(path, f"has a seal ({seal}) that is not one")
    return data


def _write_seal(path: Path, journal_id: str, created: float, generation: int, size: int) -> None:
    """Replace the seal atomically (write, fsync, rename, fsync the directory)."""
    seal = seal_path(path)
    tmp = seal.with_name(f"{seal.name}.{os.getpid()}.tmp")
    data = json.dumps({"id": journal_id, "created": created, "generation": generation, "size": size}) + "\n"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(seal)
    directory = os.open(seal.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def acknowledge(path: Path | str, now: float) -> list[Path]:
    """The operator's acknowledgement of a damaged journal: its files move aside (suffix ``.damaged-<UTC time>``); the next start is fresh."""
    path = Path(path)
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    moved = []
    for file in _companions(path):
        if file.exists():
            target = file.with_name(f"{file.name}.damaged-{stamp}")
            file.replace(target)
            moved.append(target)
    return moved


class Journal:
    """The journal at ``path``, checked as it opens (see the module); thread-safe; every write is committed and sealed at once."""

    def __init__(self, path: Path | str, now: float | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._sealed_size = 0
        seal = _read_seal(self.path)
        size = self.path.stat().st_size if self.path.is_file() else 0
        exists = size > 0
        if not exists and seal is not None:
            what = "is missing" if not self.path.exists() else "is empty"
            raise JournalDamaged(self.path, f"{what}, but its seal says it was created {_when(seal.get('created'))} and holds {seal['generation']} writes")
        if exists:
            with self.path.open("rb") as f:
                if f.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
                    raise JournalDamaged(self.path, "has a damaged header (no SQLite file starts like this)")
        sealed_size = seal.get("size") if seal is not None else None
        if isinstance(sealed_size, int) and size < sealed_size:
            raise JournalDamaged(self.path, f"is {size} bytes, shorter than the {sealed_size} it had at its last checkpoint: it was truncated")
        try:
            # autocommit off, explicit transactions; check_same_thread off: the lock serialises access.
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            if exists:
                self._check_whole()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Checkpoints only where the seal records the file's size (see _checkpoint).
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise JournalDamaged(self.path, f"is corrupt ({err})") from None
        meta = self._db.execute("SELECT id, created, generation FROM meta").fetchone()
        if meta is None:
            if seal is not None:
                raise JournalDamaged(self.path, "has lost its header row (meta), though a seal exists")
            # A fresh journal, or one from before the seal: it gets its header now.
            meta = (str(uuid.uuid4()), now if now is not None else _now(), 0)
            self._db.execute("INSERT INTO meta (one, version, id, created, generation) VALUES (1, ?, ?, ?, ?)", (SCHEMA_VERSION, *meta))
        self.id, self.created, generation = str(meta[0]), float(meta[1]), int(meta[2])
        if seal is not None:
            if seal["id"] != self.id:
                raise JournalDamaged(self.path, f"is journal {self.id}, but its seal is of journal {seal['id']}: it was replaced")
            if generation < int(str(seal["generation"])):
                raise JournalDamaged(
                    self.path,
                    f"holds {generation} writes, but its seal says {seal['generation']}: writes were lost (truncated, its WAL removed, or an older copy)",
                )
        self._checkpoint(generation)

    def _checkpoint(self, generation: int) -> None:
        """Move the WAL into the journal and seal the journal's size with its generation."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._sealed_size = self.path.stat().st_size
        _write_seal(self.path, self.id, self.created, generation, self._sealed_size)

    def _check_whole(self) -> None:
        rows = self._db.execute("PRAGMA quick_check").fetchall()
        if rows != [("ok",)]:
            raise JournalDamaged(self.path, f"fails its integrity check: {'; '.join(str(r[0]) for r in rows[:3])}")
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "repairs" not in tables:
            raise JournalDamaged(self.path, "has no repairs table: it is not a healer journal")

    def _migrate(self) -> None:
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(repairs)")}
        for column in ACTION_COLUMNS:
            if column.split()[0] not in columns:
                self._db.execute(f"ALTER TABLE repairs ADD COLUMN {column}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction that also counts a generation; the seal follows the commit."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("UPDATE meta SET generation = generation + 1")
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
                raise
            generation = int(self._db.execute("SELECT generation FROM meta").fetchone()[0])
            if generation % CHECKPOINT_EVERY == 0:
                self._checkpoint(generation)
            else:
                _write_seal(self.path, self.id, self.created, generation, self._sealed_size)

    def recover(self, now: float) -> list[Repair]:
        """Mark repairs a previous process left unfinished as interrupted; returns them."""
        with self._lock:
            rows = self._db.execute("SELECT machine, started FROM repairs WHERE finished IS NULL").fetchall()
        if not rows:
            return []
        with self._write() as db:
            db.execute(
                "UPDATE repairs SET finished = ?, outcome = ?, detail = 'the healer stopped during the repair' WHERE finished IS NULL", (now, INTERRUPTED)
            )
        return [Repair(machine, started, now, INTERRUPTED) for machine, started in rows]

    def start_repair(self, machine: str, urn: str, reason: str, now: float) -> int:
        """Record a repair as started (durably) and return its id; refuses a second one in flight."""
        try:
            with self._write() as db:
                cursor = db.execute("INSERT INTO repairs (machine, urn, reason, started) VALUES (?, ?, ?, ?)", (machine, urn, reason, now))
        except sqlite3.IntegrityError:
            raise RepairInFlightError(f"a repair is already in flight; not starting one of {machine}") from None
        return int(cursor.lastrowid or 0)

    def set_action(self, repair_id: int, pgid: int, start_ticks: int | None) -> None:
        """The repair's action runs as process group ``pgid`` (its leader started at ``start_ticks``)."""
        with self._write() as db:
            db.execute("UPDATE repairs SET action_pgid = ?, action_start = ? WHERE id = ?", (pgid, start_ticks, repair_id))

    def actions_in_flight(self) -> list[tuple[str, int, int | None]]:
        """(machine, process group, leader start time) of each unfinished repair whose action was started."""
        with self._lock:
            return list(self._db.execute("SELECT machine, action_pgid, action_start FROM repairs WHERE finished IS NULL AND action_pgid IS NOT NULL"))

    def finish_repair(self, repair_id: int, outcome: str, detail: str, now: float) -> bool:
        """Record the end of a repair; False when it had already been finished (by the watchdog)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE repairs SET finished = ?, outcome = ?, detail = ? WHERE id = ? AND finished IS NULL", (now, outcome, detail[-2000:], repair_id)
            )
        return cursor.rowcount > 0

    def record_episode(self, machine: str, started: float) -> None:
        """A NodeDown episode of ``machine`` that began at ``started`` (idempotent)."""
        with self._lock:
            known = self._db.execute("SELECT 1 FROM episodes WHERE machine = ? AND started = ?", (machine, started)).fetchone()
        if known is None:
            with self._write() as db:
                db.execute("INSERT OR IGNORE INTO episodes (machine, started) VALUES (?, ?)", (machine, started))

    def first_seen(self, machines: list[str], now: float) -> dict[str, float]:
        """When each machine was first seen (recording ``now`` for new ones)."""
        with self._lock:
            known = dict(self._db.execute("SELECT machine, seen FROM first_seen").fetchall())
        new = [m for m in machines if m not in known]
        if new:
            with self._write() as db:
                db.executemany("INSERT OR IGNORE INTO first_seen (machine, seen) VALUES (?, ?)", [(m, now) for m in new])
            known.update(dict.fromkeys(new, now))
        return known

    def record_failure(self, component: str, message: str, now: float) -> None:
        with self._write() as db:
            db.execute("INSERT INTO failures (time, component, message) VALUES (?, ?, ?)", (now, component, message[:1000]))

    def failures(self) -> list[tuple[float, str, str]]:
        with self._lock:
            return list(self._db.execute("SELECT time, component, message FROM failures ORDER BY rowid"))

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


def _now() -> float:
    return dt.datetime.now(dt.UTC).timestamp()


def _when(created: object) -> str:
    return dt.datetime.fromtimestamp(float(created), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(created, int | float) else "at an unknown time"
