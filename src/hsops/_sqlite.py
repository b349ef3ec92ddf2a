"""One SQLite file shared by several processes and threads, the way hsops uses them.

Why WAL: the API server, the platform, its worker processes and the CLI are separate
processes on one machine; WAL lets them read while one writes, with no server to run.

Why a connection per thread: a ``sqlite3`` connection must not be used by two threads
at once. Each thread opens its own on first use (``threading.local``); SQLite serialises
the writers, and ``busy_timeout`` makes a writer wait for the lock instead of failing.

Transactions are explicit (``BEGIN IMMEDIATE`` in ``transaction()``): taking the write
lock up front means a read-then-write (claim a message, bump a counter) cannot be
interleaved with another process's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path


class SqliteDatabase:
    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000, schema: tuple[str, ...] = ()):
        """``schema``: idempotent statements (``CREATE ... IF NOT EXISTS``) run once here."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self.ensure(schema)

    def ensure(self, schema: tuple[str, ...] | list[str]) -> None:
        """Run idempotent schema statements (``CREATE ... IF NOT EXISTS``) in one transaction."""
        if schema:
            with self.transaction() as conn:
                for statement in schema:
                    conn.execute(statement)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # autocommit mode: transactions are explicit (BEGIN IMMEDIATE), never implicit
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    @contextlib.contextmanager
    def transaction(self):
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def execute(self, sql: str, params: tuple | dict = ()) -> sqlite3.Cursor:
        return self.conn().execute(sql, params)

    def query(self, sql: str, params: tuple | dict = ()) -> list[dict]:
        return [dict(row) for row in self.conn().execute(sql, params).fetchall()]

    def close(self) -> None:
        """Close every thread's connection (once, when the process is done with it)."""
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()
