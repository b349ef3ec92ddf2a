"""Group-aware, deterministic train/dev/test splits.

The group key is the description lower-cased with only letters kept, so rows that differ
only in quantities, sizes or part numbers ("70CTNS X 120 PCS PLASTIC CUPS" and
"155 CTNS X 100 PCS PLASTIC CUPS") always land on the same side. Each group goes to a
split by a hash of its key, so the assignment depends on nothing but the key and the
seed: stable across runs, machines and row order.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "dev", "test")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)


def group_key(text: str) -> str:
    """Letters of the lower-cased description (any script, not only a-z); a description
    with no letters at all (a bare part number) keeps its digits, so such rows do not
    all collapse into one group."""
    lowered = text.lower()
    return "".join(ch for ch in lowered if ch.isalpha()) or "".join(ch for ch in lowered if ch.isalnum())


def assign_split(text: str, *, seed: str = "hsops", fractions=DEFAULT_FRACTIONS) -> str:
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    digest = hashlib.sha256(f"{seed}\x00{group_key(text)}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "dev"
    return "test"
