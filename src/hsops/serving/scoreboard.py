"""A shared-memory scoreboard between the replica supervisor and its replicas.

Requests reach replicas through one shared listening socket, so the supervisor cannot
ask a replica how busy it is over HTTP (the question would land on any replica).
Instead each replica owns one slot of a small memory-mapped file and rewrites it a few
times a second: its pid, whether it is ready, a heartbeat, the seconds its model thread
has spent predicting (the supervisor differentiates it into utilisation) and its CPU seconds, the
descriptions waiting, requests in flight and resident memory. The supervisor writes
one flag back: drain. A slot is a fixed array of float64, so a reader never needs a
lock: a torn read of one value can only mix an old and a new heartbeat, which the next
read corrects.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("pid", "ready", "heartbeat", "busy_seconds", "queued", "in_flight", "rss_bytes", "drain",
          "requests", "started", "cpu_seconds")
_SLOT = struct.Struct(f"<{len(FIELDS)}d")
_VALUE = struct.Struct("<d")
_OFFSET = {name: i * _VALUE.size for i, name in enumerate(FIELDS)}


@dataclass(frozen=True)
class Slot:
    pid: int
    ready: bool
    heartbeat: float
    busy_seconds: float
    queued: int
    in_flight: int
    rss_bytes: int
    drain: bool
    requests: int
    started: float
    cpu_seconds: float  # the replica process's CPU time (event loop and model thread)


class Scoreboard:
    def __init__(self, path: Path, slots: int, *, create: bool = False):
        self.path, self.slots = Path(path), slots
        size = _SLOT.size * slots
        if create:
            with open(self.path, "wb") as f:
                f.write(b"\0" * size)
        self._file = open(self.path, "r+b")  # noqa: SIM115 - closed in close()
        self._map = mmap.mmap(self._file.fileno(), size)

    def read(self, slot: int) -> Slot:
        values = _SLOT.unpack_from(self._map, slot * _SLOT.size)
        v = dict(zip(FIELDS, values))
        return Slot(int(v["pid"]), v["ready"] > 0, v["heartbeat"], v["busy_seconds"], int(v["queued"]),
                    int(v["in_flight"]), int(v["rss_bytes"]), v["drain"] > 0, int(v["requests"]), v["started"],
                    v["cpu_seconds"])

    def write(self, slot: int, **values) -> None:
        """Each value on its own 8 bytes: the replica and the supervisor write different
        fields of a slot and never overwrite each other's."""
        for name, value in values.items():
            _VALUE.pack_into(self._map, slot * _SLOT.size + _OFFSET[name], float(value))

    def clear(self, slot: int) -> None:
        _SLOT.pack_into(self._map, slot * _SLOT.size, *([0.0] * len(FIELDS)))

    def close(self) -> None:
        self._map.close()
        self._file.close()


def resident_bytes() -> int:
    """This process's resident set size, from /proc (0 where there is none)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
