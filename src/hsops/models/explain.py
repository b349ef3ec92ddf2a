"""Model-agnostic explanations by occlusion: which words of a description drove a class.

Each whitespace-separated word of the original text is blanked in turn and the text
scored again; a word's weight is how much the class's probability drops without it. One
batched call scores every variant, so the cost is one prediction of ``words + 1`` rows.
It works for any kind behind ``predict_proba`` (ONNX, a plug-in), and the spans point
into the text the user sent, so a page can highlight them. Linear kinds explain with
their own weights instead (``feature_contributions``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

_WORD = re.compile(r"\S+")
MAX_WORDS = 64  # past this, the tail is not occluded (bounded cost for hostile input)


def occlusion(predict_proba: Callable[[list[str]], np.ndarray], text: str, class_index: int,
              top: int = 5) -> list[dict]:
    """Up to ``top`` words with a positive weight: ``{term, weight, start, end}``."""
    words = list(_WORD.finditer(text))[:MAX_WORDS]
    if not words:
        return []
    variants = [text] + [text[: w.start()] + " " * (w.end() - w.start()) + text[w.end():] for w in words]
    proba = np.asarray(predict_proba(variants))[:, class_index]
    drops = proba[0] - proba[1:]
    ranked = sorted(range(len(words)), key=lambda i: -drops[i])[:top]
    return [{"term": words[i].group(), "weight": float(drops[i]), "start": words[i].start(),
             "end": words[i].end()} for i in ranked if drops[i] > 0]
