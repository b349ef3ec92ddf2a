"""Ingest: read a labelled file, validate every row, quarantine the bad ones, version
the good ones. The report counts every row: ``rows_read == accepted + quarantined``."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hsops._hashing import sha256_file
from hsops.data.datasets import save_dataset
from hsops.data.readers import detect_format, read_table
from hsops.data.validation import LabeledRow, Rejection, validate_row


@dataclass
class IngestReport:
    source: str
    format: str
    rows_read: int
    accepted: int
    quarantined: int
    quarantine_reasons: dict[str, int]
    quarantine_file: str | None
    dataset_version: str | None
    new_version: bool
    duplicate_rows: int  # accepted rows repeating an earlier (description, code) pair
    conflicting_descriptions: int  # descriptions carrying more than one HS6
    codes_not_in_hs2022: int  # accepted rows whose subheading is from another edition
    classes_hs6: int
    examples: list[dict] = field(default_factory=list)  # a few quarantined rows

    def to_dict(self) -> dict:
        return asdict(self)


def ingest_file(path: str | Path, home: Path, *, text_column: str | None = None,
                label_column: str | None = None, fmt: str | None = None, encoding: str | None = None,
                on_progress: Callable[[int], None] | None = None) -> IngestReport:
    """Validate ``path`` row by row and store its good rows as a dataset version.

    Raises ``DataFileError`` when the file as a whole is unusable. Quarantined rows go
    to ``HSOPS_HOME/quarantine/<file sha256>.jsonl`` (one JSON object per row: row
    number, reason, message, the record as read), rewritten whole on each ingest of the
    same file so repeating an ingest does not duplicate them.
    """
    path = Path(path)
    fmt = fmt or detect_format(path)
    accepted: list[LabeledRow] = []
    rejected: list[Rejection] = []
    for raw in read_table(path, text_column=text_column, label_column=label_column, fmt=fmt,
                          encoding=encoding):
        result = validate_row(raw)
        (accepted if isinstance(result, LabeledRow) else rejected).append(result)
        if on_progress and raw.number % 5000 == 0:
            on_progress(raw.number)

    source_sha256 = sha256_file(path)
    quarantine_file = None
    if rejected:
        qdir = Path(home) / "quarantine"
        qdir.mkdir(parents=True, exist_ok=True)
        target = qdir / f"{source_sha256[:16]}.jsonl"
        tmp = target.with_suffix(".jsonl.tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            for r in rejected:
                out.write(json.dumps({"source": path.name, "row": r.source_row, "reason": r.reason,
                                      "message": r.message, "record": r.record},
                                     ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, target)
        quarantine_file = str(target)

    version, new = None, False
    if accepted:
        meta = {"source": path.name, "source_sha256": source_sha256, "format": fmt,
                "text_column": text_column, "label_column": label_column,
                "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        version, new = save_dataset(home, accepted, meta)

    pairs = Counter((r.text, r.code.full) for r in accepted)
    labels_by_text: dict[str, set[str]] = {}
    for r in accepted:
        labels_by_text.setdefault(r.text.lower(), set()).add(r.code.hs6)
    return IngestReport(
        source=str(path), format=fmt,
        rows_read=len(accepted) + len(rejected), accepted=len(accepted), quarantined=len(rejected),
        quarantine_reasons=dict(Counter(r.reason for r in rejected).most_common()),
        quarantine_file=quarantine_file, dataset_version=version, new_version=new,
        duplicate_rows=sum(n - 1 for n in pairs.values()),
        conflicting_descriptions=sum(1 for s in labels_by_text.values() if len(s) > 1),
        codes_not_in_hs2022=sum(1 for r in accepted if not r.code.in_hs2022),
        classes_hs6=len({r.code.hs6 for r in accepted}),
        examples=[{"row": r.source_row, "reason": r.reason, "message": r.message} for r in rejected[:5]],
    )
