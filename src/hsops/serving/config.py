"""Serving settings: limits, micro-batching, overload, security, replicas.

One frozen dataclass with the defaults a single machine wants; ``HSOPS_HOME/serving.json``
overrides any of them (``{"auth": {"predict_requires_key": true}, "batching":
{"max_wait_ms": 1}}``) and the ``hsops serve`` options override the file. Unknown keys
and values of the wrong type are refused with the key's name, so a typo in the file is
an error at start-up and not a setting silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_FILE = "serving.json"
MAX_SETTING = 1e12  # no limit, size or duration here is meaningful beyond this


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Limits:
    max_items: int = 256  # descriptions per real-time request
    max_text_chars: int = 2000
    max_body_bytes: int = 1_000_000  # real-time and async requests
    max_batch_body_bytes: int = 50_000_000  # POST /v1/batch with inline descriptions
    max_batch_items: int = 1_000_000  # descriptions per batch job (inline or file)
    max_batch_file_bytes: int = 500_000_000
    body_timeout_s: float = 10.0  # the whole request body must arrive within this (408)


@dataclass(frozen=True)
class Batching:
    """Adaptive micro-batching of concurrent real-time requests (``serving.batcher``)."""

    max_batch: int = 256  # descriptions per model call
    max_wait_ms: float = 2.0  # how long a batch may wait to fill, only while under load
    max_queue: int = 4096  # descriptions waiting per replica; past it: 503 + Retry-After
    queue_timeout_ms: float = 2000.0  # a request waiting longer is shed (503), not served late
    max_in_flight: int = 512  # prediction requests held by one replica; past it: 503 at once (0: no limit)


@dataclass(frozen=True)
class Auth:
    predict_requires_key: bool = False  # reads of the prediction API open on localhost
    metrics_requires_key: bool = False  # Prometheus scrapes without credentials by default
    rate_limit_per_key: float | None = None  # requests per second per key; over it: 429
    rate_burst: int = 50
    key_cache_seconds: float = 5.0  # a revoked key stops working within this time


@dataclass(frozen=True)
class Replicas:
    min: int = 1
    max: int = 2
    scale_up_utilization: float = 0.7  # mean busy share of the replicas' model threads
    scale_down_utilization: float = 0.2
    scale_up_after_s: float = 2.0  # sustained for this long before adding a replica
    scale_down_after_s: float = 30.0
    drain_seconds: float = 30.0  # graceful shutdown: in-flight requests may finish


@dataclass(frozen=True)
class Jobs:
    chunk_rows: int = 1024  # a batch job's checkpoint: one output part per chunk
    lease_seconds: float = 60.0  # a job whose runner vanished is taken over after this
    runners: int = 1  # job threads per replica
    callback_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")  # callback URL allow-list
    callback_attempts: int = 4
    callback_timeout_s: float = 5.0


@dataclass(frozen=True)
class ServingConfig:
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)
    auth: Auth = field(default_factory=Auth)
    replicas: Replicas = field(default_factory=Replicas)
    jobs: Jobs = field(default_factory=Jobs)
    cors_origins: tuple[str, ...] = ()  # closed by default: no cross-origin browser calls
    json_logs: bool = True

    def with_overrides(self, overrides: dict) -> ServingConfig:
        """A copy with ``{"section": {"key": value}}`` (or top-level keys) applied, checked."""
        return _apply(self, overrides, "")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def check(self) -> ServingConfig:
        r, b = self.replicas, self.batching
        if not 1 <= r.min <= r.max <= 64:
            raise ConfigError(f"replicas: need 1 <= min <= max <= 64, got min={r.min} max={r.max}")
        if not 0 < r.scale_down_utilization < r.scale_up_utilization <= 1:
            raise ConfigError("replicas: need 0 < scale_down_utilization < scale_up_utilization <= 1")
        if b.max_batch < 1 or b.max_queue < b.max_batch:
            raise ConfigError(f"batching: need 1 <= max_batch <= max_queue, got {b.max_batch}, {b.max_queue}")
        # a zero here would refuse every request (413/422), shed every one (no wait is
        # short enough), or leave jobs queued forever: a typo, never a setting
        positive = {f"limits.{f.name}": getattr(self.limits, f.name) for f in dataclasses.fields(self.limits)}
        positive.update({"batching.queue_timeout_ms": b.queue_timeout_ms, "jobs.runners": self.jobs.runners,
                         "jobs.chunk_rows": self.jobs.chunk_rows, "jobs.lease_seconds": self.jobs.lease_seconds,
                         "jobs.callback_attempts": self.jobs.callback_attempts,
                         "jobs.callback_timeout_s": self.jobs.callback_timeout_s})
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name}: must be more than 0, got {value!r}")
        if self.limits.max_items > b.max_queue:
            raise ConfigError("limits.max_items cannot exceed batching.max_queue: such a request could never run")
        for origin in self.cors_origins:
            if origin == "*" or not origin.startswith(("http://", "https://")):
                raise ConfigError(f"cors_origins: {origin!r} is not an http(s) origin "
                                  "(a wildcard is refused: it would open the API to every site)")
        return self


def _apply(obj, overrides: dict, where: str):
    if not isinstance(overrides, dict):
        raise ConfigError(f"{where}: expected an object, got {type(overrides).__name__}" if where
                          else f"expected an object of settings, got {type(overrides).__name__}")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in overrides.items():
        name = f"{where}.{key}" if where else key
        if key not in fields:
            raise ConfigError(f"unknown serving setting {name!r}; known: {', '.join(sorted(fields))}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            changes[key] = _apply(current, value, name)
        else:
            changes[key] = _coerce(name, current, value, fields[key])
    return dataclasses.replace(obj, **changes)


def _coerce(name: str, current, value, spec):
    hint = str(spec.type)
    if "tuple" in hint:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return tuple(value)
    if isinstance(current, bool) or hint == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if value is None and "None" in hint:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{name}: expected a finite number >= 0, got {value!r}")
    if value > MAX_SETTING:  # 1e308 bytes is no limit at all, written as one
        raise ConfigError(f"{name}: {value!r} is too large (at most {MAX_SETTING:.0e})")
    if hint == "int" or (isinstance(current, int) and "float" not in hint):
        if int(value) != value:
            raise ConfigError(f"{name}: expected a whole number, got {value!r}")
        return int(value)
    return float(value)


def load_config(home: Path | None, overrides: dict | None = None) -> ServingConfig:
    """Defaults, then ``home/serving.json`` when it exists, then ``overrides``."""
    config = ServingConfig()
    if home is not None and (path := Path(home) / CONFIG_FILE).is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path.name}: not readable JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path.name}: expected a JSON object of settings, got {type(data).__name__}")
        config = config.with_overrides(data)
    if overrides:
        config = config.with_overrides(overrides)
    return config.check()
