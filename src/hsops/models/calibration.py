"""An artifact's calibration (``calibration.json``) and ranking of probabilities.

Training writes the file, serving and evaluation read it: one definition of how
confidences are rescaled (``softmax(log p / T)``), when the model abstains, how the
top classes are ranked and when an unsure subheading falls back to its heading, so the
evaluation report and the API can never disagree. Numpy only: the serving path imports
this.

Heading fallback: the heading (first 4 digits) answered is the most probable heading,
its confidence the sum of the calibrated probabilities of every class under it. That
is the heading most likely to be right (the marginal argmax), which is not always the
heading of the best subheading: 392410 at 0.30, 392490 at 0.25 and 871120 at 0.35 make
3924 (0.55) the better heading answer than 8711 (0.35). ``heading_threshold`` is absent
in calibration files written before the fallback existed; those models never fall back.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsops.models.artifact import ArtifactError
from hsops.models.base import softmax

CALIBRATION_FILE = "calibration.json"


@dataclass(frozen=True)
class Calibration:
    """How far to trust the model: temperature for confidences, threshold for abstaining."""

    temperature: float = 1.0
    threshold: float = 0.0
    target_accuracy: float | None = None
    heading_threshold: float | None = None  # None: no heading fallback (older artifacts)

    @classmethod
    def read(cls, directory: Path) -> "Calibration":
        """The artifact's calibration, or the identity one when it has none."""
        path = Path(directory) / CALIBRATION_FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            temperature = _number(raw.get("temperature", 1.0), "temperature")
            threshold = _number(raw.get("threshold", 0.0), "threshold")
            target = raw.get("target_accuracy")
            target = None if target is None else _number(target, "target_accuracy")
            heading = raw.get("heading_threshold")
            heading = None if heading is None else _number(heading, "heading_threshold")
        except (ValueError, TypeError, AttributeError) as exc:
            raise ArtifactError(f"{path}: unreadable calibration ({exc})") from exc
        if not (math.isfinite(temperature) and temperature > 0):
            raise ArtifactError(f"{path}: temperature must be a positive number, got {temperature!r}")
        for name, value in (("threshold", threshold), ("heading_threshold", heading)):
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ArtifactError(f"{path}: {name} must be within [0, 1], got {value!r}")
        return cls(temperature, threshold, target, heading)

    def abstains(self, confidence: float) -> bool:
        # threshold 1.0 marks an uncalibrated model: it abstains even on a confidence
        # that rounds to exactly 1.0
        return confidence < self.threshold or self.threshold >= 1.0

    def apply(self, proba: np.ndarray) -> np.ndarray:
        return softmax(np.log(np.clip(proba, 1e-12, 1.0)) / self.temperature)

    def answered(self, confidence: np.ndarray) -> np.ndarray:
        """Vectorised ``not abstains``: the rows the model answers."""
        confidence = np.asarray(confidence)
        if self.threshold >= 1.0:
            return np.zeros(confidence.shape, dtype=bool)
        return confidence >= self.threshold

    @property
    def falls_back(self) -> bool:
        """Whether this calibration ever answers at heading level (1.0 means never, as for
        ``threshold``)."""
        return self.heading_threshold is not None and self.heading_threshold < 1.0

    def heading_answered(self, confidence: np.ndarray, heading_confidence: np.ndarray) -> np.ndarray:
        """The rows answered at heading level: the subheading abstains, the heading does not."""
        heading_confidence = np.asarray(heading_confidence)
        if not self.falls_back:
            return np.zeros(heading_confidence.shape, dtype=bool)
        return ~self.answered(confidence) & (heading_confidence >= self.heading_threshold)

    def level(self, confidence: float, heading_confidence: float) -> str:
        """``"subheading"``, ``"heading"`` or ``"none"``: the most specific level trusted."""
        if not self.abstains(confidence):
            return "subheading"
        if self.falls_back and heading_confidence >= self.heading_threshold:
            return "heading"
        return "none"


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


class Headings:
    """Sums class probabilities per heading (the first 4 digits of each class).

    Built once per model: the columns are grouped by heading, so the sum is one
    ``reduceat`` over a column-permuted matrix, O(classes) per row.
    """

    def __init__(self, classes) -> None:
        codes = np.array([str(c)[:4] for c in classes])
        self._order = np.argsort(codes, kind="stable")
        ordered = codes[self._order]
        self._starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])[: len(ordered)]
        self.codes = ordered[self._starts]

    def __len__(self) -> int:
        return len(self.codes)

    def proba(self, proba: np.ndarray) -> np.ndarray:
        """n x headings: each heading's summed probability, columns in ``codes`` order."""
        return np.add.reduceat(np.asarray(proba)[:, self._order], self._starts, axis=1)

    def best(self, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's most probable heading (code) and its summed probability."""
        summed = self.proba(proba)
        best = summed.argmax(axis=1)
        return self.codes[best], summed[np.arange(len(best)), best]


def rank_top(proba: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Column indices of the ``k`` most probable classes per row (best first) and the
    top-1 probability; O(classes) per row via a partition, not a full sort."""
    k = min(k, proba.shape[1])
    top = np.argpartition(-proba, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(proba, top, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(top, order, axis=1)
    return top, proba[np.arange(len(proba)), top[:, 0]]
