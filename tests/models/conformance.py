"""The Classifier contract as one test suite that every model kind must pass.

Use it by subclassing :class:`ClassifierConformance` in a test module that provides a
``kind`` fixture (a name from ``hsops.models.base.model_kinds()``) and a ``params``
fixture (small, fast hyper-parameters for that kind); see ``test_conformance.py``.
The data is hand-written in the style of real declarations: packing counts, sizes,
brands and part numbers around a few words that carry the class.
"""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import numpy as np
import pytest

from hsops.models.artifact import ALLOWED_SUFFIXES
from hsops.models.base import Classifier, NotFittedError, load_model, model_class
from hsops.models.runtime import load_runtime

_FITTED: dict = {}

LINES = {
    "392410": [  # plastic tableware and kitchenware
        "92 CTNS X 30 PCS PLASTIC PLATES[16CM]",
        "70CTNS X 120 PCS PLASTIC CUPS",
        "155 CTNS X 100 PCS PLASTIC CUPS 250ML",
        "PLASTIC TABLEWARE SET 24PCS",
        "PLASTIC BOWLS KITCHENWARE 40 CTNS",
        "PP PLASTIC SPOONS AND FORKS",
        "MELAMINE PLASTIC DINNER PLATES",
        "PLASTIC FOOD CONTAINERS WITH LID 500ML",
        "PLASTIC WATER JUG 2L X 12 CTNS",
        "PLASTIC KITCHEN STORAGE BOX",
        "DISPOSABLE PLASTIC CUPS & PLATES",
        "PLASTIC SERVING TRAY 35CM",
    ],
    "871120": [  # motorcycles, 50-250 cc
        "MOTORCYCLE HONDA CG125 NEW",
        "USED MOTORCYCLE YAMAHA 125CC",
        "MOTOR CYCLE BAJAJ BOXER 150CC",
        "NEW MOTORCYCLES TVS HLX 125 CKD",
        "MOTORBIKE SUZUKI 150CC CHASSIS NO LBBPEJ1234",
        "2 UNITS MOTORCYCLE HAOJUE 150",
        "MOTORCYCLE 200CC WITH HELMET",
        "SCOOTER MOTORCYCLE 125 CC PETROL",
        "HONDA ACE MOTORCYCLE 125CC X 40 UNITS",
        "DIRT BIKE MOTORCYCLE 250CC",
        "MOTORCYCLES CKD KIT 110CC",
        "USED MOTOR CYCLE HONDA XL 200",
    ],
    "630900": [  # worn clothing
        "USED CLOTHING 120 BALES",
        "BALES OF USED CLOTHES",
        "WORN CLOTHING AND ACCESSORIES",
        "SECOND HAND CLOTHES MIXED",
        "USED GARMENTS 45KG BALES",
        "USED SHOES AND CLOTHING",
        "USED CLOTHES LADIES DRESSES",
        "WORN GARMENTS 300 BALES",
        "USED T-SHIRTS 80 BALES",
        "USED JACKETS AND TROUSERS",
        "SECONDHAND CLOTHING ASSORTED",
        "USED CHILDREN CLOTHES 60 BALES",
    ],
    "401693": [  # rubber gaskets, washers, seals
        "RUBBER GASKET 2G8615",
        "O RING RUBBER 50PCS",
        "RUBBER SEAL KIT FOR PUMP",
        "GASKET RUBBER 100MM",
        "RUBBER WASHER SEALS ASSORTED",
        "OIL SEAL RUBBER 35X52X7",
        "RUBBER O-RINGS SET 382PCS",
        "RUBBER GASKETS FOR PIPES",
        "DOOR RUBBER SEAL STRIP",
        "RUBBER SEALING RING 6V4567",
        "VALVE COVER GASKET RUBBER",
        "RUBBER GROMMET AND SEALS",
    ],
    "842131": [  # intake air filters
        "AIR FILTER 2PCS X 5 CTNS",
        "AIR FILTER ELEMENT 17801-0C010",
        "ENGINE AIR FILTER TOYOTA",
        "AIR CLEANER FILTER ASSY",
        "AIR FILTER FOR TRUCK 600-185-4100",
        "INTAKE AIR FILTER ELEMENT",
        "AIR FILTER CARTRIDGE 20 PCS",
        "CAR AIR FILTERS ASSORTED",
        "AIR FILTER HONDA 17220",
        "HEAVY DUTY AIR FILTER",
        "AIR FILTERS NISSAN 16546",
        "AIR FILTER 1R0751 CATERPILLAR",
    ],
}

UNSEEN = [  # lines not in training, one per class, in LINES order
    ("48 CTNS X 50 PCS PLASTIC PLATES[22CM]", "392410"),
    ("MOTORCYCLE YAMAHA 150CC NEW", "871120"),
    ("USED CLOTHING 200 BALES", "630900"),
    ("RUBBER GASKET SET 12PCS", "401693"),
    ("AIR FILTER ELEMENT 3PCS", "842131"),
]


def training_data() -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for code, lines in LINES.items():
        texts += lines
        labels += [code] * len(lines)
    return texts, labels


PROBE = ["PLASTIC CUPS", "USED CLOTHING", "", "ZZZ QQQ 0000", "AIR FILTER RUBBER GASKET"]


def _params_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(type(a[k]) is type(b[k]) and a[k] == b[k] for k in a)


class ClassifierConformance:
    """Every test takes ``kind`` and ``params`` fixtures from the module using it."""

    # -- fixtures -------------------------------------------------------------------------
    @pytest.fixture
    def cls(self, kind) -> type[Classifier]:
        return model_class(kind)

    @pytest.fixture
    def make(self, cls, params):
        return lambda **extra: cls(**{**params, **extra})

    @pytest.fixture
    def data(self):
        return training_data()

    @pytest.fixture
    def trained(self, make, data, kind, params):
        # Fitted once per kind and parameters (neural kinds take seconds); each test
        # gets its own copy, so none can disturb another.
        key = (kind, repr(sorted(params.items())))
        if key not in _FITTED:
            _FITTED[key] = make().fit(*data)
        return copy.deepcopy(_FITTED[key])

    # -- construction -----------------------------------------------------------------
    def test_is_a_classifier_of_its_kind(self, cls, kind):
        assert issubclass(cls, Classifier)
        assert cls.kind == kind

    def test_constructor_takes_keyword_only_hyper_parameters(self, cls):
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        assert parameters, "a model kind needs at least one hyper-parameter"
        for p in parameters:
            assert p.kind is p.KEYWORD_ONLY, f"{p.name} must be keyword-only"
            assert p.default is not p.empty, f"{p.name} needs a default"
        with pytest.raises(TypeError):
            cls(parameters[0].default)

    def test_get_params_returns_the_constructor_arguments_unchanged(self, cls, params):
        parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
        defaults = {p.name: p.default for p in parameters}
        assert _params_equal(cls().get_params(), defaults)
        model = cls(**params)
        assert _params_equal(model.get_params(), {**defaults, **params})
        assert type(model).__name__ in repr(model)

    def test_unknown_hyper_parameter_is_refused(self, cls):
        with pytest.raises(TypeError):
            cls(no_such_parameter=1)

    # -- fit / predict ----------------------------------------------------------------
    def test_fit_returns_self(self, make, data):
        model = make()
        assert model.fit(*data) is model

    def test_fit_keeps_hyper_parameters(self, make, data, params):
        model = make()
        before = model.get_params()
        model.fit(*data)
        assert _params_equal(model.get_params(), before)

    def test_classes_are_the_sorted_label_set(self, trained, data):
        classes = list(trained.classes_)
        assert classes == sorted(set(data[1]))
        assert all(isinstance(c, str) for c in classes)

    def test_predict_proba_is_a_distribution_per_row(self, trained):
        proba = trained.predict_proba(PROBE)
        assert isinstance(proba, np.ndarray)
        assert proba.shape == (len(PROBE), len(trained.classes_))
        assert np.isfinite(proba).all()
        assert (proba >= 0).all()
        assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
        assert trained.predict_proba(PROBE[:1]).shape == (1, len(trained.classes_))

    def test_predict_gives_known_labels_matching_the_argmax(self, trained):
        predicted = trained.predict(PROBE)
        assert len(predicted) == len(PROBE)
        assert set(predicted) <= set(trained.classes_)
        proba = trained.predict_proba(PROBE)
        assert list(predicted) == list(trained.classes_[proba.argmax(axis=1)])

    def test_it_learns(self, trained, data):
        texts, labels = data
        accuracy = np.mean(trained.predict(texts) == np.array(labels))
        assert accuracy >= 0.9, f"training accuracy {accuracy:.2f}; chance is {1 / len(LINES):.2f}"

    def test_it_generalises_to_unseen_lines(self, trained):
        texts, labels = zip(*UNSEEN)
        hits = int(np.sum(trained.predict(list(texts)) == np.array(labels)))
        assert hits >= 4, f"{hits}/5 unseen lines right"

    def test_refit_replaces_the_classes(self, make, data):
        model = make().fit(*data)
        keep = {"392410", "630900"}
        texts = [t for t, y in zip(*data) if y in keep]
        labels = [y for y in data[1] if y in keep]
        model.fit(texts, labels)
        assert list(model.classes_) == sorted(keep)
        assert model.predict_proba(PROBE).shape == (len(PROBE), 2)

    def test_same_data_and_seed_give_the_same_model(self, make, data):
        a = make().fit(*data).predict_proba(PROBE + data[0])
        b = make().fit(*data).predict_proba(PROBE + data[0])
        assert np.allclose(a, b, rtol=0, atol=1e-6)

    # -- bad input --------------------------------------------------------------------
    def test_one_class_is_refused(self, make, data):
        with pytest.raises(ValueError):
            make().fit(data[0][:12], data[1][:12])

    def test_mismatched_lengths_are_refused(self, make, data):
        with pytest.raises(ValueError):
            make().fit(data[0], data[1][:-1])

    def test_no_examples_are_refused(self, make):
        with pytest.raises(ValueError):
            make().fit([], [])

    def test_predict_proba_and_save_before_fit_raise(self, make, tmp_path):
        model = make()
        with pytest.raises(NotFittedError):
            model.predict_proba(PROBE)
        with pytest.raises(NotFittedError):
            model.save(tmp_path / "model")

    def test_predict_before_fit_raises_not_fitted(self, make):
        with pytest.raises(NotFittedError):
            make().predict(PROBE)

    # -- files ------------------------------------------------------------------------
    def test_save_load_gives_identical_predictions(self, trained, cls, tmp_path):
        directory = tmp_path / "model"
        trained.save(directory)
        for loaded in (cls.load(directory), load_model(directory)):
            assert type(loaded) is cls
            assert list(loaded.classes_) == list(trained.classes_)
            assert _params_equal(loaded.get_params(), trained.get_params())
            assert np.allclose(loaded.predict_proba(PROBE), trained.predict_proba(PROBE), rtol=0, atol=1e-6)

    def test_the_serving_runtime_gives_the_same_answers(self, trained, data, tmp_path):
        """What serving loads (ONNX for neural kinds, arrays for linear ones) agrees with
        the model in its own framework: same top-1, probabilities within 1e-4."""
        directory = tmp_path / "model"
        trained.save(directory)
        served = load_runtime(directory)
        texts = PROBE + data[0] + [t for t, _ in UNSEEN]
        expected, got = trained.predict_proba(texts), served.predict_proba(texts)
        assert list(served.classes_) == list(trained.classes_)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4
        assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
        single = np.vstack([served.predict_proba([t]) for t in PROBE])
        assert np.abs(single - got[: len(PROBE)]).max() <= 1e-5, "an answer must not depend on its batch"

    def test_saved_files_are_plain_never_pickles(self, trained, tmp_path):
        directory = tmp_path / "model"
        trained.save(directory)
        files = sorted(Path(directory).rglob("*"))
        assert files
        for path in files:
            assert path.is_file(), f"{path.name}: an artifact is a flat folder of files"
            assert path.suffix not in {".pkl", ".pickle", ".joblib", ".pt", ".pth"}
            assert path.suffix in ALLOWED_SUFFIXES, f"{path.name} could not be exported"
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as npz:
                    for name in npz.files:
                        assert npz[name].dtype != object
