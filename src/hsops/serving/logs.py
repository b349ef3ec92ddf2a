"""Structured JSON logs for the serving path, one object a line, never carrying a secret.

Every record gets ``ts``, ``level``, ``logger``, ``message`` and the fields passed as
``extra`` (``request_id``, ``method``, ``path``, ``status``, ``duration_ms``,
``key_id``, ``model_version``, ...). The redaction filter runs on the rendered message
and every string field: an API key (``hsk_...``), a bearer token or an ``X-API-Key``
value that slipped into a message comes out as ``[redacted]``; the access log
records the key's id, which is not a secret.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

from hsops.serving.auth import KEY_LIKE

_BEARER = re.compile(r"(?i)(bearer\s+|x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+")
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
REDACTED = "[redacted]"


def redact(text: str) -> str:
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, KEY_LIKE.sub(REDACTED, text))


def _scrub(value):
    """``value`` with every string in it redacted, looking inside dicts, lists and tuples
    (an ``extra`` field may be a structure, e.g. request headers)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_scrub(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg, record.args = redact(message), ()
        for name, value in list(vars(record).items()):
            if name not in _STANDARD:
                setattr(record, name, _scrub(value))
        return True


class RedactingFormatter(logging.Formatter):
    """Plain lines, redacted whole: the traceback of an exception is text the filter never sees."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                out[name] = value
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        # default: any other object is logged as its text, redacted like the rest
        return json.dumps(out, default=lambda o: redact(str(o)), ensure_ascii=False)


def configure_logging(*, json_logs: bool = True, level: int = logging.INFO, stream=None) -> logging.Handler:
    """Route the ``hsops`` and ``uvicorn`` loggers to one handler on ``stream`` (stderr),
    redacted, as JSON or as plain lines. Returns the handler (tests read through it)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_logs else RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    for name in ("hsops", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, "_hsops", False)]:
            logger.removeHandler(old)
        handler._hsops = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # our access log carries the request id
    return handler
