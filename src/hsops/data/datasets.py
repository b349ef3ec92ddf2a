"""Versioned datasets: the validated rows of an ingest, stored under ``HSOPS_HOME``.

A dataset version is the SHA-256 of its normalised rows (description and full code),
sorted, so ingesting the same data twice, or the same rows in another order or file
format, gives the same version and stores nothing new. Each version lives in
``datasets/<version>/`` as ``rows.parquet`` plus ``dataset.json``; both are written to
a staging folder first and renamed into place, so a crash never leaves half a dataset.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from hsops._fs import staging_dir
from hsops.data.splits import assign_split
from hsops.data.validation import LabeledRow


class DatasetNotFound(LookupError):
    pass


def dataset_version(rows: list[LabeledRow]) -> str:
    digest = hashlib.sha256()
    for line in sorted(f"{r.text}\t{r.code.full}\n" for r in rows):
        digest.update(line.encode("utf-8"))
    return "ds-" + digest.hexdigest()[:16]


@dataclass
class Dataset:
    version: str
    texts: list[str]
    codes: list[str]  # full codes as given (6-12 digits)
    splits: list[str]
    meta: dict

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def hs6(self) -> list[str]:
        return [c[:6] for c in self.codes]

    def part(self, split: str) -> tuple[list[str], list[str]]:
        """(texts, hs6 labels) of one split."""
        idx = [i for i, s in enumerate(self.splits) if s == split]
        return [self.texts[i] for i in idx], [self.codes[i][:6] for i in idx]


def datasets_root(home: Path) -> Path:
    return Path(home) / "datasets"


def save_dataset(home: Path, rows: list[LabeledRow], meta: dict) -> tuple[str, bool]:
    """Store ``rows`` as a dataset version; return (version, whether it is new)."""
    version = dataset_version(rows)
    root = datasets_root(home)
    final = root / version
    if (final / "dataset.json").is_file():
        os.utime(final / "dataset.json")  # the latest ingest is the default training set
        return version, False
    staging = staging_dir(root)
    try:
        table = pa.table({
            "text": [r.text for r in rows],
            "hs_code": [r.code.full for r in rows],
            "hs6": [r.code.hs6 for r in rows],
            "source_row": [r.source_row for r in rows],
            "split": [assign_split(r.text) for r in rows],
        })
        pq.write_table(table, staging / "rows.parquet")
        splits = table.column("split").to_pylist()
        meta = {**meta, "version": version, "rows": len(rows),
                "split_rows": {s: splits.count(s) for s in ("train", "dev", "test")},
                "classes_hs6": len(set(table.column("hs6").to_pylist()))}
        (staging / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        try:
            os.rename(staging, final)
        except OSError:  # another process stored the same version meanwhile
            if not (final / "dataset.json").is_file():
                raise
            shutil.rmtree(staging, ignore_errors=True)
            return version, False
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version, True


def load_dataset(home: Path, version: str) -> Dataset:
    folder = datasets_root(home) / version
    if not (folder / "dataset.json").is_file():
        known = ", ".join(list_versions(home)) or "none"
        raise DatasetNotFound(f"no dataset {version!r} (known: {known}); run `hsops ingest FILE`")
    meta = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    table = pq.read_table(folder / "rows.parquet", columns=["text", "hs_code", "split"])
    return Dataset(version, table.column("text").to_pylist(), table.column("hs_code").to_pylist(),
                   table.column("split").to_pylist(), meta)


def list_versions(home: Path) -> list[str]:
    """Stored versions, newest first."""
    root = datasets_root(home)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if (p / "dataset.json").is_file()]
    return [p.name for p in sorted(found, key=lambda p: (p / "dataset.json").stat().st_mtime_ns, reverse=True)]
