"""Loading a registered artifact for evaluation: verified, with its calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsops.models import artifact
from hsops.models.runtime import load_runtime
from hsops.models.calibration import Calibration, Headings, rank_top
from hsops.training.evaluate import evaluate_ranked


def load_verified(artifact_dir: Path):
    """(model, calibration, manifest) of an artifact whose files match its manifest; the
    model is what serving runs (ONNX for neural kinds), so evaluation scores the served
    answers."""
    manifest = artifact.verify(artifact_dir)
    model = load_runtime(artifact_dir)
    return model, Calibration.read(artifact_dir), manifest


CHUNK_ROWS = 2048  # keeps the probability matrix near 40 MB whatever the file size


def evaluate_artifact(artifact_dir: Path, texts: list[str], labels: list[str]) -> dict:
    model, calibration, _ = load_verified(artifact_dir)
    classes = np.asarray(model.classes_)
    headings = Headings(classes)
    ranked, confidence, heading, heading_confidence = [], [], [], []
    for start in range(0, len(texts), CHUNK_ROWS):
        proba = calibration.apply(model.predict_proba(texts[start : start + CHUNK_ROWS]))
        top, conf = rank_top(proba)
        ranked.append(classes[top])
        confidence.append(conf)
        best, best_conf = headings.best(proba)
        heading.append(best)
        heading_confidence.append(best_conf)
    if not ranked:
        raise ValueError("cannot evaluate on no rows")
    return evaluate_ranked(np.concatenate(ranked), np.concatenate(confidence), classes, labels,
                           threshold=calibration.threshold, target_accuracy=calibration.target_accuracy,
                           heading=np.concatenate(heading), heading_confidence=np.concatenate(heading_confidence),
                           heading_threshold=calibration.heading_threshold)
