"""Stratified up-sampling of rare classes, for the training split only.

The customs corpus is extremely imbalanced (the median HS6 code has 5 rows, 518 have
one), so a model sees the rare codes too seldom to learn them. Up-sampling duplicates
rows of rare classes, drawn with replacement within the class, until each reaches its
target count::

    target(c) = min(max(n_c, min_per_class), ceil(max_ratio * n_c), n_largest)

that is, every class is raised to at least ``min_per_class`` rows, but never to more
than ``max_ratio`` times its own count (one row copied fifty times teaches the model
that one string, not the class) and never above the largest class. Classes at or above
their target are left as they are. Every original row is kept, in its order; the
copies follow them, so a model that shuffles (all kinds do) sees them mixed.

Only the train split may be up-sampled: a duplicated dev row would bias the
calibration, a duplicated test row the reported scores. The caller passes the train
part; nothing here knows about splits.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_PER_CLASS = 10
DEFAULT_MAX_RATIO = 5.0


@dataclass(frozen=True)
class UpsamplePlan:
    """What up-sampling with these settings does to one label list."""

    min_per_class: int
    max_ratio: float | None
    seed: int
    targets: dict[str, int]  # label -> rows after up-sampling, for the raised classes only
    rows_before: int
    rows_after: int

    @property
    def classes_raised(self) -> int:
        return len(self.targets)

    def summary(self) -> dict:
        """The settings and row counts, for artifact metadata and the training result."""
        return {"min_per_class": self.min_per_class, "max_ratio": self.max_ratio, "seed": self.seed,
                "rows_before": self.rows_before, "rows_after": self.rows_after,
                "classes_raised": self.classes_raised}


def _check(min_per_class: object, max_ratio: object, seed: object) -> None:
    if isinstance(min_per_class, bool) or not isinstance(min_per_class, int) or min_per_class < 1:
        raise ValueError(f"min_per_class must be a whole number of rows >= 1, got {min_per_class!r}")
    if max_ratio is not None and (isinstance(max_ratio, bool) or not isinstance(max_ratio, (int, float))
                                  or not math.isfinite(max_ratio) or max_ratio < 1):
        raise ValueError(f"max_ratio must be a number >= 1 (or None for no cap), got {max_ratio!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def plan_upsample(labels: list[str], *, min_per_class: int = DEFAULT_MIN_PER_CLASS,
                  max_ratio: float | None = DEFAULT_MAX_RATIO, seed: int = 0) -> UpsamplePlan:
    """The target count of every class that up-sampling raises (see the module docstring)."""
    _check(min_per_class, max_ratio, seed)
    counts = Counter(labels)
    largest = max(counts.values(), default=0)
    targets = {}
    for label, n in counts.items():
        target = min(max(n, min_per_class), largest)
        if max_ratio is not None:
            target = min(target, math.ceil(max_ratio * n))
        if target > n:
            targets[label] = target
    after = len(labels) + sum(t - counts[label] for label, t in targets.items())
    return UpsamplePlan(min_per_class, None if max_ratio is None else float(max_ratio), seed, targets,
                        len(labels), after)


def stratified_upsample(texts: list[str], labels: list[str], *, min_per_class: int = DEFAULT_MIN_PER_CLASS,
                        max_ratio: float | None = DEFAULT_MAX_RATIO,
                        seed: int = 0) -> tuple[list[str], list[str]]:
    """``(texts, labels)`` with rare classes raised to their target count.

    The originals come first, unchanged; then the copies, drawn with replacement from
    each raised class (classes in sorted order, so the result depends only on the input
    and ``seed``, not on hash order).
    """
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    plan = plan_upsample(labels, min_per_class=min_per_class, max_ratio=max_ratio, seed=seed)
    rows_of: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        rows_of.setdefault(label, []).append(i)
    rng = np.random.default_rng(seed)
    extra_texts, extra_labels = [], []
    for label in sorted(plan.targets):
        rows = rows_of[label]
        for i in rng.choice(rows, size=plan.targets[label] - len(rows), replace=True):
            extra_texts.append(texts[i])
            extra_labels.append(label)
    return texts + extra_texts, labels + extra_labels
