"""An Amazon States Language interpreter that journals every step and resumes.

Resume is replay. Every step has a key derived only from the path through the machine
(``Train#0/[2]/TrainOne#0@1``: state ``#`` visit count within its branch, ``/[i]/`` a
Map item, ``/{b}/`` a Parallel branch, ``@n`` the n-th retry). Control flow depends only
on step outputs, so running the same definition on the same input regenerates the same
keys, and ``_step`` consults the journal before doing anything:

- succeeded: its stored output is the result, nothing runs (no Task runs twice);
- failed: its error is raised again, so Retry counts and Catch decide as the first time;
- running (the process died during it): it runs again under the same key, which the
  task runner receives so it can re-attach to the invocation it already started;
- absent: it runs, with a ``begin`` record before and a ``finish`` after.

Map items and Parallel branches run on threads; a failure cancels the siblings at
their next state boundary, as Step Functions stops the other iterations.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hsops.platform.local.asl import paths
from hsops.platform.local.asl.choice import choose
from hsops.platform.local.asl.journal import (
    FAILED,
    RUNNING,
    SUCCEEDED,
    Journal,
    StepRecord,
)
from hsops.platform.local.asl.validate import validate_definition

RUNTIME = "States.Runtime"
# Step Functions: these fail the execution whatever Retry and Catch say
_UNCATCHABLE = frozenset({RUNTIME, "States.DataLimitExceeded"})


class TaskFailed(Exception):
    """A task (or a state) failed with an ASL error name and cause."""

    def __init__(self, error: str, cause: str = ""):
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class ExecutionFailed(Exception):
    """The execution failed: ``error`` and ``cause`` as Step Functions reports them."""

    def __init__(self, error: str, cause: str = ""):
        super().__init__(f"{error}: {cause}" if cause else error)
        self.error = error
        self.cause = cause


class DefinitionError(ValueError):
    """A definition the interpreter cannot run; the message lists the problems."""


class Stopped(Exception):
    """``stop()`` was called. Steps in flight stay ``running`` in the journal, so a new
    Interpreter on the same journal resumes the execution."""


class _Cancelled(Exception):
    """A sibling Map item / Parallel branch failed: this one stops at a state boundary."""


@dataclass
class TaskOutcome:
    output: Any
    cost_usd: float = 0.0
    invocation_id: str | None = None
    details: dict = field(default_factory=dict)  # duration_ms, peak_memory_mb, cold_start...


# run_task(resource, payload, *, key, timeout) -> TaskOutcome, or raise TaskFailed
TaskRunner = Callable[..., TaskOutcome]


class _Cancel:
    """A cancellation flag that cascades to the scopes below it (nested Maps)."""

    def __init__(self, parent: _Cancel | None = None):
        self.event = threading.Event()
        self._parent = parent
        self._children: set[_Cancel] = set()
        self._lock = threading.Lock()
        if parent is not None:
            with parent._lock:
                parent._children.add(self)
            if parent.event.is_set():
                self.cancel()

    def cancel(self) -> None:
        self.event.set()
        with self._lock:
            children = list(self._children)
        for child in children:
            child.cancel()

    def close(self) -> None:
        if self._parent is not None:
            with self._parent._lock:
                self._parent._children.discard(self)


# One process-wide pool of branch threads, so threads (and the SQLite connection each
# opens for the journal) are reused, not created per Map. A fan-out also runs items on
# its own thread, so it makes progress even when every pool thread is busy: nested
# Maps cannot deadlock on a full pool.
_POOL_SIZE = 64
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _branch_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="asl-branch")
        return _pool


class _Meta:
    """What a step's body reports besides its output: written on finish, even a failed one."""

    def __init__(self, data: dict, save: Callable[[], None]):
        self.data = data
        self.cost_usd = 0.0
        self.invocation_id: str | None = None
        self.save = save  # persist ``data`` now (Wait's wake_at, before it sleeps)


def _matches(names: list[str], error: str) -> bool:
    if error in _UNCATCHABLE:
        return False
    return any(name in ("States.ALL", error)
               or (name == "States.TaskFailed" and error != "States.Timeout") for name in names)


class Interpreter:
    def __init__(self, definition: dict, run_task: TaskRunner, journal: Journal, *,
                 context: dict | None = None, sleep: Callable[[float], None] | None = None,
                 now: Callable[[], float] = time.time, default_map_concurrency: int = 4):
        """``sleep`` None waits on an event that ``stop()`` sets; a custom one (tests)
        is called as is, and stop is noticed when it returns."""
        problems = validate_definition(definition)
        if problems:
            raise DefinitionError("invalid state machine definition: " + "; ".join(problems))
        if default_map_concurrency < 1:
            raise ValueError("default_map_concurrency must be at least 1")
        self.definition = definition
        self.journal = journal
        self._run_task = run_task
        self._sleep_fn = sleep
        self._now = now
        self._map_concurrency = default_map_concurrency
        self._context = copy.deepcopy(context or {})
        execution = self._context.get("Execution") or {}
        # the runner's key must be unique across executions sharing a runner
        self._execution_id = execution.get("Id") or getattr(journal, "execution_id", None)
        self._stopped = threading.Event()
        self._root = _Cancel()

    def stop(self) -> None:
        """Make ``run`` raise ``Stopped`` at the next state boundary or sleep."""
        self._stopped.set()
        self._root.cancel()

    def run(self, input: Any) -> Any:
        """Run (or resume) the execution; its output, or ``ExecutionFailed``."""
        base = self._base_context(input)
        try:
            return self._run_machine(self.definition, input, "", None, self._root, base)
        except TaskFailed as exc:
            raise ExecutionFailed(exc.error, exc.cause) from None

    # ------------------------------------------------------------ machine and states

    def _base_context(self, input: Any) -> dict:
        execution = dict(self._context.get("Execution") or {})
        execution.setdefault("Id", self._execution_id or "local")
        execution.setdefault("Name", execution["Id"])
        if "StartTime" not in execution:
            # a resumed run keeps the start time of the first one
            history = self.journal.steps()
            execution["StartTime"] = paths.format_timestamp(
                history[0].started_at if history else self._now())
        execution["Input"] = input
        machine = dict(self._context.get("StateMachine") or {})
        machine.setdefault("Name", "local")
        machine.setdefault("Id", machine["Name"])
        return {**self._context, "Execution": execution, "StateMachine": machine}

    def _check(self, cancel: _Cancel) -> None:
        if self._stopped.is_set():
            raise Stopped("the execution was stopped")
        if cancel.event.is_set():
            raise _Cancelled()

    def _run_machine(self, machine: dict, input: Any, prefix: str, parent: str | None,
                     cancel: _Cancel, base: dict) -> Any:
        visits: dict[str, int] = {}
        name, value = machine["StartAt"], input
        while True:
            self._check(cancel)
            visit = visits.get(name, 0)
            visits[name] = visit + 1
            state = machine["States"][name]
            key = f"{prefix}{name}#{visit}"
            value, next_name = self._run_state(name, state, key, parent, value, cancel, base)
            if next_name is None:
                return value
            name = next_name

    def _run_state(self, name, state, key, parent, raw, cancel, base) -> tuple[Any, str | None]:
        kind = state["Type"]
        end = None if state.get("End") else state.get("Next")
        if kind in ("Task", "Map", "Parallel"):
            return self._run_retrying(name, state, key, parent, raw, cancel, base, end)
        body = getattr(self, f"_{kind.lower()}")
        output, data = self._step(key, name, state, parent, 0, raw, cancel, base, body)
        if kind == "Choice":
            return output, data["next"]
        return output, None if kind == "Succeed" else end

    def _run_retrying(self, name, state, base_key, parent, raw, cancel, base, end):
        retriers = state.get("Retry", [])
        used = [0] * len(retriers)
        attempt = 0
        body = getattr(self, f"_{state['Type'].lower()}")
        while True:
            key = base_key if attempt == 0 else f"{base_key}@{attempt}"
            try:
                output, _ = self._step(key, name, state, parent, attempt, raw, cancel, base, body)
                return output, end
            except TaskFailed as err:
                delay = _retry_delay(retriers, used, err.error)
                if delay is not None:
                    attempt += 1
                    if self.journal.get(f"{base_key}@{attempt}") is None:
                        # a replayed failure has waited part of its backoff already
                        ended_at = getattr(err, "ended_at", None)
                        if ended_at is not None:
                            delay = ended_at + delay - self._now()
                        self._sleep(delay, cancel)
                    continue
                for catcher in state.get("Catch", []):
                    if _matches(catcher["ErrorEquals"], err.error):
                        failure = {"Error": err.error, "Cause": err.cause}
                        try:
                            output = paths.apply_result_path(raw, failure,
                                                             catcher.get("ResultPath", "$"))
                        except paths.PathError as exc:
                            raise TaskFailed(RUNTIME, f"{name}: Catch: {exc}") from None
                        return output, catcher["Next"]
                raise

    def _step(self, key, name, state, parent, attempt, raw, cancel, base, body):
        """One journaled step: replay it, or run ``body`` between begin and finish."""
        record = self.journal.get(key)
        if record is not None and record.status == SUCCEEDED:
            return record.output, record.data
        if record is not None and record.status == FAILED:
            err = TaskFailed(record.error or "", record.cause or "")
            err.ended_at = record.ended_at  # type: ignore[attr-defined]
            raise err
        started = record.started_at if record is not None else self._now()
        data = dict(record.data) if record is not None else {}
        if record is not None:
            data["resumed"] = data.get("resumed", 0) + 1

        def save() -> None:
            self.journal.begin(StepRecord(
                key=key, state=name, type=state["Type"], parent=parent, attempt=attempt,
                status=RUNNING, input=raw, started_at=started, data=meta.data))

        meta = _Meta(data, save)
        save()
        context = {**base, "State": {"Name": name, "EnteredTime": paths.format_timestamp(started),
                                     "RetryCount": attempt}}
        try:
            try:
                output = body(name, state, key, raw, context, meta, cancel, base)
            except paths.PathError as exc:
                raise TaskFailed(RUNTIME, f"{name}: {exc}") from None
        except TaskFailed as err:
            self.journal.finish(key, status=FAILED, error=err.error, cause=err.cause,
                                cost_usd=meta.cost_usd, invocation_id=meta.invocation_id,
                                data=meta.data, ended_at=self._now())
            raise
        self.journal.finish(key, status=SUCCEEDED, output=output, cost_usd=meta.cost_usd,
                            invocation_id=meta.invocation_id, data=meta.data,
                            ended_at=self._now())
        return output, meta.data

    def _sleep(self, seconds: float, cancel: _Cancel) -> None:
        self._check(cancel)
        if seconds > 0:
            if self._sleep_fn is not None:
                self._sleep_fn(seconds)
            else:
                cancel.event.wait(seconds)
        self._check(cancel)

    # ------------------------------------------------------------ data flow

    @staticmethod
    def _effective_input(state: dict, raw: Any, context: dict) -> Any:
        value = paths.select(raw, state.get("InputPath", "$"), context)
        if "Parameters" in state:
            value = paths.apply_template(state["Parameters"], value, context)
        return value

    @staticmethod
    def _output(state: dict, raw: Any, result: Any, context: dict) -> Any:
        if "ResultSelector" in state:
            result = paths.apply_template(state["ResultSelector"], result, context)
        value = paths.apply_result_path(raw, result, state.get("ResultPath", "$"))
        return paths.select(value, state.get("OutputPath", "$"), context)

    # ------------------------------------------------------------ state bodies
    # body(name, state, key, raw input, context, meta, cancel, base context) -> output

    def _task(self, name, state, key, raw, context, meta, cancel, base):
        payload = self._effective_input(state, raw, context)
        timeout = state.get("TimeoutSeconds")
        if "TimeoutSecondsPath" in state:
            selected = paths.select(raw, state.get("InputPath", "$"), context)
            timeout = paths.get(state["TimeoutSecondsPath"], selected, context)
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                raise paths.PathError(f"TimeoutSecondsPath selected {timeout!r}, not a positive number")
        task_key = f"{self._execution_id}/{key}" if self._execution_id else key
        # the runner gets its own copy: a payload it mutates must not change our input
        payload = copy.deepcopy(payload)
        try:
            outcome = self._run_task(state["Resource"], payload, key=task_key, timeout=timeout)
        except (TaskFailed, Stopped):  # a runner may give up waiting when told to stop
            raise
        except Exception as exc:  # a runner's own error: named after its class, as Lambda does
            raise TaskFailed(type(exc).__name__, str(exc)) from exc
        if not isinstance(outcome, TaskOutcome):
            raise TaskFailed(RUNTIME, f"{name}: the task runner returned "
                                      f"{type(outcome).__name__}, not a TaskOutcome")
        meta.cost_usd, meta.invocation_id = outcome.cost_usd, outcome.invocation_id
        meta.data.update(outcome.details)
        return self._output(state, raw, outcome.output, context)

    def _pass(self, name, state, key, raw, context, meta, cancel, base):
        value = self._effective_input(state, raw, context)  # resolves even when Result wins
        result = copy.deepcopy(state.get("Result", value))  # never hand out the definition
        return self._output(state, raw, result, context)

    def _choice(self, name, state, key, raw, context, meta, cancel, base):
        value = paths.select(raw, state.get("InputPath", "$"), context)
        next_name = choose(state, value, context)
        if next_name is None:
            raise TaskFailed("States.NoChoiceMatched",
                             f"{name}: no choice rule matched and there is no Default")
        meta.data["next"] = next_name
        return paths.select(value, state.get("OutputPath", "$"), context)

    def _wait(self, name, state, key, raw, context, meta, cancel, base):
        value = paths.select(raw, state.get("InputPath", "$"), context)
        if "wake_at" not in meta.data:  # first entry; a resumed Wait keeps its deadline
            meta.data["wake_at"] = self._wake_at(state, value, context)
            meta.save()
        self._sleep(meta.data["wake_at"] - self._now(), cancel)
        return paths.select(value, state.get("OutputPath", "$"), context)

    def _wake_at(self, state: dict, value: Any, context: dict) -> float:
        if "Seconds" in state or "SecondsPath" in state:
            seconds = state.get("Seconds")
            if "SecondsPath" in state:
                seconds = paths.get(state["SecondsPath"], value, context)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
                raise paths.PathError(f"the wait time {seconds!r} is not a non-negative number")
            return self._now() + seconds
        stamp = state.get("Timestamp")
        if "TimestampPath" in state:
            stamp = paths.get(state["TimestampPath"], value, context)
        moment = paths.parse_timestamp(stamp)
        if moment is None:
            raise paths.PathError(f"{stamp!r} is not an RFC 3339 timestamp")
        return moment.timestamp()

    def _succeed(self, name, state, key, raw, context, meta, cancel, base):
        value = paths.select(raw, state.get("InputPath", "$"), context)
        return paths.select(value, state.get("OutputPath", "$"), context)

    def _fail(self, name, state, key, raw, context, meta, cancel, base):
        error, cause = state.get("Error", "States.Fail"), state.get("Cause", "")
        if "ErrorPath" in state:  # a path or an intrinsic function, as in Step Functions
            error = paths.evaluate(state["ErrorPath"], raw, context)
        if "CausePath" in state:
            cause = paths.evaluate(state["CausePath"], raw, context)
        if not isinstance(error, str) or not isinstance(cause, str):
            raise paths.PathError("ErrorPath and CausePath must select strings")
        raise TaskFailed(error, cause)

    def _map(self, name, state, key, raw, context, meta, cancel, base):
        value = paths.select(raw, state.get("InputPath", "$"), context)
        items = paths.select(value, state.get("ItemsPath", "$"), context)
        if not isinstance(items, list):
            raise paths.PathError(f"ItemsPath selected a {type(items).__name__}, not an array")
        selector = state.get("ItemSelector", state.get("Parameters"))
        inputs = items
        if selector is not None:
            inputs = [paths.apply_template(selector, value,
                                           {**context, "Map": {"Item": {"Index": i, "Value": v}}})
                      for i, v in enumerate(items)]
        processor = state.get("ItemProcessor") or state["Iterator"]
        tolerance = None
        if "ToleratedFailureCount" in state or "ToleratedFailurePercentage" in state:
            tolerance = (state.get("ToleratedFailureCount"), state.get("ToleratedFailurePercentage"))
        jobs = [(lambda child, i=i: self._run_machine(processor, inputs[i], f"{key}/[{i}]/",
                                                      key, child, base))
                for i in range(len(inputs))]
        concurrency = state.get("MaxConcurrency", 0) or self._map_concurrency
        results = self._fan_out(jobs, concurrency, cancel, tolerance)
        return self._output(state, raw, results, context)

    def _parallel(self, name, state, key, raw, context, meta, cancel, base):
        value = self._effective_input(state, raw, context)
        jobs = [(lambda child, i=i, branch=branch: self._run_machine(
                    branch, value, f"{key}/{{{i}}}/", key, child, base))
                for i, branch in enumerate(state["Branches"])]
        results = self._fan_out(jobs, len(jobs), cancel)
        return self._output(state, raw, results, context)

    def _fan_out(self, jobs: list[Callable[[_Cancel], Any]], concurrency: int, cancel: _Cancel,
                 tolerance: tuple[int | None, float | None] | None = None) -> list[Any]:
        """Run ``jobs`` at most ``concurrency`` at a time; their results in order.

        The first failure (in time) cancels the rest and is raised; with a tolerance
        (Map's ToleratedFailure*), failed items within it become {"Error", "Cause"}.
        A crash or Stopped in any job is re-raised once all have returned.
        """
        if not jobs:
            return []
        child = _Cancel(cancel)
        results: list[Any] = [None] * len(jobs)
        failures: list[tuple[int, BaseException]] = []
        lock = threading.Lock()
        counter = itertools.count()

        def too_many(errors: int) -> bool:
            if tolerance is None:
                return errors > 0
            count, percentage = tolerance  # crossing either threshold fails the Map
            return ((count is not None and errors > count)
                    or (percentage is not None and errors * 100 > percentage * len(jobs)))

        def worker() -> None:
            while True:
                with lock:
                    i = next(counter)
                if i >= len(jobs):
                    return
                try:
                    self._check(child)
                    results[i] = jobs[i](child)
                except BaseException as exc:  # noqa: BLE001 - sorted out after all return
                    with lock:
                        failures.append((i, exc))
                        errors = [e for _, e in failures if isinstance(e, TaskFailed)]
                        fatal = not isinstance(exc, TaskFailed) or exc.error in _UNCATCHABLE
                    if fatal or too_many(len(errors)):
                        child.cancel()

        helpers = [_branch_pool().submit(worker) for _ in range(min(concurrency, len(jobs)) - 1)]
        try:
            worker()
        finally:
            for helper in helpers:
                if not helper.cancel():  # one that never started has nothing to wait for
                    helper.result()
            child.close()
        for _, exc in failures:  # a crash (BaseException) wins over everything
            if not isinstance(exc, (TaskFailed, _Cancelled, Stopped)):
                raise exc
        self._check(cancel)  # our own scope cancelled or stopped: that is why jobs stopped
        for _, exc in failures:
            if isinstance(exc, Stopped):
                raise exc
        errors = [(i, exc) for i, exc in failures if isinstance(exc, TaskFailed)]
        for _, exc in errors:
            if exc.error in _UNCATCHABLE:
                raise exc
        if tolerance is None and errors:
            raise errors[0][1]
        if too_many(len(errors)):
            raise TaskFailed("States.ExceedToleratedFailureThreshold",
                             f"{len(errors)} of {len(jobs)} items failed")
        for i, exc in errors:
            results[i] = {"Error": exc.error, "Cause": exc.cause}
        if len(errors) < len(failures):
            raise _Cancelled()  # cannot happen: a cancel always has a cause raised above
        return results


def _retry_delay(retriers: list[dict], used: list[int], error: str) -> float | None:
    """The backoff before the next attempt, or None when no retrier allows one. The first
    retrier whose ErrorEquals matches decides, even when it is exhausted."""
    if error in _UNCATCHABLE:
        return None
    for i, retrier in enumerate(retriers):
        if _matches(retrier["ErrorEquals"], error):
            if used[i] >= retrier.get("MaxAttempts", 3):
                return None
            delay = retrier.get("IntervalSeconds", 1) * retrier.get("BackoffRate", 2.0) ** used[i]
            if "MaxDelaySeconds" in retrier:
                delay = min(delay, retrier["MaxDelaySeconds"])
            used[i] += 1
            return delay
    return None
