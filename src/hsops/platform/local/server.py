"""The local HTTP server: the serving app wired to the registry, the state store (prediction
log, API keys, jobs) and the local backend (object store and event bus for jobs, and
the pipeline routes when asked).

Composition lives here, in the platform layer, because serving must not import the
platform (dependencies point one way). ``build_app`` is what a replica process, the
in-process tests and ``app_from_env`` (a uvicorn factory) all use.
"""

from __future__ import annotations

import os
from pathlib import Path

from hsops._config import hsops_home
from hsops.platform.local.state_store import StateStore
from hsops.serving.app import create_app
from hsops.serving.config import ServingConfig, load_config
from hsops.serving.predictor import RegistrySource
from hsops.serving.sink import BufferedSink


class ServingRuntime:
    """One replica's parts; ``start`` begins following the registry and taking jobs,
    ``stop`` drains them (the app's own shutdown stops its model thread)."""

    def __init__(self, home: Path, ref: str = "champion", *, config: ServingConfig | None = None,
                 pipelines: bool = False, watch: bool = True, run_jobs: bool = True, backend=None):
        from hsops.platform.local.backend import LocalBackend
        from hsops.platform.local.jobs import LocalJobs

        self.home = Path(home)
        self.config = config or load_config(self.home)
        self.state = StateStore(self.home)
        self.sink = BufferedSink(self.state)
        self.source = RegistrySource(self.home, ref)
        self.backend = backend or LocalBackend(self.home)  # not started: objects and events only
        self.jobs = LocalJobs(self.home, self.backend, self.state, jobs=self.config.jobs,
                              limits=self.config.limits, variant=ref)
        self.app = create_app(self.source, self.sink, config=self.config, keys=self.state, jobs=self.jobs,
                              registry_home=self.home, variant=ref)
        if pipelines:
            from hsops.platform.local.pipeline_api import pipeline_router

            self.app.include_router(pipeline_router(self.backend, self.app.state.require_scope))
        self._watch, self._run_jobs = watch, run_jobs

    def start(self) -> ServingRuntime:
        if self._watch:
            try:
                self.source()  # load now: a replica is ready only with its model in memory
            except Exception:  # noqa: BLE001 - no model yet: /v1/predict says 503 until there is one
                pass
            self.source.watch()
        if self._run_jobs:
            self.jobs.start_runners(self.source, self.app.state.batcher, self.sink)
        return self

    def stop(self) -> None:
        self.jobs.stop()
        self.source.close()
        self.app.state.batcher.close()
        self.sink.close()


def build_app(home: Path, ref: str = "champion", *, backend=None, config: ServingConfig | None = None):
    """An app for in-process use (tests, ``app_from_env``): no registry watcher, no job
    runners, so nothing runs in the background; ``backend`` adds the pipeline routes."""
    runtime = ServingRuntime(home, ref, config=config, pipelines=backend is not None, watch=False,
                             run_jobs=False, backend=backend)
    runtime.app.state.runtime = runtime
    return runtime.app


def app_from_env():
    """uvicorn --factory entry: HSOPS_HOME and HSOPS_SERVE_MODEL from the environment."""
    return build_app(hsops_home(), os.environ.get("HSOPS_SERVE_MODEL", "champion"))
