"""Batch and async prediction jobs: what every backend shares.

A job is submitted over HTTP (``POST /v1/batch``: a file in the object store or inline
descriptions; ``POST /v1/predict/async``: a real-time body answered later), runs in
the background through the same Predictor as real-time requests, writes its
predictions to the object store and, when asked, calls a URL back when it ends.

This module holds the parts that do not depend on where jobs run: the service
protocol the HTTP app calls, the output record, reading an input file, and the signed
callback. The local platform runs jobs from its event bus (``platform.local.jobs``).

Callbacks are POSTs of the job's status JSON with ``X-Hsops-Signature: sha256=<hex>``,
an HMAC of the body under the callback secret, so the receiver can tell the call came
from us. A callback URL must be http(s) to a host on the allow-list (loopback by
default): a job must not be a way to make the server call arbitrary addresses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

log = logging.getLogger("hsops.serving.jobs")

JOB_KINDS = ("batch", "async")
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
ENDED = ("succeeded", "failed", "cancelled")
SIGNATURE_HEADER = "X-Hsops-Signature"


class JobError(ValueError):
    """A job request that cannot be accepted; the message says why."""


class JobNotFound(KeyError):
    pass


@runtime_checkable
class JobService(Protocol):
    def submit(self, kind: str, request: dict, *, key_id: str | None = None) -> dict: ...

    def get(self, job_id: str) -> dict: ...  # JobNotFound

    def cancel(self, job_id: str) -> dict: ...

    def open_results(self, job_id: str): ...  # a binary file object of the predictions (JSONL)


def output_record(row: int, text: str | None, prediction: dict | None, error: str | None = None) -> dict:
    """One line of a predictions file: the input row number (1-based, as in the file),
    its text, and the answer or the reason the row could not be answered."""
    if prediction is None:
        return {"row": row, "text": text, "error": error}
    keep = ("hs_code", "hs_description", "in_hs2022", "confidence", "abstain", "level", "heading",
            "alternatives", "model_version", "request_id")
    record = {"row": row, "text": text, **{k: prediction[k] for k in keep if k in prediction}}
    if prediction.get("explanation") is not None:  # asked for (async ``explain``): keep it
        record["explanation"] = prediction["explanation"]
    return record


def read_descriptions(path: Path, *, text_column: str | None, max_rows: int,
                      max_text_chars: int) -> Iterator[tuple[int, str | None, str | None]]:
    """``(row, text, problem)`` for each row of a prediction input file.

    ``.txt`` (optionally ``.gz``): one description per line. Otherwise any
    table ``hsops ingest`` reads (CSV/TSV/JSONL/Parquet); a code column is not needed.
    A row that cannot be answered comes out with ``problem`` set, never dropped.
    """
    from hsops.data.readers import NO_LABEL, DataFileError, read_table

    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".txt"):
        rows = _read_lines(path)
    else:
        try:
            rows = ((r.number, r.text, r.problem) for r in read_table(path, text_column=text_column,
                                                                      label_column=NO_LABEL, keep_blank=True))
        except DataFileError as exc:
            raise JobError(str(exc)) from exc
    count = 0
    try:
        for number, text, problem in rows:
            count += 1
            if count > max_rows:
                raise JobError(f"the input has more than {max_rows} rows, the limit of a batch job; split it")
            if problem is None:
                problem = description_problem(text, max_text_chars)
            yield number, (text if isinstance(text, str) else None), problem
    except DataFileError as exc:
        raise JobError(str(exc)) from exc


def _read_lines(path: Path) -> Iterator[tuple[int, str | None, str | None]]:
    import gzip

    from hsops.data.readers import BLANK_ROW, RawRow, number_rows

    def lines():
        with opener(path, "rb") as f:
            for raw in f:
                line = raw.rstrip(b"\r\n")
                if not line.strip():
                    yield RawRow(0, None, None, {}, BLANK_ROW)
                    continue
                try:
                    yield RawRow(0, line.decode("utf-8"), None, {})
                except UnicodeDecodeError:
                    yield RawRow(0, line.decode("utf-8", "replace"), None, {}, "row has bytes that are not valid UTF-8")

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        for row in number_rows(lines(), keep_blank=True):
            yield row.number, row.text, row.problem
    except (OSError, EOFError) as exc:
        raise JobError(f"{path.name}: cannot read the file ({exc})") from exc


def description_problem(text, max_chars: int) -> str | None:
    """The same rule as the real-time API (and ingest): text with a letter or digit."""
    if not isinstance(text, str):
        return "description is missing or not text"
    if len(text) > max_chars:
        return f"description is {len(text)} characters; the limit is {max_chars}"
    if not any(ch.isalnum() for ch in text):
        return "description has no letters or digits"
    return None


# -- callbacks ------------------------------------------------------------------------------
def check_callback_url(url: str, allowed_hosts: tuple[str, ...]) -> str:
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # "http://[::1": an unclosed or invalid IPv6 host
        raise JobError(f"callback_url is not a valid URL ({exc}): {url[:200]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise JobError(f"callback_url must be an http(s) URL with a host, got {url!r}")
    if parts.username or parts.password:
        raise JobError("callback_url must not carry credentials")
    host = parts.hostname.lower()
    if host not in {h.lower() for h in allowed_hosts}:
        raise JobError(f"callback_url host {host!r} is not allowed; allowed: {', '.join(allowed_hosts)} "
                       "(serving.json jobs.callback_hosts)")
    try:
        port = parts.port
    except ValueError as exc:
        raise JobError(f"callback_url has a bad port: {exc}") from None
    if port == 0:
        raise JobError("callback_url has port 0, which nothing listens on")
    return url


def sign(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: bytes, header: str) -> bool:
    """For receivers: does ``header`` sign ``body`` under ``secret``?"""
    return hmac.compare_digest(sign(body, secret), header or "")


def deliver_callback(url: str, payload: dict, secret: bytes, *, attempts: int = 4, timeout: float = 5.0,
                     backoff: float = 0.5) -> dict:
    """POST ``payload`` to ``url``, retrying on errors and 5xx with exponential backoff.

    Returns ``{"url", "status", "attempts", "error", "delivered"}``; never raises (a
    receiver being down must not fail a job whose predictions are written).
    """
    import httpx

    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"content-type": "application/json", SIGNATURE_HEADER: sign(body, secret)}
    outcome = {"url": url, "status": None, "attempts": 0, "error": None, "delivered": False}
    for attempt in range(1, max(1, attempts) + 1):
        outcome["attempts"] = attempt
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout, follow_redirects=False)
            outcome["status"] = response.status_code
            if response.status_code < 500:
                outcome["delivered"] = 200 <= response.status_code < 300
                outcome["error"] = None if outcome["delivered"] else f"HTTP {response.status_code}"
                return outcome
            outcome["error"] = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            outcome["error"] = f"{type(exc).__name__}: {exc}"[:300]
        if attempt < attempts:
            time.sleep(backoff * 2 ** (attempt - 1))
    log.warning("callback to %s failed after %d attempts: %s", url, outcome["attempts"], outcome["error"])
    return outcome

