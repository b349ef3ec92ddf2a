"""The Predictor: verified loading, calibrated confidences, alternatives, abstention."""

from __future__ import annotations

import re

import dataclasses
import json

import numpy as np
import pytest

from hsops.domain import nomenclature
from hsops.models import artifact
from hsops.models.artifact import ArtifactError
from hsops.models.base import load_model
from hsops.registry.index import ModelNotFound, write_index
from hsops.serving import Calibration, Prediction, Predictor, RegistrySource


@pytest.fixture
def predictor(artifact_dir) -> Predictor:
    return Predictor.from_dir(artifact_dir, model_version="hs-classifier@7")


def test_predicts_the_right_code_with_nomenclature_text(predictor, facts):
    texts = list(facts["probes"])
    predictions = predictor.predict(texts)
    assert [p.hs_code for p in predictions] == list(facts["probes"].values())
    for p in predictions:
        assert isinstance(p, Prediction)
        assert len(p.hs_code) == 6 and p.hs_code.isdigit()
        assert p.hs_description == nomenclature().describe(p.hs_code)
        assert p.model_version == "hs-classifier@7"
        assert 0.0 < p.confidence <= 1.0
        assert p.abstain is False
        assert p.explanation is None
    assert predictions[0].hs_description == "Plastics; tableware and kitchenware"


def test_alternatives_are_ranks_two_to_k_in_descending_order(predictor, facts):
    (p,) = predictor.predict(["PLASTIC CUPS"], top_k=4)
    assert len(p.alternatives) == 3
    confidences = [p.confidence] + [a["confidence"] for a in p.alternatives]
    assert confidences == sorted(confidences, reverse=True)
    codes = [p.hs_code] + [a["hs_code"] for a in p.alternatives]
    assert len(set(codes)) == 4 and set(codes) <= set(facts["codes"])
    for alt in p.alternatives:
        assert set(alt) == {"hs_code", "hs_description", "in_hs2022", "confidence"}
        assert alt["in_hs2022"] is nomenclature().exists(alt["hs_code"])
        assert alt["hs_description"] == nomenclature().describe(alt["hs_code"])


def test_top_k_larger_than_the_classes_returns_every_class(predictor, facts):
    (p,) = predictor.predict(["PLASTIC CUPS"], top_k=20)
    assert len(p.alternatives) == len(facts["codes"]) - 1
    total = p.confidence + sum(a["confidence"] for a in p.alternatives)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_top_one_has_no_alternatives(predictor):
    (p,) = predictor.predict(["PLASTIC CUPS"], top_k=1)
    assert p.alternatives == []


@pytest.mark.parametrize("top_k", [0, -1, 21, 2.0, True, "5"])
def test_bad_top_k_is_refused(predictor, top_k):
    with pytest.raises(ValueError, match="top_k"):
        predictor.predict(["PLASTIC CUPS"], top_k=top_k)


def test_a_bare_string_is_refused_not_split_into_characters(predictor):
    with pytest.raises(TypeError, match="list of texts"):
        predictor.predict("PLASTIC CUPS")


def test_no_texts_no_predictions(predictor):
    assert predictor.predict([]) == []


def test_confidence_is_temperature_scaled_probability(artifact_dir, predictor, facts):
    text = "PLASTIC CUPS AND PLATES"
    raw = load_model(artifact_dir).predict_proba([text])
    t = facts["calibration"]["temperature"]
    logits = np.log(raw) / t
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    (p,) = predictor.predict([text])
    assert p.confidence == pytest.approx(float(expected.max()), rel=1e-6)
    # T > 1 softens: the calibrated confidence is below the raw one, same winner
    assert p.confidence < float(raw.max())


def test_calibration_matches_the_training_formula():
    from hsops.training.calibration import apply_temperature

    proba = np.array([[0.7, 0.2, 0.1], [0.01, 0.98, 0.01], [1.0, 0.0, 0.0]])
    for t in (0.3, 1.0, 2.5):
        np.testing.assert_allclose(Calibration(t).apply(proba), apply_temperature(proba, t), rtol=1e-9)


def test_abstains_below_the_threshold(predictor, facts):
    unsure, sure = predictor.predict([facts["gibberish"], "MOTORCYCLE 125CC"])
    assert unsure.confidence < facts["calibration"]["threshold"] and unsure.abstain is True
    assert sure.confidence >= facts["calibration"]["threshold"] and sure.abstain is False


def test_without_calibration_file_confidence_is_raw_and_nothing_abstains(artifact_dir, facts):
    (artifact_dir / "calibration.json").unlink()
    artifact.write_manifest(artifact_dir, {"kind": "linear"})
    predictor = Predictor.from_dir(artifact_dir, model_version="x@1")
    assert predictor.calibration == Calibration(1.0, 0.0, None)
    (p,) = predictor.predict([facts["gibberish"]])
    raw = load_model(artifact_dir).predict_proba([facts["gibberish"]])
    assert p.confidence == pytest.approx(float(raw.max()), rel=1e-6)
    assert p.abstain is False


def test_explanation_names_terms_of_the_text(predictor):
    (p,) = predictor.predict(["PLASTIC WATER BOTTLES 500ML"], explain=True)
    assert p.explanation, "the linear model explains its answers"
    assert all(e["weight"] > 0 for e in p.explanation)
    sent = "PLASTIC WATER BOTTLES 500ML"
    for e in p.explanation:  # terms are lower-cased words of the text, located in it
        assert sent[e["start"] : e["end"]].lower() == e["term"]
    weights = [e["weight"] for e in p.explanation]
    assert weights == sorted(weights, reverse=True)


def test_a_model_without_contributions_is_explained_by_occlusion(predictor):
    class Opaque:
        kind = "opaque"
        classes_ = predictor.model.classes_

        def predict_proba(self, texts):
            return predictor.model.predict_proba(texts)

    (p,) = Predictor(Opaque(), model_version="opaque@1").predict(["PLASTIC CUPS"], explain=True)
    assert p.hs_code == "392410"
    assert p.explanation and {e["term"] for e in p.explanation} <= {"PLASTIC", "CUPS"}
    assert all("PLASTIC CUPS"[e["start"] : e["end"]] == e["term"] for e in p.explanation)


def test_prediction_is_frozen_and_serialisable(predictor):
    (p,) = predictor.predict(["PLASTIC CUPS"], explain=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.hs_code = "000000"
    assert json.loads(json.dumps(p.to_dict()))["hs_code"] == "392410"
    assert p.to_dict() == dataclasses.asdict(p)  # the hand-written to_dict misses no field


# -- refusing bad artifacts --------------------------------------------------------------------
def test_a_tampered_weight_file_is_refused(artifact_dir):
    weights = artifact_dir / "linear_weights.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"linear_weights\.npz does not match its SHA-256"):
        Predictor.from_dir(artifact_dir, model_version="x@1")


def test_a_tampered_calibration_is_refused(artifact_dir):
    (artifact_dir / "calibration.json").write_text('{"temperature": 1.0, "threshold": 0.0}')
    with pytest.raises(ArtifactError, match="calibration.json"):
        Predictor.from_dir(artifact_dir, model_version="x@1")


def test_an_unlisted_file_is_refused(artifact_dir):
    (artifact_dir / "extra.json").write_text("{}")
    with pytest.raises(ArtifactError, match="not in the manifest"):
        Predictor.from_dir(artifact_dir, model_version="x@1")


def test_a_directory_without_manifest_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Predictor.from_dir(tmp_path, model_version="x@1")


@pytest.mark.parametrize("calibration, match", [
    ({"temperature": 0}, "temperature must be a positive number"),
    ({"temperature": "hot"}, "unreadable calibration"),
    ({"threshold": 1.5}, r"threshold must be within \[0, 1\]"),
])
def test_an_impossible_calibration_is_refused(artifact_dir, calibration, match):
    (artifact_dir / "calibration.json").write_text(json.dumps(calibration))
    artifact.write_manifest(artifact_dir, {"kind": "linear"})  # consistent, but nonsense
    with pytest.raises(ArtifactError, match=match):
        Predictor.from_dir(artifact_dir, model_version="x@1")


# -- from the registry -------------------------------------------------------------------------
def test_from_registry_resolves_the_champion(registered):
    predictor = Predictor.from_registry(registered)
    assert predictor.model_version == "hs-classifier@1"
    assert predictor.predict(["MOTORCYCLE 125CC"])[0].hs_code == "871120"


def test_from_registry_by_name_and_version(registered):
    assert Predictor.from_registry(registered, "hs-classifier@1").model_version == "hs-classifier@1"
    with pytest.raises(ModelNotFound, match="versions: 1"):
        Predictor.from_registry(registered, "hs-classifier@2")


def test_from_registry_without_models_says_to_train(home):
    with pytest.raises(ModelNotFound, match="hsops train"):
        Predictor.from_registry(home)


def test_registry_source_reuses_the_loaded_model_until_the_champion_moves(registered, golden_artifact,
                                                                          registrar):
    source = RegistrySource(registered)
    first = source()
    assert source() is first
    registrar(registered, golden_artifact, "2",
              calibration={"temperature": 1.0, "threshold": 0.99, "target_accuracy": 0.99})
    second = source()
    assert second is not first
    assert second.model_version == "hs-classifier@2" and second.threshold == 0.99
    assert source() is second


def test_registry_source_raises_model_not_found_until_something_is_registered(home, golden_artifact,
                                                                              registrar):
    source = RegistrySource(home)
    with pytest.raises(ModelNotFound):
        source()
    registrar(home, golden_artifact, "1")
    assert source().model_version == "hs-classifier@1"


def test_registry_source_refuses_a_tampered_champion(registered):
    index_file = registered / "registry" / "index.json"
    info = json.loads(index_file.read_text())["models"]["hs-classifier"]["versions"]["1"]
    weights = registered / info["artifact"] / "linear_weights.npz"
    weights.write_bytes(weights.read_bytes()[:-1])
    with pytest.raises(ArtifactError):
        RegistrySource(registered)()


def test_repr_is_readable(predictor):
    assert repr(predictor).startswith("Predictor(model_version='hs-classifier@7', kind='linear', classes=5")


def test_write_index_is_the_registry_contract(home, artifact_dir):
    """Guards the fixture: the index format these tests write is the one resolve() reads."""
    write_index(home, {"models": {"m": {"versions": {"3": {"artifact": f"artifacts/{artifact_dir.name}"}},
                                        "aliases": {"challenger": "3"}}}})
    assert Predictor.from_registry(home, "m@challenger").model_version == "m@3"


def test_explanation_names_each_term_once(predictor):
    (p,) = predictor.predict(["PLASTIC CUPS PLASTIC CUPS"], explain=True)
    terms = [e["term"] for e in p.explanation]
    assert len(terms) == len(set(terms))


# -- hierarchy-aware answers (heading fallback) ------------------------------------------------
class _Fixed:
    """A model with hand-set probabilities over two subheadings of 3924 and one of 8711."""

    kind = "fixed"
    classes_ = np.array(["392410", "392490", "871120"])
    ROWS = {"sure": [0.05, 0.05, 0.90],
            "heading only": [0.46, 0.44, 0.10],
            "unsure": [0.34, 0.33, 0.33],
            "best heading differs": [0.30, 0.25, 0.45]}

    def predict_proba(self, texts):
        return np.array([self.ROWS[t] for t in texts])


def _fixed_predictor(**calibration) -> Predictor:
    return Predictor(_Fixed(), model_version="fixed@1", calibration=Calibration(**calibration))


def test_an_unsure_subheading_under_a_sure_heading_answers_the_heading():
    sure, heading_only, unsure = _fixed_predictor(threshold=0.6, heading_threshold=0.8).predict(
        ["sure", "heading only", "unsure"])
    assert (sure.level, sure.abstain, sure.heading) == ("subheading", False, None)
    assert heading_only.abstain is True and heading_only.level == "heading"
    assert heading_only.hs_code == "392410"  # the subheading fields are unchanged
    assert heading_only.heading == {"code": "3924", "description": nomenclature().text("3924"),
                                    "confidence": pytest.approx(0.90)}
    assert (unsure.level, unsure.abstain, unsure.heading) == ("none", True, None)  # 3924 at 0.67


def test_the_heading_answered_is_the_most_probable_heading_not_the_best_subheadings():
    (p,) = _fixed_predictor(threshold=0.6, heading_threshold=0.5).predict(["best heading differs"])
    assert p.hs_code == "871120" and p.abstain is True
    assert p.level == "heading" and p.heading["code"] == "3924"
    assert p.heading["confidence"] == pytest.approx(0.55)


def test_an_old_calibration_without_heading_threshold_never_falls_back(artifact_dir, facts):
    predictor = Predictor.from_dir(artifact_dir, model_version="x@1")  # the fixture's file has none
    assert predictor.calibration.heading_threshold is None
    unsure, sure = predictor.predict([facts["gibberish"], "MOTORCYCLE 125CC"])
    assert (unsure.abstain, unsure.level, unsure.heading) == (True, "none", None)
    assert (sure.abstain, sure.level, sure.heading) == (False, "subheading", None)
    assert _fixed_predictor(threshold=0.6).predict(["heading only"])[0].level == "none"


def test_a_heading_threshold_is_read_from_the_artifact(artifact_dir, facts):
    calibration = {**facts["calibration"], "threshold": 0.99, "heading_threshold": 0.5}
    (artifact_dir / "calibration.json").write_text(json.dumps(calibration))
    artifact.write_manifest(artifact_dir, {"kind": "linear"})
    clear, gibberish = Predictor.from_dir(artifact_dir, model_version="x@1").predict(
        ["MOTORCYCLE 125CC", facts["gibberish"]])
    assert clear.abstain is True and clear.level == "heading"
    assert clear.heading["code"] == "8711" and clear.heading["description"] == nomenclature().text("8711")
    assert gibberish.level == "none" and gibberish.heading is None


@pytest.mark.parametrize("heading_threshold", [2, "0.5", False])
def test_an_impossible_heading_threshold_is_refused(artifact_dir, heading_threshold):
    (artifact_dir / "calibration.json").write_text(json.dumps({"heading_threshold": heading_threshold}))
    artifact.write_manifest(artifact_dir, {"kind": "linear"})
    with pytest.raises(ArtifactError, match="heading_threshold"):
        Predictor.from_dir(artifact_dir, model_version="x@1")


def test_level_and_heading_are_serialised():
    (p,) = _fixed_predictor(threshold=0.6, heading_threshold=0.8).predict(["heading only"])
    out = json.loads(json.dumps(p.to_dict()))
    assert out["level"] == "heading" and out["heading"]["code"] == "3924"


def test_explanation_spans_point_at_the_words_of_the_text_sent(predictor):
    for sent in ("İZMIR PLASTIC CUPS", "PLASTIC-CUPS  X 40", "plastic water bottles"):
        (p,) = predictor.predict([sent], explain=True)
        for e in p.explanation:
            if "start" in e:
                span = sent[e["start"] : e["end"]].lower()
                assert re.findall(r"[a-z0-9]+", span) == e["term"].split()
