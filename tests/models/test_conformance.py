"""Every model kind (built-in or plug-in from the ``hsops.models`` entry points) against
the one Classifier conformance suite."""

import pytest

from hsops.models.base import model_kinds

from .conformance import ClassifierConformance

# Small, fast hyper-parameters per kind; a kind not listed runs with its defaults.
FAST_PARAMS = {
    "linear": {"epochs": 3, "min_df": 1},
    "minilm": {"epochs": 10, "learning_rate": 0.003},
    "svc": {"epochs": 3, "min_df": 1},
    **{kind: {"epochs": 10, "learning_rate": 0.03, "embedding_dim": 32, "hash_buckets": 500,
              "min_count": 1, "batch_size": 16, "dropout": 0.0, "num_threads": 1, **size}
       for kind, size in (("dnn", {"hidden_size": 16}), ("lstm", {"hidden_size": 16}),
                          ("textcnn", {"filters": 16}))},
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
