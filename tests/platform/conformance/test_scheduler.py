"""Scheduler conformance: only the Backend contract, with explicit ``now`` values."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from hsops.platform.backend import BackendError


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def bodies(backend, queue: str) -> list[dict]:
    messages = backend.events.receive(queue, max_messages=10)
    for message in messages:
        backend.events.ack(message)
    return [m.body for m in messages]


def test_put_list_delete(backend):
    schedule = backend.scheduler.put("nightly", "cron(0 3 * * ? *)", "pipeline.requested", {"source": "x"})
    assert (schedule.name, schedule.expression, schedule.queue, schedule.body, schedule.enabled) == (
        "nightly", "cron(0 3 * * ? *)", "pipeline.requested", {"source": "x"}, True)
    next_fire = at(schedule.next_fire)
    assert (next_fire.hour, next_fire.minute) == (3, 0) and next_fire.utcoffset() == timedelta(0)
    assert next_fire > datetime.now(UTC) - timedelta(minutes=1)
    assert [s.name for s in backend.scheduler.list()] == ["nightly"]
    assert backend.scheduler.delete("nightly") is True
    assert backend.scheduler.delete("nightly") is False
    assert backend.scheduler.list() == []


@pytest.mark.parametrize("expression", ["rate(1 minutes)", "rate(0 hours)", "cron(0 3 * * * *)", "cron(0 3 * *)",
                                        "every day", "cron(0 25 * * ? *)"])
def test_a_bad_expression_raises_value_error(backend, expression):
    with pytest.raises(ValueError):
        backend.scheduler.put("bad", expression, "q")
    assert backend.scheduler.list() == []


def test_fires_once_per_due_time_with_the_schedule_in_the_body(backend):
    s = backend.scheduler.put("nightly", "cron(0 3 * * ? *)", "ticks", {"source": {"dataset_version": "latest"}})
    due = at(s.next_fire)
    assert backend.scheduler.fire_due(due - timedelta(seconds=1)) == []
    assert backend.scheduler.fire_due(due) == ["nightly"]
    assert backend.scheduler.fire_due(due) == []
    assert backend.scheduler.fire_due(due + timedelta(minutes=5)) == []
    [body] = bodies(backend, "ticks")
    assert body["schedule"] == "nightly" and body["source"] == {"dataset_version": "latest"}
    assert at(body["scheduled_time"]) == due
    [after] = backend.scheduler.list()
    assert at(after.last_fired) == due and at(after.next_fire) == due + timedelta(days=1)


def test_missed_periods_are_not_replayed(backend):
    s = backend.scheduler.put("hourly", "rate(1 hour)", "ticks")
    due = at(s.next_fire)
    now = due + timedelta(hours=5, minutes=30)
    assert backend.scheduler.fire_due(now) == ["hourly"]
    assert len(bodies(backend, "ticks")) == 1
    [after] = backend.scheduler.list()
    assert at(after.next_fire) == due + timedelta(hours=6)  # the phase is kept, the next one after now
    assert backend.scheduler.fire_due(now) == []


def test_several_schedules(backend):
    a = backend.scheduler.put("a", "rate(5 minutes)", "ticks")
    backend.scheduler.put("b", "cron(0 0 1 1 ? *)", "ticks")  # new year: not due in this test
    assert backend.scheduler.fire_due(at(a.next_fire)) == ["a"]
    assert [b["schedule"] for b in bodies(backend, "ticks")] == ["a"]


def test_a_deleted_schedule_does_not_fire(backend):
    s = backend.scheduler.put("gone", "rate(1 minute)", "ticks")
    backend.scheduler.delete("gone")
    assert backend.scheduler.fire_due(at(s.next_fire) + timedelta(hours=1)) == []
    assert bodies(backend, "ticks") == []


def test_re_put_with_the_same_expression_keeps_the_due_time(backend):
    first = backend.scheduler.put("s", "rate(1 day)", "ticks", {"v": 1})
    again = backend.scheduler.put("s", "rate(1 day)", "ticks", {"v": 2})
    assert again.next_fire == first.next_fire and again.body == {"v": 2}
    changed = backend.scheduler.put("s", "cron(30 4 * * ? *)", "ticks")
    assert at(changed.next_fire).minute == 30


def test_concurrent_fire_due_fires_once(backend):
    s = backend.scheduler.put("race", "rate(10 minutes)", "ticks")
    now = at(s.next_fire)
    results: list[list[str]] = []
    barrier = threading.Barrier(4)

    def fire():
        barrier.wait()
        results.append(backend.scheduler.fire_due(now))

    threads = [threading.Thread(target=fire) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(name for r in results for name in r) == ["race"]
    assert len(bodies(backend, "ticks")) == 1


@pytest.mark.parametrize("name, queue, body", [
    ("", "q", {}), ("bad name", "q", {}), ("x" * 65, "q", {}), ("ok", "bad queue", {}), ("ok", "q", [1]),
    ("ok", "q", {"x": float("nan")}),
])
def test_bad_names_queues_and_bodies(backend, name, queue, body):
    with pytest.raises(BackendError):
        backend.scheduler.put(name, "rate(1 hour)", queue, body)
    assert backend.scheduler.list() == []


def test_an_expression_that_never_fires_again_is_refused(backend):
    with pytest.raises(ValueError, match="never fires"):
        backend.scheduler.put("past", "cron(0 0 1 1 ? 2020)", "ticks")


def test_a_cron_stops_after_its_last_year(backend):
    s = backend.scheduler.put("last", "cron(0 0 1 1 ? 2199)", "ticks")
    assert at(s.next_fire) == datetime(2199, 1, 1, tzinfo=UTC)
    assert backend.scheduler.fire_due(at(s.next_fire)) == ["last"]
    [after] = backend.scheduler.list()
    assert after.next_fire is None and at(after.last_fired) == at(s.next_fire)
    assert backend.scheduler.fire_due(datetime(2199, 12, 31, tzinfo=UTC)) == []
