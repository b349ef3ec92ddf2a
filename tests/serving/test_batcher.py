"""The micro-batcher on its own, with a stand-in model that records its calls.

Faking the model is what makes the batcher's decisions visible: which requests share a
call, in what order, and what each request gets back. The stand-in's answer to a text
depends on the text and the call's settings only (as the real models' answers do), so
"each request gets what a call with its own texts gives" can be checked exactly.

Timeouts below are upper bounds against hanging; nothing asserts on how long anything took.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pytest

from hsops.serving import metrics
from hsops.serving.batcher import MicroBatcher, Overloaded

GIVE_UP_S = 20  # far longer than anything here needs: only a guard against hanging


def answer(texts, top_k=5, explain=False) -> list[tuple]:
    """What the stand-in model says for ``texts`` (a pure function of its arguments)."""
    return [(t, top_k, explain, len(t)) for t in texts]


class RecordingModel:
    """``predict`` like a Predictor; records each call. With ``hold()``, the next call
    blocks until ``release()``, so requests pile up behind it as they do under load."""

    def __init__(self, fail_on: str | None = None):
        self.calls: list[tuple[list[str], int, bool]] = []
        self.fail_on = fail_on
        self._gate = threading.Event()
        self._gate.set()
        self.entered = threading.Event()
        self._lock = threading.Lock()

    def hold(self) -> None:
        self._gate.clear()
        self.entered.clear()

    def release(self) -> None:
        self._gate.set()

    def predict(self, texts, top_k=5, explain=False):
        with self._lock:
            self.calls.append((list(texts), top_k, explain))
        self.entered.set()
        assert self._gate.wait(GIVE_UP_S), "the test never released the model"
        if self.fail_on is not None and self.fail_on in texts:
            raise RuntimeError(f"model broke on {self.fail_on}")
        return answer(texts, top_k, explain)


@pytest.fixture
def model() -> RecordingModel:
    return RecordingModel()


@pytest.fixture
def make_batcher():
    made: list[MicroBatcher] = []

    def make(**kwargs) -> MicroBatcher:
        # no shedding for waiting unless a test asks for it: a loaded machine must not make
        # a slow thread switch look like a queue timeout
        kwargs.setdefault("queue_timeout_s", 600.0)
        batcher = MicroBatcher(**kwargs)
        made.append(batcher)
        return batcher
    yield make
    for batcher in made:
        batcher.close(timeout=GIVE_UP_S)


def occupy(batcher: MicroBatcher, model: RecordingModel, *, background: bool = False):
    """Put the model thread in a held call, so what is submitted next has to wait."""
    model.hold()
    future = batcher.submit(model, ["BLOCKER"], background=background)
    assert model.entered.wait(GIVE_UP_S), "the model thread did not start"
    return future


def shed_count(reason: str) -> float:
    return metrics.REGISTRY.get_sample_value("hsops_shed_requests_total", {"reason": reason}) or 0.0


# -- merging ----------------------------------------------------------------------------------
def test_concurrent_requests_share_a_call_and_each_gets_its_own_answers(make_batcher, model):
    batcher = make_batcher(max_batch=64, max_wait_s=0.0)
    blocker = occupy(batcher, model)
    requests = [["PLASTIC CUPS", "AIR FILTER"], ["MOTORCYCLE 125CC"], ["USED CLOTHING", "RUBBER SEAL", "O RING"],
                ["PLASTIC CUPS"]]  # the same text in two requests: each still gets its own copy
    futures = [batcher.submit(model, texts, top_k=3) for texts in requests]
    model.release()

    assert blocker.result(GIVE_UP_S) == answer(["BLOCKER"])
    for texts, future in zip(requests, futures):
        assert future.result(GIVE_UP_S) == answer(texts, top_k=3)
    # the four waiting requests went to the model together, in arrival order
    assert model.calls[1:] == [([t for texts in requests for t in texts], 3, False)]
    assert batcher.calls == 2


def test_requests_with_different_settings_are_not_mixed_in_one_call(make_batcher, model):
    batcher = make_batcher(max_batch=64, max_wait_s=0.0)
    occupy(batcher, model)
    plain = batcher.submit(model, ["AIR FILTER"], top_k=5)
    explained = batcher.submit(model, ["RUBBER SEAL"], top_k=5, explain=True)
    fewer = batcher.submit(model, ["USED CLOTHING"], top_k=2)
    other_model = RecordingModel()
    elsewhere = batcher.submit(other_model, ["AIR FILTER"], top_k=5)
    plain_again = batcher.submit(model, ["MOTORCYCLE"], top_k=5)
    model.release()

    assert plain.result(GIVE_UP_S) == answer(["AIR FILTER"], 5)
    assert plain_again.result(GIVE_UP_S) == answer(["MOTORCYCLE"], 5)
    assert explained.result(GIVE_UP_S) == answer(["RUBBER SEAL"], 5, True)
    assert fewer.result(GIVE_UP_S) == answer(["USED CLOTHING"], 2)
    assert elsewhere.result(GIVE_UP_S) == answer(["AIR FILTER"], 5)
    assert sorted(model.calls[1:]) == sorted([(["AIR FILTER", "MOTORCYCLE"], 5, False),
                                              (["RUBBER SEAL"], 5, True), (["USED CLOTHING"], 2, False)])
    assert other_model.calls == [(["AIR FILTER"], 5, False)]


def test_a_call_takes_whole_requests_up_to_max_batch(make_batcher, model):
    batcher = make_batcher(max_batch=4, max_wait_s=0.0, max_queue=100)
    occupy(batcher, model)
    requests = [["a1", "a2"], ["b1", "b2"], ["c1"], ["d1", "d2", "d3", "d4", "d5", "d6"], ["e1"]]
    futures = [batcher.submit(model, texts) for texts in requests]
    model.release()
    for texts, future in zip(requests, futures):
        assert future.result(GIVE_UP_S) == answer(texts)
    sizes = [len(texts) for texts, _, _ in model.calls[1:]]
    # whole requests only, never split; a request larger than max_batch goes alone
    assert [texts for texts, _, _ in model.calls[1:]] == [["a1", "a2", "b1", "b2"], ["c1"],
                                                          ["d1", "d2", "d3", "d4", "d5", "d6"], ["e1"]]
    assert max(s for s in sizes if s != 6) <= 4


def test_a_lone_request_is_not_held_back_by_max_wait(make_batcher, model):
    # a minute of max_wait: if a request with nobody else around waited for company, the
    # result below would not come within the guard
    batcher = make_batcher(max_batch=64, max_wait_s=60.0)
    for text in ("AIR FILTER", "MOTORCYCLE", "USED CLOTHING"):
        assert batcher.submit(model, [text]).result(GIVE_UP_S) == answer([text])
    assert [c[0] for c in model.calls] == [["AIR FILTER"], ["MOTORCYCLE"], ["USED CLOTHING"]]


def test_under_load_a_batch_waits_to_fill_and_a_full_batch_goes_at_once(make_batcher, model):
    batcher = make_batcher(max_batch=4, max_wait_s=60.0, max_queue=100)
    # a burst: four requests merge into one call, so the batcher now knows there is load
    occupy(batcher, model)
    burst = [batcher.submit(model, [f"burst {i}"]) for i in range(4)]
    model.release()
    for future in burst:
        future.result(GIVE_UP_S)
    # under load the next request waits (up to max_wait) for others to fill the batch...
    first = batcher.submit(model, ["first", "second"])
    time.sleep(0.2)  # give a batcher that did not wait the chance to run it alone
    assert not first.done()
    # ...and a full batch does not wait out max_wait: it runs as soon as it is full
    second = batcher.submit(model, ["third", "fourth"])
    assert first.result(GIVE_UP_S) == answer(["first", "second"])
    assert second.result(GIVE_UP_S) == answer(["third", "fourth"])
    assert model.calls[-1] == (["first", "second", "third", "fourth"], 5, False)


def test_a_request_that_left_while_waiting_is_not_sent_to_the_model(make_batcher, model):
    batcher = make_batcher(max_wait_s=0.0)
    occupy(batcher, model)
    gone = batcher.submit(model, ["GONE"])
    kept = batcher.submit(model, ["KEPT"])
    assert gone.cancel()
    model.release()
    assert kept.result(GIVE_UP_S) == answer(["KEPT"])
    assert all("GONE" not in texts for texts, _, _ in model.calls)


# -- overload ---------------------------------------------------------------------------------
def test_past_max_queue_a_request_is_refused_at_once(make_batcher, model):
    batcher = make_batcher(max_batch=4, max_queue=4, max_wait_s=0.0)
    occupy(batcher, model)  # being answered: not counted as waiting
    waiting = [batcher.submit(model, ["a", "b"]), batcher.submit(model, ["c", "d"])]
    assert batcher.queued == 4
    before = shed_count("queue_full")
    with pytest.raises(Overloaded) as refused:
        batcher.submit(model, ["e"])
    assert refused.value.reason == "queue_full"
    assert refused.value.retry_after >= 1
    assert "full" in refused.value.message
    assert shed_count("queue_full") == before + 1
    assert batcher.queued == 4  # the refused request took no place
    model.release()
    assert [f.result(GIVE_UP_S) for f in waiting] == [answer(["a", "b"]), answer(["c", "d"])]
    # once the queue drains, requests are taken again
    assert batcher.submit(model, ["e"]).result(GIVE_UP_S) == answer(["e"])
    assert all("e" not in texts for texts, _, _ in model.calls[:-1])


def test_a_request_that_waited_past_queue_timeout_is_shed_not_answered(make_batcher, model):
    batcher = make_batcher(max_wait_s=0.0, queue_timeout_s=0.2)
    blocker = occupy(batcher, model, background=True)
    late = batcher.submit(model, ["LATE"])
    job_work = batcher.submit(model, ["JOB ROW"], background=True)
    time.sleep(0.5)  # LATE now waits longer than queue_timeout
    before = shed_count("queue_timeout")
    model.release()
    with pytest.raises(Overloaded) as shed:
        late.result(GIVE_UP_S)
    assert shed.value.reason == "queue_timeout" and shed.value.retry_after >= 1
    assert shed_count("queue_timeout") == before + 1
    assert all("LATE" not in texts for texts, _, _ in model.calls)  # never cost a model call
    # background (job) work is not shed for waiting: a job is not a client that gives up
    assert blocker.result(GIVE_UP_S) == answer(["BLOCKER"])
    assert job_work.result(GIVE_UP_S) == answer(["JOB ROW"])


def test_background_work_runs_only_when_no_real_time_request_waits(make_batcher, model):
    batcher = make_batcher(max_batch=64, max_wait_s=0.0)
    occupy(batcher, model, background=True)
    job_chunks = [batcher.submit(model, [f"job row {i}"], background=True) for i in range(2)]
    live = [batcher.submit(model, ["live 1"]), batcher.submit(model, ["live 2"])]
    model.release()
    for future, i in zip(job_chunks, range(2)):
        assert future.result(GIVE_UP_S) == answer([f"job row {i}"])
    assert [f.result(GIVE_UP_S) for f in live] == [answer(["live 1"]), answer(["live 2"])]
    order = [texts for texts, _, _ in model.calls]
    # the live requests, submitted after the job's chunks, went first, together
    assert order[1] == ["live 1", "live 2"]
    assert sorted(t for texts in order[2:] for t in texts) == ["job row 0", "job row 1"]


def test_background_work_is_not_counted_against_the_real_time_queue(make_batcher, model):
    batcher = make_batcher(max_batch=2, max_queue=2, max_wait_s=0.0)
    occupy(batcher, model, background=True)
    jobs = [batcher.submit(model, ["j1", "j2"], background=True) for _ in range(3)]
    assert batcher.queued == 0
    live = batcher.submit(model, ["live a", "live b"])  # still room for a real-time request
    model.release()
    assert live.result(GIVE_UP_S) == answer(["live a", "live b"])
    assert all(f.result(GIVE_UP_S) == answer(["j1", "j2"]) for f in jobs)


# -- failures and shutdown -------------------------------------------------------------------------
def test_a_model_error_reaches_every_request_of_that_call_and_the_thread_lives_on(make_batcher):
    model = RecordingModel(fail_on="BOOM")
    batcher = make_batcher(max_batch=64, max_wait_s=0.0)
    occupy(batcher, model)
    doomed = [batcher.submit(model, ["AIR FILTER"]), batcher.submit(model, ["BOOM"]),
              batcher.submit(model, ["RUBBER SEAL", "O RING"])]
    other_group = batcher.submit(model, ["USED CLOTHING"], top_k=2)
    model.release()
    for future in doomed:
        with pytest.raises(RuntimeError, match="model broke on BOOM"):
            future.result(GIVE_UP_S)
    assert other_group.result(GIVE_UP_S) == answer(["USED CLOTHING"], 2)
    assert batcher.submit(model, ["MOTORCYCLE"]).result(GIVE_UP_S) == answer(["MOTORCYCLE"])


def test_close_answers_what_is_queued_then_refuses_new_work(make_batcher, model):
    batcher = make_batcher(max_batch=2, max_wait_s=0.0)
    blocker = occupy(batcher, model)
    queued = [(texts, batcher.submit(model, texts)) for texts in (["a"], ["b", "c"], ["d"])]
    job = batcher.submit(model, ["job row"], background=True)
    closer = threading.Thread(target=batcher.close, kwargs={"timeout": GIVE_UP_S})
    closer.start()
    # until close() takes effect anything accepted must be answered too; then refusals
    before = shed_count("draining")
    while True:
        try:
            queued.append((["late"], batcher.submit(model, ["late"])))
        except Overloaded as refused:
            assert refused.reason == "draining" and refused.retry_after >= 1
            break
    assert shed_count("draining") == before + 1
    model.release()
    closer.join(GIVE_UP_S)
    assert not closer.is_alive()
    assert blocker.result(0) == answer(["BLOCKER"])
    for texts, future in queued:
        assert future.result(0) == answer(texts)  # answered before close() returned
    assert job.result(0) == answer(["job row"])
    with pytest.raises(Overloaded):
        batcher.submit(model, ["after close"])
    with pytest.raises(Overloaded):
        batcher.submit(model, ["after close"], background=True)


def test_close_does_not_wait_out_max_wait_for_a_batch_to_fill(make_batcher, model):
    batcher = make_batcher(max_batch=8, max_wait_s=600.0)
    occupy(batcher, model)
    burst = [batcher.submit(model, [f"burst {i}"]) for i in range(4)]
    model.release()
    for future in burst:
        future.result(GIVE_UP_S)
    waiting = batcher.submit(model, ["waiting for company"])  # under load: waits to fill
    batcher.close(timeout=GIVE_UP_S)
    # a draining replica answers what it holds now, not after max_wait
    assert waiting.result(0) == answer(["waiting for company"])


def test_close_without_any_work_returns(make_batcher):
    batcher = make_batcher()
    batcher.close(timeout=GIVE_UP_S)
    with pytest.raises(Overloaded):
        batcher.predict(RecordingModel(), ["x"])


def test_blocking_predict_and_many_threads_at_once(make_batcher, model):
    batcher = make_batcher(max_batch=16, max_wait_s=0.001)
    texts = [[f"line {i}", f"line {i} bis"] for i in range(40)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: batcher.predict(model, t, timeout=GIVE_UP_S), texts))
    assert results == [answer(t) for t in texts]
    assert sum(len(c[0]) for c in model.calls) == 80  # every text answered exactly once


def test_open_after_close_takes_work_again(make_batcher, model):
    batcher = make_batcher(max_wait_s=0.0)
    assert batcher.submit(model, ["before"]).result(GIVE_UP_S) == answer(["before"])
    batcher.close(timeout=GIVE_UP_S)
    with pytest.raises(Overloaded):
        batcher.submit(model, ["while closed"])
    batcher.open()
    assert batcher.submit(model, ["after"]).result(GIVE_UP_S) == answer(["after"])
    assert batcher.submit(model, ["job"], background=True).result(GIVE_UP_S) == answer(["job"])
