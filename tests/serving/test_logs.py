"""JSON logs of the serving path: one object a line, the request id on the access line,
and never an API key, wherever a key turns up (header, message, extra field, traceback)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi.testclient import TestClient

from hsops.platform.local.server import build_app
from hsops.platform.local.state_store import StateStore
from hsops.serving.logs import REDACTED, configure_logging, redact

LOGGERS = ("hsops", "uvicorn", "uvicorn.error", "uvicorn.access")


@pytest.fixture
def captured():
    """``configure_logging`` onto a buffer; the loggers are put back as they were after."""
    saved = {name: (logging.getLogger(name).level, logging.getLogger(name).propagate,
                    list(logging.getLogger(name).handlers), logging.getLogger(name).disabled) for name in LOGGERS}
    made: list[logging.Handler] = []

    def configure(json_logs: bool = True) -> io.StringIO:
        stream = io.StringIO()
        made.append(configure_logging(json_logs=json_logs, stream=stream))
        return stream
    yield configure
    for name, (level, propagate, handlers, disabled) in saved.items():
        logger = logging.getLogger(name)
        for handler in made:
            logger.removeHandler(handler)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


def records(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.fixture
def client(registered):
    app = build_app(registered)
    yield TestClient(app)
    app.state.runtime.stop()


@pytest.fixture
def plain_key(registered) -> str:
    plain, _ = StateStore(registered).add_key("logs", ["predict"])
    return plain


def test_every_line_is_json_and_the_access_line_carries_the_request_id(captured, client, plain_key):
    stream = captured()
    response = client.post("/v1/predict", json={"descriptions": ["AIR FILTER", "O RING"]},
                           headers={"authorization": f"Bearer {plain_key}"})
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]
    lines = stream.getvalue().splitlines()
    assert lines and all(json.loads(line) for line in lines)  # every line parses
    (access,) = [r for r in records(stream) if r.get("request_id") == request_id]
    assert access["logger"] == "hsops.serving.access" and access["level"] == "info"
    assert access["method"] == "POST" and access["route"] == "/v1/predict" and access["status"] == 200
    assert access["key_id"] == plain_key.split("_")[1]  # the key's id, which is not a secret
    assert access["model_version"] == "hs-classifier@1" and access["items"] == 2
    assert access["duration_ms"] >= 0 and access["ts"].endswith("+00:00")


def test_refused_requests_are_logged_with_their_id(captured, client):
    stream = captured()
    response = client.post("/v1/predict/async", json={"descriptions": ["AIR FILTER"]})
    assert response.status_code == 401
    (access,) = [r for r in records(stream) if r.get("request_id") == response.headers["x-request-id"]]
    assert access["status"] == 401 and access["key_id"] is None


def test_a_key_in_a_header_never_reaches_the_log(captured, client, plain_key):
    stream = captured()
    secret = plain_key.split("_", 2)[2]
    sent = [
        client.post("/v1/predict", json={"descriptions": ["AIR FILTER"]}, headers={"x-api-key": plain_key}),
        client.post("/v1/predict/async", json={"descriptions": ["AIR FILTER"]},
                    headers={"authorization": f"Bearer {plain_key[:-2]}zz"}),  # wrong, but still a secret
        client.get("/v1/jobs/nope", headers={"authorization": f"Bearer {plain_key}"}),
        client.post("/v1/predict", json={"descriptions": [f"key {plain_key}"]}),  # pasted into a text
    ]
    assert [r.status_code for r in sent] == [200, 401, 404, 200]
    logged = stream.getvalue()
    assert {r.headers["x-request-id"] for r in sent} <= {r.get("request_id") for r in records(stream)}
    assert secret not in logged and secret[:20] not in logged


@pytest.mark.parametrize("json_logs", [True, False])
def test_a_key_that_ends_up_in_a_message_is_redacted(captured, plain_key, json_logs):
    stream = captured(json_logs)
    secret = plain_key.split("_", 2)[2]
    log = logging.getLogger("hsops.serving.anything")
    log.warning("client sent %s", plain_key)
    log.warning("headers were %r", {"Authorization": f"Bearer {plain_key}"})
    log.warning("raw header x-api-key: %s", secret)  # not key-shaped, but named as a key
    log.warning("Authorization: Bearer some-opaque-token-1234")
    log.info("field", extra={"client_key": plain_key, "note": f"from bearer {secret}"})
    log.info("structured", extra={"headers": {"x-api-key": plain_key}, "keys": [plain_key]})
    try:
        raise ValueError(f"bad key {plain_key}")
    except ValueError:
        log.exception("failed while checking")
    out = stream.getvalue()
    assert secret not in out and "some-opaque-token-1234" not in out
    if json_logs:
        assert out.count(REDACTED) >= 8  # the extra fields are on the line too
        lines = records(stream)
        assert len(lines) == 7
        assert lines[0]["message"] == f"client sent {REDACTED}"
        assert "ValueError" in lines[-1]["exception"]
    else:
        assert out.count(REDACTED) >= 5
        assert "ValueError" in out and "failed while checking" in out


def test_redact_leaves_ordinary_text_alone():
    text = "POST /v1/predict 200 hsk_id 0123456789ab PLASTIC CUPS bearer of news"
    assert redact("POST /v1/predict 200 PLASTIC CUPS") == "POST /v1/predict 200 PLASTIC CUPS"
    assert "PLASTIC CUPS" in redact(text)
    assert redact("key hsk_0123456789ab_" + "x" * 43 + " end") == f"key {REDACTED} end"


def test_configuring_twice_does_not_double_the_lines(captured, client):
    captured()
    stream = captured()
    response = client.post("/v1/predict", json={"descriptions": ["AIR FILTER"]})
    assert [r.get("request_id") for r in records(stream)].count(response.headers["x-request-id"]) == 1
