"""The local function runtime's own behaviour: supervisor loss and adoption, killed
workers, lapsed leases, bad handlers and results, payload limits, timeouts and stop().

Every worker writes ``logs/workers/<pid>.log``; the fixture's finalizer stops the
runtimes it made, then kills any worker of the test's home still alive, found by
those log names, so no test leaves a process behind even when it fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import hsops
from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import BackendError
from hsops.platform.local.backend import LocalBackend
from hsops.platform.local.functions import LocalFunctionRuntime
from hsops.platform.local.worker import Context, process_identity
from tests._wait import wait_for
from tests.platform.conformance.conftest import DIAGNOSTIC_FUNCTIONS

TIMEOUT = 30.0
SRC = str(Path(hsops.__file__).resolve().parents[1])


def _until(predicate, timeout: float = TIMEOUT, what: str = "condition"):
    return wait_for(predicate, timeout, what, interval=0.02)


def _is_worker_of(pid: int, home: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return "hsops.platform.local.worker" in cmdline and str(home) in cmdline


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    yield home
    # the safety net: whatever a failing test left running
    for log in (home / "logs" / "workers").glob("*.log"):
        if log.stem.isdigit() and _is_worker_of(int(log.stem), home):
            os.kill(int(log.stem), signal.SIGKILL)


@pytest.fixture
def make_runtime(home):
    made: list[tuple[LocalFunctionRuntime, SqliteDatabase]] = []

    def make(functions=None, *, start=True, **options) -> LocalFunctionRuntime:
        db = SqliteDatabase(home / "platform.db")
        options.setdefault("idle_timeout", 5.0)
        runtime = LocalFunctionRuntime(db, home, functions or DIAGNOSTIC_FUNCTIONS, **options)
        made.append((runtime, db))
        if start:
            runtime.start()
        return runtime

    yield make
    for runtime, db in made:
        runtime.stop(grace=2.0)
        db.close()


def _running(runtime, invocation_id) -> dict:
    """The invocation's row once a worker holds it."""
    rows = runtime.db.query("SELECT * FROM fn_invocations WHERE id = ? AND status = 'running'", (invocation_id,))
    return rows[0] if rows else None


SUPERVISOR_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from hsops._sqlite import SqliteDatabase
    from hsops.platform.local.functions import LocalFunctionRuntime
    home = Path(sys.argv[1])
    runtime = LocalFunctionRuntime(SqliteDatabase(home / "platform.db"), home,
                                   {"hsops-sleep": "hsops.pipeline.diagnostics:sleep"}, idle_timeout=10.0)
    runtime.start()
    print(runtime.invoke("hsops-sleep", {"seconds": float(sys.argv[2])}).id, flush=True)
    time.sleep(120)  # killed by the test long before
""")


@pytest.fixture
def doomed_supervisor(home):
    """Run a supervisor in a process of its own that invokes a sleep; the test kills it."""
    procs = []

    def run(seconds: float) -> tuple[subprocess.Popen, str]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p))
        proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR_SCRIPT, str(home), str(seconds)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, env=env, text=True)
        procs.append(proc)
        return proc, proc.stdout.readline().strip()

    yield run
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_new_supervisor_adopts_the_live_worker_of_a_dead_one(home, make_runtime, doomed_supervisor):
    proc, invocation_id = doomed_supervisor(seconds=2.0)
    observer = make_runtime(start=False)
    pid = _until(lambda: _running(observer, invocation_id), what="the sleep to start")["worker_pid"]
    proc.kill()  # the supervisor dies; its worker, in a session of its own, does not
    proc.wait()
    assert process_identity(pid) is not None

    successor = make_runtime({"hsops-sleep": "hsops.pipeline.diagnostics:sleep"}, idle_timeout=10.0)
    done = successor.wait(invocation_id, TIMEOUT)
    assert done.status == "succeeded" and done.result == {"slept": 2.0}, done
    workers = successor.db.query("SELECT pid, supervisor FROM fn_workers")
    assert workers == [{"pid": pid, "supervisor": successor._token}]  # adopted, not replaced
    assert successor.stats()["workers"] == 1
    assert [p.stem for p in (home / "logs" / "workers").glob("*.log")] == [str(pid)]  # nothing respawned
    successor.stop(grace=2.0)
    assert process_identity(pid) is None  # and an adopted worker is stopped with the rest


def test_a_worker_that_died_with_its_supervisor_fails_its_invocation(make_runtime, doomed_supervisor):
    proc, invocation_id = doomed_supervisor(seconds=60.0)
    observer = make_runtime(start=False)
    pid = _until(lambda: _running(observer, invocation_id), what="the sleep to start")["worker_pid"]
    proc.kill()
    proc.wait()
    os.kill(pid, signal.SIGKILL)
    _until(lambda: process_identity(pid) is None, what="the worker to die")

    successor = make_runtime()
    lost = successor.wait(invocation_id, TIMEOUT)
    assert lost.status == "failed" and lost.error == "Runtime.WorkerLost"
    assert f"worker pid {pid}" in lost.cause


def test_a_worker_killed_mid_invocation_is_worker_lost(make_runtime):
    runtime = make_runtime()
    inv = runtime.invoke("hsops-sleep", {"seconds": 60})
    pid = _until(lambda: _running(runtime, inv.id), what="the sleep to start")["worker_pid"]
    os.kill(pid, signal.SIGKILL)
    lost = runtime.wait(inv.id, TIMEOUT)
    assert lost.status == "failed" and lost.error == "Runtime.WorkerLost"
    assert lost.cause == f"worker pid {pid} was killed by SIGKILL during the invocation"
    assert runtime.call("hsops-echo", {}, timeout=TIMEOUT).status == "succeeded"


def test_a_lapsed_lease_without_a_live_worker_fails_the_invocation(make_runtime):
    runtime = make_runtime(start=False)
    inv = runtime.invoke("hsops-sleep", {"seconds": 1})
    dead = subprocess.Popen(["true"])  # a pid that names no process once reaped
    dead.wait()
    runtime.db.execute("UPDATE fn_invocations SET status = 'running', worker_pid = ?, lease_until = ?"
                       " WHERE id = ?", (dead.pid, time.time() - 1, inv.id))
    runtime.start()
    lost = runtime.wait(inv.id, TIMEOUT)
    assert lost.error == "Runtime.WorkerLost" and "lease" in lost.cause


def test_bad_handler_paths(make_runtime):
    runtime = make_runtime({"no-module": "hsops_no_such_module:handler",
                            "no-callable": "hsops.pipeline.diagnostics:no_such_handler"})
    no_module = runtime.call("no-module", {}, timeout=TIMEOUT)
    assert no_module.status == "failed" and no_module.error == "Runtime.ImportModuleError"
    assert "hsops_no_such_module" in no_module.cause
    no_callable = runtime.call("no-callable", {}, timeout=TIMEOUT)
    assert no_callable.error == "Runtime.HandlerNotFound" and "no_such_handler" in no_callable.cause
    with pytest.raises(BackendError, match="module:callable"):
        make_runtime({"bad": "hsops.pipeline.diagnostics.echo"}, start=False)


def test_a_result_must_be_a_json_serialisable_dict(make_runtime, tmp_path, monkeypatch):
    (tmp_path / "handlers_under_test.py").write_text(textwrap.dedent("""
        def returns_set(event, context):
            return {"codes": {"0101", "0102"}}

        def returns_list(event, context):
            return ["0101"]

        def returns_nan(event, context):
            return {"score": float("nan")}
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # workers inherit it
    runtime = make_runtime({name: f"handlers_under_test:{name}" for name in ("returns_set", "returns_list",
                                                                             "returns_nan")})
    for name in ("returns_set", "returns_list", "returns_nan"):
        inv = runtime.call(name, {}, timeout=TIMEOUT)
        assert inv.status == "failed" and inv.error == "Runtime.MarshalError", inv
        assert "JSON-serialisable dict" in inv.cause and inv.result is None


def test_payload_and_function_checks(make_runtime):
    runtime = make_runtime(start=False)
    with pytest.raises(BackendError, match="256 KiB"):
        runtime.invoke("hsops-echo", {"text": "x" * (256 * 1024)})
    with pytest.raises(BackendError, match="a dict"):
        runtime.invoke("hsops-echo", ["not", "an", "object"])
    with pytest.raises(BackendError, match="not JSON-serialisable"):
        runtime.invoke("hsops-echo", {"when": object()})
    with pytest.raises(BackendError, match="hsops-echo"):  # the known ones are listed
        runtime.invoke("hsops-nope", {})
    with pytest.raises(BackendError, match="no invocation"):
        runtime.get("no-such-id")
    assert runtime.invoke("hsops-echo", {"text": "x" * 1000}).status == "queued"


def test_failure_traceback_goes_to_the_worker_log(home, make_runtime):
    runtime = make_runtime()
    inv = runtime.call("hsops-fail", {"message": "boom"}, timeout=TIMEOUT)
    assert inv.cause == "boom"
    pid = runtime.db.query("SELECT worker_pid FROM fn_invocations WHERE id = ?", (inv.id,))[0]["worker_pid"]
    text = (home / "logs" / "workers" / f"{pid}.log").read_text()
    assert "Traceback" in text and "ValueError: boom" in text


def test_wait_works_from_a_runtime_without_supervisor(make_runtime):
    runtime = make_runtime()
    bystander = make_runtime(start=False)  # another process's view: no supervisor of its own
    inv = runtime.invoke("hsops-sleep", {"seconds": 0.3})
    assert bystander.wait(inv.id, timeout=0.01).done is False  # a timeout returns the latest state
    assert bystander.wait(inv.id, TIMEOUT).status == "succeeded"


def test_a_handler_that_overruns_the_timeout_is_stopped(make_runtime):
    runtime = make_runtime(timeout=1.0)
    inv = runtime.call("hsops-sleep", {"seconds": 30}, timeout=TIMEOUT)
    assert inv.status == "failed" and inv.error == "Sandbox.Timedout"
    assert inv.duration_ms >= 1000 and inv.cost_usd > 0


def test_min_workers_keeps_a_warm_worker(make_runtime):
    runtime = make_runtime(min_workers=1, idle_timeout=0.3)
    _until(lambda: runtime.stats()["workers"] == 1, what="the warm worker")
    time.sleep(1.0)  # three idle timeouts
    assert runtime.stats()["workers"] == 1
    assert runtime.call("hsops-echo", {}, timeout=TIMEOUT).status == "succeeded"


def test_stop_finishes_short_work_requeues_long_work_and_leaves_no_process(make_runtime):
    runtime = make_runtime()
    short = runtime.invoke("hsops-sleep", {"seconds": 0.5})
    long = runtime.invoke("hsops-sleep", {"seconds": 60})
    pids = {_until(lambda i=i: _running(runtime, i), what="both to run")["worker_pid"]
            for i in (short.id, long.id)}
    assert len(pids) == 2
    runtime.stop(grace=1.5)
    assert runtime.get(short.id).status == "succeeded"
    requeued = runtime.get(long.id)  # stopping is not the handler's failure: it runs again at the next start
    assert requeued.status == "queued" and requeued.error is None
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()  # gone and reaped: not even a zombie
    assert runtime.db.query("SELECT * FROM fn_workers") == []
    assert runtime.stats()["workers"] == 0
    runtime.start()
    assert _until(lambda: _running(runtime, long.id), what="the requeued invocation to run again")


def test_context_fields(tmp_path):
    context = Context("hsops-ingest", "req-1", tmp_path, timeout=60.0)
    assert context.function_name == "hsops-ingest" and context.aws_request_id == "req-1"
    assert context.invoked_function_arn == "arn:aws:lambda:local:000000000000:function:hsops-ingest"
    assert context.log_group_name == "/aws/lambda/hsops-ingest"
    assert 59_000 < context.get_remaining_time_in_millis() <= 60_000
    assert context.memory_limit_in_mb > 0
    assert context.home == tmp_path
    backend = context.backend
    assert isinstance(backend, LocalBackend) and backend.home == tmp_path
    assert context.backend is backend  # built once
    assert "functions" not in backend.__dict__  # nothing started
    backend.close()


def test_old_worker_logs_are_pruned_but_live_ones_kept(tmp_path, monkeypatch):
    from hsops.platform.local import functions

    monkeypatch.setattr(functions, "KEEP_WORKER_LOGS", 3)
    logs = tmp_path / "logs"
    logs.mkdir()
    for i, name in enumerate(["101", "102", "103", "104", "105", "spawning-x"]):
        path = logs / f"{name}.log"
        path.write_text(name)
        os.utime(path, (1000 + i, 1000 + i))
    functions._prune_logs(logs, live={101})
    assert sorted(p.stem for p in logs.glob("*.log")) == ["101", "104", "105", "spawning-x"]
