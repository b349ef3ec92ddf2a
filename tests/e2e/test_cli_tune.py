"""``hsops tune`` through the real command, as a user runs it: a study, its resumption,
the registered result, and clear refusals of bad input."""

import json

import pytest

from tests._samples import sample_rows, write_csv
from tests.e2e._cli import run



@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    run(["ingest", str(write_csv(home / "d.csv", sample_rows())), "--json"], home)
    return home


def test_tune_resumes_its_study_and_registers_the_best_model_once(home):
    first = json.loads(run(["tune", "--model", "linear", "--trials", "2", "--no-register", "--json"], home).stdout)
    assert (first["ran"], first["finished"], first["failed"], first["version"]) == (2, 2, 0, None)
    assert (home / first["storage"]).is_file() and not (home / "mlflow.db").exists()

    out = json.loads(run(["tune", "--model", "linear", "--trials", "3", "--json"], home).stdout)
    assert out["study_name"] == first["study_name"]
    assert (out["ran"], out["finished"]) == (1, 3)
    assert out["version"] == "1" and out["alias"] == "champion"
    assert 0 < out["best_value"] <= 1 and {"learning_rate", "epochs", "char_ngrams"} <= set(out["best_params"])

    from hsops.registry.mlflow_registry import Registry

    registry = Registry(home)
    recorded = registry.client.get_run(registry.versions()[0]["run_id"]).data
    assert recorded.tags["tune_study"] == out["study_name"]
    assert json.loads(recorded.tags["tune_best_params"]) == out["best_params"]
    assert recorded.metrics["tune_best_dev_top1"] == pytest.approx(out["best_value"])
    assert recorded.metrics["tune_trials_complete"] + recorded.metrics["tune_trials_pruned"] == 3
    assert recorded.params["epochs"] == str(out["best_params"]["epochs"])

    # nothing left to run, the same best: the same model, not a challenger of itself
    again = json.loads(run(["tune", "--model", "linear", "--trials", "3", "--json"], home).stdout)
    assert (again["ran"], again["version"], again["alias"]) == (0, "1", None)
    assert [(v["version"], v["aliases"]) for v in Registry(home).versions()] == [("1", ["champion"])]


@pytest.mark.parametrize("args, said", [
    (["--model", "nope"], "unknown model kind 'nope'"),
    (["--trials", "0"], "--trials must be at least 1"),
    (["--dataset", "ds-nope"], "no dataset 'ds-nope'"),
    (["--study", "../x"], "study name must be"),
    (["--timeout", "-5"], "--timeout must be a positive"),
])
def test_bad_input_is_refused_with_a_message(home, args, said):
    proc = run(["tune", *args], home, check=False)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
