from collections import Counter

import pytest

from hsops.data.splits import SPLITS, assign_split, group_key


def test_quantities_and_packing_do_not_change_the_group():
    assert group_key("70CTNS X 120 PCS PLASTIC CUPS") == group_key("155 CTNS X 100 PCS PLASTIC CUPS")
    assert group_key("70CTNS X 120 PCS PLASTIC CUPS") == "ctnsxpcsplasticcups"
    assert group_key("WASHER 2G8615") == group_key("washer 7G1234")


def test_different_words_are_different_groups():
    assert group_key("PLASTIC CUPS") != group_key("PAPER CUPS")


def test_bare_part_numbers_keep_their_digits():
    assert group_key("2G8615") == "g"  # has letters: digits dropped
    assert group_key("123-456") == "123456"
    assert group_key("123-456") != group_key("789 012")


def test_same_group_same_split():
    a, b = "70CTNS X 120 PCS PLASTIC CUPS", "155 CTNS X 100 PCS PLASTIC CUPS"
    for seed in ("hsops", "other", "x"):
        assert assign_split(a, seed=seed) == assign_split(b, seed=seed)


def test_assignment_is_deterministic_and_in_the_known_splits():
    texts = [f"ITEM {w} NUMBER" for w in ("ALPHA", "BETA", "GAMMA", "DELTA", "EPSILON")]
    first = [assign_split(t) for t in texts]
    assert first == [assign_split(t) for t in texts]
    assert set(first) <= set(SPLITS)


def _keys(n):
    letters = "abcdefghijklmnopqrstuvwxyz"
    out = []
    for i in range(n):
        word, j = "", i
        while True:
            word += letters[j % 26]
            j //= 26
            if not j:
                break
        out.append(f"product {word}")
    return out


def test_roughly_80_10_10_over_many_groups():
    keys = _keys(20_000)
    assert len({group_key(k) for k in keys}) == 20_000
    counts = Counter(assign_split(k) for k in keys)
    assert abs(counts["train"] / 20_000 - 0.8) < 0.02
    assert abs(counts["dev"] / 20_000 - 0.1) < 0.015
    assert abs(counts["test"] / 20_000 - 0.1) < 0.015


def test_custom_fractions_and_seed():
    keys = _keys(5_000)
    assert {assign_split(k, fractions=(1.0, 0.0, 0.0)) for k in keys} == {"train"}
    half = Counter(assign_split(k, fractions=(0.5, 0.0, 0.5)) for k in keys)
    assert half["dev"] == 0 and abs(half["train"] / 5_000 - 0.5) < 0.04
    by_seed = [assign_split(k, seed="a") for k in keys], [assign_split(k, seed="b") for k in keys]
    assert by_seed[0] != by_seed[1]


@pytest.mark.parametrize("fractions", [(0.8, 0.2), (0.7, 0.2, 0.2), (0.9, 0.2, -0.1), (0.5, 0.25, 0.25, 0.0),
                                       (0.0, 0.0, 0.0)])
def test_bad_fractions_are_rejected(fractions):
    with pytest.raises(ValueError, match="fractions") as excinfo:
        assign_split("PLASTIC CUPS", fractions=fractions)
    assert str(fractions) in str(excinfo.value)


def test_group_key_keeps_letters_of_any_script():
    assert group_key("Пластиковые чашки 100 шт") == "пластиковыечашкишт"
    assert group_key("塑料杯 100个") == "塑料杯个"
    assert group_key("Пластиковые чашки 100 шт") != group_key("Резиновые прокладки 100 шт")
