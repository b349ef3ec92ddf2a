"""The local state store: one SQLite file (``HSOPS_HOME/state.db``) in WAL mode, opened
the way ``hsops._sqlite`` explains (a connection per thread, explicit transactions).

The schema grows by appending a tuple of statements to ``MIGRATIONS`` (feedback,
experiments, audit come in later issues): each entry runs once, in order, tracked by
``PRAGMA user_version``, inside one ``BEGIN IMMEDIATE`` transaction so two processes
opening a fresh file do not both migrate it.
"""

from __future__ import annotations

import json
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from hsops._config import hsops_home
from hsops._sqlite import SqliteDatabase

if TYPE_CHECKING:  # serving is imported lazily below: the platform must not need it to start
    from hsops.serving.auth import KeyRecord

STATE_FILE = "state.db"

MIGRATIONS: list[tuple[str, ...]] = [
    # 1: the predictions log; request_id is what feedback refers to
    (
        """CREATE TABLE predictions (
            request_id    TEXT PRIMARY KEY,
            batch_id      TEXT,
            created_at    TEXT NOT NULL,
            text          TEXT NOT NULL,
            hs_code       TEXT NOT NULL,
            confidence    REAL NOT NULL,
            abstain       INTEGER NOT NULL,
            model_version TEXT NOT NULL,
            alternatives  TEXT NOT NULL DEFAULT '[]'
        )""",
        "CREATE INDEX predictions_batch ON predictions (batch_id)",
        "CREATE INDEX predictions_created ON predictions (created_at)",
        "CREATE INDEX predictions_model ON predictions (model_version, created_at)",
    ),
    # 2: API keys (hashed; see hsops.serving.auth)
    (
        """CREATE TABLE api_keys (
            key_id      TEXT PRIMARY KEY,
            name        TEXT NOT NULL,
            secret_hash TEXT NOT NULL,
            scopes      TEXT NOT NULL,
            created_at  TEXT NOT NULL,
            revoked_at  TEXT
        )""",
    ),
    # 3: batch and async prediction jobs (hsops.platform.local.jobs)
    (
        """CREATE TABLE jobs (
            job_id        TEXT PRIMARY KEY,
            kind          TEXT NOT NULL,
            status        TEXT NOT NULL,
            created_at    TEXT NOT NULL,
            started_at    TEXT,
            ended_at      TEXT,
            request       TEXT NOT NULL,
            input_key     TEXT NOT NULL,
            output_key    TEXT,
            rows_total    INTEGER,
            rows_done     INTEGER NOT NULL DEFAULT 0,
            model_version TEXT,
            error         TEXT,
            callback      TEXT,
            key_id        TEXT,
            attempts      INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX jobs_created ON jobs (created_at)",
    ),
    # 4: rows of a job answered with an error instead of a prediction
    (
        "ALTER TABLE jobs ADD COLUMN rows_failed INTEGER NOT NULL DEFAULT 0",
    ),
]

_PREDICTION_COLUMNS = ("request_id", "batch_id", "created_at", "text", "hs_code", "confidence",
                       "abstain", "model_version", "alternatives")
_REQUIRED = ("request_id", "text", "hs_code", "confidence", "abstain", "model_version")


KEY_NAME_MAX = 64
_KEY_NAME_PUNCTUATION = frozenset(" ._-@")


def check_key_name(name) -> str:
    """The name as stored: 1 to 64 letters, digits, spaces and ``. _ - @``; ValueError
    otherwise. It is shown in ``keys list`` and in logs, where a newline or a control
    character would break the table and forge lines, so it is refused, not cleaned."""
    name = unicodedata.normalize("NFC", str(name)).strip()  # "é" typed as e + accent is one letter
    if not 1 <= len(name) <= KEY_NAME_MAX or not all(c.isalnum() or c in _KEY_NAME_PUNCTUATION for c in name):
        raise ValueError(f"a key name is 1 to {KEY_NAME_MAX} characters: letters, digits, spaces and . _ - @; "
                         f"got {name!r}")
    return name


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class StateStore:
    """Runs, predictions, feedback, audit: the state of the local platform.

    Implements ``hsops.serving.PredictionSink`` (``log_predictions``).
    """

    def __init__(self, path: Path | None = None, *, busy_timeout_ms: int = 10_000):
        """``path`` is the database file, or a directory (an HSOPS_HOME) to hold
        ``state.db``; by default ``hsops_home() / "state.db"``."""
        path = Path(path) if path is not None else hsops_home()
        self.path = path / STATE_FILE if path.is_dir() else path
        self.db = SqliteDatabase(self.path, busy_timeout_ms=busy_timeout_ms)
        self._conn = self.db.conn
        self._migrate()

    def __repr__(self) -> str:
        return f"StateStore({str(self.path)!r})"

    def close(self) -> None:
        """Close every thread's connection (call once, when the process is done with it)."""
        self.db.close()

    def _migrate(self) -> None:
        with self.db.transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number}")

    @property
    def schema_version(self) -> int:
        return self._conn().execute("PRAGMA user_version").fetchone()[0]

    # -- predictions -------------------------------------------------------------------
    def log_predictions(self, rows: list[dict]) -> int:
        """Insert prediction rows; return how many were new.

        A row whose ``request_id`` is already stored is skipped, so a retried delivery
        logs once (handlers are at-least-once).
        """
        values = []
        for i, row in enumerate(rows):
            missing = [k for k in _REQUIRED if row.get(k) is None]
            if missing:
                raise ValueError(f"prediction row {i} lacks {missing}")
            values.append((
                str(row["request_id"]), row.get("batch_id"), row.get("created_at") or _now(),
                str(row["text"]), str(row["hs_code"]), float(row["confidence"]),
                int(bool(row["abstain"])), str(row["model_version"]),
                json.dumps(row.get("alternatives") or []),
            ))
        if not values:
            return 0
        placeholders = ", ".join("?" * len(_PREDICTION_COLUMNS))
        with self.db.transaction() as conn:
            before = conn.total_changes
            conn.executemany(
                f"INSERT INTO predictions ({', '.join(_PREDICTION_COLUMNS)}) VALUES ({placeholders}) "
                "ON CONFLICT(request_id) DO NOTHING", values)
            return conn.total_changes - before

    def get_prediction(self, request_id: str) -> dict | None:
        row = self._conn().execute("SELECT * FROM predictions WHERE request_id = ?",
                                   (request_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["abstain"] = bool(out["abstain"])
        out["alternatives"] = json.loads(out["alternatives"])
        return out

    def count_predictions(self, *, model_version: str | None = None) -> int:
        if model_version is None:
            return self._conn().execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM predictions WHERE model_version = ?",
                                    (model_version,)).fetchone()[0]

    # -- API keys (implements hsops.serving.auth.KeyStore) -------------------------------
    def add_key(self, name: str, scopes) -> tuple[str, KeyRecord]:
        """Create a key; ``(plain key, record)``. The plain key is not kept anywhere."""
        from hsops.serving.auth import KeyRecord, check_scopes, new_key

        name = check_key_name(name)
        scopes = check_scopes(scopes)
        plain, key_id, secret_hash = new_key()
        record = KeyRecord(key_id, name, secret_hash, scopes, _now())
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO api_keys (key_id, name, secret_hash, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
                         (key_id, name, secret_hash, ",".join(scopes), record.created_at))
        return plain, record

    def get_key(self, key_id: str) -> KeyRecord | None:
        from hsops.serving.auth import KeyRecord

        row = self._conn().execute("SELECT * FROM api_keys WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            return None
        return KeyRecord(row["key_id"], row["name"], row["secret_hash"], tuple(row["scopes"].split(",")),
                         row["created_at"], row["revoked_at"])

    def list_keys(self) -> list[KeyRecord]:
        ids = [r[0] for r in self._conn().execute("SELECT key_id FROM api_keys ORDER BY created_at, key_id")]
        return [self.get_key(i) for i in ids]

    def revoke_key(self, key_id: str) -> bool:
        """True when the key existed and was live."""
        with self.db.transaction() as conn:
            cur = conn.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                               (_now(), key_id))
            return cur.rowcount == 1
