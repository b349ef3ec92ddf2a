"""An artifact's calibration (``calibration.json``) and ranking of probabilities.

Training writes the file, serving and evaluation read it: one definition of how
confidences are rescaled (``softmax(log p / T)``), when the model abstains, and how the
top classes are ranked, so the evaluation report and the API can never disagree.
Numpy only: the serving path imports this.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsops.models.artifact import ArtifactError

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """How far to trust the model: temperature for confidences, threshold for abstaining."""

    temperature: float = 1.0
    threshold: float = 0.0
    target_accuracy: float | None = None

    @classmethod
    def read(cls, directory: Path) -> "Calibration":
        """The artifact's calibration, or the identity one when it has none."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            temperature = float(raw.get("temperature", 1.0))
            threshold = float(raw.get("threshold", 0.0))
            target = raw.get("target_accuracy")
            target = None if target is None else float(target)
        except (ValueError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{path}: unreadable calibration ({exc})") from exc
        if not (math.isfinite(temperature) and temperature > 0):
            raise ArtifactError(f"{path}: temperature must be a positive number, got {temperature!r}")
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
            raise ArtifactError(f"{path}: threshold must be within [0, 1], got {threshold!r}")
        return cls(temperature, threshold, target)

    def abstains(self, confidence: float) -> bool:
        # threshold 1.0 marks an uncalibrated model: it abstains even on a confidence
        # that rounds to exactly 1.0
        return confidence < self.threshold or self.threshold >= 1.0

    def apply(self, proba: np.ndarray) -> np.ndarray:
        logits = np.log(np.clip(proba, 1e-12, 1.0)) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        out = np.exp(logits)
        return out / out.sum(axis=1, keepdims=True)

    def answered(self, confidence: np.ndarray) -> np.ndarray:
        """Vectorised ``not abstains``: the rows the model answers."""
        confidence = np.asarray(confidence)
        if self.threshold >= 1.0:
            return np.zeros(confidence.shape, dtype=bool)
        return confidence >= self.threshold


def rank_top(proba: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``k`` most probable classes per row (best first) and the
    top-1 probability; O(classes) per row via a partition, not a full sort."""
    k = min(k, proba.shape[1])
    top = np.argpartition(-proba, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(proba, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return top, proba[np.arange(len(proba)), top[:, 0]]
