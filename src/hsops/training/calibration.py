"""Confidence calibration (temperature scaling) and the abstention threshold.

Raw scores of a linear model are not probabilities anyone should act on. Temperature
scaling (Guo et al., 2017) fits one number T on the dev split so that softmax(log p / T)
minimises the negative log-likelihood; it changes confidences, never the ranking. The
abstention threshold is then the lowest confidence at which the dev-split accuracy of
the answers kept reaches the target, so ``abstain: true`` routes the unsure rest to a
person.
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
    """
    if len(confidence) == 0:
        return 0.0
    order = np.argsort(-confidence)
    kept_accuracy = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    reaching = np.flatnonzero(kept_accuracy >= target_accuracy)
    if len(reaching) == 0:
        return 1.0
    return float(confidence[order[reaching[-1]]])
