import json

import numpy as np
import pytest

from hsops.data.ingest import ingest_file
from hsops.data.datasets import load_dataset
from hsops.models import artifact
from hsops.models.linear import TfidfLinearClassifier
from hsops.training.model_io import evaluate_artifact, load_verified
from hsops.training.train import train
from tests._samples import sample_rows, write_csv

FAST = {"epochs": 3, "min_df": 1}


@pytest.fixture
def dataset(tmp_path):
    report = ingest_file(write_csv(tmp_path / "d.csv", sample_rows()), tmp_path / "home")
    return load_dataset(tmp_path / "home", report.dataset_version)


def test_train_publishes_a_verified_calibrated_artifact(dataset, tmp_path):
    home = tmp_path / "home"
    result = train(dataset, home, params=FAST)
    manifest = artifact.verify(result.artifact_dir)
    assert {"model.json", "calibration.json", "linear_weights.npz"} <= set(manifest["files"])
    assert manifest["metadata"]["dataset_version"] == dataset.version
    calibration = json.loads((result.artifact_dir / "calibration.json").read_text())
    assert calibration["temperature"] > 0 and 0 <= calibration["threshold"] <= 1
    assert result.test_metrics["n"] == len(dataset.part("test")[0])
    assert result.test_metrics["hs6_top1"] > 0.5  # 5 well separated classes
    assert not list((home / "artifacts").glob(".staging-*"))


def test_same_data_and_seed_publish_the_same_artifact(dataset, tmp_path):
    home = tmp_path / "home"
    first = train(dataset, home, params=FAST)
    second = train(dataset, home, params=FAST)
    assert first.artifact_dir == second.artifact_dir


def test_crash_during_export_leaves_no_model(dataset, tmp_path, monkeypatch):
    home = tmp_path / "home"

    def broken_save(self, directory):
        (directory / "model.json").write_text("{half")
        raise OSError("disk full")

    monkeypatch.setattr(TfidfLinearClassifier, "save", broken_save)
    with pytest.raises(OSError):
        train(dataset, home, params=FAST)
    assert list((home / "artifacts").iterdir()) == []


def test_evaluate_artifact_matches_training_metrics(dataset, tmp_path):
    result = train(dataset, tmp_path / "home", params=FAST)
    texts, labels = dataset.part("test")
    again = evaluate_artifact(result.artifact_dir, texts, labels)
    assert again["hs6_top1"] == pytest.approx(result.test_metrics["hs6_top1"])
    model, calibration, _ = load_verified(result.artifact_dir)
    assert list(model.classes_) == sorted(set(dataset.hs6))


def test_without_dev_rows_the_model_abstains_on_everything(tmp_path):
    from hsops.serving.predictor import Predictor

    rows = [("PLASTIC CUPS", "392410"), ("AIR FILTER", "842131"), ("USED CLOTHING", "630900")]
    report = ingest_file(write_csv(tmp_path / "tiny.csv", rows), tmp_path / "home")
    dataset = load_dataset(tmp_path / "home", report.dataset_version)
    dataset.splits = ["train"] * len(dataset)  # a dataset too small for a dev split
    result = train(dataset, tmp_path / "home", params={"epochs": 2, "min_df": 1})
    assert result.calibration["calibrated"] is False and result.calibration["threshold"] == 1.0
    predictions = Predictor.from_dir(result.artifact_dir, "t").predict(["PLASTIC CUPS", "AIR FILTER"])
    assert all(p.abstain for p in predictions)


def test_evaluating_in_chunks_gives_the_same_metrics(dataset, tmp_path, monkeypatch):
    from hsops.training import model_io

    result = train(dataset, tmp_path / "home", params=FAST)
    texts, labels = dataset.part("train")
    whole = evaluate_artifact(result.artifact_dir, texts, labels)
    monkeypatch.setattr(model_io, "CHUNK_ROWS", 7)
    chunked = evaluate_artifact(result.artifact_dir, texts, labels)
    nested = ("risk_coverage", "coverage_at_precision")
    assert {k: v for k, v in chunked.items() if k not in nested} == \
        pytest.approx({k: v for k, v in whole.items() if k not in nested})
    assert chunked["coverage_at_precision"] == pytest.approx(whole["coverage_at_precision"])
    assert len(chunked["risk_coverage"]) == len(whole["risk_coverage"])
    for a, b in zip(chunked["risk_coverage"], whole["risk_coverage"]):
        assert a == pytest.approx(b)


# -- up-sampling ------------------------------------------------------------------------------
RARE = [("HEX BOLT M8 STEEL", "7318150000"), ("STEEL BOLTS M10", "7318150000")]


@pytest.fixture
def imbalanced(tmp_path):
    """The sample rows plus a rare class, with every split filled and the rare rows in train."""
    report = ingest_file(write_csv(tmp_path / "d.csv", sample_rows() + RARE), tmp_path / "home")
    dataset = load_dataset(tmp_path / "home", report.dataset_version)
    rare = {text for text, _ in RARE}
    dataset.splits = ["train" if t in rare else s for t, s in zip(dataset.texts, dataset.splits)]
    assert {"dev", "test"} <= set(dataset.splits)
    return dataset


def _capture_fit(monkeypatch) -> list:
    seen = []
    original = TfidfLinearClassifier.fit

    def fit(self, texts, labels, **kwargs):
        seen.append((list(texts), list(labels)))
        return original(self, texts, labels, **kwargs)

    monkeypatch.setattr(TfidfLinearClassifier, "fit", fit)
    return seen


def test_upsampling_raises_rare_classes_of_the_train_split_only(imbalanced, tmp_path, monkeypatch):
    from collections import Counter

    seen = _capture_fit(monkeypatch)
    result = train(imbalanced, tmp_path / "home", params=FAST, upsample={"min_per_class": 6, "max_ratio": 4})
    train_x, train_y = imbalanced.part("train")
    (fit_x, fit_y), = seen
    assert Counter(fit_y)["731815"] == 6 and Counter(train_y)["731815"] == 2
    assert fit_x[: len(train_x)] == train_x  # every original row, in order
    assert set(fit_x) == set(train_x)  # copies of training rows only: no dev or test row
    assert result.upsample == {"min_per_class": 6, "max_ratio": 4.0, "seed": 0, "rows_before": len(train_x),
                               "rows_after": len(fit_x), "classes_raised": 1}
    assert result.calibration["dev_rows"] == len(imbalanced.part("dev")[0])
    assert result.dev_metrics["n"] == len(imbalanced.part("dev")[0])
    assert result.test_metrics["n"] == len(imbalanced.part("test")[0])
    metadata = artifact.verify(result.artifact_dir)["metadata"]
    assert metadata["upsample"] == result.upsample
    assert result.to_dict()["upsample"] == result.upsample


def test_upsample_true_takes_the_defaults_and_off_records_none(imbalanced, tmp_path):
    on = train(imbalanced, tmp_path / "home", params=FAST, upsample=True)
    assert on.upsample["min_per_class"] == 10 and on.upsample["max_ratio"] == 5.0
    assert on.upsample["rows_after"] == on.upsample["rows_before"] + 8  # 2 rare rows -> 10
    off = train(imbalanced, tmp_path / "home", params=FAST)
    assert off.upsample is None
    assert artifact.verify(off.artifact_dir)["metadata"]["upsample"] is None
    assert off.artifact_dir != on.artifact_dir


@pytest.mark.parametrize("upsample, error, match", [
    ({"min_per_class": 0}, ValueError, "min_per_class"),
    ({"max_ratio": 0.5}, ValueError, "max_ratio"),
    ({"floor": 3}, ValueError, r"unknown upsample option\(s\) \['floor'\]"),
    ("yes", TypeError, "upsample must be"),
    (1, TypeError, "upsample must be"),
])
def test_bad_upsample_settings_are_refused_before_training(imbalanced, tmp_path, monkeypatch, upsample,
                                                           error, match):
    seen = _capture_fit(monkeypatch)
    with pytest.raises(error, match=match):
        train(imbalanced, tmp_path / "home", params=FAST, upsample=upsample)
    assert seen == [] and not (tmp_path / "home" / "artifacts").exists()


# -- heading threshold --------------------------------------------------------------------------
class _Fixed:
    """A stand-in model whose dev answers are set by hand."""

    classes_ = np.array(["392410", "392490", "871120"])

    def __init__(self, proba):
        self.proba = np.asarray(proba, dtype=float)

    def predict_proba(self, texts):
        return self.proba[: len(texts)]


def test_calibration_chooses_a_heading_threshold_for_unsure_subheadings():
    from hsops.models.calibration import Calibration, Headings
    from hsops.training.train import _calibrate

    # 20 clear motorcycles, and 30 plastics split between two subheadings of 3924:
    # the subheading is a coin toss, the heading is always right
    proba = [[0.02, 0.02, 0.96]] * 20 + [[0.48, 0.47, 0.05], [0.47, 0.48, 0.05]] * 15
    labels = ["871120"] * 20 + ["392410", "392410"] * 15
    model = _Fixed(proba)
    calibration = _calibrate(model, ["x"] * 50, labels, 0.9)
    assert calibration["threshold"] > 0.5 and calibration["heading_rows"] == 30
    assert 0.5 < calibration["heading_threshold"] < 1.0
    read = Calibration(calibration["temperature"], calibration["threshold"], 0.9, calibration["heading_threshold"])
    scaled = read.apply(model.proba)
    heading, heading_conf = Headings(model.classes_).best(scaled)
    levels = [read.level(c, h) for c, h in zip(scaled.max(axis=1), heading_conf)]
    assert levels == ["subheading"] * 20 + ["heading"] * 30 and set(heading[20:]) == {"3924"}


def test_a_heading_that_is_not_right_often_enough_gets_no_fallback():
    from hsops.training.train import _calibrate

    proba = [[0.02, 0.02, 0.96]] * 20 + [[0.48, 0.47, 0.05]] * 30
    labels = ["871120"] * 20 + ["871120"] * 30  # the unsure rows are wrong at HS4 too
    calibration = _calibrate(_Fixed(proba), ["x"] * 50, labels, 0.9)
    assert calibration["heading_threshold"] == 1.0


def test_a_trained_artifact_carries_its_heading_threshold(dataset, tmp_path):
    from hsops.models.calibration import Calibration

    result = train(dataset, tmp_path / "home", params=FAST)
    written = json.loads((result.artifact_dir / "calibration.json").read_text())
    assert "heading_threshold" in written
    assert Calibration.read(result.artifact_dir).heading_threshold == written["heading_threshold"]
    assert "heading_fallback_rate" in result.test_metrics


def test_a_diverged_model_is_refused_and_nothing_is_published(dataset, tmp_path):
    home = tmp_path / "home"
    with pytest.raises(ValueError, match="diverged"):
        train(dataset, home, kind="dnn", params={"learning_rate": 1e30, "epochs": 2, "embedding_dim": 8,
                                                  "hash_buckets": 100, "min_count": 1, "hidden_size": 8})
    assert not (home / "artifacts").exists() or not any((home / "artifacts").iterdir())
