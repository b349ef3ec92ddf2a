import numpy as np
import pytest

from hsops.training.calibration import apply_temperature, choose_threshold, fit_temperature


def test_temperature_keeps_ranking_and_sums_to_one():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(6), size=50)
    scaled = apply_temperature(proba, 3.0)
    assert np.allclose(scaled.sum(axis=1), 1.0)
    assert (scaled.argmax(1) == proba.argmax(1)).all()
    assert scaled.max(1).mean() < proba.max(1).mean()  # T > 1 softens


def test_overconfident_model_gets_temperature_above_one():
    rng = np.random.default_rng(1)
    n = 2000
    target = rng.integers(0, 4, n)
    predicted = np.where(rng.random(n) < 0.6, target, (target + 1) % 4)  # 60% right
    proba = np.full((n, 4), 0.01 / 3)
    proba[np.arange(n), predicted] = 0.99  # but claims 99%
    t = fit_temperature(proba, target)
    assert t > 1.5
    calibrated = apply_temperature(proba, t)
    assert abs(calibrated.max(1).mean() - 0.6) < 0.1


def test_fit_temperature_ignores_unknown_labels_and_tiny_sets():
    proba = np.full((5, 3), 1 / 3)
    assert fit_temperature(proba, np.array([0, 1, 2, -1, -1])) == 1.0


def test_threshold_reaches_target_with_most_coverage():
    confidence = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, True, True, False, True, False])
    assert choose_threshold(confidence, correct, 1.0) == pytest.approx(0.8)
    assert choose_threshold(confidence, correct, 0.8) == pytest.approx(0.6)


def test_threshold_when_target_unreachable_abstains_on_all():
    assert choose_threshold(np.array([0.9, 0.9, 0.4]), np.array([False, False, False]), 0.9) == 1.0


def test_heading_threshold_is_chosen_on_the_rows_the_subheading_abstains_on():
    from hsops.training.calibration import choose_heading_threshold

    # 20 answered rows, all right at HS4 with low heading confidence, would make any
    # threshold look good if counted; on the 20 abstaining rows only the confident half is right
    answered = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    heading_confidence = np.r_[np.full(20, 0.3), np.linspace(0.95, 0.5, 20)]
    heading_correct = np.r_[np.ones(20, bool), np.ones(10, bool), np.zeros(10, bool)]
    threshold = choose_heading_threshold(heading_confidence, heading_correct, answered, 0.9)
    assert threshold == pytest.approx(heading_confidence[30])  # the 10 right rows and one wrong: 10/11
    assert choose_heading_threshold(heading_confidence, heading_correct, answered, 0.9,
                                    min_rows=21) == 1.0  # too few abstaining rows: never fall back


def test_heading_threshold_when_target_unreachable_is_one():
    from hsops.training.calibration import choose_heading_threshold

    answered = np.zeros(30, bool)
    assert choose_heading_threshold(np.full(30, 0.9), np.zeros(30, bool), answered, 0.9) == 1.0


def test_threshold_never_splits_rows_tied_at_one_confidence():
    # the tied rows are half right: a threshold at 0.5 would keep all four (75%), so the
    # target of 90% is met only above them, however the sort orders the ties
    confidence = np.array([0.9, 0.9, 0.5, 0.5, 0.5, 0.5])
    correct = np.array([True, True, True, True, False, False])
    assert choose_threshold(confidence, correct, 0.9) == pytest.approx(0.9)
    assert choose_threshold(confidence[::-1].copy(), correct[::-1].copy(), 0.9) == pytest.approx(0.9)
