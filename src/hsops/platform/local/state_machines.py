"""Step Functions on one machine: executions of ASL definitions, persisted in SQLite.

An execution row holds its definition (so a resumed run follows the definition it
started with), input, status and owner. Each step is journaled by the interpreter
(``asl.SqliteJournal``); a run whose owner died (``kill -9``) is claimed by the next
driver and replayed from its journal: finished steps return their stored output, the
step in flight re-attaches to its invocation by idempotency key, and the run goes on.

Ownership is a lease: the owner's pid plus a heartbeat. A run is orphaned when its
owner's pid is gone or the heartbeat is older than ``LEASE_SECONDS``; claiming is one
``UPDATE ... WHERE`` inside ``BEGIN IMMEDIATE``, so two drivers never run it together.

``redrive`` re-runs a failed execution from the step that failed, as Step Functions'
RedriveExecution does: failed step records are set aside (renamed, kept in the history),
finished ones reused, and the idempotency keys of new attempts carry the redrive count
so they do not re-attach to the failed invocations.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from hsops._fs import _alive
from hsops._pricing import STEP_FUNCTIONS_TRANSITION_USD
from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import (
    BackendError,
    Execution,
    ExecutionExists,
    FunctionRuntime,
    StateMachines,
)
from hsops.platform.local.asl import (
    ExecutionFailed,
    Interpreter,
    SqliteJournal,
    Stopped,
    TaskFailed,
    TaskOutcome,
    validate_definition,
)

LEASE_SECONDS = 30.0
LAMBDA_INVOKE = "arn:aws:states:::lambda:invoke"
LIFECYCLE = "hsops-lifecycle"
ACTIVE = ("PENDING", "RUNNING")
REDRIVEN = "~redriven"  # suffix of the keys of steps a redrive set aside

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sm_executions (
        id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, state_machine TEXT NOT NULL,
        definition TEXT NOT NULL, input TEXT NOT NULL, status TEXT NOT NULL,
        output TEXT, error TEXT, cause TEXT, created_at TEXT NOT NULL, started_at TEXT, ended_at TEXT,
        owner_pid INTEGER, heartbeat REAL, redrive_count INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX IF NOT EXISTS sm_executions_status ON sm_executions (status, created_at)",
)


def _iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), timezone.utc).isoformat(
        timespec="milliseconds")


def _redrive_keys(steps) -> list[str]:
    """Steps a redrive runs again: every failed or unfinished step that never succeeded in
    any attempt, and the top-level steps that ran after the first of those (the Catch
    path to the Fail state), so the run restarts at its first failure, not at the Fail
    state. Finished steps (a Task retried to success, a Map's other items) are reused."""
    def base(key: str) -> str:
        return re.sub(r"@\d+$", "", key)

    steps = [s for s in steps if REDRIVEN not in s.key]  # set aside by an earlier redrive
    succeeded = {base(s.key) for s in steps if s.status == "succeeded"}
    again = [s for s in steps if s.status == "running" or (s.status == "failed" and base(s.key) not in succeeded)]
    if not again:
        return []
    first_end = min((s.ended_at or s.started_at) for s in again)
    keys = {s.key for s in again}
    keys |= {s.key for s in steps if "/" not in s.key and s.started_at >= first_end}
    return [s.key for s in steps if s.key in keys]


def lifecycle_definition() -> dict:
    return json.loads((Path(__file__).parents[2] / "pipeline" / "lifecycle.asl.json").read_text())


class LocalStateMachines(StateMachines):
    def __init__(self, db: SqliteDatabase, functions: FunctionRuntime, *, poll_interval: float = 0.2):
        self.db = db
        self.functions = functions
        self.poll_interval = poll_interval
        self._definitions: dict[str, dict] = {}
        self._running: dict[str, Interpreter] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._driver: threading.Thread | None = None
        db.ensure(SCHEMA)
        SqliteJournal(db, "-")  # creates the journal table before any reader looks
        self.register(LIFECYCLE, lifecycle_definition())

    # -- definitions ----------------------------------------------------------------------
    def register(self, name: str, definition: dict) -> None:
        problems = validate_definition(definition)
        if problems:
            raise BackendError(f"state machine {name!r} is not valid: {'; '.join(problems)}")
        self._definitions[name] = definition

    def state_machine_names(self) -> list[str]:
        return sorted(self._definitions)

    # -- the contract ---------------------------------------------------------------------
    def start(self, state_machine: str, input: dict, *, name: str | None = None,
              owner_pid: int | None = None) -> Execution:
        """``owner_pid``: claim the run at once for a caller that drives it itself (``run``)."""
        if state_machine not in self._definitions:
            raise BackendError(f"unknown state machine {state_machine!r}; known: {self.state_machine_names()}")
        if not isinstance(input, dict):
            raise BackendError(f"an execution input must be a JSON object, got {type(input).__name__}")
        execution_id = uuid.uuid4().hex
        name = name or execution_id
        now = time.time()
        with self.db.transaction() as conn:
            existing = conn.execute("SELECT id FROM sm_executions WHERE name = ?", (name,)).fetchone()
            if existing:
                raise ExecutionExists(name, existing["id"])
            conn.execute(
                "INSERT INTO sm_executions (id, name, state_machine, definition, input, status, created_at,"
                " started_at, owner_pid, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (execution_id, name, state_machine, json.dumps(self._definitions[state_machine]),
                 json.dumps(input), "RUNNING" if owner_pid else "PENDING", _iso(now),
                 _iso(now) if owner_pid else None, owner_pid, now if owner_pid else None))
        return self.describe(execution_id)

    def describe(self, execution_id: str) -> Execution:
        rows = self.db.query("SELECT * FROM sm_executions WHERE id = ? OR name = ?", (execution_id, execution_id))
        if not rows:
            raise BackendError(f"no execution {execution_id!r}")
        return self._execution(rows[0])

    def list(self, *, status: str | None = None, limit: int = 100) -> list[Execution]:
        sql, params = "SELECT * FROM sm_executions", ()
        if status:
            sql, params = sql + " WHERE status = ?", (status,)
        rows = self.db.query(sql + " ORDER BY created_at DESC LIMIT ?", params + (int(limit),))
        return [self._execution(r) for r in rows]

    def history(self, execution_id: str) -> list[dict]:
        """Each step with its function's cost (``cost_usd``); the execution's cost adds
        one state transition per step (``STEP_FUNCTIONS_TRANSITION_USD``)."""
        execution = self.describe(execution_id)
        out = []
        for step in SqliteJournal(self.db, execution.id).steps():
            duration = None if step.ended_at is None else round(1000 * (step.ended_at - step.started_at), 1)
            redrive = int(step.key.rsplit(REDRIVEN, 1)[1]) if REDRIVEN in step.key else None
            out.append({"key": step.key, "state": step.state, "type": step.type, "attempt": step.attempt,
                        "before_redrive": redrive,
                        "status": step.status, "started_at": _iso(step.started_at),
                        "ended_at": _iso(step.ended_at) if step.ended_at else None, "duration_ms": duration,
                        "cost_usd": step.cost_usd, "error": step.error, "cause": step.cause,
                        "invocation_id": step.invocation_id, **{k: v for k, v in (step.data or {}).items()
                                                                if k in ("duration_ms_billed", "peak_memory_mb",
                                                                         "billed_memory_mb", "cold_start",
                                                                         "init_ms", "function")}})
        return out

    def _execution(self, row: dict) -> Execution:
        totals = self.db.query("SELECT COALESCE(SUM(cost_usd), 0) AS c, COUNT(*) AS n FROM sm_steps "
                               "WHERE execution_id = ?", (row["id"],))[0]
        cost = totals["c"] + totals["n"] * STEP_FUNCTIONS_TRANSITION_USD
        return Execution(id=row["id"], name=row["name"], state_machine=row["state_machine"],
                         status=row["status"], input=json.loads(row["input"]),
                         output=json.loads(row["output"]) if row["output"] else None, error=row["error"],
                         cause=row["cause"], started_at=row["started_at"] or row["created_at"],
                         ended_at=row["ended_at"], cost_usd=float(cost))

    # -- driving ----------------------------------------------------------------------------
    def claim(self, execution_id: str) -> bool:
        """Take ownership of a pending or orphaned run (or confirm our own)."""
        now, pid = time.time(), os.getpid()
        with self.db.transaction() as conn:
            row = conn.execute("SELECT status, owner_pid, heartbeat FROM sm_executions WHERE id = ?",
                               (execution_id,)).fetchone()
            if row is None or row["status"] not in ACTIVE:
                return False
            owner = row["owner_pid"]
            mine = owner == pid and execution_id not in self._running
            orphaned = owner is None or not _alive(owner) or (row["heartbeat"] or 0) < now - LEASE_SECONDS
            if not (mine or orphaned):
                return False
            conn.execute("UPDATE sm_executions SET status = 'RUNNING', owner_pid = ?, heartbeat = ?, "
                         "started_at = COALESCE(started_at, ?) WHERE id = ?", (pid, now, _iso(now), execution_id))
        return True

    def run(self, execution_id: str) -> Execution:
        """Drive a claimed execution to its end in this thread (``Stopped`` when ``stop()``
        is called first: the run stays RUNNING, released, for the next driver)."""
        execution = self.describe(execution_id)
        row = self.db.query("SELECT definition, redrive_count FROM sm_executions WHERE id = ?", (execution.id,))[0]
        interpreter = Interpreter(
            json.loads(row["definition"]), self._task_runner(execution.id, row["redrive_count"]),
            SqliteJournal(self.db, execution.id),
            context={"Execution": {"Id": execution.id, "Name": execution.name, "StartTime": execution.started_at},
                     "StateMachine": {"Name": execution.state_machine}})
        with self._lock:
            self._running[execution.id] = interpreter
        beat = threading.Thread(target=self._heartbeat, args=(execution.id,), daemon=True)
        beat.start()
        try:
            output = interpreter.run(execution.input)
            self._finish(execution.id, "SUCCEEDED", output=output)
        except ExecutionFailed as exc:
            self._finish(execution.id, "FAILED", error=exc.error, cause=exc.cause)
        except Stopped:
            self.db.execute("UPDATE sm_executions SET owner_pid = NULL, heartbeat = NULL WHERE id = ?",
                            (execution.id,))
            raise
        finally:
            with self._lock:
                self._running.pop(execution.id, None)
        return self.describe(execution.id)

    def _heartbeat(self, execution_id: str) -> None:
        while execution_id in self._running and not self._stop.wait(LEASE_SECONDS / 3):
            self.db.execute("UPDATE sm_executions SET heartbeat = ? WHERE id = ? AND owner_pid = ?",
                            (time.time(), execution_id, os.getpid()))

    def _finish(self, execution_id: str, status: str, *, output=None, error=None, cause=None) -> None:
        self.db.execute("UPDATE sm_executions SET status = ?, output = ?, error = ?, cause = ?, ended_at = ?, "
                        "owner_pid = NULL, heartbeat = NULL WHERE id = ?",
                        (status, json.dumps(output) if output is not None else None, error, cause, _iso(),
                         execution_id))

    def redrive(self, execution_id: str) -> Execution:
        """Re-run a FAILED execution from where it failed (finished steps are kept; the
        failed ones stay in the history, marked ``before_redrive``)."""
        execution = self.describe(execution_id)
        if execution.status != "FAILED":
            raise BackendError(f"only a FAILED execution can be redriven; {execution.name} is {execution.status}")
        journal = SqliteJournal(self.db, execution.id)
        keys = _redrive_keys(journal.steps())
        with self.db.transaction() as conn:
            count = conn.execute("SELECT redrive_count FROM sm_executions WHERE id = ?",
                                 (execution.id,)).fetchone()[0] + 1
            # renamed, not deleted: the history keeps what failed (and its cost), and the
            # interpreter, looking steps up by key, runs them afresh
            conn.executemany("UPDATE sm_steps SET key = ? WHERE execution_id = ? AND key = ?",
                             [(f"{key}{REDRIVEN}{count}", execution.id, key) for key in keys])
            conn.execute("UPDATE sm_executions SET status = 'PENDING', error = NULL, cause = NULL, output = NULL, "
                         "ended_at = NULL, redrive_count = ? WHERE id = ?", (count, execution.id))
        return self.describe(execution.id)

    def _task_runner(self, execution_id: str, redrive_count: int):
        def run_task(resource: str, payload, *, key: str, timeout: float | None) -> TaskOutcome:
            if resource == LAMBDA_INVOKE:
                if not isinstance(payload, dict) or not payload.get("FunctionName"):
                    raise TaskFailed("States.Runtime", "lambda:invoke needs Parameters.FunctionName")
                function, event, wrap = payload["FunctionName"], payload.get("Payload", {}), True
            elif ":function:" in resource:  # a Lambda ARN: the payload is the handler's event
                function, event, wrap = resource.rsplit(":function:", 1)[1].split(":")[0], payload, False
            else:
                raise TaskFailed("States.Runtime", f"resource {resource!r} is not supported locally")
            if not isinstance(event, dict):
                raise TaskFailed("States.Runtime", f"the payload for {function} must be a JSON object")
            try:
                invocation = self.functions.invoke(function, event,
                                                   idempotency_key=f"{execution_id}:r{redrive_count}:{key}")
            except BackendError as exc:
                raise TaskFailed("Lambda.ResourceNotFoundException", str(exc)) from None
            deadline = None if timeout is None else time.monotonic() + timeout
            while not invocation.done:
                if self._stop.is_set():
                    raise Stopped()
                if deadline is not None and time.monotonic() > deadline:
                    raise TaskFailed("States.Timeout", f"{function} ran longer than {timeout:g} s")
                invocation = self.functions.wait(invocation.id, timeout=1.0)
            details = {"function": function, "peak_memory_mb": invocation.peak_memory_mb,
                       "billed_memory_mb": invocation.billed_memory_mb, "cold_start": invocation.cold_start,
                       "init_ms": invocation.init_ms}
            if invocation.status == "failed":
                raise TaskFailed(invocation.error or "States.TaskFailed", invocation.cause or "")
            output = ({"Payload": invocation.result, "StatusCode": 200, "ExecutedVersion": "$LATEST"}
                      if wrap else invocation.result)
            return TaskOutcome(output=output, cost_usd=invocation.cost_usd or 0.0, invocation_id=invocation.id,
                               details=details)

        return run_task

    # -- the background driver ---------------------------------------------------------------
    def start_driver(self, max_concurrent: int = 4) -> None:
        """Claim and run pending and orphaned executions in threads until ``stop()``."""
        if self._driver is not None:
            return
        self._stop.clear()
        self._max_concurrent = max_concurrent
        self._driver = threading.Thread(target=self._drive, name="hsops-executor", daemon=True)
        self._driver.start()

    def _drive(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                free = self._max_concurrent - len(self._running)
            if free > 0:
                for row in self.db.query("SELECT id FROM sm_executions WHERE status IN ('PENDING', 'RUNNING') "
                                         "ORDER BY created_at LIMIT 50"):
                    if free <= 0:
                        break
                    if row["id"] not in self._running and self.claim(row["id"]):
                        free -= 1
                        threading.Thread(target=self._run_quietly, args=(row["id"],), daemon=True).start()
            self._stop.wait(self.poll_interval)

    def _run_quietly(self, execution_id: str) -> None:
        try:
            self.run(execution_id)
        except Stopped:
            pass
        except Exception as exc:  # a bug in the executor: fail the run, keep the driver alive
            self._finish(execution_id, "FAILED", error="States.Runtime", cause=f"{type(exc).__name__}: {exc}")

    def running(self) -> list[str]:
        with self._lock:
            return list(self._running)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop driving: runs in progress stop at their next step and stay RUNNING, to be
        resumed by the next driver."""
        self._stop.set()
        with self._lock:
            interpreters = list(self._running.values())
        for interpreter in interpreters:
            interpreter.stop()
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._driver is not None:
            self._driver.join(timeout=max(0.0, deadline - time.monotonic()))
            self._driver = None
