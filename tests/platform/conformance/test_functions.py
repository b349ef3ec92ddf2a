"""FunctionRuntime conformance: invoke the diagnostic handlers through the contract only.

The ``backend`` fixture runs at most 2 workers that leave after 2 s without work.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from hsops._pricing import invocation_cost_usd

TIMEOUT = 30.0  # generous: a loaded 2-core machine; a healthy call takes milliseconds


def test_lists_the_functions(backend):
    assert {"hsops-echo", "hsops-sleep", "hsops-fail", "hsops-allocate", "hsops-crash"} <= set(
        backend.functions.functions())


def test_echo_round_trip_with_context_fields(backend):
    payload = {"text": "tapis de laine, fait main", "n": [1, 2.5, None], "nested": {"ok": True}}
    inv = backend.functions.call("hsops-echo", payload, timeout=TIMEOUT)
    assert inv.done and inv.status == "succeeded", inv
    assert inv.result == {"echo": payload, "function": "hsops-echo", "request_id": inv.id}
    assert inv.function == "hsops-echo" and inv.payload == payload
    assert inv.error is None and inv.cause is None and inv.attempts == 1
    assert datetime.fromisoformat(inv.started_at) <= datetime.fromisoformat(inv.ended_at)
    assert backend.functions.get(inv.id) == inv


def test_a_failing_handler_records_error_and_cause(backend):
    inv = backend.functions.call("hsops-fail", {"message": "no HS code for 'unobtainium'"}, timeout=TIMEOUT)
    assert inv.status == "failed" and inv.result is None
    assert inv.error == "ValueError"
    assert inv.cause == "no HS code for 'unobtainium'"  # the message, not a traceback


def test_an_idempotency_key_returns_the_first_invocation(backend):
    functions = backend.functions
    first = functions.invoke("hsops-echo", {"n": 1}, idempotency_key="ingest-42")
    again = functions.invoke("hsops-echo", {"n": 2}, idempotency_key="ingest-42")
    assert again.id == first.id
    done = functions.wait(first.id, TIMEOUT)
    assert done.status == "succeeded" and done.result["echo"] == {"n": 1} and done.attempts == 1
    after = functions.invoke("hsops-echo", {"n": 3}, idempotency_key="ingest-42")
    assert after == done  # done, not run again
    assert sum(functions.stats()["invocations"].values()) == 1  # the handler ran once


def test_a_crash_is_worker_lost_and_later_invocations_still_work(backend):
    lost = backend.functions.call("hsops-crash", {}, timeout=TIMEOUT)
    assert lost.status == "failed" and lost.error == "Runtime.WorkerLost"
    assert "pid" in lost.cause
    assert backend.functions.call("hsops-echo", {"after": "crash"}, timeout=TIMEOUT).status == "succeeded"


def test_a_transient_crash_succeeds_when_the_caller_retries(backend, tmp_path):
    payload = {"marker_file": str(tmp_path / "crashed-once")}
    assert backend.functions.call("hsops-crash", payload, timeout=TIMEOUT).error == "Runtime.WorkerLost"
    retry = backend.functions.call("hsops-crash", payload, timeout=TIMEOUT)
    assert retry.status == "succeeded" and retry.result["crashed"] is False


def test_duration_peak_memory_and_cost_are_recorded(backend):
    inv = backend.functions.call("hsops-allocate", {"mb": 200}, timeout=TIMEOUT)
    assert inv.status == "succeeded", inv
    assert inv.peak_memory_mb >= 200
    assert inv.billed_memory_mb >= inv.peak_memory_mb
    assert inv.duration_ms > 0
    assert inv.cost_usd == pytest.approx(invocation_cost_usd(inv.duration_ms / 1000, inv.billed_memory_mb))
    small = backend.functions.call("hsops-echo", {}, timeout=TIMEOUT)
    assert 0 < small.peak_memory_mb < inv.peak_memory_mb
    assert small.billed_memory_mb >= 128 and 0 < small.cost_usd < inv.cost_usd


def test_cold_start_on_the_first_invocation_only(backend):
    first = backend.functions.call("hsops-echo", {"i": 1}, timeout=TIMEOUT)
    second = backend.functions.call("hsops-echo", {"i": 2}, timeout=TIMEOUT)
    assert first.cold_start is True and first.init_ms > 0
    assert second.cold_start is False and second.init_ms is None
    stats = backend.functions.stats()
    assert stats["cold_starts"] == 1
    assert stats["init_ms"]["p50"] == stats["init_ms"]["max"] == pytest.approx(first.init_ms)


def test_idle_workers_scale_to_zero(backend):
    assert backend.functions.call("hsops-echo", {}, timeout=TIMEOUT).status == "succeeded"
    assert backend.functions.stats()["workers"] >= 1
    deadline = time.monotonic() + 15  # idle_timeout is 2 s
    while backend.functions.stats()["workers"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert backend.functions.stats()["workers"] == 0
    assert backend.functions.call("hsops-echo", {}, timeout=TIMEOUT).cold_start is True  # from zero: cold


def _max_overlap(invocations) -> int:
    events = []
    for inv in invocations:
        events += [(datetime.fromisoformat(inv.started_at), 1), (datetime.fromisoformat(inv.ended_at), -1)]
    running = peak = 0
    for _, delta in sorted(events):  # an end sorts before a start at the same instant
        running += delta
        peak = max(peak, running)
    return peak


def test_concurrency_is_bounded_by_max_workers(backend):
    functions = backend.functions
    ids = [functions.invoke("hsops-sleep", {"seconds": 1}).id for _ in range(4)]
    seen_workers = 0
    deadline = time.monotonic() + TIMEOUT
    while not all(functions.get(i).done for i in ids) and time.monotonic() < deadline:
        seen_workers = max(seen_workers, functions.stats()["workers"])
        time.sleep(0.05)
    done = [functions.wait(i, TIMEOUT) for i in ids]
    assert all(inv.status == "succeeded" for inv in done), done
    max_workers = functions.stats()["max_workers"]
    assert max_workers == 2
    assert seen_workers <= max_workers
    assert _max_overlap(done) == max_workers  # used the whole pool, never more
