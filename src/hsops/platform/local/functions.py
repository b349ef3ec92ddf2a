"""The local FunctionRuntime: invocations in SQLite, run by a pool of worker processes.

``invoke`` only inserts a row (``fn_invocations``); worker processes
(``hsops.platform.local.worker``) claim rows one at a time and store the outcome, so
``get``/``wait`` work from any process, with or without a supervisor. A supervisor
thread (``start()``) keeps the pool between ``min_workers`` and ``max_workers``: it
spawns a worker when queued invocations outnumber idle workers; workers leave by
themselves after ``idle_timeout`` seconds without work (scale to zero), so the first
invocation after a quiet spell pays a cold start, as on Lambda.

Workers are listed in ``fn_workers`` with the supervisor that manages them. Every tick
the supervisor checks its workers (its children by ``waitpid``, others by their
``/proc`` identity, pid plus start time) and fails the invocation of a dead one with
``Runtime.WorkerLost``, naming the pid and its exit signal or code. A supervisor that
died leaves its workers running: they finish and store their results, and the next
supervisor adopts them (the dead one's pid is gone, or its heartbeat in
``supervisor_beat`` is stale) instead of counting them twice or killing them. A
running invocation whose lease lapsed and whose worker is nowhere to be found is
failed the same way.

``stop(grace)`` sends SIGTERM to the workers this supervisor manages (spawned or
adopted); each finishes the invocation in hand and exits. Those still alive after
``grace`` seconds are killed and their invocations queued again, to run from the start
at the next ``start()``: stopping the platform is not a failure of the handler, and must
not use up a run's retries (handlers are idempotent by contract, so running one again
is safe). A worker that dies on its own still fails its invocation with
``Runtime.WorkerLost``. Invocations still queued stay queued for the next ``start()``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import hsops
from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import BackendError, FunctionRuntime, Invocation
from hsops.platform.local.worker import DEFAULT_TIMEOUT_S, iso, process_identity

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 256 * 1024  # Lambda's limit for an asynchronous invocation
BEAT_S = 1.0  # how often a supervisor marks its workers as still managed
ORPHAN_AFTER_S = 5.0  # a supervisor silent this long is dead (its pid may live on)
STATUSES = ("queued", "running", "succeeded", "failed")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS fn_invocations (
        id TEXT PRIMARY KEY,
        function TEXT NOT NULL,
        handler TEXT NOT NULL,  -- "module:callable" resolved at invoke: any worker can run it
        status TEXT NOT NULL,
        payload TEXT NOT NULL,
        idempotency_key TEXT UNIQUE,
        result TEXT, error TEXT, cause TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        cold_start INTEGER NOT NULL DEFAULT 0,
        init_ms REAL, duration_ms REAL, peak_memory_mb REAL, billed_memory_mb INTEGER, cost_usd REAL,
        worker_pid INTEGER,
        lease_until REAL,  -- epoch seconds; renewed by the worker's heartbeat
        created_at TEXT NOT NULL, started_at TEXT, ended_at TEXT)""",
    "CREATE INDEX IF NOT EXISTS fn_invocations_status ON fn_invocations (status)",
    """CREATE TABLE IF NOT EXISTS fn_workers (
        pid INTEGER PRIMARY KEY,
        ident TEXT,  -- process_identity(pid): tells this process from a later one with its pid
        supervisor TEXT,  -- "<pid>:<token>" of the managing supervisor
        supervisor_beat REAL,
        state TEXT NOT NULL,  -- starting | idle | busy
        invocation_id TEXT,
        spawned_at REAL, ready_at REAL, heartbeat REAL,
        stop_by REAL)  -- set by stop(): the end of the grace period""",
)


def _encode_payload(payload) -> str:
    if not isinstance(payload, dict):
        raise BackendError(f"a payload must be a JSON object (a dict), not {type(payload).__name__}")
    try:
        body = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise BackendError(f"the payload is not JSON-serialisable: {exc}") from None
    size = len(body.encode("utf-8"))
    if size > MAX_PAYLOAD_BYTES:
        raise BackendError(f"the payload is {size} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES} (256 KiB)")
    return body


def _invocation(row) -> Invocation:
    return Invocation(
        id=row["id"], function=row["function"], status=row["status"], payload=json.loads(row["payload"]),
        result=json.loads(row["result"]) if row["result"] is not None else None,
        error=row["error"], cause=row["cause"], attempts=row["attempts"], cold_start=bool(row["cold_start"]),
        init_ms=row["init_ms"], duration_ms=row["duration_ms"], peak_memory_mb=row["peak_memory_mb"],
        billed_memory_mb=row["billed_memory_mb"], cost_usd=row["cost_usd"],
        started_at=row["started_at"], ended_at=row["ended_at"])


def _fail_running(conn, pid: int, cause: str) -> int:
    """Fail what worker ``pid`` had in hand with ``Runtime.WorkerLost``; how many."""
    return conn.execute("UPDATE fn_invocations SET status = 'failed', error = 'Runtime.WorkerLost', cause = ?,"
                        " ended_at = ?, lease_until = NULL WHERE status = 'running' AND worker_pid = ?",
                        (cause, iso(time.time()), pid)).rowcount


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _describe_gone(pid: int) -> str:
    """How a process that is not our child ended: a zombie's /proc entry still holds its
    wait status (field 52); once reaped by its new parent, nothing tells."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "Z" and len(fields) > 49:
            status = int(fields[49])
            return _describe_exit(-(status & 0x7F) if status & 0x7F else status >> 8)
    except (OSError, ValueError):
        pass
    return "is gone (exit status unknown: it was not this supervisor's child)"


class LocalFunctionRuntime(FunctionRuntime):
    def __init__(self, db: SqliteDatabase, home: Path, functions: dict[str, str], *, max_workers: int = 2,
                 min_workers: int = 0, idle_timeout: float = 60.0, poll_interval: float = 0.05,
                 timeout: float = DEFAULT_TIMEOUT_S):
        """``functions``: name -> ``"module:callable"``; ``timeout``: seconds a handler may
        run (``context.get_remaining_time_in_millis()``), then ``Sandbox.Timedout``."""
        if not 0 <= min_workers <= max_workers or max_workers < 1:
            raise ValueError(f"need 0 <= min_workers <= max_workers and max_workers >= 1,"
                             f" got {min_workers} and {max_workers}")
        for name, spec in functions.items():
            module, _, attr = spec.partition(":")
            if not module or not attr:
                raise BackendError(f"function {name!r}: handler {spec!r} is not 'module:callable'")
        self.db = db
        self.home = Path(home)
        self._functions = dict(functions)
        self.max_workers = max_workers
        self.min_workers = min_workers
        self.idle_timeout = idle_timeout
        self.poll_interval = poll_interval
        self.timeout = timeout
        db.ensure(SCHEMA)
        # the pid says whether the supervisor's process lives; the token tells apart two
        # runtimes in one process
        self._token = f"{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._children: dict[int, tuple[subprocess.Popen, str | None]] = {}
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()
        self._wake = threading.Event()
        self._last_beat = 0.0
        self._spawn_backoff = 0.0
        self._spawn_not_before = 0.0

    def __repr__(self) -> str:
        return f"LocalFunctionRuntime({str(self.db.path)!r}, functions={len(self._functions)})"

    # -- the contract ----------------------------------------------------------------------
    def functions(self) -> list[str]:
        return sorted(self._functions)

    def invoke(self, function: str, payload: dict, *, idempotency_key: str | None = None) -> Invocation:
        if function not in self._functions:
            raise BackendError(f"unknown function {function!r}; known: {', '.join(self.functions()) or 'none'}")
        body = _encode_payload(payload)
        invocation_id = str(uuid.uuid4())
        with self.db.transaction() as conn:
            if idempotency_key is not None:
                row = conn.execute("SELECT * FROM fn_invocations WHERE idempotency_key = ?",
                                   (idempotency_key,)).fetchone()
                if row is not None:
                    return _invocation(row)
            conn.execute("INSERT INTO fn_invocations (id, function, handler, status, payload, idempotency_key,"
                         " created_at) VALUES (?, ?, ?, 'queued', ?, ?, ?)",
                         (invocation_id, function, self._functions[function], body, idempotency_key,
                          iso(time.time())))
        self._wake.set()  # the supervisor looks at the queue now rather than at its next tick
        return Invocation(id=invocation_id, function=function, status="queued", payload=json.loads(body))

    def get(self, invocation_id: str) -> Invocation:
        row = self.db.execute("SELECT * FROM fn_invocations WHERE id = ?", (invocation_id,)).fetchone()
        if row is None:
            raise BackendError(f"no invocation {invocation_id!r}")
        return _invocation(row)

    def wait(self, invocation_id: str, timeout: float | None = None) -> Invocation:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.02
        while True:
            invocation = self.get(invocation_id)
            if invocation.done:
                return invocation
            pause = delay
            if deadline is not None:
                pause = min(pause, deadline - time.monotonic())
                if pause <= 0:
                    return invocation
            time.sleep(pause)
            delay = min(delay * 1.5, 0.2)

    def stats(self) -> dict:
        workers = self.db.query("SELECT pid, ident FROM fn_workers")
        init = sorted(r["init_ms"] for r in self.db.query(
            "SELECT init_ms FROM fn_invocations WHERE cold_start = 1 AND init_ms IS NOT NULL"))
        counts = dict.fromkeys(STATUSES, 0)
        for r in self.db.query("SELECT status, count(*) AS n FROM fn_invocations GROUP BY status"):
            counts[r["status"]] = r["n"]
        cold_starts = self.db.query("SELECT count(*) AS n FROM fn_invocations WHERE cold_start = 1")[0]["n"]
        return {"workers": sum(1 for w in workers if self._alive(w)), "max_workers": self.max_workers,
                "cold_starts": cold_starts,
                "init_ms": {"p50": statistics.median(init) if init else None, "max": init[-1] if init else None},
                "invocations": counts}

    # -- supervisor ------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._halt.clear()
        self._thread = threading.Thread(target=self._supervise, name="hsops-fn-supervisor", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 10.0) -> None:
        if self._thread is not None:
            self._halt.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        managed = {r["pid"]: r["ident"] for r in self.db.query(
            "SELECT pid, ident FROM fn_workers WHERE supervisor = ?", (self._token,))}
        managed.update({pid: ident for pid, (_, ident) in self._children.items()})
        if not managed:
            return
        with self.db.transaction() as conn:  # the worker's own deadline, should it outlive us
            conn.execute("UPDATE fn_workers SET stop_by = ? WHERE supervisor = ?",
                         (time.time() + grace, self._token))
        self._signal(managed, signal.SIGTERM)
        remaining = self._await_exit(managed, grace)
        if remaining:
            self._signal(remaining, signal.SIGKILL)
            self._await_exit(remaining, 5.0)
        for pid, ident in managed.items():
            if pid in remaining:
                self._bury(pid, "platform stopped", ident, requeue=True)
            else:  # exited on SIGTERM: it held nothing, unless it died some other way meanwhile
                self._bury(pid, f"worker pid {pid} {self._how_gone(pid)} during the invocation", ident)
        self._children.clear()

    def _signal(self, pids: dict[int, str | None], signum: int) -> None:
        for pid, ident in pids.items():
            if self._alive({"pid": pid, "ident": ident}):
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def _await_exit(self, pids: dict[int, str | None], timeout: float) -> dict[int, str | None]:
        """Wait until the processes are gone; those still alive after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            alive = {pid: ident for pid, ident in pids.items() if self._alive({"pid": pid, "ident": ident})}
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(0.02)

    def _alive(self, worker) -> bool:
        pid = worker["pid"]
        child = self._children.get(pid)
        if child is not None:
            return child[0].poll() is None  # poll() also reaps: no zombies left
        ident = process_identity(pid)
        return ident is not None and (worker["ident"] is None or ident == worker["ident"])

    def _how_gone(self, pid: int) -> str:
        child = self._children.pop(pid, None)
        return _describe_exit(child[0].wait()) if child is not None else _describe_gone(pid)

    def _supervise(self) -> None:
        while not self._halt.is_set():
            try:
                self._tick()
            except Exception:  # a busy or broken database must not end supervision for good
                log.exception("function supervisor tick failed")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def _tick(self) -> None:
        now = time.time()
        for pid, (proc, ident) in list(self._children.items()):
            if proc.poll() is not None:
                self._bury(pid, f"worker pid {pid} {self._how_gone(pid)} during the invocation", ident)
        live = []
        for w in self.db.query("SELECT * FROM fn_workers"):
            mine = w["supervisor"] == self._token
            if not mine and not self._orphaned(w, now):
                live.append(w)  # another live supervisor's: counted, not ours to judge
            elif not self._alive(w):
                how = self._how_gone(w["pid"])
                self._bury(w["pid"], f"worker pid {w['pid']} {how} during the invocation", w["ident"])
            else:
                if not mine and self._adopt(w):
                    log.info("adopted worker pid %s from supervisor %s", w["pid"], w["supervisor"])
                live.append(w)
        if any(w["state"] != "starting" for w in live):
            self._spawn_backoff = 0.0  # workers boot fine: no reason to hold back spawns
        self._expire_leases(now, {w["pid"] for w in live})
        if now - self._last_beat >= BEAT_S:
            self.db.execute("UPDATE fn_workers SET supervisor_beat = ? WHERE supervisor = ?", (now, self._token))
            self._last_beat = now
        self._scale(live, now)

    def _orphaned(self, worker, now: float) -> bool:
        supervisor = worker["supervisor"]
        if not supervisor or (worker["supervisor_beat"] or 0.0) < now - ORPHAN_AFTER_S:
            return True
        pid = int(supervisor.split(":", 1)[0])
        return pid != os.getpid() and process_identity(pid) is None

    def _adopt(self, worker) -> bool:
        with self.db.transaction() as conn:  # compare-and-set: one adopter wins
            return conn.execute("UPDATE fn_workers SET supervisor = ?, supervisor_beat = ? WHERE pid = ?"
                                " AND supervisor IS ?", (self._token, time.time(), worker["pid"],
                                                         worker["supervisor"])).rowcount == 1

    def _bury(self, pid: int, cause: str, ident: str | None, *, requeue: bool = False) -> None:
        """Forget a dead worker and fail the invocation it had in hand, if any, with ``cause``
        (or, with ``requeue``, put it back in the queue)."""
        with self.db.transaction() as conn:
            if requeue:
                conn.execute("UPDATE fn_invocations SET status = 'queued', worker_pid = NULL, lease_until = NULL"
                             " WHERE status = 'running' AND worker_pid = ?", (pid,))
                lost = 0
            else:
                lost = _fail_running(conn, pid, cause)
            row = conn.execute("DELETE FROM fn_workers WHERE pid = ? AND (ident IS ? OR ? IS NULL)"
                               " RETURNING state", (pid, ident, ident)).fetchone()
        if lost:
            log.warning("%s: %d invocation(s) failed with Runtime.WorkerLost", cause, lost)
        if row is not None and row["state"] == "starting" and not self._halt.is_set():
            # died booting (a broken install?): back off rather than respawn at every tick
            self._spawn_backoff = min(max(self._spawn_backoff * 2, 0.5), 30.0)
            self._spawn_not_before = time.time() + self._spawn_backoff
            log.error("worker pid %s died before it was ready; see %s", pid, self._log_dir() / f"{pid}.log")

    def _expire_leases(self, now: float, live_pids: set[int]) -> None:
        for r in self.db.query("SELECT id, worker_pid, lease_until FROM fn_invocations WHERE status = 'running'"
                               " AND lease_until < ?", (now,)):
            if r["worker_pid"] in live_pids:
                continue
            cause = (f"the lease of worker pid {r['worker_pid']} lapsed {now - r['lease_until']:.0f} s ago"
                     f" and no such worker is alive")
            with self.db.transaction() as conn:
                conn.execute("UPDATE fn_invocations SET status = 'failed', error = 'Runtime.WorkerLost',"
                             " cause = ?, ended_at = ?, lease_until = NULL WHERE id = ? AND status = 'running'",
                             (cause, iso(now), r["id"]))

    def _scale(self, live: list, now: float) -> None:
        idle = sum(1 for w in live if w["state"] in ("starting", "idle"))
        queued = self.db.query("SELECT count(*) AS n FROM fn_invocations WHERE status = 'queued'")[0]["n"]
        wanted = max(queued - idle, self.min_workers - len(live), 0)
        if wanted == 0 or len(live) >= self.max_workers or now < self._spawn_not_before:
            return
        with self.db.transaction() as conn:  # counted again under the lock: two supervisors, one cap
            total = conn.execute("SELECT count(*) FROM fn_workers").fetchone()[0]
            for _ in range(min(wanted, self.max_workers - total)):
                self._spawn(conn)

    def _log_dir(self) -> Path:
        return self.home / "logs" / "workers"

    def _spawn(self, conn) -> None:
        logs = self._log_dir()
        logs.mkdir(parents=True, exist_ok=True)
        _prune_logs(logs, {r[0] for r in conn.execute("SELECT pid FROM fn_workers")})
        env = dict(os.environ, HSOPS_HOME=str(self.home), PYTHONUNBUFFERED="1")
        src = Path(hsops.__file__).resolve().parents[1]
        if src.name not in ("site-packages", "dist-packages"):  # a checkout: make sure the worker finds it
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH")) if p)
        spawning = logs / f"spawning-{uuid.uuid4().hex}.log"
        spawned_at = time.time()
        with open(spawning, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hsops.platform.local.worker", "--db", str(self.db.path),
                 "--spawned-at", repr(spawned_at), "--idle-timeout", repr(self.idle_timeout),
                 "--min-workers", str(self.min_workers), "--poll-interval", repr(self.poll_interval),
                 "--timeout", repr(self.timeout)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)  # no terminal Ctrl-C mid-handler: stop() ends workers
        os.replace(spawning, logs / f"{proc.pid}.log")  # the worker keeps writing to the renamed file
        ident = process_identity(proc.pid)
        self._children[proc.pid] = (proc, ident)
        # a row left with this pid was an earlier process's, dead since: what it held is lost
        _fail_running(conn, proc.pid, f"worker pid {proc.pid} is gone (its pid now names another process)")
        conn.execute("INSERT OR REPLACE INTO fn_workers (pid, ident, supervisor, supervisor_beat, state,"
                     " spawned_at) VALUES (?, ?, ?, ?, 'starting', ?)",
                     (proc.pid, ident, self._token, spawned_at, spawned_at))


KEEP_WORKER_LOGS = 200  # the newest logs of exited workers kept for post-mortems


def _prune_logs(logs: Path, live: set[int]) -> None:
    """Remove the logs of exited workers beyond the newest ``KEEP_WORKER_LOGS``: one file
    per spawned worker would otherwise grow without bound on a long-running platform."""
    entries = []
    for path in logs.glob("*.log"):
        try:
            entries.append((path.stat().st_mtime, path))
        except FileNotFoundError:
            continue
    for _, path in sorted(entries, reverse=True)[KEEP_WORKER_LOGS:]:
        if not (path.stem.isdigit() and int(path.stem) in live):
            path.unlink(missing_ok=True)
