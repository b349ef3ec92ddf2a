"""``hsops serve``, ``hsops keys``, ``hsops batch``, ``hsops jobs`` and ``hsops invoke``:
the inference patterns and their security from the command line."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hsops._cli_common import _emit_json, _fail, console, err
from hsops._config import hsops_home

keys_app = typer.Typer(help="API keys: stored hashed, with scopes predict, feedback, admin.", no_args_is_help=True)
jobs_app = typer.Typer(help="Batch and async prediction jobs.", no_args_is_help=True)


# -- serve ----------------------------------------------------------------------------------
def serve(host: str = typer.Option("127.0.0.1"), port: int = typer.Option(8000, min=1, max=65535),
          model: str = typer.Option("champion", help="alias or NAME@VERSION to serve"),
          min_replicas: Optional[int] = typer.Option(None, min=1, max=64, help="replicas kept up (default 1)"),
          max_replicas: Optional[int] = typer.Option(None, min=1, max=64, help="replicas under load (default 2)"),
          require_key: bool = typer.Option(False, "--require-key", help="prediction calls need an API key too")):
    """Serve the prediction API (real-time, async, batch) on replicas that scale with load.

    OpenAPI at /docs, Prometheus metrics at /metrics. Ctrl-C drains the replicas: requests
    in flight are answered."""
    from hsops.cli_platform import replica_overrides
    from hsops.platform.local.replicas import ReplicaSupervisor
    from hsops.registry.index import ALIASES, ModelNotFound, resolve
    from hsops.serving.config import ConfigError

    home = hsops_home()
    try:
        resolve(home, model)
    except ModelNotFound as exc:
        if model not in ALIASES:  # a typo or a version that does not exist
            _fail(str(exc))
        err.print(f"[yellow]warning:[/] nothing is {model} yet; /v1/predict answers 503 until a "
                  f"model is trained (`hsops train`) or promoted")
    overrides = replica_overrides(min_replicas, max_replicas)
    if require_key:
        overrides["auth"] = {"predict_requires_key": True}
    (home / "logs").mkdir(exist_ok=True)
    try:
        supervisor = ReplicaSupervisor(home, ref=model, host=host, port=port, overrides=overrides,
                                       log_file=home / "logs" / "serving.log")
        supervisor.start()
    except ConfigError as exc:
        _fail(f"serving config: {exc}")
    except OSError as exc:
        _fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}; is the port in use?)")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        if not supervisor.wait_ready(timeout=120):
            _fail(f"no replica became ready; see {home / 'logs' / 'serving.log'}")
        r = supervisor.config.replicas
        console.print(f"[bold]serving[/] {model} at {supervisor.url}  (docs /docs, metrics /metrics)")
        console.print(f"  replicas {r.min} to {r.max}; logs {home / 'logs' / 'serving.log'}; Ctrl-C to stop")
        shown = 0
        while not stopping.wait(0.5):
            for event in supervisor.events[shown:]:
                fields = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("at", "event"))
                console.print(f"  {time.strftime('%H:%M:%S', time.localtime(event['at']))} {event['event']} {fields}")
            shown = len(supervisor.events)
    finally:
        console.print("draining replicas...")
        supervisor.stop()


# -- keys -----------------------------------------------------------------------------------
def _state():
    from hsops.platform.local.state_store import StateStore

    return StateStore(hsops_home())


@keys_app.command("create")
def keys_create(name: str = typer.Argument(..., help="who or what the key is for"),
                scope: list[str] = typer.Option(["predict"], "--scope", help="predict, feedback or admin (repeat)"),
                as_json: bool = typer.Option(False, "--json")):
    """Create a key. It is shown once: only its hash is stored."""
    try:
        plain, record = _state().add_key(name, scope)
    except ValueError as exc:
        _fail(str(exc))
    if as_json:
        _emit_json({"key": plain, "key_id": record.key_id, "name": record.name, "scopes": list(record.scopes)})
        return
    console.print(f"key {record.key_id} ({', '.join(record.scopes)}) for {record.name}:")
    console.print(plain, markup=False, highlight=False)
    err.print("store it now: it cannot be shown again (send it as 'Authorization: Bearer <key>')")


@keys_app.command("list")
def keys_list(as_json: bool = typer.Option(False, "--json")):
    """Keys with their scopes and state (never the secrets)."""
    rows = [{"key_id": r.key_id, "name": r.name, "scopes": list(r.scopes), "created_at": r.created_at,
             "revoked_at": r.revoked_at} for r in _state().list_keys()]
    if as_json:
        _emit_json(rows)
        return
    table = Table(title="API keys")
    for col in ("key id", "name", "scopes", "created", "revoked"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["key_id"], r["name"], ", ".join(r["scopes"]), r["created_at"], r["revoked_at"] or "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="the key's id, or the whole key hsk_<id>_<secret>")):
    """Revoke a key (servers stop accepting it within a few seconds)."""
    from hsops.serving.auth import KEY_PATTERN

    if (whole := KEY_PATTERN.match(key_id)) is not None:
        key_id = whole.group(1)
    if not _state().revoke_key(key_id):
        _fail(f"no live key {key_id!r}")
    console.print(f"revoked {key_id}")


# -- batch and jobs -------------------------------------------------------------------------
def _run_job(kind: str, request: dict, model: str, quiet: bool) -> dict:
    """Submit a job and run it here, through the same code a serving replica runs."""
    from hsops.models.artifact import ArtifactError
    from hsops.platform.local.server import ServingRuntime
    from hsops.registry.index import ModelNotFound

    from hsops.serving.config import ConfigError

    try:
        runtime = ServingRuntime(hsops_home(), model, watch=False, run_jobs=False)
    except ConfigError as exc:
        _fail(f"serving config: {exc}")
    try:
        try:
            runtime.source()
        except (ModelNotFound, ArtifactError) as exc:  # no model, or one refused by its manifest
            _fail(str(exc))
        from hsops.serving.jobs import JobError

        try:
            job = runtime.jobs.submit(kind, request, publish=False)
        except JobError as exc:
            _fail(str(exc))
        result: dict = {}
        worker = threading.Thread(target=lambda: result.update(runtime.jobs.run_now(
            job["job_id"], runtime.source, runtime.app.state.batcher, runtime.sink)), daemon=True)
        worker.start()
        if quiet:
            worker.join()
        else:
            from rich.progress import Progress

            with Progress(console=err, transient=True) as progress:
                task = progress.add_task(f"{job['job_id']}", total=None)
                while worker.is_alive():
                    p = runtime.jobs.get(job["job_id"])["progress"]
                    progress.update(task, completed=p["rows_done"], total=p["rows_total"])
                    worker.join(0.2)
        return result
    finally:
        runtime.stop()


def batch(path: Path = typer.Argument(..., help="CSV/TSV/JSONL/Parquet (description column) or TXT (one a line)"),
          text_column: Optional[str] = typer.Option(None, help="the description column (default: detected)"),
          top_k: int = typer.Option(5, min=1, max=20),
          out: Optional[Path] = typer.Option(None, help="write the predictions (JSONL) here"),
          model: str = typer.Option("champion", help="champion, challenger or NAME@VERSION"),
          as_json: bool = typer.Option(False, "--json")):
    """Predict every row of a file as a batch job; the predictions come back as JSONL.

    The file goes to the object store, the job runs here through the serving code, and the
    predictions file has one JSON object per input row, in order (with an error for a row
    that could not be answered)."""
    from hsops._hashing import sha256_file
    from hsops.platform.local.backend import LocalBackend

    if not path.is_file():
        _fail(f"no file {path}")
    backend = LocalBackend(hsops_home())
    key = f"batch/{sha256_file(path)[:16]}-{path.name}"
    backend.objects.put(key, path)
    request = {"object_key": key, "top_k": top_k, **({"text_column": text_column} if text_column else {})}
    job = _run_job("batch", request, model, quiet=as_json)
    if job.get("status") == "succeeded" and out is not None:
        backend.objects.download(job["output_key"], out)
    if as_json:
        _emit_json(job)
    elif job.get("status") != "succeeded":
        _fail(f"job {job.get('job_id')} {job.get('status')}: {job.get('error')}")
    else:
        console.print(f"{job['job_id']}: {job['progress']['rows_done']} rows answered with {job['model_version']} "
                      f"-> {out or 'object ' + job['output_key']}")
    if job.get("status") != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("list")
def jobs_list(limit: int = typer.Option(20, min=1, max=1000), as_json: bool = typer.Option(False, "--json")):
    """The most recent jobs."""
    rows = [dict(r) for r in _state().db.conn().execute(
        "SELECT job_id, kind, status, created_at, rows_done, rows_total, model_version, error FROM jobs "
        "ORDER BY created_at DESC LIMIT ?", (limit,))]
    if as_json:
        _emit_json(rows)
        return
    table = Table(title="Jobs")
    for col in ("job", "kind", "status", "created", "rows", "model", "error"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["job_id"], r["kind"], r["status"], r["created_at"],
                      f"{r['rows_done']}/{r['rows_total'] if r['rows_total'] is not None else '?'}",
                      r["model_version"] or "", (r["error"] or "")[:60])
    console.print(table)


def _jobs():
    from hsops.platform.local.backend import LocalBackend
    from hsops.platform.local.jobs import LocalJobs

    home = hsops_home()
    return LocalJobs(home, LocalBackend(home), _state())


@jobs_app.command("status")
def jobs_status(job_id: str = typer.Argument(...), as_json: bool = typer.Option(False, "--json")):
    """One job: status, progress, model, output, callback, error."""
    from hsops.serving.jobs import JobNotFound

    try:
        job = _jobs().get(job_id)
    except JobNotFound:
        _fail(f"no job {job_id!r}")
    job.pop("key_id", None)
    if as_json:
        _emit_json(job)
        return
    p = job["progress"]
    console.print(f"{job['job_id']} ({job['kind']}): {job['status']}, {p['rows_done']}/{p['rows_total'] or '?'} "
                  f"rows, model {job['model_version'] or '-'}" + (f", error: {job['error']}" if job["error"] else ""))


@jobs_app.command("results")
def jobs_results(job_id: str = typer.Argument(...),
                 out: Optional[Path] = typer.Option(None, help="write here instead of standard output")):
    """The predictions file of a finished job (JSONL)."""
    import shutil
    import sys

    from hsops.serving.jobs import JobNotFound

    jobs = _jobs()
    try:
        job = jobs.get(job_id)
    except JobNotFound:
        _fail(f"no job {job_id!r}")
    if job["status"] != "succeeded":
        _fail(f"job {job_id} is {job['status']}; results exist once it succeeded")
    with jobs.open_results(job_id) as src:
        if out is None:
            shutil.copyfileobj(src, sys.stdout.buffer)
        else:
            with open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str = typer.Argument(...)):
    """Cancel a queued or running job."""
    from hsops.serving.jobs import JobNotFound

    try:
        job = _jobs().cancel(job_id)
    except JobNotFound:
        _fail(f"no job {job_id!r}")
    console.print(f"{job_id}: {job['status']}")


# -- the HTTP API as a client ----------------------------------------------------------------
def remote_predict(server: str, texts: list[str], *, top_k: int, explain: bool, use_async: bool,
                   key: str | None, timeout: float = 600.0) -> list[dict]:
    """Predictions from a running server: ``POST /v1/predict``, or with ``use_async`` a job
    from ``POST /v1/predict/async`` polled at ``GET /v1/jobs/{id}`` until it ends."""
    import httpx

    base = server.rstrip("/")
    if not base.startswith(("http://", "https://")):
        _fail(f"--server must be an http(s) URL, got {server!r}")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"descriptions": texts, "top_k": top_k, "explain": explain}

    def answer(response: httpx.Response, expected: int) -> dict:
        if response.status_code != expected:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text[:300]
            _fail(f"{response.request.method} {response.request.url.path}: HTTP {response.status_code}: {message}")
        return response.json()

    try:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            if not use_async:
                return answer(client.post("/v1/predict", json=body), 200)["predictions"]
            job = answer(client.post("/v1/predict/async", json=body), 202)
            err.print(f"job {job['job_id']} submitted; polling {job['links']['self']}")
            deadline = time.monotonic() + timeout
            while job["status"] in ("queued", "running"):
                if time.monotonic() > deadline:
                    _fail(f"job {job['job_id']} still {job['status']} after {timeout:.0f}s")
                time.sleep(0.2)
                job = answer(client.get(f"/v1/jobs/{job['job_id']}"), 200)
            if job["status"] != "succeeded":
                _fail(f"job {job['job_id']} {job['status']}: {job.get('error')}")
            return job["result"]["predictions"]
    except httpx.HTTPError as exc:
        _fail(f"cannot reach {base}: {exc}")


# -- invoke (the Lambda-style handler) ------------------------------------------------------
def invoke(event: Optional[Path] = typer.Option(None, help="an API Gateway proxy event (JSON file)"),
           describe: list[str] = typer.Option([], "--describe", help="build a POST /v1/predict event for "
                                              "these descriptions (repeat)"),
           top_k: int = typer.Option(3, min=1, max=20)):
    """Run the Lambda-style handler(event, context) on an API Gateway event.

    Prints the proxy response, as Lambda would return it; exits 1 when its status is 4xx/5xx."""
    from hsops.serving.lambda_handler import handler

    if (event is None) == (not describe):
        _fail("give --event FILE or --describe TEXT")
    if event is not None:
        try:
            payload = json.loads(event.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            _fail(f"{event}: not a readable JSON event ({exc})")
    else:
        payload = {"version": "2.0", "routeKey": "POST /v1/predict", "rawPath": "/v1/predict",
                   "rawQueryString": "", "headers": {"content-type": "application/json"},
                   "requestContext": {"http": {"method": "POST", "path": "/v1/predict", "sourceIp": "127.0.0.1"}},
                   "body": json.dumps({"descriptions": describe, "top_k": top_k}), "isBase64Encoded": False}
    from hsops.serving.config import ConfigError

    try:
        response = handler(payload, None)
    except ConfigError as exc:  # the app is built on the first event: serving.json is read then
        _fail(f"serving config: {exc}")
    _emit_json(response)
    if response.get("statusCode", 500) >= 400:  # printed as Lambda returns it; the exit code says it failed
        raise typer.Exit(1)
