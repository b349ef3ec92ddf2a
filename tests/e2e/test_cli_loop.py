"""The spine through the real ``hsops`` command: ingest -> train -> evaluate -> predict,
each a separate process sharing one HSOPS_HOME, as a user runs them."""

import json

import pytest

from hsops._config import corpus_path
from tests._samples import sample_rows, write_csv
from tests.e2e._cli import run



@pytest.fixture(scope="module")
def trained_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    data = write_csv(home / "train.csv", sample_rows() + [("", "3924100000"), ("PLASTIC CUPS", "ABC")])
    ingest = json.loads(run(["ingest", str(data), "--json"], home).stdout)
    assert ingest["rows_read"] == len(sample_rows()) + 2
    assert ingest["accepted"] == len(sample_rows()) and ingest["quarantined"] == 2
    assert ingest["quarantine_reasons"] == {"blank_description": 1, "invalid_code": 1}
    out = json.loads(run(["train", "--param", "epochs=3", "--param", "min_df=1", "--json"], home).stdout)
    assert out["alias"] == "champion" and out["dataset_version"] == ingest["dataset_version"]
    return home, data


def test_evaluate_on_any_csv_prints_the_contract_keys(trained_home, tmp_path):
    home, _ = trained_home
    other = write_csv(tmp_path / "eval.csv", [("5 CTNS PLASTIC CUPS", "3924.10.00.00"),
                                              ("USED CLOTHING 40 BALES", "630900"), ("junk", "12")],
                      header=("desc", "code"))
    out = json.loads(run(["evaluate", "--model", "champion", "--data", str(other), "--text-column", "desc",
                          "--label-column", "code", "--json"], home).stdout)
    for key in ("n", "hs6_top1", "hs6_top5", "hs4_top1", "hs2_top1", "macro_f1", "coverage_at_target"):
        assert key in out
    assert out["n"] == 2 and out["rows_rejected"] == 1
    assert out["risk_coverage"][-1]["coverage"] == 1.0
    assert set(out["coverage_at_precision"]) == {"0.90", "0.95", "0.97"}
    assert "heading_fallback_rate" in out and "heading_fallback_accuracy" in out


def test_predict_json_answers_with_code_text_confidence(trained_home):
    home, _ = trained_home
    out = json.loads(run(["predict", "100 CTNS X 44 PCS PLASTIC STORAGE BOWLS", "--json"], home).stdout)
    assert out[0]["hs_code"] == "392410"
    assert "plastics" in out[0]["hs_description"].lower()
    assert 0 < out[0]["confidence"] <= 1 and out[0]["model_version"] == "hs-classifier@1"
    from hsops.platform.local.state_store import StateStore

    logged = StateStore(home).get_prediction(out[0]["request_id"])
    assert logged["hs_code"] == "392410" and logged["text"] == "100 CTNS X 44 PCS PLASTIC STORAGE BOWLS"


def test_models_lists_the_champion_with_lineage(trained_home):
    home, _ = trained_home
    rows = json.loads(run(["models", "--json"], home).stdout)
    assert rows[0]["aliases"] == ["champion"] and rows[0]["dataset_version"].startswith("ds-")
    assert "hs6_top1" in rows[0]["metrics"]


def test_clear_errors_and_exit_codes(trained_home, tmp_path):
    home, _ = trained_home
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    proc = run(["ingest", str(empty)], home, check=False)
    assert proc.returncode == 2 and "empty" in proc.stderr
    proc = run(["evaluate", "--model", "hs-classifier@42", "--json"], home, check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr
    proc = run(["predict", "   "], home, check=False)
    assert proc.returncode == 2 and "blank" in proc.stderr
    proc = run(["train", "--model", "nope"], home, check=False)
    assert proc.returncode == 2 and "unknown model kind" in proc.stderr
    for bad, said in (("epochs=abc", "epochs must be like"), ("nosuch=1", "no hyper-parameter 'nosuch'"),
                      ("epochs=-1", "epochs must be positive"), ("garbage", "KEY=VALUE")):
        proc = run(["train", "--param", bad], home, check=False)
        assert proc.returncode == 2 and said in proc.stderr, (bad, proc.stderr)
    proc = run(["serve", "--model", "hs-classifier@77"], home, check=False)
    assert proc.returncode == 2 and "not found" in proc.stderr
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(b"goods_description,hs_code\nCUPS,392410\n")
    proc = run(["ingest", str(broken)], home, check=False)
    assert proc.returncode == 2 and "not a valid gzip" in proc.stderr and "Traceback" not in proc.stderr
    nothing = write_csv(tmp_path / "nothing.csv", [("THING", "ABC")])
    proc = run(["ingest", str(nothing)], home, check=False)
    assert proc.returncode == 1 and "no valid rows" in proc.stderr


def test_evaluate_warns_when_rows_were_seen_in_training(trained_home):
    home, data = trained_home
    proc = run(["evaluate", "--data", str(data), "--json"], home)
    out = json.loads(proc.stdout)
    assert out["rows_seen_in_training"] > 0 and "overstate" in proc.stderr


def test_promoting_a_version_to_a_second_alias_lists_both(trained_home):
    home, _ = trained_home
    run(["models", "promote", "1", "--alias", "challenger"], home)
    rows = json.loads(run(["models", "--json"], home).stdout)
    assert rows[0]["aliases"] == ["challenger", "champion"]


def test_evaluate_shows_the_risk_coverage_curve(trained_home):
    home, _ = trained_home
    out = run(["evaluate"], home).stdout
    assert "Risk-coverage" in out and "answered share" in out and "at least 95%" in out


def test_train_upsample_raises_rare_classes_and_says_so(trained_home, tmp_path):
    home, _ = trained_home
    rare = [("HEX BOLT M8 STEEL", "7318150000"), ("STEEL BOLTS M10", "7318150000")]
    data = write_csv(tmp_path / "rare.csv", sample_rows() + rare)
    out = json.loads(run(["train", "--data", str(data), "--upsample", "--param", "epochs=3", "--param", "min_df=1",
                          "--alias", "none", "--json"], home).stdout)
    upsample = out["upsample"]
    assert upsample["min_per_class"] == 10 and upsample["rows_after"] > upsample["rows_before"]
    assert out["test_metrics"]["n"] + out["calibration"]["dev_rows"] + upsample["rows_before"] == \
        len(sample_rows()) + len(rare)  # only the train split grew


@pytest.mark.slow
@pytest.mark.skipif(corpus_path() is None, reason="customs declarations corpus not available")
def test_real_corpus_baseline_learns(tmp_path):
    """One epoch on the real corpus: the baseline must clearly beat the majority class
    (~5%) on the group-aware test split."""
    out = json.loads(run(["train", "--data", str(corpus_path()), "--param", "epochs=1", "--json"],
                         tmp_path).stdout)
    metrics = out["test_metrics"]
    assert metrics["n"] > 4000
    assert metrics["hs6_top1"] > 0.5 and metrics["hs6_top5"] > metrics["hs6_top1"]
    assert metrics["hs2_top1"] >= metrics["hs4_top1"] >= metrics["hs6_top1"]
