"""A local Amazon States Language interpreter that journals every step and resumes.

``Interpreter(definition, run_task, journal).run(input)`` runs an execution; after a
crash, the same call on the same journal continues where it stopped, without running
a finished Task again. ``validate_definition`` lists what would stop a definition
from running. See ``interpreter`` for the step keys and the replay rules.
"""

from hsops.platform.local.asl.interpreter import (
    DefinitionError,
    ExecutionFailed,
    Interpreter,
    Stopped,
    TaskFailed,
    TaskOutcome,
    TaskRunner,
)
from hsops.platform.local.asl.journal import (
    SCHEMA,
    Journal,
    MemoryJournal,
    SqliteJournal,
    StepRecord,
    redrive_keys,
)
from hsops.platform.local.asl.validate import validate_definition

__all__ = [
    "SCHEMA",
    "DefinitionError",
    "ExecutionFailed",
    "Interpreter",
    "Journal",
    "MemoryJournal",
    "SqliteJournal",
    "StepRecord",
    "Stopped",
    "TaskFailed",
    "TaskOutcome",
    "TaskRunner",
    "redrive_keys",
    "validate_definition",
]
