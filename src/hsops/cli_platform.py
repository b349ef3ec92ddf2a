"""``hsops up`` and ``hsops pipeline run|status|list|triggers|dead-letters``.

``pipeline run`` drives its run in the foreground (its own worker processes), so it
works with or without ``hsops up``; a run it leaves behind (Ctrl-C, ``kill -9``) stays
RUNNING and the next ``hsops up`` resumes it from its last finished step.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hsops._cli_common import _emit_json, _fail, console, err
from hsops._config import hsops_home

pipeline_app = typer.Typer(no_args_is_help=True,
                           help="Lifecycle pipeline runs: ingest, validate, train, evaluate, gate, register, deploy.")
schedule_app = typer.Typer(no_args_is_help=True, help="Scheduled pipeline runs (rate or cron, UTC).")
pipeline_app.add_typer(schedule_app, name="schedule")


@contextlib.contextmanager
def _local_backend():
    """The local backend of HSOPS_HOME for one command, closed afterwards (starts nothing)."""
    from hsops.platform.local.backend import LocalBackend

    backend = LocalBackend(hsops_home())
    try:
        yield backend
    finally:
        backend.close()


def _check_kinds(kinds: list[str]) -> None:
    from hsops.models.base import model_kinds

    unknown = [k for k in kinds if k not in model_kinds()]
    if unknown:
        _fail(f"unknown model kind(s) {unknown}; known: {sorted(model_kinds())}")


def _print_table(title: str, columns: tuple[str, ...], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


# -- hsops up -------------------------------------------------------------------------------
def up(host: str = typer.Option("127.0.0.1", help="address of the HTTP API"),
       port: int = typer.Option(8000, min=1, max=65535),
       workers: int = typer.Option(2, min=1, max=64, help="most worker processes at once"),
       idle_timeout: float = typer.Option(60.0, min=0.1, help="seconds an idle worker waits before exiting"),
       max_runs: int = typer.Option(2, min=1, max=32, help="pipeline runs driven at once"),
       inbox_settle: float = typer.Option(2.0, min=0.1, max=3600, help="seconds a file in the inbox must stay "
                                          "unchanged (and closed) before it is taken"),
       min_replicas: Optional[int] = typer.Option(None, min=1, max=64, help="serving replicas kept up "
                                                   "(default 1, or serving.json)"),
       max_replicas: Optional[int] = typer.Option(None, min=1, max=64, help="serving replicas under load "
                                                   "(default 2, or serving.json)")):
    """Start the local platform: API server, inbox watcher, workers, scheduler. Ctrl-C stops it.

    Drop a labelled CSV into HSOPS_HOME/inbox/ and a run trains, evaluates, and deploys a
    challenger if it beats the champion. Runs left unfinished by an earlier stop resume."""
    from hsops.platform.local.platform import LocalPlatform
    from hsops.serving.config import ConfigError

    home = hsops_home()
    serving = replica_overrides(min_replicas, max_replicas)
    platform = LocalPlatform(home, host=host, port=port, max_workers=workers, idle_timeout=idle_timeout,
                             max_runs=max_runs, inbox_settle=inbox_settle, serving=serving)
    stopping = threading.Event()
    # both set explicitly: a shell starting `hsops up &` makes it ignore SIGINT otherwise
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    machines = platform.backend.state_machines
    resumable = [e.name for e in machines.list(status="RUNNING")] + [e.name for e in machines.list(status="PENDING")]
    seen = {e.id: e.status for e in machines.list(limit=200)}
    other = _another_platform(home)
    if other:
        err.print(f"[yellow]warning:[/] another `hsops up` (pid {other}) uses this HSOPS_HOME; they share the "
                  "work (runs are claimed once), but two inbox watchers and schedulers run")
    try:
        platform.start()
    except ConfigError as exc:
        _fail(f"serving.json: {exc}")
    except OSError as exc:
        _fail(f"the API server could not start on {host}:{port} ({exc.strerror or exc}; is the port in use?)")
    _write_pid(home)
    try:
        if not platform.supervisor.wait_ready(timeout=120):
            _fail(f"no serving replica became ready; see {home / 'logs' / 'serving.log'}")
        console.print(f"[bold]hsops platform up[/] — API http://{host}:{platform.port}  (docs /docs)")
        console.print(f"  inbox: drop labelled files into {home / 'inbox'}")
        r = platform.supervisor.config.replicas
        console.print(f"  serving replicas: {r.min} to {r.max}; workers: up to {workers}, idle exit after "
                      f"{idle_timeout:g} s; Ctrl-C to stop")
        if resumable:
            console.print(f"  resuming {len(resumable)} unfinished run(s): {', '.join(resumable)}")
        _follow_runs(platform, seen, stopping)
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping: runs in progress stay RUNNING and resume at the next `hsops up`")
        platform.stop()
        (home / "platform.pid").unlink(missing_ok=True)


def replica_overrides(min_replicas: int | None, max_replicas: int | None) -> dict:
    """``--min-replicas``/``--max-replicas`` as serving overrides."""
    replicas = {}
    if min_replicas is not None:
        replicas["min"] = min_replicas
    if max_replicas is not None:
        replicas["max"] = max_replicas
    return {"replicas": replicas} if replicas else {}


def _another_platform(home: Path) -> int | None:
    from hsops._fs import _alive

    try:
        pid = int((home / "platform.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() and _alive(pid) else None


def _write_pid(home: Path) -> None:
    (home / "platform.pid").write_text(str(os.getpid()))


def _follow_runs(platform, seen: dict[str, str], stopping: threading.Event) -> None:
    """Print each run's status changes, and drops recorded as duplicates, until stopped."""
    machines = platform.backend.state_machines
    last_trigger = max((t["id"] for t in platform.triggers.triggers(1)), default=0)
    while not stopping.wait(1.0):
        for execution in reversed(machines.list(limit=50)):
            if seen.get(execution.id) == execution.status:
                continue
            seen[execution.id] = execution.status
            console.print(f"{time.strftime('%H:%M:%S')} run {execution.name}: {_status_line(execution)}")
        for trigger in reversed(platform.triggers.triggers(20)):
            if trigger["id"] > last_trigger:
                last_trigger = trigger["id"]
                if trigger["outcome"] == "duplicate":
                    console.print(f"{time.strftime('%H:%M:%S')} {trigger['source']} "
                                  f"{trigger['detail'].get('file') or trigger['detail'].get('key')}: same content as run "
                                  f"{trigger['execution']}, nothing to do")


def _status_line(execution) -> str:
    if execution.status == "SUCCEEDED" and isinstance(execution.output, dict):
        out = execution.output
        if out.get("outcome") == "deployed":
            return f"[green]SUCCEEDED[/] — hs-classifier@{out.get('version')} is now {out.get('alias')}"
        return f"[green]SUCCEEDED[/] — {out.get('outcome')}: {out.get('reason', '')}"
    if execution.status == "FAILED":
        return f"[red]FAILED[/] — {execution.error}: {execution.cause}"
    return execution.status


# -- hsops pipeline run ------------------------------------------------------------------------
@pipeline_app.command("run")
def run(data: Optional[Path] = typer.Option(None, help="labelled file to run the pipeline on"),
        dataset: Optional[str] = typer.Option(None, help="an ingested dataset version (or 'latest') instead"),
        text_column: Optional[str] = typer.Option(None), label_column: Optional[str] = typer.Option(None),
        candidate: list[str] = typer.Option([], help="model kind to train (repeatable; default from "
                                                     "HSOPS_HOME/pipeline.json or linear+svc)"),
        policy: list[str] = typer.Option([], help="gate policy KEY=VALUE, e.g. max_cost_per_million_usd=2"),
        workers: int = typer.Option(2, min=1, max=64),
        detach: bool = typer.Option(False, help="only queue the run; `hsops up` drives it"),
        as_json: bool = typer.Option(False, "--json")):
    """Run the lifecycle pipeline on a file (or dataset version) and show its history."""
    from hsops.platform.local.backend import LocalBackend
    from hsops.platform.local.state_machines import LIFECYCLE
    from hsops.platform.local.triggers import pipeline_input

    if (data is None) == (dataset is None):
        _fail("give exactly one of --data FILE or --dataset VERSION")
    if data is not None and not data.is_file():
        _fail(f"{data}: {'is a directory, not a file' if data.is_dir() else 'no such file'}")
    _check_kinds(candidate)
    policies = _parse_policy(policy)
    home = hsops_home()
    backend = LocalBackend(home, max_workers=workers)
    try:
        try:
            if data is not None:
                from hsops._hashing import sha256_file
                from hsops.platform.local.triggers import _safe_name

                sha = sha256_file(data)
                key = f"uploads/{sha[:12]}-{_safe_name(data.name)}"
                backend.objects.put(key, data)
                source = {"object_key": key, "text_column": text_column, "label_column": label_column}
            else:
                source = {"dataset_version": dataset}
            run_input = pipeline_input(home, source, candidates=[{"kind": k} for k in candidate] or None,
                                       policy=policies, trigger={"type": "cli"})
        except ValueError as exc:
            _fail(str(exc))
        name = f"cli-{uuid.uuid4().hex[:16]}"
        machines = backend.state_machines
        execution = machines.start(LIFECYCLE, run_input, name=name, owner_pid=None if detach else os.getpid())
        if detach:
            _emit_json({"name": name, "status": execution.status}) if as_json else console.print(
                f"queued run {name}; `hsops up` drives it (follow with `hsops pipeline status {name}`)")
            return
        backend.start()
        result = _drive(machines, execution, quiet=as_json)
    finally:
        backend.close()
    _report(result["history"], result["execution"], as_json)
    if result["execution"].status != "SUCCEEDED":
        raise typer.Exit(1)


def _parse_policy(pairs: list[str]) -> dict:
    from hsops.pipeline.policy import check_policy

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            _fail(f"--policy takes KEY=NUMBER, got {pair!r}")
    try:
        return check_policy(out)
    except ValueError as exc:
        _fail(str(exc))


def _drive(machines, execution, *, quiet: bool) -> dict:
    """Run the execution in a thread; show its states as they finish; Ctrl-C leaves it resumable."""
    from hsops.platform.local.asl import Stopped

    outcome: dict = {}

    def work():
        try:
            outcome["execution"] = machines.run(execution.id)
        except Stopped:
            outcome["stopped"] = True
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["crash"] = exc

    thread = threading.Thread(target=work, name="hsops-run", daemon=True)
    thread.start()
    shown: set[str] = set()  # steps finish out of start order (Map items, Parallel branches)
    try:
        while thread.is_alive():
            thread.join(0.5)
            for h in machines.history(execution.id):
                if h["status"] == "running" or h["key"] in shown:
                    continue
                shown.add(h["key"])
                if not quiet:
                    mark = "[green]ok[/]" if h["status"] == "succeeded" else f"[red]{h['status']}[/]"
                    err.print(f"  {step_label(h):<26} {mark} {h['duration_ms'] or 0:>10.0f} ms "
                              + (f"{h['error']}: {(h['cause'] or '')[:120]}" if h["error"] else ""))
    except KeyboardInterrupt:
        err.print("interrupted: stopping the run and its workers (a running step is queued again) ...")
        machines.stop()
        thread.join(15)
        _fail(f"run {execution.name} stays RUNNING; `hsops up` resumes it", code=130)
    if "crash" in outcome:
        raise outcome["crash"]
    return {"execution": outcome["execution"], "history": machines.history(execution.id)}


def _report(history: list[dict], execution, as_json: bool) -> None:
    from hsops.platform.local.pipeline_api import execution_summary

    if as_json:
        _emit_json({**execution_summary(execution), "input": execution.input, "output": execution.output,
                    "history": history})
        return
    console.print(history_table(execution.name, history))
    console.print(f"run {execution.name}: {_status_line(execution)}  (cost ${execution.cost_usd:.6f})")


def step_label(step: dict) -> str:
    """The state's name, indented by nesting, with the Map item it ran for: ``  Train [1]``."""
    parts = step["key"].split("/")
    items = [p[1:-1] for p in parts if p.startswith("[")]
    depth = sum(1 for p in parts if p.startswith(("[", "{")))
    return "  " * depth + step["state"] + (f" [{items[-1]}]" if items else "")


def history_table(name: str, history: list[dict]) -> Table:
    table = Table(title=f"Pipeline run {name}")
    for col, justify in (("state", "left"), ("type", "left"), ("status", "left"), ("start", "left"),
                         ("end", "left"), ("duration", "right"), ("memory", "right"), ("cost (USD)", "right"), ("error", "left")):
        table.add_column(col, justify=justify, overflow="fold")
    for h in history:
        status = h["status"] + (f" (try {h['attempt'] + 1})" if h.get("attempt") else "")
        if h.get("before_redrive"):
            status += f", before redrive {h['before_redrive']}"
        memory = f"{h['peak_memory_mb']:.0f} MB" if h.get("peak_memory_mb") else ""
        table.add_row(step_label(h), h["type"], status, (h["started_at"] or "")[11:23], (h["ended_at"] or "")[11:23],
                      f"{h['duration_ms'] / 1000:.2f} s" if h["duration_ms"] is not None else "",
                      memory, f"{h['cost_usd']:.8f}" if h["cost_usd"] else "",
                      f"{h['error']}: {(h['cause'] or '')[:200]}" if h["error"] else "")
    return table


# -- status, list, triggers, dead letters -------------------------------------------------------
@pipeline_app.command("status")
def status(run_name: str = typer.Argument(..., help="run name or id"), as_json: bool = typer.Option(False, "--json")):
    """One run: its status, output and the history of its states."""
    from hsops.platform.backend import BackendError

    with _local_backend() as backend:
        try:
            execution = backend.state_machines.describe(run_name)
            history = backend.state_machines.history(execution.id)
        except BackendError as exc:
            _fail(str(exc))
    _report(history, execution, as_json)


@pipeline_app.command("list")
def list_runs(limit: int = typer.Option(50, min=1, max=1000), as_json: bool = typer.Option(False, "--json")):
    """Recent pipeline runs, newest first."""
    from hsops.platform.local.pipeline_api import execution_summary

    with _local_backend() as backend:
        rows = [execution_summary(e) for e in backend.state_machines.list(limit=limit)]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        console.print("no pipeline runs yet: `hsops up` and drop a file into the inbox, or `hsops pipeline run`")
        return
    table = []
    for r in rows:
        out = r["outcome"] or {}
        what = (f"{out.get('outcome')} v{out.get('version')} ({out.get('alias')})" if out.get("version")
                else out.get("outcome") or "") if r["status"] == "SUCCEEDED" else (r["error"] or "")
        table.append([r["name"], r["status"], r["trigger"] or "", (r["started_at"] or "")[:19],
                      (r["ended_at"] or "")[:19], f"{r['cost_usd']:.8f}", what])
    _print_table("Pipeline runs", ("name", "status", "trigger", "started", "ended", "cost (USD)", "outcome / error"),
                 table)


@pipeline_app.command("triggers")
def triggers(limit: int = typer.Option(50, min=1, max=1000), as_json: bool = typer.Option(False, "--json")):
    """What triggered runs, including duplicates recorded as no-ops."""
    from hsops.platform.local.triggers import PipelineTriggers

    with _local_backend() as backend:
        rows = PipelineTriggers(backend, backend.home, backend.db).triggers(limit)
    if as_json:
        _emit_json(rows)
        return
    _print_table("Pipeline triggers", ("at", "source", "detail", "run", "outcome"),
                 [[r["at"], r["source"], ", ".join(f"{k}={v}" for k, v in r["detail"].items()),
                   r["execution"] or "", r["outcome"]] for r in rows])


@pipeline_app.command("dead-letters")
def dead_letters(redrive: Optional[str] = typer.Option(None, help="put this dead letter back on its queue: "
                                                                  "`hsops up` then retries it (redrives its run)"),
                 as_json: bool = typer.Option(False, "--json")):
    """Trigger messages whose runs kept failing, with the last error (nothing is lost)."""
    from dataclasses import asdict

    from hsops.platform.backend import BackendError

    with _local_backend() as backend:
        if redrive:
            try:
                message_id = backend.events.redrive(redrive)
            except BackendError as exc:
                _fail(str(exc))
            console.print(f"dead letter {redrive} is back on its queue as message {message_id}")
            return
        rows = [asdict(d) for d in backend.events.dead_letters()]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        console.print("no dead letters")
    for r in rows:
        console.print(f"{r['dead_at']} {r['queue']} {r['id']} after {r['receive_count']} deliveries: {r['error']}")


# -- schedules ------------------------------------------------------------------------------------
@schedule_app.command("add")
def schedule_add(name: str = typer.Argument(..., help="a name for the schedule"),
                 expression: str = typer.Argument(..., help="rate(1 day), rate(6 hours) or cron(0 3 * * ? *) in UTC"),
                 dataset: str = typer.Option("latest", help="dataset version to retrain on"),
                 candidate: list[str] = typer.Option([], help="model kind (repeatable; default from pipeline.json)")):
    """Run the pipeline on a schedule while `hsops up` runs (a missed period is not replayed)."""
    from hsops.platform.local.triggers import PIPELINE_REQUESTED

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        _fail(f"schedule name {name!r}: letters, digits, '-' and '_' only, at most 64")
    _check_kinds(candidate)
    if dataset != "latest":
        from hsops.data.datasets import DatasetNotFound, load_dataset

        try:
            load_dataset(hsops_home(), dataset)
        except DatasetNotFound as exc:
            _fail(str(exc))
    with _local_backend() as backend:
        replaced = any(s.name == name for s in backend.scheduler.list())
        try:
            schedule = backend.scheduler.put(name, expression, PIPELINE_REQUESTED, {
                "source": {"dataset_version": dataset}, "candidates": [{"kind": k} for k in candidate] or None})
        except ValueError as exc:
            _fail(str(exc))
    console.print(f"schedule {name}{' replaced' if replaced else ''}: {expression}, next run {schedule.next_fire}")


@schedule_app.command("list")
def schedule_list(as_json: bool = typer.Option(False, "--json")):
    """Schedules with their next and last run."""
    from dataclasses import asdict

    with _local_backend() as backend:
        rows = [asdict(s) for s in backend.scheduler.list()]
    if as_json:
        _emit_json(rows)
        return
    _print_table("Pipeline schedules", ("name", "expression", "next", "last", "dataset"),
                 [[r["name"], r["expression"], r["next_fire"] or "", r["last_fired"] or "",
                   str((r["body"].get("source") or {}).get("dataset_version", ""))] for r in rows])


@schedule_app.command("remove")
def schedule_remove(name: str = typer.Argument(...)):
    """Delete a schedule."""
    with _local_backend() as backend:
        removed = backend.scheduler.delete(name)
    if not removed:
        _fail(f"no schedule named {name!r}")
    console.print(f"removed schedule {name}")
