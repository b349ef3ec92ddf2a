"""ASGI middleware: one access-log line and one metric sample per request; draining.

The access log is a JSON line (see ``serving.logs``) with the request id, method, route,
status, duration and the id of the API key used (never the key). Routes are logged
and counted by their template (``/v1/jobs/{job_id}``), so metrics stay bounded
however many ids clients send.

While a replica drains (``state.draining``, set when it is told to stop), every
response carries ``Connection: close`` so keep-alive clients move to another replica
before this one closes its connections.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders

from hsops.serving import metrics

log = logging.getLogger("hsops.serving.access")


class ServingState:
    """Flags shared between the replica's lifecycle and the request path."""

    def __init__(self) -> None:
        self.draining = False
        self.in_flight = 0


class AccessLog:
    def __init__(self, app, state: ServingState, quiet_paths: tuple[str, ...] = ("/metrics", "/healthz")):
        self.app = app
        self.state = state
        self.quiet_paths = quiet_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}
        state = self.state

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if state.draining:
                    MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        state.in_flight += 1
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            state.in_flight -= 1
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            metrics.HTTP_REQUESTS.labels(method, template, str(status["code"])).inc()
            scope_state = scope.get("state") or {}
            if scope_state.get("model_version") is not None:
                metrics.REQUEST_LATENCY.labels(template, scope_state["model_version"],
                                               scope_state.get("variant", "")).observe(elapsed)
            if scope.get("path") not in self.quiet_paths or status["code"] >= 400:
                log.info("%s %s %d", method, scope.get("path", ""), status["code"], extra={
                    "request_id": scope_state.get("request_id"), "method": method, "route": template,
                    "status": status["code"], "duration_ms": round(1000 * elapsed, 3),
                    "key_id": scope_state.get("key_id"), "model_version": scope_state.get("model_version"),
                    "variant": scope_state.get("variant"), "items": scope_state.get("items")})
