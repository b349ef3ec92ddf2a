"""Serve whichever version an alias points at, picking up alias moves without restart.

The index file is re-read at most every ``check_seconds``; when the alias points at a
new version, the new Predictor is built (manifest verified) before it replaces the old
one, so requests in flight keep the model they started with and none fails.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from hsops.registry.index import index_path, resolve
from hsops.serving.predictor import Predictor


class RegistryPredictorSource:
    def __init__(self, home: Path, ref: str = "champion", check_seconds: float = 2.0):
        self.home, self.ref, self.check_seconds = Path(home), ref, check_seconds
        self._lock = threading.Lock()
        self._current: Predictor | None = None
        self._label: str | None = None
        self._checked = 0.0
        self._index_mtime = None

    def __call__(self) -> Predictor:
        now = time.monotonic()
        if self._current is not None and now - self._checked < self.check_seconds:
            return self._current
        with self._lock:
            path = index_path(self.home)
            mtime = path.stat().st_mtime_ns if path.exists() else None
            if self._current is None or mtime != self._index_mtime:
                resolved = resolve(self.home, self.ref)  # raises ModelNotFound
                if resolved.label != self._label:
                    self._current = Predictor.from_dir(resolved.artifact_dir, model_version=resolved.label)
                    self._label = resolved.label
                self._index_mtime = mtime
            self._checked = now
            return self._current
