"""Evaluation metrics for HS classification, per level of the hierarchy.

Predictions are HS6 subheadings; a national label (8 or 10 digits) is scored on its
first 6. HS4 and HS2 accuracy take the prefix of the top-1 answer, which is what a
broker falls back to when the subheading is wrong. Selective accuracy is the accuracy
on the answers the model does not abstain on, with the share it keeps (coverage).

Beyond the one calibrated threshold, the report traces the risk-coverage curve: keep
the most confident 5%, 10%, ... 100% of rows and measure the accuracy of what is kept.
Each point is a threshold some calibration could choose (rows tied at a confidence are
kept or dropped together, so a point's coverage can exceed its nominal share), and
``coverage_at_precision`` reads off the largest coverage at which the kept rows still
reach 90%, 95% and 97% accuracy on the data evaluated. These describe the data they
are computed on: on the test split they show what another threshold would have given,
they do not choose one (that is the dev split's job).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from hsops.models.calibration import Calibration, Headings, rank_top

METRIC_KEYS = ("n", "hs6_top1", "hs6_top5", "hs4_top1", "hs2_top1", "macro_f1",
               "coverage_at_target", "accuracy_at_target", "heading_fallback_rate",
               "heading_fallback_accuracy", "risk_coverage", "coverage_at_precision")
CURVE_POINTS = 20  # coverage 5%, 10%, ..., 100%
PRECISION_TARGETS = (0.90, 0.95, 0.97)


def evaluate_proba(proba: np.ndarray, classes: np.ndarray, labels: list[str], *,
                   threshold: float = 0.0, target_accuracy: float | None = None,
                   heading_threshold: float | None = None) -> dict:
    """Metrics of calibrated ``proba`` (n x classes) against HS ``labels``."""
    top, confidence = rank_top(proba)
    heading, heading_confidence = Headings(classes).best(proba)
    return evaluate_ranked(classes[top], confidence, classes, labels, threshold=threshold,
                           target_accuracy=target_accuracy, heading=heading,
                           heading_confidence=heading_confidence, heading_threshold=heading_threshold)


def evaluate_ranked(ranked: np.ndarray, confidence: np.ndarray, classes: np.ndarray, labels: list[str], *,
                    threshold: float = 0.0, target_accuracy: float | None = None,
                    heading: np.ndarray | None = None, heading_confidence: np.ndarray | None = None,
                    heading_threshold: float | None = None) -> dict:
    """Metrics from each row's ranked codes (n x up to 5, best first) and top-1 confidence.

    Taking ranks instead of the full probability matrix lets a caller score a file of
    millions of rows in chunks: the matrix would be rows x ~2.4k classes. ``heading``
    and ``heading_confidence`` (each row's best heading and its summed probability)
    are needed only to score the heading fallback.
    """
    y = np.array([str(label)[:6] for label in labels])
    n = len(y)
    if n == 0:
        raise ValueError("cannot evaluate on no rows")
    confidence = np.asarray(confidence, dtype=float)
    pred = ranked[:, 0]
    correct = pred == y
    calibration = Calibration(threshold=threshold, heading_threshold=heading_threshold)
    kept = calibration.answered(confidence)
    in_top5 = (ranked[:, :5] == y[:, None]).any(axis=1)
    fallback_rate, fallback_accuracy = 0.0, None
    if calibration.falls_back:
        if heading is None or heading_confidence is None:
            raise ValueError("scoring the heading fallback needs heading and heading_confidence")
        fallback = calibration.heading_answered(confidence, heading_confidence)
        fallback_rate = float(fallback.mean())
        if fallback.any():
            fallback_accuracy = float(np.mean([h == t[:4] for h, t in zip(heading[fallback], y[fallback])]))
    return {
        "n": int(n),
        "hs6_top1": float(correct.mean()),
        "hs6_top5": float(in_top5.mean()),
        "hs4_top1": float(np.mean([p[:4] == t[:4] for p, t in zip(pred, y)])),
        "hs2_top1": float(np.mean([p[:2] == t[:2] for p, t in zip(pred, y)])),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "threshold": float(threshold),
        "target_accuracy": target_accuracy,
        "coverage_at_target": float(kept.mean()),
        "accuracy_at_target": float(correct[kept].mean()) if kept.any() else None,
        "heading_threshold": None if heading_threshold is None else float(heading_threshold),
        "heading_fallback_rate": fallback_rate,
        "heading_fallback_accuracy": fallback_accuracy,
        "unseen_label_rows": int(np.sum(~np.isin(y, classes))),
        "mean_confidence": float(confidence.mean()),
        "risk_coverage": risk_coverage(confidence, correct),
        "coverage_at_precision": coverage_at_precision(confidence, correct),
    }


def _kept_accuracy(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows sorted by confidence (highest first) and, at each position where a threshold
    can cut (the last row of a run of equal confidences): rows kept, their accuracy and
    the threshold that keeps exactly them."""
    order = np.argsort(-confidence, kind="stable")
    sorted_conf = confidence[order]
    cuts = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True])
    kept = cuts + 1
    accuracy = np.cumsum(correct[order])[cuts] / kept
    return kept, accuracy, sorted_conf[cuts]


def risk_coverage(confidence: np.ndarray, correct: np.ndarray, points: int = CURVE_POINTS) -> list[dict]:
    """Coverage, selective accuracy and threshold at ~``points`` evenly spaced coverages.

    For the nominal coverage ``c``, the threshold is the confidence of the ``ceil(c*n)``-th
    most confident row; the point reports what that threshold really keeps (ties
    included). Nominal coverages that land on the same threshold give one point.
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    n = len(confidence)
    if n == 0:
        return []
    kept, accuracy, thresholds = _kept_accuracy(confidence, correct)
    curve, seen = [], set()
    for i in range(1, points + 1):
        want = max(1, int(np.ceil(i / points * n - 1e-9)))
        j = int(np.searchsorted(kept, want))  # first cut keeping at least `want` rows
        if j in seen:
            continue
        seen.add(j)
        curve.append({"coverage": float(kept[j] / n), "accuracy": float(accuracy[j]),
                      "threshold": float(thresholds[j])})
    return curve


def coverage_at_precision(confidence: np.ndarray, correct: np.ndarray,
                          targets: tuple[float, ...] = PRECISION_TARGETS) -> dict[str, float]:
    """For each target accuracy (key ``"0.90"``...), the largest coverage at which the most
    confident rows reach it; 0.0 when no threshold does."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    out = {}
    if len(confidence) == 0:
        return {f"{t:.2f}": 0.0 for t in targets}
    kept, accuracy, _ = _kept_accuracy(confidence, correct)
    for target in targets:
        # a tiny tolerance: 29/30 computed as a float must count as reaching 29/30
        reaching = np.flatnonzero(accuracy >= target - 1e-12)
        out[f"{target:.2f}"] = float(kept[reaching[-1]] / len(confidence)) if len(reaching) else 0.0
    return out
