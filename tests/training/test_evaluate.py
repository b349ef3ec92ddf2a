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
