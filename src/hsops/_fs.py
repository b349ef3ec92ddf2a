"""Crash-safe file-system helpers shared by the stages that write under HSOPS_HOME.

Staging folders carry the writer's PID in their name (``.staging-<pid>-xxxx``): a
process killed mid-write (``kill -9``) leaves its folder behind, invisible to readers
because only finished folders are renamed into place, and the next writer removes the
folders whose process is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

STAGING_PREFIXES = (".staging-", ".incoming-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale(root: Path) -> list[Path]:
    """Remove staging folders under ``root`` whose writing process no longer exists."""
    removed = []
    if not Path(root).is_dir():
        return removed
    for path in Path(root).iterdir():
        prefix = next((p for p in STAGING_PREFIXES if path.name.startswith(p)), None)
        if prefix is None:
            continue
        pid_text = path.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def staging_dir(root: Path, prefix: str = ".staging-") -> Path:
    """A fresh folder in ``root`` (same file system, so it can be renamed into place)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    sweep_stale(root)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=root))


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock held for the ``with`` block (released if the process dies)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
