"""A function worker process: ``python -m hsops.platform.local.worker --db PATH ...``.

Spawned by ``LocalFunctionRuntime``'s supervisor (``functions.py``), one invocation at a
time, like a Lambda execution environment:

- Claims the oldest queued invocation inside ``BEGIN IMMEDIATE``, so two workers never
  take the same one (a cheap read first, so an idle worker polls without the write lock).
- Imports a handler lazily by ``"module:callable"``; its first use in this process is a
  cold start, whose ``init_ms`` is the process's spawn-to-ready time plus the handler
  module's import time. A worker serves any function, where Lambda would boot one
  environment per function: a function's first use in a worker stands for that boot,
  so it is charged the worker's spawn-to-ready again, not only its import.
- Measures each invocation: wall time of the handler call, and the peak resident memory
  of the process (``VmHWM`` reset through ``/proc/self/clear_refs`` before the call, or
  ``VmRSS`` sampled by a thread where the reset is not permitted), priced with
  ``hsops._pricing`` as Lambda would bill it.
- A heartbeat thread renews the invocation's lease every second, so a supervisor that
  restarted can tell a dead worker from a live one; it also enforces the timeout and,
  after SIGTERM, the grace period (``fn_workers.stop_by``, set by ``stop()``).
- Exits by itself after ``--idle-timeout`` seconds without work (scale to zero), or on
  SIGTERM once the invocation in hand is done. Keeps working when its supervisor dies:
  its results land in the database all the same, and a new supervisor adopts it.

``HSOPS_FAULT_INJECT`` (comma-separated function names) makes those functions fail
with ``InjectedFault`` on every call: how the tests show retries, redrives and dead
letters on the real pipeline.

Stdout and stderr are the worker's log (``HSOPS_HOME/logs/workers/<pid>.log``): handler
prints and the traceback tail of a failed invocation go there, not into ``cause``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from hsops._pricing import invocation_cost_usd, lambda_memory_mb
from hsops._sqlite import SqliteDatabase

DEFAULT_TIMEOUT_S = 900.0  # Lambda's maximum
DEFAULT_GRACE_S = 10.0  # after SIGTERM, when stop() left no deadline
MEMORY_LIMIT_MB = 10240  # what context.memory_limit_in_mb reports: Lambda's maximum; not enforced
HEARTBEAT_S = 1.0
LEASE_S = 10.0  # a lease outlives several missed heartbeats before anyone may doubt the worker
ARN_PREFIX = "arn:aws:lambda:local:000000000000:function:"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds")


def process_identity(pid: int) -> str | None:
    """``"<boot id>:<start time>"`` of a live process; None when there is none or it is a
    zombie. A pid alone is reused; with the start time it names one process, so a stale
    row never makes us signal or wait on a stranger."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): the pid is the best we have
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return f"pid:{pid}"
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    if fields[0] in ("Z", "X"):
        return None
    return f"{_boot_id()}:{fields[19]}"  # field 22, starttime


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "boot"


class Context:
    """What a handler gets as ``context``: the Lambda context's fields, plus ``home`` and
    ``backend`` (an unstarted ``LocalBackend`` on the same home, built on first use)."""

    function_version = "$LATEST"
    memory_limit_in_mb = MEMORY_LIMIT_MB

    def __init__(self, function_name: str, request_id: str, home: Path, *,
                 timeout: float = DEFAULT_TIMEOUT_S, deadline: float | None = None, backend_factory=None):
        """``deadline``: a ``time.monotonic()`` value (default: ``timeout`` from now)."""
        self.function_name = function_name
        self.aws_request_id = request_id
        self.home = Path(home)
        self.invoked_function_arn = ARN_PREFIX + function_name
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = f"local/worker-{os.getpid()}"
        self._deadline = deadline if deadline is not None else time.monotonic() + timeout
        self._backend_factory = backend_factory

    def __repr__(self) -> str:
        return f"Context({self.function_name!r}, {self.aws_request_id!r})"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))

    @cached_property
    def backend(self):
        if self._backend_factory is not None:
            return self._backend_factory()
        from hsops.platform.local.backend import LocalBackend

        return LocalBackend(self.home)


class HandlerError(Exception):
    """A failure of the runtime around the handler: ``name`` is Lambda's error type."""

    init_ms: float | None = None  # the time spent trying to load the handler, on a cold start

    def __init__(self, name: str, cause: str):
        super().__init__(cause)
        self.name = name
        self.cause = cause


FAULT_ENV = "HSOPS_FAULT_INJECT"


class InjectedFault(RuntimeError):
    """Raised instead of calling a handler named in ``HSOPS_FAULT_INJECT``."""


def _injected_faults() -> set[str]:
    """Functions that fail on every call, for chaos tests of retries and dead letters:
    ``HSOPS_FAULT_INJECT=hsops-train,hsops-register`` in the platform's environment."""
    return {name.strip() for name in os.environ.get(FAULT_ENV, "").split(",") if name.strip()}


def load_handler(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerError("Runtime.ImportModuleError",
                           f"Unable to import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    handler = getattr(module, attr, None)
    if not callable(handler):
        raise HandlerError("Runtime.HandlerNotFound", f"{spec!r}: module {module_name!r} has no callable {attr!r}")
    return handler


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory of this process (MiB) over a ``with`` block."""

    def __enter__(self):
        self.peak_mib: float | None = None
        self._samples: list[int] = []
        self._sampler = None
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:  # not permitted (some containers): sample instead, coarser
            self._stop = threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while True:
            rss = _status_kib("VmRSS")
            if rss is not None:
                self._samples.append(rss)
            if self._stop.wait(0.005):
                return

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            peak_kib = max(self._samples, default=None)
        else:
            peak_kib = _status_kib("VmHWM")
        if peak_kib is None:  # no /proc at all: the process's lifetime peak (kB on Linux)
            peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.peak_mib = peak_kib / 1024


def accounting(duration_s: float, peak_mib: float | None) -> dict:
    billed = lambda_memory_mb(peak_mib or 0.0)
    return {"duration_ms": duration_s * 1000, "peak_memory_mb": peak_mib, "billed_memory_mb": billed,
            "cost_usd": invocation_cost_usd(duration_s, billed)}


def log(message: str) -> None:
    print(f"{iso(time.time())} worker {os.getpid()}: {message}", file=sys.stderr, flush=True)


class Worker:
    def __init__(self, db: SqliteDatabase, home: Path, *, spawned_at: float, idle_timeout: float,
                 min_workers: int, poll_interval: float, timeout: float):
        self.db = db
        self.home = home
        self.pid = os.getpid()
        self.spawned_at = spawned_at
        self.idle_timeout = idle_timeout
        self.min_workers = min_workers
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._handlers: dict[str, object] = {}
        self._boot_ms = 0.0  # spawn to ready, charged to every handler's first use
        self._current: dict | None = None  # {"id", "started", "deadline"}, read by the heartbeat
        self._term_at: float | None = None
        self._done = threading.Event()

    @cached_property
    def _backend(self):
        from hsops.platform.local.backend import LocalBackend

        return LocalBackend(self.home)  # never started: a worker runs no supervisor

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        ready = time.time()
        with self.db.transaction() as c:
            c.execute("INSERT INTO fn_workers (pid, ident, state, spawned_at, ready_at, heartbeat)"
                      " VALUES (?, ?, 'idle', ?, ?, ?) ON CONFLICT(pid) DO UPDATE SET ident = excluded.ident,"
                      " state = 'idle', invocation_id = NULL, ready_at = excluded.ready_at,"
                      " heartbeat = excluded.heartbeat",
                      (self.pid, process_identity(self.pid), self.spawned_at, ready, ready))
        self._boot_ms = max(0.0, (ready - self.spawned_at) * 1000)
        log(f"ready {self._boot_ms:.0f} ms after spawn")
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        idle_since = time.monotonic()
        reason = "SIGTERM"
        while self._term_at is None:
            invocation = self._claim()
            if invocation is not None:
                self._execute(invocation)
                idle_since = time.monotonic()
                continue
            if time.monotonic() - idle_since >= self.idle_timeout:
                if self._retire():
                    reason = f"idle for {self.idle_timeout:g} s"
                    break
                idle_since = time.monotonic()  # held back by min_workers: stay another period
            time.sleep(self.poll_interval)
        self._done.set()
        self.db.execute("DELETE FROM fn_workers WHERE pid = ?", (self.pid,))
        log(f"exiting: {reason}")

    def _on_term(self, signum, frame) -> None:
        self._term_at = time.time()  # the loop stops after the invocation in hand

    def _claim(self) -> dict | None:
        if not self.db.query("SELECT 1 FROM fn_invocations WHERE status = 'queued' LIMIT 1"):
            return None
        with self.db.transaction() as c:
            row = c.execute("SELECT id, function, handler, payload FROM fn_invocations"
                            " WHERE status = 'queued' ORDER BY rowid LIMIT 1").fetchone()
            if row is None or self._term_at is not None:
                return None
            now = time.time()
            c.execute("UPDATE fn_invocations SET status = 'running', attempts = attempts + 1, worker_pid = ?,"
                      " started_at = ?, lease_until = ? WHERE id = ?",
                      (self.pid, iso(now), now + LEASE_S, row["id"]))
            c.execute("UPDATE fn_workers SET state = 'busy', invocation_id = ?, heartbeat = ? WHERE pid = ?",
                      (row["id"], now, self.pid))
        self._current = {"id": row["id"], "started": time.monotonic(),
                         "deadline": time.monotonic() + self.timeout}
        return dict(row)

    def _handler(self, spec: str) -> tuple[object, bool, float | None]:
        """(handler, cold, init_ms); raises HandlerError when it cannot be loaded."""
        if spec in self._handlers:
            return self._handlers[spec], False, None
        t0 = time.perf_counter()
        try:
            handler = load_handler(spec)
        except HandlerError as exc:
            exc.init_ms = self._boot_ms + (time.perf_counter() - t0) * 1000
            raise
        self._handlers[spec] = handler
        return handler, True, self._boot_ms + (time.perf_counter() - t0) * 1000

    def _execute(self, inv: dict) -> None:
        fields: dict = {"status": "failed", "result": None, "error": None, "cause": None,
                        "cold_start": 1, "init_ms": None}
        try:
            handler, cold, fields["init_ms"] = self._handler(inv["handler"])
            fields["cold_start"] = int(cold)
        except HandlerError as exc:
            fields.update(error=exc.name, cause=exc.cause, init_ms=exc.init_ms, **accounting(0.0, None))
            log(f"{inv['id']} ({inv['function']}): {exc.name}: {exc.cause}")
            return self._store(inv["id"], fields)
        context = Context(inv["function"], inv["id"], self.home, deadline=self._current["deadline"],
                          backend_factory=lambda: self._backend)
        with PeakMemory() as memory:
            t0 = time.perf_counter()
            try:
                if inv["function"] in _injected_faults():
                    raise InjectedFault(f"{FAULT_ENV} makes {inv['function']} fail (fault injection)")
                result = handler(json.loads(inv["payload"]), context)
                error = None
            except Exception as exc:  # noqa: BLE001 - any handler error is the invocation's outcome
                error = exc
            duration = time.perf_counter() - t0
        fields.update(accounting(duration, memory.peak_mib))
        if error is not None:
            fields.update(error=type(error).__name__, cause=str(error))
            tail = "".join(traceback.format_exception(error)[-20:])
            log(f"{inv['id']} ({inv['function']}) failed:\n{tail}")
        else:
            try:
                if not isinstance(result, dict):
                    raise TypeError(f"it is a {type(result).__name__}")
                fields.update(status="succeeded", result=json.dumps(result, allow_nan=False))
            except (TypeError, ValueError) as exc:
                fields.update(error="Runtime.MarshalError",
                              cause=f"the handler's result must be a JSON-serialisable dict: {exc}")
                log(f"{inv['id']} ({inv['function']}): Runtime.MarshalError: {exc}")
        self._store(inv["id"], fields)

    def _store(self, invocation_id: str, fields: dict) -> None:
        now = time.time()
        columns = ", ".join(f"{name} = :{name}" for name in fields)
        with self.db.transaction() as c:
            stored = c.execute(f"UPDATE fn_invocations SET {columns}, ended_at = :ended_at, lease_until = NULL"
                               " WHERE id = :id AND status = 'running' AND worker_pid = :pid",
                               {**fields, "ended_at": iso(now), "id": invocation_id, "pid": self.pid}).rowcount
            c.execute("UPDATE fn_workers SET state = 'idle', invocation_id = NULL, heartbeat = ? WHERE pid = ?",
                      (now, self.pid))
        self._current = None
        if not stored:  # declared lost meanwhile (the lease lapsed): its outcome stands
            log(f"{invocation_id}: finished, but it was no longer ours to store")

    def _retire(self) -> bool:
        """Leave the pool (scale down) unless work arrived or the pool is at min_workers."""
        with self.db.transaction() as c:
            if c.execute("SELECT 1 FROM fn_invocations WHERE status = 'queued' LIMIT 1").fetchone():
                return False
            if c.execute("SELECT count(*) FROM fn_workers").fetchone()[0] <= self.min_workers:
                return False
            c.execute("DELETE FROM fn_workers WHERE pid = ?", (self.pid,))
        return True

    def _heartbeat(self) -> None:
        while not self._done.wait(HEARTBEAT_S):
            now = time.time()
            current = self._current
            with self.db.transaction() as c:
                c.execute("UPDATE fn_workers SET heartbeat = ? WHERE pid = ?", (now, self.pid))
                if current:
                    c.execute("UPDATE fn_invocations SET lease_until = ? WHERE id = ? AND status = 'running'"
                              " AND worker_pid = ?", (now + LEASE_S, current["id"], self.pid))
                row = c.execute("SELECT stop_by FROM fn_workers WHERE pid = ?", (self.pid,)).fetchone()
            if not current:
                continue
            if time.monotonic() > current["deadline"]:
                self._abandon(current, "Sandbox.Timedout", f"Task timed out after {self.timeout:.2f} seconds")
            elif self._term_at is not None:
                stop_by = row["stop_by"] if row and row["stop_by"] else self._term_at + DEFAULT_GRACE_S
                if now > stop_by:
                    self._abandon(current, "Runtime.WorkerLost",
                                  f"platform stopped: worker pid {self.pid} got SIGTERM and the handler"
                                  f" did not finish within the grace period")

    def _abandon(self, current: dict, error: str, cause: str) -> None:
        """Fail the invocation in hand and end the process, as Lambda resets an environment
        whose handler overran: the handler cannot be interrupted safely from this thread."""
        duration = time.monotonic() - current["started"]
        fields = {**accounting(duration, (_status_kib("VmHWM") or 0) / 1024), "error": error, "cause": cause,
                  "ended_at": iso(time.time()), "id": current["id"], "pid": self.pid}
        with self.db.transaction() as c:
            failed = c.execute("UPDATE fn_invocations SET status = 'failed', error = :error, cause = :cause,"
                               " duration_ms = :duration_ms, peak_memory_mb = :peak_memory_mb,"
                               " billed_memory_mb = :billed_memory_mb, cost_usd = :cost_usd, ended_at = :ended_at,"
                               " lease_until = NULL WHERE id = :id AND status = 'running' AND worker_pid = :pid",
                               fields).rowcount
            if failed:
                c.execute("DELETE FROM fn_workers WHERE pid = ?", (self.pid,))
        if failed:  # else the handler finished meanwhile and its result is stored
            log(f"{current['id']}: {error}: {cause}; exiting")
            os._exit(1)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hsops.platform.local.worker")
    parser.add_argument("--db", required=True, type=Path)
    parser.add_argument("--spawned-at", type=float, default=None, help="epoch seconds, for init_ms")
    parser.add_argument("--idle-timeout", type=float, default=60.0)
    parser.add_argument("--min-workers", type=int, default=0)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S)
    args = parser.parse_args(argv)
    home = Path(os.environ.get("HSOPS_HOME") or args.db.parent)
    db = SqliteDatabase(args.db)
    spawned_at = args.spawned_at if args.spawned_at is not None else time.time()
    try:
        Worker(db, home, spawned_at=spawned_at, idle_timeout=args.idle_timeout, min_workers=args.min_workers,
               poll_interval=args.poll_interval, timeout=args.timeout).run()
    finally:
        db.close()


if __name__ == "__main__":
    main()
