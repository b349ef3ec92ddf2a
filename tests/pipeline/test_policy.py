"""Candidates and gate policy are checked before a run starts."""

from __future__ import annotations

import math

import pytest

from hsops.pipeline.policy import POLICY, check_candidates, check_policy, default_policy


def test_defaults_are_within_their_own_ranges():
    assert check_policy(default_policy()) == default_policy()
    assert set(default_policy()) == set(POLICY)


@pytest.mark.parametrize("policy, message", [
    ({"min_rows": math.nan}, "finite"), ({"min_rows": math.inf}, "finite"), ({"min_rows": "10"}, "finite"),
    ({"min_rows": True}, "finite"), ({"deploy_delay_seconds": -5}, "between"),
    ({"max_quarantine_share": 1.5}, "between"), ({"rm_rf": 1}, "unknown policy key"),
])
def test_bad_policies_are_refused_with_the_key(policy, message):
    with pytest.raises(ValueError, match=message):
        check_policy(policy)


def test_candidates_are_checked_against_the_model_classes():
    assert check_candidates(["linear", {"kind": "svc", "params": {"epochs": 3}}]) == [
        {"kind": "linear"}, {"kind": "svc", "params": {"epochs": 3}}]
    for bad, message in [([], "1 to"), ([{"kind": "nope"}], "unknown model kind"),
                         ([{"kind": "linear", "params": {"epochs": "x"}}], "candidate 0 \\(linear\\)"),
                         ([{"kind": "linear", "params": {"no_such": 1}}], "no hyper-parameter"),
                         ([{"kind": "linear", "evil": 1}], "unknown field"),
                         ([{"kind": "linear", "target_accuracy": 2}], "target_accuracy"),
                         (["linear"] * 9, "1 to 8"), ([3], "object or a model kind")]:
        with pytest.raises(ValueError, match=message):
            check_candidates(bad)
