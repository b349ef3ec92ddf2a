"""LocalEventBus internals: claims across processes, stale receipts, limits, hostile input.

A fake clock drives the timing tests that only need time to move; the real-time ones use
0.2 s timeouts and poll up to a generous deadline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import BackendError, Message
from hsops.platform.local.event_bus import MAX_BODY_BYTES, LocalEventBus


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path):
    database = SqliteDatabase(tmp_path / "platform.db")
    yield database
    database.close()


@pytest.fixture
def bus(db):
    return LocalEventBus(db)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def fake(db, clock):
    return LocalEventBus(db, clock=clock)


CONSUMER = """
import json, sys, time
from hsops._sqlite import SqliteDatabase
from hsops.platform.local.event_bus import LocalEventBus
bus = LocalEventBus(SqliteDatabase(sys.argv[1]))
print("ready", flush=True)
sys.stdin.readline()  # start together
got = []
while batch := bus.receive("work", max_messages=int(sys.argv[2]), visibility_timeout=600):
    got.extend(m.id for m in batch)
    time.sleep(0.001)  # a little work between receives, so the two interleave
print(json.dumps(got))
"""


def test_two_processes_receiving_together_never_get_the_same_message(bus, db):
    ids = {bus.publish("work", {"i": i}) for i in range(400)}
    consumers = [subprocess.Popen([sys.executable, "-c", CONSUMER, str(db.path), size], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for size in ("1", "3")]
    for proc in consumers:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
    for proc in consumers:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = []
    for proc in consumers:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    first, second = results
    assert first and second, "the two consumers did not overlap; the test proved nothing"
    assert len(first) + len(second) == 400  # nothing received twice, even within one consumer
    assert set(first) | set(second) == ids
    assert not set(first) & set(second)
    assert bus.depth("work") == {"visible": 0, "in_flight": 400, "delayed": 0, "dead": 0}


def test_visibility_expiry_redelivers_in_real_time(bus):
    bus.publish("q", {"x": 1})
    [first] = bus.receive("q", visibility_timeout=0.2)
    deadline = time.monotonic() + 20
    batch = []
    while not batch and time.monotonic() < deadline:
        time.sleep(0.02)
        batch = bus.receive("q", visibility_timeout=0.2)
    [second] = batch
    assert second.id == first.id and second.receive_count == 2


def test_a_stale_receipt_raises_and_changes_nothing(fake, clock):
    fake.publish("q", {"x": 1})
    [old] = fake.receive("q", visibility_timeout=10)
    clock.now += 11
    [current] = fake.receive("q", visibility_timeout=10)
    for call in (lambda: fake.ack(old), lambda: fake.nack(old, "e"), lambda: fake.extend(old, 100)):
        with pytest.raises(BackendError, match="stale receipt.*delivered again"):
            call()
    assert fake.depth("q")["in_flight"] == 1
    clock.now += 9  # the stale extend did not move the lease either
    assert fake.receive("q") == []
    fake.ack(current)
    with pytest.raises(BackendError, match="acked already"):
        fake.ack(current)


def test_a_receipt_whose_lease_ran_out_is_still_current_until_someone_receives(fake, clock):
    fake.publish("q", {"x": 1})
    [message] = fake.receive("q", visibility_timeout=10)
    clock.now += 30
    fake.extend(message, 10)  # a late heartbeat before anyone else took it: as SQS
    assert fake.receive("q") == []
    fake.ack(message)
    assert fake.depth("q")["visible"] == 0


def test_lease_expiry_records_the_error_and_dead_letters_it(fake, clock):
    fake.publish("q", {"x": 1})
    fake.receive("q", visibility_timeout=5, max_receives=2)
    clock.now += 6
    [second] = fake.receive("q", visibility_timeout=5, max_receives=2)
    assert second.receive_count == 2
    clock.now += 6
    assert fake.depth("q") == {"visible": 0, "in_flight": 0, "delayed": 0, "dead": 1}  # swept, no receive needed
    [dead] = fake.dead_letters()
    assert dead.error == "lease expired after 2 receives" and dead.receive_count == 2
    with pytest.raises(BackendError, match="dead letters"):
        fake.ack(second)


def test_a_nack_on_the_last_receive_dead_letters_at_once(fake):
    fake.publish("q", {"x": 1})
    [message] = fake.receive("q", max_receives=1)
    fake.nack(message, "ValueError: bad row 7", delay=60)
    [dead] = fake.dead_letters("q")
    assert dead.error == "ValueError: bad row 7"


def test_a_nack_error_survives_a_later_stricter_receiver(fake, clock):
    fake.publish("q", {"x": 1})
    [message] = fake.receive("q", max_receives=5)
    fake.nack(message, "first failure")
    assert fake.receive("q", max_receives=1) == []  # received once already: no receive left
    assert fake.dead_letters("q")[0].error == "first failure"


def test_delays_with_a_fake_clock(fake, clock):
    fake.publish("q", {"x": 1}, delay=30)
    assert fake.depth("q")["delayed"] == 1
    clock.now += 29.9
    assert fake.receive("q") == []
    clock.now += 0.2
    [message] = fake.receive("q", visibility_timeout=100)
    assert fake.depth("q") == {"visible": 0, "in_flight": 1, "delayed": 0, "dead": 0}
    fake.nack(message, "retry later", delay=50)
    clock.now += 49
    assert fake.receive("q") == []
    clock.now += 2
    assert fake.receive("q")[0].receive_count == 2


def test_a_zero_visibility_timeout_still_delivers_each_message_once_per_receive(fake):
    for i in range(3):
        fake.publish("q", {"i": i})
    batch = fake.receive("q", max_messages=10, visibility_timeout=0)
    assert [m.body["i"] for m in batch] == [0, 1, 2]
    assert [m.receive_count for m in fake.receive("q", max_messages=10, visibility_timeout=0)] == [2, 2, 2]


def test_dedup_keys_outlive_the_message(bus):
    first = bus.publish("q", {"v": 1}, dedup_key="once")
    [message] = bus.receive("q")
    bus.ack(message)
    assert bus.publish("q", {"v": 1}, dedup_key="once") == first
    assert bus.receive("q") == []


def test_long_nack_errors_are_truncated(bus):
    bus.publish("q", {"x": 1})
    [message] = bus.receive("q", max_receives=1)
    bus.nack(message, "x" * 100_000)
    [dead] = bus.dead_letters("q")
    assert len(dead.error) < 10_000 and dead.error.endswith("(truncated)")


def test_tables_are_created_once_and_shared(db):
    first = LocalEventBus(db)
    first.publish("q", {"x": 1})
    second = LocalEventBus(db)  # another component on the same database
    assert second.receive("q")[0].body == {"x": 1}


def test_redrive_of_an_unknown_id(bus):
    with pytest.raises(BackendError, match="no dead letter"):
        bus.redrive("nope")


# -- hostile input ------------------------------------------------------------------------------
@pytest.mark.parametrize("queue", ["", "a" * 81, "bad name", "../x", "q/x", "ä", ".hidden", "-x", None, 5, "q\n"])
def test_bad_queue_names(bus, queue):
    calls = [lambda: bus.publish(queue, {}), lambda: bus.receive(queue), lambda: bus.depth(queue)]
    if queue is not None:  # dead_letters(None) means every queue
        calls.append(lambda: bus.dead_letters(queue))
    for call in calls:
        with pytest.raises(BackendError, match="queue name"):
            call()


def test_good_queue_names(bus):
    for queue in ("object.created", "a" * 80, "retrain_requested-2", "Q1"):
        bus.publish(queue, {})
        assert len(bus.receive(queue)) == 1


def deep(n):
    body: dict = {}
    for _ in range(n):
        body = {"d": body}
    return body


@pytest.mark.parametrize("body, match", [
    ([1], "a dict"), ("{}", "a dict"), (None, "a dict"),
    ({"x": float("inf")}, "JSON"), ({"x": b"bytes"}, "JSON"), ({"x": {1, 2}}, "JSON"),
    ({1: "int key"}, "round trip"), ({"t": (1, 2)}, "round trip"),
    ({"s": "\ud800"}, "JSON"), (deep(100_000), "JSON"),
    ({"s": "x" * MAX_BODY_BYTES}, "256 KiB"), ({"s": "é" * (MAX_BODY_BYTES // 2)}, "256 KiB"),
])
def test_bad_bodies(bus, body, match):
    with pytest.raises(BackendError, match=match):
        bus.publish("q", body)
    assert bus.depth("q")["visible"] == 0


@pytest.mark.parametrize("kwargs", [
    {"visibility_timeout": -1}, {"visibility_timeout": float("nan")}, {"visibility_timeout": float("inf")},
    {"visibility_timeout": 43_201}, {"visibility_timeout": "3"}, {"visibility_timeout": True},
    {"max_messages": 0}, {"max_messages": 11}, {"max_messages": 1.5}, {"max_messages": True},
    {"max_receives": 0}, {"max_receives": 1001},
])
def test_bad_receive_arguments(bus, kwargs):
    bus.publish("q", {"x": 1})
    with pytest.raises(BackendError):
        bus.receive("q", **kwargs)
    assert bus.depth("q")["visible"] == 1  # nothing claimed


@pytest.mark.parametrize("delay", [-0.1, 901, float("nan"), None])
def test_bad_publish_delays(bus, delay):
    with pytest.raises(BackendError, match="delay"):
        bus.publish("q", {}, delay=delay)


@pytest.mark.parametrize("dedup_key", ["", 5, "k" * 2049])
def test_bad_dedup_keys(bus, dedup_key):
    with pytest.raises(BackendError, match="dedup_key"):
        bus.publish("q", {}, dedup_key=dedup_key)


def test_bad_acks(bus):
    bus.publish("q", {"x": 1})
    [message] = bus.receive("q")
    with pytest.raises(BackendError, match="Message"):
        bus.ack({"id": message.id, "receipt": message.receipt})
    with pytest.raises(BackendError, match="string"):
        bus.nack(message, RuntimeError("not a string"))
    with pytest.raises(BackendError, match="delay"):
        bus.nack(message, "e", delay=-5)
    with pytest.raises(BackendError, match="visibility_timeout"):
        bus.extend(message, 10**9)
    forged = Message(id=message.id, queue="q", body={}, receive_count=1, receipt="forged", sent_at="")
    with pytest.raises(BackendError, match="stale receipt"):
        bus.ack(forged)
    bus.ack(message)  # none of the above touched it
