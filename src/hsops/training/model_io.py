"""Loading a registered artifact for evaluation: verified, with its calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hsops.models import artifact
from hsops.models.base import load_model
from hsops.training.calibration import apply_temperature
from hsops.training.evaluate import evaluate_proba
from hsops.training.train import CALIBRATION_FILE


def load_verified(artifact_dir: Path):
    """(model, calibration, manifest) of an artifact whose files match its manifest."""
    manifest = artifact.verify(artifact_dir)
    model = load_model(artifact_dir)
    calibration_path = Path(artifact_dir) / CALIBRATION_FILE
    calibration = (json.loads(calibration_path.read_text(encoding="utf-8")) if calibration_path.is_file()
                   else {"temperature": 1.0, "threshold": 0.0, "target_accuracy": None})
    return model, calibration, manifest


def evaluate_artifact(artifact_dir: Path, texts: list[str], labels: list[str]) -> dict:
    model, calibration, _ = load_verified(artifact_dir)
    proba = apply_temperature(model.predict_proba(texts), calibration["temperature"])
    return evaluate_proba(proba, np.asarray(model.classes_), labels, threshold=calibration["threshold"],
                          target_accuracy=calibration.get("target_accuracy"))
