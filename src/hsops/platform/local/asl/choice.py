"""Choice rules: comparisons, type tests, And/Or/Not, and picking the next state.

A comparison whose Variable (or ``...Path`` operand) is absent is false, and so is one
whose operands are not of the operator's type (``NumericEquals`` on a string, a
``Timestamp...`` on something that is not an RFC 3339 timestamp); only ``IsPresent``
looks at presence itself. Booleans are not numbers here, though they are in Python.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from hsops.platform.local.asl import paths

_ORDER = {
    "Equals": operator.eq,
    "LessThan": operator.lt,
    "GreaterThan": operator.gt,
    "LessThanEquals": operator.le,
    "GreaterThanEquals": operator.ge,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# family -> (is this a value of the family, how to turn it into something comparable)
_FAMILIES: dict[str, tuple[Callable[[Any], bool], Callable[[Any], Any]]] = {
    "String": (lambda v: isinstance(v, str), lambda v: v),
    "Numeric": (_is_number, lambda v: v),
    "Boolean": (lambda v: isinstance(v, bool), lambda v: v),
    "Timestamp": (lambda v: paths.parse_timestamp(v) is not None, paths.parse_timestamp),
}

# operator name -> (family, comparison, whether the operand is a path)
COMPARISONS: dict[str, tuple[str, Callable[[Any, Any], bool], bool]] = {}
for _family in _FAMILIES:
    for _name, _op in _ORDER.items():
        if _family == "Boolean" and _name != "Equals":
            continue  # ASL has BooleanEquals only
        COMPARISONS[f"{_family}{_name}"] = (_family, _op, False)
        COMPARISONS[f"{_family}{_name}Path"] = (_family, _op, True)

TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None,
    "IsNumeric": _is_number,
    "IsString": lambda v: isinstance(v, str),
    "IsBoolean": lambda v: isinstance(v, bool),
    "IsTimestamp": lambda v: paths.parse_timestamp(v) is not None,
}

OPERATORS = frozenset(COMPARISONS) | frozenset(TYPE_TESTS) | {"IsPresent", "StringMatches"}


@lru_cache(maxsize=512)
def _wildcard(pattern: str) -> re.Pattern:
    """``*`` matches any run of characters; ``\\*`` is a literal star, ``\\\\`` a backslash."""
    parts: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        parts.append(".*" if ch == "*" else re.escape(ch))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def _operator(rule: dict) -> str:
    found = [key for key in rule if key in OPERATORS]
    if len(found) != 1:
        raise ValueError(f"a Choice rule needs exactly one comparison operator, found {found}")
    return found[0]


def evaluate(rule: dict, data: Any, context: Any = None) -> bool:
    """Whether ``rule`` holds for ``data`` (the Choice state's effective input)."""
    if "And" in rule:
        return all(evaluate(sub, data, context) for sub in rule["And"])
    if "Or" in rule:
        return any(evaluate(sub, data, context) for sub in rule["Or"])
    if "Not" in rule:
        return not evaluate(rule["Not"], data, context)
    name = _operator(rule)
    expected = rule[name]
    present, value = paths.lookup(rule["Variable"], data, context)
    if name == "IsPresent":
        return present == expected
    if not present:
        return False
    if name in TYPE_TESTS:
        return TYPE_TESTS[name](value) == expected
    if name == "StringMatches":
        return isinstance(value, str) and _wildcard(expected).fullmatch(value) is not None
    family, compare, is_path = COMPARISONS[name]
    if is_path:
        present, expected = paths.lookup(expected, data, context)
        if not present:
            return False
    is_member, comparable = _FAMILIES[family]
    if not (is_member(value) and is_member(expected)):
        return False
    return compare(comparable(value), comparable(expected))


def choose(state: dict, data: Any, context: Any = None) -> str | None:
    """The Next of the first matching choice, else the Default (None when there is none)."""
    for rule in state["Choices"]:
        if evaluate(rule, data, context):
            return rule["Next"]
    return state.get("Default")


def rule_problems(rule: Any, where: str, *, top: bool) -> list[str]:
    """Structural problems of one rule; ``top`` rules carry a Next, nested ones must not."""
    if not isinstance(rule, dict):
        return [f"{where}: a Choice rule must be an object"]
    problems: list[str] = []
    if top and not isinstance(rule.get("Next"), str):
        problems.append(f"{where}: a top-level Choice rule needs a Next")
    if not top and "Next" in rule:
        problems.append(f"{where}: a nested Choice rule cannot have a Next")
    combinators = [key for key in ("And", "Or", "Not") if key in rule]
    if combinators:
        if len(combinators) > 1 or "Variable" in rule or any(k in OPERATORS for k in rule):
            return problems + [f"{where}: mixes {combinators} with other operators"]
        key = combinators[0]
        if key == "Not":
            return problems + rule_problems(rule["Not"], f"{where}.Not", top=False)
        subs = rule[key]
        if not isinstance(subs, list) or not subs:
            return problems + [f"{where}.{key}: must be a non-empty list of rules"]
        for i, sub in enumerate(subs):
            problems += rule_problems(sub, f"{where}.{key}[{i}]", top=False)
        return problems
    try:
        name = _operator(rule)
    except ValueError as exc:
        return problems + [f"{where}: {exc}"]
    problems += _path_problem(rule.get("Variable"), f"{where}.Variable")
    value = rule[name]
    if name in TYPE_TESTS or name == "IsPresent":
        ok = isinstance(value, bool)
    elif name == "StringMatches":
        ok = isinstance(value, str)
    elif COMPARISONS[name][2]:
        return problems + _path_problem(value, f"{where}.{name}")
    else:
        ok = _FAMILIES[COMPARISONS[name][0]][0](value)
    if not ok:
        problems.append(f"{where}.{name}: {value!r} is not a valid operand")
    return problems


def _path_problem(path: Any, where: str) -> list[str]:
    try:
        if not isinstance(path, str):
            raise paths.PathError("a path is required")
        paths.parse_path(path[1:] if path.startswith("$$") else path)
    except paths.PathError as exc:
        return [f"{where}: {exc}"]
    return []
