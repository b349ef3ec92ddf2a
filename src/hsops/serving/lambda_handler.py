"""The Lambda-style entry point: ``handler(event, context)`` for API Gateway events.

It runs the same FastAPI app as the HTTP server, through a small ASGI bridge: the
event becomes an ASGI request, the app answers, and the answer becomes the proxy
response API Gateway expects. So validation, errors, keys, micro-batching and the
answer itself are the very code the server runs: the same input gives the same
answer through every pattern.

Both API Gateway payload formats are understood: HTTP API (``version: "2.0"``,
``rawPath``, ``requestContext.http.method``, ``cookies``) and REST API / format 1.0
(``httpMethod``, ``path``, ``multiValueHeaders``). Bodies may be base64-encoded
(``isBase64Encoded``); a response body that is not text comes back base64-encoded. An
event that is neither shape is answered with a 400 proxy response that says so.

The app is built once per process (a Lambda "cold start") by ``HSOPS_LAMBDA_APP``
(``module:callable``, default the local platform's ``app_from_env``), and kept for the
warm invocations that follow.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
import logging
import os
import threading
import time
from urllib.parse import urlencode

log = logging.getLogger("hsops.serving.lambda")

_APP = None
_LOOP: asyncio.AbstractEventLoop | None = None
_LOCK = threading.Lock()
COLD = {"init_ms": None}  # the cold start of this process, once the app is built

_TEXT_TYPES = ("application/json", "text/", "application/x-ndjson", "application/problem+json")


class EventError(ValueError):
    pass


def _load_app():
    global _APP, _LOOP
    with _LOCK:
        if _APP is None:
            started = time.perf_counter()
            target = os.environ.get("HSOPS_LAMBDA_APP", "hsops.platform.local.server:app_from_env")
            module, _, name = target.partition(":")
            _APP = getattr(importlib.import_module(module), name)()
            _LOOP = asyncio.new_event_loop()
            COLD["init_ms"] = round(1000 * (time.perf_counter() - started), 1)
    return _APP


def _object(value, what: str) -> dict:
    """An event part that must be a JSON object (absent or null: empty). Checked, because a
    malformed event must be a 400 answer, never an AttributeError out of the handler."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise EventError(f"the event's {what} must be an object, got {type(value).__name__}")
    return value


def _values(value, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EventError(f"the event's {what} must be a list, got {type(value).__name__}")
    return value


def to_scope(event: dict) -> tuple[dict, bytes]:
    """The ASGI HTTP scope and body of an API Gateway proxy event."""
    if not isinstance(event, dict):
        raise EventError(f"the event must be a JSON object, got {type(event).__name__}")
    if event.get("version") == "2.0" or "rawPath" in event:
        http = _object(_object(event.get("requestContext"), "requestContext").get("http"), "requestContext.http")
        method, path = http.get("method"), event.get("rawPath")
        raw_query = event.get("rawQueryString") or ""
        if not isinstance(raw_query, str):
            raise EventError("the event's rawQueryString must be a string")
        query = raw_query.encode("latin-1", "replace")
        headers = [(str(k).lower(), str(v)) for k, v in _object(event.get("headers"), "headers").items()]
        if event.get("cookies"):
            headers.append(("cookie", "; ".join(str(c) for c in _values(event["cookies"], "cookies"))))
        source_ip = http.get("sourceIp")
    elif "httpMethod" in event:
        method, path = event.get("httpMethod"), event.get("path")
        multi = _object(event.get("multiValueQueryStringParameters"), "multiValueQueryStringParameters")
        single = _object(event.get("queryStringParameters"), "queryStringParameters")
        pairs = ([(k, v) for k, vs in multi.items() for v in _values(vs, f"query parameter {k!r}")]
                 or list(single.items()))
        query = urlencode(pairs).encode()
        multi_headers = _object(event.get("multiValueHeaders"), "multiValueHeaders")
        headers = [(str(k).lower(), str(v)) for k, vs in multi_headers.items()
                   for v in _values(vs, f"multiValueHeaders {k!r}")]
        if not headers:
            headers = [(str(k).lower(), str(v)) for k, v in _object(event.get("headers"), "headers").items()]
        context = _object(event.get("requestContext"), "requestContext")
        source_ip = _object(context.get("identity"), "requestContext.identity").get("sourceIp")
    else:
        raise EventError("not an API Gateway proxy event: expected 'rawPath' (HTTP API, payload 2.0) "
                         "or 'httpMethod' (REST API, payload 1.0)")
    if not isinstance(method, str) or not isinstance(path, str) or not path.startswith("/"):
        raise EventError("the event lacks a method or an absolute path")
    body = event.get("body")
    body = "" if body is None else body  # not `or ""`: an empty list or 0 is a bad body, not none
    if not isinstance(body, str):
        raise EventError("the event body must be a string")
    try:
        raw = base64.b64decode(body, validate=True) if event.get("isBase64Encoded") else body.encode("utf-8")
    except (ValueError, UnicodeEncodeError) as exc:
        raise EventError(f"the event body is not valid base64/UTF-8: {exc}") from None
    if not any(k == "content-length" for k, _ in headers):
        headers.append(("content-length", str(len(raw))))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method.upper(),
             "scheme": "https", "path": path, "raw_path": path.encode("utf-8", "replace"), "query_string": query,
             "root_path": "", "headers": [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace"))
                                          for k, v in headers],
             "client": (source_ip or "0.0.0.0", 0), "server": ("lambda", 443), "state": {}}
    return scope, raw


async def _call(app, scope: dict, body: bytes) -> dict:
    sent = {"status": 500, "headers": [], "body": bytearray(), "started": False}
    delivered = False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # nothing more will come; the app stops waiting on its own
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            sent["started"] = True
            sent["status"] = message["status"]
            sent["headers"] = message.get("headers", [])
        elif message["type"] == "http.response.body":
            sent["body"] += message.get("body", b"")

    try:
        await app(scope, receive, send)
    except Exception:  # noqa: BLE001 - Starlette re-raises after answering 500: the answer stands
        log.exception("unhandled error in a Lambda invocation")
        if not sent["started"]:
            sent.update(status=500, headers=[(b"content-type", b"application/json")], body=bytearray(
                b'{"error":"internal_error","message":"internal error","details":[],"request_id":null}'))
    return sent


def _response(sent: dict, v2: bool) -> dict:
    headers: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for k, v in sent["headers"]:
        name, value = k.decode("latin-1"), v.decode("latin-1")
        multi.setdefault(name, []).append(value)
        headers[name] = ", ".join(multi[name]) if name != "set-cookie" else value
    content_type = headers.get("content-type", "")
    body = bytes(sent["body"])
    textual = content_type.startswith(_TEXT_TYPES)
    out = {"statusCode": sent["status"], "headers": headers,
           "body": body.decode("utf-8") if textual else base64.b64encode(body).decode("ascii"),
           "isBase64Encoded": not textual}
    if v2 and "set-cookie" in multi:
        out["cookies"] = multi.pop("set-cookie")
        headers.pop("set-cookie", None)
    elif not v2:
        out["multiValueHeaders"] = multi
    return out


def handler(event, context=None) -> dict:
    """API Gateway proxy event in, proxy response out."""
    try:
        scope, body = to_scope(event)
    except EventError as exc:
        return {"statusCode": 400, "headers": {"content-type": "application/json"}, "isBase64Encoded": False,
                "body": json.dumps({"error": "bad_event", "message": str(exc), "details": [], "request_id": None})}
    app = _load_app()
    v2 = event.get("version") == "2.0" or "rawPath" in event
    with _LOCK:  # one event at a time per process, as Lambda delivers them
        sent = _LOOP.run_until_complete(_call(app, scope, body))
    sink = getattr(app.state, "sink", None)
    if hasattr(sink, "flush"):
        sink.flush()  # a Lambda process may be frozen or ended after it answers: log now
    return _response(sent, v2)


def reset() -> None:
    """Forget the app (tests build a new one per home)."""
    global _APP, _LOOP
    with _LOCK:
        runtime = getattr(getattr(_APP, "state", None), "runtime", None)
        if runtime is not None:
            runtime.stop()  # its model thread, log writer and database handles
        if _LOOP is not None:
            _LOOP.close()
        _APP, _LOOP = None, None
