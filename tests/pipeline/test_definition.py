"""The lifecycle definition: valid ASL (by the npm asl-validator), runnable by our
interpreter, and every Task names a handler that exists."""

from __future__ import annotations

import importlib
import json
import subprocess
from pathlib import Path

import pytest

from hsops.pipeline.handlers import FUNCTIONS
from hsops.platform.local.asl import validate_definition
from hsops.platform.local.state_machines import lifecycle_definition

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "src" / "hsops" / "pipeline" / "lifecycle.asl.json"
VALIDATOR = ROOT / "tools" / "npm" / "node_modules" / ".bin" / "asl-validator"


def _validator() -> Path:
    if not VALIDATOR.exists():
        pytest.fail("the npm asl-validator is not installed: run `make install` (npm ci --prefix tools/npm)")
    return VALIDATOR


def _states(definition: dict):
    """Every state, nested Map and Parallel branches included."""
    for name, state in definition["States"].items():
        yield name, state
        for branch in state.get("Branches", []):
            yield from _states(branch)
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from _states(processor)


def test_asl_validator_accepts_the_lifecycle_definition():
    out = subprocess.run([str(_validator()), "--json-path", str(DEFINITION)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_asl_validator_rejects_a_broken_definition(tmp_path):
    """The check above could fail: a Next pointing nowhere is refused."""
    broken = json.loads(DEFINITION.read_text())
    broken["States"]["Validate"]["Next"] = "NoSuchState"
    path = tmp_path / "broken.asl.json"
    path.write_text(json.dumps(broken))
    out = subprocess.run([str(_validator()), "--json-path", str(path)], capture_output=True, text=True)
    assert out.returncode != 0
    assert validate_definition(broken)  # and our interpreter says so too


def test_our_interpreter_accepts_it():
    assert validate_definition(lifecycle_definition()) == []


def test_every_task_names_a_handler_that_imports():
    tasks = [(name, s) for name, s in _states(lifecycle_definition()) if s["Type"] == "Task"]
    assert len(tasks) >= 9
    for name, state in tasks:
        function = state["Parameters"]["FunctionName"]
        assert function in FUNCTIONS, f"{name} calls {function}, which is not a known handler"
        module, _, attr = FUNCTIONS[function].partition(":")
        assert callable(getattr(importlib.import_module(module), attr))


def test_the_definition_uses_the_states_it_promises():
    types = {s["Type"] for _, s in _states(lifecycle_definition())}
    assert {"Task", "Choice", "Map", "Parallel", "Pass", "Wait", "Succeed", "Fail"} <= types
    tasks = [s for _, s in _states(lifecycle_definition()) if s["Type"] == "Task"]
    assert all(s.get("Retry") for s in tasks), "every Task retries a lost worker"
