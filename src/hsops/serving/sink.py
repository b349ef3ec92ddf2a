"""Prediction logging off the request path.

Every answer is logged under its request id (feedback joins on it later), but a SQLite
transaction per request would put a disk write on every prediction and, under load,
serialise the replicas on the database's write lock. ``BufferedSink`` takes rows into
memory and a thread writes them in one transaction every ``interval`` seconds (or as
soon as ``max_rows`` wait). What a crash can lose is the last interval of log rows,
never an answer; ``close()`` flushes what is left. The buffer is bounded: past
``max_buffer`` rows (the database is stuck) new rows are dropped and counted, because
refusing predictions over a logging gap would turn it into an outage.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("hsops.serving.sink")


class BufferedSink:
    def __init__(self, sink, *, interval: float = 0.2, max_rows: int = 2000, max_buffer: int = 200_000):
        self.sink = sink
        self.interval, self.max_rows, self.max_buffer = interval, max_rows, max_buffer
        self._rows: list[dict] = []
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="hsops-prediction-log", daemon=True)
        self._thread.start()

    def log_predictions(self, rows: list[dict]) -> None:
        with self._cond:
            if len(self._rows) + len(rows) > self.max_buffer:
                self.dropped += len(rows)
                return
            self._rows.extend(rows)
            if len(self._rows) >= self.max_rows:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._closed and len(self._rows) < self.max_rows:
                    self._cond.wait(self.interval)
                rows, self._rows = self._rows, []
                closed = self._closed
            if rows:
                self._write(rows)
            if closed:
                return

    def _write(self, rows: list[dict]) -> None:
        try:
            self.sink.log_predictions(rows)
        except Exception:  # noqa: BLE001 - logged and counted, never raised into serving
            self.dropped += len(rows)
            log.exception("could not log %d predictions", len(rows))

    def flush(self) -> None:
        with self._cond:
            rows, self._rows = self._rows, []
        if rows:
            self._write(rows)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=10)
        self.flush()
