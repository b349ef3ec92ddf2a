import pytest

from hsops.models.base import check_params, create, model_class, model_kinds
from hsops.models.linear import TfidfLinearClassifier


def test_builtin_kinds_resolve_to_classes():
    assert "linear" in model_kinds()
    assert model_class("linear") is TfidfLinearClassifier
    with pytest.raises(ValueError, match="known kinds"):
        model_class("transformer9000")


def test_check_params_coerces_and_refuses():
    cls = TfidfLinearClassifier
    assert check_params(cls, {"epochs": 2, "learning_rate": 1, "char_ngrams": [1, 3]}) == {
        "epochs": 2, "learning_rate": 1.0, "char_ngrams": (1, 3)}
    with pytest.raises(ValueError, match="no hyper-parameter 'nosuch'"):
        check_params(cls, {"nosuch": 1})
    with pytest.raises(ValueError, match="epochs must be like"):
        check_params(cls, {"epochs": "abc"})
    with pytest.raises(ValueError, match="epochs must be like"):
        check_params(cls, {"epochs": True})
    with pytest.raises(ValueError, match="char_ngrams"):
        check_params(cls, {"char_ngrams": [1, 2, 3]})
    assert create("linear", epochs=3).epochs == 3


@pytest.mark.parametrize("params, said", [
    ({"epochs": 0}, "epochs must be positive"),
    ({"learning_rate": -0.1}, "learning_rate must be positive"),
    ({"char_ngrams": (4, 2)}, "char_ngrams"),
    ({"max_features": 0}, "max_features"),
])
def test_out_of_range_hyper_parameters_fail_at_fit(params, said):
    with pytest.raises(ValueError, match=said):
        TfidfLinearClassifier(**params).fit(["PLASTIC CUPS", "AIR FILTER"], ["392410", "842131"])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused(value):
    with pytest.raises(ValueError, match="learning_rate must be like"):
        check_params(TfidfLinearClassifier, {"learning_rate": value})
