"""Data stage handlers: ingest, validate, quarantine, split."""

from __future__ import annotations

import json
import shutil
from pathlib import PurePosixPath

from hsops._fs import staging_dir
from hsops.pipeline.handlers._common import BadEvent, backend_of, home_of, require
from hsops.pipeline.policy import check_policy, default_policy

DATA_RULES = ("min_rows", "max_quarantine_share", "min_classes", "min_test_rows")


def _policy(event: dict) -> dict:
    """The dataset-level rules: defaults, overridden by the event's (checked) policy."""
    given = event.get("policy") or {}
    if not isinstance(given, dict):
        raise BadEvent(f"'policy' must be an object, got {type(given).__name__}")
    try:
        checked = check_policy({k: v for k, v in given.items() if k in DATA_RULES})
    except ValueError as exc:
        raise BadEvent(str(exc)) from None
    return {k: v for k, v in default_policy().items() if k in DATA_RULES} | checked


def ingest(event: dict, context) -> dict:
    """``{"source": {"object_key": "inbox/x.csv", "text_column"?, "label_column"?, "encoding"?}}``
    or ``{"source": {"dataset_version": "ds-..." | "latest"}}`` -> the ingest report.

    A file that cannot be read at all is not an error here: the report carries
    ``file_error`` and Validate turns it into a failed run with the reason."""
    from hsops.data.datasets import DatasetNotFound, list_versions, load_dataset
    from hsops.data.ingest import ingest_file
    from hsops.data.readers import DataFileError

    source = require(event, "source", dict)
    home = home_of(context)
    if source.get("dataset_version"):
        version = source["dataset_version"]
        if version == "latest":
            versions = list_versions(home)
            if not versions:
                raise BadEvent("no dataset version exists yet to retrain on")
            version = versions[0]
        try:
            dataset = load_dataset(home, version)
        except DatasetNotFound as exc:
            raise BadEvent(str(exc)) from None
        return {"source": version, "dataset_version": version, "new_version": False, "file_error": None,
                "rows_read": len(dataset), "accepted": len(dataset), "quarantined": 0,
                "classes_hs6": len(set(dataset.hs6)), "quarantine_reasons": {}}
    key = require(source, "object_key")
    name = PurePosixPath(key).name
    work = staging_dir(home / "tmp")
    try:
        local = work / name  # the name keeps its suffix: the reader picks the format by it
        backend_of(context).objects.download(key, local)
        try:
            report = ingest_file(local, home, text_column=source.get("text_column"),
                                 label_column=source.get("label_column"), encoding=source.get("encoding"))
        except DataFileError as exc:
            return {"source": key, "dataset_version": None, "new_version": False, "file_error": str(exc),
                    "rows_read": 0, "accepted": 0, "quarantined": 0, "classes_hs6": 0, "quarantine_reasons": {}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = report.to_dict()
    out["source"] = key
    out["file_error"] = None
    return out


def validate(event: dict, context) -> dict:
    """Dataset-level rules on the ingest report -> ``{"valid", "reasons", "summary", "dataset_version"}``."""
    report = require(event, "ingest", dict)
    policy = _policy(event)
    reasons = []
    if report.get("file_error"):
        reasons.append(f"the file could not be read: {report['file_error']}")
    else:
        accepted, read = int(report.get("accepted") or 0), int(report.get("rows_read") or 0)
        if accepted < policy["min_rows"]:
            reasons.append(f"{accepted} valid rows, fewer than the {policy['min_rows']} needed")
        if read and report.get("quarantined", 0) / read > policy["max_quarantine_share"]:
            top = ", ".join(f"{k} ({v})" for k, v in list((report.get("quarantine_reasons") or {}).items())[:3])
            reasons.append(f"{report['quarantined']} of {read} rows quarantined "
                           f"(more than {policy['max_quarantine_share']:.0%}): {top}")
        if int(report.get("classes_hs6") or 0) < policy["min_classes"]:
            reasons.append(f"{report.get('classes_hs6', 0)} HS6 classes, fewer than {policy['min_classes']}")
    return {"valid": not reasons, "reasons": reasons, "dataset_version": report.get("dataset_version"),
            "summary": "; ".join(reasons) if reasons else "valid"}


def quarantine(event: dict, context) -> dict:
    """Move a rejected source object to ``quarantine/`` with ``<name>.reasons.json`` beside it."""
    source = require(event, "source", dict)
    validation = require(event, "validation", dict)
    key = source.get("object_key")
    if not key:  # a dataset version that fails the rules: nothing to move
        return {"quarantine_key": None}
    objects = backend_of(context).objects
    target = f"quarantine/{PurePosixPath(key).name}"
    if key == target or key.startswith("quarantine/"):  # a quarantined file run again: it stays
        return {"quarantine_key": key}
    reasons = {"source": key, "execution": event.get("execution"), "reasons": validation.get("reasons", [])}
    objects.put(f"{target}.reasons.json", json.dumps(reasons, indent=2).encode())
    try:
        objects.put(target, objects.get(key))
        objects.delete(key)
    except KeyError:  # the contract's ObjectNotFound: moved by an earlier delivery of this event
        pass
    return {"quarantine_key": target}


def split(event: dict, context) -> dict:
    """Rows and classes per split of the dataset version; fails when the test split is too
    small to compare models on. Splits are assigned by group key when a version is stored,
    so every version puts the same description in the same split."""
    from hsops.data.datasets import load_dataset

    version = require(event, "dataset_version")
    policy = _policy(event)
    dataset = load_dataset(home_of(context), version)
    counts = {}
    for name in ("train", "dev", "test"):
        texts, labels = dataset.part(name)
        counts[name] = {"rows": len(texts), "classes": len(set(labels))}
    if counts["test"]["rows"] < policy["min_test_rows"]:
        raise InsufficientData(f"the test split of {version} has {counts['test']['rows']} rows, "
                               f"fewer than the {policy['min_test_rows']} needed to compare models")
    train_classes = set(dataset.part("train")[1])
    test_labels = dataset.part("test")[1]
    unseen = sum(1 for label in test_labels if label not in train_classes)
    return {"dataset_version": version, **counts, "test_rows_of_unseen_classes": unseen}


class InsufficientData(ValueError):
    pass
