"""Data flow of the Amazon States Language: JSONPath, payload templates, intrinsics.

A state's input becomes its output through ``InputPath -> Parameters -> (work) ->
ResultSelector -> ResultPath -> OutputPath``; ``select``, ``apply_template`` and
``apply_result_path`` are those steps. ``$$`` reads the context object (Execution,
StateMachine, State, Map.Item) instead of the state's input.

JSONPath is a subset, enough for state machines: ``.name``, ``['name']``, ``[n]``
(negative counts from the end), ``[*]`` / ``.*`` and slices ``[a:b]``. A path without a
wildcard or slice selects one value and raises ``PathError`` when it is absent; one with
them selects a list of whatever matched, as Step Functions does.

Every failure raises ``PathError``: the interpreter turns it into ``States.Runtime``.
"""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any


class PathError(Exception):
    """A path, template or intrinsic function that cannot be applied to this data."""


# ---------------------------------------------------------------- JSONPath

_SEGMENT = re.compile(
    r"""
      (?P<wild>\.\*|\[\s*\*\s*\])
    | \.(?P<name>[^.\[\]\s]+)
    | \[\s*'(?P<sq>(?:[^'\\]|\\.)*)'\s*\]
    | \[\s*"(?P<dq>(?:[^"\\]|\\.)*)"\s*\]
    | \[\s*(?P<index>-?\d+)\s*\]
    | \[\s*(?P<start>-?\d*)\s*:\s*(?P<stop>-?\d*)\s*\]
    """,
    re.VERBOSE,
)


@lru_cache(maxsize=2048)
def parse_path(path: str) -> tuple[tuple, ...]:
    """``'$.a[0]'`` -> ``(('key', 'a'), ('index', 0))``; ``$`` alone is the empty tuple."""
    if not isinstance(path, str) or not path.startswith("$") or path.startswith("$$"):
        raise PathError(f"{path!r} is not a JSONPath (it must start with '$')")
    segments: list[tuple] = []
    pos = 1
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise PathError(f"invalid JSONPath {path!r} at character {pos}")
        if m["wild"]:
            segments.append(("wild",))
        elif m["name"] is not None:
            segments.append(("key", m["name"]))
        elif m["sq"] is not None or m["dq"] is not None:
            quoted = m["sq"] if m["sq"] is not None else m["dq"]
            segments.append(("key", re.sub(r"\\(.)", r"\1", quoted)))
        elif m["index"] is not None:
            segments.append(("index", int(m["index"])))
        else:
            start = int(m["start"]) if m["start"] else None
            stop = int(m["stop"]) if m["stop"] else None
            segments.append(("slice", start, stop))
        pos = m.end()
    return tuple(segments)


def is_definite(path: str) -> bool:
    return all(seg[0] in ("key", "index") for seg in parse_path(path))


def get(path: str, data: Any, context: Any = None) -> Any:
    """The value ``path`` selects; ``$$...`` paths read ``context``."""
    if isinstance(path, str) and path.startswith("$$"):
        return get(path[1:], context if context is not None else {})
    segments = parse_path(path)
    definite = all(seg[0] in ("key", "index") for seg in segments)
    values = [data]
    for seg in segments:
        found: list[Any] = []
        for value in values:
            kind = seg[0]
            if kind in ("key", "index") and _has(value, seg[1]):
                found.append(value[seg[1]])
            elif kind == "wild" and isinstance(value, dict):
                found.extend(value.values())
            elif kind == "wild" and isinstance(value, list):
                found.extend(value)
            elif kind == "slice" and isinstance(value, list):
                found.extend(value[seg[1]:seg[2]])
        if definite and not found:
            raise PathError(f"the JSONPath {path!r} could not be found in the input")
        values = found
    return values[0] if definite else values


def _has(value: Any, where: str | int) -> bool:
    if isinstance(where, str):
        return isinstance(value, dict) and where in value
    return isinstance(value, list) and -len(value) <= where < len(value)


def lookup(path: str, data: Any, context: Any = None) -> tuple[bool, Any]:
    """``(True, value)`` when ``path`` is present, ``(False, None)`` when it is not."""
    try:
        return True, get(path, data, context)
    except PathError:
        return False, None


def select(data: Any, path: str | None, context: Any = None) -> Any:
    """InputPath / OutputPath / ItemsPath: ``None`` (JSON null) means ``{}``."""
    if path is None:
        return {}
    return get(path, data, context)


def apply_result_path(state_input: Any, result: Any, path: str | None) -> Any:
    """Where the result goes in the state's input. ``$`` replaces the input, ``None``
    discards the result; anything else writes into a copy (the input may be a stored
    or shared value, never mutated), creating missing objects on the way."""
    if path is None:
        return state_input
    segments = parse_path(path)
    if not segments:
        return result
    if not is_definite(path):
        raise PathError(f"ResultPath {path!r} must select a single place (no wildcard or slice)")
    if not isinstance(state_input, (dict, list)):
        raise PathError(f"cannot apply ResultPath {path!r} to a {type(state_input).__name__} input")
    root = copy.deepcopy(state_input)
    node = root
    for i, (kind, where) in enumerate(segments):
        last = i == len(segments) - 1
        if kind == "key":
            if not isinstance(node, dict):
                raise PathError(f"ResultPath {path!r}: {where!r} is not inside an object")
            if last:
                node[where] = result
            else:
                node = node.setdefault(where, {})
        else:
            if not isinstance(node, list) or not -len(node) <= where < len(node):
                raise PathError(f"ResultPath {path!r}: index {where} is not in an array")
            if last:
                node[where] = result
            else:
                node = node[where]
    return root


# ---------------------------------------------------------------- templates


def apply_template(template: Any, data: Any, context: Any = None) -> Any:
    """Parameters / ItemSelector / ResultSelector: a key ending in ``.$`` takes the
    value of a path or intrinsic function, other values are copied (recursively)."""
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                if not isinstance(value, str):
                    raise PathError(f"the value of {key!r} must be a path or intrinsic function")
                out[key[:-2]] = evaluate(value, data, context)
            else:
                out[key] = apply_template(value, data, context)
        return out
    if isinstance(template, list):
        return [apply_template(item, data, context) for item in template]
    return template


def evaluate(expression: str, data: Any, context: Any = None) -> Any:
    """The value of a ``.$`` field: a path (``$...``, ``$$...``) or ``States.Fn(...)``."""
    if expression.startswith("$"):
        return get(expression, data, context)
    if expression.startswith("States."):
        return _eval(parse_intrinsic(expression), data, context)
    raise PathError(f"{expression!r} is neither a path nor an intrinsic function")


def template_problems(template: Any, where: str) -> list[str]:
    """Static checks of a template, for validation: each ``.$`` value must parse."""
    problems: list[str] = []
    if isinstance(template, dict):
        for key, value in template.items():
            if key.endswith(".$"):
                if key[:-2] in template:
                    problems.append(f"{where}: both {key[:-2]!r} and {key!r} are given")
                try:
                    if not isinstance(value, str):
                        raise PathError(f"the value of {key!r} must be a string")
                    if value.startswith("$$"):
                        parse_path(value[1:])
                    elif value.startswith("$"):
                        parse_path(value)
                    elif value.startswith("States."):
                        parse_intrinsic(value)
                    else:
                        raise PathError(f"{value!r} is neither a path nor an intrinsic function")
                except PathError as exc:
                    problems.append(f"{where}.{key}: {exc}")
            else:
                problems.extend(template_problems(value, f"{where}.{key}"))
    elif isinstance(template, list):
        for i, item in enumerate(template):
            problems.extend(template_problems(item, f"{where}[{i}]"))
    return problems


# ---------------------------------------------------------------- intrinsic functions

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<func>States\.[A-Za-z0-9]+)\s*\(
    | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<keyword>true|false|null)\b
    | (?P<path>\$\$?(?:[^,()\s\[]|\[[^\]]*\])*)
    | (?P<comma>,)
    | (?P<close>\))
    )""",
    re.VERBOSE,
)


@lru_cache(maxsize=1024)
def parse_intrinsic(text: str) -> tuple:
    """A syntax tree: ``('call', name, args)``, ``('path', p)``, ``('string', raw)``,
    ``('literal', value)``. Raises ``PathError`` for bad syntax or an unknown function."""
    node, pos = _parse(text, 0)
    if node[0] != "call" or text[pos:].strip():
        raise PathError(f"invalid intrinsic function {text!r}")
    return node


def _parse(text: str, pos: int) -> tuple[tuple, int]:
    m = _TOKEN.match(text, pos)
    if m is None or m["comma"] or m["close"]:
        raise PathError(f"invalid intrinsic function {text!r} at character {pos}")
    if m["func"]:
        name = m["func"]
        if name not in _FUNCTIONS:
            raise PathError(f"unknown intrinsic function {name}")
        args: list[tuple] = []
        pos = m.end()
        closing = _TOKEN.match(text, pos)
        if closing and closing["close"]:
            return ("call", name, tuple(args)), closing.end()
        while True:
            arg, pos = _parse(text, pos)
            args.append(arg)
            sep = _TOKEN.match(text, pos)
            if sep and sep["comma"]:
                pos = sep.end()
            elif sep and sep["close"]:
                return ("call", name, tuple(args)), sep.end()
            else:
                raise PathError(f"invalid intrinsic function {text!r}: expected ',' or ')'")
    if m["string"]:
        return ("string", m["string"][1:-1]), m.end()
    if m["number"]:
        number = m["number"]
        value = float(number) if any(c in number for c in ".eE") else int(number)
        return ("literal", value), m.end()
    if m["keyword"]:
        return ("literal", {"true": True, "false": False, "null": None}[m["keyword"]]), m.end()
    path = m["path"]
    parse_path(path[1:] if path.startswith("$$") else path)  # syntax check now
    return ("path", path), m.end()


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw)


def _eval(node: tuple, data: Any, context: Any) -> Any:
    kind = node[0]
    if kind == "literal":
        return node[1]
    if kind == "string":
        return _unescape(node[1])
    if kind == "path":
        return get(node[1], data, context)
    name, arg_nodes = node[1], node[2]
    if name == "States.Format":
        # the template keeps its escapes: '\{' is a literal brace, '{}' a placeholder
        if not arg_nodes:
            raise PathError("States.Format needs a template")
        first = arg_nodes[0]
        template, escaped = (first[1], True) if first[0] == "string" else (_eval(first, data, context), False)
        return _format(template, [_eval(a, data, context) for a in arg_nodes[1:]], escaped)
    args = [_eval(a, data, context) for a in arg_nodes]
    try:
        return _FUNCTIONS[name](*args)
    except PathError:
        raise
    except (TypeError, ValueError, IndexError) as exc:
        raise PathError(f"{name} failed: {exc}") from None


def _format(template: Any, args: list[Any], escaped: bool) -> str:
    if not isinstance(template, str):
        raise PathError("States.Format: the template must be a string")
    out: list[str] = []
    pending = list(args)
    i = 0
    while i < len(template):
        ch = template[i]
        if escaped and ch == "\\" and i + 1 < len(template):
            out.append(template[i + 1])
            i += 2
            continue
        if template.startswith("{}", i):
            if not pending:
                raise PathError("States.Format: more placeholders than arguments")
            out.append(_format_value(pending.pop(0)))
            i += 2
            continue
        out.append(ch)
        i += 1
    if pending:
        raise PathError("States.Format: more arguments than placeholders")
    return "".join(out)


def _format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        raise PathError("States.Format: arguments must be strings, numbers, booleans or null")
    return json.dumps(value)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _array(value: Any, name: str) -> list:
    if not isinstance(value, list):
        raise PathError(f"{name}: expected an array, got {type(value).__name__}")
    return value


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == True`` in Python, not in JSON."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _string_to_json(value: Any) -> Any:
    if not isinstance(value, str):
        raise PathError("States.StringToJson: expected a string")
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise PathError(f"States.StringToJson: not JSON: {exc}") from None


def _math_add(a: Any, b: Any) -> Any:
    if not (_number(a) and _number(b)):
        raise PathError("States.MathAdd: expected two numbers")
    return a + b


def _array_get_item(array: Any, index: Any) -> Any:
    items = _array(array, "States.ArrayGetItem")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
        raise PathError(f"States.ArrayGetItem: index {index!r} out of range")
    return items[index]


def _json_merge(a: Any, b: Any, deep: Any = False) -> dict:
    if not (isinstance(a, dict) and isinstance(b, dict)):
        raise PathError("States.JsonMerge: expected two objects")
    if deep:
        raise PathError("States.JsonMerge: only a shallow merge (false) is supported")
    return {**a, **b}


def _string_split(value: Any, separators: Any) -> list[str]:
    if not (isinstance(value, str) and isinstance(separators, str) and separators):
        raise PathError("States.StringSplit: expected a string and a non-empty separator")
    return [part for part in re.split("|".join(map(re.escape, separators)), value) if part]


_FUNCTIONS = {
    "States.Format": None,  # handled in _eval: it needs the template's raw escapes
    "States.StringToJson": _string_to_json,
    "States.JsonToString": lambda value: json.dumps(value, separators=(",", ":")),
    "States.Array": lambda *items: list(items),
    "States.ArrayLength": lambda array: len(_array(array, "States.ArrayLength")),
    "States.ArrayContains": lambda array, value: any(
        _same(item, value) for item in _array(array, "States.ArrayContains")),
    "States.ArrayGetItem": _array_get_item,
    "States.MathAdd": _math_add,
    "States.JsonMerge": _json_merge,
    "States.StringSplit": _string_split,
}


# ---------------------------------------------------------------- timestamps

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})")


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as ASL accepts it (uppercase T, a Z or an offset), else None."""
    if not isinstance(value, str):
        return None
    m = _TIMESTAMP.fullmatch(value)
    if m is None:
        return None
    fraction = m.group(1) or ""
    base = value[:19] + (f".{(fraction + '000000')[:6]}" if fraction else "")
    offset = "+00:00" if m.group(2) == "Z" else m.group(2)
    try:
        return datetime.fromisoformat(base + offset)
    except ValueError:  # 2024-02-30 and the like
        return None


def format_timestamp(epoch: float) -> str:
    """``2024-01-31T12:00:00.000Z``, the form of the context object's times."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
