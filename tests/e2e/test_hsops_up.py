"""``hsops up`` as a user runs it: a child process with the real HTTP server on 127.0.0.1.
A file copied into the inbox becomes a registered model with no other command typed;
``POST /v1/pipelines`` starts a run; Ctrl-C (SIGINT) stops everything it started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from tests._samples import sample_rows, write_csv
from tests._procs import replica_pids
from tests._wait import wait_for
from tests.e2e._cli import run

POLICY = {"min_rows": 20, "min_test_rows": 3, "max_cost_per_million_usd": 100.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pids(home) -> list[int]:
    """Worker processes of this home still alive (their logs are named by pid)."""
    logs = home / "logs" / "workers"
    pids = [int(p.stem) for p in logs.glob("*.log")] if logs.is_dir() else []
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


@pytest.fixture
def platform(hsops_home, tmp_path):
    (hsops_home / "pipeline.json").write_text(json.dumps({"candidates": [{"kind": "linear"}], "policy": POLICY}))
    port = free_port()
    log = open(tmp_path / "up.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "hsops.cli", "up", "--port", str(port), "--idle-timeout", "3"],
                            env={**os.environ, "HSOPS_HOME": str(hsops_home)}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            return httpx.get(f"{base}/v1/pipelines", timeout=2).status_code == 200
        except httpx.HTTPError:
            return proc.poll() is not None and pytest.fail((tmp_path / "up.log").read_text())
    wait_for(healthy, timeout=60, what="hsops up to listen")
    yield proc, base
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    for pid in worker_pids(hsops_home) + replica_pids(hsops_home):
        os.kill(pid, signal.SIGKILL)


def test_copying_a_file_into_the_inbox_gives_a_registered_model(platform, hsops_home, tmp_path):
    proc, base = platform
    source = write_csv(tmp_path / "declarations.csv", sample_rows())
    shutil.copy(source, hsops_home / "inbox" / "declarations.csv")  # what a user does

    def done():
        runs = json.loads(run(["pipeline", "list", "--json"], hsops_home).stdout)
        return runs if runs and runs[0]["status"] in ("SUCCEEDED", "FAILED") else None
    runs = wait_for(done, what="the run to finish")
    assert runs[0]["status"] == "SUCCEEDED", runs[0]
    assert runs[0]["trigger"] == "inbox" and runs[0]["outcome"]["alias"] == "champion"
    models = json.loads(run(["models", "--json"], hsops_home).stdout)
    assert [m["aliases"] for m in models] == [["champion"]]

    status = json.loads(run(["pipeline", "status", runs[0]["name"], "--json"], hsops_home).stdout)
    assert status["history"] and all("duration_ms" in h and "cost_usd" in h for h in status["history"])
    # the API serves the model the pipeline deployed
    answer = httpx.post(f"{base}/v1/predict", json={"descriptions": ["PLASTIC CUPS"]}, timeout=30)
    assert answer.status_code == 200 and answer.json()["model_version"].endswith(runs[0]["outcome"]["version"])


def create_key(home, *scopes: str) -> dict:
    args = ["keys", "create", "e2e", *[a for s in scopes for a in ("--scope", s)], "--json"]
    return {"authorization": f"Bearer {json.loads(run(args, home).stdout)['key']}"}


def test_post_v1_pipelines_runs_on_an_ingested_dataset_and_refuses_bad_requests(platform, hsops_home, tmp_path):
    proc, base = platform
    run(["ingest", str(write_csv(tmp_path / "d.csv", sample_rows()))], hsops_home)
    good = {"dataset_version": "latest", "name": "from-api"}
    # starting a run is an admin call: no key, a wrong key, a key without the scope are refused
    assert httpx.post(f"{base}/v1/pipelines", json=good, timeout=10).status_code == 401
    assert httpx.post(f"{base}/v1/pipelines", json=good, timeout=10,
                      headers={"authorization": "Bearer hsk_000000000000_" + "x" * 43}).status_code == 401
    assert httpx.post(f"{base}/v1/pipelines", json=good, timeout=10,
                      headers=create_key(hsops_home, "predict")).status_code == 403
    admin = create_key(hsops_home, "admin")
    bad = [({"dataset_version": "latest", "object_key": "x"}, 422), ({}, 422),
           ({"dataset_version": "latest", "candidates": [{"kind": "nope"}]}, 422),
           ({"dataset_version": "latest", "policy": {"rm_rf": 1}}, 422),
           ({"dataset_version": "../../etc"}, 422), ({"object_key": "inbox/missing.csv"}, 422)]
    for body, status in bad:
        response = httpx.post(f"{base}/v1/pipelines", json=body, timeout=10, headers=admin)
        assert response.status_code == status, (body, response.text)
        assert response.json()["message"]
    assert httpx.post(f"{base}/v1/pipelines", content="not json", timeout=10,
                      headers={"content-type": "text/plain", **admin}).status_code == 415
    for raw in ('{"dataset_version": "latest", "policy": {"min_rows": NaN}}',
                '{"dataset_version": "latest", "policy": {"min_rows": 1e999}}',
                '{"dataset_version": "latest", "candidates": [{"kind": "linear", "params": {"epochs": "x"}}]}'):
        response = httpx.post(f"{base}/v1/pipelines", content=raw, timeout=10,
                              headers={"content-type": "application/json", **admin})
        assert response.status_code == 422, (raw, response.text)

    accepted = httpx.post(f"{base}/v1/pipelines", json=good, timeout=10, headers=admin)
    assert accepted.status_code == 202, accepted.text
    assert httpx.post(f"{base}/v1/pipelines", json=good, headers=admin,
                      timeout=10).status_code in (202, 409)  # a repeated request starts nothing new

    def finished():
        body = httpx.get(f"{base}/v1/pipelines/from-api", timeout=10).json()
        return body if body["status"] in ("SUCCEEDED", "FAILED") else None
    body = wait_for(finished, what="the API-triggered run")
    assert body["status"] == "SUCCEEDED", body
    assert body["trigger"] == "api" and body["history"]
    assert len(httpx.get(f"{base}/v1/pipelines", timeout=10).json()) == 1
    assert httpx.get(f"{base}/v1/pipelines/no-such-run", timeout=10).status_code == 404


def test_ctrl_c_stops_the_platform_and_its_workers(platform, hsops_home):
    proc, base = platform
    run(["pipeline", "run", "--dataset", "latest", "--detach"], hsops_home, check=False)  # gives workers work
    time.sleep(2)
    assert replica_pids(hsops_home)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    wait_for(lambda: not worker_pids(hsops_home), timeout=30, what="workers to exit")
    wait_for(lambda: not replica_pids(hsops_home), timeout=30, what="serving replicas to exit")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/v1/pipelines", timeout=2)
