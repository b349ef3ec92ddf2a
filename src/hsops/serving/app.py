"""The prediction HTTP API (FastAPI): one Predictor behind every inference pattern.

- real time: ``POST /v1/predict``, micro-batched with concurrent requests
  (``serving.batcher``);
- async: ``POST /v1/predict/async`` answers 202 with a job id; poll ``GET /v1/jobs/{id}``
  or receive a callback;
- batch: ``POST /v1/batch`` on a file in the object store or inline descriptions, with
  progress at ``GET /v1/jobs/{id}`` and the predictions file at ``.../results``;
- the Lambda-style ``handler(event, context)`` of ``serving.lambda_handler`` runs this
  same app for API Gateway events.

``create_app`` takes a zero-argument *predictor source* rather than a Predictor, so the
caller decides what "the current model" is (a fixed artifact in tests, the registry's
champion in ``hsops serve``) and a missing model is a 503 that says what to do, not a
crash at start-up. Errors, the body limit and input checks are in ``serving.errors``;
API keys and scopes in ``serving.auth``.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
at runtime and the request models are local classes built per app.
"""

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from hsops import __version__
from hsops.models.artifact import ArtifactError
from hsops.registry.index import ModelNotFound, read_index
from hsops.serving import metrics
from hsops.serving.auth import AuthError, Authenticator, KeyStore, RateLimiter
from hsops.serving.batcher import MicroBatcher, Overloaded
from hsops.serving.config import ServingConfig
from hsops.serving.errors import ApiError, RequestGuard, install_error_handlers, request_id_of, require_json
from hsops.serving.jobs import ENDED, JobError, JobNotFound, JobService
from hsops.serving.middleware import AccessLog, ServingState
from hsops.serving.predictor import PredictionSink, Predictor, log_answers
from hsops.serving.schemas import (
    ErrorBody,
    Health,
    JobOut,
    ModelVersionOut,
    PredictResponse,
    async_request_model,
    batch_request_model,
    predict_request_model,
)

log = logging.getLogger("hsops.serving")

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 403, 413, 415, 422, 429, 503)}
_JOB_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 503)}


def _current(predictor_source: Callable[[], Predictor]) -> Predictor:
    try:
        return predictor_source()
    except ModelNotFound as exc:
        raise ApiError(503, "no_model", f"no model to serve ({exc}); train one with `hsops train`") from exc
    except ArtifactError as exc:
        raise ApiError(503, "model_invalid", f"the model artifact was refused: {exc}") from exc


def _json(content: Any, status: int = 200) -> Response:
    """orjson, several times faster than the standard encoder on prediction lists."""
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


def answer_items(request_id: str, predictions: list) -> list[dict]:
    """The answers as sent, each with the id it is logged under (``<request id>-<i>``)."""
    return [{**p.to_dict(), "request_id": f"{request_id}-{i}"} for i, p in enumerate(predictions)]


def create_app(predictor_source: Callable[[], Predictor], sink: PredictionSink | None = None, *,
               config: ServingConfig | None = None, keys: KeyStore | None = None,
               jobs: JobService | None = None, batcher: MicroBatcher | None = None,
               state: ServingState | None = None, variant: str = "champion",
               max_items: int | None = None, max_text_chars: int | None = None,
               max_body_bytes: int | None = None, registry_home: Path | None = None) -> FastAPI:
    """The API over whatever ``predictor_source()`` returns at each request.

    ``keys``: where API keys are checked (none: every keyed call is refused, open
    calls stay open). ``jobs``: the batch/async service (none: those routes answer
    503). With ``registry_home``, ``GET /v1/models`` lists the registered versions.
    The ``max_*`` arguments override the limits of ``config``.
    """
    config = config or ServingConfig()
    limits = config.limits
    max_items = max_items or limits.max_items
    max_text_chars = max_text_chars or limits.max_text_chars
    max_body_bytes = max_body_bytes or limits.max_body_bytes
    PredictRequest = predict_request_model(max_items, max_text_chars)
    AsyncRequest = async_request_model(max_items, max_text_chars)
    BatchRequest = batch_request_model(limits.max_batch_items)
    b = config.batching
    batcher = batcher or MicroBatcher(max_batch=b.max_batch, max_wait_s=b.max_wait_ms / 1000,
                                      max_queue=b.max_queue, queue_timeout_s=b.queue_timeout_ms / 1000)
    state = state or ServingState(max_in_flight=b.max_in_flight)
    authenticator = Authenticator(keys, cache_seconds=config.auth.key_cache_seconds)
    limiter = RateLimiter(config.auth.rate_limit_per_key, config.auth.rate_burst)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        batcher.open()  # startup undoes a previous shutdown (the lifespan may run more than once)
        yield
        batcher.close()  # answer what is queued, then stop the model thread

    app = FastAPI(title="hsops prediction API", version=__version__, lifespan=lifespan,
                  description="Harmonized System (HS) code prediction with confidence, alternatives "
                              "and abstention: real-time, async and batch.")
    app.state.predictor_source = predictor_source
    app.state.sink = sink
    app.state.batcher = batcher
    app.state.serving = state
    app.state.config = config
    install_error_handlers(app)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins),
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["authorization", "content-type", "x-api-key"])
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes,
                       larger={"/v1/batch": max(max_body_bytes, limits.max_batch_body_bytes)},
                       body_timeout_s=limits.body_timeout_s, state=state,
                       keyed_paths=frozenset({"/v1/predict/async", "/v1/batch"}
                                             | ({"/v1/predict"} if config.auth.predict_requires_key else set())),
                       authenticator=authenticator)
    app.add_middleware(AccessLog, state=state)

    def scope(name: str, required: bool):
        def check(request: Request) -> str | None:
            try:
                record = authenticator.authorize(request.headers, name, required=required)
            except AuthError as exc:
                request.scope.setdefault("state", {})["key_id"] = exc.key_id
                raise
            key_id = record.key_id if record is not None else None
            request.scope.setdefault("state", {})["key_id"] = key_id
            if key_id is not None and (wait := limiter.take(key_id)) > 0:
                metrics.SHED.labels("rate_limited").inc()
                raise ApiError(429, "rate_limited", f"the API key {key_id} is over its rate limit of "
                               f"{config.auth.rate_limit_per_key:g} requests/s", headers={
                                   "Retry-After": str(max(1, math.ceil(wait)))})
            return key_id
        return check

    predict_scope = scope("predict", config.auth.predict_requires_key)
    keyed_predict = scope("predict", True)  # async and batch work is queued: always keyed

    def note(request: Request, predictor: Predictor, items: int) -> None:
        st = request.scope.setdefault("state", {})
        st["model_version"], st["variant"], st["items"] = predictor.model_version, variant, items

    @app.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS,
              dependencies=[Depends(require_json)])
    async def predict(body: PredictRequest, request: Request,  # type: ignore[valid-type]
                      key_id: str | None = Depends(predict_scope)) -> Any:
        """Top-k HS6 codes for each description, micro-batched with concurrent requests."""
        request_id = request_id_of(request)
        predictor = _current(predictor_source)
        note(request, predictor, len(body.descriptions))
        future = batcher.submit(predictor, body.descriptions, body.top_k, body.explain,
                                arrived=request.scope.get("state", {}).get("arrived"))
        try:
            predictions = await asyncio.wrap_future(future)
        except Overloaded:
            raise
        except Exception as exc:  # input was validated above: anything here is our fault
            log.exception("prediction failed for request %s", request_id)
            raise ApiError(500, "internal_error",
                           f"prediction failed; quote request id {request_id} when reporting it") from exc
        items = answer_items(request_id, predictions)
        if sink is not None:
            log_answers(sink, request_id, body.descriptions, items)
        metrics.count_answers(items, variant, "realtime")
        return _json({"request_id": request_id, "model_version": items[0]["model_version"], "predictions": items})

    def job_service() -> JobService:
        if jobs is None:
            raise ApiError(503, "jobs_unavailable", "this server runs no batch or async jobs "
                                                    "(start it with `hsops serve` or `hsops up`)")
        return jobs

    def submit(kind: str, request_body: dict, key_id: str | None) -> Response:
        try:
            job = job_service().submit(kind, request_body, key_id=key_id)
        except JobError as exc:
            raise ApiError(422, "invalid_input", str(exc)) from None
        return _json(job, 202)

    @app.post("/v1/predict/async", status_code=202, response_model=JobOut, responses=_JOB_ERRORS,
              dependencies=[Depends(require_json)])
    def predict_async(body: AsyncRequest, key_id: str | None = Depends(keyed_predict)) -> Any:  # type: ignore[valid-type]
        """Queue a real-time body; the answer is at ``GET /v1/jobs/{job_id}`` (``result``)."""
        return submit("async", body.model_dump(), key_id)

    @app.post("/v1/batch", status_code=202, response_model=JobOut, responses=_JOB_ERRORS,
              dependencies=[Depends(require_json)])
    def batch(body: BatchRequest, key_id: str | None = Depends(keyed_predict)) -> Any:  # type: ignore[valid-type]
        """Predict every row of a file in the object store (or inline descriptions) into a
        predictions file; follow it at ``GET /v1/jobs/{job_id}``."""
        if (body.object_key is None) == (body.descriptions is None):
            raise ApiError(422, "invalid_input", "give exactly one of object_key or descriptions")
        return submit("batch", body.model_dump(exclude_none=True), key_id)

    def owned_job(job_id: str, key_id: str | None, request: Request) -> dict:
        try:
            job = job_service().get(job_id)
        except JobNotFound:
            raise ApiError(404, "not_found", f"no job {_quoted(job_id)}") from None
        owner = job.get("key_id")
        if owner is not None and owner != key_id and not _is_admin(authenticator, request):
            # another key's job: not even its existence
            raise ApiError(404, "not_found", f"no job {_quoted(job_id)}")
        job.pop("key_id", None)
        return job

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, responses=_JOB_ERRORS)
    def job_status(job_id: str, request: Request, key_id: str | None = Depends(keyed_predict)) -> Any:
        """A job's status, progress, and (async, once done) its answer."""
        return _json(owned_job(job_id, key_id, request))

    @app.get("/v1/jobs/{job_id}/results", responses={**_JOB_ERRORS, 200: {
        "content": {"application/x-ndjson": {}}, "description": "One JSON object a line"}})
    def job_results(job_id: str, request: Request, key_id: str | None = Depends(keyed_predict)) -> Any:
        """The predictions file of a finished job: one JSON object per input row."""
        job = owned_job(job_id, key_id, request)
        if job["status"] != "succeeded":
            raise ApiError(409, "not_ready", f"job {job_id} is {job['status']}; results exist once it succeeded")
        stream = job_service().open_results(job_id)

        def chunks():
            with stream:
                while block := stream.read(1 << 16):
                    yield block
        return StreamingResponse(chunks(), media_type="application/x-ndjson",
                                 headers={"content-disposition": f'attachment; filename="{job_id}.jsonl"'})

    @app.delete("/v1/jobs/{job_id}", response_model=JobOut, responses=_JOB_ERRORS)
    def job_cancel(job_id: str, request: Request, key_id: str | None = Depends(keyed_predict)) -> Any:
        """Cancel a queued or running job; 409 for one that has already ended."""
        if (status := owned_job(job_id, key_id, request)["status"]) in ENDED:
            raise ApiError(409, "conflict", f"job {job_id} has already ended ({status}); nothing to cancel")
        job = job_service().cancel(job_id)
        job.pop("key_id", None)
        return _json(job)

    @app.get("/v1/models", response_model=list[ModelVersionOut], responses=_ERRORS,
             dependencies=[Depends(predict_scope)])
    def models() -> Any:
        """Registered model versions with their aliases, lineage and test-split metrics."""
        return list_models(registry_home) if registry_home is not None else []

    @app.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD
    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> Any:
        """200 when a model is loaded and verified (and the replica is not draining);
        503 otherwise, with the reason."""
        if state.draining:
            return JSONResponse({"status": "draining", "model_version": None,
                                 "message": "this replica is shutting down"}, status_code=503)
        try:
            predictor = _current(predictor_source)
        except ApiError as exc:
            status = "no_model" if exc.error == "no_model" else "model_error"
            return JSONResponse({"status": status, "model_version": None, "message": exc.message},
                                status_code=503)
        return {"status": "ok", "model_version": predictor.model_version}

    metrics_deps = [Depends(scope("admin", True))] if config.auth.metrics_requires_key else []

    @app.get("/metrics", response_class=Response, dependencies=metrics_deps,
             responses={200: {"content": {"text/plain": {}}}})
    def prometheus_metrics() -> Response:
        """Prometheus text format: requests, latency by model and variant, abstentions,
        batch sizes, queue depth, replicas, shed requests, jobs."""
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    app.state.require_scope = scope  # for routers mounted beside these (pipelines)
    return app


def _quoted(value: str, limit: int = 80) -> str:
    """A client's value quoted in a message, cut short: errors must not echo megabytes."""
    return repr(value if len(value) <= limit else value[:limit] + "...")


def _is_admin(authenticator: Authenticator, request: Request) -> bool:
    try:
        return authenticator.authorize(request.headers, "admin", required=True) is not None
    except Exception:  # noqa: BLE001 - not admin, whatever the reason
        return False


def list_models(registry_home: Path) -> list[dict]:
    out = []
    for name, entry in sorted(read_index(registry_home).get("models", {}).items()):
        aliases: dict[str, list[str]] = {}
        for alias, version in sorted(entry.get("aliases", {}).items()):
            aliases.setdefault(str(version), []).append(alias)
        for version, info in sorted(entry.get("versions", {}).items(), key=lambda kv: int(kv[0])):
            model_metrics = {k: v for k, v in info.get("metrics", {}).items() if isinstance(v, (int, float))}
            out.append({"name": name, "version": version, "aliases": aliases.get(version, []),
                        **{k: info.get(k) for k in ("kind", "dataset_version", "git_commit", "created_at")},
                        "metrics": model_metrics})
    return out
