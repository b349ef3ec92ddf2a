"""Shared fixtures: every test runs with its own ``HSOPS_HOME`` and can write files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def hsops_home(tmp_path_factory, monkeypatch) -> Path:
    """A fresh ``HSOPS_HOME`` per test, so no test writes to the real home."""
    home = tmp_path_factory.mktemp("hsops_home")
    monkeypatch.setenv("HSOPS_HOME", str(home))
    return home


@pytest.fixture
def write_file(tmp_path):
    """``write_file(name, content)`` writes text (UTF-8, newlines untouched) or bytes under
    a temporary folder and returns the path; a name ending in ``.gz`` is gzipped."""

    def write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        if name.endswith(".gz"):
            data = gzip.compress(data, mtime=0)
        path.write_bytes(data)
        return path

    return write
