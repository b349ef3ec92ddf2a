"""The HTTP API in-process (FastAPI TestClient): answers, logging, and every bad input."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap

import pytest
from fastapi.testclient import TestClient

from hsops.models.artifact import ArtifactError
from hsops.platform.local import StateStore
from hsops.registry.index import ModelNotFound
from hsops.serving import PredictionSink, Predictor, RegistrySource
from hsops.serving.app import create_app

HEX32 = re.compile(r"^[0-9a-f]{32}$")
JSON = {"content-type": "application/json"}


class ListSink:
    def __init__(self):
        self.rows: list[dict] = []

    def log_predictions(self, rows: list[dict]) -> None:
        self.rows.extend(rows)


@pytest.fixture
def predictor(artifact_dir) -> Predictor:
    return Predictor.from_dir(artifact_dir, model_version="hs-classifier@1")


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def client(predictor, sink) -> TestClient:
    app = create_app(lambda: predictor, sink, max_items=5, max_text_chars=60, max_body_bytes=4000)
    return TestClient(app)


def assert_error(response, status: int, error: str, *fragments: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details", "request_id"}
    assert body["error"] == error
    assert HEX32.match(body["request_id"]) and response.headers["x-request-id"] == body["request_id"]
    for fragment in fragments:
        assert fragment in body["message"], body["message"]
    return body


# -- answers ---------------------------------------------------------------------------------
def test_predict_answers_with_codes_ids_and_version(client, facts):
    texts = list(facts["probes"])
    response = client.post("/v1/predict", json={"descriptions": texts, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert HEX32.match(body["request_id"])
    assert response.headers["x-request-id"] == body["request_id"]
    assert body["model_version"] == "hs-classifier@1"
    assert [p["hs_code"] for p in body["predictions"]] == list(facts["probes"].values())
    for i, p in enumerate(body["predictions"]):
        assert p["request_id"] == f"{body['request_id']}-{i}"
        assert p["model_version"] == "hs-classifier@1"
        assert len(p["alternatives"]) == 2
        assert p["abstain"] is False and p["explanation"] is None
        assert p["hs_description"] and 0 < p["confidence"] <= 1


def test_each_request_gets_its_own_id(client):
    ids = {client.post("/v1/predict", json={"descriptions": ["MOTORCYCLE"]}).json()["request_id"]
           for _ in range(3)}
    assert len(ids) == 3


def test_explain_and_abstain_come_through(client, facts):
    body = client.post("/v1/predict", json={"descriptions": ["PLASTIC WATER BOTTLES", facts["gibberish"]],
                                            "explain": True}).json()
    sure, unsure = body["predictions"]
    assert sure["explanation"] and {"term", "weight", "start", "end"} == set(sure["explanation"][0])
    assert sure["abstain"] is False and unsure["abstain"] is True


def test_odd_but_valid_text_is_answered_not_crashed(client):
    texts = ["#1", "12345", "中文 描述", "a\u0000b"]
    response = client.post("/v1/predict", json={"descriptions": texts})
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"]) == 4


def test_default_top_k_is_five(client, facts):
    (p,) = client.post("/v1/predict", json={"descriptions": ["RUBBER GASKET"]}).json()["predictions"]
    assert len(p["alternatives"]) == min(5, len(facts["codes"])) - 1


# -- logging ---------------------------------------------------------------------------------
def test_every_prediction_is_logged_with_its_request_id(client, sink):
    body = client.post("/v1/predict", json={"descriptions": ["MOTORCYCLE 125CC", "USED CLOTHING"]}).json()
    assert [r["request_id"] for r in sink.rows] == [p["request_id"] for p in body["predictions"]]
    assert [r["text"] for r in sink.rows] == ["MOTORCYCLE 125CC", "USED CLOTHING"]
    for row, p in zip(sink.rows, body["predictions"]):
        assert row["batch_id"] == body["request_id"]
        for key in ("hs_code", "confidence", "abstain"):
            assert row[key] == p[key]
        assert row["model_version"] == "hs-classifier@1"
        assert row["alternatives"] == p["alternatives"]
        assert row["created_at"].endswith("+00:00")


def test_predictions_land_in_the_state_store(home, predictor):
    store = StateStore()
    assert isinstance(store, PredictionSink)
    client = TestClient(create_app(lambda: predictor, store))
    body = client.post("/v1/predict", json={"descriptions": ["AIR FILTER", "RUBBER SEAL"]}).json()
    assert store.count_predictions() == 2
    row = store.get_prediction(body["predictions"][1]["request_id"])
    assert row["text"] == "RUBBER SEAL" and row["hs_code"] == body["predictions"][1]["hs_code"]
    assert (home / "state.db").is_file()


def test_rejected_requests_log_nothing(client, sink):
    client.post("/v1/predict", json={"descriptions": ["ok", " "]})
    assert sink.rows == []


def test_a_failing_sink_does_not_fail_the_answer(predictor, caplog):
    class BrokenSink:
        def log_predictions(self, rows):
            raise OSError("disk full")

    client = TestClient(create_app(lambda: predictor, BrokenSink()))
    with caplog.at_level(logging.ERROR, logger="hsops.serving"):
        response = client.post("/v1/predict", json={"descriptions": ["MOTORCYCLE"]})
    assert response.status_code == 200
    assert "could not log 1 predictions" in caplog.text and response.json()["request_id"] in caplog.text


# -- health and missing models ------------------------------------------------------------------
def test_healthz_reports_the_model_version(client):
    assert client.head("/healthz").status_code == 200  # load balancers probe with HEAD
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_version": "hs-classifier@1", "message": None}


def test_without_a_model_health_and_predict_say_to_train(home):
    client = TestClient(create_app(RegistrySource(home)))
    health = client.get("/healthz")
    assert health.status_code == 503
    assert health.json()["status"] == "no_model" and "hsops train" in health.json()["message"]
    assert_error(client.post("/v1/predict", json={"descriptions": ["x"]}), 503, "no_model", "hsops train")


def test_input_is_checked_before_the_model_is_needed(home):
    client = TestClient(create_app(RegistrySource(home)))
    assert_error(client.post("/v1/predict", json={"descriptions": []}), 422, "invalid_input")


def test_the_model_appears_once_registered(home, golden_artifact, registrar):
    client = TestClient(create_app(RegistrySource(home)))
    assert client.get("/healthz").status_code == 503
    registrar(home, golden_artifact, "1")
    assert client.get("/healthz").json()["model_version"] == "hs-classifier@1"
    assert client.post("/v1/predict", json={"descriptions": ["MOTORCYCLE"]}).status_code == 200


def test_a_tampered_champion_is_refused_with_503(registered):
    for weights in registered.glob("artifacts/*/linear_weights.npz"):
        weights.write_bytes(b"\x00" + weights.read_bytes()[1:])
    client = TestClient(create_app(RegistrySource(registered)))
    assert_error(client.post("/v1/predict", json={"descriptions": ["x"]}), 503, "model_invalid", "SHA-256")
    health = client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "model_error"


def test_an_internal_failure_is_a_500_with_the_request_id(predictor):
    class Failing:
        model_version = "bad@1"

        def predict(self, texts, top_k=5, explain=False):
            raise RuntimeError("bug")

    client = TestClient(create_app(lambda: Failing()))
    body = assert_error(client.post("/v1/predict", json={"descriptions": ["x"]}), 500, "internal_error")
    assert body["request_id"] in body["message"]


# -- bad input -----------------------------------------------------------------------------------
def test_empty_list_is_refused(client):
    assert_error(client.post("/v1/predict", json={"descriptions": []}), 422, "invalid_input",
                 "descriptions", "at least 1")


def test_too_many_items_names_the_limit(client):
    body = assert_error(client.post("/v1/predict", json={"descriptions": ["a"] * 6}), 422, "invalid_input",
                        "at most 5 items")
    assert body["details"][0]["loc"] == "descriptions"


def test_non_strings_are_refused_by_index(client):
    body = assert_error(client.post("/v1/predict", json={"descriptions": ["ok", 5, None, {"a": 1}]}),
                        422, "invalid_input", "descriptions[1]", "valid string")
    assert [d["loc"] for d in body["details"]] == ["descriptions[1]", "descriptions[2]", "descriptions[3]"]
    assert body["details"][0]["input"] == 5


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_blank_strings_are_refused_by_index(client, blank):
    assert_error(client.post("/v1/predict", json={"descriptions": ["ok", "fine", blank]}), 422,
                 "invalid_input", "descriptions[2]", "blank")


def test_over_long_text_names_index_and_limit(client):
    body = assert_error(client.post("/v1/predict", json={"descriptions": ["ok", "x" * 61]}), 422,
                        "invalid_input", "descriptions[1]", "at most 60 characters")
    assert body["details"][0]["input"].endswith("...")  # the bad value, shortened


def test_text_at_the_limit_is_fine(client):
    assert client.post("/v1/predict", json={"descriptions": ["x" * 60]}).status_code == 200


@pytest.mark.parametrize("payload, fragment", [
    ({"descriptions": "PLASTIC CUPS"}, "valid list"),
    ({}, "descriptions: Field required"),
    (["PLASTIC CUPS"], "valid dictionary"),
    (None, "valid dictionary"),
    ({"descriptions": ["a"], "topk": 3}, "topk: Extra inputs are not permitted"),
    ({"descriptions": ["a"], "top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    ({"descriptions": ["a"], "top_k": 21}, "top_k: Input should be less than or equal to 20"),
    ({"descriptions": ["a"], "top_k": "5"}, "top_k: Input should be a valid integer"),
    ({"descriptions": ["a"], "top_k": 2.5}, "top_k"),
    ({"descriptions": ["a"], "top_k": True}, "top_k"),
    ({"descriptions": ["a"], "explain": "yes"}, "explain"),
])
def test_malformed_fields_are_422_with_the_field_named(client, payload, fragment):
    response = client.post("/v1/predict", content=json.dumps(payload), headers=JSON)
    assert_error(response, 422, "invalid_input", fragment)


@pytest.mark.parametrize("raw", [b'{"descriptions": [', b"{'descriptions': ['a']}", b"descriptions=a",
                                 b'{"descriptions": ["a"]} trailing'])
def test_malformed_json_is_400(client, raw):
    response = client.post("/v1/predict", content=raw, headers=JSON)
    assert_error(response, 400, "malformed_json", "not valid JSON")


@pytest.mark.parametrize("raw, says", [(b'{"descriptions": ["\xff\xfe"]}', "not valid UTF-8"),
                                       (b"[" * 50_000 + b"]" * 50_000, "nested too deeply")])
def test_unreadable_json_is_400_not_500(predictor, raw, says):
    client = TestClient(create_app(lambda: predictor))
    body = assert_error(client.post("/v1/predict", content=raw, headers=JSON), 400, "malformed_json", says)
    assert "Error" not in body["message"]  # the client's terms, not our exception names


def test_empty_body_is_refused(client):
    assert_error(client.post("/v1/predict", content=b"", headers=JSON), 422, "invalid_input",
                 "request body is required")


def test_lone_surrogates_are_refused_not_crashed(client):
    raw = b'{"descriptions": ["ok"], "top_k": "\\ud800"}'
    response = client.post("/v1/predict", content=raw, headers=JSON)
    body = assert_error(response, 422, "invalid_input", "top_k")
    assert body["details"][0]["input"] == "\ud800"  # quoted back, escaped on the wire
    assert_error(client.post("/v1/predict", content=b'{"descriptions": ["\\ud800"]}', headers=JSON),
                 422, "invalid_input", "descriptions[0]")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", None])
def test_wrong_content_type_is_415(client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/predict", content=b'{"descriptions": ["a"]}', headers=headers)
    assert_error(response, 415, "unsupported_media_type", "application/json")


def test_json_with_charset_is_accepted(client):
    response = client.post("/v1/predict", content=b'{"descriptions": ["MOTORCYCLE"]}',
                           headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def _big_body(n_bytes: int) -> bytes:
    return json.dumps({"descriptions": ["x" * n_bytes]}).encode()


def test_body_over_the_limit_is_413(client, sink):
    assert_error(client.post("/v1/predict", content=_big_body(5000), headers=JSON), 413, "payload_too_large",
                 "4000 bytes")
    assert sink.rows == []


def test_chunked_body_over_the_limit_is_413(client):
    body = _big_body(5000)
    chunks = iter([body[i : i + 500] for i in range(0, len(body), 500)])  # no Content-Length
    response = client.post("/v1/predict", content=chunks, headers=JSON)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "payload_too_large")


def test_lying_content_length_is_caught_by_counting(client):
    response = client.post("/v1/predict", content=_big_body(5000), headers={**JSON, "content-length": "100"})
    assert response.request.headers["content-length"] == "100"
    assert_error(response, 413, "payload_too_large")


def test_body_size_is_checked_before_parsing(client):
    # not JSON at all, but too big: the size answer comes first
    assert_error(client.post("/v1/predict", content=b"{" * 5000, headers=JSON), 413, "payload_too_large")


def test_unparseable_content_length_is_400(client):
    response = client.post("/v1/predict", content=b'{"descriptions": ["a"]}',
                           headers={**JSON, "content-length": "ten"})
    assert_error(response, 400, "bad_request", "Content-Length")


def test_unknown_paths_and_methods_use_the_error_body(client):
    assert_error(client.get("/v1/predict"), 405, "method_not_allowed")
    assert_error(client.get("/nowhere"), 404, "not_found")


def test_no_input_reaches_a_500(predictor):
    """A sweep of hostile bodies: each one a 4xx, never a 5xx."""
    client = TestClient(create_app(lambda: predictor))
    bodies = [b"", b"null", b"0", b'""', b"[]", b"{}", b'{"descriptions": [[]]}',
              b'{"descriptions": [1e999]}',
              b'{"descriptions": ["a"], "top_k": NaN}', b'{"descriptions": ["a"], "top_k": -Infinity}',
              b'{"descriptions": {"0": "a"}}', b'{"descriptions": ["a"], "explain": null}',
              b'{"descriptions": ["a"], "top_k": 1' + b"0" * 5000 + b"}", b"\xef\xbb\xbf{",
              b'{"descriptions": ["a"], "\\ud800": 1}', b'{"descriptions": null}']
    for raw in bodies:
        response = client.post("/v1/predict", content=raw, headers=JSON)
        assert 400 <= response.status_code < 500, (raw[:40], response.status_code, response.text)
        assert response.json()["error"] in {"invalid_input", "malformed_json"}


# -- documentation --------------------------------------------------------------------------------
def test_openapi_documents_the_limits(client):
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    schema = spec["components"]["schemas"]["PredictRequest"]["properties"]["descriptions"]
    assert schema["maxItems"] == 5 and schema["minItems"] == 1
    assert schema["items"]["maxLength"] == 60
    assert "413" in spec["paths"]["/v1/predict"]["post"]["responses"]


# -- import weight ----------------------------------------------------------------------------------
def test_serving_imports_no_torch_mlflow_pandas_or_sklearn(artifact_dir):
    """Load a model and answer a request in a fresh interpreter, then inspect sys.modules."""
    script = textwrap.dedent(f"""
        import json, sys
        from fastapi.testclient import TestClient
        import hsops.serving.app
        from hsops.serving import Predictor
        predictor = Predictor.from_dir({str(artifact_dir)!r}, model_version="x@1")
        client = TestClient(hsops.serving.app.create_app(lambda: predictor))
        response = client.post("/v1/predict", json={{"descriptions": ["MOTORCYCLE"], "explain": True}})
        assert response.status_code == 200, response.text
        heavy = ("torch", "mlflow", "pandas", "sklearn")
        print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_import_check_would_see_a_heavy_module():
    """Guards the check above: the same probe does report a module that is imported."""
    script = ("import sys, json, sklearn; "
              "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn'})))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["sklearn"]


def test_source_errors_other_than_missing_models_are_not_hidden(predictor):
    def source():
        raise ArtifactError("manifest unreadable")

    client = TestClient(create_app(source))
    assert_error(client.post("/v1/predict", json={"descriptions": ["x"]}), 503, "model_invalid",
                 "manifest unreadable")


def test_model_not_found_message_is_passed_on():
    def source():
        raise ModelNotFound("no registered model 'hs-classifier'")

    client = TestClient(create_app(source))
    assert_error(client.post("/v1/predict", json={"descriptions": ["x"]}), 503, "no_model",
                 "no registered model 'hs-classifier'", "hsops train")


def test_models_endpoint_lists_versions_with_aliases(registered, registrar, golden_artifact):
    registrar(registered, golden_artifact, "2", aliases=("challenger",),
              calibration={"temperature": 1.5, "threshold": 0.2, "target_accuracy": 0.9})
    app = create_app(RegistrySource(registered), registry_home=registered)
    rows = TestClient(app).get("/v1/models").json()
    assert [(r["version"], r["aliases"]) for r in rows] == [("1", ["champion"]), ("2", ["challenger"])]
    assert rows[0]["name"] == "hs-classifier"


def test_models_endpoint_without_a_registry_is_empty(predictor):
    assert TestClient(create_app(lambda: predictor)).get("/v1/models").json() == []


@pytest.mark.parametrize("text", ["\u0000\u0000", "\u200b", "\ufeff", ".", "😀"])
def test_descriptions_without_letters_or_digits_are_refused_like_ingest(client, text):
    response = client.post("/v1/predict", json={"descriptions": ["PLASTIC CUPS", text]})
    assert response.status_code == 422
    assert "letters or digits" in response.text or "blank" in response.text


# -- hierarchy-aware answers ------------------------------------------------------------------------
def test_every_answer_says_its_level(client, facts):
    body = client.post("/v1/predict", json={"descriptions": ["MOTORCYCLE 125CC", facts["gibberish"]]}).json()
    sure, unsure = body["predictions"]
    assert (sure["level"], sure["heading"], sure["abstain"]) == ("subheading", None, False)
    assert (unsure["level"], unsure["heading"], unsure["abstain"]) == ("none", None, True)


def test_a_heading_answer_comes_through_the_api(artifact_dir, facts):
    from hsops.domain import nomenclature
    from hsops.models import artifact

    calibration = {**facts["calibration"], "threshold": 0.99, "heading_threshold": 0.5}
    (artifact_dir / "calibration.json").write_text(json.dumps(calibration))
    artifact.write_manifest(artifact_dir, {"kind": "linear"})
    predictor = Predictor.from_dir(artifact_dir, model_version="hs-classifier@2")
    client = TestClient(create_app(lambda: predictor))
    (p,) = client.post("/v1/predict", json={"descriptions": ["USED CLOTHING BALES"]}).json()["predictions"]
    assert p["abstain"] is True and p["level"] == "heading" and p["hs_code"] == "630900"
    assert set(p["heading"]) == {"code", "description", "confidence"}
    assert p["heading"]["code"] == "6309" and p["heading"]["description"] == nomenclature().text("6309")
    assert 0.5 <= p["heading"]["confidence"] <= 1


def test_openapi_documents_level_and_heading(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    prediction = schemas["PredictionOut"]
    assert prediction["properties"]["level"]["enum"] == ["subheading", "heading", "none"]
    assert {"level", "heading", "abstain"} <= set(prediction["required"])
    refs = json.dumps(prediction["properties"]["heading"])
    assert "#/components/schemas/HeadingOut" in refs and '"null"' in refs
    assert set(schemas["HeadingOut"]["properties"]) == {"code", "description", "confidence"}
