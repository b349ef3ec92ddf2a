"""Whole pipeline runs on the real local platform: worker processes, the SQLite event bus,
the ASL executor, the registry. Each fault the issue names is made to happen here."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hsops._pricing import STEP_FUNCTIONS_TRANSITION_USD
from hsops.platform.local.backend import LocalBackend
from hsops.platform.local.platform import LocalPlatform
from hsops.platform.local.state_machines import LIFECYCLE
from hsops.platform.local.triggers import PIPELINE_REQUESTED, pipeline_input
from hsops.registry.index import read_index
from tests._samples import sample_rows, write_csv
from tests._wait import wait_for

POLICY = {"min_rows": 20, "min_test_rows": 3, "max_cost_per_million_usd": 100.0}


def configure(home: Path, candidates=({"kind": "linear"},)) -> None:
    (home / "pipeline.json").write_text(json.dumps({"candidates": list(candidates), "policy": POLICY}))


def finished(machines, name_or_id):
    def check():
        try:
            execution = machines.describe(name_or_id)
        except Exception:  # noqa: BLE001 - not started yet
            return None
        return execution if execution.status in ("SUCCEEDED", "FAILED") else None
    return check


def registry(home: Path) -> dict:
    return read_index(home).get("models", {}).get("hs-classifier", {})


@pytest.fixture
def platform(hsops_home):
    configure(hsops_home)
    p = LocalPlatform(hsops_home, port=None, max_workers=2, idle_timeout=5.0, inbox_settle=0.3,
                      poll_interval=0.1).start()
    yield p
    p.stop()


def drop(home: Path, name: str, rows) -> Path:
    """Write next to the inbox, then rename in: the watcher never sees half a file."""
    staging = home / f".{name}.part"
    write_csv(staging, rows)
    target = home / "inbox" / name
    os.replace(staging, target)
    return target


def test_a_dropped_file_becomes_a_registered_champion(platform, hsops_home):
    drop(hsops_home, "lines.csv", sample_rows())
    machines = platform.backend.state_machines
    runs = wait_for(lambda: machines.list(), what="a run to start")
    execution = wait_for(finished(machines, runs[0].id), what="the run to finish")
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert execution.output["outcome"] == "deployed" and execution.output["alias"] == "champion"
    assert registry(hsops_home)["aliases"]["champion"] == execution.output["version"]
    history = machines.history(execution.id)
    states = [h["state"] for h in history]
    for state in ("Ingest", "Validate", "IsValid", "Split", "TrainCandidates", "Train", "Evaluate",
                  "EvaluateCandidate", "EvaluateChampion", "Compare", "Gate", "Register", "HoldBeforeDeploy",
                  "Deploy", "Notify", "Done"):
        assert state in states, f"{state} missing from {states}"
    tasks = [h for h in history if h["type"] == "Task"]
    assert all(h["cost_usd"] > 0 and h["duration_ms"] is not None for h in tasks)
    transitions = len(history) * STEP_FUNCTIONS_TRANSITION_USD
    assert execution.cost_usd == pytest.approx(sum(h["cost_usd"] for h in history) + transitions)
    assert not list((hsops_home / "inbox").iterdir()), "the inbox is emptied"


def test_the_same_file_twice_is_one_run_and_a_recorded_no_op(platform, hsops_home):
    rows = sample_rows()
    drop(hsops_home, "a.csv", rows)
    machines = platform.backend.state_machines
    first = wait_for(finished(machines, wait_for(lambda: machines.list(), what="run")[0].id), what="run end")
    drop(hsops_home, "a.csv", rows)  # same name, same content
    drop(hsops_home, "copy-of-a.csv", rows)  # other name, same content
    outcomes = wait_for(lambda: [t for t in platform.triggers.triggers() if t["outcome"] == "duplicate"]
                        if len([t for t in platform.triggers.triggers() if t["outcome"] == "duplicate"]) >= 2
                        else None, what="two duplicates recorded")
    assert len(outcomes) == 2
    assert [e.id for e in machines.list()] == [first.id], "one run only"
    datasets = [p for p in (hsops_home / "datasets").iterdir() if p.name.startswith("ds-")]
    assert len(datasets) == 1
    assert len(registry(hsops_home)["versions"]) == 1


def test_two_files_at_once_both_finish_and_the_registry_stays_consistent(platform, hsops_home):
    rows = sample_rows()
    drop(hsops_home, "one.csv", rows)
    drop(hsops_home, "two.csv", rows[: len(rows) * 2 // 3] + [(t.replace("CTNS", "BOXES"), c) for t, c in rows])
    machines = platform.backend.state_machines
    runs = wait_for(lambda: machines.list() if len(machines.list()) == 2 else None, what="two runs")
    ends = [wait_for(finished(machines, r.id), what="both runs to finish") for r in runs]
    assert [e.status for e in ends] == ["SUCCEEDED", "SUCCEEDED"], [(e.error, e.cause) for e in ends]
    entry = registry(hsops_home)
    versions = entry["versions"]
    assert len(versions) == len({v["artifact"] for v in versions.values()}), "no artifact registered twice"
    for alias, version in entry["aliases"].items():
        assert version in versions and alias in ("champion", "challenger")
        assert (hsops_home / versions[version]["artifact"] / "manifest.json").is_file()


def test_a_malformed_file_fails_at_validation_and_registers_nothing(platform, hsops_home):
    (hsops_home / "inbox" / "broken.csv").write_text("description;code\nonly;a;few;fields\n\x00\x00\n")
    machines = platform.backend.state_machines
    execution = wait_for(finished(machines, wait_for(lambda: machines.list(), what="run")[0].id), what="end")
    assert execution.status == "FAILED" and execution.error == "ValidationFailed"
    assert execution.cause and execution.cause != "valid"
    assert registry(hsops_home) == {} or not registry(hsops_home).get("versions")
    names = [o.key for o in platform.backend.objects.list("quarantine/")]
    assert any(n.endswith("broken.csv") for n in names) and any(n.endswith(".reasons.json") for n in names)
    time.sleep(1.0)  # a ValidationFailed run is an answer: its trigger is acked, not redriven
    assert platform.backend.events.dead_letters() == []
    assert machines.describe(execution.id).status == "FAILED"


def test_a_handler_that_always_fails_is_retried_then_dead_lettered(hsops_home, monkeypatch):
    """Training fails on every call (fault injection in the workers): the run fails with
    the reason, the trigger is redelivered (the run redriven) until its attempts run out,
    then it is a dead letter carrying the error."""
    monkeypatch.setenv("HSOPS_FAULT_INJECT", "hsops-train")
    configure(hsops_home)
    platform = LocalPlatform(hsops_home, port=None, max_workers=2, idle_timeout=5.0, poll_interval=0.1).start()
    try:
        backend = platform.backend
        write_csv(hsops_home / "seed.csv", sample_rows())
        backend.objects.put("uploads/seed.csv", hsops_home / "seed.csv")
        backend.events.publish(PIPELINE_REQUESTED, {"name": "always-fails", "source": {"object_key": "uploads/seed.csv"}})
        dead = wait_for(lambda: backend.events.dead_letters(), timeout=300, what="a dead letter")
        assert len(dead) == 1 and "InjectedFault" in dead[0].error
        execution = backend.state_machines.describe("always-fails")
        assert execution.status == "FAILED" and execution.error == "InjectedFault"
        assert "fault injection" in execution.cause
        outcomes = [t["outcome"] for t in platform.triggers.triggers() if t["execution"] == "always-fails"]
        assert outcomes.count("started") == 1 and sum(o.startswith("redriven") for o in outcomes) == 2
        # the failures of the first two tries stay in the history, and in the cost
        history = backend.state_machines.history(execution.id)
        failed_trains = [h for h in history if h["state"] == "Train" and h["status"] == "failed"]
        assert sorted(h["before_redrive"] or 0 for h in failed_trains) == [0, 1, 2]
        assert all(h["error"] == "InjectedFault" for h in failed_trains)
        assert not registry(hsops_home).get("versions")
        # ingest, validate and split ran once: a redrive restarts at the failed step
        counts = {r["function"]: r["n"] for r in backend.db.query(
            "SELECT function, COUNT(*) AS n FROM fn_invocations GROUP BY function")}
        assert counts["hsops-ingest"] == 1 and counts["hsops-train"] == 3
    finally:
        platform.stop()


def _running_train(machines, execution_id):
    steps = [h for h in machines.history(execution_id) if h["state"] == "Train" and h["status"] == "running"]
    return steps[0] if steps else None


def test_a_worker_killed_during_training_is_retried_and_the_run_finishes(platform, hsops_home):
    backend = platform.backend
    write_csv(hsops_home / "seed.csv", sample_rows())
    backend.objects.put("uploads/seed.csv", hsops_home / "seed.csv")
    machines = backend.state_machines
    execution = machines.start(LIFECYCLE, pipeline_input(hsops_home, {"object_key": "uploads/seed.csv"}),
                               name="killed-worker")
    wait_for(lambda: _running_train(machines, execution.id), what="training to start")
    running = wait_for(lambda: backend.db.query(
        "SELECT worker_pid FROM fn_invocations WHERE function = 'hsops-train' AND status = 'running'"),
        what="the training invocation to run")
    os.kill(running[0]["worker_pid"], signal.SIGKILL)
    done = wait_for(finished(machines, execution.id), what="the run to finish")
    assert done.status == "SUCCEEDED", (done.error, done.cause)
    trains = [h for h in machines.history(execution.id) if h["state"] == "Train"]
    assert [h["status"] for h in trains] == ["failed", "succeeded"]
    assert trains[0]["error"] == "Runtime.WorkerLost"
    # what the killed worker was writing never became an artifact; what is registered verifies
    from hsops.models.artifact import verify

    artifacts = [p for p in (hsops_home / "artifacts").iterdir() if not p.name.startswith(".")]
    assert len(artifacts) == 1
    for version in registry(hsops_home)["versions"].values():
        verify(hsops_home / version["artifact"])


HSOPS = [sys.executable, "-m", "hsops.cli"]


def test_kill_9_of_the_platform_resumes_where_it_stopped(hsops_home, tmp_path):
    """``hsops pipeline run`` killed with SIGKILL (its workers too) while training; the
    next platform finishes the run without re-running the steps that had finished."""
    configure(hsops_home)
    data = write_csv(tmp_path / "lines.csv", sample_rows())
    env = {**os.environ, "HSOPS_HOME": str(hsops_home)}
    proc = subprocess.Popen(HSOPS + ["pipeline", "run", "--data", str(data), "--json"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    backend = LocalBackend(hsops_home)
    try:
        machines = backend.state_machines
        run = wait_for(lambda: machines.list(), what="the run to start")[0]
        wait_for(lambda: _running_train(machines, run.id), what="training to start")
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and every worker it spawned
        proc.wait(10)
        before = {h["key"]: h for h in machines.history(run.id)}
        assert machines.describe(run.id).status == "RUNNING"
        finished_before = {k for k, h in before.items() if h["status"] == "succeeded"}
        assert {"Ingest#0", "Validate#0", "Split#0"} <= {k.split("@")[0] for k in finished_before}
    finally:
        backend.close()

    platform = LocalPlatform(hsops_home, port=None, idle_timeout=5.0, poll_interval=0.1).start()
    try:
        machines = platform.backend.state_machines
        done = wait_for(finished(machines, run.id), what="the resumed run to finish")
        assert done.status == "SUCCEEDED", (done.error, done.cause)
        after = {h["key"]: h for h in machines.history(run.id)}
        for key in finished_before:  # finished steps were not run again
            assert after[key]["started_at"] == before[key]["started_at"]
            assert after[key]["invocation_id"] == before[key]["invocation_id"]
        invocations = platform.backend.db.query(
            "SELECT function, COUNT(*) AS n FROM fn_invocations GROUP BY function")
        counts = {r["function"]: r["n"] for r in invocations}
        assert counts["hsops-ingest"] == 1 and counts["hsops-split"] == 1
    finally:
        platform.stop()
    leftovers = subprocess.run(["pgrep", "-f", f"hsops.platform.local.worker.*{hsops_home}"],
                               capture_output=True, text=True).stdout.split()
    assert leftovers == [] or shutil.which("pgrep") is None


def test_a_monitoring_event_and_a_schedule_each_start_a_run(platform, hsops_home):
    """retrain.requested (what a drift alert emits) and a due schedule both run the pipeline
    on the latest dataset; the second model is the first one again, so the gate rejects it."""
    from datetime import datetime, timedelta, timezone

    from hsops.data.ingest import ingest_file
    from hsops.platform.local.triggers import RETRAIN_REQUESTED

    ingest_file(write_csv(hsops_home / "seed.csv", sample_rows()), hsops_home)
    backend, machines = platform.backend, platform.backend.state_machines
    backend.events.publish(RETRAIN_REQUESTED, {"name": "retrain-drift", "alert": {"metric": "psi", "value": 0.4}})
    first = wait_for(finished(machines, "retrain-drift"), what="the retrain run")
    assert first.status == "SUCCEEDED" and first.output["alias"] == "champion"
    assert first.input["trigger"] == {"type": "monitoring", "alert": {"metric": "psi", "value": 0.4},
                                      "message_id": first.input["trigger"]["message_id"]}

    backend.scheduler.put("nightly", "rate(1 day)", PIPELINE_REQUESTED, {"source": {"dataset_version": "latest"}})
    fired = backend.scheduler.fire_due(datetime.now(timezone.utc) + timedelta(days=1, minutes=1))
    assert fired == ["nightly"]
    scheduled = wait_for(lambda: [e for e in machines.list() if e.name.startswith("schedule-nightly-")],
                         what="the scheduled run")[0]
    second = wait_for(finished(machines, scheduled.id), what="the scheduled run to finish")
    assert second.status == "SUCCEEDED"
    assert second.output["outcome"] == "rejected" and "own artifact" in second.output["reason"]
    assert list(registry(hsops_home)["versions"]) == ["1"], "a rejected model is not registered"
    assert "Rejected" in [h["state"] for h in machines.history(second.id)]


def test_a_drop_whose_trigger_was_dead_lettered_runs_when_dropped_again(platform, hsops_home):
    """A broken pipeline.json fails the trigger until it is a dead letter; once fixed,
    dropping the same file again runs it (it is not taken for a duplicate)."""
    (hsops_home / "pipeline.json").write_text('{"candidates": [')
    drop(hsops_home, "r1.csv", sample_rows())
    dead = wait_for(lambda: platform.backend.events.dead_letters(), what="the dead letter")
    assert "not a valid pipeline configuration" in dead[0].error
    assert platform.backend.state_machines.list() == []
    configure(hsops_home)
    drop(hsops_home, "r1.csv", sample_rows())
    machines = platform.backend.state_machines
    execution = wait_for(finished(machines, wait_for(lambda: machines.list(), what="the run")[0].id), what="end")
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)


def test_a_file_held_open_for_writing_is_not_taken(tmp_path):
    from hsops.platform.local.triggers import _open_for_writing

    path = tmp_path / "slow.csv"
    with open(path, "w") as writer:
        writer.write("goods_description,hs_code\n")
        writer.flush()
        assert _open_for_writing(path)
        with open(path) as reader:
            reader.read()
            assert _open_for_writing(path)  # the writer still holds it
    with open(path) as reader:
        assert not _open_for_writing(path)  # only read
    assert not _open_for_writing(path)
