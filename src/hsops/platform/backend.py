"""The Backend contract: what the lifecycle needs from a platform, local or AWS.

Five small parts, each an abstract base class with a handful of verbs, shaped after the
AWS service that implements it in the ``aws`` backend so the same conformance suite
(``tests/platform/conformance.py``) can run against both:

- ``ObjectStore`` (S3): put/get/list/delete by key. A put under ``inbox/`` publishes an
  ``object.created`` event, as an S3 notification through EventBridge does.
- ``EventBus`` (EventBridge + SQS): durable queues, at-least-once delivery with a
  visibility timeout, retries with a delay, and dead letters that keep the last error.
- ``FunctionRuntime`` (Lambda): invoke a named handler; every invocation records its
  duration, peak memory and cost with the pricing constants of ``hsops._pricing``.
- ``Scheduler`` (EventBridge Scheduler): rate and cron expressions that publish an event.
- ``StateMachines`` (Step Functions): start, describe, list and read the history of
  executions of an Amazon States Language definition.

Value objects are frozen dataclasses with a readable ``repr``; payloads are JSON
objects (dicts), as on the wire.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

INBOX_PREFIX = "inbox/"
OBJECT_CREATED = "object.created"  # the queue an inbox put publishes to


class BackendError(Exception):
    """A request the backend cannot serve; the message says what was wrong."""


class ObjectNotFound(BackendError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "object not found"


class InvalidKey(BackendError, ValueError):
    pass


class ExecutionExists(BackendError):
    """An execution of that name was already started (names are idempotency keys)."""

    def __init__(self, name: str, execution_id: str):
        super().__init__(f"an execution named {name!r} already exists: {execution_id}")
        self.name = name
        self.execution_id = execution_id


# -- object store ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str
    modified: str  # ISO-8601 UTC
    metadata: dict = field(default_factory=dict, hash=False)  # the user metadata given to put


class ObjectStore(abc.ABC):
    """Keys are relative, '/'-separated, without '..' or empty parts (else ``InvalidKey``).
    A put is atomic: a reader sees the old object or the new one, never a part."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes | str | Any, *, metadata: dict | None = None) -> ObjectInfo:
        """``data``: bytes, or a path (str or ``os.PathLike``) of a local file to upload."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def download(self, key: str, dest: Any) -> ObjectInfo:
        """Write the object to the local path ``dest`` (atomically) and describe it."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Describe an object; ``ObjectNotFound`` when there is none."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Objects whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def delete(self, key: str) -> bool:
        """Remove an object; False when there was none."""

    def open(self, key: str):
        """A binary file object to read the object from (stream large objects with it)."""
        import io

        return io.BytesIO(self.get(key))

    def put_content_addressed(self, prefix: str, data: bytes | str | Any, *, suffix: str = "") -> ObjectInfo:
        """Store under ``prefix/<sha256><suffix>``: the same content always lands on the same key."""
        from hsops._hashing import sha256_bytes, sha256_file

        digest = sha256_bytes(data) if isinstance(data, bytes) else sha256_file(data)
        key = f"{prefix.rstrip('/')}/{digest}{suffix}"
        try:
            return self.head(key)
        except ObjectNotFound:
            return self.put(key, data)


# -- event bus ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    id: str
    queue: str
    body: dict
    receive_count: int  # 1 on the first delivery
    receipt: str  # changes with every delivery; ack/nack/extend need the current one
    sent_at: str


@dataclass(frozen=True)
class DeadLetter:
    id: str
    queue: str
    body: dict
    receive_count: int
    error: str
    dead_at: str


class EventBus(abc.ABC):
    """Durable queues with at-least-once delivery.

    A received message is invisible to other receivers for ``visibility_timeout``
    seconds; ``ack`` removes it, ``nack`` makes it visible again after ``delay``
    seconds and records the error; a message received ``max_receives`` times without an
    ack goes to the dead letters with its last error (the error of a nack, or "lease
    expired" when its consumer vanished). ``dedup_key``: a second publish with the same
    key to the same queue returns the first message's id and enqueues nothing.
    """

    @abc.abstractmethod
    def publish(self, queue: str, body: dict, *, dedup_key: str | None = None,
                delay: float = 0.0) -> str: ...

    @abc.abstractmethod
    def receive(self, queue: str, *, max_messages: int = 1, visibility_timeout: float = 30.0,
                max_receives: int = 3) -> list[Message]:
        """Up to ``max_messages`` visible messages, oldest first; never blocks."""

    @abc.abstractmethod
    def ack(self, message: Message) -> None: ...

    @abc.abstractmethod
    def nack(self, message: Message, error: str, *, delay: float = 0.0) -> None: ...

    @abc.abstractmethod
    def dead_letter(self, message: Message, error: str) -> None:
        """Move a received message to the dead letters now, with ``error`` (a consumer that
        knows retrying cannot help; on SQS: send it to the dead-letter queue, then delete it)."""

    @abc.abstractmethod
    def extend(self, message: Message, visibility_timeout: float) -> None:
        """Keep a message invisible for ``visibility_timeout`` more seconds (a heartbeat)."""

    @abc.abstractmethod
    def depth(self, queue: str) -> dict:
        """``{"visible": n, "in_flight": n, "delayed": n, "dead": n}``."""

    @abc.abstractmethod
    def dead_letters(self, queue: str | None = None) -> list[DeadLetter]: ...

    @abc.abstractmethod
    def redrive(self, dead_letter_id: str) -> str:
        """Put a dead letter back on its queue with a fresh receive count; the new id."""


# -- function runtime ------------------------------------------------------------------------
@dataclass(frozen=True)
class Invocation:
    id: str
    function: str
    status: str  # queued | running | succeeded | failed
    payload: dict
    result: dict | None = None
    error: str | None = None  # the error name, e.g. "ValueError" or "Runtime.WorkerLost"
    cause: str | None = None  # the message
    attempts: int = 0
    cold_start: bool = False
    init_ms: float | None = None  # process spawn to ready, on a cold start
    duration_ms: float | None = None
    peak_memory_mb: float | None = None
    billed_memory_mb: int | None = None
    cost_usd: float | None = None
    started_at: str | None = None
    ended_at: str | None = None

    @property
    def done(self) -> bool:
        return self.status in ("succeeded", "failed")


class FunctionRuntime(abc.ABC):
    """Runs named handlers ``handler(event, context) -> dict`` (see ``hsops.pipeline``).

    ``invoke`` is asynchronous and idempotent by ``idempotency_key``: invoking again
    with a key already used returns the first invocation (running or done) instead of
    running the handler twice. A handler that raises fails the invocation with the
    exception's class name as ``error``; a worker that dies mid-invocation fails it
    with ``Runtime.WorkerLost``. Retrying is the caller's choice (ASL ``Retry``).
    """

    @abc.abstractmethod
    def functions(self) -> list[str]: ...

    @abc.abstractmethod
    def invoke(self, function: str, payload: dict, *, idempotency_key: str | None = None) -> Invocation: ...

    @abc.abstractmethod
    def get(self, invocation_id: str) -> Invocation: ...

    @abc.abstractmethod
    def wait(self, invocation_id: str, timeout: float | None = None) -> Invocation:
        """Block until the invocation is done (or ``timeout`` passes); its latest state."""

    def call(self, function: str, payload: dict, *, idempotency_key: str | None = None,
             timeout: float | None = None) -> Invocation:
        return self.wait(self.invoke(function, payload, idempotency_key=idempotency_key).id, timeout)

    @abc.abstractmethod
    def stats(self) -> dict:
        """Workers now, cold starts and their init times, invocations by status."""


# -- scheduler -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    name: str
    expression: str  # "rate(5 minutes)" or "cron(0 3 * * ? *)" (AWS syntax, UTC)
    queue: str
    body: dict = field(default_factory=dict)
    enabled: bool = True
    last_fired: str | None = None
    next_fire: str | None = None


class Scheduler(abc.ABC):
    @abc.abstractmethod
    def put(self, name: str, expression: str, queue: str, body: dict | None = None) -> Schedule:
        """Create or replace; a bad expression raises ``ValueError`` saying why."""

    @abc.abstractmethod
    def delete(self, name: str) -> bool: ...

    @abc.abstractmethod
    def list(self) -> list[Schedule]: ...

    @abc.abstractmethod
    def fire_due(self, now: Any = None) -> list[str]:
        """Publish one event for every schedule due at ``now`` (a datetime, default the
        current time); the names fired. A schedule fires at most once per due time, even
        when two processes call this together or the platform was down for several
        periods (missed periods are not replayed)."""


# -- state machines ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Execution:
    id: str
    name: str
    state_machine: str
    status: str  # PENDING | RUNNING | SUCCEEDED | FAILED | ABORTED
    input: dict
    output: Any = None
    error: str | None = None
    cause: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    cost_usd: float = 0.0


class StateMachines(abc.ABC):
    @abc.abstractmethod
    def start(self, state_machine: str, input: dict, *, name: str | None = None) -> Execution:
        """Start an execution; ``name`` already used raises ``ExecutionExists``."""

    @abc.abstractmethod
    def describe(self, execution_id: str) -> Execution: ...

    @abc.abstractmethod
    def list(self, *, status: str | None = None, limit: int = 100) -> list[Execution]: ...

    @abc.abstractmethod
    def history(self, execution_id: str) -> list[dict]:
        """One entry per state run: state, type, status, start, end, duration, cost, error."""


class Backend(abc.ABC):
    """The parts together. ``name`` is "local" or "aws"."""

    name: str
    objects: ObjectStore
    events: EventBus
    functions: FunctionRuntime
    scheduler: Scheduler
    state_machines: StateMachines

    def close(self) -> None:
        """Release connections and stop background threads and workers."""
