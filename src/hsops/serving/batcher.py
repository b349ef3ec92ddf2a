"""Adaptive micro-batching: concurrent real-time requests share one model call.

Each replica has one model thread. A request puts its descriptions on a queue and
waits on a future; the thread takes everything queued (up to ``max_batch``
descriptions) and answers it with one ``Predictor.predict`` call per (model, top_k,
explain) group, so the answer to a request is exactly what a call with its own texts
would give (the models' answers do not depend on the other rows of a batch: the
conformance suite checks it).

Why adaptive: at low load a lone request runs at once, with no added wait; under load,
requests pile up while the thread is busy, and the next call takes them all. Only when
recent calls merged several requests does the thread also wait up to ``max_wait_s``
(counted from the oldest request's arrival) for the batch to fill.

Batch and async jobs submit with ``background=True``: their chunks run only when no
real-time request is waiting, so a million-line job does not push a live request's
latency past one model call.

Overload is refused, never queued without bound: past ``max_queue`` waiting
descriptions a request is shed at once (``Overloaded``, 503 with ``Retry-After``
estimated from the recent throughput), and a request that waited past
``queue_timeout_s`` is shed rather than answered after its client has given up.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from hsops.serving import metrics

log = logging.getLogger("hsops.serving.batcher")


class Overloaded(Exception):
    """A request refused to protect latency; ``retry_after`` seconds is a fair wait."""

    def __init__(self, reason: str, message: str, retry_after: float):
        super().__init__(message)
        self.reason, self.message, self.retry_after = reason, message, retry_after


@dataclass
class _Item:
    predictor: object
    texts: list[str]
    top_k: int
    explain: bool
    future: concurrent.futures.Future
    background: bool = False
    enqueued: float = field(default_factory=time.monotonic)


class MicroBatcher:
    def __init__(self, *, max_batch: int = 256, max_wait_s: float = 0.002, max_queue: int = 4096,
                 queue_timeout_s: float = 2.0):
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.max_queue, self.queue_timeout_s = max_queue, queue_timeout_s
        self._items: deque[_Item] = deque()
        self._background: deque[_Item] = deque()
        self._queued = 0  # descriptions waiting
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._accepting = True
        self._stopped = False
        self._merged = 1.0  # moving average of requests per model call: is there load?
        self._rate = 0.0  # moving average of descriptions per second of model time
        self.busy_seconds = 0.0  # time in model calls, for the replica's utilisation
        self.calls = 0

    # -- submitting ----------------------------------------------------------------------
    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, predictor, texts: list[str], top_k: int = 5, explain: bool = False, *,
               background: bool = False, arrived: float | None = None) -> concurrent.futures.Future:
        """A future of ``list[Prediction]``; raises ``Overloaded`` when the queue is full.
        ``background`` work (jobs) waits for a moment with no real-time request.
        ``arrived`` (``time.monotonic()``): when the request reached the server, so the
        queue timeout counts the time it spent before the queue too."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._cond:
            if not self._accepting:
                metrics.SHED.labels("draining").inc()
                raise Overloaded("draining", "this replica is shutting down; retry", 1.0)
            if background:
                self._background.append(_Item(predictor, list(texts), top_k, explain, future, True))
                self._start()
                self._cond.notify()
                return future
            if self._queued and self._queued + len(texts) > self.max_queue:
                metrics.SHED.labels("queue_full").inc()
                raise Overloaded("queue_full", f"the model queue is full ({self._queued} descriptions "
                                 "waiting); retry after the Retry-After seconds", self._retry_after())
            item = _Item(predictor, list(texts), top_k, explain, future)
            if arrived is not None:
                item.enqueued = min(item.enqueued, arrived)
            self._items.append(item)
            self._queued += len(texts)
            metrics.QUEUE_DEPTH.set(self._queued)
            self._start()
            self._cond.notify()
        return future

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hsops-model", daemon=True)
            self._thread.start()

    def predict(self, predictor, texts: list[str], top_k: int = 5, explain: bool = False,
                timeout: float | None = None) -> list:
        """Blocking form, for callers outside an event loop."""
        return self.submit(predictor, texts, top_k, explain).result(timeout)

    def _retry_after(self) -> float:
        if self._rate <= 0:
            return 1.0
        return max(1.0, math.ceil(self._queued / self._rate))

    # -- the model thread ----------------------------------------------------------------
    def _take(self) -> list[_Item]:
        """Items to run now (caller holds the lock), oldest first, whole requests only;
        real-time items first, background ones only when none waits."""
        queue = self._items if self._items else self._background
        taken, size = [], 0
        while queue:
            item = queue[0]
            if taken and size + len(item.texts) > self.max_batch:
                break
            queue.popleft()
            if queue is self._items:
                self._queued -= len(item.texts)
            if not item.future.set_running_or_notify_cancel():
                continue  # the client went away while waiting
            taken.append(item)
            size += len(item.texts)
        metrics.QUEUE_DEPTH.set(self._queued)
        return taken

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._background and not self._stopped:
                    self._cond.wait()
                if self._stopped and not self._items and not self._background:
                    return
                if (self._items and self._merged > 1.5 and self._queued < self.max_batch
                        and self.max_wait_s > 0):
                    deadline = self._items[0].enqueued + self.max_wait_s
                    # close() ends the wait: a draining replica answers what it holds now
                    while (not self._stopped and self._queued < self.max_batch
                           and (left := deadline - time.monotonic()) > 0):
                        self._cond.wait(left)
                batch = self._take()
            self._answer(batch)

    def _answer(self, batch: list[_Item]) -> None:
        now = time.monotonic()
        live = []
        for item in batch:
            waited = now - item.enqueued
            if not item.background:
                metrics.QUEUE_WAIT.observe(waited)
            if not item.background and waited > self.queue_timeout_s:
                metrics.SHED.labels("queue_timeout").inc()
                item.future.set_exception(Overloaded(
                    "queue_timeout", f"waited {waited:.1f}s for the model, past the "
                    f"{self.queue_timeout_s:g}s limit; retry", self._retry_after()))
            else:
                live.append(item)
        if not live:
            return
        if not live[0].background:
            self._merged = 0.8 * self._merged + 0.2 * len(live)
        groups: dict[tuple, list[_Item]] = {}
        for item in live:
            groups.setdefault((id(item.predictor), item.top_k, item.explain), []).append(item)
        for items in groups.values():
            texts = [t for item in items for t in item.texts]
            started = time.perf_counter()
            try:
                predictions = items[0].predictor.predict(texts, top_k=items[0].top_k, explain=items[0].explain)
            except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                log.exception("model call failed for %d descriptions", len(texts))
                for item in items:
                    item.future.set_exception(exc)
                continue
            finally:
                elapsed = time.perf_counter() - started
                self.busy_seconds += elapsed
                self.calls += 1
            if elapsed > 0:
                self._rate = 0.8 * self._rate + 0.2 * (len(texts) / elapsed) if self._rate else len(texts) / elapsed
            metrics.BATCH_SIZE.observe(len(texts))
            metrics.BATCH_REQUESTS.observe(len(items))
            start = 0
            for item in items:
                item.future.set_result(predictions[start:start + len(item.texts)])
                start += len(item.texts)

    # -- starting and stopping -------------------------------------------------------------
    def open(self) -> None:
        """Accept work again after ``close()``: an ASGI server may run the app's lifespan
        more than once (test clients do), and each startup must undo the last shutdown."""
        with self._cond:
            self._accepting, self._stopped = True, False
            if self._thread is not None and not self._thread.is_alive():
                self._thread = None  # the next submit starts a new model thread

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new work, answer what is queued, stop the thread."""
        with self._cond:
            self._accepting = False
            self._stopped = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
