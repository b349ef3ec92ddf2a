"""API keys: stored hashed, with scopes; and every route's key check over the real app
(``build_app``: the state store holds the keys, the local backend the jobs and pipelines)."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from hsops.platform.local.backend import LocalBackend
from hsops.platform.local.server import build_app
from hsops.platform.local.state_store import StateStore
from hsops.serving.auth import KEY_PATTERN, hash_secret
from hsops.serving.config import CONFIG_FILE, load_config

BODY = {"descriptions": ["AIR FILTER FOR TRUCK ENGINE"]}
UNKNOWN_KEY = "hsk_0123456789ab_" + "A" * 43


# -- the store ---------------------------------------------------------------------------------
def test_a_key_is_stored_only_as_its_hash(home):
    store = StateStore(home)
    plain, record = store.add_key("broker integration", ["predict", "feedback"])
    match = KEY_PATTERN.match(plain)
    assert match is not None and match.group(1) == record.key_id
    secret = match.group(2)
    assert record.secret_hash == hash_secret(record.key_id, secret)
    assert store.get_key(record.key_id) == record
    store.close()
    # every byte SQLite wrote (the database and its write-ahead log)
    stored = b"".join(p.read_bytes() for p in home.iterdir() if p.name.startswith("state.db"))
    assert record.secret_hash.encode() in stored  # what is kept, so the bytes read are the right ones
    assert plain.encode() not in stored and secret.encode() not in stored
    assert secret[:16].encode() not in stored
    assert record.secret_hash not in repr(record) and secret not in repr(record)


def test_each_key_is_new(home):
    store = StateStore(home)
    (a, ra), (b, rb) = store.add_key("a", ["predict"]), store.add_key("a", ["predict"])
    assert a != b and ra.key_id != rb.key_id and ra.secret_hash != rb.secret_hash
    assert sorted(r.key_id for r in store.list_keys()) == sorted([ra.key_id, rb.key_id])


@pytest.mark.parametrize("scopes", [[], ["root"], ["predict", "everything"], ["PREDICT"]])
def test_unknown_or_no_scopes_are_refused(home, scopes):
    store = StateStore(home)
    with pytest.raises(ValueError, match="scopes must be some of predict, feedback, admin"):
        store.add_key("x", scopes)
    assert store.list_keys() == []


@pytest.mark.parametrize("name", ["", "   ", "x" * 101, "a\nb", "ops\x1b[31m", "tab\tname"])
def test_a_key_needs_a_name(home, name):
    with pytest.raises(ValueError, match="name"):
        StateStore(home).add_key(name, ["predict"])


def test_duplicate_scopes_collapse(home):
    _, record = StateStore(home).add_key("x", ["predict", "admin", "predict"])
    assert record.scopes == ("predict", "admin")


def test_revoke(home):
    store = StateStore(home)
    _, record = store.add_key("x", ["predict"])
    _, other = store.add_key("y", ["predict"])
    assert store.revoke_key(record.key_id) is True
    assert store.get_key(record.key_id).revoked_at is not None
    assert store.revoke_key(record.key_id) is False  # already revoked
    assert store.revoke_key("000000000000") is False
    assert store.get_key(other.key_id).revoked_at is None


# -- over the app ----------------------------------------------------------------------------------
@pytest.fixture
def api(registered):
    """``api(config)``: a TestClient on ``build_app`` for the registered home, with the
    pipeline routes, after writing ``config`` to serving.json."""
    runtimes = []

    def make(config: dict | None = None) -> TestClient:
        if config is not None:
            (registered / CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
        app = build_app(registered, backend=LocalBackend(registered), config=load_config(registered))
        runtimes.append(app.state.runtime)
        return TestClient(app)
    yield make
    for runtime in runtimes:
        runtime.stop()


@pytest.fixture
def key(registered):
    store = StateStore(registered)

    def make(*scopes: str) -> dict:
        plain, _ = store.add_key("tests", scopes)
        return {"authorization": f"Bearer {plain}"}
    return make


# routes that need a key whatever the settings: (method, path, json body)
KEYED = [
    ("POST", "/v1/predict/async", BODY),
    ("POST", "/v1/batch", BODY),
    ("GET", "/v1/jobs/job-0000000000000000", None),
    ("GET", "/v1/jobs/job-0000000000000000/results", None),
    ("DELETE", "/v1/jobs/job-0000000000000000", None),
    ("POST", "/v1/pipelines", {"dataset_version": "latest"}),
]


def call(client, method, path, body=None, headers=None):
    return client.request(method, path, json=body, headers=headers)


def assert_401(response):
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("method, path, body", KEYED)
def test_a_keyed_route_without_a_key_is_401_with_www_authenticate(api, method, path, body):
    response = call(api(), method, path, body)
    assert_401(response)
    assert "API key" in response.json()["message"]


@pytest.mark.parametrize("path", ["/v1/predict/async", "/v1/batch"])
def test_no_key_is_401_before_the_body_is_read(api, path):
    """Without any credentials a keyed POST is refused before its body is parsed: a
    malformed body is still 401, not 400."""
    assert_401(api().post(path, content=b"{", headers={"content-type": "application/json"}))


@pytest.mark.parametrize("method, path, content, headers", [
    ("POST", "/v1/predict/async", b"{{{", {"content-type": "application/json"}),  # would be 400
    ("POST", "/v1/predict", b"{{{", {"content-type": "application/json"}),
    ("POST", "/v1/batch", b"{}", {}),  # would be 415
    ("POST", "/v1/predict", b"x", {"content-length": "999999999"}),  # would be 413
    ("GET", "/metrics", None, {}),  # open, but a wrong key is still wrong
    ("GET", "/healthz", None, {}),
])
def test_a_wrong_key_is_401_before_anything_else_is_checked(api, method, path, content, headers):
    response = api().request(method, path, content=content, headers={**headers, "x-api-key": UNKNOWN_KEY})
    assert_401(response)


@pytest.mark.parametrize("method, path, body", KEYED)
@pytest.mark.parametrize("header", [
    {"authorization": f"Bearer {UNKNOWN_KEY}"},  # well formed, no such key
    {"x-api-key": UNKNOWN_KEY},
    {"authorization": "Bearer not-a-key"},  # malformed
    {"authorization": "Basic dXNlcjpwYXNz"},  # another scheme
    {"authorization": "Bearer "},
    {"x-api-key": "hsk_0123456789ab_short"},
])
def test_a_wrong_or_malformed_key_is_401(api, method, path, body, header):
    assert_401(call(api(), method, path, body, header))


def test_a_right_id_with_a_wrong_secret_is_401(api, registered):
    plain, _ = StateStore(registered).add_key("x", ["predict"])
    forged = plain[:-4] + ("AAAA" if not plain.endswith("AAAA") else "BBBB")
    response = api().post("/v1/predict/async", json=BODY, headers={"x-api-key": forged})
    assert_401(response)
    assert forged not in response.text


@pytest.mark.parametrize("method, path, body", KEYED)
def test_a_key_without_the_scope_is_403(api, key, method, path, body):
    scope = "predict" if path.startswith("/v1/pipelines") else "feedback"
    response = call(api(), method, path, body, key(scope))
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden"
    assert "www-authenticate" not in response.headers


def test_the_right_scope_passes_and_admin_implies_predict(api, key):
    client = api()
    for headers in (key("predict"), key("admin"), key("feedback", "predict")):
        submitted = client.post("/v1/predict/async", json=BODY, headers=headers)
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["job_id"]
        status = client.get(f"/v1/jobs/{job_id}", headers=headers)
        assert status.status_code == 200 and status.json()["status"] == "queued"
    pipeline = client.post("/v1/pipelines", json={"dataset_version": "latest"}, headers=key("admin"))
    assert pipeline.status_code == 202, pipeline.text


def test_a_job_is_visible_to_its_own_key_and_to_admin_only(api, key):
    client = api()
    owner, stranger, admin = key("predict"), key("predict"), key("admin")
    job_id = client.post("/v1/batch", json=BODY, headers=owner).json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=owner).status_code == 200
    hidden = client.get(f"/v1/jobs/{job_id}", headers=stranger)
    assert hidden.status_code == 404  # not even its existence
    assert client.delete(f"/v1/jobs/{job_id}", headers=stranger).status_code == 404
    assert client.get(f"/v1/jobs/{job_id}", headers=owner).json()["status"] == "queued"
    assert client.get(f"/v1/jobs/{job_id}", headers=admin).status_code == 200
    cancelled = client.delete(f"/v1/jobs/{job_id}", headers=owner)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert "key_id" not in cancelled.json()
    again = client.delete(f"/v1/jobs/{job_id}", headers=owner)  # it has ended: nothing to cancel
    assert again.status_code == 409 and "already ended (cancelled)" in again.json()["message"]


def test_open_routes_need_no_key_but_refuse_a_wrong_one(api, key):
    client = api()
    assert client.post("/v1/predict", json=BODY).status_code == 200
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/pipelines").status_code == 200
    for path in ("/v1/predict", "/v1/models", "/v1/pipelines"):
        body = BODY if path == "/v1/predict" else None
        method = "POST" if body else "GET"
        assert_401(call(client, method, path, body, {"authorization": f"Bearer {UNKNOWN_KEY}"}))
        assert_401(call(client, method, path, body, {"authorization": "Token abc"}))
    # a valid key of any scope that grants predict is fine on an open route; one that does not is 403
    assert client.post("/v1/predict", json=BODY, headers=key("predict")).status_code == 200
    assert client.post("/v1/predict", json=BODY, headers=key("feedback")).status_code == 403


def test_predict_requires_key_makes_real_time_prediction_keyed(api, key):
    client = api({"auth": {"predict_requires_key": True}})
    assert_401(client.post("/v1/predict", json=BODY))
    assert_401(client.get("/v1/models"))
    assert client.post("/v1/predict", json=BODY, headers=key("feedback")).status_code == 403
    allowed = client.post("/v1/predict", json=BODY, headers=key("predict"))
    assert allowed.status_code == 200 and allowed.json()["predictions"][0]["hs_code"] == "842131"
    assert client.post("/v1/predict", json=BODY, headers=key("admin")).status_code == 200
    assert client.get("/healthz").status_code == 200  # health stays open for load balancers


def test_metrics_requires_an_admin_key_when_configured(api, key):
    assert api().get("/metrics").status_code == 200
    client = api({"auth": {"metrics_requires_key": True}})
    assert_401(client.get("/metrics"))
    assert client.get("/metrics", headers=key("predict")).status_code == 403
    response = client.get("/metrics", headers=key("admin"))
    assert response.status_code == 200 and "hsops_http_requests" in response.text


def test_over_the_rate_limit_a_key_gets_429_with_retry_after(api, key):
    client = api({"auth": {"rate_limit_per_key": 0.01, "rate_burst": 2}})
    busy, calm = key("predict"), key("predict")
    statuses = [client.post("/v1/predict", json=BODY, headers=busy).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = client.post("/v1/predict", json=BODY, headers=busy)
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    # the limit is per key, and keyless calls on an open route are not counted against anyone
    assert client.post("/v1/predict", json=BODY, headers=calm).status_code == 200
    assert client.post("/v1/predict", json=BODY).status_code == 200
    # keyed job routes are limited too
    assert client.post("/v1/predict/async", json=BODY, headers=busy).status_code == 429


def test_a_revoked_key_stops_working(api, registered):
    client = api({"auth": {"key_cache_seconds": 0, "predict_requires_key": True}})
    store = StateStore(registered)
    plain, record = store.add_key("leaked", ["predict"])
    headers = {"authorization": f"Bearer {plain}"}
    assert client.post("/v1/predict", json=BODY, headers=headers).status_code == 200
    assert client.post("/v1/predict/async", json=BODY, headers=headers).status_code == 202
    assert store.revoke_key(record.key_id)
    refused = client.post("/v1/predict", json=BODY, headers=headers)
    assert_401(refused)
    assert "revoked" in refused.json()["message"]
    assert_401(client.post("/v1/predict/async", json=BODY, headers=headers))


def test_a_key_created_after_start_works_at_once(api, registered):
    client = api({"auth": {"predict_requires_key": True}})
    assert_401(client.post("/v1/predict", json=BODY, headers={"authorization": f"Bearer {UNKNOWN_KEY}"}))
    plain, _ = StateStore(registered).add_key("new", ["predict"])
    assert client.post("/v1/predict", json=BODY, headers={"authorization": f"Bearer {plain}"}).status_code == 200


def test_no_response_echoes_the_key(api, key):
    client = api()
    headers = key("feedback")
    secret = headers["authorization"].split()[1]
    for response in (client.post("/v1/predict/async", json=BODY, headers=headers),
                     client.post("/v1/predict", json={"descriptions": [" "]}, headers=headers),
                     client.get("/v1/jobs/nope", headers={"x-api-key": secret[:-1] + "x"})):
        assert response.status_code in (401, 403, 422)
        assert secret not in response.text and secret[:-1] not in response.text
