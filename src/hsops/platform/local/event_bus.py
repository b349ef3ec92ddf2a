"""The local event bus: SQS-like queues in the shared SQLite database (tables ``bus_*``).

A message row is visible when ``visible_at`` has passed. ``receive`` claims rows inside
``BEGIN IMMEDIATE`` (the write lock is taken before the rows are read), so two processes
receiving together can never claim the same message; a claim sets a fresh ``receipt``
and pushes ``visible_at`` out by the visibility timeout. A lease that runs out leaves the
receipt in place: the next receive redelivers the message (recording "lease expired
after N receives") or, at ``max_receives``, buries it in ``bus_dead_letters``.

Stale receipts: ``ack``, ``nack`` and ``extend`` with a receipt that is no longer the
message's current one (it was redelivered, acked, or dead-lettered since) raise
``BackendError`` and change nothing; the consumer learns its work may be duplicated
instead of silently deleting another consumer's lease. A receipt whose lease ran out but
that nobody has received since is still current, as in SQS.

Dedup keys are kept for good (``bus_dedup``), not for a window as in SQS FIFO: the same
content put twice in the inbox, or a schedule's due time, must publish once, however
far apart. Limits follow SQS: 256 KiB bodies, 15 min publish delay, 12 h visibility.
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from datetime import UTC, datetime

from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import BackendError, DeadLetter, EventBus, Message

MAX_BODY_BYTES = 256 * 1024
MAX_DELAY = 900.0  # seconds, publish (SQS DelaySeconds)
MAX_VISIBILITY = 43_200.0  # seconds, visibility timeout, extend and nack delay (SQS)
MAX_MESSAGES = 10  # per receive (SQS)
MAX_RECEIVES = 1000  # SQS maxReceiveCount
MAX_DEDUP_KEY = 2048  # room for an object key (1024 bytes) and its sha256
MAX_ERROR_CHARS = 8192
QUEUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS bus_messages (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,  -- "oldest first"
        id            TEXT NOT NULL UNIQUE,
        queue         TEXT NOT NULL,
        body          TEXT NOT NULL,
        sent_at       TEXT NOT NULL,
        visible_at    REAL NOT NULL,     -- epoch seconds
        receive_count INTEGER NOT NULL DEFAULT 0,
        receipt       TEXT,              -- the current lease's, NULL when not received or nacked
        max_receives  INTEGER,           -- the current receiver's limit, for nack and expiry
        last_error    TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS bus_messages_ready ON bus_messages (queue, visible_at)",
    """CREATE TABLE IF NOT EXISTS bus_dedup (
        queue      TEXT NOT NULL,
        dedup_key  TEXT NOT NULL,
        message_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (queue, dedup_key)
    )""",
    """CREATE TABLE IF NOT EXISTS bus_dead_letters (
        seq           INTEGER PRIMARY KEY AUTOINCREMENT,
        id            TEXT NOT NULL UNIQUE,  -- the message's id
        queue         TEXT NOT NULL,
        body          TEXT NOT NULL,
        receive_count INTEGER NOT NULL,
        error         TEXT NOT NULL,
        sent_at       TEXT NOT NULL,
        dead_at       TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS bus_dead_letters_queue ON bus_dead_letters (queue)",
)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class LocalEventBus(EventBus):
    def __init__(self, db: SqliteDatabase, *, clock=time.time):
        """``clock``: epoch seconds (tests pass a fake one); every process must agree on it."""
        self.db = db
        self._clock = clock
        db.ensure(SCHEMA)  # the db is shared and already open: our tables only

    def __repr__(self) -> str:
        return f"LocalEventBus({self.db!r})"

    # -- producing ---------------------------------------------------------------------------
    def publish(self, queue: str, body: dict, *, dedup_key: str | None = None, delay: float = 0.0) -> str:
        check_queue(queue)
        text = encode_body(body)
        delay = _seconds("delay", delay, MAX_DELAY)
        if dedup_key is not None and (not isinstance(dedup_key, str) or not 0 < len(dedup_key) <= MAX_DEDUP_KEY):
            raise BackendError(f"dedup_key must be a non-empty string of at most {MAX_DEDUP_KEY} characters")
        with self.db.transaction() as conn:
            if dedup_key is not None:
                row = conn.execute("SELECT message_id FROM bus_dedup WHERE queue = ? AND dedup_key = ?",
                                   (queue, dedup_key)).fetchone()
                if row is not None:
                    return row["message_id"]
            message_id = self._insert(conn, queue, text, delay)
            if dedup_key is not None:
                conn.execute("INSERT INTO bus_dedup (queue, dedup_key, message_id, created_at) VALUES (?, ?, ?, ?)",
                             (queue, dedup_key, message_id, _iso(self._clock())))
        return message_id

    def _insert(self, conn, queue: str, text: str, delay: float) -> str:
        now = self._clock()
        message_id = uuid.uuid4().hex
        conn.execute("INSERT INTO bus_messages (id, queue, body, sent_at, visible_at) VALUES (?, ?, ?, ?, ?)",
                     (message_id, queue, text, _iso(now), now + delay))
        return message_id

    # -- consuming ---------------------------------------------------------------------------
    def receive(self, queue: str, *, max_messages: int = 1, visibility_timeout: float = 30.0,
                max_receives: int = 3) -> list[Message]:
        check_queue(queue)
        max_messages = _count("max_messages", max_messages, MAX_MESSAGES)
        visibility_timeout = _seconds("visibility_timeout", visibility_timeout, MAX_VISIBILITY)
        max_receives = _count("max_receives", max_receives, MAX_RECEIVES)
        claimed: list[Message] = []
        with self.db.transaction() as conn:  # BEGIN IMMEDIATE: nobody else claims meanwhile
            now = self._clock()
            after_seq = 0  # walk forward: a claim with a zero timeout is visible again at once
            while len(claimed) < max_messages:
                rows = conn.execute(
                    "SELECT * FROM bus_messages WHERE queue = ? AND visible_at <= ? AND seq > ? ORDER BY seq LIMIT ?",
                    (queue, now, after_seq, max_messages - len(claimed))).fetchall()
                if not rows:
                    break
                for row in rows:
                    after_seq = row["seq"]
                    claimed.extend(self._claim(conn, row, now, visibility_timeout, max_receives))
        return claimed

    def _claim(self, conn, row, now: float, visibility_timeout: float, max_receives: int) -> list[Message]:
        count = row["receive_count"]
        lease_expired = row["receipt"] is not None
        error = f"lease expired after {count} receives" if lease_expired else row["last_error"]
        if count >= max_receives:
            self._bury(conn, row, error or f"received {count} times without an ack", now)
            return []
        receipt = uuid.uuid4().hex
        conn.execute("UPDATE bus_messages SET receive_count = ?, receipt = ?, visible_at = ?, max_receives = ?, "
                     "last_error = ? WHERE seq = ?",
                     (count + 1, receipt, now + visibility_timeout, max_receives, error, row["seq"]))
        return [Message(id=row["id"], queue=row["queue"], body=json.loads(row["body"]), receive_count=count + 1,
                        receipt=receipt, sent_at=row["sent_at"])]

    def ack(self, message: Message) -> None:
        _check_message(message)
        with self.db.transaction() as conn:
            cursor = conn.execute("DELETE FROM bus_messages WHERE id = ? AND receipt = ?",
                                  (message.id, message.receipt))
            if cursor.rowcount == 0:
                raise self._stale(conn, message, "ack")

    def nack(self, message: Message, error: str, *, delay: float = 0.0) -> None:
        self._settle(message, error, delay, verb="nack")

    def dead_letter(self, message: Message, error: str) -> None:
        self._settle(message, error, 0.0, verb="dead_letter")

    def _settle(self, message: Message, error: str, delay: float, *, verb: str) -> None:
        _check_message(message)
        if not isinstance(error, str):
            raise BackendError(f"{verb} error must be a string, not {type(error).__name__}")
        if len(error) > MAX_ERROR_CHARS:
            error = error[:MAX_ERROR_CHARS] + " ...(truncated)"
        delay = _seconds("delay", delay, MAX_VISIBILITY)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM bus_messages WHERE id = ? AND receipt = ?",
                               (message.id, message.receipt)).fetchone()
            if row is None:
                raise self._stale(conn, message, verb)
            now = self._clock()
            if verb == "dead_letter" or row["receive_count"] >= row["max_receives"]:
                self._bury(conn, row, error, now)  # no receive left: dead now, not at the next poll
            else:
                conn.execute("UPDATE bus_messages SET receipt = NULL, visible_at = ?, last_error = ? WHERE seq = ?",
                             (now + delay, error, row["seq"]))

    def extend(self, message: Message, visibility_timeout: float) -> None:
        _check_message(message)
        visibility_timeout = _seconds("visibility_timeout", visibility_timeout, MAX_VISIBILITY)
        with self.db.transaction() as conn:
            cursor = conn.execute("UPDATE bus_messages SET visible_at = ? WHERE id = ? AND receipt = ?",
                                  (self._clock() + visibility_timeout, message.id, message.receipt))
            if cursor.rowcount == 0:
                raise self._stale(conn, message, "extend")

    def _stale(self, conn, message: Message, verb: str) -> BackendError:
        if conn.execute("SELECT 1 FROM bus_messages WHERE id = ?", (message.id,)).fetchone():
            why = "it was delivered again since (its lease had run out)"
        elif conn.execute("SELECT 1 FROM bus_dead_letters WHERE id = ?", (message.id,)).fetchone():
            why = "it is in the dead letters"
        else:
            why = "it was acked already"
        return BackendError(f"cannot {verb} message {message.id} on {message.queue!r} with a stale receipt: {why}")

    # -- dead letters --------------------------------------------------------------------------
    def _bury(self, conn, row, error: str, now: float) -> None:
        conn.execute("INSERT INTO bus_dead_letters (id, queue, body, receive_count, error, sent_at, dead_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (row["id"], row["queue"], row["body"], row["receive_count"], error, row["sent_at"], _iso(now)))
        conn.execute("DELETE FROM bus_messages WHERE seq = ?", (row["seq"],))

    def _sweep(self, conn, now: float, queue: str | None) -> None:
        """Bury the messages whose last allowed lease ran out, so that counts and the dead
        letters are right before the next receive comes along."""
        sql = ("SELECT * FROM bus_messages WHERE receipt IS NOT NULL AND visible_at <= ? "
               "AND receive_count >= max_receives")
        if queue is None:
            rows = conn.execute(sql, (now,)).fetchall()
        else:  # a plain equality, so the (queue, visible_at) index serves it
            rows = conn.execute(sql + " AND queue = ?", (now, queue)).fetchall()
        for row in rows:
            self._bury(conn, row, f"lease expired after {row['receive_count']} receives", now)

    def depth(self, queue: str) -> dict:
        check_queue(queue)
        with self.db.transaction() as conn:
            now = self._clock()
            self._sweep(conn, now, queue)
            row = conn.execute(
                "SELECT TOTAL(visible_at <= :now) AS visible, "
                "TOTAL(visible_at > :now AND receipt IS NOT NULL) AS in_flight, "
                "TOTAL(visible_at > :now AND receipt IS NULL) AS delayed "
                "FROM bus_messages WHERE queue = :queue", {"now": now, "queue": queue}).fetchone()
            dead = conn.execute("SELECT COUNT(*) FROM bus_dead_letters WHERE queue = ?", (queue,)).fetchone()[0]
        return {"visible": int(row["visible"]), "in_flight": int(row["in_flight"]),
                "delayed": int(row["delayed"]), "dead": dead}

    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]:
        if queue is not None:
            check_queue(queue)
        with self.db.transaction() as conn:
            self._sweep(conn, self._clock(), queue)
            rows = conn.execute("SELECT * FROM bus_dead_letters WHERE (? IS NULL OR queue = ?) ORDER BY seq",
                                (queue, queue)).fetchall()
        return [DeadLetter(id=r["id"], queue=r["queue"], body=json.loads(r["body"]), receive_count=r["receive_count"],
                           error=r["error"], dead_at=r["dead_at"]) for r in rows]

    def redrive(self, dead_letter_id: str) -> str:
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM bus_dead_letters WHERE id = ?", (dead_letter_id,)).fetchone()
            if row is None:
                raise BackendError(f"no dead letter {dead_letter_id!r} (redriven already?)")
            conn.execute("DELETE FROM bus_dead_letters WHERE seq = ?", (row["seq"],))
            return self._insert(conn, row["queue"], row["body"], 0.0)


# -- validation --------------------------------------------------------------------------------
def check_queue(queue: str) -> str:
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise BackendError(f"bad queue name {queue!r}: 1-80 characters, letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return queue


def encode_body(body: dict) -> str:
    """The body as JSON text; ``BackendError`` unless it is a dict that survives a JSON
    round trip unchanged and fits in 256 KiB."""
    if not isinstance(body, dict):
        raise BackendError(f"a message body is a JSON object (a dict), not {type(body).__name__}")
    try:
        text = json.dumps(body, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        raise BackendError(f"message body is not JSON-serialisable: {exc}") from None
    if size > MAX_BODY_BYTES:
        raise BackendError(f"message body is {size} bytes of JSON; the limit is {MAX_BODY_BYTES} (256 KiB, as SQS)")
    if json.loads(text) != body:  # int keys become strings, tuples lists: the consumer would see another body
        raise BackendError("message body changes in a JSON round trip (non-string keys or tuples?): use plain "
                           "JSON types")
    return text


def _seconds(name: str, value: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BackendError(f"{name} must be a finite number of seconds, not {value!r}")
    if not 0 <= value <= high:
        raise BackendError(f"{name} must be between 0 and {high:g} seconds, not {value!r}")
    return float(value)


def _count(name: str, value: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise BackendError(f"{name} must be a whole number from 1 to {high}, not {value!r}")
    return value


def _check_message(message: Message) -> None:
    if not isinstance(message, Message):
        raise BackendError(f"expected a received Message, not {type(message).__name__}")
