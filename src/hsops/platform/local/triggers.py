"""What starts a pipeline run: a file in the inbox, a schedule, an API call, a monitoring
event. Every trigger becomes a message on the event bus; one consumer turns messages into
executions of the lifecycle state machine.

Why the bus in between: delivery is at-least-once, so a platform killed between "file
seen" and "run started" still starts the run after a restart; and a run that fails is
retried by redelivery (the execution is redriven from the failed step) until the
message's receives run out and it lands in the dead letters with the run's error.

Idempotency: an execution's name is derived from what triggered it (the file's SHA-256,
the API request's name, the schedule's due time), so a second trigger for the same
thing finds the existing run and is recorded as a no-op in ``pipeline_triggers``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

from hsops._hashing import sha256_file
from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import (OBJECT_CREATED, Backend, BackendError, ExecutionExists, Message,
                                   ObjectNotFound)
from hsops.platform.local.state_machines import LIFECYCLE

log = logging.getLogger("hsops.platform")

PIPELINE_REQUESTED = "pipeline.requested"  # API calls and schedules
RETRAIN_REQUESTED = "retrain.requested"  # monitoring alerts (a later stage emits them)
QUEUES = (OBJECT_CREATED, PIPELINE_REQUESTED, RETRAIN_REQUESTED)
MAX_RECEIVES = 3  # a failing run is redriven twice, then its trigger is dead-lettered
VISIBILITY_SECONDS = 60.0
# a run that failed on its data is an answer, not an error: redriving it cannot help
FINAL_ERRORS = ("ValidationFailed", "BadEvent", "InsufficientData")
INBOX_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet", ".gz")

SCHEMA = ("""CREATE TABLE IF NOT EXISTS pipeline_triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL,
    execution TEXT, outcome TEXT NOT NULL)""",)


def default_pipeline_input(home: Path) -> dict:
    """Candidates and gate policy: built-in defaults, overridden by ``HSOPS_HOME/pipeline.json``."""
    config = {"candidates": [{"kind": "linear", "upsample": True}, {"kind": "svc"}],
              "policy": {"min_improvement": 0.0, "max_cost_per_million_usd": 5.0, "deploy_delay_seconds": 0}}
    path = Path(home) / "pipeline.json"
    if path.is_file():
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(given, dict):
            raise ValueError(f"{path} must hold a JSON object")
        if "candidates" in given:
            config["candidates"] = given["candidates"]
        config["policy"] |= given.get("policy") or {}
    return config


def pipeline_input(home: Path, source: dict, *, candidates: list | None = None, policy: dict | None = None,
                   trigger: dict | None = None) -> dict:
    config = default_pipeline_input(home)
    return {"source": source, "candidates": candidates or config["candidates"],
            "policy": config["policy"] | (policy or {}), "trigger": trigger or {}}


class PipelineTriggers:
    """Consumes trigger messages and keeps each one in flight until its run ends."""

    def __init__(self, backend: Backend, home: Path, db: SqliteDatabase):
        self.backend, self.home, self.db = backend, Path(home), db
        with db.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        self._tracked: dict[str, tuple[Message, str]] = {}  # message id -> (message, execution id)

    def record(self, source: str, detail: dict, execution: str | None, outcome: str) -> None:
        self.db.execute("INSERT INTO pipeline_triggers (at, source, detail, execution, outcome) "
                        "VALUES (datetime('now'), ?, ?, ?, ?)", (source, json.dumps(detail), execution, outcome))

    def triggers(self, limit: int = 100) -> list[dict]:
        rows = self.db.query("SELECT * FROM pipeline_triggers ORDER BY id DESC LIMIT ?", (limit,))
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]

    # -- one pass --------------------------------------------------------------------------
    def poll(self) -> None:
        for queue in QUEUES:
            for message in self.backend.events.receive(queue, max_messages=5, visibility_timeout=VISIBILITY_SECONDS,
                                                       max_receives=MAX_RECEIVES):
                try:
                    self._handle(message)
                except Exception as exc:  # a bad message must not stop the others
                    log.warning("trigger %s on %s failed: %s", message.id, queue, exc)
                    self.backend.events.nack(message, f"{type(exc).__name__}: {exc}", delay=1.0)
        self._follow()

    def _request(self, message: Message) -> tuple[str, str, dict, dict]:
        """(source, execution name, input, detail) for a trigger message."""
        body = message.body
        if message.queue == OBJECT_CREATED:
            sha = body["sha256"]
            source = {"object_key": body["key"]}
            return "inbox", f"file-{sha[:24]}", pipeline_input(self.home, source, trigger={
                "type": "inbox", "key": body["key"], "sha256": sha}), {"key": body["key"], "sha256": sha}
        if message.queue == RETRAIN_REQUESTED:
            name = body.get("name") or f"retrain-{message.id}"
            source = body.get("source") or {"dataset_version": "latest"}
            return "monitoring", name, pipeline_input(self.home, source, candidates=body.get("candidates"),
                                                      policy=body.get("policy"), trigger={"type": "monitoring",
                                                      "alert": body.get("alert")}), {"alert": body.get("alert")}
        kind = "schedule" if body.get("schedule") else "api"
        due = re.sub(r"[^0-9T]", "", str(body.get("scheduled_time") or message.id))[:15]
        name = body.get("name") or (f"schedule-{body['schedule']}-{due}" if kind == "schedule" else f"api-{message.id}")
        source = body.get("source") or {"dataset_version": "latest"}
        return kind, name, pipeline_input(self.home, source, candidates=body.get("candidates"),
                                          policy=body.get("policy"), trigger={"type": kind}), {"name": name}

    def _handle(self, message: Message) -> None:
        kind, name, run_input, detail = self._request(message)
        machines = self.backend.state_machines
        run_input["trigger"]["message_id"] = message.id
        try:
            execution = machines.start(LIFECYCLE, run_input, name=name)
            self.record(kind, detail, execution.name, "started")
            log.info("%s trigger started run %s", kind, execution.name)
        except ExecutionExists as exists:
            execution = machines.describe(exists.execution_id)
            if execution.input.get("trigger", {}).get("message_id") != message.id:
                # another trigger for the same thing (the same file dropped twice)
                self.record(kind, detail, execution.name, "duplicate")
                log.info("%s trigger is a duplicate of run %s: nothing to do", kind, execution.name)
                self.backend.events.ack(message)
                return
            if execution.status == "FAILED":  # our own message, redelivered after the run failed
                if execution.error in FINAL_ERRORS:
                    self.backend.events.ack(message)
                    return
                execution = machines.redrive(execution.id)
                self.record(kind, detail, execution.name, f"redriven (delivery {message.receive_count})")
            elif execution.status == "SUCCEEDED":
                self.backend.events.ack(message)
                return
        self._tracked[message.id] = (message, execution.id)

    def _follow(self) -> None:
        """Ack the triggers whose run succeeded (or failed on its data); nack the others
        with the run's error so the bus redelivers them, and dead-letters them at the end."""
        for message_id, (message, execution_id) in list(self._tracked.items()):
            execution = self.backend.state_machines.describe(execution_id)
            try:
                if execution.status in ("PENDING", "RUNNING"):
                    self.backend.events.extend(message, VISIBILITY_SECONDS)
                    continue
                del self._tracked[message_id]
                if execution.status == "FAILED" and execution.error not in FINAL_ERRORS:
                    self.backend.events.nack(message, f"run {execution.name} failed: {execution.error}: "
                                                      f"{execution.cause}", delay=1.0)
                else:
                    self.backend.events.ack(message)
            except BackendError as exc:
                # our lease ran out and the message was delivered again (to us or another
                # platform): that delivery now follows the run; this one lets go
                self._tracked.pop(message_id, None)
                log.info("trigger %s: %s", message_id, exc)


class InboxWatcher:
    """Uploads files that appear in ``HSOPS_HOME/inbox/`` to the object store's ``inbox/``
    (whose put emits ``object.created``), once they stop changing; then removes them.

    A file is taken when its size and mtime are unchanged for ``settle_seconds`` (a copy
    in progress is left alone). Hidden files and names ending in .part/.tmp/.crdownload
    are ignored. The object key carries the content's hash, so the same content dropped
    twice under one name is one object and one event."""

    IGNORED_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial")

    def __init__(self, backend: Backend, inbox: Path, *, settle_seconds: float = 1.0, on_duplicate=None):
        """``on_duplicate(name, key)``: told when a file's content is already in the store."""
        self.backend, self.inbox, self.settle_seconds = backend, Path(inbox), settle_seconds
        self.on_duplicate = on_duplicate
        self.inbox.mkdir(parents=True, exist_ok=True)
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, first seen unchanged)

    def poll(self) -> list[str]:
        taken, now = [], time.monotonic()
        present = set()
        for path in sorted(self.inbox.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.name.endswith(self.IGNORED_SUFFIXES):
                continue
            present.add(path)
            stat = path.stat()
            state = (stat.st_size, stat.st_mtime_ns)
            seen = self._seen.get(path)
            if seen is None or seen[:2] != state:
                self._seen[path] = (*state, now)
                continue
            if now - seen[2] < self.settle_seconds:
                continue
            taken.append(self._take(path))
            self._seen.pop(path, None)
        for gone in set(self._seen) - present:
            self._seen.pop(gone, None)
        return taken

    def _take(self, path: Path) -> str:
        sha = sha256_file(path)
        key = f"inbox/{sha[:12]}-{_safe_name(path.name)}"
        try:
            self.backend.objects.head(key)
            duplicate = True
        except ObjectNotFound:
            duplicate = False
            self.backend.objects.put(key, path)
        os.unlink(path)
        if duplicate and self.on_duplicate:
            self.on_duplicate(path.name, key)
        log.info("inbox: %s -> %s%s", path.name, key, " (already there)" if duplicate else "")
        return key


def _safe_name(name: str) -> str:
    """A file name as an object key part: no separators or control characters."""
    cleaned = "".join(c if (c.isalnum() or c in "._-") else "_" for c in name)[:200]
    return cleaned.lstrip(".") or f"file-{uuid.uuid4().hex[:8]}"


class Loop:
    """Calls ``step`` every ``interval`` seconds in a daemon thread, logging its errors."""

    def __init__(self, name: str, step, interval: float):
        self.name, self.step, self.interval = name, step, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Loop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # keep the platform up; the next pass tries again
                log.warning("%s: %s: %s", self.name, type(exc).__name__, exc)
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
