import json

import pytest

from hsops.data.datasets import load_dataset
from hsops.data.ingest import ingest_file
from hsops.registry.index import ModelNotFound, resolve
from hsops.registry.mlflow_registry import Registry
from hsops.training.train import train
from tests._samples import sample_rows, write_csv


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    report = ingest_file(write_csv(home / "d.csv", sample_rows()), home)
    dataset = load_dataset(home, report.dataset_version)
    first = train(dataset, home, params={"epochs": 2, "min_df": 1})
    second = train(dataset, home, params={"epochs": 3, "min_df": 1}, upsample={"min_per_class": 12})
    return home, first, second


def test_register_records_lineage_and_aliases(trained):
    home, first, second = trained
    registry = Registry(home)
    v1 = registry.register(first, alias="champion")
    v2 = registry.register(second, alias="challenger")
    assert v1 != v2
    champion = resolve(home, "champion")
    assert champion.version == v1 and champion.artifact_dir == first.artifact_dir
    assert champion.info["dataset_version"] == first.dataset_version
    assert champion.info["metrics"]["hs6_top1"] == pytest.approx(first.test_metrics["hs6_top1"])
    assert champion.info["params"]["epochs"] == "2"
    assert champion.info["params"]["upsample"] == "none"
    upsampled = json.loads(resolve(home, "challenger").info["params"]["upsample"])
    assert upsampled["min_per_class"] == 12 and upsampled["rows_after"] >= upsampled["rows_before"]
    assert resolve(home, f"hs-classifier@{v2}").artifact_dir == second.artifact_dir
    # MLflow is the source of truth: the alias is there too
    mv = registry.client.get_model_version_by_alias("hs-classifier", "challenger")
    assert str(mv.version) == v2
    run = registry.client.get_run(mv.run_id)
    assert run.data.tags["dataset_version"] == second.dataset_version
    assert "git_commit" in run.data.tags


def test_register_is_idempotent_and_promotion_is_audited(trained):
    home, first, second = trained
    registry = Registry(home)
    before = len(registry.versions())
    again = registry.register(first)
    assert len(registry.versions()) == before
    registry.set_alias("champion", resolve(home, "challenger").version, reason="better on test")
    assert resolve(home, "champion").artifact_dir == second.artifact_dir
    audit = [json.loads(line) for line in (home / "registry" / "audit.jsonl").read_text().splitlines()]
    assert audit[-1]["alias"] == "champion" and audit[-1]["previous"] == again
    assert audit[-1]["reason"] == "better on test"


def test_bad_references_say_what_exists(trained):
    home, _, _ = trained
    with pytest.raises(ModelNotFound, match="versions"):
        resolve(home, "hs-classifier@999")
    with pytest.raises(ModelNotFound, match="no registered model"):
        resolve(home, "other@1")
    with pytest.raises(ModelNotFound, match="bad model reference"):
        resolve(home, "../../etc")
    with pytest.raises(ValueError):
        Registry(home).set_alias("production", "1")


def test_corrupt_index_is_a_clear_error_and_registering_rebuilds_it(trained):
    home, first, _ = trained
    path = home / "registry" / "index.json"
    saved = path.read_text()
    path.write_text("garbage{")
    try:
        with pytest.raises(ModelNotFound, match="unreadable"):
            resolve(home, "champion")
        Registry(home).register(first)  # MLflow is the source of truth
        assert resolve(home, "champion").artifact_dir.is_dir()
    finally:
        if "garbage" in path.read_text():
            path.write_text(saved)


def test_a_copied_home_resolves_its_own_artifacts(trained, tmp_path):
    import shutil

    home, first, _ = trained
    Registry(home).register(first, alias="champion")
    copy = tmp_path / "copy"
    shutil.copytree(home, copy)
    Registry(copy).set_alias("champion", resolve(copy, "champion").version, reason="rewrite index")
    assert resolve(copy, "champion").artifact_dir.resolve().is_relative_to(copy.resolve())


def test_register_records_extra_tags_and_metrics_also_on_a_known_artifact(trained):
    home, first, _ = trained
    registry = Registry(home)
    dataset = load_dataset(home, first.dataset_version)
    third = train(dataset, home, params={"epochs": 4, "min_df": 1})
    version = registry.register(third, tags={"tune_study": "s1"}, metrics={"tune_best_dev_top1": 0.5})
    run_id = next(v["run_id"] for v in registry.versions() if v["version"] == version)
    run = registry.client.get_run(run_id)
    assert run.data.tags["tune_study"] == "s1" and run.data.metrics["tune_best_dev_top1"] == 0.5
    assert run.data.tags["model_kind"] == "linear"  # the usual tags are still there
    assert registry.register(third, tags={"tune_study": "s2"}, metrics={"tune_best_dev_top1": 0.75}) == version
    run = registry.client.get_run(run_id)
    assert run.data.tags["tune_study"] == "s2" and run.data.metrics["tune_best_dev_top1"] == 0.75
