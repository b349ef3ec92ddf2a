"""JSONPath, input/output processing, payload templates and intrinsic functions."""

from __future__ import annotations

import pytest

from hsops.platform.local.asl import paths
from hsops.platform.local.asl.paths import PathError

DATA = {
    "a": {"b": [10, 20, 30], "c d": "spaced", "n": None},
    "items": [{"id": 1, "tag": "x"}, {"id": 2}, {"id": 3, "tag": "z"}],
    "s": "text",
}


@pytest.mark.parametrize("path, expected", [
    ("$", DATA),
    ("$.s", "text"),
    ("$.a.b[1]", 20),
    ("$.a.b[-1]", 30),
    ("$.a['c d']", "spaced"),
    ('$["a"]["b"][0]', 10),
    ("$.a.n", None),
    ("$.items[*].id", [1, 2, 3]),
    ("$.items[*].tag", ["x", "z"]),  # indefinite: absent members are skipped
    ("$.a.b[0:2]", [10, 20]),
    ("$.a.b[1:]", [20, 30]),
    ("$.a.*", [[10, 20, 30], "spaced", None]),
])
def test_get_selects(path, expected):
    assert paths.get(path, DATA) == expected


@pytest.mark.parametrize("path", ["$.missing", "$.a.b[3]", "$.a.b[-4]", "$.s.x", "$.a.b.x"])
def test_get_raises_on_a_missing_definite_path(path):
    with pytest.raises(PathError, match="could not be found"):
        paths.get(path, DATA)


@pytest.mark.parametrize("path", ["a.b", "$.", "$[", "$a", "$.a[x]", "", "$$"])
def test_parse_rejects_malformed_paths(path):
    with pytest.raises(PathError):
        paths.parse_path(path)


def test_context_paths_read_the_context_object():
    context = {"Execution": {"Id": "ex-1"}, "Map": {"Item": {"Index": 4}}}
    assert paths.get("$$.Execution.Id", DATA, context) == "ex-1"
    assert paths.get("$$.Map.Item.Index", DATA, context) == 4
    assert paths.lookup("$$.State.Name", DATA, context) == (False, None)


def test_select_null_means_empty_object():
    assert paths.select(DATA, None) == {}
    assert paths.select(DATA, "$.a.b") == [10, 20, 30]


class TestResultPath:
    def test_dollar_replaces_the_input(self):
        assert paths.apply_result_path({"x": 1}, {"r": 2}, "$") == {"r": 2}

    def test_null_discards_the_result(self):
        assert paths.apply_result_path({"x": 1}, {"r": 2}, None) == {"x": 1}

    def test_nested_path_creates_objects_and_leaves_the_input_alone(self):
        original = {"x": {"y": 1}}
        out = paths.apply_result_path(original, 5, "$.x.z.w")
        assert out == {"x": {"y": 1, "z": {"w": 5}}}
        assert original == {"x": {"y": 1}}

    def test_index_into_existing_array(self):
        assert paths.apply_result_path({"l": [1, 2]}, "b", "$.l[1]") == {"l": [1, "b"]}

    @pytest.mark.parametrize("data, path", [
        ("a string", "$.x"),          # cannot write into a scalar input
        ({"x": "s"}, "$.x.y"),        # nor into a scalar member
        ({"l": [1]}, "$.l[5]"),       # nor past the end of an array
        ({"l": [1]}, "$.l[*]"),       # a wildcard is not a place
    ])
    def test_impossible_places_raise(self, data, path):
        with pytest.raises(PathError):
            paths.apply_result_path(data, 1, path)


class TestTemplates:
    def test_dollar_keys_take_paths_others_are_copied(self):
        template = {
            "literal": "$.not-a-path",
            "value.$": "$.a.b[0]",
            "nested": {"ids.$": "$.items[*].id", "list": [{"s.$": "$.s"}, 3]},
            "exec.$": "$$.Execution.Id",
        }
        out = paths.apply_template(template, DATA, {"Execution": {"Id": "e"}})
        assert out == {
            "literal": "$.not-a-path",
            "value": 10,
            "nested": {"ids": [1, 2, 3], "list": [{"s": "text"}, 3]},
            "exec": "e",
        }

    def test_missing_path_raises(self):
        with pytest.raises(PathError, match=r"\$\.nope"):
            paths.apply_template({"x.$": "$.nope"}, DATA)

    def test_non_path_value_raises(self):
        with pytest.raises(PathError):
            paths.apply_template({"x.$": "plain"}, DATA)

    def test_problems_are_found_statically(self):
        problems = paths.template_problems(
            {"a.$": "$.ok", "b.$": "$[", "c": {"d.$": "States.Nope(1)"}, "e": 1, "e.$": "$"}, "P")
        assert len(problems) == 3
        assert any(p.startswith("P.b.$") for p in problems)
        assert any("States.Nope" in p and p.startswith("P.c.d.$") for p in problems)
        assert any("both 'e' and 'e.$'" in p for p in problems)


class TestIntrinsics:
    def ev(self, expression, data=DATA, context=None):
        return paths.evaluate(expression, data, context)

    def test_format_substitutes_in_order_and_renders_json_scalars(self):
        assert self.ev("States.Format('{} is {} ({}, {})', $.s, $.a.b[0], true, null)") == \
            "text is 10 (true, null)"

    def test_format_escapes(self):
        # in the JSON text of a definition these are written '\\{' and '\\''
        assert self.ev(r"States.Format('\{literal\} {} it\'s', $.s)") == "{literal} text it's"

    def test_format_argument_count_must_match(self):
        with pytest.raises(PathError, match="placeholders"):
            self.ev("States.Format('{} {}', $.s)")
        with pytest.raises(PathError, match="arguments"):
            self.ev("States.Format('{}', $.s, $.s)")

    def test_format_refuses_objects(self):
        with pytest.raises(PathError):
            self.ev("States.Format('{}', $.a)")

    def test_json_round_trip(self):
        assert self.ev("States.JsonToString($.items[0])") == '{"id":1,"tag":"x"}'
        assert self.ev("States.StringToJson($.j)", {"j": '{"k": [1, 2]}'}) == {"k": [1, 2]}
        with pytest.raises(PathError, match="not JSON"):
            self.ev("States.StringToJson($.s)")

    def test_arrays(self):
        assert self.ev("States.Array(1, 'two', $.a.b[2], States.Array())") == [1, "two", 30, []]
        assert self.ev("States.ArrayLength($.a.b)") == 3
        assert self.ev("States.ArrayContains($.a.b, 20)") is True
        assert self.ev("States.ArrayContains($.a.b, 21)") is False
        assert self.ev("States.ArrayContains($.l, 1)", {"l": [True]}) is False  # JSON, not Python
        assert self.ev("States.ArrayGetItem($.a.b, 1)") == 20
        with pytest.raises(PathError):
            self.ev("States.ArrayLength($.s)")

    def test_math_add_and_nesting(self):
        assert self.ev("States.MathAdd($.a.b[0], -3)") == 7
        assert self.ev("States.MathAdd(States.ArrayLength($.items), 1.5)") == 4.5
        with pytest.raises(PathError):
            self.ev("States.MathAdd($.s, 1)")

    def test_context_in_arguments(self):
        assert self.ev("States.Format('run-{}', $$.Execution.Name)", DATA,
                       {"Execution": {"Name": "n1"}}) == "run-n1"

    @pytest.mark.parametrize("expression", [
        "States.Format('x'", "States.Array(1,)", "States.Array(1 2)", "States.Unknown()",
        "States.Array(1) trailing",
    ])
    def test_syntax_errors(self, expression):
        with pytest.raises(PathError):
            paths.parse_intrinsic(expression)


@pytest.mark.parametrize("text, ok", [
    ("2024-01-31T12:00:00Z", True),
    ("2024-01-31T12:00:00.123456789Z", True),
    ("2024-01-31T12:00:00+02:00", True),
    ("2024-01-31t12:00:00Z", False),
    ("2024-02-30T12:00:00Z", False),
    ("2024-01-31 12:00:00Z", False),
    ("2024-01-31T12:00:00", False),
    (12, False),
])
def test_parse_timestamp(text, ok):
    assert (paths.parse_timestamp(text) is not None) is ok


def test_timestamp_round_trip():
    assert paths.format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    moment = paths.parse_timestamp("2024-01-31T12:00:00+02:00")
    assert moment.timestamp() == paths.parse_timestamp("2024-01-31T10:00:00Z").timestamp()
