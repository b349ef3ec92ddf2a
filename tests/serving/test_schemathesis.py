"""Schemathesis against the app's own OpenAPI document, in-process over ASGI: whatever a
client sends that the schema allows (and much that it does not), no operation answers
with a 5xx.

Twice: without a key (keyed operations stop at 401, open ones run to the model) and with
an admin key (admin implies predict), so the job and pipeline operations are exercised
past the key check too. Bounded: a few dozen generated cases per operation, no deadline
(2 shared cores), so the file runs in well under a minute or two.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from hsops.platform.local.backend import LocalBackend
from hsops.platform.local.pipeline_api import pipeline_router
from hsops.platform.local.server import build_app
from hsops.platform.local.state_store import StateStore
from hsops.registry.index import ModelNotFound
from hsops.serving.app import create_app

MAX_EXAMPLES = 50
SETTINGS = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def _no_model():
    raise ModelNotFound("no model: this app only describes the API")


def _described() -> dict:
    """The OpenAPI document, from an app with the same routes and default limits; built at
    import (pytest parametrizes at collection) without touching any home or starting a thread.
    ``test_the_schema_is_the_served_apps`` holds it equal to what the served app publishes."""
    app = create_app(_no_model)
    app.include_router(pipeline_router(None, app.state.require_scope))
    return app.openapi()


SPEC = _described()
schema = schemathesis.openapi.from_dict(SPEC)


@pytest.fixture(scope="module")
def served(tmp_path_factory, golden_artifact, registrar):
    """The full app (jobs, pipelines, keys) of a home with a registered champion, and an
    admin key's header."""
    home = tmp_path_factory.mktemp("schemathesis-home")
    registrar(home, golden_artifact, "1")
    backend = LocalBackend(home)
    backend.objects.put("batch/probes.csv", b"goods_description\nAIR FILTER\nPLASTIC CUPS\n")
    app = build_app(home, backend=backend)
    plain, _ = StateStore(home).add_key("schemathesis", ["admin"])
    yield app, {"authorization": f"Bearer {plain}"}
    app.state.runtime.stop()


def test_the_schema_is_the_served_apps(served):
    app, _ = served
    assert app.openapi() == SPEC
    assert {"/v1/predict", "/v1/predict/async", "/v1/batch", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/results",
            "/v1/pipelines", "/v1/pipelines/{name}", "/v1/models", "/healthz", "/metrics"} <= set(SPEC["paths"])


def test_the_app_serves_again_after_its_lifespan_ran_twice(served):
    """Schemathesis's ASGI client runs the app's lifespan around each test, as test clients
    do: a shutdown must not leave the app refusing every prediction once started again."""
    from fastapi.testclient import TestClient

    app, _ = served
    for _ in range(2):
        with TestClient(app) as client:
            response = client.post("/v1/predict", json={"descriptions": ["AIR FILTER"]})
            assert response.status_code == 200, response.text


@schema.parametrize()
@SETTINGS
def test_no_operation_answers_5xx_without_a_key(case, served):
    app, _ = served
    case.call_and_validate(app=app, checks=[not_a_server_error])


@schema.parametrize()
@SETTINGS
def test_no_operation_answers_5xx_with_an_admin_key(case, served):
    app, headers = served
    case.call_and_validate(app=app, headers=headers, checks=[not_a_server_error])
