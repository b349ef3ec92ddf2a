"""What the conformance suite does not cover for the torch kinds: threads, early
stopping, padding independence, the ONNX runtime's refusals, serving without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from hsops.models.base import create
from hsops.models.onnx_runtime import OnnxTextClassifier
from hsops.models.runtime import load_runtime

from .conformance import PROBE, training_data

FAST = {"epochs": 4, "learning_rate": 0.03, "embedding_dim": 16, "hash_buckets": 300, "min_count": 1,
        "batch_size": 16, "dropout": 0.0, "num_threads": 1}
SIZES = {"dnn": {"hidden_size": 8}, "lstm": {"hidden_size": 8}, "textcnn": {"filters": 8}}


@pytest.fixture(params=sorted(SIZES))
def kind(request):
    return request.param


def make(kind, **extra):
    return create(kind, **{**FAST, **SIZES[kind], **extra})


def test_fit_uses_num_threads_and_restores_the_setting(kind):
    before = torch.get_num_threads()
    seen = []
    make(kind, num_threads=1, epochs=2).fit(*training_data(), on_epoch=lambda r: seen.append(torch.get_num_threads()))
    assert seen == [1, 1]
    assert torch.get_num_threads() == before


def test_early_stopping_keeps_the_best_epoch_and_stops_after_patience(kind):
    texts, labels = training_data()
    # a dev split whose labels no model can get right: epoch 1 stays the best
    model = make(kind, epochs=10, patience=1).fit(texts, labels, eval_set=(texts[:5], ["999999"] * 5))
    assert [r["epoch"] for r in model.history_] == [1, 2, 3]
    assert model.best_epoch_ == 1


def test_an_answer_does_not_depend_on_the_rest_of_its_batch(kind):
    model = make(kind).fit(*training_data())
    long_text = "PLASTIC " * 40
    alone = model.predict_proba(["USED CLOTHING"])
    together = model.predict_proba(["USED CLOTHING", long_text, ""])
    assert np.abs(alone[0] - together[0]).max() < 1e-5


def test_bad_hyper_parameters_are_refused_at_fit(kind):
    for bad in ({"dropout": 1.0}, {"epochs": 0}, {"learning_rate": -1.0}, {"num_threads": -1}):
        with pytest.raises(ValueError):
            make(kind, **bad).fit(*training_data())


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    directory = tmp_path_factory.mktemp("textcnn")
    create("textcnn", **FAST, filters=8).fit(*training_data()).save(directory)
    return directory


def test_the_serving_runtime_is_onnx(exported):
    served = load_runtime(exported)
    assert isinstance(served, OnnxTextClassifier) and served.kind == "textcnn"
    assert served.predict_proba(PROBE).shape == (len(PROBE), 5)


def test_a_missing_onnx_file_is_a_clear_error(exported, tmp_path):
    for f in exported.iterdir():
        if f.name != "model.onnx":
            (tmp_path / f.name).write_bytes(f.read_bytes())
    with pytest.raises(Exception, match="ONNX"):
        load_runtime(tmp_path)


def test_classes_that_do_not_match_the_network_are_refused(exported, tmp_path):
    for f in exported.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    spec = json.loads((tmp_path / "model.json").read_text())
    spec["classes"] = spec["classes"][:3]
    (tmp_path / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="5 scores for 3 classes"):
        load_runtime(tmp_path)


def test_serving_a_neural_model_never_imports_torch(exported, tmp_path):
    from hsops.models import artifact

    (tmp_path / "a").mkdir()
    for f in exported.iterdir():
        (tmp_path / "a" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "a" / "calibration.json").write_text(json.dumps({"temperature": 1.0, "threshold": 0.0}))
    artifact.write_manifest(tmp_path / "a", {"kind": "textcnn"})
    code = f"""
import sys
from hsops.serving.predictor import Predictor
p = Predictor.from_dir({str(tmp_path / "a")!r}, "t@1")
answer = p.predict(["70 CTNS PLASTIC CUPS"], explain=True)[0]
assert answer.explanation is not None
print(sorted(m for m in ("torch", "mlflow", "pandas", "sklearn") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def copy_artifact(source, target):
    target.mkdir(exist_ok=True)
    for f in source.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_an_onnx_file_outside_the_artifact_is_refused(exported, tmp_path):
    directory = copy_artifact(exported, tmp_path / "a")
    spec = json.loads((directory / "model.json").read_text())
    spec["onnx"]["file"] = "../elsewhere/model.onnx"
    (directory / "model.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="not a file of the artifact"):
        load_runtime(directory)


def test_an_encoder_larger_than_the_network_is_refused_at_load(exported, tmp_path):
    directory = copy_artifact(exported, tmp_path / "a")
    encoder = json.loads((directory / "encoder.json").read_text())
    encoder["config"]["hash_buckets"] += 1000
    (directory / "encoder.json").write_text(json.dumps(encoder))
    with pytest.raises(ValueError, match="does not fit the network"):
        load_runtime(directory)


def test_filter_widths_must_be_positive_integers():
    for widths in ([True, 2, 3, 4], [0, 1, 2, 3]):
        with pytest.raises(ValueError, match="textcnn: filter_widths"):
            make("textcnn", filter_widths=tuple(widths)).fit(*training_data())
