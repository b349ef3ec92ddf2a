"""Train a model kind on a dataset version, calibrate it, evaluate it, export it.

The export is written to a staging folder and published (renamed) only when complete,
so a crash at any point leaves no half-written model where the registry or serving
could pick it up; re-running the same training publishes to the same content address.

With ``upsample``, only the train split is up-sampled (``hsops.data.upsampling``); dev
and test stay as they are, so calibration and the reported scores describe real rows.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from hsops.data.datasets import Dataset
from hsops.data.upsampling import plan_upsample, stratified_upsample
from hsops.models import artifact
from hsops.models.base import create
from hsops.models.calibration import CALIBRATION_FILE, Calibration, Headings
from hsops.training.calibration import (apply_temperature, choose_heading_threshold, choose_threshold,
                                        fit_temperature)
from hsops.training.evaluate import evaluate_proba

DEFAULT_TARGET_ACCURACY = 0.90


@dataclass
class TrainResult:
    kind: str
    params: dict
    dataset_version: str
    artifact_dir: Path
    train_seconds: float
    calibration: dict
    dev_metrics: dict
    test_metrics: dict
    git_commit: str | None
    history: list = field(default_factory=list)
    upsample: dict | None = None  # settings and train rows before/after; None when off

    def to_dict(self) -> dict:
        out = dict(self.__dict__)
        out["artifact_dir"] = str(self.artifact_dir)
        return out


def git_commit() -> str | None:
    """The commit of the checkout hsops runs from, for lineage (None outside git)."""
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def upsample_options(upsample: bool | dict) -> dict | None:
    """``train(upsample=...)`` as keyword arguments of ``stratified_upsample`` (None: off).

    ``True`` takes the defaults; a dict may set ``min_per_class``, ``max_ratio`` and
    ``seed``. Values are checked here, before anything is trained."""
    if upsample is False or upsample is None:
        return None
    if upsample is True:
        options = {}
    elif isinstance(upsample, dict):
        unknown = sorted(set(upsample) - {"min_per_class", "max_ratio", "seed"})
        if unknown:
            raise ValueError(f"unknown upsample option(s) {unknown}; known: min_per_class, max_ratio, seed")
        options = dict(upsample)
    else:
        raise TypeError(f"upsample must be True, False or a dict of options, got {upsample!r}")
    plan_upsample([], **options)  # raises ValueError on a bad value
    return options


def train(dataset: Dataset, home: Path, *, kind: str = "linear", params: dict | None = None,
          target_accuracy: float = DEFAULT_TARGET_ACCURACY, upsample: bool | dict = False,
          on_progress: Callable[[str, dict], None] | None = None) -> TrainResult:
    params = dict(params or {})
    options = upsample_options(upsample)
    train_x, train_y = dataset.part("train")
    dev_x, dev_y = dataset.part("dev")
    test_x, test_y = dataset.part("test")
    if not train_x:
        raise ValueError(f"dataset {dataset.version} has no training rows")
    notify = on_progress or (lambda stage, info: None)
    upsampled = None
    if options is not None:
        upsampled = plan_upsample(train_y, **options).summary()
        train_x, train_y = stratified_upsample(train_x, train_y, **options)
        notify("upsample", upsampled)

    model = create(kind, **params)
    fit_kwargs = {}
    fit_signature = inspect.signature(model.fit).parameters
    if "eval_set" in fit_signature and dev_x:
        fit_kwargs["eval_set"] = (dev_x, dev_y)
    if "on_epoch" in fit_signature:
        fit_kwargs["on_epoch"] = lambda record: notify("epoch", record)
    notify("fit", {"rows": len(train_x), "classes": len(set(train_y))})
    started = time.perf_counter()
    model.fit(train_x, train_y, **fit_kwargs)
    train_seconds = time.perf_counter() - started
    probe = model.predict_proba((dev_x or train_x)[:256])
    if not np.isfinite(probe).all():  # never register a model that answers NaN
        raise ValueError(f"training diverged: {kind} gives non-finite probabilities "
                         "(try a lower learning_rate)")

    notify("calibrate", {"rows": len(dev_x)})
    calibration = _calibrate(model, dev_x, dev_y, target_accuracy)
    notify("evaluate", {"rows": len(test_x)})
    dev_metrics = _metrics(model, dev_x, dev_y, calibration)
    test_metrics = _metrics(model, test_x, test_y, calibration)

    metadata = {
        "kind": kind, "params": model.get_params(), "dataset_version": dataset.version,
        "git_commit": git_commit(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "train_seconds": round(train_seconds, 2), "upsample": upsampled, "test_metrics": test_metrics,
    }
    root = Path(home) / "artifacts"
    staging = artifact.staging_dir(root)
    try:
        model.save(staging)
        (staging / CALIBRATION_FILE).write_text(json.dumps(calibration), encoding="utf-8")
        artifact.write_manifest(staging, json.loads(json.dumps(metadata, default=str)))
        final = artifact.publish(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return TrainResult(kind, json.loads(json.dumps(model.get_params(), default=list)),
                       dataset.version, final, train_seconds, calibration, dev_metrics,
                       test_metrics, metadata["git_commit"], getattr(model, "history_", []), upsampled)


MIN_DEV_ROWS = 20


def _calibrate(model, dev_x: list[str], dev_y: list[str], target_accuracy: float) -> dict:
    if len(dev_x) < MIN_DEV_ROWS:
        # Too few rows to know where the model is right: abstain on everything rather
        # than answer everything with unearned confidence.
        return {"temperature": 1.0, "threshold": 1.0, "target_accuracy": target_accuracy,
                "heading_threshold": 1.0, "calibrated": False, "dev_rows": len(dev_x),
                "note": f"fewer than {MIN_DEV_ROWS} dev rows: the model abstains on every answer"}
    raw = model.predict_proba(dev_x)
    index = {c: i for i, c in enumerate(model.classes_)}
    target = np.array([index.get(y, -1) for y in dev_y])
    temperature = fit_temperature(raw, target)
    proba = apply_temperature(raw, temperature)
    top = proba.argmax(axis=1)
    confidence = proba[np.arange(len(top)), top]
    threshold = choose_threshold(confidence, model.classes_[top] == np.array(dev_y), target_accuracy)
    # the heading threshold is chosen on the rows the subheading abstains on, for the
    # same target at HS4 level (see choose_heading_threshold for why not on all rows)
    answered = Calibration(threshold=threshold).answered(confidence)
    heading, heading_confidence = Headings(model.classes_).best(proba)
    heading_correct = heading == np.array([y[:4] for y in dev_y])
    heading_threshold = choose_heading_threshold(heading_confidence, heading_correct, answered,
                                                 target_accuracy, min_rows=MIN_DEV_ROWS)
    return {"temperature": temperature, "threshold": threshold, "target_accuracy": target_accuracy,
            "heading_threshold": heading_threshold, "calibrated": True, "dev_rows": len(dev_x),
            "heading_rows": int((~answered).sum())}


def _metrics(model, texts: list[str], labels: list[str], calibration: dict) -> dict:
    if not texts:
        return {}
    proba = apply_temperature(model.predict_proba(texts), calibration["temperature"])
    return evaluate_proba(proba, np.asarray(model.classes_), labels, threshold=calibration["threshold"],
                          target_accuracy=calibration["target_accuracy"],
                          heading_threshold=calibration.get("heading_threshold"))
