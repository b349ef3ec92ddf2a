"""Where an execution's steps are written down: the history, and the resume point.

The interpreter records a step (``begin``) before it does anything with side effects
and its outcome (``finish``) right after, so after a crash the journal tells what was
finished (replayed from here, never re-run), what was in flight (re-run with the same
key) and what never started.

Values (input, output, data) go through JSON in both journals: what a resumed run gets
back from SQLite is exactly what a run from memory gets, and a record handed out can
be mutated by its reader without changing the journal.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hsops._sqlite import SqliteDatabase

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"


@dataclass(kw_only=True)
class StepRecord:
    """One step: one entry into a state, or one attempt of a retried state."""

    key: str
    state: str
    type: str
    parent: str | None
    attempt: int
    status: str  # "running" | "succeeded" | "failed"
    input: Any
    output: Any = None
    error: str | None = None
    cause: str | None = None
    started_at: float
    ended_at: float | None = None
    cost_usd: float = 0.0
    invocation_id: str | None = None
    data: dict = field(default_factory=dict)  # Wait's wake_at, Choice's next, task details


class Journal(Protocol):
    def get(self, key: str) -> StepRecord | None: ...

    def begin(self, record: StepRecord) -> None:
        """Insert, or replace a record with the same key (it keeps its place in steps())."""

    def finish(self, key: str, *, status: str, output: Any = None, error: str | None = None,
               cause: str | None = None, cost_usd: float = 0.0, invocation_id: str | None = None,
               data: dict | None = None, ended_at: float | None = None) -> None:
        """Record the outcome; ``data`` is merged into the record's, ``ended_at`` defaults
        to now, and ``invocation_id`` None keeps the one already recorded."""

    def steps(self) -> list[StepRecord]:
        """Every record in the order the steps started: the execution history."""


def redrive_keys(steps: list[StepRecord]) -> list[str]:
    """The records to delete before running a FAILED execution again on its journal, so
    that it starts over from where it failed, as a Step Functions redrive does.

    That is each branch's last step when it did not succeed (with every earlier attempt
    of that step, so its retries start afresh), and anything left running. A failure
    that was retried to success or caught is followed by another step in its branch, so
    it stays: deleting it would run a step that already has a successor again.
    ``steps`` in start order, as ``Journal.steps()`` returns them.
    """
    last: dict[str, StepRecord] = {}
    for step in steps:
        last[step.key[: step.key.rfind("/") + 1]] = step  # branch prefix -> its latest step
    unfinished = {_base_key(s.key) for s in last.values() if s.status != SUCCEEDED}
    return [s.key for s in steps
            if s.status == RUNNING or (s.status == FAILED and _base_key(s.key) in unfinished)]


def _base_key(key: str) -> str:
    """``T#0@2`` -> ``T#0``: the step, whatever the attempt."""
    return re.sub(r"@\d+$", "", key)


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))


class MemoryJournal:
    """A journal in a dict, for tests and throw-away executions."""

    def __init__(self) -> None:
        self._records: dict[str, StepRecord] = {}  # insertion order is start order
        self._lock = threading.Lock()

    def get(self, key: str) -> StepRecord | None:
        with self._lock:
            record = self._records.get(key)
            return None if record is None else _detached(record)

    def begin(self, record: StepRecord) -> None:
        with self._lock:
            # assigning to an existing key keeps its position: a re-run keeps its place
            self._records[record.key] = _detached(record)

    def finish(self, key: str, *, status: str, output: Any = None, error: str | None = None,
               cause: str | None = None, cost_usd: float = 0.0, invocation_id: str | None = None,
               data: dict | None = None, ended_at: float | None = None) -> None:
        with self._lock:
            record = self._records.get(key)
            if record is None:
                raise KeyError(f"no step {key!r} to finish")
            record.status = status
            record.output = _copy(output)
            record.error, record.cause = error, cause
            record.cost_usd = cost_usd
            record.invocation_id = invocation_id or record.invocation_id
            record.data = {**record.data, **_copy(data or {})}
            record.ended_at = time.time() if ended_at is None else ended_at

    def steps(self) -> list[StepRecord]:
        with self._lock:
            return [_detached(record) for record in self._records.values()]

    def delete(self, keys: list[str]) -> None:
        """Forget these steps (a redrive, see ``redrive_keys``)."""
        with self._lock:
            for key in keys:
                self._records.pop(key, None)


def _detached(record: StepRecord) -> StepRecord:
    return replace(record, input=_copy(record.input), output=_copy(record.output),
                   data=_copy(record.data))


SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sm_steps (
        execution_id  TEXT NOT NULL,
        key           TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        state         TEXT NOT NULL,
        type          TEXT NOT NULL,
        parent        TEXT,
        attempt       INTEGER NOT NULL,
        status        TEXT NOT NULL,
        input         TEXT NOT NULL,
        output        TEXT NOT NULL DEFAULT 'null',
        error         TEXT,
        cause         TEXT,
        started_at    REAL NOT NULL,
        ended_at      REAL,
        cost_usd      REAL NOT NULL DEFAULT 0,
        invocation_id TEXT,
        data          TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (execution_id, key)
    )""",
    "CREATE INDEX IF NOT EXISTS sm_steps_order ON sm_steps (execution_id, seq)",
)

_COLUMNS = ("execution_id", "key", "seq", "state", "type", "parent", "attempt", "status",
            "input", "output", "error", "cause", "started_at", "ended_at", "cost_usd",
            "invocation_id", "data")


class SqliteJournal:
    """The steps of one execution in table ``sm_steps``, which executions share.

    Each call is its own transaction, so a step is on disk before the interpreter goes
    on (the point of a journal). ``seq`` orders the history: started_at can tie, and a
    replaced record keeps the seq it was first given.
    """

    def __init__(self, db: SqliteDatabase, execution_id: str):
        self.db = db
        self.execution_id = execution_id
        db.ensure(SCHEMA)

    def get(self, key: str) -> StepRecord | None:
        rows = self.db.query("SELECT * FROM sm_steps WHERE execution_id = ? AND key = ?",
                             (self.execution_id, key))
        return _from_row(rows[0]) if rows else None

    def begin(self, record: StepRecord) -> None:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT seq FROM sm_steps WHERE execution_id = ? AND key = ?",
                               (self.execution_id, record.key)).fetchone()
            if row is None:
                row = conn.execute(
                    "SELECT COALESCE(MAX(seq), 0) + 1 FROM sm_steps WHERE execution_id = ?",
                    (self.execution_id,)).fetchone()
            values = (self.execution_id, record.key, row[0], record.state, record.type,
                      record.parent, record.attempt, record.status, json.dumps(record.input),
                      json.dumps(record.output), record.error, record.cause, record.started_at,
                      record.ended_at, record.cost_usd, record.invocation_id,
                      json.dumps(record.data))
            conn.execute(f"INSERT OR REPLACE INTO sm_steps ({', '.join(_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_COLUMNS))})", values)

    def finish(self, key: str, *, status: str, output: Any = None, error: str | None = None,
               cause: str | None = None, cost_usd: float = 0.0, invocation_id: str | None = None,
               data: dict | None = None, ended_at: float | None = None) -> None:
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT data, invocation_id FROM sm_steps WHERE execution_id = ? AND key = ?",
                (self.execution_id, key)).fetchone()
            if row is None:
                raise KeyError(f"no step {key!r} to finish in execution {self.execution_id!r}")
            merged = {**json.loads(row["data"]), **(data or {})}
            conn.execute(
                """UPDATE sm_steps SET status = ?, output = ?, error = ?, cause = ?,
                       ended_at = ?, cost_usd = ?, invocation_id = ?, data = ?
                   WHERE execution_id = ? AND key = ?""",
                (status, json.dumps(output), error, cause,
                 time.time() if ended_at is None else ended_at, cost_usd,
                 invocation_id or row["invocation_id"], json.dumps(merged),
                 self.execution_id, key))

    def steps(self) -> list[StepRecord]:
        rows = self.db.query("SELECT * FROM sm_steps WHERE execution_id = ? ORDER BY seq",
                             (self.execution_id,))
        return [_from_row(row) for row in rows]

    def delete(self, keys: list[str]) -> None:
        """Forget these steps (a redrive, see ``redrive_keys``)."""
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM sm_steps WHERE execution_id = ? AND key = ?",
                             [(self.execution_id, key) for key in keys])


def _from_row(row: dict) -> StepRecord:
    return StepRecord(
        key=row["key"], state=row["state"], type=row["type"], parent=row["parent"],
        attempt=row["attempt"], status=row["status"], input=json.loads(row["input"]),
        output=json.loads(row["output"]), error=row["error"], cause=row["cause"],
        started_at=row["started_at"], ended_at=row["ended_at"], cost_usd=row["cost_usd"],
        invocation_id=row["invocation_id"], data=json.loads(row["data"]))
