"""The pipeline handlers called directly, as the runtime calls them: good events, bad
events, and the same event twice (handlers are idempotent)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from hsops.pipeline.handlers import data, release, training
from hsops.pipeline.handlers._common import BadEvent
from hsops.platform.local.backend import LocalBackend
from hsops.registry.index import read_index
from tests._samples import sample_rows, write_csv

POLICY = {"min_rows": 20, "min_test_rows": 3, "max_cost_per_million_usd": 100.0}


@pytest.fixture
def context(hsops_home):
    backend = LocalBackend(hsops_home)
    yield SimpleNamespace(home=hsops_home, backend=backend, function_name="test", aws_request_id="r1")
    backend.close()


@pytest.fixture
def uploaded(context, tmp_path):
    path = write_csv(tmp_path / "lines.csv", sample_rows())
    context.backend.objects.put("uploads/lines.csv", path)
    return "uploads/lines.csv"


def _ingest(context, key):
    return data.ingest({"source": {"object_key": key}}, context)


def test_ingest_stores_a_dataset_version_once(context, uploaded):
    first = _ingest(context, uploaded)
    again = _ingest(context, uploaded)
    assert first["accepted"] == len(sample_rows()) and first["new_version"] is True
    assert again["dataset_version"] == first["dataset_version"] and again["new_version"] is False
    assert not list((context.home / "tmp").glob("*/lines.csv")), "the downloaded copy is removed"


def test_ingest_of_an_unreadable_file_reports_instead_of_raising(context):
    context.backend.objects.put("inbox/garbage.csv", b"\x00\x01\x02 not a table at all\n")
    report = _ingest(context, "inbox/garbage.csv")
    assert report["dataset_version"] is None
    verdict = data.validate({"ingest": report, "policy": POLICY}, context)
    assert verdict["valid"] is False and verdict["reasons"]


def test_ingest_refuses_events_without_a_source(context):
    with pytest.raises(BadEvent, match="source"):
        data.ingest({}, context)
    with pytest.raises(BadEvent, match="must be a JSON object"):
        data.ingest(["not", "a", "dict"], context)
    with pytest.raises(BadEvent, match="no dataset version"):
        data.ingest({"source": {"dataset_version": "latest"}}, context)


def test_validate_names_every_broken_rule(context):
    report = {"rows_read": 100, "accepted": 10, "quarantined": 90, "classes_hs6": 1,
              "quarantine_reasons": {"missing_code": 90}, "dataset_version": "ds-0"}
    verdict = data.validate({"ingest": report, "policy": POLICY}, context)
    assert verdict["valid"] is False
    assert len(verdict["reasons"]) == 3
    assert "missing_code" in verdict["summary"] and "10 valid rows" in verdict["summary"]


def test_quarantine_moves_the_object_with_its_reasons_and_tolerates_a_redelivery(context, uploaded):
    event = {"source": {"object_key": uploaded}, "validation": {"reasons": ["too few rows"]}, "execution": "x"}
    first = data.quarantine(event, context)
    second = data.quarantine(event, context)
    objects = context.backend.objects
    assert first == second == {"quarantine_key": "quarantine/lines.csv"}
    assert [o.key for o in objects.list("uploads/")] == []
    reasons = json.loads(objects.get("quarantine/lines.csv.reasons.json"))
    assert reasons["reasons"] == ["too few rows"]
    # a quarantined file run again and failed again stays where it is
    again = {"source": {"object_key": "quarantine/lines.csv"}, "validation": {"reasons": ["still"]}}
    assert data.quarantine(again, context) == {"quarantine_key": "quarantine/lines.csv"}
    assert objects.head("quarantine/lines.csv").size > 0


def test_split_counts_rows_and_refuses_a_tiny_test_split(context, uploaded):
    version = _ingest(context, uploaded)["dataset_version"]
    counts = data.split({"dataset_version": version, "policy": POLICY}, context)
    assert sum(counts[s]["rows"] for s in ("train", "dev", "test")) == len(sample_rows())
    with pytest.raises(data.InsufficientData, match="test split"):
        data.split({"dataset_version": version, "policy": {"min_test_rows": 10_000}}, context)


def test_train_refuses_bad_candidates_before_training(context, uploaded):
    version = _ingest(context, uploaded)["dataset_version"]
    with pytest.raises(BadEvent, match="unknown model kind"):
        training.train({"candidate": {"kind": "nope"}, "dataset_version": version}, context)
    with pytest.raises(BadEvent, match="unknown field"):
        training.train({"candidate": {"kind": "linear", "rm": "-rf"}, "dataset_version": version}, context)
    with pytest.raises(ValueError):
        training.train({"candidate": {"kind": "linear", "params": {"no_such_param": 1}},
                        "dataset_version": version}, context)
    assert not (context.home / "artifacts").exists() or not any((context.home / "artifacts").iterdir())


def test_evaluate_refuses_an_artifact_outside_home(context, uploaded):
    version = _ingest(context, uploaded)["dataset_version"]
    with pytest.raises(BadEvent, match="outside HSOPS_HOME"):
        training.evaluate({"model": {"artifact_dir": "../../etc"}, "dataset_version": version}, context)
    assert training.evaluate({"model": "champion", "dataset_version": version}, context) == {
        "present": False, "label": "champion"}


def test_release_path_is_idempotent(context, uploaded):
    """train -> evaluate -> compare -> register -> deploy -> notify, each delivered twice."""
    version = _ingest(context, uploaded)["dataset_version"]
    event = {"candidate": {"kind": "linear"}, "dataset_version": version}
    trained = training.train(event, context)
    assert training.train(event, context)["artifact_dir"] == trained["artifact_dir"]
    assert trained["artifact_dir"].startswith("artifacts/")

    evaluation = training.evaluate({"model": trained, "dataset_version": version}, context)
    assert evaluation["present"] and 0 <= evaluation["metrics"]["hs6_top1"] <= 1
    assert evaluation["cost_per_million_usd"] > 0
    champion = training.evaluate({"model": "champion", "dataset_version": version}, context)
    decision = release.compare({"candidates": [evaluation], "champion": champion, "policy": POLICY}, context)
    assert decision["better_than_champion"] is True and "no champion yet" in decision["reason"]

    reg_event = {"trained": [trained], "decision": decision, "execution": "run-1"}
    registered = release.register(reg_event, context)
    assert release.register(reg_event, context) == registered

    dep_event = {"version": registered["version"], "decision": decision, "execution": "run-1"}
    deployed = release.deploy(dep_event, context)
    assert deployed["alias"] == "champion"  # nothing was champion: the first model becomes it
    assert release.deploy(dep_event, context)["changed"] is False
    aliases = read_index(context.home)["models"]["hs-classifier"]["aliases"]
    assert aliases == {"champion": registered["version"]}
    audit = (context.home / "registry" / "audit.jsonl").read_text().splitlines()
    assert sum('"set_alias"' in line for line in audit) == 1

    # the same artifact against itself as champion is not "better"
    champion_now = training.evaluate({"model": "champion", "dataset_version": version}, context)
    again = release.compare({"candidates": [evaluation], "champion": champion_now, "policy": POLICY}, context)
    assert again["better_than_champion"] is False and "champion's own artifact" in again["reason"]

    note = {"execution": "run-1", "outcome": deployed}
    release.notify(note, context)
    release.notify(note, context)
    got = context.backend.events.receive(release.NOTIFICATIONS, max_messages=10)
    assert len(got) == 1 and got[0].body["version"] == registered["version"]


def test_compare_weighs_cost_and_margin(context):
    def ev(top1, cost, artifact):
        return {"present": True, "kind": "k", "artifact_dir": artifact, "version": "1",
                "metrics": {"hs6_top1": top1}, "cost_per_million_usd": cost}

    champion = ev(0.60, 1.0, "artifacts/champ")
    tied = [ev(0.70, 3.0, "artifacts/a"), ev(0.70, 2.0, "artifacts/b")]
    decision = release.compare({"candidates": tied, "champion": champion,
                                "policy": {"min_improvement": 0.05, "max_cost_per_million_usd": 1.5}}, None)
    assert decision["best"]["artifact_dir"] == "artifacts/b"  # same accuracy: the cheaper one
    assert decision["better_than_champion"] is True and decision["within_budget"] is False
    assert "over the budget" in decision["reason"]
    small = release.compare({"candidates": [ev(0.62, 1.0, "artifacts/c")], "champion": champion,
                             "policy": {"min_improvement": 0.05}}, None)
    assert small["better_than_champion"] is False  # +2 points is within the required margin
    with pytest.raises(BadEvent, match="no candidate"):
        release.compare({"candidates": [], "champion": champion}, None)


def test_compare_does_not_replace_a_better_challenger(context):
    def ev(top1, artifact, version="1"):
        return {"present": True, "kind": "k", "artifact_dir": artifact, "version": version,
                "metrics": {"hs6_top1": top1}, "cost_per_million_usd": 1.0}

    champion, challenger = ev(0.60, "artifacts/champ", "1"), ev(0.70, "artifacts/chal", "2")
    worse = release.compare({"candidates": [ev(0.65, "artifacts/new")], "champion": champion,
                             "challenger": challenger}, None)
    assert worse["better_than_champion"] is True and worse["better_than_challenger"] is False
    assert "stays under test" in worse["reason"]
    better = release.compare({"candidates": [ev(0.72, "artifacts/new")], "champion": champion,
                              "challenger": challenger}, None)
    assert better["better_than_challenger"] is True
    alone = release.compare({"candidates": [ev(0.65, "artifacts/new")], "champion": champion,
                             "challenger": {"present": False}}, None)
    assert alone["better_than_challenger"] is True
