"""The local HTTP server: the serving app wired to the registry and state store, plus the
pipeline routes when a platform backend is given.

Composition lives here, in the platform layer, because serving must not import the
platform (dependencies point one way). ``app_from_env`` is the uvicorn factory used
when the server runs as its own process (``hsops demo``, integration tests).
"""

from __future__ import annotations

import os
from pathlib import Path

from hsops._config import hsops_home
from hsops.platform.local.state_store import StateStore
from hsops.serving.app import create_app
from hsops.serving.predictor import RegistrySource


def build_app(home: Path, ref: str = "champion", *, backend=None):
    app = create_app(RegistrySource(home, ref), sink=StateStore(home), registry_home=home)
    if backend is not None:
        from hsops.platform.local.pipeline_api import pipeline_router

        app.include_router(pipeline_router(backend))
    return app


def app_from_env():
    """uvicorn --factory entry: HSOPS_HOME and HSOPS_SERVE_MODEL from the environment."""
    return build_app(hsops_home(), os.environ.get("HSOPS_SERVE_MODEL", "champion"))
