"""What a pipeline run may be asked to do: its candidate models and its gate policy.

Checked where a run is requested (API, CLI, ``pipeline.json``), before any work starts,
so a bad value is a clear 4xx or error message instead of a run that fails (or worse,
registers a model and then fails) halfway.
"""

from __future__ import annotations

import math

# key -> (default, lowest, highest); all numbers
POLICY = {
    "min_improvement": (0.0, -1.0, 1.0),              # HS6 top-1 gain over the champion (0.01 = 1 point)
    "max_cost_per_million_usd": (5.0, 0.0, 1e6),      # serving cost budget, one description per request
    "deploy_delay_seconds": (0, 0, 86_400),           # grace period before the alias moves
    "min_rows": (50, 1, 1e9),                         # fewer accepted rows cannot train anything useful
    "max_quarantine_share": (0.5, 0.0, 1.0),          # more bad rows suggests the wrong file or columns
    "min_classes": (2, 2, 1e6),
    "min_test_rows": (10, 1, 1e9),                    # the gate compares models on the test split
}
DEFAULT_CANDIDATES = [{"kind": "linear", "upsample": True}, {"kind": "svc"}]
CANDIDATE_KEYS = {"kind", "params", "upsample", "target_accuracy"}
MAX_CANDIDATES = 8


def default_policy() -> dict:
    return {key: default for key, (default, _, _) in POLICY.items()}


def check_policy(policy: dict | None) -> dict:
    """The policy's values as numbers; ValueError naming the key for an unknown key, a
    value that is not a finite number, or one out of range."""
    if policy is None:
        return {}
    if not isinstance(policy, dict):
        raise ValueError(f"policy must be an object, got {type(policy).__name__}")
    out = {}
    for key, value in policy.items():
        if key not in POLICY:
            raise ValueError(f"unknown policy key {key!r}; known: {sorted(POLICY)}")
        _, low, high = POLICY[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"policy {key} must be a finite number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"policy {key} must be between {low:g} and {high:g}, got {value!r}")
        out[key] = value
    return out


def check_candidates(candidates: list | None) -> list[dict]:
    """Candidates as dicts, each with a known model kind and hyper-parameters its class
    accepts; ValueError saying which candidate is wrong and why."""
    from hsops.models.base import check_params, model_class, model_kinds

    if candidates is None:
        return []
    if not isinstance(candidates, list) or not 1 <= len(candidates) <= MAX_CANDIDATES:
        raise ValueError(f"candidates must be a list of 1 to {MAX_CANDIDATES} models")
    out = []
    for i, candidate in enumerate(candidates):
        candidate = {"kind": candidate} if isinstance(candidate, str) else candidate
        if not isinstance(candidate, dict):
            raise ValueError(f"candidate {i} must be an object or a model kind")
        unknown = sorted(set(candidate) - CANDIDATE_KEYS)
        if unknown:
            raise ValueError(f"candidate {i}: unknown field(s) {unknown}; known: {sorted(CANDIDATE_KEYS)}")
        kind = candidate.get("kind")
        if kind not in model_kinds():
            raise ValueError(f"candidate {i}: unknown model kind {kind!r}; known: {sorted(model_kinds())}")
        params = candidate.get("params") or {}
        if not isinstance(params, dict):
            raise ValueError(f"candidate {i}: params must be an object")
        try:
            check_params(model_class(kind), dict(params))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"candidate {i} ({kind}): {exc}") from None
        target = candidate.get("target_accuracy")
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                                   or not 0 < target < 1):
            raise ValueError(f"candidate {i}: target_accuracy must be between 0 and 1")
        try:
            from hsops.training.train import upsample_options

            upsample_options(candidate.get("upsample", False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"candidate {i}: upsample: {exc}") from None
        out.append(dict(candidate))
    return out
