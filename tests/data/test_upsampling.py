import math
from collections import Counter

import pytest

from hsops.data.upsampling import plan_upsample, stratified_upsample

# 40 / 12 / 6 / 3 / 1 rows: one large class, one above the default floor, three rare
LABELS = ["871120"] * 40 + ["392410"] * 12 + ["630900"] * 6 + ["401693"] * 3 + ["842131"]
TEXTS = [f"{label} item {i}" for i, label in enumerate(LABELS)]


def test_rare_classes_reach_their_target_and_no_further():
    texts, labels = stratified_upsample(TEXTS, LABELS, min_per_class=10, max_ratio=5)
    counts = Counter(labels)
    assert counts["871120"] == 40 and counts["392410"] == 12  # at or above the floor: untouched
    assert counts["630900"] == 10  # raised to the floor
    assert counts["401693"] == 10  # 3 rows x 5 = 15 allowed, the floor is 10
    assert counts["842131"] == 5  # one row: capped at max_ratio x 1
    assert len(texts) == len(labels) == sum(counts.values())


def test_the_floor_never_exceeds_the_largest_class():
    _, labels = stratified_upsample(TEXTS, LABELS, min_per_class=100, max_ratio=None)
    assert set(Counter(labels).values()) == {40}


def test_targets_follow_the_documented_formula():
    plan = plan_upsample(LABELS, min_per_class=8, max_ratio=2.5)
    counts = Counter(LABELS)
    for label, n in counts.items():
        expected = min(max(n, 8), math.ceil(2.5 * n), max(counts.values()))
        assert plan.targets.get(label, n) == expected
    assert plan.summary() == {"min_per_class": 8, "max_ratio": 2.5, "seed": 0, "rows_before": len(LABELS),
                              "rows_after": plan.rows_after, "classes_raised": 3}
    _, labels = stratified_upsample(TEXTS, LABELS, min_per_class=8, max_ratio=2.5)
    assert len(labels) == plan.rows_after


def test_originals_are_all_kept_in_order_and_copies_come_from_their_own_class():
    texts, labels = stratified_upsample(TEXTS, LABELS, min_per_class=10)
    assert texts[: len(TEXTS)] == TEXTS and labels[: len(LABELS)] == LABELS
    originals = dict(zip(TEXTS, LABELS))
    for text, label in zip(texts[len(TEXTS):], labels[len(LABELS):]):
        assert originals[text] == label


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_copies():
    first = stratified_upsample(TEXTS, LABELS, min_per_class=30, max_ratio=None, seed=7)
    assert stratified_upsample(TEXTS, LABELS, min_per_class=30, max_ratio=None, seed=7) == first
    other = stratified_upsample(TEXTS, LABELS, min_per_class=30, max_ratio=None, seed=8)
    assert Counter(other[1]) == Counter(first[1]) and other[0] != first[0]


def test_input_order_of_classes_does_not_change_which_copies_are_drawn():
    shuffled = sorted(zip(TEXTS, LABELS), key=lambda row: row[1])
    texts, labels = stratified_upsample([t for t, _ in shuffled], [label for _, label in shuffled],
                                        min_per_class=10)
    base_texts, _ = stratified_upsample(TEXTS, LABELS, min_per_class=10)
    # each class's rows keep their relative order in both inputs, so the copies match
    assert texts[len(TEXTS):] == base_texts[len(TEXTS):]


def test_balanced_and_empty_inputs_are_returned_unchanged():
    labels = ["a", "b"] * 10
    texts = [str(i) for i in range(20)]
    assert stratified_upsample(texts, labels, min_per_class=5) == (texts, labels)
    assert stratified_upsample([], []) == ([], [])


@pytest.mark.parametrize("kwargs, match", [
    ({"min_per_class": 0}, "min_per_class"),
    ({"min_per_class": 2.5}, "min_per_class"),
    ({"min_per_class": True}, "min_per_class"),
    ({"max_ratio": 0.5}, "max_ratio"),
    ({"max_ratio": float("nan")}, "max_ratio"),
    ({"max_ratio": "2"}, "max_ratio"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.0}, "seed"),
])
def test_bad_arguments_are_refused_with_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stratified_upsample(TEXTS, LABELS, **kwargs)


def test_texts_and_labels_must_pair_up():
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        stratified_upsample(["a", "b", "c"], ["x", "y"])
