"""``hsops serve`` for real: the supervisor and its replica processes on 127.0.0.1.

What only whole processes show: every inference pattern (real time, async, batch, the
Lambda-style handler) gives the same answer; past capacity requests are shed with
503/429 and ``Retry-After`` instead of hanging; a champion promoted under a steady
stream of requests is swapped in with no failed request; replicas scale up under load
and back down when idle; SIGTERM drains requests in flight; ``/metrics`` and the JSON
logs say what happened, without ever printing a key.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from hsops.platform.local import StateStore
from tests._procs import replica_pids
from tests._wait import wait_for

pytestmark = pytest.mark.integration

PROBES = ["HONDA MOTORCYCLE 150CC", "USED CLOTHING BALES", "RUBBER O RING GASKET", "AIR FILTER FOR TRUCK ENGINE",
          "70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]", "zzzz qqqq"]
ANSWER_FIELDS = ("hs_code", "confidence", "abstain", "level", "heading", "alternatives", "model_version")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``hsops serve`` in its own process; ``stop()`` drains it like Ctrl-C would."""

    def __init__(self, home: Path, *args: str, config: dict | None = None):
        self.home = home
        if config is not None:
            (home / "serving.json").write_text(json.dumps(config), encoding="utf-8")
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(home / "serve.out", "w+b")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "hsops.cli", "serve", "--port", str(self.port), *args],
                                     env={**os.environ, "HSOPS_HOME": str(home)}, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_ready(self) -> Serve:
        def up():
            if self.proc.poll() is not None:
                pytest.fail(f"hsops serve exited with {self.proc.returncode}:\n{self.output()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_for(up, timeout=90, what="hsops serve to answer /healthz")
        return self

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in replica_pids(self.home):  # a replica left behind would be a bug; do not leak it
            os.kill(pid, signal.SIGKILL)
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def serve(registered):
    started: list[Serve] = []

    def start(*args: str, config: dict | None = None) -> Serve:
        server = Serve(registered, *args, config=config)
        started.append(server)
        return server.wait_ready()
    yield start
    for server in started:
        server.stop()


def bearer(home: Path, *scopes: str) -> dict:
    plain, _ = StateStore(home).add_key("tests", scopes)
    return {"authorization": f"Bearer {plain}"}


def answers(predictions: list[dict]) -> list[dict]:
    return [{k: p[k] for k in ANSWER_FIELDS} for p in predictions]


def poll_job(base: str, job_id: str, headers: dict) -> dict:
    def ended():
        job = httpx.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=10).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None
    return wait_for(ended, timeout=60, what=f"job {job_id} to end")


# -- the four patterns --------------------------------------------------------------------------
def test_every_pattern_gives_the_same_answers(serve, registered, monkeypatch):
    server = serve()
    key = bearer(registered, "predict")
    realtime = httpx.post(f"{server.url}/v1/predict", json={"descriptions": PROBES, "top_k": 3}, timeout=30)
    assert realtime.status_code == 200, realtime.text
    expected = answers(realtime.json()["predictions"])
    assert {p["hs_code"] for p in expected[:4]} >= {"871120", "630900", "401693", "842131"}

    # async: 202 with a job id, then poll
    submitted = httpx.post(f"{server.url}/v1/predict/async", json={"descriptions": PROBES, "top_k": 3},
                           headers=key, timeout=30)
    assert submitted.status_code == 202, submitted.text
    job = poll_job(server.url, submitted.json()["job_id"], key)
    assert job["status"] == "succeeded", job
    assert answers(job["result"]["predictions"]) == expected

    # batch on inline descriptions and on a file in the object store
    from hsops.platform.local.backend import LocalBackend

    csv = "id,description\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(PROBES))
    LocalBackend(registered).objects.put("batch/probes.csv", csv.encode())
    for body in ({"descriptions": PROBES, "top_k": 3}, {"object_key": "batch/probes.csv", "top_k": 3}):
        submitted = httpx.post(f"{server.url}/v1/batch", json=body, headers=key, timeout=30)
        assert submitted.status_code == 202, submitted.text
        job = poll_job(server.url, submitted.json()["job_id"], key)
        assert job["status"] == "succeeded", job
        assert job["progress"]["rows_done"] == len(PROBES)
        lines = httpx.get(f"{server.url}/v1/jobs/{job['job_id']}/results", headers=key, timeout=30)
        records = [json.loads(line) for line in lines.text.splitlines()]
        assert [r["text"] for r in records] == PROBES
        assert answers(records) == expected

    # the same patterns from the command line, as a client of the server
    from tests.e2e._cli import run

    for extra in ([], ["--async", "--key", key["authorization"].split()[1]]):
        out = run(["predict", *PROBES, "--top-k", "3", "--server", server.url, "--json", *extra], registered)
        assert answers(json.loads(out.stdout)) == expected, extra
    refused = run(["predict", PROBES[0], "--server", server.url, "--async"], registered, check=False)
    assert refused.returncode != 0 and "401" in refused.stderr  # async needs a key
    batch_out = registered / "batch.jsonl"
    (registered / "probes.txt").write_text("\n".join(PROBES) + "\n", encoding="utf-8")
    run(["batch", str(registered / "probes.txt"), "--top-k", "3", "--out", str(batch_out)], registered)
    assert answers([json.loads(line) for line in batch_out.read_text().splitlines()]) == expected

    # the Lambda-style handler, on an API Gateway HTTP API event, in this process
    from hsops.serving import lambda_handler

    monkeypatch.setenv("HSOPS_HOME", str(registered))
    lambda_handler.reset()
    try:
        event = {"version": "2.0", "rawPath": "/v1/predict", "rawQueryString": "",
                 "headers": {"content-type": "application/json"},
                 "requestContext": {"http": {"method": "POST", "path": "/v1/predict"}},
                 "body": json.dumps({"descriptions": PROBES, "top_k": 3}), "isBase64Encoded": False}
        response = lambda_handler.handler(event, None)
    finally:
        lambda_handler.reset()
    assert response["statusCode"] == 200, response
    assert answers(json.loads(response["body"])["predictions"]) == expected


def test_an_async_job_calls_back_with_a_signed_status(serve, registered, receiver):
    from hsops.platform.local.jobs import callback_secret
    from hsops.serving.jobs import verify_signature

    server = serve()
    key = bearer(registered, "predict")
    submitted = httpx.post(f"{server.url}/v1/predict/async", headers=key, timeout=30,
                           json={"descriptions": PROBES[:2], "callback_url": f"{receiver.url}/done"})
    assert submitted.status_code == 202, submitted.text
    wait_for(lambda: receiver.received, timeout=60, what="the callback")
    _, body, signature = receiver.received[0]
    assert verify_signature(body, callback_secret(registered), signature)
    assert not verify_signature(body + b" ", callback_secret(registered), signature)
    status = json.loads(body)
    assert status["job_id"] == submitted.json()["job_id"] and status["status"] == "succeeded"
    # a callback to anywhere but the allow-list is refused before anything is queued
    refused = httpx.post(f"{server.url}/v1/predict/async", headers=key, timeout=30,
                         json={"descriptions": PROBES[:1], "callback_url": "http://169.254.169.254/latest"})
    assert refused.status_code == 422 and "not allowed" in refused.json()["message"]


# -- security over real HTTP -----------------------------------------------------------------
def test_keys_and_scopes_with_require_key(serve, registered):
    server = serve("--require-key")
    body = {"descriptions": PROBES[:1]}
    missing = httpx.post(f"{server.url}/v1/predict", json=body, timeout=10)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(f"{server.url}/v1/predict", json=body, timeout=10,
                       headers={"authorization": "Bearer hsk_0123456789ab_" + "A" * 43})
    assert wrong.status_code == 401
    feedback_only = httpx.post(f"{server.url}/v1/predict", json=body, timeout=10,
                               headers=bearer(registered, "feedback"))
    assert feedback_only.status_code == 403 and "predict" in feedback_only.json()["message"]
    assert httpx.post(f"{server.url}/v1/predict", json=body, timeout=10,
                      headers=bearer(registered, "predict")).status_code == 200
    assert httpx.post(f"{server.url}/v1/predict", json=body, timeout=10,
                      headers=bearer(registered, "admin")).status_code == 200
    # CORS is closed by default: a browser on another origin gets no permission
    preflight = httpx.options(f"{server.url}/v1/predict", timeout=10, headers={
        "origin": "https://evil.example", "access-control-request-method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_logs_are_json_with_request_ids_and_never_a_key(serve, registered):
    server = serve("--require-key")
    key = bearer(registered, "predict")
    secret = key["authorization"].split()[1]
    ok = httpx.post(f"{server.url}/v1/predict", json={"descriptions": PROBES[:1]}, headers=key, timeout=10)
    bad = httpx.post(f"{server.url}/v1/predict", json={"descriptions": PROBES[:1]}, timeout=10,
                     headers={"x-api-key": secret[:-4] + "AAAA"})
    assert ok.status_code == 200 and bad.status_code == 401
    ids = {ok.headers["x-request-id"], bad.headers["x-request-id"]}
    log = server.home / "logs" / "serving.log"

    def logged():
        records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        return records if ids <= {r.get("request_id") for r in records} else None
    records = wait_for(logged, timeout=30, what="both requests in the JSON log")
    access = [r for r in records if r.get("request_id") == ok.headers["x-request-id"]]
    assert access[0]["status"] == 200 and access[0]["key_id"] == secret.split("_")[1]
    text = log.read_text() + server.output()
    assert secret not in text and secret[:-4] not in text


# -- load: shedding, hot swap, scaling, drain ----------------------------------------------------
def _post_many(url: str, bodies: list[dict], workers: int) -> list[httpx.Response | Exception]:
    def one(body):
        try:
            return httpx.post(f"{url}/v1/predict", json=body, timeout=60)
        except httpx.HTTPError as exc:
            return exc
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, bodies))


def test_past_capacity_requests_are_shed_with_retry_after_not_left_to_time_out(serve):
    config = {"replicas": {"min": 1, "max": 1}, "limits": {"max_items": 8},
              "batching": {"max_batch": 8, "max_queue": 8}}
    server = serve(config=config)
    body = {"descriptions": PROBES + PROBES[:2], "explain": True}  # occlusion: many model calls each
    results = _post_many(server.url, [body] * 48, workers=24)
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, errors[:3]
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {200, 503}, statuses
    assert 200 in statuses and 503 in statuses, statuses
    shed = next(r for r in results if r.status_code == 503)
    assert int(shed.headers["retry-after"]) >= 1 and shed.json()["error"] == "overloaded"
    metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
    assert 'hsops_shed_requests_total{reason="queue_full"}' in metrics


def test_a_promotion_under_a_steady_stream_fails_no_request(serve, registered, golden_artifact, registrar):
    server = serve()
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def stream():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = client.post(f"{server.url}/v1/predict", json={"descriptions": PROBES[:2]})
                    seen.append((r.status_code, r.json().get("model_version")))
                except httpx.HTTPError as exc:
                    seen.append((-1, repr(exc)))
    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(seen) > 50, timeout=60, what="the stream to flow")
        registrar(registered, golden_artifact, "2", calibration={"temperature": 1.5, "threshold": 0.4,
                                                                 "target_accuracy": 0.9})
        wait_for(lambda: any(v and v.endswith("2") for _, v in seen[-20:]), timeout=60,
                 what="the new champion to be served")
        count = len(seen)
        wait_for(lambda: len(seen) > count + 50, timeout=60, what="more requests after the swap")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failed = [s for s in seen if s[0] != 200]
    assert not failed, failed[:5]
    versions = [v for _, v in seen]
    assert versions[0].endswith("1") and versions[-1].endswith("2")
    first_new = next(i for i, v in enumerate(versions) if v.endswith("2"))
    assert all(v.endswith("2") for v in versions[first_new + 6:])  # no going back (3 streams in flight)


def test_replicas_scale_up_under_load_and_back_down_when_idle(serve, registered):
    config = {"replicas": {"min": 1, "max": 2, "scale_up_utilization": 0.3, "scale_down_utilization": 0.05,
                           "scale_up_after_s": 0.5, "scale_down_after_s": 2.0}}
    server = serve(config=config)
    assert len(replica_pids(registered)) == 1
    stop = threading.Event()
    statuses: list[int] = []

    def load():
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                statuses.append(client.post(f"{server.url}/v1/predict",
                                            json={"descriptions": PROBES, "explain": True}).status_code)
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(replica_pids(registered)) == 2, timeout=90, what="a second replica under load")
        wait_for(lambda: 'hsops_replicas 2.0' in httpx.get(f"{server.url}/metrics", timeout=10).text,
                 timeout=90, what="two ready replicas in /metrics")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    wait_for(lambda: len(replica_pids(registered)) == 1, timeout=90, what="scale down to the minimum when idle")
    assert statuses and set(statuses) == {200}
    out = server.output()
    assert "scale_up" in out and "scale_down" in out


def test_sigterm_drains_requests_in_flight_and_leaves_no_process(serve, registered):
    server = serve()
    body = {"descriptions": PROBES * 10, "explain": True}  # long enough to be in flight at the signal
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(httpx.post, f"{server.url}/v1/predict", json=body, timeout=120) for _ in range(4)]
        wait_for(lambda: "hsops_queue_depth" in httpx.get(f"{server.url}/metrics", timeout=10).text,
                 timeout=30, what="metrics")
        time.sleep(0.2)  # let the requests reach the replica; not a timing assertion
        server.proc.send_signal(signal.SIGTERM)
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200] * 4
    assert server.proc.wait(60) == 0
    wait_for(lambda: not replica_pids(registered), timeout=30, what="replicas to exit")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{server.url}/healthz", timeout=2)


def test_metrics_in_prometheus_text_format(serve):
    server = serve()
    assert httpx.post(f"{server.url}/v1/predict", json={"descriptions": PROBES}, timeout=30).status_code == 200
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics", timeout=10).text)}
    for name in ("hsops_http_requests", "hsops_request_duration_seconds", "hsops_predictions", "hsops_abstentions",
                 "hsops_batch_size_descriptions", "hsops_replicas", "hsops_shed_requests", "hsops_queue_depth_descriptions",
                 "hsops_replica_resident_bytes"):
        assert name in families, sorted(families)
    latency = [s for s in families["hsops_request_duration_seconds"].samples if s.name.endswith("_count")]
    assert any(s.labels.get("variant") == "champion" and s.labels.get("model", "").endswith("1") and s.value >= 1
               for s in latency)
    predicted = sum(s.value for s in families["hsops_predictions"].samples if s.name.endswith("_total"))
    abstained = sum(s.value for s in families["hsops_abstentions"].samples if s.name.endswith("_total"))
    assert predicted == len(PROBES) and 1 <= abstained < predicted  # the gibberish probe abstains


def test_admission_control_sheds_before_the_backlog_builds(serve):
    server = serve(config={"replicas": {"min": 1, "max": 1}, "batching": {"max_in_flight": 2}})
    body = {"descriptions": PROBES[:2], "explain": True}
    results = _post_many(server.url, [body] * 48, workers=24)
    assert not [r for r in results if isinstance(r, Exception)]
    shed = [r for r in results if r.status_code == 503]
    assert shed and all(r.status_code in (200, 503) for r in results)
    assert {d["reason"] for r in shed for d in r.json()["details"]} == {"in_flight"}
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_clients_that_connect_at_once_are_spread_over_the_replicas(serve, registered):
    import http.client

    server = serve(config={"replicas": {"min": 2, "max": 2}})
    wait_for(lambda: 'hsops_replicas 2.0' in httpx.get(f"{server.url}/metrics", timeout=10).text,
             timeout=90, what="two ready replicas")
    pids = replica_pids(registered)
    before = {pid: _cpu_seconds(pid) for pid in pids}
    # both keep-alive connections opened back to back, as a client pool does: the replica
    # whose event loop wakes first accepts both
    connections = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=60) for _ in range(4)]
    for conn in connections:
        conn.connect()
    stop = threading.Event()
    statuses: list[int] = []
    body = json.dumps({"descriptions": PROBES * 40})

    def hammer(conn):
        while not stop.is_set():
            conn.request("POST", "/v1/predict", body=body, headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
            if response.getheader("connection", "").lower() == "close":
                conn.close()  # a replica moving this client: the next request reconnects
    threads = [threading.Thread(target=hammer, args=(c,)) for c in connections]
    for t in threads:
        t.start()
    time.sleep(6)  # a stretch of load; the assertion is on where the CPU went, not on time
    stop.set()
    for t in threads:
        t.join(60)
    for conn in connections:
        conn.close()
    used = sorted(_cpu_seconds(pid) - before[pid] for pid in pids)
    assert set(statuses) == {200}
    assert used[0] > 0.25 * used[1], used  # the less busy replica did a real share of the work
