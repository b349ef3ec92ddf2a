"""Batch and async jobs on the local platform, in this process: the real object store,
event bus, state store, micro-batcher and Predictor of a registered model.

Jobs are run with ``run_now`` / ``run_message`` (the runner's own steps, driven from the
test so an interruption lands exactly where wanted) or by the runner threads.
"""

from __future__ import annotations

import csv
import gzip
import io
import json

import pytest
from fastapi.testclient import TestClient

from hsops.platform.local.backend import LocalBackend
from hsops.platform.local.jobs import JOB_QUEUE, LocalJobs, callback_secret
from hsops.platform.local.server import build_app
from hsops.platform.local.state_store import StateStore
from hsops.serving import Predictor
from hsops.serving.batcher import MicroBatcher
from hsops.serving.config import Jobs as JobsConfig
from hsops.serving.config import Limits
from hsops.serving.jobs import (
    JobError,
    JobNotFound,
    check_callback_url,
    verify_signature,
)
from tests._wait import wait_for

ANSWER_KEYS = ("hs_code", "hs_description", "in_hs2022", "confidence", "abstain", "level", "heading",
               "alternatives", "model_version")
GOOD = ["70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]", "HONDA MOTORCYCLE 150CC", "USED CLOTHING BALES",
        "RUBBER O RING GASKET", "AIR FILTER FOR TRUCK ENGINE", "zzzz qqqq", "PP PLASTIC CUPS 250ML"]


class ListSink:
    def __init__(self, on_log=None):
        self.calls: list[list[dict]] = []
        self.on_log = on_log

    def log_predictions(self, rows: list[dict]) -> None:
        self.calls.append(rows)
        if self.on_log is not None:
            self.on_log(rows)

    @property
    def request_ids(self) -> list[str]:
        return [r["request_id"] for rows in self.calls for r in rows]


class Env:
    def __init__(self, home):
        self.home = home
        self.backend = LocalBackend(home)
        self.state = StateStore(home)
        self.predictor = Predictor.from_registry(home)
        self.batcher = MicroBatcher(max_batch=4)  # small: a chunk takes several model calls

    def jobs(self, *, chunk_rows: int = 2, max_rows: int = 1000, **config) -> LocalJobs:
        return LocalJobs(self.home, self.backend, self.state, jobs=JobsConfig(chunk_rows=chunk_rows, **config),
                         limits=Limits(max_batch_items=max_rows))

    def source(self):
        return self.predictor

    def expected(self, texts: list[str], top_k: int = 5) -> list[dict]:
        """What the Predictor says directly, in the fields a predictions file keeps."""
        return [{k: p.to_dict()[k] for k in ANSWER_KEYS} for p in self.predictor.predict(texts, top_k=top_k)]

    def records(self, job: dict) -> list[dict]:
        data = self.backend.objects.get(job["output_key"])
        return [json.loads(line) for line in data.decode("utf-8").splitlines()]

    def run(self, jobs: LocalJobs, job: dict, sink=None) -> dict:
        return jobs.run_now(job["job_id"], self.source, self.batcher, sink)


@pytest.fixture
def env(registered):
    env = Env(registered)
    yield env
    env.batcher.close()
    env.state.close()


def put_csv(env: Env, key: str, rows: list[list[str]], header=("line_no", "goods_description")) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    env.backend.objects.put(key, out.getvalue().encode("utf-8"))
    return key


def answers_of(records: list[dict]) -> list[dict]:
    return [{k: r[k] for k in ANSWER_KEYS} for r in records]


# -- batch --------------------------------------------------------------------------------------
def test_batch_on_a_csv_object_answers_every_row_in_order(env):
    rows = [["1", GOOD[0]], ["2", ""], ["3", GOOD[1]], ["4", "----"], ["5", GOOD[2], "extra field"],
            ["6", GOOD[3]], ["7", GOOD[4]], ["8", GOOD[5]], ["9", GOOD[6]]]
    key = put_csv(env, "batch/catalogue.csv", rows)
    jobs = env.jobs(chunk_rows=2)
    sink = ListSink()
    job = jobs.submit("batch", {"object_key": key, "top_k": 3}, publish=False)
    assert job["status"] == "queued" and job["kind"] == "batch"
    done = env.run(jobs, job, sink)
    assert done["status"] == "succeeded", done
    assert done["progress"] == {"rows_done": 9, "rows_total": 9, "rows_failed": 3, "fraction": 1.0}
    assert done["model_version"] == "hs-classifier@1" and done["started_at"] and done["ended_at"]

    records = env.records(done)
    assert [r["row"] for r in records] == list(range(1, 10))  # one per input row, in order
    bad = {r["row"]: r for r in records if "error" in r}
    assert set(bad) == {2, 4, 5}  # blank, no letters, a broken row: reported, not dropped
    assert all(r["error"] and "hs_code" not in r for r in bad.values())
    good = [r for r in records if "error" not in r]
    texts = [GOOD[0], GOOD[1], GOOD[3], GOOD[4], GOOD[5], GOOD[6]]
    assert [r["text"] for r in good] == texts
    assert answers_of(good) == env.expected(texts, top_k=3)
    assert all(len(r["alternatives"]) == 2 for r in good)
    assert [r["request_id"] for r in good] == [f"{job['job_id']}-{r['row']}" for r in good]
    # every answered row was logged once under its request id
    assert sorted(sink.request_ids) == sorted(r["request_id"] for r in good)
    # only the predictions file is left: the parts were assembled and removed
    assert [o.key for o in env.backend.objects.list(f"jobs/{job['job_id']}/")] == [done["output_key"]]


def test_batch_on_inline_descriptions(env):
    texts = [GOOD[4], "  ", GOOD[0], "a" * 5000, GOOD[1]]
    jobs = env.jobs(chunk_rows=3)
    job = jobs.submit("batch", {"descriptions": list(texts), "top_k": 2}, publish=False)
    assert job["progress"]["rows_total"] == 5
    done = env.run(jobs, job)
    assert done["status"] == "succeeded", done
    records = env.records(done)
    assert [r["text"] for r in records] == texts
    assert [("error" in r) for r in records] == [False, True, False, True, False]
    assert "5000" in records[3]["error"]  # says which limit
    assert answers_of([records[i] for i in (0, 2, 4)]) == env.expected([GOOD[4], GOOD[0], GOOD[1]], top_k=2)


def test_text_that_is_not_valid_unicode_is_a_row_error_not_a_failed_submission(registered):
    app = build_app(registered)
    runtime = app.state.runtime
    plain, _ = runtime.state.add_key("t", ["predict"])
    try:
        # a lone surrogate is a legal JSON string escape but not encodable text
        body = b'{"descriptions": ["AIR FILTER", "AB\\ud800CD", "\\u4e2d\\u6587 PLASTIC CUPS"]}'
        submitted = TestClient(app).post("/v1/batch", content=body, headers={
            "authorization": f"Bearer {plain}", "content-type": "application/json"})
        assert submitted.status_code == 202, submitted.text
        done = runtime.jobs.run_now(submitted.json()["job_id"], runtime.source, app.state.batcher)
        assert done["status"] == "succeeded", done
        records = [json.loads(line) for line in runtime.backend.objects.get(done["output_key"]).splitlines()]
        assert [r["row"] for r in records] == [1, 2, 3]
        assert "error" not in records[0] and "surrogate" in records[1]["error"]
        assert records[2]["text"] == "中文 PLASTIC CUPS" and "error" not in records[2]  # other text intact
    finally:
        runtime.stop()


@pytest.mark.parametrize("name, content", [
    ("lines.txt", "\n".join(GOOD) + "\n\n"),
    ("lines.txt.gz", gzip.compress(("\n".join(GOOD) + "\n").encode())),
    ("rows.jsonl", "".join(json.dumps({"description": t, "id": i}) + "\n" for i, t in enumerate(GOOD))),
])
def test_batch_on_other_formats_gives_the_same_answers(env, name, content):
    env.backend.objects.put(f"batch/{name}", content if isinstance(content, bytes) else content.encode())
    jobs = env.jobs(chunk_rows=4)
    done = env.run(jobs, jobs.submit("batch", {"object_key": f"batch/{name}"}, publish=False))
    assert done["status"] == "succeeded", done
    records = env.records(done)
    assert [r["text"] for r in records] == GOOD
    assert answers_of(records) == env.expected(GOOD)


@pytest.mark.parametrize("name, content", [
    ("blank.csv", f"description\n{GOOD[0]}\n\n   \n{GOOD[1]}\n\n\n"),
    ("blank.txt", f"{GOOD[0]}\n\n   \n{GOOD[1]}\n\n"),
    ("blank.jsonl", json.dumps({"description": GOOD[0]}) + "\n\n  \n" + json.dumps({"description": GOOD[1]}) + "\n\n"),
])
def test_blank_lines_inside_a_file_are_rows_with_an_error(env, name, content):
    """Answered line for line: a blank row in the middle keeps its place (and the rows
    after it their numbers); blank lines after the last row are not rows."""
    env.backend.objects.put(f"batch/{name}", content.encode())
    jobs = env.jobs()
    done = env.run(jobs, jobs.submit("batch", {"object_key": f"batch/{name}"}, publish=False))
    records = env.records(done)
    assert [r["row"] for r in records] == [1, 2, 3, 4]
    assert [r["text"] for r in records] == [GOOD[0], None, None, GOOD[1]]
    assert records[1]["error"] == records[2]["error"] == "the row is blank"
    assert done["progress"]["rows_failed"] == 2 and done["progress"]["rows_done"] == 4


def test_batch_results_through_the_api_are_the_predictions_file(registered):
    app = build_app(registered)
    runtime = app.state.runtime
    plain, _ = runtime.state.add_key("t", ["predict"])
    headers = {"authorization": f"Bearer {plain}"}
    try:
        client = TestClient(app)
        submitted = client.post("/v1/batch", json={"descriptions": GOOD, "top_k": 3}, headers=headers)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        assert client.get(f"/v1/jobs/{job_id}/results", headers=headers).status_code == 409  # not yet
        runtime.jobs.start_runners(runtime.source, app.state.batcher, runtime.sink)
        job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"]
                       in ("succeeded", "failed") and j, timeout=60, what="the batch job")
        assert job["status"] == "succeeded", job
        results = client.get(f"/v1/jobs/{job_id}/results", headers=headers)
        assert results.status_code == 200 and results.headers["content-type"].startswith("application/x-ndjson")
        assert results.content == runtime.backend.objects.get(job["output_key"])
        assert [json.loads(line)["text"] for line in results.text.splitlines()] == GOOD
    finally:
        runtime.stop()


# -- async ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("explain", [False, True])
def test_an_async_result_is_the_real_time_answer(registered, explain):
    app = build_app(registered)
    runtime = app.state.runtime
    plain, _ = runtime.state.add_key("t", ["predict"])
    headers = {"authorization": f"Bearer {plain}"}
    body = {"descriptions": GOOD, "top_k": 4, "explain": explain}
    try:
        client = TestClient(app)
        realtime = client.post("/v1/predict", json=body)
        assert realtime.status_code == 200, realtime.text
        submitted = client.post("/v1/predict/async", json=body, headers=headers)
        assert submitted.status_code == 202, submitted.text
        assert submitted.json()["status"] == "queued" and "result" not in submitted.json()
        job_id = submitted.json()["job_id"]
        runtime.jobs.start_runners(runtime.source, app.state.batcher, runtime.sink)
        job = wait_for(lambda: (j := client.get(f"/v1/jobs/{job_id}", headers=headers).json())["status"]
                       in ("succeeded", "failed") and j, timeout=60, what="the async job")
        assert job["status"] == "succeeded", job
        def strip(predictions):
            return [{k: v for k, v in p.items() if k != "request_id"} for p in predictions]
        assert strip(job["result"]["predictions"]) == strip(realtime.json()["predictions"])
        assert job["result"]["model_version"] == realtime.json()["model_version"]
        if explain:
            assert all(p["explanation"] for p in job["result"]["predictions"][:5])
    finally:
        runtime.stop()


# -- interruption, cancellation, failures --------------------------------------------------------
def test_an_interrupted_job_resumes_and_keeps_the_parts_it_has(env):
    texts = GOOD[:6]
    first = env.jobs(chunk_rows=2)
    job = first.submit("batch", {"descriptions": list(texts)})  # published on the bus
    (message,) = env.backend.events.receive(JOB_QUEUE, visibility_timeout=60)
    first.stop()  # the replica is told to stop: the job ends after the chunk in hand
    first_sink = ListSink()
    first.run_message(message, env.source, env.batcher, first_sink)
    stopped = first.get(job["job_id"])
    assert stopped["status"] == "running" and stopped["progress"]["rows_done"] == 2
    assert len(first_sink.request_ids) == 2
    parts = [o.key for o in env.backend.objects.list(f"jobs/{job['job_id']}/parts/")]
    assert len(parts) == 1
    # mark the kept part, to see below that it is reused rather than answered again
    marked = [json.loads(line) for line in env.backend.objects.get(parts[0]).splitlines()]
    for record in marked:
        record["kept"] = True
    env.backend.objects.put(parts[0], "".join(json.dumps(r) + "\n" for r in marked).encode())

    # another replica takes the message up again
    (again,) = env.backend.events.receive(JOB_QUEUE, visibility_timeout=60)
    assert again.body == {"job_id": job["job_id"]}
    assert again.receive_count == 1  # a graceful stop is a handover, not a failed delivery
    second = env.jobs(chunk_rows=2)
    second_sink = ListSink()
    second.run_message(again, env.source, env.batcher, second_sink)
    done = second.get(job["job_id"])
    assert done["status"] == "succeeded" and done["progress"]["rows_done"] == 6
    records = env.records(done)
    assert [r["text"] for r in records] == texts
    assert [r.get("kept", False) for r in records] == [True, True, False, False, False, False]
    assert answers_of(records) == env.expected(texts)
    # the rows of the kept part were not answered a second time
    assert len(second_sink.request_ids) == 4
    assert not set(first_sink.request_ids) & set(second_sink.request_ids)
    assert env.backend.events.depth(JOB_QUEUE)["visible"] + env.backend.events.depth(JOB_QUEUE)["in_flight"] == 0


def test_a_stopped_job_is_not_used_up_by_repeated_restarts(env):
    """Graceful stops (a deploy, a scale-down) are not failures: however many happen, the
    job is resumed to the end, never left 'running' with its message dead-lettered."""
    texts = GOOD[:6]
    job = env.jobs(chunk_rows=1).submit("batch", {"descriptions": list(texts)})
    for _ in range(4):  # more restarts than the bus's max_receives
        (message,) = env.backend.events.receive(JOB_QUEUE, visibility_timeout=60, max_receives=3)
        replica = env.jobs(chunk_rows=1)
        replica.max_receives = 3
        replica.stop()
        replica.run_message(message, env.source, env.batcher, None)
    (message,) = env.backend.events.receive(JOB_QUEUE, visibility_timeout=60, max_receives=3)
    env.jobs(chunk_rows=1).run_message(message, env.source, env.batcher, None)
    done = env.jobs().get(job["job_id"])
    assert done["status"] == "succeeded", done
    assert [r["text"] for r in env.records(done)] == texts


def test_a_job_whose_runners_keep_dying_fails_with_the_reason(env):
    """Runners that vanish mid-job (their lease runs out) three times: the bus buries the
    message, and the job is failed with that reason instead of staying 'running'."""
    job = env.jobs().submit("batch", {"descriptions": GOOD[:2]})
    for _ in range(3):  # claimed, never settled, lease gone at once: a runner killed -9
        assert env.backend.events.receive(JOB_QUEUE, visibility_timeout=0, max_receives=3)
    assert env.backend.events.receive(JOB_QUEUE, visibility_timeout=0, max_receives=3) == []  # buried now
    jobs = env.jobs()
    jobs._fail_buried()
    failed = jobs.get(job["job_id"])
    assert failed["status"] == "failed" and "dead-lettered" in failed["error"], failed


def test_cancel_a_queued_job(env):
    jobs = env.jobs()
    job = jobs.submit("batch", {"descriptions": GOOD[:3]})
    cancelled = jobs.cancel(job["job_id"])
    assert cancelled["status"] == "cancelled" and cancelled["ended_at"]
    (message,) = env.backend.events.receive(JOB_QUEUE, visibility_timeout=60)
    sink = ListSink()
    jobs.run_message(message, env.source, env.batcher, sink)  # the runner drops it
    assert jobs.get(job["job_id"])["status"] == "cancelled"
    assert sink.calls == [] and jobs.get(job["job_id"])["output_key"] is None
    assert env.backend.events.receive(JOB_QUEUE, visibility_timeout=60) == []  # acked, not retried


def test_cancel_a_running_job_stops_it_after_the_chunk_in_hand(env):
    jobs = env.jobs(chunk_rows=2)
    job = jobs.submit("batch", {"descriptions": GOOD[:6]}, publish=False)
    sink = ListSink(on_log=lambda rows: jobs.cancel(job["job_id"]))  # cancelled while chunk 1 is logged
    final = env.run(jobs, job, sink)
    assert final["status"] == "cancelled"
    assert final["progress"]["rows_done"] == 2 and final["output_key"] is None
    assert len(sink.calls) == 1  # no chunk answered after the cancel


def test_cancelling_a_finished_job_leaves_it_as_it_is(env):
    jobs = env.jobs()
    done = env.run(jobs, jobs.submit("batch", {"descriptions": GOOD[:2]}, publish=False))
    assert jobs.cancel(done["job_id"])["status"] == "succeeded"
    with pytest.raises(JobNotFound):
        jobs.cancel("job-does-not-exist")


@pytest.mark.parametrize("key", ["jobs/job-0123456789abcdef/input.jsonl", "inbox/declarations.csv",
                                 "datasets/x.csv", "batch"])
def test_a_batch_reads_only_objects_put_under_batch(env, key):
    """Other prefixes hold other keys' job inputs and results, datasets and models: a
    predict key must not read them through a batch job."""
    env.backend.objects.put(key, f"text\n{GOOD[0]}\n".encode())
    with pytest.raises(JobError, match="under batch/"):
        env.jobs().submit("batch", {"object_key": key}, publish=False)


@pytest.mark.parametrize("kind", ["async", "batch"])
def test_job_answers_are_counted_under_their_own_pattern(env, kind):
    from hsops.serving.metrics import REGISTRY

    def count(pattern: str) -> float:
        return REGISTRY.get_sample_value("hsops_predictions_total", {
            "model": "hs-classifier@1", "variant": "champion", "pattern": pattern}) or 0.0
    before = {p: count(p) for p in ("async", "batch")}
    jobs = env.jobs()
    env.run(jobs, jobs.submit(kind, {"descriptions": GOOD[:3] + ["!!!"]}, publish=False))
    other = "batch" if kind == "async" else "async"
    assert count(kind) - before[kind] == 3 and count(other) == before[other]  # the "!!!" row is no answer


def test_a_missing_input_object_is_refused_at_submission(env):
    with pytest.raises(JobError, match="object_key"):
        env.jobs().submit("batch", {"object_key": "batch/not-there.csv"}, publish=False)


def test_an_input_object_gone_before_the_run_fails_the_job_with_the_reason(env):
    key = put_csv(env, "batch/soon-gone.csv", [["1", GOOD[0]]])
    jobs = env.jobs()
    job = jobs.submit("batch", {"object_key": key})
    env.backend.objects.delete(key)
    (message,) = env.backend.events.receive(JOB_QUEUE, visibility_timeout=60)
    jobs.run_message(message, env.source, env.batcher, None)
    failed = jobs.get(job["job_id"])
    assert failed["status"] == "failed" and "gone" in failed["error"] and key in failed["error"]
    # not retried: it went to the dead letters at once, with the reason
    assert env.backend.events.receive(JOB_QUEUE, visibility_timeout=60) == []
    (dead,) = env.backend.events.dead_letters(JOB_QUEUE)
    assert dead.body == {"job_id": job["job_id"]} and "gone" in dead.error


@pytest.mark.parametrize("name, content, fragment", [
    ("garbage.parquet", b"PAR1 this is not parquet at all", "Parquet"),
    ("broken.csv.gz", b"\x1f\x8b\x08\x00 truncated", "gzip"),
    ("empty.csv", b"", "empty"),
    ("header-only.csv", b"goods_description\n", "no data rows"),
    ("no-text-column.csv", b"a,b\n1,2\n", "description"),
    ("catalogue.xlsx", b"PK\x03\x04", "format"),
])
def test_an_unreadable_input_fails_the_job_with_the_reason(env, name, content, fragment):
    env.backend.objects.put(f"batch/{name}", content)
    jobs = env.jobs()
    failed = env.run(jobs, jobs.submit("batch", {"object_key": f"batch/{name}"}, publish=False))
    assert failed["status"] == "failed", failed
    assert fragment.lower() in failed["error"].lower(), failed["error"]
    assert failed["ended_at"] and failed["output_key"] is None


def test_a_file_with_more_rows_than_the_limit_is_refused(env):
    key = put_csv(env, "batch/big.csv", [[str(i), f"PLASTIC CUPS {i}"] for i in range(7)])
    jobs = env.jobs(max_rows=5)
    failed = env.run(jobs, jobs.submit("batch", {"object_key": key}, publish=False))
    assert failed["status"] == "failed" and "more than 5 rows" in failed["error"]
    assert failed["output_key"] is None
    at_limit = put_csv(env, "batch/ok.csv", [[str(i), f"PLASTIC CUPS {i}"] for i in range(5)])
    assert env.run(jobs, jobs.submit("batch", {"object_key": at_limit}, publish=False))["status"] == "succeeded"


def test_too_many_inline_descriptions_are_422_over_the_api(registered):
    (registered / "serving.json").write_text(json.dumps({"limits": {"max_batch_items": 3}}), encoding="utf-8")
    app = build_app(registered)
    try:
        plain, _ = app.state.runtime.state.add_key("t", ["predict"])
        response = TestClient(app).post("/v1/batch", json={"descriptions": GOOD[:4]},
                                        headers={"authorization": f"Bearer {plain}"})
        assert response.status_code == 422 and "3" in response.json()["message"]
    finally:
        app.state.runtime.stop()


# -- callbacks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data",
    "https://example.com/hook",
    "http://localhost.evil.example/hook",
    "http://127.0.0.1@evil.example/hook",
    "http://user:pass@127.0.0.1/hook",
    "file:///etc/passwd",
    "ftp://127.0.0.1/x",
    "http://127.0.0.1:99999/x",
    "http://127.0.0.1:0/done",
    "http://[::1",
    "http://[zz]/x",
    "not a url",
    "",
])
def test_a_callback_url_off_the_allow_list_is_refused(env, url):
    with pytest.raises(JobError):
        env.jobs().submit("async", {"descriptions": GOOD[:1], "callback_url": url}, publish=False)
    assert env.state.db.conn().execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0


def test_a_callback_url_off_the_allow_list_is_422_over_the_api(registered):
    app = build_app(registered)
    try:
        plain, _ = app.state.runtime.state.add_key("t", ["predict"])
        client = TestClient(app)
        for path in ("/v1/predict/async", "/v1/batch"):
            response = client.post(path, json={"descriptions": GOOD[:1], "callback_url": "http://10.0.0.1/x"},
                                   headers={"authorization": f"Bearer {plain}"})
            assert response.status_code == 422 and "not allowed" in response.json()["message"]
    finally:
        app.state.runtime.stop()


def test_the_allow_list_is_a_setting():
    assert check_callback_url("https://hooks.internal:8443/done", ("hooks.internal",))
    with pytest.raises(JobError):
        check_callback_url("http://127.0.0.1/done", ("hooks.internal",))


@pytest.mark.parametrize("kind", ["async", "batch"])
def test_a_callback_gets_the_signed_status(env, receiver, kind):
    jobs = env.jobs()
    job = jobs.submit(kind, {"descriptions": GOOD[:3], "callback_url": f"{receiver.url}/done?job=1"},
                      publish=False)
    done = env.run(jobs, job)
    assert done["status"] == "succeeded"
    (path, body, signature), = receiver.received
    assert path == "/done?job=1"
    assert verify_signature(body, callback_secret(env.home), signature)
    assert not verify_signature(body + b" ", callback_secret(env.home), signature)
    assert not verify_signature(body, b"another secret", signature)
    status = json.loads(body)
    assert status["job_id"] == job["job_id"] and status["status"] == "succeeded"
    assert "key_id" not in status and "callback" not in status
    assert status["sent_at"]  # signed with the body: an old call replayed can be told apart
    if kind == "async":
        assert [p["hs_code"] for p in status["result"]["predictions"]] == [
            e["hs_code"] for e in env.expected(GOOD[:3])]
    recorded = jobs.get(job["job_id"])["callback"]
    assert recorded["delivered"] is True and recorded["status"] == 204 and recorded["attempts"] == 1


def test_a_failed_job_calls_back_too(env, receiver):
    jobs = env.jobs(max_rows=1)
    done = env.run(jobs, jobs.submit("batch", {"descriptions": GOOD[:3], "callback_url": receiver.url},
                                     publish=False))
    assert done["status"] == "failed"
    (_, body, signature), = receiver.received
    assert verify_signature(body, callback_secret(env.home), signature)
    assert json.loads(body)["status"] == "failed" and "more than 1 rows" in json.loads(body)["error"]


def test_a_receiver_that_fails_is_retried_and_the_outcome_recorded(env, receiver):
    receiver.status["code"] = 503
    jobs = env.jobs(callback_attempts=2)
    done = env.run(jobs, jobs.submit("async", {"descriptions": GOOD[:1], "callback_url": receiver.url},
                                     publish=False))
    assert done["status"] == "succeeded"  # the predictions stand whatever the receiver does
    assert len(receiver.received) == 2
    recorded = jobs.get(done["job_id"])["callback"]
    assert recorded["delivered"] is False and recorded["status"] == 503 and recorded["attempts"] == 2


def test_a_receiver_that_hangs_does_not_hold_up_other_jobs(env):
    """Runners hand callbacks to a delivery pool: a job queued behind one whose receiver
    never answers still runs at once, and the hanging callback shows as pending."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are accepted by the kernel and never answered
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/done"
    jobs = env.jobs(callback_attempts=2, callback_timeout_s=30.0)
    try:
        hanging = jobs.submit("async", {"descriptions": GOOD[:1], "callback_url": url})
        plain = jobs.submit("async", {"descriptions": GOOD[1:2]})
        jobs.start_runners(env.source, env.batcher)
        wait_for(lambda: jobs.get(plain["job_id"])["status"] == "succeeded", timeout=30,
                 what="the job queued behind a hanging callback")
        assert jobs.get(hanging["job_id"])["status"] == "succeeded"
        callback = jobs.get(hanging["job_id"])["callback"]
        assert callback["pending"] is True and callback["delivered"] is False  # still waiting for its receiver
        silent.close()  # the receiver goes away: the delivery fails fast now and is recorded
        final = wait_for(lambda: not (c := jobs.get(hanging["job_id"])["callback"])["pending"] and c,
                         timeout=60, what="the hanging callback's outcome")
        assert final["delivered"] is False and final["attempts"] == 2 and final["error"]
    finally:
        jobs.stop()
        silent.close()


def test_a_callback_left_pending_by_a_dead_replica_is_delivered_again(env, receiver):
    jobs = env.jobs()
    job = jobs.submit("async", {"descriptions": GOOD[:1], "callback_url": receiver.url}, publish=False)
    env.run(jobs, job)
    assert len(receiver.received) == 1
    # as a replica killed mid-delivery leaves it: pending, long ago
    jobs._update(job["job_id"], callback=json.dumps({"url": receiver.url, "pending": True, "delivered": False,
                                                     "at": "2000-01-01T00:00:00.000+00:00"}))
    jobs._redeliver_stale()
    wait_for(lambda: len(receiver.received) == 2, timeout=10, what="the redelivery")
    wait_for(lambda: jobs.get(job["job_id"])["callback"]["delivered"], timeout=10, what="the outcome")
    jobs._redeliver_stale()  # delivered now: not sent a third time
    jobs.stop()
    assert len(receiver.received) == 2


def test_the_callback_secret_is_made_once_and_kept_private(env):
    first = callback_secret(env.home)
    assert first == callback_secret(env.home) and len(first) >= 32
    assert (env.home / "callback.secret").stat().st_mode & 0o077 == 0
