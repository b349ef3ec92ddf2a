"""The prediction HTTP API (FastAPI): ``POST /v1/predict`` and ``GET /healthz``.

``create_app`` takes a zero-argument *predictor source* rather than a Predictor, so the
caller decides what "the current model" is (a fixed artifact in tests, the registry's
champion in ``hsops serve``, re-resolved on each request so a promotion needs no
restart) and a missing model is a 503 that says what to do, not a crash at start-up.

Bad input is always a 4xx whose body says what was wrong::

    {"error": "<short code>", "message": "<human text>", "details": [...], "request_id": "..."}

The body size is enforced by an ASGI middleware before anything is parsed: a declared
``Content-Length`` over the limit is refused at once, and the streamed bytes are counted
too, because a chunked body has no length and a declared one may lie. Every request
gets a uuid4 ``request_id`` (header ``X-Request-ID``); each prediction is logged to the
sink under ``f"{request_id}-{i}"`` so feedback can be joined to it later.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
at runtime and the request model is a local class built per app.
"""

import json
import logging
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from hsops import __version__
from hsops.models.artifact import ArtifactError
from hsops.registry.index import ModelNotFound, read_index
from hsops.serving.predictor import PredictionSink, Predictor, log_answers
from hsops.serving.schemas import ErrorBody, Health, ModelVersionOut, PredictResponse, predict_request_model

log = logging.getLogger("hsops.serving")

REQUEST_ID_HEADER = "X-Request-ID"
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
                 422: "invalid_input", 500: "internal_error", 503: "unavailable"}
_ERROR_RESPONSES = {code: {"model": ErrorBody} for code in (400, 413, 415, 422, 500, 503)}


class ApiError(Exception):
    """An error with the status, code and message the client should see."""

    def __init__(self, status: int, error: str, message: str, details: list | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.details = status, error, message, details or []


def _request_id(request_or_scope) -> str | None:
    scope = request_or_scope if isinstance(request_or_scope, dict) else request_or_scope.scope
    return (scope.get("state") or {}).get("request_id")


class _AsciiJSONResponse(JSONResponse):
    """Errors may quote the client's input, which can hold lone surrogates ("\\ud800" is
    valid JSON but not encodable as UTF-8): escaping to ASCII keeps any input quotable."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _error_response(request_id: str | None, status: int, error: str, message: str,
                    details: list | None = None) -> JSONResponse:
    body = {"error": error, "message": message, "details": details or [], "request_id": request_id}
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return _AsciiJSONResponse(body, status_code=status, headers=headers)


# -- request guard (ASGI middleware) --------------------------------------------------------
class RequestGuard:
    """Assigns the request id and enforces the body limit before any parsing.

    The body is read here in full (it is at most ``max_body_bytes``) and replayed to the
    app; reading it before FastAPI does is what makes the limit hold for chunked and
    lying requests. Over the limit, the rest of the body is drained (up to a cap) before
    answering 413, so the client reads the answer instead of a connection reset.
    """

    def __init__(self, app, max_body_bytes: int, drain_cap_bytes: int = 16 * 1024 * 1024):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.drain_cap_bytes = drain_cap_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        too_large = (f"request body is larger than the limit of {self.max_body_bytes} bytes; "
                     "send fewer or shorter descriptions per request")
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                return await _error_response(request_id, 400, "bad_request",
                                             "Content-Length is not a number")(scope, receive, send)
            if length > self.max_body_bytes:
                return await _error_response(request_id, 413, "payload_too_large", too_large)(
                    scope, receive, send)

        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # client went away; nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                while more and size <= self.drain_cap_bytes:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    size += len(message.get("body", b""))
                    more = message.get("more_body", False)
                return await _error_response(request_id, 413, "payload_too_large", too_large)(
                    scope, receive, send)
            chunks.append(chunk)

        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for disconnect, as the server would

        await self.app(scope, replay, send_with_id)


# -- validation errors ----------------------------------------------------------------------
def _location(loc: tuple) -> str:
    parts = [p for p in loc if p != "body"]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def _preview(value: Any) -> Any:
    """The bad value, short and JSON-safe (NaN and Infinity are not JSON: quote them)."""
    if isinstance(value, str):
        return value if len(value) <= 60 else value[:60] + "..."
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return type(value).__name__  # a list or object: name its type, do not echo it back


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    request_id = _request_id(request)
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e.get("ctx") or {} for e in errors if e.get("type") == "json_invalid")
        return _error_response(request_id, 400, "malformed_json",
                               f"request body is not valid JSON: {ctx.get('error', 'decode error')}")
    details, lines = [], []
    for e in errors:
        where = _location(tuple(e.get("loc", ())))
        msg = e.get("msg", "invalid")
        if e.get("type") == "missing" and where == "body":
            msg = 'request body is required: {"descriptions": ["..."]}'
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        details.append({"loc": where, "msg": msg, "type": e.get("type"), "input": _preview(e.get("input"))})
        lines.append(msg if where == "body" else f"{where}: {msg}")
    shown = "; ".join(lines[:5]) + (f"; and {len(lines) - 5} more" if len(lines) > 5 else "")
    return _error_response(request_id, 422, "invalid_input", shown, details)


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return _error_response(_request_id(request), exc.status, exc.error, exc.message, exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's own "error parsing the body" (bad UTF-8, nesting too deep, an
            # integer too long to parse): say what it was
            cause = exc.__cause__
            return _error_response(_request_id(request), 400, "malformed_json",
                                   f"request body could not be read as UTF-8 JSON: "
                                   f"{type(cause).__name__}: {str(cause)[:200]}")
        code = _STATUS_CODES.get(exc.status_code, "error")
        return _error_response(_request_id(request), exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        request_id = _request_id(request)
        log.exception("unhandled error in request %s", request_id)
        return _error_response(request_id, 500, "internal_error",
                               f"internal error; quote request id {request_id} when reporting it")


async def _require_json(request: Request) -> None:
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be application/json, got {content_type or 'none'}")


# -- the app --------------------------------------------------------------------------------
def _current(predictor_source: Callable[[], Predictor]) -> Predictor:
    try:
        return predictor_source()
    except ModelNotFound as exc:
        raise ApiError(503, "no_model", f"no model to serve ({exc}); train one with `hsops train`") from exc
    except ArtifactError as exc:
        raise ApiError(503, "model_invalid", f"the model artifact was refused: {exc}") from exc


def create_app(predictor_source: Callable[[], Predictor], sink: PredictionSink | None = None, *,
               max_items: int = 256, max_text_chars: int = 2000,
               max_body_bytes: int = 1_000_000, registry_home: Path | None = None) -> FastAPI:
    """The API over whatever ``predictor_source()`` returns at each request.

    With ``registry_home``, ``GET /v1/models`` lists the registered versions (read from
    the registry's JSON index, not MLflow)."""
    PredictRequest = predict_request_model(max_items, max_text_chars)
    app = FastAPI(title="hsops prediction API", version=__version__,
                  description="Harmonized System (HS) code prediction with confidence, alternatives "
                              "and abstention.")
    app.state.predictor_source = predictor_source
    app.state.sink = sink
    _install_error_handlers(app)
    app.add_middleware(RequestGuard, max_body_bytes=max_body_bytes)

    @app.post("/v1/predict", response_model=PredictResponse, responses=_ERROR_RESPONSES,
              dependencies=[Depends(_require_json)])
    def predict(body: PredictRequest, request: Request) -> Any:  # type: ignore[valid-type]
        """Top-k HS6 codes for each description. Runs in the thread pool (CPU-bound)."""
        request_id = _request_id(request)
        predictor = _current(predictor_source)
        try:
            predictions = predictor.predict(body.descriptions, top_k=body.top_k, explain=body.explain)
        except Exception as exc:  # input was validated above: anything here is our fault
            log.exception("prediction failed for request %s", request_id)
            raise ApiError(500, "internal_error",
                           f"prediction failed; quote request id {request_id} when reporting it") from exc
        items = [{**p.to_dict(), "request_id": f"{request_id}-{i}"} for i, p in enumerate(predictions)]
        if sink is not None:
            log_answers(sink, request_id, body.descriptions, items)
        return {"request_id": request_id, "model_version": predictor.model_version, "predictions": items}

    @app.get("/v1/models", response_model=list[ModelVersionOut], responses=_ERROR_RESPONSES)
    def models() -> Any:
        """Registered model versions with their aliases, lineage and test-split metrics."""
        if registry_home is None:
            return []
        out = []
        for name, entry in sorted(read_index(registry_home).get("models", {}).items()):
            aliases: dict[str, list[str]] = {}
            for alias, version in sorted(entry.get("aliases", {}).items()):
                aliases.setdefault(str(version), []).append(alias)
            for version, info in sorted(entry.get("versions", {}).items(), key=lambda kv: int(kv[0])):
                metrics = {k: v for k, v in info.get("metrics", {}).items() if isinstance(v, (int, float))}
                out.append({"name": name, "version": version, "aliases": aliases.get(version, []),
                            **{k: info.get(k) for k in ("kind", "dataset_version", "git_commit", "created_at")},
                            "metrics": metrics})
        return out

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    def healthz() -> Any:
        """200 when a model is loaded and verified; 503 otherwise, with the reason."""
        try:
            predictor = _current(predictor_source)
        except ApiError as exc:
            status = "no_model" if exc.error == "no_model" else "model_error"
            return JSONResponse({"status": status, "model_version": None, "message": exc.message},
                                status_code=503)
        return {"status": "ok", "model_version": predictor.model_version}

    return app
