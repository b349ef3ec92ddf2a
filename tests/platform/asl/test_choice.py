"""Choice rules: every operator family, Path variants, type tests, combinators."""

from __future__ import annotations

import pytest

from hsops.platform.local.asl.choice import (
    COMPARISONS,
    OPERATORS,
    choose,
    evaluate,
    rule_problems,
)

DATA = {
    "s": "banana", "n": 5, "f": 2.5, "b": True, "t": "2024-01-31T12:00:00Z", "z": None,
    "other_s": "cherry", "other_n": 5, "other_b": True, "other_t": "2024-02-01T00:00:00Z",
    "star": "a*b", "path": "C:\\dir", "zero": 0, "flag_false": False,
}


def rule(op, value, variable="$.s"):
    return {"Variable": variable, op: value}


@pytest.mark.parametrize("op, value, variable, expected", [
    ("StringEquals", "banana", "$.s", True),
    ("StringEquals", "Banana", "$.s", False),
    ("StringLessThan", "cherry", "$.s", True),
    ("StringLessThan", "apple", "$.s", False),
    ("StringGreaterThan", "apple", "$.s", True),
    ("StringLessThanEquals", "banana", "$.s", True),
    ("StringGreaterThanEquals", "banana", "$.s", True),
    ("StringGreaterThanEquals", "bananas", "$.s", False),
    ("NumericEquals", 5, "$.n", True),
    ("NumericEquals", 5.0, "$.n", True),
    ("NumericLessThan", 3, "$.f", True),
    ("NumericGreaterThan", 5, "$.n", False),
    ("NumericLessThanEquals", 5, "$.n", True),
    ("NumericGreaterThanEquals", 6, "$.n", False),
    ("BooleanEquals", True, "$.b", True),
    ("BooleanEquals", False, "$.b", False),
    ("BooleanEquals", False, "$.flag_false", True),
    ("TimestampEquals", "2024-01-31T14:00:00+02:00", "$.t", True),  # same instant
    ("TimestampLessThan", "2024-02-01T00:00:00Z", "$.t", True),
    ("TimestampGreaterThan", "2024-02-01T00:00:00Z", "$.t", False),
    ("TimestampLessThanEquals", "2024-01-31T12:00:00Z", "$.t", True),
    ("TimestampGreaterThanEquals", "2024-01-31T12:00:00.001Z", "$.t", False),
])
def test_literal_comparisons(op, value, variable, expected):
    assert evaluate(rule(op, value, variable), DATA) is expected


@pytest.mark.parametrize("op, variable, other, expected", [
    ("StringEqualsPath", "$.s", "$.other_s", False),
    ("StringLessThanPath", "$.s", "$.other_s", True),
    ("StringGreaterThanPath", "$.s", "$.other_s", False),
    ("StringLessThanEqualsPath", "$.s", "$.s", True),
    ("StringGreaterThanEqualsPath", "$.other_s", "$.s", True),
    ("NumericEqualsPath", "$.n", "$.other_n", True),
    ("NumericLessThanPath", "$.f", "$.n", True),
    ("NumericGreaterThanPath", "$.f", "$.n", False),
    ("NumericLessThanEqualsPath", "$.n", "$.other_n", True),
    ("NumericGreaterThanEqualsPath", "$.f", "$.n", False),
    ("BooleanEqualsPath", "$.b", "$.other_b", True),
    ("BooleanEqualsPath", "$.flag_false", "$.b", False),
    ("TimestampEqualsPath", "$.t", "$.other_t", False),
    ("TimestampLessThanPath", "$.t", "$.other_t", True),
    ("TimestampGreaterThanPath", "$.other_t", "$.t", True),
    ("TimestampLessThanEqualsPath", "$.t", "$.t", True),
    ("TimestampGreaterThanEqualsPath", "$.t", "$.other_t", False),
])
def test_path_comparisons(op, variable, other, expected):
    assert evaluate(rule(op, other, variable), DATA) is expected


def test_every_comparison_is_covered():
    families = {"String", "Numeric", "Timestamp"}
    orders = {"Equals", "LessThan", "GreaterThan", "LessThanEquals", "GreaterThanEquals"}
    expected = {f"{f}{o}{p}" for f in families for o in orders for p in ("", "Path")}
    expected |= {"BooleanEquals", "BooleanEqualsPath"}
    assert set(COMPARISONS) == expected
    assert OPERATORS == expected | {"StringMatches", "IsNull", "IsPresent", "IsNumeric",
                                    "IsString", "IsBoolean", "IsTimestamp"}


@pytest.mark.parametrize("op, value, variable", [
    ("NumericEquals", 5, "$.s"),          # string compared as a number
    ("StringEquals", "5", "$.n"),         # number compared as a string
    ("NumericEquals", 1, "$.b"),          # a boolean is not a number
    ("BooleanEquals", False, "$.zero"),   # nor is 0 a boolean
    ("TimestampEquals", "2024-01-31T12:00:00Z", "$.s"),  # not a timestamp
    ("StringEqualsPath", "$.n", "$.s"),   # other side of the wrong type
    ("NumericEqualsPath", "$.missing", "$.n"),  # other side missing
])
def test_type_mismatch_is_false(op, value, variable):
    assert evaluate(rule(op, value, variable), DATA) is False


@pytest.mark.parametrize("op, value", [
    ("StringEquals", "x"), ("NumericLessThan", 1), ("IsNull", True), ("IsNull", False),
    ("IsString", False), ("StringMatches", "*"), ("BooleanEquals", False),
])
def test_missing_variable_is_false(op, value):
    assert evaluate(rule(op, value, "$.missing"), DATA) is False


def test_is_present():
    assert evaluate(rule("IsPresent", True, "$.z"), DATA) is True  # present, though null
    assert evaluate(rule("IsPresent", False, "$.missing"), DATA) is True
    assert evaluate(rule("IsPresent", True, "$.missing"), DATA) is False


@pytest.mark.parametrize("op, variable, expected", [
    ("IsNull", "$.z", True), ("IsNull", "$.s", False),
    ("IsNumeric", "$.n", True), ("IsNumeric", "$.f", True), ("IsNumeric", "$.b", False),
    ("IsString", "$.s", True), ("IsString", "$.n", False),
    ("IsBoolean", "$.b", True), ("IsBoolean", "$.zero", False),
    ("IsTimestamp", "$.t", True), ("IsTimestamp", "$.s", False),
])
def test_type_tests(op, variable, expected):
    assert evaluate(rule(op, True, variable), DATA) is expected
    assert evaluate(rule(op, False, variable), DATA) is (not expected)


@pytest.mark.parametrize("pattern, variable, expected", [
    ("ban*", "$.s", True),
    ("*ana", "$.s", True),
    ("b*n*a", "$.s", True),
    ("*x*", "$.s", False),
    ("banana", "$.s", True),
    ("bana", "$.s", False),  # the whole string must match
    ("a\\*b", "$.star", True),  # \* is a literal star
    ("a\\*b", "$.s", False),
    ("aXb", "$.star", False),
    ("C:\\\\*", "$.path", True),  # \\ is a literal backslash
    ("ba.ana", "$.s", False),  # regex characters are literal
    ("*", "$.n", False),  # not a string
])
def test_string_matches(pattern, variable, expected):
    assert evaluate(rule("StringMatches", pattern, variable), DATA) is expected


def test_combinators():
    yes, no = rule("StringEquals", "banana"), rule("NumericEquals", 6, "$.n")
    assert evaluate({"And": [yes, yes]}, DATA) is True
    assert evaluate({"And": [yes, no]}, DATA) is False
    assert evaluate({"Or": [no, yes]}, DATA) is True
    assert evaluate({"Or": [no, no]}, DATA) is False
    assert evaluate({"Not": no}, DATA) is True
    assert evaluate({"Not": {"And": [yes, {"Not": no}]}}, DATA) is False
    assert evaluate({"Not": rule("StringEquals", "x", "$.missing")}, DATA) is True


def test_context_variable():
    assert evaluate(rule("StringEquals", "e1", "$$.Execution.Id"), {}, {"Execution": {"Id": "e1"}})


def test_choose_first_match_then_default():
    state = {"Choices": [
        {**rule("NumericGreaterThan", 10, "$.n"), "Next": "Big"},
        {**rule("NumericGreaterThan", 1, "$.n"), "Next": "Medium"},
        {**rule("NumericGreaterThan", 0, "$.n"), "Next": "Small"},
    ], "Default": "Other"}
    assert choose(state, {"n": 5}) == "Medium"
    assert choose(state, {"n": 50}) == "Big"
    assert choose(state, {"n": -1}) == "Other"
    assert choose({"Choices": state["Choices"]}, {"n": -1}) is None


@pytest.mark.parametrize("bad, fragment", [
    ({"Variable": "$.x", "Next": "A"}, "exactly one comparison operator"),
    ({"Variable": "$.x", "StringEquals": "a", "NumericEquals": 1, "Next": "A"}, "exactly one"),
    ({"Variable": "$.x", "NumericEquals": "1", "Next": "A"}, "not a valid operand"),
    ({"Variable": "$.x", "TimestampEquals": "yesterday", "Next": "A"}, "not a valid operand"),
    ({"Variable": "$.x", "IsNull": "yes", "Next": "A"}, "not a valid operand"),
    ({"Variable": "$.x", "StringEqualsPath": "nope", "Next": "A"}, "StringEqualsPath"),
    ({"Variable": "x", "StringEquals": "a", "Next": "A"}, "Variable"),
    ({"StringEquals": "a", "Next": "A"}, "Variable"),
    ({"Variable": "$.x", "StringEquals": "a"}, "needs a Next"),
    ({"And": [], "Next": "A"}, "non-empty"),
    ({"And": [{"Variable": "$.x", "StringEquals": "a", "Next": "B"}], "Next": "A"},
     "nested Choice rule cannot have a Next"),
    ({"Not": {"Variable": "$.x"}, "Next": "A"}, "Choices[0].Not"),
])
def test_rule_problems(bad, fragment):
    problems = rule_problems(bad, "Choices[0]", top=True)
    assert problems and any(fragment in p for p in problems), problems


def test_good_rules_have_no_problems():
    good = {"And": [rule("StringMatches", "a*"), {"Not": rule("IsNull", True)},
                    rule("TimestampLessThanPath", "$.t")], "Next": "A"}
    assert rule_problems(good, "Choices[0]", top=True) == []
