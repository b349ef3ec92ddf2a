"""Diagnostic handlers: the function runtime's own test subjects, also used by benchmarks.

Each is an ordinary ``handler(event, context) -> dict``, as a pipeline stage is, so the
runtime is exercised exactly as in production: round trip (``echo``), time (``sleep``),
handler errors (``fail``), memory accounting (``allocate``) and a worker dying
mid-invocation (``crash``). They import nothing beyond the standard library, so their
cold start measures the runtime, not a dependency.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

MIB = 1024 * 1024


def echo(event: dict, context) -> dict:
    return {"echo": event, "function": context.function_name, "request_id": context.aws_request_id}


def sleep(event: dict, context) -> dict:
    seconds = float(event.get("seconds", 1.0))
    time.sleep(seconds)
    return {"slept": seconds}


def fail(event: dict, context) -> dict:
    raise ValueError(event.get("message", "the fail diagnostic failed, as asked"))


def allocate(event: dict, context) -> dict:
    mb = int(event.get("mb", 64))
    # bytes * n writes every byte: the pages become resident. A zero-filled bytearray
    # would be mapped lazily and never show in the resident set.
    block = b"\x01" * (mb * MIB)
    hold = float(event.get("hold_seconds", 0.0))
    if hold:
        time.sleep(hold)
    return {"allocated_mb": mb, "checksum": block[-1]}


def crash(event: dict, context) -> dict:
    """Kill the worker process mid-invocation, as the out-of-memory killer would.

    With ``marker_file`` it crashes only when the file is not there yet, creating it
    first, so the caller's retry succeeds: a transient crash."""
    marker = event.get("marker_file")
    if marker:
        path = Path(marker)
        if path.exists():
            return {"crashed": False, "marker_file": marker}
        path.touch()
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # not reached: SIGKILL is delivered before the kill() call returns
    return {"crashed": True}
