"""Finding the processes a test started indirectly (replicas of a server, say), so that
tests can assert they exist or are gone, and kill any left behind."""

from __future__ import annotations

import os
from pathlib import Path


def replica_pids(home: Path) -> list[int]:
    """Serving replica processes of this HSOPS_HOME still running (by their command line)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().split(b"\0")
        except OSError:
            continue
        if b"hsops.platform.local.replica" in cmdline and str(home).encode() in cmdline:
            pids.append(int(entry))
    return pids
