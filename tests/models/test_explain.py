import numpy as np

from hsops.models.explain import MAX_WORDS, occlusion


def cups_model(texts):
    """Class 0 probability rises with 'CUPS' (strongly) and 'PLASTIC' (a little)."""
    p = np.array([0.2 + 0.5 * ("CUPS" in t) + 0.2 * ("PLASTIC" in t) for t in texts])
    return np.stack([p, 1 - p], axis=1)


def test_the_words_that_drove_the_class_come_first_with_their_spans():
    text = "70CTNS X 120 PCS PLASTIC CUPS"
    terms = occlusion(cups_model, text, 0)
    assert [t["term"] for t in terms] == ["CUPS", "PLASTIC"]
    assert terms[0]["weight"] > terms[1]["weight"] > 0
    for t in terms:
        assert text[t["start"] : t["end"]] == t["term"]


def test_words_that_did_not_help_are_left_out():
    assert occlusion(cups_model, "USED CLOTHING", 0) == []
    assert occlusion(cups_model, "   ", 0) == []


def test_the_cost_is_bounded_for_a_huge_text():
    seen = []

    def model(texts):
        seen.append(len(texts))
        return cups_model(texts)

    occlusion(model, "CUPS " * 10_000, 0)
    assert seen == [MAX_WORDS + 1]
