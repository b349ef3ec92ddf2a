import json

import numpy as np
import pytest

from hsops.training.evaluate import METRIC_KEYS, evaluate_proba

CLASSES = np.array(["392410", "392490", "871120", "630900"])


def test_levels_and_topk():
    proba = np.array([
        [0.7, 0.2, 0.05, 0.05],  # predicts 392410, truth 392410
        [0.6, 0.3, 0.05, 0.05],  # predicts 392410, truth 392490: same heading 3924
        [0.1, 0.1, 0.2, 0.6],    # predicts 630900, truth 871120: in top-5 only
    ])
    m = evaluate_proba(proba, CLASSES, ["3924100000", "392490", "87112000"], threshold=0.65,
                       target_accuracy=0.9)
    assert set(METRIC_KEYS) <= set(m)
    assert m["n"] == 3
    assert m["hs6_top1"] == pytest.approx(1 / 3)
    assert m["hs6_top5"] == pytest.approx(1.0)
    assert m["hs4_top1"] == pytest.approx(2 / 3)
    assert m["hs2_top1"] == pytest.approx(2 / 3)
    assert m["coverage_at_target"] == pytest.approx(1 / 3)
    assert m["accuracy_at_target"] == pytest.approx(1.0)


def test_unseen_labels_counted_and_empty_rejected():
    proba = np.array([[1.0, 0, 0, 0]])
    assert evaluate_proba(proba, CLASSES, ["010121"])["unseen_label_rows"] == 1
    with pytest.raises(ValueError):
        evaluate_proba(np.zeros((0, 4)), CLASSES, [])


def test_ranked_and_probability_paths_agree():
    from hsops.training.evaluate import evaluate_ranked, rank_top

    rng = np.random.default_rng(3)
    proba = rng.dirichlet(np.ones(4), size=40)
    labels = list(CLASSES[rng.integers(0, 4, 40)])
    top, conf = rank_top(proba)
    assert (top[:, 0] == proba.argmax(1)).all()
    assert evaluate_ranked(CLASSES[top], conf, CLASSES, labels, threshold=0.4) == \
        evaluate_proba(proba, CLASSES, labels, threshold=0.4)


# -- risk-coverage curve and precision targets ----------------------------------------------------
def test_risk_coverage_keeps_the_most_confident_rows():
    from hsops.training.evaluate import risk_coverage

    confidence = np.linspace(1.0, 0.1, 10)  # distinct, already sorted
    correct = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0], bool)
    curve = risk_coverage(confidence, correct)
    assert [p["coverage"] for p in curve] == pytest.approx([i / 10 for i in range(1, 11)])  # 5% == 10% of 10 rows
    assert [p["accuracy"] for p in curve] == pytest.approx(np.cumsum(correct) / np.arange(1, 11))
    assert [p["threshold"] for p in curve] == pytest.approx(confidence)


def test_risk_coverage_has_twenty_points_on_many_rows_ending_at_full_coverage():
    from hsops.training.evaluate import risk_coverage

    rng = np.random.default_rng(5)
    confidence = rng.random(1000)
    correct = rng.random(1000) < confidence
    curve = risk_coverage(confidence, correct)
    assert len(curve) == 20
    assert [p["coverage"] for p in curve] == pytest.approx([i / 20 for i in range(1, 21)])
    assert curve[-1]["accuracy"] == pytest.approx(correct.mean()) and curve[-1]["threshold"] == confidence.min()
    thresholds = [p["threshold"] for p in curve]
    assert thresholds == sorted(thresholds, reverse=True)


def test_tied_confidences_are_kept_together():
    from hsops.training.evaluate import coverage_at_precision, risk_coverage

    confidence = np.array([0.9, 0.5, 0.5, 0.5])
    correct = np.array([True, True, False, False])
    curve = risk_coverage(confidence, correct)
    assert curve == [{"coverage": 0.25, "accuracy": 1.0, "threshold": 0.9},
                     {"coverage": 1.0, "accuracy": 0.5, "threshold": 0.5}]
    # keeping 2 of the 3 tied rows would reach 100% but no threshold can do that
    assert coverage_at_precision(confidence, correct, (0.99,)) == {"0.99": 0.25}


def test_coverage_at_precision_is_the_largest_share_reaching_each_target():
    from hsops.training.evaluate import coverage_at_precision

    # accuracy of the top k: 1, 1, ..., 19/20 = 0.95 at k=20, then 19/21, 19/22 ...
    confidence = np.linspace(1.0, 0.01, 40)
    correct = np.r_[np.ones(19, bool), np.zeros(1, bool), np.ones(1, bool), np.zeros(19, bool)]
    out = coverage_at_precision(confidence, correct)
    assert set(out) == {"0.90", "0.95", "0.97"}
    assert out["0.97"] == pytest.approx(19 / 40)  # 20/21 < 0.97 and 19/20 < 0.97
    assert out["0.95"] == pytest.approx(21 / 40)  # 20/21 = 0.952
    assert out["0.90"] == pytest.approx(22 / 40)  # 20/22 = 0.909, 20/23 = 0.87
    assert coverage_at_precision(np.array([0.9, 0.8]), np.array([False, True])) == \
        {"0.90": 0.0, "0.95": 0.0, "0.97": 0.0}


def test_the_report_has_the_curve_and_precision_targets():
    rng = np.random.default_rng(2)
    proba = rng.dirichlet(np.ones(4), size=60)
    labels = list(CLASSES[rng.integers(0, 4, 60)])
    m = evaluate_proba(proba, CLASSES, labels, threshold=0.5, target_accuracy=0.9)
    assert m["risk_coverage"][-1]["coverage"] == 1.0
    assert m["risk_coverage"][-1]["accuracy"] == pytest.approx(m["hs6_top1"])
    assert set(m["coverage_at_precision"]) == {"0.90", "0.95", "0.97"}
    json.dumps(m)  # plain JSON: the CLI prints it as is


# -- heading fallback -------------------------------------------------------------------------
def test_heading_fallback_rate_and_accuracy():
    proba = np.array([
        [0.45, 0.45, 0.05, 0.05],  # HS6 unsure, heading 3924 sure (0.90); truth 392490: heading right
        [0.40, 0.45, 0.10, 0.05],  # the same, truth 871120: heading wrong
        [0.05, 0.05, 0.85, 0.05],  # HS6 sure: answered as a subheading, not a fallback
        [0.30, 0.20, 0.25, 0.25],  # unsure at both levels (heading 0.50)
    ])
    labels = ["392490", "871120", "871120", "630900"]
    m = evaluate_proba(proba, CLASSES, labels, threshold=0.6, heading_threshold=0.8)
    assert m["coverage_at_target"] == pytest.approx(1 / 4)
    assert m["heading_threshold"] == 0.8
    assert m["heading_fallback_rate"] == pytest.approx(2 / 4)
    assert m["heading_fallback_accuracy"] == pytest.approx(1 / 2)


@pytest.mark.parametrize("heading_threshold", [None, 1.0])
def test_without_a_usable_heading_threshold_nothing_falls_back(heading_threshold):
    proba = np.array([[0.45, 0.45, 0.05, 0.05]])
    m = evaluate_proba(proba, CLASSES, ["392410"], threshold=0.6, heading_threshold=heading_threshold)
    assert m["heading_fallback_rate"] == 0.0 and m["heading_fallback_accuracy"] is None


def test_scoring_the_fallback_from_ranks_needs_the_headings():
    from hsops.training.evaluate import evaluate_ranked

    with pytest.raises(ValueError, match="heading_confidence"):
        evaluate_ranked(CLASSES[None, :], np.array([0.4]), CLASSES, ["392410"], threshold=0.6,
                        heading_threshold=0.8)
