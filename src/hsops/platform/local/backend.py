"""The embedded local backend: the Backend contract on files and one SQLite database.

Everything lives under ``HSOPS_HOME``: objects under ``objects/``, and the event bus,
scheduler, function runtime and state-machine executions in ``platform.db``. Building a
``LocalBackend`` is cheap and starts nothing; ``start()`` starts the function runtime's
supervisor (worker processes) and the state-machine driver. A worker process builds its
own unstarted ``LocalBackend`` to hand to handlers as ``context.backend``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from hsops._sqlite import SqliteDatabase
from hsops.platform.backend import Backend

PLATFORM_DB = "platform.db"
OBJECTS_DIR = "objects"


class LocalBackend(Backend):
    name = "local"

    def __init__(self, home: Path, *, functions: dict[str, str] | None = None, max_workers: int = 2,
                 idle_timeout: float = 60.0, function_timeout: float = 7200.0):
        """``functions``: handler name -> ``"module:callable"`` (default: the pipeline's).

        ``function_timeout``: 2 hours, not Lambda's 15 minutes: locally, training the
        slower model kinds on the full corpus takes longer (on AWS such training moves to
        a SageMaker or Batch job; see the deployment docs)."""
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.db = SqliteDatabase(self.home / PLATFORM_DB)
        self._functions = functions
        self.max_workers = max_workers
        self.idle_timeout = idle_timeout
        self.function_timeout = function_timeout

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.home)!r})"

    @cached_property
    def events(self):
        from hsops.platform.local.event_bus import LocalEventBus

        return LocalEventBus(self.db)

    @cached_property
    def objects(self):
        from hsops.platform.local.object_store import LocalObjectStore

        return LocalObjectStore(self.home / OBJECTS_DIR, events=self.events)

    @cached_property
    def scheduler(self):
        from hsops.platform.local.scheduler import LocalScheduler

        return LocalScheduler(self.db, self.events)

    @cached_property
    def functions(self):
        from hsops.platform.local.functions import LocalFunctionRuntime

        if self._functions is None:
            from hsops.pipeline.handlers import FUNCTIONS

            self._functions = dict(FUNCTIONS)
        return LocalFunctionRuntime(self.db, self.home, self._functions, max_workers=self.max_workers,
                                    idle_timeout=self.idle_timeout, timeout=self.function_timeout)

    @cached_property
    def state_machines(self):
        from hsops.platform.local.state_machines import LocalStateMachines

        return LocalStateMachines(self.db, self.functions)

    def start(self) -> None:
        self.functions.start()

    def close(self) -> None:
        if "functions" in self.__dict__:
            self.functions.stop()
        if "state_machines" in self.__dict__:
            self.state_machines.stop()
        self.db.close()
