"""The interpreter: every state type, data flow, Retry/Catch, Map, Parallel, stop."""

from __future__ import annotations

import threading
import time

import pytest

from hsops.platform.local.asl import (
    DefinitionError,
    ExecutionFailed,
    Interpreter,
    MemoryJournal,
    Stopped,
    TaskFailed,
    TaskOutcome,
    validate_definition,
)
from tests.platform.asl.support import Clock, Runner


def machine(states: dict, start: str | None = None) -> dict:
    return {"StartAt": start or next(iter(states)), "States": states}


def task(resource: str = "fn", **fields) -> dict:
    return {"Type": "Task", "Resource": resource, **({"End": True} if "Next" not in fields
                                                       else {}), **fields}


def run(definition, input=None, *, runner=None, clock=None, journal=None, **kwargs):
    """(output, runner, clock, journal) of one execution with fakes everywhere."""
    runner = runner if runner is not None else Runner()
    clock = clock or Clock()
    journal = journal if journal is not None else MemoryJournal()
    interpreter = Interpreter(definition, runner, journal, sleep=clock.sleep, now=clock.now,
                              **kwargs)
    return interpreter.run({} if input is None else input), runner, clock, journal


def fails(definition, input=None, **kwargs) -> ExecutionFailed:
    with pytest.raises(ExecutionFailed) as info:
        run(definition, input, **kwargs)
    return info.value


# ------------------------------------------------------------------ Pass, Succeed, Fail


class TestPass:
    def test_result_into_result_path(self):
        out, *_ = run(machine({"P": {"Type": "Pass", "Result": {"r": 1}, "ResultPath": "$.res",
                                     "End": True}}), {"x": 1})
        assert out == {"x": 1, "res": {"r": 1}}

    def test_parameters_with_context_and_output_path(self):
        definition = machine({"P": {
            "Type": "Pass", "InputPath": "$.in",
            "Parameters": {"v.$": "$.v", "state.$": "$$.State.Name", "id.$": "$$.Execution.Id",
                           "input.$": "$$.Execution.Input.in.v", "fixed": [1, 2]},
            "OutputPath": "$.wrapped", "ResultPath": "$.wrapped", "End": True}})
        out, *_ = run(definition, {"in": {"v": 7}}, context={"Execution": {"Id": "ex-9"}})
        assert out == {"v": 7, "state": "P", "id": "ex-9", "input": 7, "fixed": [1, 2]}

    def test_null_paths(self):
        definition = machine({"P": {"Type": "Pass", "InputPath": None, "ResultPath": "$.r",
                                    "Result": 1, "End": True}})
        assert run(definition, {"x": 1})[0] == {"x": 1, "r": 1}
        definition = machine({"P": {"Type": "Pass", "ResultPath": None, "Result": 1,
                                    "OutputPath": "$.x", "End": True}})
        assert run(definition, {"x": 5})[0] == 5
        definition = machine({"P": {"Type": "Pass", "OutputPath": None, "End": True}})
        assert run(definition, {"x": 5})[0] == {}


def test_succeed_applies_paths_and_ends():
    definition = machine({
        "S": {"Type": "Succeed", "InputPath": "$.a", "OutputPath": "$.b"},
    })
    assert run(definition, {"a": {"b": 3}})[0] == 3


class TestFail:
    def test_error_and_cause(self):
        definition = machine({"F": {"Type": "Fail", "Error": "Boom", "Cause": "because"}})
        err = fails(definition)
        assert (err.error, err.cause) == ("Boom", "because")

    def test_error_path_and_cause_path(self):
        definition = machine({"F": {"Type": "Fail", "ErrorPath": "$.e.name",
                                    "CausePath": "States.Format('n={}', $.n)"}})
        err = fails(definition, {"e": {"name": "Custom"}, "n": 3})
        assert (err.error, err.cause) == ("Custom", "n=3")

    def test_error_path_must_select_a_string(self):
        definition = machine({"F": {"Type": "Fail", "ErrorPath": "$.e"}})
        assert fails(definition, {"e": {"an": "object"}}).error == "States.Runtime"

    def test_error_path_missing_is_runtime(self):
        definition = machine({"F": {"Type": "Fail", "ErrorPath": "$.nope"}})
        assert fails(definition).error == "States.Runtime"

    def test_is_recorded_as_a_failed_step(self):
        journal = MemoryJournal()
        with pytest.raises(ExecutionFailed):
            run(machine({"F": {"Type": "Fail", "Error": "E"}}), journal=journal)
        [record] = journal.steps()
        assert (record.key, record.status, record.error) == ("F#0", "failed", "E")


# ------------------------------------------------------------------ Task and data flow


class TestTask:
    def test_full_input_output_chain(self):
        runner = Runner({"fn": lambda p: {"raw": p["n"] * 2, "noise": True}})
        definition = machine({"T": task(
            InputPath="$.args", Parameters={"n.$": "$.n", "k": "lit"},
            ResultSelector={"doubled.$": "$.raw"}, ResultPath="$.args.result",
            OutputPath="$.args", TimeoutSeconds=30)})
        out, runner, *_ = run(definition, {"args": {"n": 4}, "other": 1}, runner=runner)
        assert out == {"n": 4, "result": {"doubled": 8}}
        [call] = runner.calls
        assert call["payload"] == {"n": 4, "k": "lit"}
        assert call["timeout"] == 30
        assert call["key"] == "T#0"

    def test_timeout_seconds_path(self):
        _, runner, *_ = run(machine({"T": task(TimeoutSecondsPath="$.t")}), {"t": 12})
        assert runner.calls[0]["timeout"] == 12

    def test_outcome_is_recorded_on_the_step(self):
        runner = Runner({"fn": lambda p: TaskOutcome(
            output={"ok": 1}, cost_usd=0.25, invocation_id="inv-1",
            details={"duration_ms": 12, "cold_start": True})})
        _, _, _, journal = run(machine({"T": task()}), {"x": 1}, runner=runner)
        [record] = journal.steps()
        assert record.status == "succeeded"
        assert (record.cost_usd, record.invocation_id) == (0.25, "inv-1")
        assert record.data == {"duration_ms": 12, "cold_start": True}
        assert record.input == {"x": 1} and record.output == {"ok": 1}
        assert record.started_at == 1000.0 and record.ended_at == 1000.0

    def test_runner_key_is_prefixed_with_the_execution_id(self):
        _, runner, *_ = run(machine({"T": task()}), context={"Execution": {"Id": "ex-1"}})
        assert runner.called_keys() == ["ex-1/T#0"]

    def test_plain_exception_becomes_its_class_name(self):
        def boom(payload):
            raise KeyError("missing thing")
        err = fails(machine({"T": task()}), runner=Runner({"fn": boom}))
        assert err.error == "KeyError" and "missing thing" in err.cause

    def test_runner_must_return_a_task_outcome(self):
        err = fails(machine({"T": task()}), runner=lambda *a, **k: {"not": "an outcome"})
        assert err.error == "States.Runtime"

    def test_a_runner_mutating_its_payload_changes_nothing_else(self):
        def vandal(payload):
            payload["x"] = "changed"
            return "result"
        definition = machine({"T": task(ResultPath="$.r")})
        out, *_ = run(definition, {"x": 1}, runner=Runner({"fn": vandal}))
        assert out == {"x": 1, "r": "result"}

    def test_missing_input_path_is_runtime_and_not_caught(self):
        definition = machine({
            "T": task(InputPath="$.missing", Next="Done",
                      Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Done"}]),
            "Done": {"Type": "Succeed"},
        })
        err = fails(definition, {"x": 1})
        assert err.error == "States.Runtime" and "$.missing" in err.cause


# ------------------------------------------------------------------ Choice, Wait


def test_choice_loop_counts_visits():
    definition = machine({
        "Init": {"Type": "Pass", "Result": 0, "ResultPath": "$.i", "Next": "Check"},
        "Check": {"Type": "Choice", "Choices": [
            {"Variable": "$.i", "NumericGreaterThanEquals": 3, "Next": "Done"}],
            "Default": "Inc"},
        "Inc": {"Type": "Task", "Resource": "inc", "Next": "Check"},
        "Done": {"Type": "Succeed"},
    })
    runner = Runner({"inc": lambda p: {**p, "i": p["i"] + 1}})
    out, runner, _, journal = run(definition, {}, runner=runner)
    assert out == {"i": 3}
    assert runner.called_keys() == ["Inc#0", "Inc#1", "Inc#2"]
    assert [r.key for r in journal.steps()] == [
        "Init#0", "Check#0", "Inc#0", "Check#1", "Inc#1", "Check#2", "Inc#2", "Check#3",
        "Done#0"]
    assert [r.data["next"] for r in journal.steps() if r.type == "Choice"] == [
        "Inc", "Inc", "Inc", "Done"]


def test_choice_without_match_fails():
    definition = machine({"C": {"Type": "Choice", "Choices": [
        {"Variable": "$.x", "IsPresent": True, "Next": "D"}]}, "D": {"Type": "Succeed"}})
    assert fails(definition, {"y": 1}).error == "States.NoChoiceMatched"


def test_choice_input_and_output_path():
    definition = machine({
        "C": {"Type": "Choice", "InputPath": "$.in", "OutputPath": "$.keep", "Choices": [
            {"Variable": "$.go", "BooleanEquals": True, "Next": "D"}]},
        "D": {"Type": "Succeed"}})
    assert run(definition, {"in": {"go": True, "keep": "k"}})[0] == "k"


class TestWait:
    @pytest.mark.parametrize("fields, input, slept, wake_at", [
        ({"Seconds": 5}, {}, [5], 1005),
        ({"SecondsPath": "$.s"}, {"s": 7}, [7], 1007),
        ({"Timestamp": "1970-01-01T00:20:00Z"}, {}, [200.0], 1200),  # the clock starts at 1000
        ({"TimestampPath": "$.at"}, {"at": "1970-01-01T00:16:50Z"}, [10.0], 1010),
        ({"Timestamp": "1970-01-01T00:00:01Z"}, {}, [], 1),  # in the past: no wait
        ({"Seconds": 0}, {}, [], 1000),
    ])
    def test_waits_then_passes_input_through(self, fields, input, slept, wake_at):
        definition = machine({"W": {"Type": "Wait", **fields, "End": True}})
        out, _, clock, journal = run(definition, input)
        assert out == input
        assert clock.sleeps == slept
        assert journal.steps()[0].data["wake_at"] == wake_at

    @pytest.mark.parametrize("input", [{"s": -1}, {"s": "ten"}, {}])
    def test_bad_seconds_path_is_runtime(self, input):
        definition = machine({"W": {"Type": "Wait", "SecondsPath": "$.s", "End": True}})
        assert fails(definition, input).error == "States.Runtime"


# ------------------------------------------------------------------ Retry and Catch


def flaky(failures: int, error: str = "Flaky"):
    """A handler failing ``failures`` times with ``error``, then returning its payload."""
    state = {"n": 0}

    def handler(payload):
        state["n"] += 1
        if state["n"] <= failures:
            raise TaskFailed(error, f"failure {state['n']}")
        return {"attempts": state["n"]}
    return handler


class TestRetry:
    def test_backoff_sequence_then_success(self):
        definition = machine({"T": task(Retry=[{"ErrorEquals": ["Flaky"], "MaxAttempts": 3}])})
        out, runner, clock, journal = run(definition, runner=Runner({"fn": flaky(3)}))
        assert out == {"attempts": 4}
        assert clock.sleeps == [1, 2, 4]
        assert runner.called_keys() == ["T#0", "T#0@1", "T#0@2", "T#0@3"]
        assert [(r.key, r.attempt, r.status) for r in journal.steps()] == [
            ("T#0", 0, "failed"), ("T#0@1", 1, "failed"), ("T#0@2", 2, "failed"),
            ("T#0@3", 3, "succeeded")]

    def test_exhausted_retries_fail_with_the_last_error(self):
        definition = machine({"T": task(Retry=[{"ErrorEquals": ["States.ALL"],
                                                "IntervalSeconds": 3, "BackoffRate": 1.5,
                                                "MaxAttempts": 2}])})
        clock = Clock()
        err = fails(definition, runner=Runner({"fn": flaky(9)}), clock=clock)
        assert (err.error, err.cause) == ("Flaky", "failure 3")
        assert clock.sleeps == [3, 4.5]

    def test_max_delay_caps_the_backoff(self):
        definition = machine({"T": task(Retry=[{"ErrorEquals": ["Flaky"], "IntervalSeconds": 2,
                                                "BackoffRate": 3, "MaxAttempts": 4,
                                                "MaxDelaySeconds": 10}])})
        _, _, clock, _ = run(definition, runner=Runner({"fn": flaky(4)}))
        assert clock.sleeps == [2, 6, 10, 10]

    def test_max_attempts_zero_never_retries(self):
        definition = machine({"T": task(Retry=[{"ErrorEquals": ["Flaky"], "MaxAttempts": 0}])})
        runner, clock = Runner({"fn": flaky(1)}), Clock()
        fails(definition, runner=runner, clock=clock)
        assert len(runner.calls) == 1 and clock.sleeps == []

    def test_first_matching_retrier_decides_and_counts_separately(self):
        errors = iter(["A", "B", "A", "B", "A"])

        def handler(payload):
            raise TaskFailed(next(errors))
        definition = machine({"T": task(Retry=[
            {"ErrorEquals": ["A"], "MaxAttempts": 2, "IntervalSeconds": 1},
            {"ErrorEquals": ["States.ALL"], "MaxAttempts": 5, "IntervalSeconds": 10}])})
        clock = Clock()
        err = fails(definition, runner=Runner({"fn": handler}), clock=clock)
        # A(1) B(10) A(2) B(20) then A is out of attempts: no fall-through to States.ALL
        assert clock.sleeps == [1, 10, 2, 20] and err.error == "A"

    def test_task_failed_matches_anything_but_timeout(self):
        definition = machine({"T": task(Retry=[{"ErrorEquals": ["States.TaskFailed"]}])})
        _, runner, *_ = run(definition, runner=Runner({"fn": flaky(1, "Whatever")}))
        assert len(runner.calls) == 2
        runner = Runner({"fn": flaky(1, "States.Timeout")})
        assert fails(definition, runner=runner).error == "States.Timeout"
        assert len(runner.calls) == 1

    def test_retry_count_is_in_the_context(self):
        seen = []

        def handler(payload):
            seen.append(payload["retry"])
            if len(seen) < 3:
                raise TaskFailed("E")
            return {}
        definition = machine({"T": task(Parameters={"retry.$": "$$.State.RetryCount"},
                                        Retry=[{"ErrorEquals": ["E"]}])})
        run(definition, runner=Runner({"fn": handler}))
        assert seen == [0, 1, 2]


class TestCatch:
    def definition(self, **catch):
        return machine({
            "T": task(Next="Ok", Retry=[{"ErrorEquals": ["Flaky"], "MaxAttempts": 1}],
                      Catch=[{"ErrorEquals": ["Other"], "Next": "Wrong"},
                             {"ErrorEquals": ["Flaky", "Else"], "Next": "Handle", **catch}]),
            "Ok": {"Type": "Succeed"},
            "Wrong": {"Type": "Fail", "Error": "wrong catcher"},
            "Handle": {"Type": "Pass", "End": True},
        })

    def test_catch_after_retries_with_result_path(self):
        out, runner, _, journal = run(self.definition(ResultPath="$.error"), {"x": 1},
                                      runner=Runner({"fn": flaky(5)}))
        assert out == {"x": 1, "error": {"Error": "Flaky", "Cause": "failure 2"}}
        assert len(runner.calls) == 2
        assert [r.key for r in journal.steps()] == ["T#0", "T#0@1", "Handle#0"]

    def test_default_result_path_replaces_the_input(self):
        out, *_ = run(self.definition(), {"x": 1}, runner=Runner({"fn": flaky(5, "Else")}))
        assert out == {"Error": "Else", "Cause": "failure 1"}

    def test_uncaught_error_fails_the_execution(self):
        err = fails(self.definition(), runner=Runner({"fn": flaky(5, "Unlisted")}))
        assert err.error == "Unlisted"


# ------------------------------------------------------------------ Map


def iterator(states: dict, form: str = "ItemProcessor") -> dict:
    return {form: machine(states)}


class TestMap:
    def test_item_selector_with_index_and_value_keys_and_order(self):
        definition = machine({"M": {
            "Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2,
            "ItemSelector": {"i.$": "$$.Map.Item.Index", "v.$": "$$.Map.Item.Value",
                             "shared.$": "$.shared"},
            **iterator({"Double": task("double")}),
            "ResultSelector": {"all.$": "$[*].r"}, "ResultPath": "$.out", "End": True}})
        runner = Runner({"double": lambda p: {"r": [p["i"], p["v"] * 2, p["shared"]]}})
        out, runner, _, journal = run(definition, {"items": [5, 6, 7], "shared": "s"},
                                      runner=runner)
        assert out["out"] == {"all": [[0, 10, "s"], [1, 12, "s"], [2, 14, "s"]]}
        assert sorted(runner.called_keys()) == ["M#0/[0]/Double#0", "M#0/[1]/Double#0",
                                         "M#0/[2]/Double#0"]
        children = [r for r in journal.steps() if r.parent == "M#0"]
        assert len(children) == 3 and all(r.status == "succeeded" for r in children)

    def test_legacy_iterator_and_parameters(self):
        definition = machine({"M": {
            "Type": "Map", "Parameters": {"x.$": "$$.Map.Item.Value.x"},
            **iterator({"P": {"Type": "Pass", "End": True}}, form="Iterator"), "End": True}})
        assert run(definition, [{"x": 1, "y": 0}, {"x": 2}])[0] == [{"x": 1}, {"x": 2}]

    def test_empty_items(self):
        definition = machine({"M": {"Type": "Map", **iterator({"T": task()}), "End": True}})
        out, runner, *_ = run(definition, [])
        assert out == [] and runner.calls == []

    def test_items_must_be_an_array(self):
        definition = machine({"M": {"Type": "Map", "ItemsPath": "$.x",
                                    **iterator({"T": task()}), "End": True}})
        assert fails(definition, {"x": {"not": "a list"}}).error == "States.Runtime"

    @pytest.mark.parametrize("max_concurrency, default, expected", [(2, 4, 2), (0, 3, 3)])
    def test_concurrency_limit(self, max_concurrency, default, expected):
        """``expected`` tasks must run at once (a barrier of that many parties would
        time out otherwise) and never more."""
        barrier = threading.Barrier(expected, timeout=10)
        active, peak, lock = [0], [0], threading.Lock()

        def handler(payload):
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            barrier.wait()
            with lock:
                active[0] -= 1
            return payload
        definition = machine({"M": {"Type": "Map", "MaxConcurrency": max_concurrency,
                                    **iterator({"T": task()}), "End": True}})
        items = list(range(expected * 3))
        out, *_ = run(definition, items, runner=Runner({"fn": handler}),
                      default_map_concurrency=default)
        assert out == items
        assert peak[0] == expected

    def test_nested_maps_keys(self):
        inner = {"Type": "Map", **iterator({"Leaf": task()}), "End": True}
        definition = machine({"Outer": {"Type": "Map", **iterator({"Inner": inner}),
                                        "End": True}})
        out, runner, *_ = run(definition, [[1, 2], [3]])
        assert out == [[1, 2], [3]]
        assert sorted(runner.called_keys()) == ["Outer#0/[0]/Inner#0/[0]/Leaf#0",
                                         "Outer#0/[0]/Inner#0/[1]/Leaf#0",
                                         "Outer#0/[1]/Inner#0/[0]/Leaf#0"]

    def test_first_failure_fails_the_map_and_stops_the_others(self):
        started = []

        def handler(payload):
            started.append(payload)
            if payload == 1:
                raise TaskFailed("ItemFailed", "item 1")
            return payload
        states = {"M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 1,
                        **iterator({"T": task()}), "End": True}}
        err = fails(machine(states), {"items": [0, 1, 2, 3]}, runner=Runner({"fn": handler}))
        assert (err.error, err.cause) == ("ItemFailed", "item 1")
        assert started == [0, 1]  # items after the failure never started

        states["M"].pop("End")
        states["M"].update(Next="Done", Catch=[{"ErrorEquals": ["ItemFailed"],
                                                 "ResultPath": "$.err", "Next": "Caught"}])
        states.update(Done={"Type": "Succeed"}, Caught={"Type": "Pass", "End": True})
        out, *_ = run(machine(states), {"items": [0, 1, 2]}, runner=Runner({"fn": handler}))
        assert out == {"items": [0, 1, 2], "err": {"Error": "ItemFailed", "Cause": "item 1"}}

    def test_retry_of_a_map_reruns_items_under_new_keys(self):
        attempts = {"n": 0}

        def handler(payload):
            attempts["n"] += 1
            if attempts["n"] == 2:  # the second item of the first attempt
                raise TaskFailed("Transient")
            return payload
        definition = machine({"M": {"Type": "Map", "MaxConcurrency": 1,
                                    **iterator({"T": task()}), "End": True,
                                    "Retry": [{"ErrorEquals": ["Transient"]}]}})
        out, runner, clock, _ = run(definition, [1, 2], runner=Runner({"fn": handler}))
        assert out == [1, 2]
        assert runner.called_keys() == ["M#0/[0]/T#0", "M#0/[1]/T#0", "M#0@1/[0]/T#0",
                                 "M#0@1/[1]/T#0"]
        assert clock.sleeps == [1]

    def test_runtime_error_in_an_item_is_not_caught_by_the_map(self):
        definition = machine({
            "M": {"Type": "Map", **iterator({"T": task(InputPath="$.nope")}), "Next": "Done",
                  "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Done"}],
                  "Retry": [{"ErrorEquals": ["States.ALL"]}]},
            "Done": {"Type": "Succeed"}})
        clock = Clock()
        assert fails(definition, [{"a": 1}], clock=clock).error == "States.Runtime"
        assert clock.sleeps == []

    def test_tolerated_failures(self):
        def handler(payload):
            if payload % 3 == 0:
                raise TaskFailed("Bad", str(payload))
            return payload
        states = {"T": task()}
        tolerant = machine({"M": {"Type": "Map", "ToleratedFailureCount": 2,
                                  **iterator(states), "End": True}})
        out, *_ = run(tolerant, [1, 3, 4, 6], runner=Runner({"fn": handler}))
        assert out == [1, {"Error": "Bad", "Cause": "3"}, 4, {"Error": "Bad", "Cause": "6"}]
        strict = machine({"M": {"Type": "Map", "ToleratedFailurePercentage": 25,
                                **iterator(states), "End": True}})
        err = fails(strict, [1, 3, 4, 6], runner=Runner({"fn": handler}))
        assert err.error == "States.ExceedToleratedFailureThreshold"


# ------------------------------------------------------------------ Parallel


class TestParallel:
    def definition(self, second_branch=None):
        return machine({"P": {
            "Type": "Parallel", "Parameters": {"n.$": "$.n"}, "ResultPath": "$.results",
            "Branches": [machine({"A": task("a")}),
                         second_branch or machine({"B1": task("b", Next="B2"),
                                                   "B2": task("b")})],
            "End": True}})

    def test_outputs_in_branch_order_and_keys(self):
        barrier = threading.Barrier(2, timeout=10)  # both branches must run at once

        def a(payload):
            barrier.wait()
            return {"a": payload["n"]}

        def b(payload):
            if "b" not in payload:
                barrier.wait()
            return {"b": payload.get("b", 0) + payload["n"], "n": payload["n"]}
        out, runner, _, journal = run(self.definition(), {"n": 1},
                                      runner=Runner({"a": a, "b": b}))
        assert out == {"n": 1, "results": [{"a": 1}, {"b": 2, "n": 1}]}
        assert sorted(runner.called_keys()) == ["P#0/{0}/A#0", "P#0/{1}/B1#0", "P#0/{1}/B2#0"]
        assert {r.key: r.parent for r in journal.steps()}["P#0/{1}/B2#0"] == "P#0"

    def test_a_failed_branch_fails_the_state_and_cancels_the_other(self):
        release = threading.Event()

        def a(payload):
            raise TaskFailed("BranchA", "a broke")

        def b(payload):
            release.wait(10)  # until branch A has failed
            return payload
        runner = Runner({"a": a, "b": b})
        timer = threading.Timer(0.2, release.set)
        timer.start()
        err = fails(self.definition(), {"n": 1}, runner=runner)
        timer.cancel()
        assert (err.error, err.cause) == ("BranchA", "a broke")
        assert "P#0/{1}/B2#0" not in runner.called_keys()  # B stopped at its next state

    def test_fail_state_in_a_branch_is_caught_by_the_parallel(self):
        definition = self.definition(machine({"F": {"Type": "Fail", "Error": "Nope"}}))
        definition["States"]["P"].pop("End")
        definition["States"]["P"].update(
            Next="Done", Catch=[{"ErrorEquals": ["States.ALL"], "Next": "Caught",
                                 "ResultPath": "$.caught"}])
        definition["States"].update(Done={"Type": "Succeed"},
                                    Caught={"Type": "Pass", "End": True})
        out, *_ = run(definition, {"n": 1})
        assert out == {"n": 1, "caught": {"Error": "Nope", "Cause": ""}}


# ------------------------------------------------------------------ stop


def test_stop_interrupts_a_wait_and_leaves_it_running():
    definition = machine({"W": {"Type": "Wait", "Seconds": 3600, "Next": "T"}, "T": task()})
    journal = MemoryJournal()
    runner = Runner()
    interpreter = Interpreter(definition, runner, journal)  # the real, interruptible sleep
    outcome = {}

    def target():
        try:
            interpreter.run({})
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["exc"] = exc
    thread = threading.Thread(target=target)
    thread.start()
    deadline = time.monotonic() + 5
    while not journal.steps() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    interpreter.stop()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 2
    assert isinstance(outcome.get("exc"), Stopped)
    [record] = journal.steps()
    assert record.status == "running" and record.data["wake_at"] > time.time() + 3000
    assert runner.calls == []


def test_stop_between_states_of_a_map():
    holder = {}

    def handler(payload):
        if payload == 1:
            holder["interpreter"].stop()
        return payload
    definition = machine({"M": {"Type": "Map", "MaxConcurrency": 1,
                                **iterator({"T": task()}), "End": True}})
    journal, clock = MemoryJournal(), Clock()
    holder["interpreter"] = Interpreter(definition, Runner({"fn": handler}), journal,
                                        sleep=clock.sleep, now=clock.now)
    with pytest.raises(Stopped):
        holder["interpreter"].run([0, 1, 2, 3])
    statuses = {r.key: r.status for r in journal.steps()}
    assert statuses == {"M#0": "running", "M#0/[0]/T#0": "succeeded",
                        "M#0/[1]/T#0": "succeeded"}


# ------------------------------------------------------------------ definitions


@pytest.mark.parametrize("definition, fragment", [
    ({"States": {"A": {"Type": "Succeed"}}}, "StartAt is missing"),
    ({"StartAt": "B", "States": {"A": {"Type": "Succeed"}}}, "StartAt 'B' is not a state"),
    ({"StartAt": "A", "States": {}}, "States must be a non-empty object"),
    (machine({"A": {"Type": "Pass", "Next": "Nowhere"}}), "States.A.Next: 'Nowhere'"),
    (machine({"A": {"Type": "Teleport", "End": True}}), "unknown Type 'Teleport'"),
    (machine({"A": {"Type": "Pass"}}), "States.A: needs a Next or End"),
    (machine({"A": {"Type": "Pass", "Next": "B", "End": True}, "B": {"Type": "Succeed"}}),
     "both Next and End"),
    (machine({"A": {"Type": "Choice", "Default": "B"}, "B": {"Type": "Succeed"}}),
     "non-empty Choices"),
    (machine({"A": {"Type": "Choice", "Choices": [
        {"Variable": "$.x", "IsNull": True, "Next": "Z"}]}}), "Choices[0].Next: 'Z'"),
    (machine({"A": {"Type": "Task", "End": True}}), "needs a Resource"),
    (machine({"A": {"Type": "Pass", "End": True}, "B": {"Type": "Succeed"}}),
     "States.B: not reachable"),
    (machine({"A": {"Type": "Wait", "End": True}}), "exactly one of Seconds"),
    (machine({"A": {"Type": "Wait", "Seconds": 1, "Timestamp": "x", "End": True}}),
     "exactly one of Seconds"),
    (machine({"A": {"Type": "Map", "End": True}}), "ItemProcessor or Iterator"),
    (machine({"A": {"Type": "Map", "ItemProcessor": machine({"X": {"Type": "Pass"}}),
                    "End": True}}), "States.A.ItemProcessor.States.X: needs a Next or End"),
    (machine({"A": {"Type": "Map", "ItemReader": {}, **iterator({"X": task()}), "End": True}}),
     "'ItemReader' is not supported"),
    (machine({"A": {"Type": "Parallel", "Branches": [], "End": True}}),
     "non-empty Branches"),
    (machine({"A": {"Type": "Parallel", "End": True, "Branches": [
        machine({"X": {"Type": "Pass", "Next": "Y"}})]}}),
     "States.A.Branches[0].States.X.Next: 'Y'"),
    (machine({"A": task(Retry=[{"ErrorEquals": ["States.ALL", "E"]}])}),
     "States.ALL must be alone"),
    (machine({"A": task(Retry=[{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["E"]}])}),
     "States.ALL must be alone and in the last rule"),
    (machine({"A": task(Retry=[{"ErrorEquals": []}])}), "ErrorEquals"),
    (machine({"A": task(Retry=[{"ErrorEquals": ["E"], "BackoffRate": 0.5}])}), "BackoffRate"),
    (machine({"A": task(Catch=[{"ErrorEquals": ["E"], "Next": "Gone"}])}),
     "Catch[0].Next: 'Gone'"),
    (machine({"A": task(InputPath="not-a-path")}), "States.A.InputPath"),
    (machine({"A": task(ResultPath="$.a[*]")}), "States.A.ResultPath"),
    (machine({"A": task(Parameters={"x.$": "$.["})}), "States.A.Parameters.x.$"),
    (machine({"A": {"Type": "Pass", "Retry": [], "End": True}}),
     "'Retry' is not supported in a Pass state"),
    (machine({"A": {"Type": "Fail", "Error": "E", "ErrorPath": "$.e"}}),
     "both Error and ErrorPath"),
    (machine({"A": {"Type": "Succeed", "Next": "A"}}), "'Next' is not supported"),
    ({**machine({"A": {"Type": "Succeed"}}), "QueryLanguage": "JSONata"}, "JSONPath"),
    ([], "definition: must be an object"),
    (machine({"A#1": {"Type": "Succeed"}}), "cannot be empty or contain '#' or '/'"),
    (machine({"A": {"Type": "Map", "End": True, **iterator({"x/y": task()})}}),
     "States.A.ItemProcessor.States.x/y: a state name"),
])
def test_definition_problems(definition, fragment):
    problems = validate_definition(definition)
    assert any(fragment in p for p in problems), problems
    with pytest.raises(DefinitionError, match="invalid state machine definition"):
        Interpreter(definition, Runner(), MemoryJournal())


def test_a_valid_definition_has_no_problems():
    definition = machine({
        "Ingest": task("ingest", Next="Train", Retry=[{"ErrorEquals": ["States.ALL"]}]),
        "Train": {"Type": "Map", "ItemsPath": "$.kinds", "MaxConcurrency": 2,
                  "ItemSelector": {"kind.$": "$$.Map.Item.Value"},
                  **iterator({"TrainOne": task("train")}), "ResultPath": "$.models",
                  "Next": "Pick"},
        "Pick": {"Type": "Choice", "Choices": [
            {"And": [{"Variable": "$.models[0]", "IsPresent": True},
                     {"Not": {"Variable": "$.skip", "BooleanEquals": True}}],
             "Next": "Eval"}], "Default": "Done"},
        "Eval": {"Type": "Parallel", "Branches": [machine({"E1": task("e")}),
                                                  machine({"E2": task("e")})],
                 "Next": "Pause", "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Bad"}]},
        "Pause": {"Type": "Wait", "SecondsPath": "$.wait", "Next": "Done"},
        "Done": {"Type": "Succeed"},
        "Bad": {"Type": "Fail", "ErrorPath": "$.Error", "CausePath": "$.Cause"},
    })
    assert validate_definition(definition) == []
