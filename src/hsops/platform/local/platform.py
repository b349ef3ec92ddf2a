"""``hsops up``: the whole local platform in one process.

- the function runtime's supervisor (worker processes, 0..max, scale to zero);
- the state-machine driver (claims pending and orphaned runs: a run whose previous
  platform was killed resumes here);
- the trigger consumer (inbox files, API requests, schedules, monitoring events);
- the inbox watcher (``HSOPS_HOME/inbox/``) and the scheduler tick;
- the HTTP API (prediction, jobs, models, pipelines) on 127.0.0.1 by default, served by
  replica processes that scale with load (``platform.local.replicas``).

``stop()`` stops taking work, lets runs in progress stop at their next step (they stay
RUNNING and resume at the next start) and stops the workers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hsops.platform.local.backend import LocalBackend
from hsops.platform.local.triggers import InboxWatcher, Loop, PipelineTriggers

log = logging.getLogger("hsops.platform")


class LocalPlatform:
    def __init__(self, home: Path, *, host: str = "127.0.0.1", port: int | None = 8000, max_workers: int = 2,
                 idle_timeout: float = 60.0, max_runs: int = 2, inbox_settle: float = 2.0,
                 poll_interval: float = 0.5, serving: dict | None = None):
        """``port=None``: no HTTP server (tests and embedded use). ``serving``: serving
        config overrides (``{"replicas": {"min": 1, "max": 2}}``)."""
        self.home = Path(home)
        self.host, self.port = host, port
        self.backend = LocalBackend(self.home, max_workers=max_workers, idle_timeout=idle_timeout)
        self.triggers = PipelineTriggers(self.backend, self.home, self.backend.db)
        self.inbox = InboxWatcher(self.backend, self.home / "inbox", settle_seconds=inbox_settle,
                                  on_duplicate=self.triggers.dropped_again)
        self.max_runs, self.poll_interval = max_runs, poll_interval
        self._loops: list[Loop] = []
        self.serving_overrides = serving or {}
        self.supervisor = None

    def start(self) -> LocalPlatform:
        if self.port is not None:
            self._start_server()  # first: a port in use fails before anything else started
        self.backend.start()
        self.backend.state_machines.start_driver(max_concurrent=self.max_runs)
        self._loops = [Loop("hsops-inbox", self.inbox.poll, self.poll_interval).start(),
                       Loop("hsops-triggers", self.triggers.poll, self.poll_interval).start(),
                       Loop("hsops-scheduler", self.backend.scheduler.fire_due, 1.0).start()]
        return self

    def _start_server(self) -> None:
        from hsops.platform.local.replicas import ReplicaSupervisor

        self.supervisor = ReplicaSupervisor(self.home, host=self.host, port=self.port, pipelines=True,
                                            overrides=self.serving_overrides,
                                            log_file=self.home / "logs" / "serving.log")
        (self.home / "logs").mkdir(exist_ok=True)
        self.supervisor.start()  # binds the port: OSError here if it is taken
        self.port = self.supervisor.port

    @property
    def api_started(self) -> bool:
        return bool(self.supervisor is not None and self.supervisor.ready_count() > 0)

    def stop(self, grace: float = 10.0) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        for loop in self._loops:
            loop.stop()
        self.backend.state_machines.stop(timeout=grace)
        self.backend.functions.stop(grace=grace)
        self.backend.close()
