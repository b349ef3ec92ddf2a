"""Errors, the request guard and input checks shared by every route of the API.

Bad input is always a 4xx whose body says what was wrong::

    {"error": "<short code>", "message": "<human text>", "details": [...], "request_id": "..."}

The body size is enforced by an ASGI middleware before anything is parsed: a declared
``Content-Length`` over the limit is refused at once, and the streamed bytes are counted
too, because a chunked body has no length and a declared one may lie. The limit is per
path: batch submissions may carry more than a real-time call. The whole body must
arrive within ``body_timeout_s`` (408 otherwise), so clients that send a body slowly,
or never finish it, cannot hold the replica's request slots. Every request gets a
uuid4 ``request_id`` (header ``X-Request-ID``).
"""

import asyncio
import json
import logging
import math
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("hsops.serving")

REQUEST_ID_HEADER = "X-Request-ID"
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 409: "conflict", 413: "payload_too_large",
                 408: "request_timeout", 415: "unsupported_media_type", 422: "invalid_input", 429: "rate_limited",
                 500: "internal_error", 503: "unavailable"}


class ApiError(Exception):
    """An error with the status, code and message the client should see."""

    def __init__(self, status: int, error: str, message: str, details: list | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.error, self.message, self.details = status, error, message, details or []
        self.headers = headers or {}


def request_id_of(request_or_scope) -> str | None:
    scope = request_or_scope if isinstance(request_or_scope, dict) else request_or_scope.scope
    return (scope.get("state") or {}).get("request_id")


class _AsciiJSONResponse(JSONResponse):
    """Errors may quote the client's input, which can hold lone surrogates ("\\ud800" is
    valid JSON but not encodable as UTF-8): escaping to ASCII keeps any input quotable."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def error_response(request_id: str | None, status: int, error: str, message: str,
                   details: list | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": error, "message": message, "details": details or [], "request_id": request_id}
    headers = {**(headers or {}), **({REQUEST_ID_HEADER: request_id} if request_id else {})}
    return _AsciiJSONResponse(body, status_code=status, headers=headers)


# -- request guard (ASGI middleware) --------------------------------------------------------
_TOO_LARGE = object()
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="hsops"'}


class RequestGuard:
    """Assigns the request id and enforces the body limit before any parsing.

    The body is read here in full (it is at most ``max_body_bytes``) and replayed to the
    app; reading it before FastAPI does is what makes the limit hold for chunked and
    lying requests. Over the limit, the rest of the body is drained (up to a cap) before
    answering 413, so the client reads the answer instead of a connection reset.
    """

    def __init__(self, app, max_body_bytes: int, drain_cap_bytes: int = 16 * 1024 * 1024,
                 larger: dict[str, int] | None = None, body_timeout_s: float = 10.0, state=None,
                 keyed_paths: frozenset[str] = frozenset(), authenticator=None):
        """``larger``: paths allowed a bigger body than ``max_body_bytes``. ``state``: the
        replica's ``ServingState``, whose ``in_flight`` counts requests from the moment
        their body is in (a client still sending is not holding an admission slot)."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.drain_cap_bytes = drain_cap_bytes
        self.larger = larger or {}
        self.body_timeout_s = body_timeout_s
        self.state = state
        # POSTs that always need a key: one without any credentials is refused before
        # its body (up to 50 MB) is read and parsed; the key itself is checked later
        self.keyed_paths = keyed_paths
        # credentials that are sent are checked here too, on every path: a wrong key is a
        # 401 before anything else is looked at (body, content type, size)
        self.authenticator = authenticator

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        credentials = any(k.lower() in (b"authorization", b"x-api-key") for k, _ in scope.get("headers", []))
        if credentials and self.authenticator is not None:
            from hsops.serving.auth import AuthError, presented_key

            try:
                key = presented_key(Headers(scope=scope))
                if key is not None:
                    self.authenticator.verify(key)
            except AuthError as exc:
                return await error_response(request_id, 401, exc.error, exc.message, headers=_CHALLENGE)(
                    scope, receive, send)
        elif not credentials and scope.get("path") in self.keyed_paths and scope.get("method") == "POST":
            return await error_response(
                request_id, 401, "unauthorized", "this call needs an API key (Authorization: Bearer <key>; "
                "create one with `hsops keys create`)", headers=_CHALLENGE)(scope, receive, send)
        limit = self.larger.get(scope.get("path", ""), self.max_body_bytes)
        too_large = (f"request body is larger than the limit of {limit} bytes; "
                     "send fewer or shorter descriptions per request")
        declared = [v for k, v in scope.get("headers", []) if k.lower() == b"content-length"]
        if declared:
            try:
                length = int(declared[0])
            except ValueError:
                return await error_response(request_id, 400, "bad_request",
                                             "Content-Length is not a number")(scope, receive, send)
            if length > limit:
                return await error_response(request_id, 413, "payload_too_large", too_large)(
                    scope, receive, send)

        try:
            async with asyncio.timeout(self.body_timeout_s):
                body = await self._read_body(receive, limit)
        except TimeoutError:
            return await error_response(
                request_id, 408, "request_timeout",
                f"the request body did not arrive in full within {self.body_timeout_s:g} s",
                headers={"Connection": "close"})(scope, receive, send)
        if body is None:
            return  # client went away; nobody to answer
        if body is _TOO_LARGE:
            return await error_response(request_id, 413, "payload_too_large", too_large)(scope, receive, send)

        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for disconnect, as the server would

        state = self.state
        if state is not None:
            state.in_flight += 1
        try:
            await self.app(scope, replay, send_with_id)
        finally:
            if state is not None:
                state.in_flight -= 1

    async def _read_body(self, receive, limit: int):
        """The body; None if the client went away; ``_TOO_LARGE`` past ``limit`` (the rest
        drained up to the cap, so the client reads the 413 instead of a reset)."""
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                while more and size <= self.drain_cap_bytes:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    size += len(message.get("body", b""))
                    more = message.get("more_body", False)
                return _TOO_LARGE
            chunks.append(chunk)
        return b"".join(chunks)


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
    request_id = request_id_of(request)
    if any(e.get("type") == "json_invalid" for e in errors):
        ctx = next(e.get("ctx") or {} for e in errors if e.get("type") == "json_invalid")
        return error_response(request_id, 400, "malformed_json",
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
    return error_response(request_id, 422, "invalid_input", shown, details)


def _body_problem(cause: BaseException) -> str:
    """What was wrong with a body FastAPI could not parse, in the client's terms."""
    if isinstance(cause, UnicodeDecodeError):
        return f"it is not valid UTF-8 (byte {cause.start})"
    if isinstance(cause, RecursionError):
        return "its JSON is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return "it holds a number too long to parse"
    return "it is not valid JSON"


def install_error_handlers(app: FastAPI) -> None:
    from hsops.serving.auth import AuthError
    from hsops.serving.batcher import Overloaded

    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError):
        headers = {"WWW-Authenticate": 'Bearer realm="hsops"'} if exc.status == 401 else None
        return error_response(request_id_of(request), exc.status, exc.error, exc.message, headers=headers)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded):
        return error_response(request_id_of(request), 503, "overloaded", exc.message,
                              [{"reason": exc.reason}], {"Retry-After": str(max(1, math.ceil(exc.retry_after)))})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request_id_of(request), exc.status, exc.error, exc.message, exc.details,
                              exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's own "error parsing the body" (bad UTF-8, nesting too deep, an
            # integer too long to parse): say what it was
            return error_response(request_id_of(request), 400, "malformed_json",
                                   f"request body could not be read: {_body_problem(exc.__cause__)}")
        code = _STATUS_CODES.get(exc.status_code, "error")
        return error_response(request_id_of(request), exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        request_id = request_id_of(request)
        log.exception("unhandled error in request %s", request_id)
        return error_response(request_id, 500, "internal_error",
                               f"internal error; quote request id {request_id} when reporting it")


async def require_json(request: Request) -> None:
    content_type = request.headers.get("content-type")
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise ApiError(415, "unsupported_media_type",
                       f"Content-Type must be application/json, got {content_type or 'none'}")
