"""HTTP routes for pipeline runs: ``POST /v1/pipelines`` to request one, ``GET`` to follow.

A request becomes a ``pipeline.requested`` message (the same path a schedule takes), so
an API-triggered run gets the same at-least-once start, redrive and dead letter as any
other. The response names the execution before it exists; ``GET /v1/pipelines/{name}``
answers ``REQUESTED`` until the platform has picked the message up.

No ``from __future__ import annotations``: FastAPI reads the annotations at runtime.
"""

import re
import uuid
from typing import Any, Literal, Optional

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hsops.pipeline.policy import MAX_CANDIDATES, check_candidates, check_policy
from hsops.platform.backend import Backend, BackendError
from hsops.serving.errors import ApiError, require_json

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class PipelineRequest(BaseModel):
    """Exactly one of ``dataset_version`` (``"latest"`` allowed) or ``object_key``.
    ``candidates``: model kinds or ``{"kind", "params", "upsample", "target_accuracy"}``;
    ``policy``: the gate and data rules (see the README). Both are checked here, before
    anything runs."""
    model_config = ConfigDict(extra="forbid")
    dataset_version: Optional[str] = Field(None, pattern=r"^(latest|ds-[0-9a-f]{16})$")
    object_key: Optional[str] = Field(None, min_length=1, max_length=1024)
    candidates: Optional[list[Any]] = Field(None, min_length=1, max_length=MAX_CANDIDATES)
    policy: Optional[dict[str, Any]] = None
    name: Optional[str] = Field(None, pattern=NAME_PATTERN)

    @field_validator("candidates")
    @classmethod
    def _candidates(cls, value):
        return check_candidates(value) if value is not None else None

    @field_validator("policy")
    @classmethod
    def _policy(cls, value):
        return check_policy(value) if value is not None else None


class PipelineAccepted(BaseModel):
    name: str
    status: Literal["REQUESTED"]
    message_id: str
    links: dict[str, str]


def pipeline_router(backend: Backend, require_scope=None) -> APIRouter:
    """``require_scope(name, required)``: the app's key check (``app.state.require_scope``);
    requesting a run needs the admin scope, reading runs the predict scope."""
    from hsops.platform.local.triggers import PIPELINE_REQUESTED

    admin = [Depends(require_scope("admin", True))] if require_scope else []
    read = [Depends(require_scope("predict", False))] if require_scope else []
    router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])
    requested: dict[str, str] = {}  # names this server accepted -> message id (until they start)

    @router.post("", status_code=202, response_model=PipelineAccepted,
                 dependencies=[Depends(require_json), *admin])
    def request_run(body: PipelineRequest) -> Any:
        """Request a lifecycle run on a dataset version or an object in the store."""
        if (body.dataset_version is None) == (body.object_key is None):
            raise ApiError(422, "invalid_input", "give exactly one of dataset_version or object_key")
        if body.object_key is not None:
            try:
                backend.objects.head(body.object_key)
            except BackendError as exc:
                raise ApiError(422, "invalid_input", f"object_key: {exc}") from None
        name = body.name or f"api-{uuid.uuid4().hex[:16]}"
        try:
            backend.state_machines.describe(name)
            raise ApiError(409, "conflict", f"a pipeline run named {name!r} exists already")
        except BackendError:
            pass
        source = ({"dataset_version": body.dataset_version} if body.dataset_version
                  else {"object_key": body.object_key})
        message = {"name": name, "source": source,
                   "candidates": body.candidates,
                   "policy": body.policy}
        message_id = backend.events.publish(PIPELINE_REQUESTED, message, dedup_key=f"api:{name}")
        requested[name] = message_id
        return {"name": name, "status": "REQUESTED", "message_id": message_id,
                "links": {"status": f"/v1/pipelines/{name}"}}

    @router.get("", dependencies=read)
    def list_runs(limit: int = 50) -> Any:
        """The most recent runs, newest first."""
        if not 1 <= limit <= 500:
            raise ApiError(422, "invalid_input", "limit must be between 1 and 500")
        return [execution_summary(e) for e in backend.state_machines.list(limit=limit)]

    @router.get("/{name}", dependencies=read)
    def run_status(name: str) -> Any:
        """One run with its state history (state, start, end, duration, cost, error)."""
        if not re.match(NAME_PATTERN, name) and not re.match(r"^[0-9a-f]{32}$", name):
            raise ApiError(404, "not_found", f"no pipeline run {name!r}")
        try:
            execution = backend.state_machines.describe(name)
        except BackendError:
            if name in requested:
                return {"name": name, "status": "REQUESTED", "message_id": requested[name]}
            raise ApiError(404, "not_found", f"no pipeline run {name!r}") from None
        return {**execution_summary(execution), "input": execution.input, "output": execution.output,
                "history": backend.state_machines.history(execution.id)}

    return router


def execution_summary(execution) -> dict:
    return {"id": execution.id, "name": execution.name, "status": execution.status,
            "started_at": execution.started_at, "ended_at": execution.ended_at,
            "cost_usd": round(execution.cost_usd, 8), "error": execution.error, "cause": execution.cause,
            "trigger": (execution.input or {}).get("trigger", {}).get("type"),
            "outcome": execution.output if isinstance(execution.output, dict) else None}
