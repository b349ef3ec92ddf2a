"""The registry index: a small JSON file mirroring MLflow's versions and aliases.

``HSOPS_HOME/registry/index.json`` maps each registered model's versions to their
artifact directories and its aliases (``champion``, ``challenger``) to versions. The
registry writes it (atomically, after MLflow) and the serving path reads it: resolving
``champion`` costs one small file read instead of importing MLflow and opening its
database.

Format::

    {"models": {"hs-classifier": {
        "versions": {"1": {"artifact": "artifacts/<digest>", "kind": "linear",
                           "dataset_version": "ds-...", "created_at": "...",
                           "run_id": "...", "metrics": {...}}},
        "aliases": {"champion": "1"}}}}
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "hs-classifier"
ALIASES = ("champion", "challenger")
_REF = re.compile(r"^(?:(?P<name>[A-Za-z0-9_.\-]+)@)?(?P<ver>[A-Za-z0-9_\-]+)$")


class ModelNotFound(LookupError):
    """A model reference that names no registered version; the message says what exists."""


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    version: str
    artifact_dir: Path
    info: dict

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


def index_path(home: Path) -> Path:
    return Path(home) / "registry" / "index.json"


def read_index(home: Path) -> dict:
    path = index_path(home)
    if not path.is_file():
        return {"models": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(index.get("models"), dict):
            raise ValueError("no 'models' object")
    except (ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise ModelNotFound(f"the registry index {path} is unreadable ({exc}); restore it from a "
                            "backup, or register a model again (`hsops train`) to rewrite it") from None
    return index


def write_index(home: Path, index: dict) -> None:
    path = index_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)  # readers see the old or the new index, never half of one


def resolve(home: Path, ref: str, default_name: str = DEFAULT_MODEL) -> ResolvedModel:
    """Resolve ``champion``, ``challenger``, ``VERSION``, ``NAME@VERSION`` or ``NAME@ALIAS``."""
    match = _REF.match(ref.strip()) if isinstance(ref, str) else None
    if not match:
        raise ModelNotFound(f"bad model reference {ref!r}; use champion, challenger or NAME@VERSION")
    name = match.group("name") or default_name
    wanted = match.group("ver")
    models = read_index(home).get("models", {})
    entry = models.get(name)
    if entry is None:
        known = ", ".join(sorted(models)) or "none yet (run `hsops train`)"
        raise ModelNotFound(f"no registered model {name!r}; registered models: {known}")
    version = entry.get("aliases", {}).get(wanted, wanted)
    info = entry.get("versions", {}).get(str(version))
    if info is None:
        aliases = ", ".join(f"{a}->{v}" for a, v in sorted(entry.get("aliases", {}).items())) or "none"
        versions = ", ".join(sorted(entry.get("versions", {}), key=int)) or "none"
        raise ModelNotFound(f"{name}@{wanted} not found; versions: {versions}; aliases: {aliases}")
    return ResolvedModel(name, str(version), Path(home) / info["artifact"], info)
