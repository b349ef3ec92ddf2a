"""Every model kind (built-in or plug-in from the ``hsops.models`` entry points) against
the one Classifier conformance suite."""

import pytest

from hsops.models.base import model_kinds

from .conformance import ClassifierConformance

# Small, fast hyper-parameters per kind; a kind not listed runs with its defaults.
FAST_PARAMS = {
    "linear": {"epochs": 3, "min_df": 1},
}


@pytest.fixture(params=sorted(model_kinds()))
def kind(request):
    return request.param


@pytest.fixture
def params(kind):
    return dict(FAST_PARAMS.get(kind, {}))


def test_linear_is_a_known_kind():
    assert "linear" in model_kinds()


class TestClassifierConformance(ClassifierConformance):
    pass
