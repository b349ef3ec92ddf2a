"""Row-level validation: each row is accepted as a :class:`LabeledRow` or quarantined.

A rejected row is never dropped silently: it is written to the quarantine file with a
short machine-readable ``reason`` (counted in the report) and a message for people.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from hsops.data.readers import UNDECODABLE, RawRow
from hsops.domain.codes import HSCode, InvalidCode, normalise_code

MAX_TEXT_CHARS = 2000
_CONTROL_OR_SPACE = re.compile(r"[\s\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class LabeledRow:
    text: str
    code: HSCode
    source_row: int


@dataclass(frozen=True, slots=True)
class Rejection:
    source_row: int
    reason: str  # short category: blank_description, invalid_code, ...
    message: str
    record: dict


def clean_text(value: object) -> str:
    """Descriptions as stored: NFC, control characters and runs of white space folded."""
    return _CONTROL_OR_SPACE.sub(" ", unicodedata.normalize("NFC", str(value))).strip()


def check_text(value: object) -> tuple[str | None, str | None, str | None]:
    """Return (clean text, None, None) or (None, reason, message)."""
    if value is None:
        return None, "missing_description", "description is missing"
    if not isinstance(value, str):
        return None, "missing_description", f"description must be text, got {type(value).__name__}"
    if len(value) > MAX_TEXT_CHARS:
        return None, "description_too_long", (
            f"description is {len(value):,} characters; at most {MAX_TEXT_CHARS:,}")
    text = clean_text(value)
    if not text:
        return None, "blank_description", "description is blank"
    if not any(ch.isalnum() for ch in text):
        return None, "blank_description", f"description {text[:40]!r} has no letters or digits"
    return text, None, None


def validate_row(row: RawRow) -> LabeledRow | Rejection:
    if row.problem is not None:
        reason = "not_utf8" if row.problem.startswith(UNDECODABLE) else "malformed_row"
        return Rejection(row.number, reason, row.problem, row.record)
    text, reason, message = check_text(row.text)
    if text is None:
        return Rejection(row.number, reason, message, row.record)
    label = row.label
    if isinstance(label, float) and label.is_integer():  # Parquet/JSON numbers: 3924100000.0
        label = int(label)
    try:
        code = normalise_code(label)
    except InvalidCode as exc:
        return Rejection(row.number, "invalid_code", str(exc), row.record)
    return LabeledRow(text, code, row.number)
