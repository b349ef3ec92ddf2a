"""What starts a pipeline run: a file in the inbox, a schedule, an API call, a monitoring
event. Every trigger becomes a message on the event bus; one consumer turns messages into
executions of the lifecycle state machine.

Why the bus in between: delivery is at-least-once, so a platform killed between "file
seen" and "run started" still starts the run after a restart; and a run that fails is
retried by redelivery (the execution is redriven from the failed step) until it has
failed ``MAX_ATTEMPTS`` times, and then lands in the dead letters with the run's error.

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
from hsops.pipeline.policy import DEFAULT_CANDIDATES, check_candidates, check_policy, default_policy
from hsops.platform.backend import (OBJECT_CREATED, Backend, BackendError, ExecutionExists, Message,
                                   ObjectNotFound)
from hsops.platform.local.state_machines import LIFECYCLE

log = logging.getLogger("hsops.platform")

PIPELINE_REQUESTED = "pipeline.requested"  # API calls and schedules
RETRAIN_REQUESTED = "retrain.requested"  # monitoring alerts (a later stage emits them)
QUEUES = (OBJECT_CREATED, PIPELINE_REQUESTED, RETRAIN_REQUESTED)
MAX_ATTEMPTS = 3  # a failing run is redriven twice, then its trigger is dead-lettered
# deliveries are not failures (a platform restart redelivers what was in flight): the bus's
# own limit is only a backstop for a consumer that keeps crashing
MAX_RECEIVES = 20
VISIBILITY_SECONDS = 60.0
# a run that failed on its data is an answer, not an error: redriving it cannot help
FINAL_ERRORS = ("ValidationFailed", "BadEvent", "InsufficientData")
INBOX_SUFFIXES = (".csv", ".tsv", ".txt", ".jsonl", ".json", ".parquet", ".gz")

SCHEMA = ("""CREATE TABLE IF NOT EXISTS pipeline_triggers (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, source TEXT NOT NULL, detail TEXT NOT NULL,
    execution TEXT, outcome TEXT NOT NULL)""",
          """CREATE TABLE IF NOT EXISTS pipeline_trigger_failures (
    message_id TEXT PRIMARY KEY, failures INTEGER NOT NULL)""")


def file_run_name(sha256: str) -> str:
    """The run of a file is named by its content: the same bytes are one run."""
    return f"file-{sha256[:24]}"


def default_pipeline_input(home: Path) -> dict:
    """Candidates and gate policy: built-in defaults, overridden by ``HSOPS_HOME/pipeline.json``."""
    config = {"candidates": DEFAULT_CANDIDATES, "policy": default_policy()}
    path = Path(home) / "pipeline.json"
    if path.is_file():
        try:
            given = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(given, dict):
                raise ValueError("it must hold a JSON object")
            unknown = sorted(set(given) - {"candidates", "policy"})
            if unknown:
                raise ValueError(f"unknown key(s) {unknown}; known: candidates, policy")
            if "candidates" in given:
                config["candidates"] = check_candidates(given["candidates"])
            config["policy"] |= check_policy(given.get("policy"))
        except ValueError as exc:
            raise ValueError(f"{path} is not a valid pipeline configuration: {exc}") from None
    return config


def pipeline_input(home: Path, source: dict, *, candidates: list | None = None, policy: dict | None = None,
                   trigger: dict | None = None) -> dict:
    """A run's input; ValueError when the candidates, the policy or pipeline.json are wrong."""
    config = default_pipeline_input(home)
    return {"source": source, "candidates": check_candidates(candidates) or config["candidates"],
            "policy": config["policy"] | check_policy(policy), "trigger": trigger or {}}


class PipelineTriggers:
    """Consumes trigger messages and keeps each one in flight until its run ends."""

    def __init__(self, backend: Backend, home: Path, db: SqliteDatabase):
        self.backend, self.home, self.db = backend, Path(home), db
        db.ensure(SCHEMA)
        self._tracked: dict[str, tuple[Message, str]] = {}  # message id -> (message, execution id)

    def record(self, source: str, detail: dict, execution: str | None, outcome: str) -> None:
        self.db.execute("INSERT INTO pipeline_triggers (at, source, detail, execution, outcome) "
                        "VALUES (datetime('now'), ?, ?, ?, ?)", (source, json.dumps(detail), execution, outcome))

    def triggers(self, limit: int = 100) -> list[dict]:
        rows = self.db.query("SELECT * FROM pipeline_triggers ORDER BY id DESC LIMIT ?", (limit,))
        return [{**r, "detail": json.loads(r["detail"])} for r in rows]

    def dropped_again(self, name: str, key: str, sha256: str) -> None:
        """A file whose content is already in the store was dropped again: a no-op when its
        run exists and is not a failure worth retrying; otherwise its event is published
        again (the run starts, or is redriven: a dead-lettered drop gets another go)."""
        try:
            execution = self.backend.state_machines.describe(file_run_name(sha256))
        except BackendError:
            execution = None
        if execution is not None and not (execution.status == "FAILED" and execution.error not in FINAL_ERRORS):
            self.record("inbox", {"file": name, "key": key}, execution.name, "duplicate")
            log.info("inbox: %s is the content of run %s again: nothing to do", name, execution.name)
            return
        self.backend.events.publish(OBJECT_CREATED, {"type": "object.created", "key": key, "sha256": sha256,
                                                     "dropped_again": True},
                                    dedup_key=f"{key}:{sha256}:again:{uuid.uuid4().hex}")

    # -- one pass --------------------------------------------------------------------------
    def poll(self) -> None:
        for queue in QUEUES:
            for message in self.backend.events.receive(queue, max_messages=5, visibility_timeout=VISIBILITY_SECONDS,
                                                       max_receives=MAX_RECEIVES):
                try:
                    self._handle(message)
                except Exception as exc:  # a bad message (or config) must not stop the others
                    log.warning("trigger %s on %s failed: %s", message.id, queue, exc)
                    self._give_up_or_retry(message, f"{type(exc).__name__}: {exc}")
        self._follow()

    def _request(self, message: Message) -> tuple[str, str, dict, dict]:
        """(source, execution name, input, detail) for a trigger message."""
        body = message.body
        if message.queue == OBJECT_CREATED:
            sha = body["sha256"]
            source = {"object_key": body["key"]}
            return "inbox", file_run_name(sha), pipeline_input(self.home, source, trigger={
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
            ours = execution.input.get("trigger", {}).get("message_id") == message.id
            retriable = execution.status == "FAILED" and execution.error not in FINAL_ERRORS
            if not retriable:
                if not ours:  # another trigger for the same thing (the same file dropped twice)
                    self.record(kind, detail, execution.name, "duplicate")
                    log.info("%s trigger is a duplicate of run %s: nothing to do", kind, execution.name)
                if execution.status in ("PENDING", "RUNNING") and ours:
                    self._tracked[message.id] = (message, execution.id)  # redelivered after a restart
                else:
                    self.backend.events.ack(message)
                return
            # a run that failed, asked for again: by our own redelivery after its failure,
            # or by a new trigger (a dead letter redriven, the file dropped again)
            execution = machines.redrive(execution.id)
            self.record(kind, detail, execution.name, f"redriven ({self._failures(message.id)} failure(s) so far)")
        self._tracked[message.id] = (message, execution.id)

    def _failures(self, message_id: str, add: int = 0) -> int:
        """How often the runs of one trigger message failed: persisted, because a restart of
        the platform redelivers a message without anything having failed."""
        with self.db.transaction() as conn:
            if add:
                conn.execute("INSERT INTO pipeline_trigger_failures (message_id, failures) VALUES (?, ?) "
                             "ON CONFLICT(message_id) DO UPDATE SET failures = failures + ?", (message_id, add, add))
            row = conn.execute("SELECT failures FROM pipeline_trigger_failures WHERE message_id = ?",
                               (message_id,)).fetchone()
        return row[0] if row else 0

    def _give_up_or_retry(self, message: Message, error: str) -> None:
        """Redeliver (the run is redriven then) until ``MAX_ATTEMPTS`` failures; then the
        message goes to the dead letters with the error: nothing is lost, and
        ``hsops pipeline dead-letters --redrive ID`` tries again."""
        if self._failures(message.id, add=1) >= MAX_ATTEMPTS:
            self.backend.events.dead_letter(message, error)
            log.warning("trigger %s dead-lettered: %s", message.id, error)
        else:
            self.backend.events.nack(message, error, delay=1.0)

    def _follow(self) -> None:
        """Ack the triggers whose run succeeded (or failed on its data); retry or
        dead-letter the others with the run's error."""
        for message_id, (message, execution_id) in list(self._tracked.items()):
            execution = self.backend.state_machines.describe(execution_id)
            try:
                if execution.status in ("PENDING", "RUNNING"):
                    self.backend.events.extend(message, VISIBILITY_SECONDS)
                    continue
                del self._tracked[message_id]
                if execution.status == "FAILED" and execution.error not in FINAL_ERRORS:
                    self._give_up_or_retry(message, f"run {execution.name} failed: {execution.error}: "
                                                    f"{execution.cause}")
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

    def __init__(self, backend: Backend, inbox: Path, *, settle_seconds: float = 2.0, on_duplicate=None):
        """``on_duplicate(name, key, sha256)``: told when a file's content is already in the store."""
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
            if now - seen[2] < self.settle_seconds or _open_for_writing(path):
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
            self.on_duplicate(path.name, key, sha)
        log.info("inbox: %s -> %s%s", path.name, key, " (already there)" if duplicate else "")
        return key


def _open_for_writing(path: Path) -> bool:
    """Whether any process we can see holds ``path`` open for writing (a copy in progress
    that paused longer than the settle time). Reads /proc: Linux only; elsewhere, and for
    other users' processes, only the settle time protects."""
    try:
        target = os.stat(path)
    except FileNotFoundError:
        return False
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in os.scandir(fd_dir):
                try:
                    st = os.stat(fd.path)
                except OSError:
                    continue
                if (st.st_ino, st.st_dev) != (target.st_ino, target.st_dev):
                    continue
                flags = (fd_dir.parent / "fdinfo" / fd.name).read_text().split("flags:")[1].split()[0]
                if int(flags, 8) & (os.O_WRONLY | os.O_RDWR):
                    return True
        except (OSError, IndexError, ValueError):
            continue
    return False


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
