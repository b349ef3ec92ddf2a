"""Test doubles for the ASL interpreter: a scripted task runner, a fake clock, a crash."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from hsops.platform.local.asl import TaskOutcome


class Crash(BaseException):
    """Stands for kill -9: not an Exception, so nothing in the interpreter handles it."""


class Runner:
    """A task runner whose resources are Python functions of the payload.

    A handler may return a TaskOutcome, a plain output, or raise (TaskFailed or any
    exception). ``crash_on`` keys raise Crash on their first call only, after the call
    was counted: the task was in flight when the process died.
    """

    def __init__(self, handlers: dict[str, Callable[[Any], Any]] | None = None, *,
                 crash_on: set[str] = frozenset()):
        self.handlers = handlers or {}
        self.crash_on = set(crash_on)
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def __call__(self, resource: str, payload: Any, *, key: str, timeout: float | None):
        with self.lock:
            self.calls.append({"resource": resource, "payload": payload, "key": key,
                               "timeout": timeout})
            crash = key in self.crash_on
            self.crash_on.discard(key)
        if crash:
            raise Crash(key)
        handler = self.handlers.get(resource, lambda payload: payload)
        result = handler(payload)
        return result if isinstance(result, TaskOutcome) else TaskOutcome(output=result)

    def called_keys(self) -> list[str]:
        return [call["key"] for call in self.calls]

    def count(self) -> Counter:
        return Counter(self.called_keys())


class Clock:
    """``now`` and ``sleep`` for the interpreter: sleeping advances time, instantly."""

    def __init__(self, start: float = 1_000.0, *, crash_on_sleep: int | None = None):
        self.t = start
        self.sleeps: list[float] = []
        self.crash_on_sleep = crash_on_sleep  # the n-th sleep (0-based) raises Crash
        self.lock = threading.Lock()

    def now(self) -> float:
        with self.lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            if self.crash_on_sleep == len(self.sleeps) - 1:
                raise Crash(f"during sleep {seconds}")
            self.t += seconds
