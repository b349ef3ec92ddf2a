"""The inference patterns and keys through the real ``hsops`` command, each call a separate
process on one HSOPS_HOME (a registered copy of the small test model, no training here)."""

from __future__ import annotations

import base64
import json

import pytest

from hsops.platform.local.state_store import StateStore
from hsops.serving.auth import KEY_PATTERN
from tests.e2e._cli import run
from tests.serving.conftest import golden_artifact, register_copy  # noqa: F401 - the session fixture

TEXTS = ["70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]", "HONDA MOTORCYCLE 150CC", "zzzz qqqq"]
ANSWER_KEYS = ("hs_code", "hs_description", "in_hs2022", "confidence", "abstain", "level", "heading",
               "alternatives", "model_version")


@pytest.fixture(scope="module")
def home(tmp_path_factory, golden_artifact):  # noqa: F811 - the imported fixture
    home = tmp_path_factory.mktemp("cli-serving")
    register_copy(home, golden_artifact, "1")
    return home


def answers(items: list[dict]) -> list[dict]:
    return [{k: item[k] for k in ANSWER_KEYS} for item in items]


# -- keys ------------------------------------------------------------------------------------------
def test_keys_create_list_revoke(home):
    created = json.loads(run(["keys", "create", "broker", "--scope", "predict", "--scope", "feedback", "--json"],
                             home).stdout)
    match = KEY_PATTERN.match(created["key"])
    assert match and match.group(1) == created["key_id"]
    assert created["name"] == "broker" and created["scopes"] == ["predict", "feedback"]
    secret = match.group(2)
    # the key works: the store checks it against its hash
    assert StateStore(home).get_key(created["key_id"]).scopes == ("predict", "feedback")

    human = run(["keys", "create", "ops", "--scope", "admin"], home)
    shown = [w for w in human.stdout.split() if w.startswith("hsk_")]
    assert len(shown) == 1 and KEY_PATTERN.match(shown[0])  # shown once, whole, on stdout
    assert "cannot be shown again" in human.stderr

    listed = json.loads(run(["keys", "list", "--json"], home).stdout)
    by_id = {r["key_id"]: r for r in listed}
    assert by_id[created["key_id"]]["scopes"] == ["predict", "feedback"]
    assert by_id[created["key_id"]]["revoked_at"] is None
    table = run(["keys", "list"], home).stdout
    for output in (json.dumps(listed), table):
        assert secret not in output and shown[0] not in output and shown[0].split("_")[2] not in output
        assert StateStore(home).get_key(created["key_id"]).secret_hash not in output
    assert created["key_id"] in table and "broker" in table

    revoked = run(["keys", "revoke", created["key_id"]], home)
    assert created["key_id"] in revoked.stdout
    after = {r["key_id"]: r for r in json.loads(run(["keys", "list", "--json"], home).stdout)}
    assert after[created["key_id"]]["revoked_at"] is not None
    again = run(["keys", "revoke", created["key_id"]], home, check=False)
    assert again.returncode != 0 and "no live key" in again.stderr
    whole = run(["keys", "revoke", shown[0]], home)  # the whole key works too; only its id is printed
    assert shown[0].split("_")[1] in whole.stdout and shown[0] not in whole.stdout


@pytest.mark.parametrize("args, fragment", [
    (["keys", "create", "x", "--scope", "root"], "scopes must be some of"),
    (["keys", "create", " ", "--scope", "predict"], "name"),
    (["keys", "revoke", "000000000000"], "no live key"),
])
def test_bad_key_commands_fail_with_a_message(home, args, fragment):
    proc = run(args, home, check=False)
    assert proc.returncode != 0 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr


# -- batch and jobs -----------------------------------------------------------------------------------
def test_batch_a_file_then_follow_the_job(home, tmp_path):
    data = tmp_path / "catalogue.csv"
    data.write_text("ref,goods_description\n1,\"70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]\"\n2,---\n"
                    "3,HONDA MOTORCYCLE 150CC\n4,zzzz qqqq\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    job = json.loads(run(["batch", str(data), "--out", str(out), "--top-k", "2", "--json"], home).stdout)
    assert job["status"] == "succeeded" and job["progress"]["rows_done"] == 4
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["row"] for r in records] == [1, 2, 3, 4]  # one line per row, in order
    assert "error" in records[1] and "hs_code" not in records[1]
    good = [records[0], records[2], records[3]]
    assert [r["text"] for r in good] == TEXTS
    predicted = json.loads(run(["predict", *TEXTS, "--top-k", "2", "--json"], home).stdout)
    assert answers(good) == answers(predicted)  # the batch pattern answers as `hsops predict` does

    listed = json.loads(run(["jobs", "list", "--json"], home).stdout)
    assert job["job_id"] in [j["job_id"] for j in listed]
    status = json.loads(run(["jobs", "status", job["job_id"], "--json"], home).stdout)
    assert status["status"] == "succeeded" and status["progress"]["rows_total"] == 4
    assert "key_id" not in status
    results = run(["jobs", "results", job["job_id"]], home).stdout
    assert results == out.read_text(encoding="utf-8")
    copy = tmp_path / "copy.jsonl"
    run(["jobs", "results", job["job_id"], "--out", str(copy)], home)
    assert copy.read_bytes() == out.read_bytes()
    human = run(["jobs", "status", job["job_id"]], home).stdout
    assert job["job_id"] in human and "succeeded" in human


def test_batch_a_text_file_without_json(home, tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    proc = run(["batch", str(data)], home)
    assert "3 rows answered" in proc.stdout and "hs-classifier@1" in proc.stdout


@pytest.mark.parametrize("name, content, fragment", [
    ("missing.csv", None, "no file"),
    ("empty.csv", "", "empty"),
    ("header-only.csv", "goods_description\n", "no data rows"),
    ("unknown.xlsx", "PK", "format"),
])
def test_batch_bad_input_fails_with_a_message(home, tmp_path, name, content, fragment):
    path = tmp_path / name
    if content is not None:
        path.write_text(content, encoding="utf-8")
    proc = run(["batch", str(path)], home, check=False)
    assert proc.returncode != 0
    assert fragment in proc.stderr.lower(), proc.stderr
    assert "Traceback" not in proc.stderr


def test_jobs_commands_on_an_unknown_job(home):
    for args in (["jobs", "status", "job-nope"], ["jobs", "results", "job-nope"], ["jobs", "cancel", "job-nope"]):
        proc = run(args, home, check=False)
        assert proc.returncode != 0 and "no job 'job-nope'" in proc.stderr


# -- invoke (the Lambda-style handler) -----------------------------------------------------------------
def test_invoke_describe_answers_as_predict_does(home):
    args = []
    for text in TEXTS:
        args += ["--describe", text]
    response = json.loads(run(["invoke", *args], home).stdout)
    assert response["statusCode"] == 200 and response["isBase64Encoded"] is False
    body = json.loads(response["body"])
    predicted = json.loads(run(["predict", *TEXTS, "--json"], home).stdout)
    assert [p["description"] for p in predicted] == TEXTS
    assert answers(body["predictions"]) == answers(predicted)
    assert all(len(p["alternatives"]) == 2 for p in body["predictions"])  # both default to top 3


def test_invoke_an_event_file(home, tmp_path):
    event = {"resource": "/v1/predict", "path": "/v1/predict", "httpMethod": "POST",
             "multiValueHeaders": {"Content-Type": ["application/json"]},
             "body": base64.b64encode(json.dumps({"descriptions": TEXTS[:1], "top_k": 1}).encode()).decode(),
             "isBase64Encoded": True}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    response = json.loads(run(["invoke", "--event", str(path)], home).stdout)
    assert response["statusCode"] == 200
    assert response["multiValueHeaders"]["content-type"] == ["application/json"]
    (prediction,) = json.loads(response["body"])["predictions"]
    assert prediction["hs_code"] == "392410" and prediction["alternatives"] == []


@pytest.mark.parametrize("content, fragment", [
    ("{", "not a readable JSON event"),
    ("", "not a readable JSON event"),
    (b"\xff\xfe{", "not a readable JSON event"),
])
def test_invoke_an_unreadable_event_file_fails_with_a_message(home, tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = run(["invoke", "--event", str(path)], home, check=False)
    assert proc.returncode != 0 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr


def test_invoke_an_event_that_is_not_an_api_gateway_event(home, tmp_path):
    path = tmp_path / "not-an-event.json"
    path.write_text(json.dumps({"hello": "world"}), encoding="utf-8")
    proc = run(["invoke", "--event", str(path)], home, check=False)
    assert "Traceback" not in proc.stderr and proc.returncode == 1  # the exit code says it failed
    response = json.loads(proc.stdout)
    assert response["statusCode"] == 400 and json.loads(response["body"])["error"] == "bad_event"


@pytest.mark.parametrize("args", [[], ["--event", "x.json", "--describe", "AIR FILTER"]])
def test_invoke_needs_exactly_one_source(home, args):
    proc = run(["invoke", *args], home, check=False)
    assert proc.returncode != 0 and "--event FILE or --describe TEXT" in proc.stderr


def test_invoke_a_missing_event_file(home, tmp_path):
    proc = run(["invoke", "--event", str(tmp_path / "nope.json")], home, check=False)
    assert proc.returncode != 0 and "nope.json" in proc.stderr and "Traceback" not in proc.stderr


def test_batch_with_a_tampered_model_fails_with_a_message(tmp_path, golden_artifact):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    target = register_copy(home, golden_artifact, "1")
    victim = next(p for p in sorted(target.iterdir()) if p.is_file() and p.name != "manifest.json")
    victim.write_bytes(victim.read_bytes() + b"tampered")
    data = tmp_path / "lines.txt"
    data.write_text("AIR FILTER\n", encoding="utf-8")
    proc = run(["batch", str(data)], home, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert victim.name in proc.stderr or "manifest" in proc.stderr.lower() or "sha" in proc.stderr.lower()


@pytest.mark.parametrize("command", [["batch", "LINES"], ["invoke", "--describe", "AIR FILTER"]])
def test_a_bad_serving_config_is_a_message_not_a_traceback(tmp_path, golden_artifact, command):  # noqa: F811
    home = tmp_path / "home"
    home.mkdir()
    register_copy(home, golden_artifact, "1")
    (home / "serving.json").write_text('{"batching": {"max_wiat_ms": 1}}', encoding="utf-8")
    data = tmp_path / "lines.txt"
    data.write_text("AIR FILTER\n", encoding="utf-8")
    proc = run([str(data) if a == "LINES" else a for a in command], home, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "batching.max_wiat_ms" in proc.stderr
