"""Normalising the HS codes people type.

Declarations carry codes as "3924.10", "3924 10 00 00", 8- or 10-digit national tariff
lines, and spreadsheet exports drop the leading zero of chapters 01-09 (the 9-digit
"603110000" is "0603110000"). We keep the full code the user gave (zero-padded) and
derive the 6-digit subheading: the part every HS country shares, and what models predict.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hsops.domain.nomenclature import nomenclature

_SEPARATORS = re.compile(r"[\s.\-/]+")
_SPREADSHEET_FLOAT = re.compile(r"^\d+\.0+$")
MAX_DIGITS = 12  # some national schedules go to 12 digits; beyond that it is not a code


class InvalidCode(ValueError):
    """A value that cannot be read as an HS code; the message says why."""


@dataclass(frozen=True, slots=True)
class HSCode:
    full: str  # every digit given, leading zero restored
    in_hs2022: bool  # whether the 6-digit subheading exists in HS 2022

    @property
    def hs6(self) -> str:
        return self.full[:6]

    @property
    def hs4(self) -> str:
        return self.full[:4]

    @property
    def hs2(self) -> str:
        return self.full[:2]

    def __repr__(self) -> str:
        return f"HSCode({self.full!r}, hs6={self.hs6!r})"


def normalise_code(value: object) -> HSCode:
    """Read ``value`` as an HS code or raise :class:`InvalidCode` with the reason.

    Accepted: 6 to 12 digits with optional dots, spaces or dashes between them; an odd
    digit count of 7 or 9 is taken as an 8- or 10-digit code that lost its leading zero
    (5 digits is too ambiguous: "39241" may be "3924.1" as well as "039241"). The code's
    heading must exist in HS 2022: without an older edition's table we cannot tell a
    retired heading (8803, 11 corpus rows) from a typo, so both are rejected with the
    reason. A subheading missing from HS 2022 under an existing heading (an older
    edition, ~4% of the corpus) is accepted and flagged with ``in_hs2022=False``.
    """
    if value is None:
        raise InvalidCode("code is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidCode(f"code must be text or a whole number, got {type(value).__name__}")
    raw = str(value).strip()
    if not raw:
        raise InvalidCode("code is empty")
    if _SPREADSHEET_FLOAT.match(raw):  # "90121.0": a number that went through a spreadsheet
        raw = raw[: raw.index(".")]
    digits = _SEPARATORS.sub("", raw)
    if not digits.isdigit() or not digits.isascii():
        raise InvalidCode(f"code {raw[:40]!r} has characters other than digits and separators")
    if len(digits) in (7, 9):
        digits = "0" + digits
    if len(digits) < 6:
        raise InvalidCode(
            f"code {raw[:40]!r} has {len(digits)} digits; an HS subheading needs at least 6"
        )
    if len(digits) > MAX_DIGITS:
        raise InvalidCode(f"code {raw[:40]!r} has {len(digits)} digits; at most {MAX_DIGITS}")
    nom = nomenclature()
    if not nom.exists(digits[:2]):
        raise InvalidCode(f"code {raw[:40]!r}: chapter {digits[:2]} does not exist in HS 2022")
    if not nom.exists(digits[:4]):
        raise InvalidCode(f"code {raw[:40]!r}: heading {digits[:4]} does not exist in HS 2022 "
                          "(never valid, or retired like 8803)")
    return HSCode(full=digits, in_hs2022=nom.exists(digits[:6]))
