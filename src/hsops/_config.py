"""Where hsops keeps its state and finds its data.

``HSOPS_HOME`` (default ``~/.hsops``) holds everything hsops writes: datasets,
quarantine files, artifacts, the registry database and the state store.
``HSOPS_DATA_HOME`` points at a folder of data sets; when it is unset and a
``shared/data`` folder stands beside the checkout, that one is used.
"""

from __future__ import annotations

import os
from pathlib import Path

CORPUS_RELATIVE = Path("customs_declarations_en") / "customs_declarations_shared.csv.gz"


def hsops_home() -> Path:
    home = Path(os.environ.get("HSOPS_HOME") or Path.home() / ".hsops").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def repo_root() -> Path | None:
    """The checkout this package runs from (editable install), if any."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def data_home() -> Path | None:
    env = os.environ.get("HSOPS_DATA_HOME")
    if env:
        return Path(env).expanduser()
    candidates = [Path.cwd().parent / "shared" / "data"]
    if (root := repo_root()) is not None:
        candidates.insert(0, root.parent / "shared" / "data")
    return next((c for c in candidates if c.is_dir()), None)


def corpus_path() -> Path | None:
    """The customs declarations corpus, when a data home holds it."""
    home = data_home()
    if home is None:
        return None
    path = home / CORPUS_RELATIVE
    return path if path.is_file() else None
