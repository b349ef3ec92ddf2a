"""Static checks of a definition, so a broken one fails before its first step runs.

Each problem names where it is (``States.Train.ItemProcessor.States.TrainOne: ...``).
Fields the interpreter does not implement (ItemReader, JSONata, variables...) are
problems too: silently ignoring them would run something else than what was written.
"""

from __future__ import annotations

from typing import Any

from hsops.platform.local.asl import paths
from hsops.platform.local.asl.choice import rule_problems

_IO = {"InputPath", "OutputPath"}
_FLOW = {"Next", "End"}
_FIELDS: dict[str, set[str]] = {
    "Task": _IO | _FLOW | {"Resource", "Parameters", "ResultSelector", "ResultPath", "Retry",
                           "Catch", "TimeoutSeconds", "TimeoutSecondsPath", "HeartbeatSeconds",
                           "HeartbeatSecondsPath", "Credentials"},
    "Pass": _IO | _FLOW | {"Parameters", "Result", "ResultPath"},
    "Choice": _IO | {"Choices", "Default"},
    "Wait": _IO | _FLOW | {"Seconds", "SecondsPath", "Timestamp", "TimestampPath"},
    "Succeed": _IO,
    "Fail": {"Error", "ErrorPath", "Cause", "CausePath"},
    "Map": _IO | _FLOW | {"Iterator", "ItemProcessor", "ItemsPath", "ItemSelector", "Parameters",
                          "MaxConcurrency", "ToleratedFailureCount",
                          "ToleratedFailurePercentage", "ResultSelector", "ResultPath", "Retry",
                          "Catch"},
    "Parallel": _IO | _FLOW | {"Branches", "Parameters", "ResultSelector", "ResultPath", "Retry",
                               "Catch"},
}
_MACHINE_FIELDS = {"StartAt", "States", "Comment", "Version", "TimeoutSeconds", "QueryLanguage"}


def validate_definition(definition: Any) -> list[str]:
    """Structural problems the interpreter would hit; ``[]`` when it can run."""
    problems: list[str] = []
    _machine(definition, "", problems, top=True)
    return problems


def _machine(machine: Any, where: str, problems: list[str], *, top: bool = False) -> None:
    label = where.rstrip(".") or "definition"
    if not isinstance(machine, dict):
        problems.append(f"{label}: must be an object")
        return
    allowed = _MACHINE_FIELDS if top else {"StartAt", "States", "Comment", "ProcessorConfig"}
    for name in sorted(set(machine) - allowed):
        problems.append(f"{label}: field {name!r} is not supported")
    if machine.get("QueryLanguage", "JSONPath") != "JSONPath":
        problems.append(f"{label}: only the JSONPath query language is supported")
    states = machine.get("States")
    if not isinstance(states, dict) or not states:
        problems.append(f"{label}: States must be a non-empty object")
        return
    start = machine.get("StartAt")
    if not isinstance(start, str):
        problems.append(f"{label}: StartAt is missing")
    elif start not in states:
        problems.append(f"{label}: StartAt {start!r} is not a state")
    for name, state in states.items():
        if not name or any(c in name for c in "#/"):  # both forbidden by Step Functions too
            problems.append(f"{where}States.{name}: a state name cannot be empty or contain "
                            f"'#' or '/' (they separate the parts of a step key)")
        _state(state, f"{where}States.{name}", set(states), problems)
    if isinstance(start, str) and start in states:
        reached = _reachable(start, states)
        for name in states:
            if name not in reached:
                problems.append(f"{where}States.{name}: not reachable from StartAt")


def _reachable(start: str, states: dict) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or not isinstance(states.get(name), dict):
            continue
        seen.add(name)
        state = states[name]
        targets = [state.get("Next"), state.get("Default")]
        for key in ("Choices", "Catch"):
            if isinstance(state.get(key), list):
                targets += [r.get("Next") for r in state[key] if isinstance(r, dict)]
        todo += [t for t in targets if isinstance(t, str) and t in states]
    return seen


def _state(state: Any, where: str, names: set[str], problems: list[str]) -> None:
    if not isinstance(state, dict):
        problems.append(f"{where}: must be an object")
        return
    kind = state.get("Type")
    if kind not in _FIELDS:
        problems.append(f"{where}: unknown Type {kind!r}")
        return
    for name in sorted(set(state) - _FIELDS[kind] - {"Type", "Comment"}):
        problems.append(f"{where}: field {name!r} is not supported in a {kind} state")

    def target(value: Any, field: str) -> None:
        if not isinstance(value, str) or value not in names:
            problems.append(f"{where}.{field}: {value!r} is not a state")

    if _FLOW <= _FIELDS[kind]:
        if "Next" in state and state.get("End") is True:
            problems.append(f"{where}: has both Next and End")
        elif "Next" in state:
            target(state["Next"], "Next")
        elif state.get("End") is not True:
            problems.append(f"{where}: needs a Next or End: true")
    for field in ("InputPath", "OutputPath"):
        if state.get(field) is not None:
            problems += _path(state[field], f"{where}.{field}")
    if state.get("ResultPath") is not None:
        problems += _path(state["ResultPath"], f"{where}.ResultPath", reference=True)
    for field in ("Parameters", "ResultSelector", "ItemSelector"):
        if field in state:
            problems += paths.template_problems(state[field], f"{where}.{field}")
    for i, retrier in enumerate(_list(state, "Retry", where, problems)):
        _errors(retrier, f"{where}.Retry[{i}]", problems, last=i == len(state["Retry"]) - 1)
        _retrier_numbers(retrier, f"{where}.Retry[{i}]", problems)
    for i, catcher in enumerate(_list(state, "Catch", where, problems)):
        _errors(catcher, f"{where}.Catch[{i}]", problems, last=i == len(state["Catch"]) - 1)
        if isinstance(catcher, dict):
            target(catcher.get("Next"), f"Catch[{i}].Next")
            if catcher.get("ResultPath") is not None:
                problems += _path(catcher["ResultPath"], f"{where}.Catch[{i}].ResultPath",
                                  reference=True)
    check = {"Task": _task, "Choice": _choice, "Wait": _wait, "Fail": _fail, "Map": _map,
             "Parallel": _parallel}.get(kind)
    if check is not None:
        check(state, where, problems, target)


def _task(state: dict, where: str, problems: list[str], target) -> None:
    if not isinstance(state.get("Resource"), str) or not state["Resource"]:
        problems.append(f"{where}: a Task needs a Resource")
    if "TimeoutSeconds" in state and not _positive(state["TimeoutSeconds"]):
        problems.append(f"{where}.TimeoutSeconds: must be a positive number")
    if "TimeoutSecondsPath" in state:
        problems += _path(state["TimeoutSecondsPath"], f"{where}.TimeoutSecondsPath")


def _choice(state: dict, where: str, problems: list[str], target) -> None:
    choices = state.get("Choices")
    if not isinstance(choices, list) or not choices:
        problems.append(f"{where}: a Choice needs a non-empty Choices list")
        return
    for i, rule in enumerate(choices):
        problems += rule_problems(rule, f"{where}.Choices[{i}]", top=True)
        if isinstance(rule, dict) and isinstance(rule.get("Next"), str):
            target(rule["Next"], f"Choices[{i}].Next")
    if "Default" in state:
        target(state["Default"], "Default")


def _wait(state: dict, where: str, problems: list[str], target) -> None:
    given = [f for f in ("Seconds", "SecondsPath", "Timestamp", "TimestampPath") if f in state]
    if len(given) != 1:
        problems.append(f"{where}: a Wait needs exactly one of Seconds, SecondsPath, "
                        f"Timestamp, TimestampPath (has {given})")
        return
    field, value = given[0], state[given[0]]
    if field == "Seconds" and not (_number(value) and value >= 0):
        problems.append(f"{where}.Seconds: must be a non-negative number")
    elif field == "Timestamp" and paths.parse_timestamp(value) is None:
        problems.append(f"{where}.Timestamp: {value!r} is not an RFC 3339 timestamp")
    elif field.endswith("Path"):
        problems += _path(value, f"{where}.{field}")


def _fail(state: dict, where: str, problems: list[str], target) -> None:
    for field in ("Error", "Cause"):
        if field in state and f"{field}Path" in state:
            problems.append(f"{where}: has both {field} and {field}Path")
        if field in state and not isinstance(state[field], str):
            problems.append(f"{where}.{field}: must be a string")
        if f"{field}Path" in state:  # a path or an intrinsic function
            problems += paths.template_problems({f"{field}Path.$": state[f"{field}Path"]},
                                                where)


def _map(state: dict, where: str, problems: list[str], target) -> None:
    forms = [f for f in ("ItemProcessor", "Iterator") if f in state]
    if len(forms) != 1:
        problems.append(f"{where}: a Map needs exactly one of ItemProcessor or Iterator")
    else:
        _machine(state[forms[0]], f"{where}.{forms[0]}.", problems)
    if "ItemSelector" in state and "Parameters" in state:
        problems.append(f"{where}: has both ItemSelector and Parameters")
    if state.get("ItemsPath") is not None:
        problems += _path(state["ItemsPath"], f"{where}.ItemsPath")
    for field, ok in (("MaxConcurrency", _count), ("ToleratedFailureCount", _count),
                      ("ToleratedFailurePercentage", lambda v: _number(v) and 0 <= v <= 100)):
        if field in state and not ok(state[field]):
            problems.append(f"{where}.{field}: {state[field]!r} is out of range")


def _parallel(state: dict, where: str, problems: list[str], target) -> None:
    branches = state.get("Branches")
    if not isinstance(branches, list) or not branches:
        problems.append(f"{where}: a Parallel needs a non-empty Branches list")
        return
    for i, branch in enumerate(branches):
        _machine(branch, f"{where}.Branches[{i}].", problems)


def _list(state: dict, field: str, where: str, problems: list[str]) -> list:
    value = state.get(field, [])
    if not isinstance(value, list):
        problems.append(f"{where}.{field}: must be a list")
        return []
    return value


def _errors(rule: Any, where: str, problems: list[str], *, last: bool) -> None:
    if not isinstance(rule, dict):
        problems.append(f"{where}: must be an object")
        return
    names = rule.get("ErrorEquals")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problems.append(f"{where}.ErrorEquals: must be a non-empty list of error names")
    elif "States.ALL" in names and (len(names) > 1 or not last):
        problems.append(f"{where}: States.ALL must be alone and in the last rule")


def _retrier_numbers(rule: Any, where: str, problems: list[str]) -> None:
    if not isinstance(rule, dict):
        return
    checks = (("IntervalSeconds", _positive), ("MaxAttempts", _count),
              ("BackoffRate", lambda v: _number(v) and v >= 1), ("MaxDelaySeconds", _positive))
    for field, ok in checks:
        if field in rule and not ok(rule[field]):
            problems.append(f"{where}.{field}: {rule[field]!r} is out of range")
    if rule.get("JitterStrategy", "NONE") != "NONE":
        problems.append(f"{where}.JitterStrategy: only NONE is supported")


def _path(value: Any, where: str, *, reference: bool = False) -> list[str]:
    try:
        if not isinstance(value, str):
            raise paths.PathError("a path must be a string")
        if reference:
            paths.parse_path(value)  # no $$: a ResultPath writes into the input
            if not paths.is_definite(value):
                raise paths.PathError("a ResultPath cannot have wildcards or slices")
        else:
            paths.parse_path(value[1:] if value.startswith("$$") else value)
    except paths.PathError as exc:
        return [f"{where}: {exc}"]
    return []


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
