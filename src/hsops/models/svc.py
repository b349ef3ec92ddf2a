"""``svc``: the classical baseline, a linear support vector classifier on the same TF-IDF
features as ``linear``, with the multi-class hinge loss of Crammer and Singer.

Why not scikit-learn's ``LinearSVC``: one-vs-rest over ~2.3k classes passes over the
data once per class; on the corpus it took about 12.5 minutes on 2 cores (61.8% HS6
top-1). The Crammer-Singer hinge is one multi-class problem: a row only pushes its true
class up and its strongest wrong class down while the margin is violated, so the sparse
top-k solver of ``linear`` trains it in about a minute. The scores are margins, not
probabilities: ``predict_proba`` is their softmax, and training fits the temperature
that turns them into calibrated confidences on the dev split.
"""

from __future__ import annotations

import numpy as np

from hsops.models.linear import TfidfLinearClassifier, _TopKSoftmax

MARGIN = 1.0


class _TopKHinge(_TopKSoftmax):
    def gradient(self, scores: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        rows = np.arange(len(yb))
        true_score = scores[rows, yb].copy()
        scores[rows, yb] = -np.inf
        rival = scores.argmax(axis=1)
        violation = MARGIN + scores[rows, rival] - true_score
        loss = float(np.maximum(violation, 0.0).mean())
        active = (violation > 0).astype(scores.dtype)
        candidates = np.stack([yb, rival], axis=1)
        grads = np.stack([-active, active], axis=1)
        return loss, candidates, grads


class LinearSVCClassifier(TfidfLinearClassifier):
    kind = "svc"
    _trainer = _TopKHinge
