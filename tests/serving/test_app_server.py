"""The API in a real uvicorn process on 127.0.0.1, spoken to over real HTTP.

What the in-process tests cannot show: the app starts from a factory in a fresh
interpreter, requests cross a socket (chunked bodies, real Content-Length framing),
predictions land in the SQLite file another process can read, and a champion promoted
in the registry is served without a restart.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from hsops.platform.local import StateStore

pytestmark = pytest.mark.integration

MAX_BODY = 20_000
STARTUP_GIVE_UP_S = 60  # only a guard against hanging forever; nothing asserts on time

ENTRY = textwrap.dedent("""
    import os
    from pathlib import Path

    from hsops.platform.local import StateStore
    from hsops.serving import RegistrySource
    from hsops.serving.app import create_app
    from hsops.serving.config import ServingConfig


    def make_app():
        home = Path(os.environ["HSOPS_HOME"])
        # a short body timeout and few admission slots, so slow senders are quick to test
        config = ServingConfig().with_overrides({"limits": {"body_timeout_s": 1.0},
                                                 "batching": {"max_in_flight": 4}})
        return create_app(RegistrySource(home), StateStore(home / "state.db"), config=config,
                          max_body_bytes=int(os.environ["HSOPS_TEST_MAX_BODY"]))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home: Path, entry_dir: Path):
        self.home = home
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(home / "server.log", "w+b")
        env = {**os.environ, "HSOPS_HOME": str(home), "HSOPS_TEST_MAX_BODY": str(MAX_BODY)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "hsops_test_entry:make_app",
             "--app-dir", str(entry_dir), "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "warning"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + STARTUP_GIVE_UP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=2)  # any answer (200 or 503) means it is up
                return
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"server did not answer within {STARTUP_GIVE_UP_S}s:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()


def _start(home: Path, entry_dir: Path):
    server = Server(home, entry_dir)
    try:
        server.wait_until_listening()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="module")
def entry_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("entry")
    (directory / "hsops_test_entry.py").write_text(ENTRY, encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def server(tmp_path_factory, entry_dir, golden_artifact, registrar):
    home = tmp_path_factory.mktemp("server-home")
    registrar(home, golden_artifact, "1")
    server = _start(home, entry_dir)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def test_healthz_over_http(http):
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok" and response.json()["model_version"] == "hs-classifier@1"


def test_predict_over_http_and_the_log_is_readable_from_another_process(http, server, facts):
    texts = list(facts["probes"])
    response = http.post("/v1/predict", json={"descriptions": texts, "top_k": 2, "explain": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["x-request-id"] == body["request_id"]
    assert [p["hs_code"] for p in body["predictions"]] == list(facts["probes"].values())
    assert all(len(p["alternatives"]) == 1 and p["explanation"] for p in body["predictions"])

    store = StateStore(server.home / "state.db")
    try:
        for text, p in zip(texts, body["predictions"]):
            row = store.get_prediction(p["request_id"])
            assert row is not None, f"{p['request_id']} was not logged"
            assert row["text"] == text and row["hs_code"] == p["hs_code"]
            assert row["batch_id"] == body["request_id"] and row["model_version"] == "hs-classifier@1"
    finally:
        store.close()


def test_bad_input_over_http_is_4xx_with_a_message(http):
    blank = http.post("/v1/predict", json={"descriptions": ["ok", "  "]})
    assert blank.status_code == 422 and "descriptions[1]" in blank.json()["message"]
    malformed = http.post("/v1/predict", content=b'{"descriptions": [',
                          headers={"content-type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"] == "malformed_json"
    wrong_type = http.post("/v1/predict", content=b"PLASTIC CUPS", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415


def test_declared_oversize_body_is_413(http):
    body = json.dumps({"descriptions": ["x" * (MAX_BODY + 10)]}).encode()
    response = http.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large" and str(MAX_BODY) in response.json()["message"]


def test_chunked_oversize_body_is_413(http):
    body = json.dumps({"descriptions": ["x" * (3 * MAX_BODY)]}).encode()

    def chunks():
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    response = http.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert response.status_code == 413 and response.json()["error"] == "payload_too_large"


def test_slow_senders_get_408_and_do_not_lock_others_out(http, server):
    """Clients that send headers and then only part of the body (slowloris) are not
    counted against the admission limit (4 here) and are answered 408 once the body
    timeout passes; everyone else is served meanwhile."""
    slow = []
    try:
        for _ in range(6):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"desc")
            slow.append(sock)
        response = http.post("/v1/predict", json={"descriptions": ["AIR FILTER FOR TRUCK ENGINE"]})
        assert response.status_code == 200, response.text
        for sock in slow:
            answer = b""
            while b"\r\n\r\n" not in answer and (chunk := sock.recv(4096)):
                answer += chunk
            head = answer.decode("latin-1").lower()
            assert head.startswith("http/1.1 408"), head
            assert "connection: close" in head
    finally:
        for sock in slow:
            sock.close()


def test_server_still_answers_after_rejections(http):
    assert http.post("/v1/predict", json={"descriptions": ["MOTORCYCLE 125CC"]}).json()["predictions"][0][
        "hs_code"] == "871120"


def test_a_promoted_champion_is_served_without_restart(tmp_path, entry_dir, golden_artifact, registrar):
    home = tmp_path / "home"
    home.mkdir()
    server = _start(home, entry_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            health = http.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "no_model"
            refused = http.post("/v1/predict", json={"descriptions": ["MOTORCYCLE"]})
            assert refused.status_code == 503 and "hsops train" in refused.json()["message"]

            registrar(home, golden_artifact, "1")
            assert http.get("/healthz").json()["model_version"] == "hs-classifier@1"
            registrar(home, golden_artifact, "2", calibration={"temperature": 3.0, "threshold": 0.99})
            body = http.post("/v1/predict", json={"descriptions": ["MOTORCYCLE"]}).json()
            assert body["model_version"] == "hs-classifier@2"
            assert body["predictions"][0]["abstain"] is True  # v2 threshold (0.99) is in force
    finally:
        server.stop()
    assert server.proc.returncode is not None


def test_answers_over_http_say_their_level(http, facts):
    """The champion's calibration predates the heading fallback: levels are subheading or none."""
    body = http.post("/v1/predict", json={"descriptions": ["MOTORCYCLE 125CC", facts["gibberish"]]}).json()
    sure, unsure = body["predictions"]
    assert (sure["level"], sure["heading"]) == ("subheading", None)
    assert (unsure["level"], unsure["heading"], unsure["abstain"]) == ("none", None, True)


def test_a_heading_answer_over_http(tmp_path, entry_dir, golden_artifact, registrar, facts):
    home = tmp_path / "home"
    home.mkdir()
    # a subheading threshold no answer reaches and a heading threshold clear lines pass
    registrar(home, golden_artifact, "1",
              calibration={**facts["calibration"], "threshold": 0.99, "heading_threshold": 0.5})
    server = _start(home, entry_dir)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            response = http.post("/v1/predict", json={"descriptions": ["AIR FILTER FOR TRUCK ENGINE",
                                                                       facts["gibberish"]]})
            assert response.status_code == 200, response.text
            clear, gibberish = response.json()["predictions"]
            assert clear["abstain"] is True and clear["level"] == "heading"
            assert clear["hs_code"] == "842131" and clear["heading"]["code"] == "8421"
            assert clear["heading"]["description"].startswith("Centrifuges")
            assert 0.5 <= clear["heading"]["confidence"] <= 1
            assert (gibberish["level"], gibberish["heading"]) == ("none", None)
            spec = http.get("/openapi.json").json()["components"]["schemas"]
            assert spec["PredictionOut"]["properties"]["level"]["enum"] == ["subheading", "heading", "none"]
    finally:
        server.stop()
