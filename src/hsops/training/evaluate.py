"""Evaluation metrics for HS classification, per level of the hierarchy.

Predictions are HS6 subheadings; a national label (8 or 10 digits) is scored on its
first 6. HS4 and HS2 accuracy take the prefix of the top-1 answer, which is what a
broker falls back to when the subheading is wrong. Selective accuracy is the accuracy
on the answers the model does not abstain on, with the share it keeps (coverage).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import f1_score

from hsops.models.calibration import Calibration, rank_top

METRIC_KEYS = ("n", "hs6_top1", "hs6_top5", "hs4_top1", "hs2_top1", "macro_f1",
               "coverage_at_target", "accuracy_at_target")


def evaluate_proba(proba: np.ndarray, classes: np.ndarray, labels: list[str], *,
                   threshold: float = 0.0, target_accuracy: float | None = None) -> dict:
    """Metrics of calibrated ``proba`` (n x classes) against HS ``labels``."""
    top, confidence = rank_top(proba)
    return evaluate_ranked(classes[top], confidence, classes, labels, threshold=threshold,
                           target_accuracy=target_accuracy)


def evaluate_ranked(ranked: np.ndarray, confidence: np.ndarray, classes: np.ndarray, labels: list[str], *,
                    threshold: float = 0.0, target_accuracy: float | None = None) -> dict:
    """Metrics from each row's ranked codes (n x up to 5, best first) and top-1 confidence.

    Taking ranks instead of the full probability matrix lets a caller score a file of
    millions of rows in chunks: the matrix would be rows x ~2.4k classes.
    """
    y = np.array([str(label)[:6] for label in labels])
    n = len(y)
    if n == 0:
        raise ValueError("cannot evaluate on no rows")
    pred = ranked[:, 0]
    correct = pred == y
    kept = Calibration(threshold=threshold).answered(confidence)
    in_top5 = (ranked[:, :5] == y[:, None]).any(axis=1)
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
        "unseen_label_rows": int(np.sum(~np.isin(y, classes))),
        "mean_confidence": float(confidence.mean()),
    }
