"""EventBus conformance: only the Backend contract, through the ``backend`` fixture.

Lease expiry uses short visibility timeouts (0.2 s) and polls up to a generous deadline,
so a slow machine makes a test slower, never wrong.
"""

from __future__ import annotations

import contextlib
import time
from datetime import datetime

import pytest

from hsops.platform.backend import BackendError

DEADLINE = 20.0


def receive_within(events, queue, deadline=DEADLINE, **kwargs):
    """The first non-empty receive before ``deadline`` seconds; [] after."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if batch := events.receive(queue, **kwargs):
            return batch
        time.sleep(0.02)
    return []


def test_publish_receive_ack(backend):
    events = backend.events
    message_id = events.publish("jobs", {"n": 1, "nested": {"list": [1, "two", None, 3.5, True]}})
    [message] = events.receive("jobs")
    assert (message.id, message.queue, message.receive_count) == (message_id, "jobs", 1)
    assert message.body == {"n": 1, "nested": {"list": [1, "two", None, 3.5, True]}}
    assert datetime.fromisoformat(message.sent_at).utcoffset() is not None
    assert events.receive("jobs") == []  # in flight: invisible to others
    assert events.depth("jobs") == {"visible": 0, "in_flight": 1, "delayed": 0, "dead": 0}
    events.ack(message)
    assert events.depth("jobs") == {"visible": 0, "in_flight": 0, "delayed": 0, "dead": 0}


def test_receive_on_an_empty_or_unknown_queue_returns_nothing(backend):
    assert backend.events.receive("never-used") == []
    assert backend.events.depth("never-used") == {"visible": 0, "in_flight": 0, "delayed": 0, "dead": 0}


def test_oldest_first_and_max_messages(backend):
    events = backend.events
    ids = [events.publish("q", {"i": i}) for i in range(5)]
    first = events.receive("q", max_messages=3)
    assert [m.id for m in first] == ids[:3]
    rest = events.receive("q", max_messages=10)
    assert [m.body["i"] for m in rest] == [3, 4]


def test_queues_are_separate(backend):
    backend.events.publish("a", {"q": "a"})
    assert backend.events.receive("b") == []
    assert [m.body for m in backend.events.receive("a")] == [{"q": "a"}]


def test_expired_lease_is_redelivered_with_a_new_receipt(backend):
    events = backend.events
    events.publish("q", {"x": 1})
    [first] = events.receive("q", visibility_timeout=0.2)
    [again] = receive_within(events, "q", visibility_timeout=30)
    assert again.id == first.id and again.receive_count == 2 and again.receipt != first.receipt
    with contextlib.suppress(BackendError):  # a stale receipt may raise; it must not delete
        events.ack(first)
    assert events.depth("q")["in_flight"] == 1
    events.ack(again)
    assert events.depth("q")["in_flight"] == 0


def test_extend_keeps_a_message_invisible(backend):
    events = backend.events
    events.publish("q", {"x": 1})
    [message] = events.receive("q", visibility_timeout=0.2)
    events.extend(message, 30)
    time.sleep(0.5)  # past the first timeout
    assert events.receive("q") == []
    events.ack(message)  # the receipt is still current after an extend


def test_nack_redelivers_and_records_the_error(backend):
    events = backend.events
    events.publish("q", {"x": 1})
    [first] = events.receive("q", max_receives=5)
    events.nack(first, "boom")
    [second] = events.receive("q", max_receives=5)
    assert second.id == first.id and second.receive_count == 2


def test_nack_with_delay(backend):
    events = backend.events
    events.publish("q", {"x": 1})
    [message] = events.receive("q")
    events.nack(message, "later", delay=60)
    assert events.receive("q") == []
    assert events.depth("q") == {"visible": 0, "in_flight": 0, "delayed": 1, "dead": 0}


def test_publish_with_delay(backend):
    backend.events.publish("q", {"x": 1}, delay=60)
    assert backend.events.receive("q") == []
    assert backend.events.depth("q")["delayed"] == 1


def test_nacked_max_receives_times_goes_to_the_dead_letters_with_the_last_error(backend):
    events = backend.events
    message_id = events.publish("q", {"x": 1})
    for attempt in range(1, 4):
        [message] = events.receive("q", max_receives=3)
        assert message.receive_count == attempt
        events.nack(message, f"error {attempt}")
    assert events.receive("q", max_receives=3) == []
    [dead] = events.dead_letters("q")
    assert (dead.id, dead.queue, dead.body, dead.receive_count, dead.error) == (message_id, "q", {"x": 1}, 3, "error 3")
    assert datetime.fromisoformat(dead.dead_at).utcoffset() is not None
    assert events.depth("q") == {"visible": 0, "in_flight": 0, "delayed": 0, "dead": 1}
    assert [d.id for d in events.dead_letters()] == [message_id]
    assert events.dead_letters("other") == []


def test_a_vanished_consumer_ends_in_the_dead_letters_with_lease_expired(backend):
    events = backend.events
    events.publish("q", {"x": 1})
    [message] = events.receive("q", visibility_timeout=0.2, max_receives=1)
    end = time.monotonic() + DEADLINE
    while not events.dead_letters("q") and time.monotonic() < end:
        assert events.receive("q", max_receives=1) == []  # never delivered a second time
        time.sleep(0.02)
    [dead] = events.dead_letters("q")
    assert dead.id == message.id and "lease expired" in dead.error and dead.receive_count == 1


def test_dead_letter_moves_a_message_at_once_with_its_error(backend):
    events = backend.events
    events.publish("q", {"x": 1})
    [message] = events.receive("q", max_receives=10)
    events.dead_letter(message, "cannot help: retried enough")
    assert events.receive("q") == []
    [dead] = events.dead_letters("q")
    assert (dead.body, dead.receive_count, dead.error) == ({"x": 1}, 1, "cannot help: retried enough")
    with pytest.raises(BackendError):
        events.ack(message)  # it is no longer in the queue


def test_redrive_puts_a_dead_letter_back_with_a_fresh_count(backend):
    events = backend.events
    events.publish("q", {"x": 1})
    [message] = events.receive("q", max_receives=1)
    events.nack(message, "bad")
    [dead] = events.dead_letters("q")
    new_id = events.redrive(dead.id)
    assert new_id != dead.id
    assert events.dead_letters("q") == []
    [again] = events.receive("q")
    assert (again.id, again.body, again.receive_count) == (new_id, {"x": 1}, 1)
    with pytest.raises(BackendError):
        events.redrive(dead.id)  # once only


def test_dedup_key(backend):
    events = backend.events
    first = events.publish("q", {"v": 1}, dedup_key="k1")
    assert events.publish("q", {"v": 2}, dedup_key="k1") == first
    other = events.publish("q2", {"v": 3}, dedup_key="k1")  # per queue
    assert other != first
    assert [m.body for m in events.receive("q", max_messages=10)] == [{"v": 1}]
    assert events.publish("q", {"v": 4}, dedup_key="k2") != first


@pytest.mark.parametrize("body", [[1, 2], "text", None, {"x": {1, 2}}, {"x": float("nan")}, {"x": object()}])
def test_bodies_that_are_not_json_objects_are_refused(backend, body):
    with pytest.raises(BackendError):
        backend.events.publish("q", body)
    assert backend.events.depth("q")["visible"] == 0


def test_body_size_limit(backend):
    backend.events.publish("q", {"s": "x" * 200_000})
    with pytest.raises(BackendError, match="256 KiB"):
        backend.events.publish("q", {"s": "x" * (256 * 1024)})
    assert backend.events.depth("q")["visible"] == 1
