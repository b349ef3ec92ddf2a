"""ASGI middleware: one access-log line and one metric sample per request; draining.

The access log is a JSON line (see ``serving.logs``) with the request id, method, route,
status, duration and the id of the API key used (never the key). Routes are logged
and counted by their template (``/v1/jobs/{job_id}``), so metrics stay bounded
however many ids clients send.

While a replica drains (``state.draining``, set when it is told to stop), every
response carries ``Connection: close`` so keep-alive clients move to another replica
before this one closes its connections. The same header on ``state.close_next``
responses moves a few clients off a replica that is much busier than another one
(``serving.replica_server.heartbeat`` decides): replicas share one listening socket,
and a client pool that connects all at once otherwise lands on whichever replica
woke first, for as long as its connections live.

Admission control: past ``state.max_in_flight`` requests in this replica, a
prediction call is answered 503 with ``Retry-After`` at once, before its body is read.
Under an open-loop overload the backlog builds up in the event loop, ahead of the
model queue, where the micro-batcher's own limits cannot see it. A request counts
once its body is in (``errors.RequestGuard`` keeps the count), so clients that are
slow to send, or never finish, cannot fill the slots and lock everyone else out.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import MutableHeaders

from hsops.serving import metrics

log = logging.getLogger("hsops.serving.access")


SHEDDABLE = frozenset({"/v1/predict", "/v1/predict/async", "/v1/batch"})


class ServingState:
    """Flags shared between the replica's lifecycle and the request path."""

    def __init__(self, max_in_flight: int = 0) -> None:
        self.draining = False
        self.in_flight = 0
        self.max_in_flight = max_in_flight  # 0: no admission limit
        self.close_next = 0  # responses still to send with Connection: close (rebalancing)


class AccessLog:
    def __init__(self, app, state: ServingState, quiet_paths: tuple[str, ...] = ("/metrics", "/healthz")):
        self.app = app
        self.state = state
        self.quiet_paths = quiet_paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        scope.setdefault("state", {})["arrived"] = time.monotonic()  # queue timeouts count from here
        status = {"code": 500}
        state = self.state

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                if state.draining:
                    MutableHeaders(scope=message)["connection"] = "close"
                elif state.close_next > 0:
                    state.close_next -= 1
                    MutableHeaders(scope=message)["connection"] = "close"
            await send(message)

        app = self.app
        if (state.max_in_flight and state.in_flight >= state.max_in_flight and scope.get("method") == "POST"
                and scope.get("path") in SHEDDABLE):
            from hsops.serving.errors import error_response

            metrics.SHED.labels("in_flight").inc()
            app = error_response(None, 503, "overloaded", f"this replica holds {state.in_flight} requests, its "
                                 "limit; retry after the Retry-After seconds", [{"reason": "in_flight"}],
                                 {"Retry-After": "1"})
        try:
            await app(scope, receive, send_wrapper)
        finally:
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
