"""Release stage handlers: compare against the champion, register, deploy, notify."""

from __future__ import annotations

import logging

from hsops.pipeline.handlers._common import BadEvent, backend_of, home_of, inside_home, require

NOTIFICATIONS = "pipeline.notifications"  # the queue a finished run is announced on
log = logging.getLogger("hsops.pipeline")


def compare(event: dict, context) -> dict:
    """Pick the best candidate (HS6 top-1 on the test split, then the cheaper); decide whether
    it beats the champion by more than ``policy.min_improvement``, beats the challenger it
    would replace, and fits the cost budget. The Gate state branches on
    ``better_than_champion``, ``better_than_challenger`` and ``cost_per_million_usd``."""
    candidates = [c for c in require(event, "candidates", list) if isinstance(c, dict) and c.get("present", True)]
    if not candidates:
        raise BadEvent("no candidate was evaluated")
    champion = event.get("champion") or {"present": False}
    policy = event.get("policy") or {}
    min_improvement = float(policy.get("min_improvement", 0.0))
    budget = float(policy.get("max_cost_per_million_usd", float("inf")))
    best = max(candidates, key=lambda c: (c["metrics"]["hs6_top1"], -c["cost_per_million_usd"]))
    top1 = best["metrics"]["hs6_top1"]
    if not champion.get("present"):
        better, improvement = True, None
        reason = f"no champion yet; best candidate {best.get('kind')} scores {top1:.1%} HS6 top-1"
    else:
        improvement = 100 * (top1 - champion["metrics"]["hs6_top1"])
        same = best.get("artifact_dir") == champion.get("artifact_dir")
        better = not same and improvement > 100 * min_improvement
        reason = (f"best candidate {best.get('kind')} {top1:.1%} vs champion v{champion.get('version')} "
                  f"{champion['metrics']['hs6_top1']:.1%} HS6 top-1 on the same test split "
                  f"({improvement:+.2f} points; required > {100 * min_improvement:+.2f})"
                  + ("; it is the champion's own artifact" if same else ""))
    challenger = event.get("challenger") or {"present": False}
    better_than_challenger = True
    if challenger.get("present") and challenger.get("artifact_dir") != (champion or {}).get("artifact_dir"):
        # it would replace the challenger under test: only a better model may
        beaten = challenger["metrics"]["hs6_top1"]
        better_than_challenger = best.get("artifact_dir") != challenger.get("artifact_dir") and top1 > beaten
        if better:
            reason += (f"; vs the current challenger v{challenger.get('version')} {beaten:.1%}: "
                       + ("better" if better_than_challenger else "not better, it stays under test"))
    cost = float(best["cost_per_million_usd"])
    within_budget = cost <= budget
    if not within_budget:
        reason += f"; serving cost {cost:.3f} USD per million predictions is over the budget of {budget}"
    return {"best": best, "champion": champion if champion.get("present") else None,
            "challenger": challenger if challenger.get("present") else None,
            "better_than_champion": better, "better_than_challenger": better_than_challenger,
            "improvement_points": improvement,
            "cost_per_million_usd": cost, "within_budget": within_budget, "reason": reason}


def register(event: dict, context) -> dict:
    """Register the winning candidate's artifact with lineage; the version (idempotent:
    a registered artifact returns its existing version)."""
    from hsops.registry.mlflow_registry import Registry
    from hsops.training.train import TrainResult

    home = home_of(context)
    decision = require(event, "decision", dict)
    best_dir = require(require(decision, "best", dict), "artifact_dir")
    trained = next((t for t in require(event, "trained", list) if t.get("artifact_dir") == best_dir), None)
    if trained is None:
        raise BadEvent(f"the chosen artifact {best_dir} is not among the trained candidates")
    fields = {k: trained.get(k) for k in TrainResult.__dataclass_fields__}
    fields["artifact_dir"] = inside_home(home, best_dir)
    result = TrainResult(**fields)
    tags = {"pipeline_execution": event.get("execution") or "", "trigger": "pipeline"}
    metrics = {"cost_per_million_usd": decision["cost_per_million_usd"]}
    if decision.get("improvement_points") is not None:
        metrics["improvement_over_champion_points"] = decision["improvement_points"]
    version = Registry(home).register(result, alias=None, tags=tags, metrics=metrics)
    return {"version": version, "artifact": best_dir}


def deploy(event: dict, context) -> dict:
    """Point ``challenger`` at the version (``champion`` when nothing is champion yet), so
    the A/B stage tests it against live traffic. An alias already there is left alone."""
    from hsops.registry.index import DEFAULT_MODEL, read_index
    from hsops.registry.mlflow_registry import Registry

    home = home_of(context)
    version = str(require(event, "version", (str, int)))
    aliases = read_index(home).get("models", {}).get(DEFAULT_MODEL, {}).get("aliases", {})
    if aliases.get("champion") == version:
        return {"outcome": "deployed", "alias": "champion", "version": version, "changed": False}
    alias = "challenger" if "champion" in aliases else "champion"
    changed = aliases.get(alias) != version
    if changed:
        decision = event.get("decision") or {}
        Registry(home).set_alias(alias, version, reason=f"pipeline {event.get('execution')}: "
                                 f"{decision.get('reason', 'passed the gate')}")
    return {"outcome": "deployed", "alias": alias, "version": version, "changed": changed}


def notify(event: dict, context) -> dict:
    """Announce the end of a run on the ``pipeline.notifications`` queue (once per run and
    outcome, however often this is delivered) and in the log."""
    execution = require(event, "execution")
    outcome = event.get("outcome") or {}
    body = {"type": "pipeline.finished", "execution": execution, "outcome": outcome.get("outcome"),
            "alias": outcome.get("alias"), "version": outcome.get("version"),
            "reason": outcome.get("reason") or (event.get("comparison") or {}).get("decision", {}).get("reason"),
            "error": event.get("error"), "source": event.get("source")}
    backend_of(context).events.publish(NOTIFICATIONS, body, dedup_key=f"{execution}:{body['outcome']}")
    log.info("pipeline %s finished: %s", execution, body["outcome"])
    return {"notified": True, "queue": NOTIFICATIONS}

