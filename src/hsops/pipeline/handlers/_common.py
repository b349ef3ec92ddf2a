"""What the handlers share: where HSOPS_HOME is, and checking the event they got."""

from __future__ import annotations

from pathlib import Path

from hsops._config import hsops_home


class BadEvent(ValueError):
    """The event lacks a field or carries a wrong type; the message names it."""


def home_of(context) -> Path:
    return Path(getattr(context, "home", None) or hsops_home())


def backend_of(context):
    backend = getattr(context, "backend", None)
    if backend is None:
        raise RuntimeError("this handler needs context.backend (the platform provides it)")
    return backend


def require(event, key: str, kind: type | tuple = str):
    if not isinstance(event, dict):
        raise BadEvent(f"the event must be a JSON object, got {type(event).__name__}")
    if key not in event or event[key] is None:
        raise BadEvent(f"the event lacks {key!r}")
    value = event[key]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise BadEvent(f"{key!r} must be {names}, got {type(value).__name__}")
    return value


def home_relative(home: Path, path: Path) -> str:
    """Payloads carry paths inside HSOPS_HOME relative to it: a moved home still works."""
    try:
        return str(Path(path).resolve().relative_to(Path(home).resolve()))
    except ValueError:
        return str(path)


def inside_home(home: Path, relative: str) -> Path:
    """Resolve a payload path, refusing one that leaves HSOPS_HOME (a hostile event)."""
    path = (Path(home) / relative).resolve()
    if not path.is_relative_to(Path(home).resolve()):
        raise BadEvent(f"path {relative!r} is outside HSOPS_HOME")
    return path
