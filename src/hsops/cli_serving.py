"""``hsops serve``, ``hsops keys``, ``hsops batch``, ``hsops jobs`` and ``hsops invoke``:
the inference patterns and their security from the command line."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import BinaryIO, Optional

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
        _fail(escape(str(exc)))
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
def _checked_out(out: Path) -> None:
    """``--out`` checked before any work, the same for ``batch`` and ``jobs results``: not a
    directory, its missing folders made, its folder writable. A job is not worth running
    when its predictions cannot be saved where asked."""
    if out.is_dir():
        _fail(f"--out {escape(str(out))} is a directory; give a file path, e.g. "
              f"{escape(str(out / 'predictions.jsonl'))}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        _fail(f"--out {escape(str(out))}: {escape(str(out.parent))} cannot be a folder (a file is in the way)")
    except OSError as exc:  # no permission, a read-only file system
        _fail(f"--out {escape(str(out))}: cannot create the folder {escape(str(out.parent))} "
              f"({exc.strerror or exc})")
    if out.exists() and not out.is_file():  # /dev/stdout, a FIFO: written in place (_save_output)
        if not os.access(out, os.W_OK):
            _fail(f"--out {escape(str(out))}: cannot write to it (permission denied)")
    elif not os.access(out.parent, os.W_OK | os.X_OK):  # the temp file and the rename need the folder
        _fail(f"--out {escape(str(out))}: cannot write in {escape(str(out.parent))} (permission denied)")


def _new_file_mode(out: Path) -> int:
    """The mode ``out`` would have if written with ``open()``: its own if it exists, else
    0666 less the umask. (The temp file it replaces it with is created 0600.)"""
    try:
        return out.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _save_output(src: BinaryIO, out: Path) -> None:
    """Copy ``src`` to ``out`` atomically: a temp file in the same folder, renamed over
    ``out`` once complete, so a reader or a crash never sees half a predictions file."""
    import shutil
    import tempfile

    if out.exists() and not out.is_file():  # /dev/stdout, a FIFO: written in place, not replaced
        with open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return
    fd, temp = tempfile.mkstemp(prefix=".hsops-out-", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(temp, _new_file_mode(out))
        os.replace(temp, out)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_results(jobs, job_id: str, out: Path) -> None:
    """A finished job's predictions into ``out``; failing says where they still are."""
    from hsops.platform.backend import ObjectNotFound

    try:
        with jobs.open_results(job_id) as src:
            _save_output(src, out)
    except ObjectNotFound as exc:  # a succeeded job whose output was deleted from the store
        _fail(f"job {job_id}: its predictions are gone ({exc})", code=1)
    except OSError as exc:
        _fail(f"cannot write {escape(str(out))} ({exc.strerror or exc}); the predictions are kept: "
              f"`hsops jobs results {job_id} --out FILE`", code=1)


def _object_name(path: Path) -> str:
    """The input file's name as an object key part: only ``[A-Za-z0-9._-]`` (a newline or
    a '/' in a file name is not a valid key), at most 100 characters. The end is kept: the
    job tells CSV, JSONL, TXT ... apart by the suffix."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", path.name)[-100:]


def _rows(n: int) -> str:
    return f"{n} row" + ("" if n == 1 else "s")


def _rows_failed(job: dict) -> int:
    """Rows written with an error instead of an answer (0 from a server that does not say)."""
    return int((job.get("progress") or {}).get("rows_failed") or 0)


def _rows_summary(job: dict) -> str:
    """'4 rows: 1 answered, 3 could not be answered (...)': a row with an error is not an answer."""
    done, failed = job["progress"]["rows_done"], _rows_failed(job)
    summary = f"{_rows(done)}: {done - failed} answered"
    if failed:
        summary += f", {failed} could not be answered (see the error field in the output)"
    return summary


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
        if quiet or not err.is_terminal:  # a progress bar on a pipe or file is only noise
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
        _fail(f"no file {escape(str(path))}")
    if out is not None:
        _checked_out(out)
    backend = LocalBackend(hsops_home())
    key = f"batch/{sha256_file(path)[:16]}-{_object_name(path)}"
    backend.objects.put(key, path)
    request = {"object_key": key, "top_k": top_k, **({"text_column": text_column} if text_column else {})}
    job = _run_job("batch", request, model, quiet=as_json)
    if job.get("status") == "succeeded" and out is not None:
        _write_results(_jobs(), job["job_id"], out)
    if as_json:
        _emit_json(job)
    elif job.get("status") != "succeeded":
        _fail(f"job {job.get('job_id')} {job.get('status')}: {job.get('error')}")
    else:
        # no version when no row could be answered: name the model asked for instead
        console.print(f"{job['job_id']} with {job['model_version'] or model}: {_rows_summary(job)} "
                      f"-> {out or 'object ' + job['output_key']}", markup=False, highlight=False)
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
    # a job id is what the other commands take: never cut, even on a narrow console (its
    # min_width holds when every column has to shrink). The error gives way first, cut to
    # one line (`hsops jobs status ID` shows it whole)
    table.add_column("job", no_wrap=True, min_width=max((len(r["job_id"]) for r in rows), default=3))
    for col in ("kind", "status", "created (UTC)", "rows", "model"):
        table.add_column(col, no_wrap=True)
    table.add_column("error")
    for r in rows:
        error = " ".join((r["error"] or "").split())  # a traceback's newlines would make rows of it
        table.add_row(Text(r["job_id"]), r["kind"], r["status"], r["created_at"][:19].replace("T", " "),
                      f"{r['rows_done']}/{r['rows_total'] if r['rows_total'] is not None else '?'}",
                      Text(r["model_version"] or ""), Text(error, no_wrap=True, overflow="ellipsis"))
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
    p, failed = job["progress"], _rows_failed(job)
    rows = f"{p['rows_done']}/{p['rows_total'] or '?'} rows"
    if failed:
        rows += f" ({p['rows_done'] - failed} answered, {failed} could not be answered)"
    console.print(f"{job['job_id']} ({job['kind']}): {job['status']}, {rows}, model {job['model_version'] or '-'}"
                  + (f", error: {job['error']}" if job["error"] else ""), markup=False, highlight=False)


@jobs_app.command("results")
def jobs_results(job_id: str = typer.Argument(...),
                 out: Optional[Path] = typer.Option(None, help="write here instead of standard output")):
    """The predictions file of a finished job (JSONL)."""
    import shutil
    import sys

    from hsops.serving.jobs import JobNotFound

    if out is not None:
        _checked_out(out)
    jobs = _jobs()
    try:
        job = jobs.get(job_id)
    except JobNotFound:
        _fail(f"no job {job_id!r}")
    if job["status"] != "succeeded":
        _fail(f"job {job_id} is {job['status']}; results exist once it succeeded")
    if out is not None:
        _write_results(jobs, job_id, out)
        err.print(f"{job_id}: {_rows(job['progress']['rows_done'])} written to {escape(str(out))}")
        return
    with jobs.open_results(job_id) as src:
        shutil.copyfileobj(src, sys.stdout.buffer)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str = typer.Argument(...)):
    """Cancel a queued or running job (one that has ended is left as it is: exit 1)."""
    from hsops.serving.jobs import ENDED, JobNotFound

    jobs = _jobs()
    try:
        status = jobs.get(job_id)["status"]
        job = jobs.cancel(job_id) if status not in ENDED else None
    except JobNotFound:
        _fail(f"no job {escape(repr(job_id))}")
    if job is None:
        _fail(f"job {job_id} has already ended ({status}); nothing to cancel", code=1)
    console.print(f"{job_id}: {job['status']}")


# -- the HTTP API as a client ----------------------------------------------------------------
def check_server_options(server: str | None, *, key_given: bool, use_async: bool) -> None:
    """``--key`` and ``--async`` only mean something with ``--server``: refused without it,
    not ignored (a key silently unused, or an answer computed here instead of by a job,
    would hide a mistake). ``key_given`` is false for a key that came from HSOPS_API_KEY:
    the environment is ambient, not a request."""
    given = [flag for flag, on in (("--key", key_given), ("--async", use_async)) if on]
    if server is None and given:
        _fail(f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --server URL: keys and async "
              "jobs are for a running server (`hsops serve`); without --server the model is loaded here")


def server_url(server: str) -> str:
    """``--server`` as the base URL the API paths (/v1/...) are joined to, or a failure.

    http or https, a host and a valid port. A trailing '/' or '/v1' is dropped: the API's
    own URL is what people paste, and /v1/v1/predict would be a 404 that does not say why.
    Any other path is kept (a proxy may serve the API under a prefix)."""
    from urllib.parse import urlsplit, urlunsplit

    import httpx

    shown = escape(repr(server))
    try:
        parts = urlsplit(server.strip())
        port = parts.port  # checked when read: out of range or not a number raises here
    except ValueError as exc:
        _fail(f"--server {shown} is not a valid URL ({exc})")
    if parts.scheme not in ("http", "https"):
        _fail(f"--server must be an http(s) URL such as http://127.0.0.1:8000, got {shown}")
    if not parts.hostname:
        _fail(f"--server {shown} has no host (e.g. http://127.0.0.1:8000)")
    if port == 0:
        _fail(f"--server {shown}: the port must be 1 to 65535")
    if parts.query or parts.fragment:
        _fail(f"--server {shown}: give the server's base URL, without ?query or #fragment")
    path = parts.path.rstrip("/").removesuffix("/v1").rstrip("/")
    base = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    try:
        httpx.URL(base)  # what the client will parse: a host with spaces, say
    except httpx.InvalidURL as exc:
        _fail(f"--server {shown} is not a valid URL ({exc})")
    return base


def remote_predict(server: str, texts: list[str], *, top_k: int, explain: bool, use_async: bool,
                   key: str | None, timeout: float = 600.0) -> list[dict]:
    """Predictions from a running server: ``POST /v1/predict``, or with ``use_async`` a job
    from ``POST /v1/predict/async`` polled at ``GET /v1/jobs/{id}`` until it ends."""
    import httpx

    base = server_url(server)
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
def _queued_job_id(response: dict) -> str | None:
    """The job id of a 202 proxy response (``POST /v1/predict/async``, ``POST /v1/batch``)."""
    import base64

    if response.get("statusCode") != 202:
        return None
    try:
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body)
        job_id = json.loads(body).get("job_id")
    except (ValueError, TypeError, AttributeError):  # not JSON, not base64, not an object
        return None
    return job_id if isinstance(job_id, str) else None


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
    if (job_id := _queued_job_id(response)) is not None:
        # this process ends here: the job waits in the queue for a process that runs jobs
        err.print(f"[yellow]note:[/] job {escape(job_id)} is queued; it runs while `hsops serve` or `hsops up` "
                  f"is running (follow it with `hsops jobs status {escape(job_id)}`)")
    if response.get("statusCode", 500) >= 400:  # printed as Lambda returns it; the exit code says it failed
        raise typer.Exit(1)
