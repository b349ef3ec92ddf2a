import json

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
    assert evaluate_artifact(result.artifact_dir, texts, labels) == pytest.approx(whole)
