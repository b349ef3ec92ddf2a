"""Training stage handlers: train one candidate, evaluate one model on a test split."""

from __future__ import annotations

from pathlib import Path

from hsops.pipeline.handlers._common import BadEvent, home_of, home_relative, inside_home, require

PROBE_TEXTS = 1000  # test descriptions the serving-cost probe times (enough for a stable p50)


def train(event: dict, context) -> dict:
    """``{"candidate": {"kind", "params"?, "upsample"?, "target_accuracy"?}, "dataset_version"}``
    -> the TrainResult as JSON, with the artifact path relative to HSOPS_HOME.

    Idempotent: the same data, kind and parameters give the same content-addressed
    artifact; the artifact is renamed into place only when complete, so a worker killed
    mid-training leaves nothing a later step could pick up."""
    from hsops.data.datasets import load_dataset
    from hsops.models.base import check_params, model_class
    from hsops.pipeline.policy import check_candidates
    from hsops.training.train import DEFAULT_TARGET_ACCURACY
    from hsops.training.train import train as train_model

    try:
        [candidate] = check_candidates([require(event, "candidate", (dict, str))])
    except ValueError as exc:
        raise BadEvent(str(exc)) from None
    kind = candidate["kind"]
    params = check_params(model_class(kind), dict(candidate.get("params") or {}))
    home = home_of(context)
    dataset = load_dataset(home, require(event, "dataset_version"))
    result = train_model(dataset, home, kind=kind, params=params,
                         target_accuracy=float(candidate.get("target_accuracy") or DEFAULT_TARGET_ACCURACY),
                         upsample=candidate.get("upsample") or False)
    out = result.to_dict()
    out["artifact_dir"] = home_relative(home, result.artifact_dir)
    out["history"] = out["history"][-50:]  # the payload stays small; the artifact has it all
    return out


def evaluate(event: dict, context) -> dict:
    """``{"model": "champion" | {"artifact_dir", "kind", ...}, "dataset_version"}`` -> metrics on
    the test split and the serving cost, or ``{"present": false}`` when there is no champion.

    Candidates and champion are scored by this one function on the same rows, so the
    gate compares like with like."""
    from hsops.data.datasets import load_dataset
    from hsops.registry.index import ModelNotFound, resolve
    from hsops.serving.probe import cost_per_million, serving_probe
    from hsops.training.model_io import evaluate_artifact

    home = home_of(context)
    model = require(event, "model", (dict, str))
    if isinstance(model, str):
        try:
            resolved = resolve(home, model)
        except ModelNotFound:
            return {"present": False, "label": model}
        artifact_dir, label = Path(resolved.artifact_dir), resolved.label
        info = {"version": resolved.version, "kind": resolved.info.get("kind")}
    else:
        artifact_dir = inside_home(home, require(model, "artifact_dir"))
        label, info = f"candidate {model.get('kind')}", {"version": None, "kind": model.get("kind")}
    version = require(event, "dataset_version")
    texts, labels = load_dataset(home, version).part("test")
    if not texts:
        raise BadEvent(f"dataset {version} has no test rows to evaluate on")
    metrics = evaluate_artifact(artifact_dir, texts, labels)
    serving = serving_probe(artifact_dir, texts[:PROBE_TEXTS])
    cost = cost_per_million(serving)
    keep = ("n", "hs6_top1", "hs6_top5", "hs4_top1", "hs2_top1", "macro_f1", "coverage_at_target",
            "accuracy_at_target", "coverage_at_precision")
    return {"present": True, "label": label, **info, "artifact_dir": home_relative(home, artifact_dir),
            "dataset_version": version, "metrics": {k: metrics[k] for k in keep if k in metrics},
            "serving": {k: serving[k] for k in ("single_p50_ms", "single_p99_ms", "batch256_ms", "peak_rss_mib",
                                                 "cold_load_s")},
            "cost_per_million_usd": cost["one_line_per_request"], "cost": cost}
