"""The local scheduler: rate and cron schedules (table ``schedules``) that publish events.

``fire_due`` publishes first, with the dedup key ``schedule:{name}:{due}``, then moves
``next_fire`` past ``now`` with a compare-and-set on the due time it read. Two processes
firing together both publish, the bus keeps one (dedup), and only the one whose update
lands reports the schedule as fired; a process killed between the publish and the update
leaves the schedule due, and the next call publishes again into the same dedup key. So
each due time publishes exactly once, with any event bus that keeps dedup keys.

The event's body is the schedule's body with ``schedule`` (the name) and
``scheduled_time`` (the due time, ISO-8601 UTC) set on it.

Missed periods are not replayed: after downtime a schedule fires once, for the due time
it had, and its next fire is the first one after ``now``. A rate keeps the phase of its
first due time (``rate(1 hour)`` put at 10:20 fires at 11:20, 12:20, ...).

Re-putting a schedule with the same expression keeps its due time, so a process that
declares its schedules at every start does not postpone them forever.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import BackendError, EventBus, Schedule, Scheduler
from hsops.platform.local.event_bus import check_queue, encode_body
from hsops.platform.local.schedule_expressions import ScheduleExpression, as_utc, parse

SCHEDULE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # as EventBridge Scheduler

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS schedules (
        name       TEXT PRIMARY KEY,
        expression TEXT NOT NULL,
        queue      TEXT NOT NULL,
        body       TEXT NOT NULL,
        enabled    INTEGER NOT NULL DEFAULT 1,
        last_fired TEXT,
        next_fire  TEXT,           -- ISO-8601 UTC, fixed width so text order is time order
        updated_at TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS schedules_next_fire ON schedules (next_fire)",
)


def _iso(moment: datetime) -> str:
    # whole seconds: due times are (cron: minutes; rate: anchored on a whole second), and
    # a fixed width keeps text order the same as time order in SQL
    return as_utc(moment).isoformat(timespec="seconds")


def _now() -> datetime:
    return datetime.now(UTC)


class LocalScheduler(Scheduler):
    def __init__(self, db: SqliteDatabase, events: EventBus):
        self.db = db
        self.events = events
        db.ensure(SCHEMA)

    def __repr__(self) -> str:
        return f"LocalScheduler({self.db!r})"

    def put(self, name: str, expression: str, queue: str, body: dict | None = None) -> Schedule:
        if not isinstance(name, str) or not SCHEDULE_NAME.fullmatch(name):
            raise BackendError(f"bad schedule name {name!r}: 1-64 letters, digits, '.', '_' or '-'")
        parsed = parse(expression)  # ValueError saying what is wrong
        check_queue(queue)
        body = {} if body is None else body
        text = encode_body(body)
        # what fire_due will publish must fit too: refuse it now rather than at every fire
        encode_body({**body, "schedule": name, "scheduled_time": "2000-01-01T00:00:00+00:00"})
        now = _now()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT expression, next_fire, last_fired FROM schedules WHERE name = ?",
                               (name,)).fetchone()
            if row is not None and row["expression"] == expression:
                next_fire, last_fired = row["next_fire"], row["last_fired"]
            else:
                first = parsed.next_after(now.replace(microsecond=0))
                if first is None:
                    raise ValueError(f"{expression!r} never fires after {_iso(now)}")
                next_fire, last_fired = _iso(first), None
            conn.execute(
                "INSERT INTO schedules (name, expression, queue, body, enabled, last_fired, next_fire, updated_at) "
                "VALUES (?, ?, ?, ?, 1, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET expression = excluded.expression, "
                "queue = excluded.queue, body = excluded.body, enabled = 1, last_fired = excluded.last_fired, "
                "next_fire = excluded.next_fire, updated_at = excluded.updated_at",
                (name, expression, queue, text, last_fired, next_fire, _iso(now)))
        return self._get(name)

    def delete(self, name: str) -> bool:
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM schedules WHERE name = ?", (name,)).rowcount > 0

    def list(self) -> list[Schedule]:
        return [_schedule(row) for row in self.db.query("SELECT * FROM schedules ORDER BY name")]

    def _get(self, name: str) -> Schedule:
        return _schedule(self.db.query("SELECT * FROM schedules WHERE name = ?", (name,))[0])

    def fire_due(self, now: datetime | None = None) -> list[str]:
        now = _now() if now is None else as_utc(now)
        due = self.db.query("SELECT * FROM schedules WHERE enabled = 1 AND next_fire IS NOT NULL "
                            "AND next_fire <= ? ORDER BY next_fire, name", (_iso(now),))
        fired = []
        for row in due:
            if self._fire(row, now):
                fired.append(row["name"])
        return fired

    def _fire(self, row: dict, now: datetime) -> bool:
        name, due_iso = row["name"], row["next_fire"]
        parsed: ScheduleExpression = parse(row["expression"])
        due = datetime.fromisoformat(due_iso)
        following = parsed.next_after(now, anchor=due)  # past now: missed periods are skipped
        body = {**json.loads(row["body"]), "schedule": name, "scheduled_time": due_iso}
        self.events.publish(row["queue"], body, dedup_key=f"schedule:{name}:{due_iso}")
        with self.db.transaction() as conn:
            # compare-and-set on what we read: a concurrent caller or a re-put wins cleanly
            updated = conn.execute(
                "UPDATE schedules SET next_fire = ?, last_fired = ? WHERE name = ? AND next_fire = ? "
                "AND expression = ?",
                (None if following is None else _iso(following), due_iso, name, due_iso, row["expression"]))
            return updated.rowcount > 0


def _schedule(row: dict) -> Schedule:
    return Schedule(name=row["name"], expression=row["expression"], queue=row["queue"], body=json.loads(row["body"]),
                    enabled=bool(row["enabled"]), last_fired=row["last_fired"], next_fire=row["next_fire"])
