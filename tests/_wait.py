"""Polling for tests that watch real processes: wait until a condition holds, or fail
saying what was awaited (never assert on how long it took)."""

from __future__ import annotations

import time


def wait_for(predicate, timeout: float = 240.0, what: str = "condition", interval: float = 0.2):
    """The first truthy value of ``predicate()``; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")
