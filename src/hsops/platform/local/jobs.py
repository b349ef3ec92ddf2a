"""Batch and async prediction jobs on the local platform.

A submission writes the job's row (``state.db``, table ``jobs``), its input (inline
descriptions become ``jobs/<id>/input.jsonl`` in the object store; a batch on a file
uses the object as it is) and one ``job.submitted`` message on the event bus. Runner
threads in every serving replica receive those messages, the SQS-and-Lambda shape the
AWS backend has too, so a job gets the bus's guarantees:

* at-least-once with a visibility timeout that the runner extends while it works: a
  replica that dies mid-job lets the message reappear and another replica takes over;
* a checkpoint per chunk: rows are answered ``chunk_rows`` at a time and each chunk is
  one atomic object ``jobs/<id>/parts/<n>.jsonl``; a resumed job skips the chunks it
  finds, so no row is answered twice into the file or lost;
* retries with the error recorded, then a dead letter and a failed job with the reason;
  an input that cannot be read fails at once (retrying cannot help).

The predictions file ``jobs/<id>/predictions.jsonl`` is assembled from the parts when
the last chunk is done: one JSON object per input row, in input order, including rows
that could not be answered (with their ``error``). Chunks go through the replica's
micro-batcher as background work, so live requests keep their latency.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from hsops.platform.backend import Backend, BackendError, ObjectNotFound
from hsops.platform.local.state_store import StateStore
from hsops.serving import metrics
from hsops.serving.config import Jobs as JobsConfig
from hsops.serving.config import Limits
from hsops.serving.jobs import (
    ENDED,
    JobError,
    JobNotFound,
    check_callback_url,
    deliver_callback,
    output_record,
    read_descriptions,
)

log = logging.getLogger("hsops.jobs")

JOB_QUEUE = "job.submitted"
PREFIX = "jobs"
BATCH_INPUTS = "batch/"  # where batch input files are put; the only prefix a job may read
CALLBACK_SECRET_FILE = "callback.secret"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def callback_secret(home: Path) -> bytes:
    """The HMAC key that signs callbacks: made once per HSOPS_HOME, readable by its owner only."""
    path = Path(home) / CALLBACK_SECRET_FILE
    if not path.exists():
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        tmp.write_text(secrets.token_hex(32), encoding="ascii")
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # first writer wins; the others read its secret
        except FileExistsError:
            pass
        tmp.unlink()
    return path.read_text(encoding="ascii").strip().encode()


class LocalJobs:
    """Implements ``hsops.serving.jobs.JobService``; ``start_runners`` processes jobs."""

    def __init__(self, home: Path, backend: Backend, state: StateStore, *, jobs: JobsConfig | None = None,
                 limits: Limits | None = None, max_receives: int = 3, variant: str = "champion"):
        self.home = Path(home)
        self.variant = variant
        self.backend, self.state = backend, state
        self.config, self.limits = jobs or JobsConfig(), limits or Limits()
        self.max_receives = max_receives
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._deliveries: ThreadPoolExecutor | None = None  # callbacks sent by runners
        self._pool_lock = threading.Lock()

    # -- submitting ----------------------------------------------------------------------
    def submit(self, kind: str, request: dict, *, key_id: str | None = None, publish: bool = True) -> dict:
        """Record a job and queue it; ``publish=False`` leaves it for ``run_now`` (the CLI)."""
        if request.get("callback_url") is not None:  # "" is a mistake, not "no callback"
            check_callback_url(request["callback_url"], self.config.callback_hosts)
        job_id = f"job-{secrets.token_hex(8)}"
        if kind == "async" or request.get("descriptions") is not None:
            texts = request.pop("descriptions")
            # ASCII JSON: a lone surrogate (valid in a JSON string, not in UTF-8) is escaped,
            # and its row then fails on its own instead of the submission failing with a 500
            data = "".join(json.dumps({"text": t}) + "\n" for t in texts).encode()
            input_key = f"{PREFIX}/{job_id}/input.jsonl"
            self.backend.objects.put(input_key, data)
            request["text_column"] = "text"
            total = len(texts)
        else:
            input_key = request["object_key"]
            if not input_key.startswith(BATCH_INPUTS):
                # other prefixes hold other keys' job inputs and results, datasets, models
                raise JobError(f"object_key must name an object under {BATCH_INPUTS} "
                               f"(HSOPS_HOME/objects/{BATCH_INPUTS}), got {input_key[:80]!r}")
            try:
                info = self.backend.objects.head(input_key)
            except BackendError as exc:
                raise JobError(f"object_key: {exc}") from None
            if info.size > self.limits.max_batch_file_bytes:
                raise JobError(f"object_key: {info.size} bytes, over the batch file limit of "
                               f"{self.limits.max_batch_file_bytes}")
            total = None
        with self.state.db.transaction() as conn:
            conn.execute(
                "INSERT INTO jobs (job_id, kind, status, created_at, request, input_key, rows_total, key_id) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?, ?)",
                (job_id, kind, _now(), json.dumps(request), input_key, total, key_id))
        if publish:
            self.backend.events.publish(JOB_QUEUE, {"job_id": job_id}, dedup_key=job_id)
        return self.get(job_id, with_key=False)

    # -- reading -------------------------------------------------------------------------
    def _row(self, job_id: str) -> dict:
        row = self.state.db.conn().execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return dict(row)

    def get(self, job_id: str, *, with_key: bool = True) -> dict:
        row = self._row(job_id)
        total, done = row["rows_total"], row["rows_done"]
        out = {
            "job_id": row["job_id"], "kind": row["kind"], "status": row["status"],
            "created_at": row["created_at"], "started_at": row["started_at"], "ended_at": row["ended_at"],
            "progress": {"rows_done": done, "rows_total": total, "rows_failed": row["rows_failed"],
                         "fraction": round(done / total, 4) if total else (1.0 if row["status"] == "succeeded"
                                                                           else None)},
            "model_version": row["model_version"], "output_key": row["output_key"],
            "error": row["error"], "callback": json.loads(row["callback"]) if row["callback"] else None,
            "links": {"self": f"/v1/jobs/{job_id}", "results": f"/v1/jobs/{job_id}/results"},
        }
        if with_key:
            out["key_id"] = row["key_id"]
        if row["kind"] == "async" and row["status"] == "succeeded" and row["output_key"]:
            out["result"] = self._async_result(job_id, row["output_key"])
        return out

    def _async_result(self, job_id: str, output_key: str) -> dict:
        records = [json.loads(line) for line in self.backend.objects.get(output_key).splitlines() if line.strip()]
        # the /v1/predict answer's shape: explanation is null unless it was asked for
        predictions = [{"explanation": None, **{k: v for k, v in r.items() if k not in ("row", "text")}}
                       for r in records]
        versions = [p["model_version"] for p in predictions if "model_version" in p]
        return {"request_id": job_id, "model_version": versions[0] if versions else None,
                "predictions": predictions}

    def open_results(self, job_id: str):
        row = self._row(job_id)
        return self.backend.objects.open(row["output_key"])

    def cancel(self, job_id: str) -> dict:
        with self.state.db.transaction() as conn:
            conn.execute("UPDATE jobs SET status = 'cancelled', ended_at = ? WHERE job_id = ? "
                         "AND status IN ('queued', 'running')", (_now(), job_id))
        return self.get(job_id)

    def _update(self, job_id: str, **fields) -> None:
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.state.db.transaction() as conn:
            conn.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*fields.values(), job_id))

    # -- running ---------------------------------------------------------------------------
    def start_runners(self, predictor_source, batcher, sink=None) -> None:
        """Threads that take jobs off the bus and answer them through ``batcher``."""
        for i in range(self.config.runners):
            thread = threading.Thread(target=self._runner, args=(predictor_source, batcher, sink),
                                      name=f"hsops-jobs-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; a job in progress stops at its next chunk and resumes later."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._deliveries is not None:  # callbacks under way finish; a pending one is redelivered later
            self._deliveries.shutdown(wait=True, cancel_futures=True)

    def _runner(self, predictor_source, batcher, sink) -> None:
        idle, swept = 0.2, 0.0
        while not self._stop.is_set():
            if time.monotonic() - swept > 5.0:
                swept = time.monotonic()
                self._fail_buried()
                self._redeliver_stale()
            try:
                messages = self.backend.events.receive(JOB_QUEUE, visibility_timeout=self.config.lease_seconds,
                                                       max_receives=self.max_receives)
            except Exception:  # noqa: BLE001 - a locked database: try again shortly
                log.exception("could not read the job queue")
                messages = []
            if not messages:
                self._stop.wait(idle)
                idle = min(1.0, idle * 1.5)
                continue
            idle = 0.2
            for message in messages:
                self.run_message(message, predictor_source, batcher, sink)

    def _fail_buried(self) -> None:
        """A job whose message the bus buried on its own (its runners kept dying: the lease
        ran out ``max_receives`` times) is failed with that reason, not left running."""
        try:
            for letter in self.backend.events.dead_letters(JOB_QUEUE):
                job_id = letter.body.get("job_id")
                with self.state.db.transaction() as conn:
                    changed = conn.execute(
                        "UPDATE jobs SET status = 'failed', ended_at = ?, error = ? WHERE job_id = ? "
                        "AND status IN ('queued', 'running')", (_now(), f"dead-lettered: {letter.error}", job_id))
                if changed.rowcount:
                    metrics.JOBS.labels(self._row(job_id)["kind"], "failed").inc()
                    self._call_back(job_id, wait=False)
        except Exception:  # noqa: BLE001 - retried at the next sweep
            log.exception("could not fail dead-lettered jobs")

    def run_message(self, message, predictor_source, batcher, sink) -> None:
        job_id = message.body.get("job_id")
        try:
            row = self._row(job_id)
        except JobNotFound:
            self.backend.events.dead_letter(message, f"no job {job_id!r}")
            return
        if row["status"] in ENDED:
            self.backend.events.ack(message)  # cancelled, or a duplicate delivery of a finished job
            return
        try:
            finished = self._run(row, message, predictor_source, batcher, sink)
        except JobError as exc:  # the input cannot be answered: retrying cannot help
            self._fail(job_id, str(exc), wait=False)
            self.backend.events.dead_letter(message, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - retried by the bus, then dead-lettered
            error = f"{type(exc).__name__}: {exc}"
            log.exception("job %s failed (delivery %d)", job_id, message.receive_count)
            self._update(job_id, attempts=message.receive_count, error=error)
            if message.receive_count >= self.max_receives:
                self._fail(job_id, error, wait=False)
                self.backend.events.dead_letter(message, error)
            else:
                self.backend.events.nack(message, error, delay=1.0)
            return
        if finished:
            self.backend.events.ack(message)
        else:  # stopping: let another replica (or the next start) take it over
            # with a fresh message, not a nack: a nack counts as a failed delivery, and after
            # max_receives graceful stops (deploys, scale-downs) the bus would bury the
            # message and leave the job 'running' forever
            self.backend.events.publish(JOB_QUEUE, {"job_id": job_id})
            self.backend.events.ack(message)

    def run_now(self, job_id: str, predictor_source, batcher, sink=None) -> dict:
        """Run a job in this thread (``hsops batch``); its final state."""
        try:
            self._run(self._row(job_id), None, predictor_source, batcher, sink)
        except Exception as exc:  # noqa: BLE001 - recorded on the job like a runner would
            self._fail(job_id, str(exc) if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}")
        return self.get(job_id)

    def _fail(self, job_id: str, error: str, *, wait: bool = True) -> None:
        self._update(job_id, status="failed", ended_at=_now(), error=error)
        metrics.JOBS.labels(self._row(job_id)["kind"], "failed").inc()
        self._call_back(job_id, wait=wait)

    def _run(self, row: dict, message, predictor_source, batcher, sink) -> bool:
        job_id = row["job_id"]
        request = json.loads(row["request"])
        if row["status"] == "queued":
            self._update(job_id, status="running", started_at=_now(),
                         attempts=message.receive_count if message is not None else 1)
        workdir = Path(tempfile.mkdtemp(prefix=f"{job_id}-", dir=self._scratch()))
        try:
            local = workdir / Path(row["input_key"]).name
            try:
                self.backend.objects.download(row["input_key"], local)
            except ObjectNotFound:
                raise JobError(f"the input object {row['input_key']!r} is gone") from None
            rows = read_descriptions(local, text_column=request.get("text_column"),
                                     max_rows=self.limits.max_batch_items,
                                     max_text_chars=self.limits.max_text_chars)
            chunk, number, done, failed, lease_at = [], 0, 0, 0, time.monotonic()
            for item in rows:
                chunk.append(item)
                if len(chunk) == self.config.chunk_rows:
                    done += self._chunk(job_id, row["kind"], number, chunk, request, predictor_source, batcher, sink)
                    failed += sum(problem is not None for _, _, problem in chunk)
                    number, chunk = number + 1, []
                    self._update(job_id, rows_done=done, rows_failed=failed)
                    if message is not None and time.monotonic() - lease_at > self.config.lease_seconds / 3:
                        self.backend.events.extend(message, self.config.lease_seconds)
                        lease_at = time.monotonic()
                    if self._stop.is_set():
                        return False
                    if self._row(job_id)["status"] == "cancelled":
                        return True
            if chunk:
                done += self._chunk(job_id, row["kind"], number, chunk, request, predictor_source, batcher, sink)
                failed += sum(problem is not None for _, _, problem in chunk)
                number += 1
            output_key, versions = self._assemble(job_id, number, workdir)
            self._update(job_id, status="succeeded", ended_at=_now(), rows_done=done, rows_total=done,
                         rows_failed=failed, output_key=output_key, model_version=",".join(versions) or None,
                         error=None)
            metrics.JOBS.labels(row["kind"], "succeeded").inc()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        self._call_back(job_id, wait=message is None)
        return True

    def _scratch(self) -> Path:
        path = self.home / "tmp" / "jobs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _part_key(self, job_id: str, number: int) -> str:
        return f"{PREFIX}/{job_id}/parts/{number:06d}.jsonl"

    def _chunk(self, job_id: str, kind: str, number: int, chunk: list, request: dict, predictor_source, batcher,
               sink) -> int:
        """Answer one chunk into its part object; a part already there (a resumed job) is kept."""
        key = self._part_key(job_id, number)
        try:
            self.backend.objects.head(key)
            return len(chunk)
        except ObjectNotFound:
            pass
        good = [(row, text) for row, text, problem in chunk if problem is None]
        predictions: list = []
        if good:
            predictor = predictor_source()
            # sub-batches of the batcher's size keep real-time requests from waiting long
            size = batcher.max_batch
            for start in range(0, len(good), size):
                texts = [text for _, text in good[start:start + size]]
                predictions += batcher.submit(predictor, texts, request.get("top_k", 5),
                                              bool(request.get("explain", False)), background=True).result()
        answered = iter(predictions)
        lines, logged, texts = [], [], []
        for row, text, problem in chunk:
            if problem is not None:
                lines.append(output_record(row, text, None, problem))
                continue
            item = {**next(answered).to_dict(), "request_id": f"{job_id}-{row}"}
            lines.append(output_record(row, text, item))
            logged.append(item)
            texts.append(text)
        self.backend.objects.put(key, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode())
        if sink is not None and logged:
            from hsops.serving.predictor import log_answers

            log_answers(sink, job_id, texts, logged)
        metrics.count_answers(logged, self.variant, kind)
        return len(chunk)

    def _assemble(self, job_id: str, parts: int, workdir: Path) -> tuple[str, list[str]]:
        out_path = workdir / "predictions.jsonl"
        versions: dict[str, None] = {}
        with open(out_path, "wb") as out:
            for number in range(parts):
                data = self.backend.objects.get(self._part_key(job_id, number))
                for line in data.splitlines():
                    version = json.loads(line).get("model_version")
                    if version:
                        versions[version] = None
                out.write(data)
        output_key = f"{PREFIX}/{job_id}/predictions.jsonl"
        self.backend.objects.put(output_key, out_path)
        for number in range(parts):
            self.backend.objects.delete(self._part_key(job_id, number))
        return output_key, list(versions)

    def _call_back(self, job_id: str, *, wait: bool = True) -> None:
        """Tell the job's ``callback_url`` that it ended.

        From a runner (``wait=False``) the delivery goes to a small pool of its own: a
        receiver that hangs, then is retried, must not hold the job queue for everyone
        else. The job shows ``callback.pending`` until the outcome is recorded; a
        delivery whose replica died meanwhile is taken up again by a later sweep
        (``_redeliver_stale``), so a callback is delivered at least once.
        """
        url = json.loads(self._row(job_id)["request"]).get("callback_url")
        if not url:
            return
        self._update(job_id, callback=json.dumps({"url": url, "pending": True, "delivered": False, "status": None,
                                                  "attempts": 0, "error": None, "at": _now()}))
        if wait:
            self._deliver(job_id, url)
            return
        with self._pool_lock:
            if self._deliveries is None:
                self._deliveries = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hsops-callbacks")
            self._deliveries.submit(self._deliver, job_id, url)

    def _deliver(self, job_id: str, url: str) -> None:
        try:
            job = self.get(job_id, with_key=False)
            job.pop("callback", None)  # the receiver gets the job, not our delivery bookkeeping
            job["sent_at"] = _now()  # signed with the rest: a receiver can refuse an old, replayed call
            outcome = deliver_callback(url, job, callback_secret(self.home), attempts=self.config.callback_attempts,
                                       timeout=self.config.callback_timeout_s)
            outcome.update(pending=False, at=_now())
            self._update(job_id, callback=json.dumps(outcome))
        except Exception:  # noqa: BLE001 - left pending: a later sweep delivers it again
            log.exception("callback of job %s could not be delivered", job_id)

    def _stale_callback_seconds(self) -> float:
        # longer than a delivery can take: every attempt timing out, plus the backoff waits
        attempts = self.config.callback_attempts
        return attempts * self.config.callback_timeout_s + 0.5 * 2 ** attempts + 30.0

    def _redeliver_stale(self) -> None:
        """Deliver again the callbacks left pending by a replica that died mid-delivery."""
        cutoff = (datetime.now(timezone.utc) - timedelta(seconds=self._stale_callback_seconds())).isoformat(
            timespec="milliseconds")
        rows = self.state.db.conn().execute(
            "SELECT job_id FROM jobs WHERE callback IS NOT NULL AND json_extract(callback, '$.pending') = 1 "
            "AND json_extract(callback, '$.at') < ?", (cutoff,)).fetchall()
        for (job_id,) in rows:
            with self.state.db.transaction() as conn:  # claim it: one sweeper redelivers
                claimed = conn.execute(
                    "UPDATE jobs SET callback = json_set(callback, '$.at', ?) WHERE job_id = ? "
                    "AND json_extract(callback, '$.at') < ?", (_now(), job_id, cutoff)).rowcount
            if claimed:
                self._call_back(job_id, wait=False)
