"""API keys with scopes, stored hashed; a per-key rate limit.

A key looks like ``hsk_<id>_<secret>``: the 12-hex-digit id finds the stored record, the
32-byte random secret proves possession. Only ``sha256(id:secret)`` is stored: a
leaked database does not leak keys, and because the secret is random and long a slow
password hash would add nothing (the same reasoning as GitHub's tokens). Comparison
is constant-time. The plain key is shown once, when it is created.

Scopes: ``predict`` (real-time, async and batch prediction, job status), ``feedback``
(sending true codes back), ``admin`` (pipelines, experiments, models; admin implies
the other two). Clients send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

A key presented on an open route is still checked: a wrong key is a 401 even where
no key is needed, so a misconfigured client finds out at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

SCOPES = ("predict", "feedback", "admin")
KEY_PATTERN = re.compile(r"^hsk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
KEY_LIKE = re.compile(r"hsk_[0-9a-f]{12}_[A-Za-z0-9_-]{4,}")  # for redaction: anything key-shaped


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    name: str
    secret_hash: str
    scopes: tuple[str, ...]
    created_at: str
    revoked_at: str | None = None

    def grants(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes

    def __repr__(self) -> str:  # the hash stays out of reprs and logs
        return f"KeyRecord(key_id={self.key_id!r}, name={self.name!r}, scopes={self.scopes!r})"


@runtime_checkable
class KeyStore(Protocol):
    """Where key records live (the platform's state store implements it)."""

    def get_key(self, key_id: str) -> KeyRecord | None: ...


def hash_secret(key_id: str, secret: str) -> str:
    return hashlib.sha256(f"{key_id}:{secret}".encode("ascii")).hexdigest()


def new_key() -> tuple[str, str, str]:
    """``(plain key, key id, secret hash)``; the plain key is never stored."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 43 characters
    return f"hsk_{key_id}_{secret}", key_id, hash_secret(key_id, secret)


def check_scopes(scopes) -> tuple[str, ...]:
    scopes = tuple(dict.fromkeys(scopes))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(scopes) or 'none'}")
    return scopes


class AuthError(Exception):
    def __init__(self, status: int, error: str, message: str, key_id: str | None = None):
        super().__init__(message)
        self.status, self.error, self.message = status, error, message
        self.key_id = key_id  # a known key refused for its scope: the access log names it


def presented_key(headers) -> str | None:
    """The key a request carries, from ``Authorization: Bearer`` or ``X-API-Key``."""
    value = headers.get("x-api-key")
    if value:
        return value.strip()
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise AuthError(401, "unauthorized", "Authorization must be 'Bearer <API key>'")
    return None


class Authenticator:
    """Checks a presented key against the store, with a short per-process cache so a
    prediction does not cost a database read; revocation takes effect within
    ``cache_seconds``."""

    def __init__(self, store: KeyStore | None, *, cache_seconds: float = 5.0):
        self.store = store
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, KeyRecord | None]] = {}
        self._lock = threading.Lock()

    def _record(self, key_id: str) -> KeyRecord | None:
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1]
        record = self.store.get_key(key_id) if self.store is not None else None
        with self._lock:
            if len(self._cache) > 10_000:  # unknown ids are cached too: bound the memory
                self._cache.clear()
            self._cache[key_id] = (now, record)
        return record

    def verify(self, key: str) -> KeyRecord:
        match = KEY_PATTERN.match(key)
        if match is None:
            raise AuthError(401, "unauthorized", "the API key is malformed; keys look like hsk_<id>_<secret>")
        key_id, secret = match.groups()
        record = self._record(key_id)
        expected = record.secret_hash if record is not None else hash_secret("0" * 12, "")
        # compare even when the id is unknown, so timing does not tell ids apart
        if not hmac.compare_digest(expected, hash_secret(key_id, secret)) or record is None:
            raise AuthError(401, "unauthorized", "the API key is not valid")
        if record.revoked_at:
            raise AuthError(401, "unauthorized", f"the API key {key_id} was revoked")
        return record

    def authorize(self, headers, scope: str, *, required: bool) -> KeyRecord | None:
        """The key's record when the request may go on; ``AuthError`` otherwise."""
        key = presented_key(headers)
        if key is None:
            if required:
                raise AuthError(401, "unauthorized",
                                f"this call needs an API key with the {scope!r} scope "
                                "(Authorization: Bearer <key>; create one with `hsops keys create`)")
            return None
        record = self.verify(key)
        if not record.grants(scope):
            raise AuthError(403, "forbidden", f"the API key {record.key_id} lacks the {scope!r} scope "
                                              f"(it has {', '.join(record.scopes)})", key_id=record.key_id)
        return record


class RateLimiter:
    """A token bucket per key id (per replica): ``rate`` requests a second, bursts of
    ``burst``. ``take`` returns 0 when allowed, else the seconds until a token."""

    def __init__(self, rate: float | None, burst: int):
        self.rate, self.burst = rate, max(1, burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key_id: str) -> float:
        if not self.rate:
            return 0.0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key_id] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key_id] = (tokens, now)
            return (1.0 - tokens) / self.rate
