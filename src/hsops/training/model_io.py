"""Loading a registered artifact for evaluation: verified, with its calibration."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from hsops.models import artifact
from hsops.models.base import load_model
from hsops.training.calibration import apply_temperature
from hsops.training.evaluate import evaluate_ranked, rank_top
from hsops.training.train import CALIBRATION_FILE


def load_verified(artifact_dir: Path):
    """(model, calibration, manifest) of an artifact whose files match its manifest."""
    manifest = artifact.verify(artifact_dir)
    model = load_model(artifact_dir)
    calibration_path = Path(artifact_dir) / CALIBRATION_FILE
    calibration = (json.loads(calibration_path.read_text(encoding="utf-8")) if calibration_path.is_file()
                   else {"temperature": 1.0, "threshold": 0.0, "target_accuracy": None})
    return model, calibration, manifest


CHUNK_ROWS = 2048  # keeps the probability matrix near 40 MB whatever the file size


def evaluate_artifact(artifact_dir: Path, texts: list[str], labels: list[str]) -> dict:
    model, calibration, _ = load_verified(artifact_dir)
    classes = np.asarray(model.classes_)
    ranked, confidence = [], []
    for start in range(0, len(texts), CHUNK_ROWS):
        proba = apply_temperature(model.predict_proba(texts[start : start + CHUNK_ROWS]),
                                  calibration["temperature"])
        top, conf = rank_top(proba)
        ranked.append(classes[top])
        confidence.append(conf)
    if not ranked:
        raise ValueError("cannot evaluate on no rows")
    return evaluate_ranked(np.concatenate(ranked), np.concatenate(confidence), classes, labels,
                           threshold=calibration["threshold"],
                           target_accuracy=calibration.get("target_accuracy"))
