"""The Lambda-style ``handler(event, context)``: API Gateway HTTP API (payload 2.0) and REST
API (payload 1.0) events run the same app as the HTTP server and give the same answers;
an event that is not one is a 400 proxy response, never an exception."""

from __future__ import annotations

import base64
import json

import pytest
from fastapi.testclient import TestClient

from hsops.platform.local.server import build_app
from hsops.platform.local.state_store import StateStore
from hsops.serving import lambda_handler

TEXTS = ["70CTNS X 120 PCS PLASTIC WATER BOTTLES[500ML]", "HONDA MOTORCYCLE 150CC", "zzzz qqqq",
         "RUBBER O RING GASKET"]
BODY = {"descriptions": TEXTS, "top_k": 3}


@pytest.fixture
def handler(registered, monkeypatch):
    """The handler on a fresh app for this test's home (HSOPS_HOME is set by ``registered``)."""
    monkeypatch.delenv("HSOPS_LAMBDA_APP", raising=False)  # the default: the local platform's app
    lambda_handler.reset()
    yield lambda_handler.handler
    lambda_handler.reset()


@pytest.fixture
def expected(registered) -> list[dict]:
    """What the app says to BODY over an ordinary HTTP client (request ids aside)."""
    app = build_app(registered)
    try:
        response = TestClient(app).post("/v1/predict", json=BODY)
    finally:
        app.state.runtime.stop()
    assert response.status_code == 200, response.text
    return answers(response.json())


def answers(body: dict) -> list[dict]:
    return [{k: v for k, v in p.items() if k != "request_id"} for p in body["predictions"]]


def v2_event(method="POST", path="/v1/predict", body=None, headers=None, query="", b64=False, **extra) -> dict:
    text = json.dumps(body) if isinstance(body, dict) else body
    if b64 and text is not None:
        text = base64.b64encode(text.encode()).decode()
    return {"version": "2.0", "routeKey": f"{method} {path}", "rawPath": path, "rawQueryString": query,
            "headers": {"content-type": "application/json", **(headers or {})},
            "requestContext": {"http": {"method": method, "path": path, "sourceIp": "203.0.113.7"}},
            "body": text, "isBase64Encoded": b64, **extra}


def v1_event(method="POST", path="/v1/predict", body=None, headers=None, multi_headers=None, query=None,
             multi_query=None, b64=False) -> dict:
    text = json.dumps(body) if isinstance(body, dict) else body
    if b64 and text is not None:
        text = base64.b64encode(text.encode()).decode()
    return {"resource": path, "path": path, "httpMethod": method, "headers": headers,
            "multiValueHeaders": multi_headers, "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "requestContext": {"identity": {"sourceIp": "203.0.113.7"}}, "body": text, "isBase64Encoded": b64}


def body_of(response: dict) -> dict:
    assert response["isBase64Encoded"] is False
    return json.loads(response["body"])


# -- the same answers ---------------------------------------------------------------------------
def test_http_api_event_gives_the_app_answers(handler, expected):
    response = handler(v2_event(body=BODY), None)
    assert response["statusCode"] == 200, response
    assert response["headers"]["content-type"] == "application/json"
    body = body_of(response)
    assert answers(body) == expected
    assert response["headers"]["x-request-id"] == body["request_id"]
    assert "multiValueHeaders" not in response


def test_http_api_event_with_a_base64_body_and_a_query_string(handler, expected):
    response = handler(v2_event(body=BODY, b64=True, query="trace=1&x=%20y"), None)
    assert response["statusCode"] == 200, response
    assert answers(body_of(response)) == expected


def test_rest_api_event_with_multi_value_headers(handler, expected):
    event = v1_event(body=BODY, headers={"Content-Type": "text/plain"},  # multiValueHeaders win
                     multi_headers={"Content-Type": ["application/json"], "X-Forwarded-For": ["a", "b"]},
                     query={"q": "1"}, multi_query={"q": ["1", "2"]})
    response = handler(event, None)
    assert response["statusCode"] == 200, response
    assert answers(body_of(response)) == expected
    assert response["multiValueHeaders"]["content-type"] == ["application/json"]


def test_rest_api_event_with_single_headers_and_base64(handler, expected):
    response = handler(v1_event(body=BODY, headers={"Content-Type": "application/json"}, b64=True), None)
    assert response["statusCode"] == 200, response
    assert answers(body_of(response)) == expected


def test_warm_invocations_reuse_the_app_and_each_gets_its_own_id(handler, expected):
    first = body_of(handler(v2_event(body=BODY), None))
    app = lambda_handler._APP
    second = body_of(handler(v1_event(body=BODY, headers={"content-type": "application/json"}), None))
    assert lambda_handler._APP is app and lambda_handler.COLD["init_ms"] is not None
    assert answers(first) == answers(second) == expected
    assert first["request_id"] != second["request_id"]


def test_answers_are_logged_before_the_handler_returns(handler, registered):
    body = body_of(handler(v2_event(body=BODY), None))
    store = StateStore(registered)
    for text, p in zip(TEXTS, body["predictions"]):
        row = store.get_prediction(p["request_id"])
        assert row is not None and row["text"] == text and row["hs_code"] == p["hs_code"]


def test_healthz_via_both_event_shapes(handler):
    for event in (v2_event("GET", "/healthz"), v1_event("GET", "/healthz")):
        response = handler(event, None)
        assert response["statusCode"] == 200, response
        assert body_of(response) == {"status": "ok", "model_version": "hs-classifier@1", "message": None}


def test_api_errors_come_back_as_proxy_responses(handler):
    invalid = handler(v2_event(body={"descriptions": [" "]}), None)
    assert invalid["statusCode"] == 422 and body_of(invalid)["error"] == "invalid_input"
    not_json = handler(v2_event(body="{", headers={}), None)
    assert not_json["statusCode"] == 400 and body_of(not_json)["error"] == "malformed_json"
    bad_utf8 = handler(v2_event(body=base64.b64encode(b'{"descriptions": ["\xff"]}').decode(), b64=False), None)
    assert bad_utf8["statusCode"] == 400
    undecodable = handler({**v2_event(), "body": base64.b64encode(b'{"descriptions": ["\xff\xfe"]}').decode(),
                           "isBase64Encoded": True}, None)
    assert undecodable["statusCode"] == 400 and body_of(undecodable)["error"] == "malformed_json"
    keyed = handler(v2_event(path="/v1/predict/async", body=BODY), None)
    assert keyed["statusCode"] == 401 and keyed["headers"]["www-authenticate"].startswith("Bearer")
    missing = handler(v2_event("GET", "/v1/nothing-here"), None)
    assert missing["statusCode"] == 404


def test_a_key_in_the_event_headers_is_checked(handler, registered):
    plain, _ = StateStore(registered).add_key("lambda", ["predict"])
    response = handler(v2_event(path="/v1/predict/async", body=BODY, headers={"Authorization": f"Bearer {plain}"}),
                       None)
    assert response["statusCode"] == 202, response
    assert body_of(response)["status"] == "queued"


def test_a_non_text_response_is_base64_encoded(handler):
    response = handler(v2_event("GET", "/metrics"), None)
    assert response["statusCode"] == 200
    if response["isBase64Encoded"]:
        text = base64.b64decode(response["body"]).decode()
    else:
        text = response["body"]
    assert "hsops_http_requests" in text


# -- malformed events -------------------------------------------------------------------------------
def _bad(**changes) -> dict:
    return {**v2_event(body=BODY), **changes}


MALFORMED = {
    "a list": [1, 2],
    "a string": "POST /v1/predict",
    "None": None,
    "an empty object": {},
    "neither shape": {"path": "/v1/predict", "body": "{}"},
    "v2 without a path": _bad(rawPath=None),
    "v2 with a relative path": _bad(rawPath="v1/predict"),
    "v2 without a method": _bad(requestContext={"http": {}}),
    "v2 with a number for method": _bad(requestContext={"http": {"method": 5}}),
    "v1 without a path": {"httpMethod": "GET"},
    "a body that is an object": _bad(body={"descriptions": ["x"]}),
    "a body that is a list": _bad(body=["x"]),
    "a body that is an empty list": _bad(body=[]),
    "a body that is a number": _bad(body=0),
    "bad base64": _bad(body="not base64 !!", isBase64Encoded=True),
    "headers as a list": _bad(headers=[["content-type", "application/json"]]),
    "headers as a string": _bad(headers="content-type: application/json"),
    "requestContext as a string": _bad(requestContext="POST"),
    "http as a list": _bad(requestContext={"http": ["POST"]}),
    "a number for the query string": _bad(rawQueryString=5),
    "cookies as an object": _bad(cookies={"a": "b"}),
    "v1 query parameters as a list": {**v1_event(body=BODY), "queryStringParameters": ["a"]},
    "v1 multi-value headers as a list": {**v1_event(body=BODY), "multiValueHeaders": ["a"]},
    "v1 multi-value header values not a list": {**v1_event(body=BODY),
                                                "multiValueHeaders": {"content-type": "application/json"}},
    "v1 identity as a string": {**v1_event(body=BODY), "requestContext": {"identity": "1.2.3.4"}},
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_event_is_a_400_proxy_response(handler, name):
    response = handler(MALFORMED[name], None)
    assert response["statusCode"] == 400, response
    assert response["isBase64Encoded"] is False
    body = json.loads(response["body"])
    assert body["error"] == "bad_event" and body["message"]


def test_the_app_is_not_built_for_a_malformed_event(handler):
    handler(["not", "an", "event"], None)
    assert lambda_handler._APP is None  # a cold start is not spent on garbage


def call_custom_app(monkeypatch, tmp_path, module: str, route: str) -> dict:
    """The handler on ``HSOPS_LAMBDA_APP=<module>:make``, an app with one GET ``route``
    that runs ``ROUTE_BODIES[module]``; one event to ``route``, the proxy response."""
    (tmp_path / f"{module}.py").write_text(
        "from fastapi import FastAPI\n\n"
        "def make():\n"
        "    app = FastAPI()\n\n"
        f"    @app.get('{route}')\n"
        "    def handle():\n"
        f"        {ROUTE_BODIES[module]}\n"
        "    return app\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("HSOPS_LAMBDA_APP", f"{module}:make")
    lambda_handler.reset()
    try:
        return lambda_handler.handler(v2_event("GET", route), None)
    finally:
        lambda_handler.reset()


ROUTE_BODIES = {"custom_lambda_app": "return {'app': 'custom'}", "failing_lambda_app": "raise RuntimeError('a bug')"}


def test_a_custom_app_factory_is_honoured(registered, monkeypatch, tmp_path):
    response = call_custom_app(monkeypatch, tmp_path, "custom_lambda_app", "/who")
    assert response["statusCode"] == 200 and json.loads(response["body"]) == {"app": "custom"}


def test_an_error_inside_the_app_is_a_500_proxy_response_not_a_raise(registered, monkeypatch, tmp_path):
    """Starlette answers 500 and then re-raises; on AWS a raise is an invocation error
    (retried, or lost to the caller), so the handler returns the answer instead."""
    assert call_custom_app(monkeypatch, tmp_path, "failing_lambda_app", "/boom")["statusCode"] == 500


def test_a_malformed_callback_url_is_a_422_through_the_handler(handler, registered):
    plain, _ = StateStore(registered).add_key("t", ["predict"])
    response = handler(v2_event(body={"descriptions": ["AIR FILTER"], "callback_url": "http://[::1"},
                                path="/v1/predict/async", headers={"authorization": f"Bearer {plain}"}), None)
    assert response["statusCode"] == 422 and "not a valid URL" in body_of(response)["message"]
