"""Confidence calibration (temperature scaling) and the abstention threshold.

Raw scores of a linear model are not probabilities anyone should act on. Temperature
scaling (Guo et al., 2017) fits one number T on the dev split so that softmax(log p / T)
minimises the negative log-likelihood; it changes confidences, never the ranking. The
abstention threshold is then the lowest confidence at which the dev-split accuracy of
the answers kept reaches the target, so ``abstain: true`` routes the unsure rest to a
person. The heading threshold does the same at HS4 level for the rows the subheading
abstains on (see :func:`choose_heading_threshold`), so an unsure subheading can still
come with a heading that is right as often as the target says.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from hsops.models.calibration import Calibration


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    return Calibration(temperature=temperature).apply(proba)


def fit_temperature(proba: np.ndarray, target_index: np.ndarray) -> float:
    """T minimising the NLL of the rows whose true class the model knows (index >= 0)."""
    known = target_index >= 0
    if known.sum() < 10:
        return 1.0
    proba, target = proba[known], target_index[known]
    rows = np.arange(len(target))

    def nll(log_t: float) -> float:
        p = apply_temperature(proba, float(np.exp(log_t)))
        return float(-np.log(p[rows, target] + 1e-12).mean())

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def choose_threshold(confidence: np.ndarray, correct: np.ndarray, target_accuracy: float) -> float:
    """Lowest threshold whose kept answers reach ``target_accuracy`` (max coverage).

    When no threshold reaches it, 1.0: the model then abstains on everything, which is
    the honest answer for a model that weak (the highest confidence seen would still let
    the rows tied at it through).

    Accuracy is measured only where a threshold can cut: after the last of a run of
    equal confidences (duplicate descriptions score the same), since a threshold keeps
    all of them or none.
    """
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=bool)
    if len(confidence) == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    ranked = confidence[order]
    cuts = np.flatnonzero(np.r_[ranked[1:] != ranked[:-1], True])
    kept_accuracy = np.cumsum(correct[order])[cuts] / (cuts + 1)
    reaching = np.flatnonzero(kept_accuracy >= target_accuracy)
    if len(reaching) == 0:
        return 1.0
    return float(ranked[cuts[reaching[-1]]])


def choose_heading_threshold(heading_confidence: np.ndarray, heading_correct: np.ndarray,
                             hs6_answered: np.ndarray, target_accuracy: float, *, min_rows: int = 20) -> float:
    """Threshold on heading confidence for the rows where the subheading abstains.

    Chosen only on those rows because only there does the fallback fire, and they are
    the hard ones: a threshold fitted on all rows would borrow accuracy from the easy
    rows the subheading already answers and be too lax where it is used. With fewer
    than ``min_rows`` such rows, 1.0 (never fall back): a handful of rows cannot show
    that a heading answer is right often enough.
    """
    abstained = ~np.asarray(hs6_answered, dtype=bool)
    if abstained.sum() < min_rows:
        return 1.0
    return choose_threshold(np.asarray(heading_confidence)[abstained],
                            np.asarray(heading_correct)[abstained], target_accuracy)
