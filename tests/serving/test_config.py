"""Serving settings from ``HSOPS_HOME/serving.json``: every mistake is an error that names
the key, overrides apply in order, and CORS is closed unless an origin is configured."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from hsops.serving import Predictor
from hsops.serving.app import create_app
from hsops.serving.config import CONFIG_FILE, ConfigError, ServingConfig, load_config


def write_config(home, content) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    (home / CONFIG_FILE).write_text(text, encoding="utf-8")


# -- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize("content, named", [
    ({"batching": {"max_wiat_ms": 1}}, "batching.max_wiat_ms"),
    ({"replica": {"min": 1}}, "replica"),
    ({"auth": {"predict_requires_key": True, "admin_only": True}}, "auth.admin_only"),
])
def test_an_unknown_key_is_refused_by_name(home, content, named):
    write_config(home, content)
    with pytest.raises(ConfigError, match="unknown") as refused:
        load_config(home)
    assert repr(named) in str(refused.value)


@pytest.mark.parametrize("content, named, expected", [
    ({"auth": {"predict_requires_key": "yes"}}, "auth.predict_requires_key", "true or false"),
    ({"auth": {"predict_requires_key": 1}}, "auth.predict_requires_key", "true or false"),
    ({"limits": {"max_items": "10"}}, "limits.max_items", "number"),
    ({"limits": {"max_items": 2.5}}, "limits.max_items", "whole number"),
    ({"batching": {"max_wait_ms": True}}, "batching.max_wait_ms", "number"),
    ({"batching": {"max_wait_ms": None}}, "batching.max_wait_ms", "number"),
    ({"batching": {"max_wait_ms": [1]}}, "batching.max_wait_ms", "number"),
    ({"cors_origins": "https://app.example"}, "cors_origins", "list of strings"),
    ({"jobs": {"callback_hosts": ["127.0.0.1", 5]}}, "jobs.callback_hosts", "list of strings"),
    ({"json_logs": "false"}, "json_logs", "true or false"),
    ({"limits": 5}, "limits", "object"),
    ({"replicas": []}, "replicas", "object"),
])
def test_a_value_of_the_wrong_type_is_refused_by_name(home, content, named, expected):
    write_config(home, content)
    with pytest.raises(ConfigError, match=expected) as refused:
        load_config(home)
    assert str(refused.value).startswith(named)


@pytest.mark.parametrize("text, named", [
    ('{"batching": {"max_wait_ms": NaN}}', "batching.max_wait_ms"),
    ('{"batching": {"queue_timeout_ms": Infinity}}', "batching.queue_timeout_ms"),
    ('{"auth": {"rate_limit_per_key": -Infinity}}', "auth.rate_limit_per_key"),
    ('{"limits": {"max_items": 1e400}}', "limits.max_items"),
    ('{"limits": {"max_items": -1}}', "limits.max_items"),
    ('{"batching": {"max_wait_ms": -0.5}}', "batching.max_wait_ms"),
    ('{"auth": {"key_cache_seconds": -5}}', "auth.key_cache_seconds"),
])
def test_non_finite_and_negative_numbers_are_refused_by_name(home, text, named):
    write_config(home, text)
    with pytest.raises(ConfigError, match="finite number >= 0") as refused:
        load_config(home)
    assert str(refused.value).startswith(named)


@pytest.mark.parametrize("content, named", [
    ({"limits": {"max_items": 0}}, "limits.max_items"),
    ({"limits": {"max_text_chars": 0}}, "limits.max_text_chars"),
    ({"limits": {"max_body_bytes": 0}}, "limits.max_body_bytes"),
    ({"limits": {"max_batch_items": 0}}, "limits.max_batch_items"),
    ({"batching": {"queue_timeout_ms": 0}}, "batching.queue_timeout_ms"),
    ({"jobs": {"runners": 0}}, "jobs.runners"),
    ({"jobs": {"chunk_rows": 0}}, "jobs.chunk_rows"),
    ({"jobs": {"lease_seconds": 0}}, "jobs.lease_seconds"),
])
def test_a_zero_that_would_refuse_or_stall_everything_is_refused(home, content, named):
    """A zero limit would make every request a 413/422, every request shed, or jobs never
    run: a typo, not a setting."""
    write_config(home, content)
    with pytest.raises(ConfigError) as refused:
        load_config(home)
    assert named in str(refused.value)


@pytest.mark.parametrize("text", ["{", "", "[1, 2]", '"serving"', "\ufeff{\"limits\": }"])
def test_a_file_that_is_not_a_json_object_is_refused(home, text):
    write_config(home, text)
    with pytest.raises(ConfigError) as refused:
        load_config(home)
    assert str(refused.value).startswith(CONFIG_FILE)


@pytest.mark.parametrize("content, named", [({"limits": {"max_body_bytes": 1e308}}, "limits.max_body_bytes"),
                                            ({"limits": {"body_timeout_s": 1e13}}, "limits.body_timeout_s")])
def test_a_limit_too_large_to_mean_anything_is_refused(home, content, named):
    write_config(home, content)
    with pytest.raises(ConfigError, match="too large") as refused:
        load_config(home)
    assert str(refused.value).startswith(named)


def test_undecodable_bytes_are_refused_not_crashed(home):
    (home / CONFIG_FILE).write_bytes(b'{"limits": {"max_items": 5}}\xff')
    with pytest.raises(ConfigError, match=CONFIG_FILE):
        load_config(home)


@pytest.mark.parametrize("content, fragment", [
    ({"replicas": {"min": 3, "max": 2}}, "min <= max"),
    ({"replicas": {"min": 0}}, "min <= max"),
    ({"replicas": {"scale_down_utilization": 0.9}}, "scale_down_utilization"),
    ({"batching": {"max_batch": 64, "max_queue": 32}}, "max_batch <= max_queue"),
    ({"limits": {"max_items": 300}, "batching": {"max_queue": 256, "max_batch": 256}}, "max_items"),
])
def test_inconsistent_settings_are_refused(home, content, fragment):
    write_config(home, content)
    with pytest.raises(ConfigError, match=fragment):
        load_config(home)


@pytest.mark.parametrize("origin", ["*", "null", "app.example", "ftp://app.example"])
def test_a_cors_wildcard_or_non_http_origin_is_refused(home, origin):
    write_config(home, {"cors_origins": ["https://ok.example", origin]})
    with pytest.raises(ConfigError, match="cors_origins") as refused:
        load_config(home)
    assert repr(origin) in str(refused.value)


# -- what applies --------------------------------------------------------------------------------
def test_defaults_without_a_file(home):
    assert not (home / CONFIG_FILE).exists()
    assert load_config(home) == ServingConfig()
    assert load_config(None) == ServingConfig()
    assert ServingConfig().cors_origins == ()


def test_file_values_apply_and_explicit_overrides_win(home):
    write_config(home, {"batching": {"max_wait_ms": 1, "max_queue": 512}, "auth": {"rate_limit_per_key": 20},
                        "jobs": {"callback_hosts": ["hooks.internal"]}, "json_logs": False})
    config = load_config(home)
    assert config.batching.max_wait_ms == 1.0 and isinstance(config.batching.max_wait_ms, float)
    assert config.batching.max_queue == 512 and isinstance(config.batching.max_queue, int)
    assert config.batching.max_batch == ServingConfig().batching.max_batch  # untouched keys keep defaults
    assert config.auth.rate_limit_per_key == 20.0
    assert config.jobs.callback_hosts == ("hooks.internal",)
    assert config.json_logs is False

    overridden = load_config(home, {"batching": {"max_wait_ms": 0}, "auth": {"predict_requires_key": True}})
    assert overridden.batching.max_wait_ms == 0.0
    assert overridden.batching.max_queue == 512  # the file's value stays where not overridden
    assert overridden.auth.predict_requires_key is True and overridden.auth.rate_limit_per_key == 20.0


def test_an_override_is_checked_like_the_file(home):
    with pytest.raises(ConfigError, match="batching.max_wait"):
        load_config(home, {"batching": {"max_wait": 1}})
    with pytest.raises(ConfigError, match="min <= max"):
        load_config(home, {"replicas": {"min": 5, "max": 4}})


def test_a_nullable_setting_takes_null(home):
    write_config(home, {"auth": {"rate_limit_per_key": 5}})
    assert load_config(home).auth.rate_limit_per_key == 5.0
    write_config(home, {"auth": {"rate_limit_per_key": None}})
    assert load_config(home).auth.rate_limit_per_key is None


def test_the_config_reaches_the_app(home, artifact_dir):
    write_config(home, {"limits": {"max_items": 2, "max_text_chars": 30}})
    predictor = Predictor.from_dir(artifact_dir, model_version="hs-classifier@1")
    client = TestClient(create_app(lambda: predictor, config=load_config(home)))
    assert client.post("/v1/predict", json={"descriptions": ["AIR FILTER", "O RING"]}).status_code == 200
    too_many = client.post("/v1/predict", json={"descriptions": ["AIR FILTER"] * 3})
    assert too_many.status_code == 422 and "2" in too_many.json()["message"]
    too_long = client.post("/v1/predict", json={"descriptions": ["AIR FILTER " * 4]})
    assert too_long.status_code == 422 and "30" in too_long.json()["message"]


# -- CORS -------------------------------------------------------------------------------------------
@pytest.fixture
def predictor(artifact_dir) -> Predictor:
    return Predictor.from_dir(artifact_dir, model_version="hs-classifier@1")


def preflight(client, origin: str):
    return client.options("/v1/predict", headers={"origin": origin, "access-control-request-method": "POST",
                                                  "access-control-request-headers": "content-type"})


def test_cors_is_closed_by_default(home, predictor):
    client = TestClient(create_app(lambda: predictor, config=load_config(home)))
    simple = client.post("/v1/predict", json={"descriptions": ["AIR FILTER"]},
                         headers={"origin": "https://shop.example"})
    assert simple.status_code == 200  # a server-side client is not affected...
    assert "access-control-allow-origin" not in simple.headers  # ...but a browser gets no permission
    answer = preflight(client, "https://shop.example")
    assert "access-control-allow-origin" not in answer.headers
    assert "access-control-allow-methods" not in answer.headers


def test_cors_opens_for_a_configured_origin_only(home, predictor):
    write_config(home, {"cors_origins": ["https://shop.example"]})
    client = TestClient(create_app(lambda: predictor, config=load_config(home)))
    allowed = preflight(client, "https://shop.example")
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://shop.example"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    simple = client.post("/v1/predict", json={"descriptions": ["AIR FILTER"]},
                         headers={"origin": "https://shop.example"})
    assert simple.status_code == 200
    assert simple.headers["access-control-allow-origin"] == "https://shop.example"

    other = preflight(client, "https://evil.example")
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
    assert "access-control-allow-origin" not in client.post(
        "/v1/predict", json={"descriptions": ["AIR FILTER"]}, headers={"origin": "https://evil.example"}).headers


@pytest.mark.parametrize("host, keyed", [("127.0.0.1", False), ("::1", False), ("localhost", False),
                                         ("0.0.0.0", True), ("::", True), ("192.0.2.7", True),
                                         ("serving.internal", True)])
def test_listening_beyond_loopback_requires_keys(home, host, keyed):
    """Open-on-localhost defaults must not become open-to-the-network ones."""
    from hsops.platform.local.replicas import ReplicaSupervisor

    supervisor = ReplicaSupervisor(home, host=host, port=1)  # built, not started: nothing listens
    auth = supervisor.config.auth
    assert auth.predict_requires_key is keyed and auth.metrics_requires_key is keyed
    assert supervisor.overrides.get("auth", {}).get("predict_requires_key", False) is keyed  # what replicas get
    assert any(e["event"] == "keys_required" for e in supervisor.events) is keyed
