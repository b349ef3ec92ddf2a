"""The inference patterns and keys through the real ``hsops`` command, each call a separate
process on one HSOPS_HOME (a registered copy of the small test model, no training here)."""

from __future__ import annotations

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import typer

from hsops import cli_serving
from hsops.cli_serving import _checked_out, _rows_summary
from hsops.platform.local.backend import LocalBackend
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
    # a newline or a control character would break `keys list` and forge log lines
    (["keys", "create", "a\nb"], "key name is 1 to 64"),
    (["keys", "create", "tab\there"], "key name is 1 to 64"),
    (["keys", "create", "bell\x07"], "key name is 1 to 64"),
    (["keys", "create", "[red]x"], "key name is 1 to 64"),
    (["keys", "create", "x" * 65], "key name is 1 to 64"),
])
def test_bad_key_commands_fail_with_a_message(home, args, fragment):
    before = len(StateStore(home).list_keys())
    proc = run(args, home, check=False)
    assert proc.returncode != 0 and fragment in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(StateStore(home).list_keys()) == before  # nothing stored


@pytest.mark.parametrize("name", ["Müller GmbH", "ops@example.com", "ci-bot_2.0", "x" * 64])
def test_key_names_with_letters_digits_spaces_and_punctuation(home, name):
    created = json.loads(run(["keys", "create", name, "--json"], home).stdout)
    assert created["name"] == name and StateStore(home).get_key(created["key_id"]).name == name


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
    saved = run(["jobs", "results", job["job_id"], "--out", str(copy)], home)
    assert copy.read_bytes() == out.read_bytes()
    assert "4 rows written to" in " ".join(saved.stderr.split())  # not silent
    human = run(["jobs", "status", job["job_id"]], home).stdout
    assert job["job_id"] in human and "succeeded" in human
    ended = run(["jobs", "cancel", job["job_id"]], home, check=False)  # as the API's 409
    assert ended.returncode == 1 and "already ended (succeeded)" in " ".join(ended.stderr.split())


def test_batch_a_text_file_without_json(home, tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    proc = run(["batch", str(data)], home)
    assert "3 rows: 3 answered" in proc.stdout and "hs-classifier@1" in proc.stdout
    assert "could not be answered" not in proc.stdout
    assert proc.stderr == ""  # no progress bar residue when stderr is not a terminal


def test_batch_with_nothing_answerable_names_the_model(home, tmp_path):
    data = tmp_path / "marks.txt"
    data.write_text("---\n***\n", encoding="utf-8")
    proc = run(["batch", str(data)], home)
    assert "with champion: 2 rows: 0 answered" in " ".join(proc.stdout.split()) and "None" not in proc.stdout


def test_batch_says_how_many_rows_could_not_be_answered(home, tmp_path):
    data = tmp_path / "catalogue.csv"
    data.write_text("goods_description\nHONDA MOTORCYCLE 150CC\n---\n***\nAIR FILTER\n", encoding="utf-8")
    proc = run(["batch", str(data)], home)
    # a row written with an error is not an answer: "4 rows answered" would hide two failures
    assert "4 rows: 2 answered, 2 could not be answered" in " ".join(proc.stdout.split())
    job_id = proc.stdout.split()[0]
    status = " ".join(run(["jobs", "status", job_id], home).stdout.split())
    assert "4/4 rows (2 answered, 2 could not be answered)" in status


@pytest.mark.parametrize("progress, summary", [
    ({"rows_done": 4, "rows_total": 4, "rows_failed": 3},
     "4 rows: 1 answered, 3 could not be answered (see the error field in the output)"),
    ({"rows_done": 1, "rows_total": 1, "rows_failed": 0}, "1 row: 1 answered"),
    ({"rows_done": 4, "rows_total": 4}, "4 rows: 4 answered"),  # a server that does not count failures
])
def test_rows_summary(progress, summary):
    assert _rows_summary({"progress": progress}) == summary


def test_batch_a_file_whose_name_has_control_characters(home, tmp_path):
    folder = tmp_path / "we ird"
    folder.mkdir()
    data = folder / "..\nx é.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    job = json.loads(run(["batch", str(data), "--json"], home).stdout)
    assert job["status"] == "succeeded" and job["progress"]["rows_done"] == 3  # read as TXT: the suffix is kept
    keys = [o.key for o in LocalBackend(home).objects.list("batch/")]
    assert any(k.endswith("-.._x__.txt") for k in keys), keys
    assert all(re.fullmatch(r"batch/[0-9a-f]{16}-[A-Za-z0-9._-]+", k) for k in keys), keys


def _job_count(home) -> int:
    return len(json.loads(run(["jobs", "list", "--json", "--limit", "1000"], home).stdout))


def _a_finished_job(home, tmp_path) -> str:
    data = tmp_path / "lines.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    return json.loads(run(["batch", str(data), "--json"], home).stdout)["job_id"]


def test_out_that_is_a_directory_is_refused_before_any_work(home, tmp_path):
    job_id = _a_finished_job(home, tmp_path)
    jobs = _job_count(home)
    for args in (["batch", str(tmp_path / "lines.txt")], ["jobs", "results", job_id]):
        proc = run([*args, "--out", str(tmp_path)], home, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"--out {tmp_path} is a directory" in " ".join(proc.stderr.split())
    assert _job_count(home) == jobs  # refused before the batch ran


def test_out_folders_are_made_and_the_file_replaced_whole(home, tmp_path):
    data = tmp_path / "lines.txt"
    data.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    by_batch, by_results = tmp_path / "a" / "b" / "p.jsonl", tmp_path / "c" / "d" / "p.jsonl"
    job_id = json.loads(run(["batch", str(data), "--out", str(by_batch), "--json"], home).stdout)["job_id"]
    by_results.parent.mkdir(parents=True)
    by_results.write_text("old and longer than nothing\n" * 100, encoding="utf-8")
    by_results.chmod(0o640)
    run(["jobs", "results", job_id, "--out", str(by_results)], home)
    run(["jobs", "results", job_id, "--out", str(tmp_path / "e" / "f" / "p.jsonl")], home)
    assert by_batch.read_bytes() == by_results.read_bytes() == (tmp_path / "e" / "f" / "p.jsonl").read_bytes()
    assert [json.loads(line)["text"] for line in by_results.read_text(encoding="utf-8").splitlines()] == TEXTS
    assert by_results.stat().st_mode & 0o777 == 0o640  # replaced, with the mode it had
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.startswith(".")]
    assert leftovers == []  # the temp files were renamed into place


def test_out_under_a_file_is_a_message_not_a_traceback(home, tmp_path):
    job_id = _a_finished_job(home, tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    for args in (["batch", str(tmp_path / "lines.txt")], ["jobs", "results", job_id]):
        proc = run([*args, "--out", str(blocker / "sub" / "p.jsonl")], home, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "a file is in the way" in proc.stderr


def test_out_in_a_folder_that_cannot_be_written_is_a_message(tmp_path, monkeypatch, capsys):
    # as a user without write permission sees it (the tests may run as root, who has it everywhere)
    monkeypatch.setattr(cli_serving.os, "access", lambda path, mode: False)
    with pytest.raises(typer.Exit) as exited:
        _checked_out(tmp_path / "sub" / "p.jsonl")
    assert exited.value.exit_code == 2
    assert f"cannot write in {tmp_path / 'sub'} (permission denied)" in " ".join(capsys.readouterr().err.split())


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


def test_jobs_list_shows_job_ids_whole(home, tmp_path, monkeypatch):
    columns = ",".join(f"a_rather_long_column_name_{i}" for i in range(6))
    data = tmp_path / "wide.csv"
    data.write_text(f"{columns}\n" + ",".join(["x"] * 6) + "\n", encoding="utf-8")
    failed = run(["batch", str(data), "--text-column", "nope"], home, check=False)
    assert failed.returncode != 0 and "a_rather_long_column_name_5" in failed.stderr  # a long error
    _a_finished_job(home, tmp_path)  # "succeeded", a model version: wide columns too
    monkeypatch.setenv("COLUMNS", "80")  # the narrowest console the CLI draws for (110 columns)
    table = run(["jobs", "list"], home).stdout
    for job in json.loads(run(["jobs", "list", "--json"], home).stdout):
        assert job["job_id"] in table  # the id other commands take: the error column gives way
    assert "a_rather_long_column_name_5" not in table and "…" in table
    assert all(len(line) <= 110 for line in table.splitlines())


def test_jobs_commands_on_an_unknown_job(home):
    for args in (["jobs", "status", "job-nope"], ["jobs", "results", "job-nope"], ["jobs", "cancel", "job-nope"]):
        proc = run(args, home, check=False)
        assert proc.returncode != 0 and "no job 'job-nope'" in proc.stderr


# -- predict --server -----------------------------------------------------------------------------------
@pytest.fixture
def fake_server():
    """A stand-in for `hsops serve` that answers POST /v1/predict and records the paths asked."""
    paths = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            paths.append(self.path)
            self.rfile.read(int(self.headers["content-length"]))
            found = self.path == "/v1/predict"
            body = json.dumps({"predictions": [{"hs_code": "842131"}]} if found else {"message": "no route"})
            self.send_response(200 if found else 404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", paths
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_predict_server_url_may_end_with_v1(home, fake_server, suffix):
    url, paths = fake_server
    proc = run(["predict", "AIR FILTER", "--server", url + suffix, "--json"], home)
    assert json.loads(proc.stdout) == [{"description": "AIR FILTER", "hs_code": "842131"}]
    assert paths == ["/v1/predict"]  # not /v1/v1/predict


@pytest.mark.parametrize("server, fragment", [
    ("http://[::1", "is not a valid URL"),
    ("http://127.0.0.1:99999", "is not a valid URL"),
    ("http://127.0.0.1:port", "is not a valid URL"),
    ("http://127.0.0.1:0", "port must be 1 to 65535"),
    ("http://:8000", "has no host"),
    ("ftp://127.0.0.1", "must be an http(s) URL"),
    ("127.0.0.1:8000", "must be an http(s) URL"),
    ("http://127.0.0.1:8000/?x=1", "without ?query"),
])
def test_predict_with_a_bad_server_url_fails_with_a_message(home, server, fragment):
    proc = run(["predict", "AIR FILTER", "--server", server], home, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert fragment in proc.stderr and "--server" in proc.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--key", "hsk_x_y"], "--key needs --server"),
    (["--async"], "--async needs --server"),
    (["--key", "hsk_x_y", "--async"], "--key and --async need --server"),
])
def test_predict_key_and_async_need_a_server(home, args, fragment):
    proc = run(["predict", "AIR FILTER", *args], home, check=False)
    assert proc.returncode == 2 and fragment in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # refused, not answered here with the flags ignored


def test_predict_here_with_a_key_in_the_environment(home, monkeypatch):
    monkeypatch.setenv("HSOPS_API_KEY", "hsk_x_y")  # ambient, for when --server is given
    (prediction,) = json.loads(run(["predict", "AIR FILTER", "--json"], home).stdout)
    assert prediction["description"] == "AIR FILTER"


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
    assert "queued" not in run(["invoke", *args], home).stderr  # answered now: no job to wait for


def test_invoke_an_async_event_says_where_the_job_runs(home, tmp_path):
    key = json.loads(run(["keys", "create", "invoker", "--json"], home).stdout)["key"]
    event = {"version": "2.0", "routeKey": "POST /v1/predict/async", "rawPath": "/v1/predict/async",
             "rawQueryString": "", "headers": {"content-type": "application/json", "authorization": f"Bearer {key}"},
             "requestContext": {"http": {"method": "POST", "path": "/v1/predict/async", "sourceIp": "127.0.0.1"}},
             "body": json.dumps({"descriptions": TEXTS[:1]}), "isBase64Encoded": False}
    path = tmp_path / "async.json"
    path.write_text(json.dumps(event), encoding="utf-8")
    proc = run(["invoke", "--event", str(path)], home)
    response = json.loads(proc.stdout)  # stdout is the proxy response alone
    assert response["statusCode"] == 202
    job_id = json.loads(response["body"])["job_id"]
    note = " ".join(proc.stderr.split())
    assert f"job {job_id} is queued" in note and "`hsops serve` or `hsops up`" in note
    assert f"hsops jobs status {job_id}" in note
    status = json.loads(run(["jobs", "status", job_id, "--json"], home).stdout)
    assert status["status"] == "queued"  # nothing here ran it: the note is true


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
