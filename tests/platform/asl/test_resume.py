"""Persistence and resume: crash anywhere, run again on the same journal, finish once.

``Crash`` is a BaseException raised from inside the task runner (or a sleep): the
process "dies" there, with the step in flight left ``running`` in the journal.
"""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from hsops._sqlite import SqliteDatabase
from hsops.platform.local.asl import (
    SCHEMA,
    ExecutionFailed,
    Interpreter,
    MemoryJournal,
    SqliteJournal,
    StepRecord,
    Stopped,
    TaskFailed,
    TaskOutcome,
    redrive_keys,
)
from tests.platform.asl.support import Clock, Crash, Runner

CONTEXT = {"Execution": {"Id": "ex-1", "Name": "nightly"}, "StateMachine": {"Name": "pipe"}}
INPUT = {"kinds": ["linear", "svc", "dnn"]}

PIPELINE = {
    "StartAt": "Ingest",
    "States": {
        "Ingest": {"Type": "Task", "Resource": "ingest", "ResultPath": "$.data",
                   "Next": "Train"},
        "Train": {
            "Type": "Map", "ItemsPath": "$.kinds", "MaxConcurrency": 2,
            "ItemSelector": {"kind.$": "$$.Map.Item.Value", "rows.$": "$.data.rows"},
            "ItemProcessor": {"StartAt": "TrainOne", "States": {
                "TrainOne": {"Type": "Task", "Resource": "train", "Next": "Score"},
                "Score": {"Type": "Task", "Resource": "score", "End": True}}},
            "ResultPath": "$.models", "Next": "Evaluate"},
        "Evaluate": {
            "Type": "Parallel", "ResultPath": "$.evals", "Next": "Decide",
            "Branches": [
                {"StartAt": "EvalChampion", "States": {
                    "EvalChampion": {"Type": "Task", "Resource": "champion", "End": True}}},
                {"StartAt": "EvalChallenger", "States": {
                    "EvalChallenger": {"Type": "Task", "Resource": "challenger",
                                       "Next": "Cooldown"},
                    "Cooldown": {"Type": "Wait", "Seconds": 30, "End": True}}}]},
        "Decide": {"Type": "Choice", "Default": "Skip", "Choices": [
            {"Variable": "$.evals[1].score", "NumericGreaterThanPath": "$.evals[0].score",
             "Next": "Register"}]},
        "Register": {"Type": "Task", "Resource": "register", "Next": "Done",
                     "ResultPath": "$.registered",
                     "Parameters": {"best.$": "$.evals[1].score",
                                    "started.$": "$$.Execution.StartTime",
                                    "models.$": "$.models[*].model"}},
        "Skip": {"Type": "Pass", "Next": "Done"},
        "Done": {"Type": "Succeed"},
    },
}

HANDLERS = {
    "ingest": lambda p: TaskOutcome(output={"rows": 100}, cost_usd=0.01, invocation_id="i-1"),
    "train": lambda p: {"kind": p["kind"], "model": f"m-{p['kind']}", "rows": p["rows"]},
    "score": lambda p: {**p, "score": len(p["kind"])},
    "champion": lambda p: {"score": 0.8},
    "challenger": lambda p: {"score": 0.9},
    "register": lambda p: p,
}

TASK_KEYS = ["Ingest#0"] + [
    f"Train#0/[{i}]/{state}#0" for i in range(3) for state in ("TrainOne", "Score")
] + ["Evaluate#0/{0}/EvalChampion#0", "Evaluate#0/{1}/EvalChallenger#0", "Register#0"]


def interpreter(journal, runner, clock, definition=PIPELINE):
    return Interpreter(definition, runner, journal, context=CONTEXT, sleep=clock.sleep,
                       now=clock.now)


@pytest.fixture(params=["memory", "sqlite"])
def journals(request, tmp_path):
    """``journals()`` opens the journal of execution ex-1 again, as a restarted process
    would: the same object in memory, a new SqliteDatabase on the same file for SQLite."""
    if request.param == "memory":
        journal = MemoryJournal()
        yield lambda: journal
        return
    opened: list[SqliteDatabase] = []

    def reopen():
        for db in opened:
            db.close()  # the "dead" process's connections go away
        opened.append(SqliteDatabase(tmp_path / "state.db"))
        return SqliteJournal(opened[-1], "ex-1")
    yield reopen
    for db in opened:
        db.close()


@pytest.fixture(scope="module")
def clean_run():
    """What an execution without crash outputs, records and calls."""
    journal, runner = MemoryJournal(), Runner(HANDLERS)
    output = interpreter(journal, runner, Clock()).run(INPUT)
    return output, journal.steps(), runner


def test_clean_run(clean_run):
    output, steps, runner = clean_run
    assert output["registered"] == {"best": 0.9, "started": "1970-01-01T00:16:40.000Z",
                                    "models": ["m-linear", "m-svc", "m-dnn"]}
    assert [m["score"] for m in output["models"]] == [6, 3, 3]
    assert sorted(runner.called_keys()) == sorted(f"ex-1/{k}" for k in TASK_KEYS)
    assert all(step.status == "succeeded" for step in steps)


@pytest.mark.parametrize("crash_key", TASK_KEYS)
def test_crash_in_any_task_then_resume(crash_key, clean_run, journals):
    clean_output, clean_steps, _ = clean_run
    first = Runner(HANDLERS, crash_on={f"ex-1/{crash_key}"})
    with pytest.raises(Crash):
        interpreter(journals(), first, Clock()).run(INPUT)
    in_flight = journals().get(crash_key)
    assert in_flight is not None and in_flight.status == "running"

    second = Runner(HANDLERS)
    journal = journals()
    output = interpreter(journal, second, Clock(start=5_000.0)).run(INPUT)

    assert output == clean_output  # StartTime too: it comes from the first run's journal
    # every task ran exactly once in total, except the one in flight, run again (same key)
    expected = Counter({f"ex-1/{key}": 1 for key in TASK_KEYS})
    expected[f"ex-1/{crash_key}"] = 2
    assert first.count() + second.count() == expected
    assert f"ex-1/{crash_key}" in second.called_keys()
    steps = journal.steps()
    assert sorted(s.key for s in steps) == sorted(s.key for s in clean_steps)
    assert all(s.status == "succeeded" for s in steps)
    resumed = {s.key for s in steps if s.data.get("resumed")}
    assert crash_key in resumed
    assert journal.get("Ingest#0").cost_usd == 0.01
    assert journal.get("Ingest#0").invocation_id == "i-1"


def test_crash_during_a_wait_resumes_the_remaining_time(journals):
    first_clock = Clock(crash_on_sleep=0)  # the only sleep is the Cooldown Wait (30 s)
    with pytest.raises(Crash):
        interpreter(journals(), Runner(HANDLERS), first_clock).run(INPUT)
    wait = journals().get("Evaluate#0/{1}/Cooldown#0")
    assert wait.status == "running" and wait.data["wake_at"] == 1030.0

    clock, runner = Clock(start=1012.0), Runner(HANDLERS)
    output = interpreter(journals(), runner, clock).run(INPUT)
    assert clock.sleeps == [18.0]  # until the stored wake_at, not 30 again
    assert runner.called_keys() == ["ex-1/Register#0"]  # nothing before the Wait ran again
    assert output["registered"]["best"] == 0.9


def retry_machine(max_attempts: int) -> dict:
    return {"StartAt": "T", "States": {"T": {
        "Type": "Task", "Resource": "fn", "End": True,
        "Retry": [{"ErrorEquals": ["Flaky"], "IntervalSeconds": 2, "BackoffRate": 3,
                   "MaxAttempts": max_attempts}]}}}


def always_failing(payload):
    raise TaskFailed("Flaky", "again")


def test_crash_during_retry_backoff_resumes_at_the_right_attempt(journals):
    # attempts 0 and 1 fail (t=1000, then t=1002 after a 2 s backoff); the process dies
    # in the 6 s backoff before attempt 2
    first_clock, first = Clock(crash_on_sleep=1), Runner({"fn": always_failing})
    with pytest.raises(Crash):
        interpreter(journals(), first, first_clock, retry_machine(3)).run({})
    assert first.called_keys() == ["ex-1/T#0", "ex-1/T#0@1"]
    assert first_clock.sleeps == [2, 6]

    clock = Clock(start=1005.0)
    second = Runner({"fn": lambda p: {"ok": True}})
    assert interpreter(journals(), second, clock, retry_machine(3)).run({}) == {"ok": True}
    assert clock.sleeps == [3.0]  # the rest of the backoff: 1002 + 6 - 1005
    assert second.called_keys() == ["ex-1/T#0@2"]
    assert [(s.key, s.status) for s in journals().steps()] == [
        ("T#0", "failed"), ("T#0@1", "failed"), ("T#0@2", "succeeded")]


def test_resumed_retries_keep_counting(journals):
    """MaxAttempts 2: one attempt is left after the crash, not a fresh three."""
    with pytest.raises(Crash):
        interpreter(journals(), Runner({"fn": always_failing}), Clock(crash_on_sleep=1),
                    retry_machine(2)).run({})
    second = Runner({"fn": always_failing})
    with pytest.raises(ExecutionFailed) as info:
        interpreter(journals(), second, Clock(start=2_000.0), retry_machine(2)).run({})
    assert info.value.error == "Flaky"
    assert second.called_keys() == ["ex-1/T#0@2"]


def test_a_finished_execution_replays_without_running_or_sleeping(journals):
    definition = {"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "fn", "Next": "W",
              "Retry": [{"ErrorEquals": ["States.ALL"]}]},
        "W": {"Type": "Wait", "Seconds": 60, "End": True}}}
    attempts = iter([TaskFailed("E"), {"v": 1}])

    def handler(payload):
        outcome = next(attempts)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    clock = Clock()
    assert interpreter(journals(), Runner({"fn": handler}), clock, definition).run({}) == {"v": 1}
    assert clock.sleeps == [1, 60]
    # at the same clock time: a finished backoff must not be waited again
    replay_clock, replay = Clock(), Runner()
    assert interpreter(journals(), replay, replay_clock, definition).run({}) == {"v": 1}
    assert replay.calls == [] and replay_clock.sleeps == []


def test_a_failed_execution_replays_its_failure(journals):
    definition = {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "fn",
                                                   "End": True}}}
    runner = Runner({"fn": always_failing})
    for _ in range(2):
        with pytest.raises(ExecutionFailed) as info:
            interpreter(journals(), runner, Clock(), definition).run({})
        assert (info.value.error, info.value.cause) == ("Flaky", "again")
    assert len(runner.calls) == 1


def test_concurrent_map_items_write_to_sqlite(tmp_path):
    """40 items, 8 at a time (the barrier proves they overlap), into one SQLite file."""
    barrier = threading.Barrier(8, timeout=10)

    def work(payload):
        barrier.wait()
        return {"n": payload["n"] * 10}
    definition = {"StartAt": "M", "States": {"M": {
        "Type": "Map", "MaxConcurrency": 8, "End": True,
        "ItemSelector": {"n.$": "$$.Map.Item.Value"},
        "ItemProcessor": {"StartAt": "Work", "States": {
            "Work": {"Type": "Task", "Resource": "work", "Next": "Tag"},
            "Tag": {"Type": "Pass", "Result": "done", "ResultPath": "$.tag", "End": True}}}}}}
    db = SqliteDatabase(tmp_path / "state.db")
    try:
        journal = SqliteJournal(db, "ex-map")
        output = Interpreter(definition, Runner({"work": work}), journal).run(list(range(40)))
        assert output == [{"n": i * 10, "tag": "done"} for i in range(40)]
        steps = journal.steps()
        assert len(steps) == 1 + 40 * 2
        assert all(s.status == "succeeded" for s in steps)
        assert {s.key for s in steps if s.parent == "M#0"} == {
            f"M#0/[{i}]/{state}#0" for i in range(40) for state in ("Work", "Tag")}
        seqs = db.query("SELECT seq FROM sm_steps WHERE execution_id = 'ex-map'")
        assert len({row["seq"] for row in seqs}) == len(steps)  # no two steps share a place
    finally:
        db.close()


# ------------------------------------------------------------------ the journals themselves


def record(key: str, **fields) -> StepRecord:
    return StepRecord(**{"key": key, "state": key.split("#")[0], "type": "Task",
                         "parent": None, "attempt": 0, "status": "running",
                         "input": {"in": key}, "started_at": 1.0, **fields})


def test_journal_protocol(journals):
    journal = journals()
    assert journal.get("A#0") is None and journal.steps() == []
    journal.begin(record("A#0", data={"wake_at": 5}))
    journal.begin(record("B#0"))
    journal.begin(record("A#0", data={"wake_at": 5, "resumed": 1}))  # a re-run keeps its place
    journal.finish("A#0", status="succeeded", output={"out": [1, None]}, cost_usd=0.5,
                   invocation_id="inv", data={"duration_ms": 3}, ended_at=9.0)
    journal.finish("B#0", status="failed", error="E", cause="c", ended_at=10.0)

    journal = journals()  # reopened: SQLite reads from the file
    a = journal.get("A#0")
    assert (a.status, a.output, a.cost_usd, a.invocation_id, a.ended_at) == (
        "succeeded", {"out": [1, None]}, 0.5, "inv", 9.0)
    assert a.data == {"wake_at": 5, "resumed": 1, "duration_ms": 3}
    assert a.input == {"in": "A#0"}
    b = journal.get("B#0")
    assert (b.status, b.error, b.cause, b.output) == ("failed", "E", "c", None)
    assert [s.key for s in journal.steps()] == ["A#0", "B#0"]
    a.data["mutated"] = True  # a record handed out is a copy
    assert "mutated" not in journal.get("A#0").data
    with pytest.raises(KeyError):
        journal.finish("nope", status="succeeded")


def test_executions_share_the_table_without_mixing(tmp_path):
    db = SqliteDatabase(tmp_path / "state.db", schema=SCHEMA)
    try:
        one, two = SqliteJournal(db, "one"), SqliteJournal(db, "two")
        one.begin(record("A#0"))
        two.begin(record("A#0", input="other"))
        two.begin(record("B#0"))
        assert one.get("A#0").input == {"in": "A#0"} and two.get("A#0").input == "other"
        assert [s.key for s in one.steps()] == ["A#0"]
        assert [s.key for s in two.steps()] == ["A#0", "B#0"]
        assert one.get("B#0") is None
    finally:
        db.close()


def test_a_stopped_runner_leaves_its_step_to_resume_with_the_same_payload(journals):
    """A runner may raise Stopped (its platform is shutting down); the step stays
    running, and the resumed run hands the same key and payload to the next runner,
    EnteredTime included."""
    definition = {"StartAt": "T", "States": {"T": {
        "Type": "Task", "Resource": "fn", "End": True,
        "Parameters": {"entered.$": "$$.State.EnteredTime", "x.$": "$.x"}}}}

    def stop(payload):
        raise Stopped()
    first = Runner({"fn": stop})
    with pytest.raises(Stopped):
        interpreter(journals(), first, Clock(), definition).run({"x": 1})
    assert journals().get("T#0").status == "running"
    second = Runner()
    output = interpreter(journals(), second, Clock(start=7_000.0), definition).run({"x": 1})
    assert second.calls == [{**first.calls[0], "resource": "fn"}]
    assert output == {"entered": "1970-01-01T00:16:40.000Z", "x": 1}


# ------------------------------------------------------------------ redrive


def test_redrive_keeps_handled_failures(journals):
    """A failed before succeeding on retry, C's failure was caught, then D failed: a
    redrive forgets D only, so A and C (finished, with successors) do not run again."""
    definition = {"StartAt": "A", "States": {
        "A": {"Type": "Task", "Resource": "a", "Next": "C",
              "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 1}]},
        "C": {"Type": "Task", "Resource": "c", "Next": "D",
              "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "D", "ResultPath": None}]},
        "D": {"Type": "Task", "Resource": "d", "End": True,
              "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 1}]}}}
    a_calls = iter([TaskFailed("Lost"), {"a": 1}])

    def a(payload):
        outcome = next(a_calls)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome
    first = Runner({"a": a, "c": always_failing, "d": always_failing})
    with pytest.raises(ExecutionFailed):
        interpreter(journals(), first, Clock(), definition).run({})
    journal = journals()
    keys = redrive_keys(journal.steps())
    assert keys == ["D#0", "D#0@1"]
    journal.delete(keys)

    second = Runner({"d": lambda p: {"d": p}})
    assert interpreter(journals(), second, Clock(), definition).run({}) == {"d": {"a": 1}}
    assert second.called_keys() == ["ex-1/D#0"]


def test_redrive_of_a_map_reruns_only_the_failed_item(journals):
    definition = {"StartAt": "M", "States": {"M": {
        "Type": "Map", "MaxConcurrency": 1, "End": True,
        "ItemProcessor": {"StartAt": "T", "States": {"T": {
            "Type": "Task", "Resource": "fn", "End": True,
            "Retry": [{"ErrorEquals": ["Bad"], "MaxAttempts": 1}]}}}}}}

    def bad_two(payload):
        if payload == 2:
            raise TaskFailed("Bad")
        return payload
    with pytest.raises(ExecutionFailed):
        interpreter(journals(), Runner({"fn": bad_two}), Clock(), definition).run([1, 2, 3])
    journal = journals()
    keys = redrive_keys(journal.steps())
    assert keys == ["M#0", "M#0/[1]/T#0", "M#0/[1]/T#0@1"]
    journal.delete(keys)
    second = Runner()
    assert interpreter(journals(), second, Clock(), definition).run([1, 2, 3]) == [1, 2, 3]
    assert second.called_keys() == ["ex-1/M#0/[1]/T#0", "ex-1/M#0/[2]/T#0"]


def test_redrive_forgets_steps_left_running():
    steps = [record("A#0", status="succeeded"), record("P#0"), record("P#0/{0}/W#0"),
             record("P#0/{1}/F#0", status="failed")]
    steps[1].status = "failed"
    assert redrive_keys(steps) == ["P#0", "P#0/{0}/W#0", "P#0/{1}/F#0"]
