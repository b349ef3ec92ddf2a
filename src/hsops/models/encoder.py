"""Our text encoder: customs descriptions to fixed-shape arrays of sub-word ids.

Declarations are short and noisy: packing and quantities ("70CTNS X 120 PCS"), part and
model numbers ("17801-0C010", "CG125"), brands, typos ("LITHIOM ION") and
abbreviations ("ASSY", "CKD"). The encoder is built for that:

* letters and digits are split apart ("70ctns" -> "70", "ctns"), so a packing count
  never hides the unit or the goods word glued to it;
* a token seen at least ``min_count`` times in the training corpus gets its own id
  (frequent numbers too: "125" and "150" decide motorcycle subheadings);
* an unseen number becomes its shape ("<d5>": a five-digit number), so part numbers
  cost one id each instead of an unbounded vocabulary;
* every word also gets the hashed ids of its character n-grams (fastText style), so
  "lithiom" shares "<li", "lit", "ith", "thi" with "lithium" and an unseen word still
  has a vector.

``encode`` gives ``int64[n, tokens, 1 + max_subwords]``: per token its word id and its
n-gram ids, 0 for padding. The models embed each id, average a token's ids into one
token vector and mask tokens that are all padding. The vocabulary is fitted on the
training split; the embedding table is learnt with each model and exported with it, so
the encoder files (``encoder.json``) and the model weights are versioned together.
Numpy only: the serving path imports this.
"""

from __future__ import annotations

import json
import re
import unicodedata
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

ENCODER_FILE = "encoder.json"
_TOKEN = re.compile(r"[a-z]+|[0-9]+")
_MAX_DIGITS_SHAPE = 8
PAD = 0


def tokenize(text: str) -> list[str]:
    """Lower-case ASCII tokens of only letters or only digits ("70CTNS" -> 70, ctns)."""
    text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii")
    return _TOKEN.findall(text.lower())


class TextEncoder:
    """Fit a vocabulary on training texts; encode texts to sub-word id arrays."""

    def __init__(self, *, max_tokens: int = 32, max_words: int = 30_000, min_count: int = 2,
                 hash_buckets: int = 50_000, ngram_range: tuple[int, int] = (3, 4),
                 max_subwords: int = 16):
        low, high = ngram_range
        if not 1 <= low <= high <= 8:
            raise ValueError(f"ngram_range must be (low, high) with 1 <= low <= high <= 8, got {ngram_range}")
        for name, value in (("max_tokens", max_tokens), ("max_words", max_words),
                            ("min_count", min_count), ("hash_buckets", hash_buckets),
                            ("max_subwords", max_subwords)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.max_tokens = max_tokens
        self.max_words = max_words
        self.min_count = min_count
        self.hash_buckets = hash_buckets
        self.ngram_range = (int(low), int(high))
        self.max_subwords = max_subwords
        self.words: list[str] = []
        self._word_ids: dict[str, int] = {}
        self._cache: dict[str, list[int]] = {}

    # id layout: 0 padding | number shapes | vocabulary words | n-gram hash buckets
    @property
    def _shape_offset(self) -> int:
        return 1

    @property
    def _word_offset(self) -> int:
        return 1 + _MAX_DIGITS_SHAPE

    @property
    def _bucket_offset(self) -> int:
        return self._word_offset + len(self.words)

    @property
    def n_ids(self) -> int:
        """Rows the embedding table needs."""
        return self._bucket_offset + self.hash_buckets

    @property
    def width(self) -> int:
        return 1 + self.max_subwords

    def fit(self, texts: list[str]) -> "TextEncoder":
        counts = Counter(token for text in texts for token in set(tokenize(text)))
        frequent = [(w, c) for w, c in counts.items() if c >= self.min_count]
        frequent.sort(key=lambda item: (-item[1], item[0]))  # ties by name: deterministic
        self.words = [w for w, _ in frequent[: self.max_words]]
        self._word_ids = {w: self._word_offset + i for i, w in enumerate(self.words)}
        self._cache = {}
        return self

    def _ngram_ids(self, token: str) -> list[int]:
        padded = f"<{token}>"
        low, high = self.ngram_range
        ids = []
        for n in range(low, high + 1):
            for i in range(len(padded) - n + 1):
                gram = padded[i : i + n].encode()
                ids.append(self._bucket_offset + zlib.crc32(gram) % self.hash_buckets)
        return ids[: self.max_subwords]

    def token_ids(self, token: str) -> list[int]:
        """The ids of one token: its word (or number-shape) id, then its n-gram ids."""
        ids = self._cache.get(token)
        if ids is None:
            word_id = self._word_ids.get(token)
            if token.isdigit():
                shape = self._shape_offset + min(len(token), _MAX_DIGITS_SHAPE) - 1
                ids = [word_id if word_id is not None else shape]
            else:
                ids = ([word_id] if word_id is not None else []) + self._ngram_ids(token)
            if len(self._cache) < 500_000:  # bounded: hostile input cannot grow it forever
                self._cache[token] = ids
        return ids

    def encode(self, texts: list[str], min_tokens: int = 1) -> np.ndarray:
        """``int64[n, t, width]`` with ``t`` the longest text's token count (capped at
        ``max_tokens``, at least ``min_tokens``); padding is 0."""
        tokenised = [tokenize(text)[: self.max_tokens] for text in texts]
        length = max([min_tokens, 1] + [len(t) for t in tokenised])
        out = np.zeros((len(texts), length, self.width), dtype=np.int64)
        for row, tokens in enumerate(tokenised):
            for col, token in enumerate(tokens):
                ids = self.token_ids(token)
                out[row, col, : len(ids)] = ids
        return out

    # -- files ---------------------------------------------------------------------------
    def config(self) -> dict:
        return {"max_tokens": self.max_tokens, "max_words": self.max_words,
                "min_count": self.min_count, "hash_buckets": self.hash_buckets,
                "ngram_range": list(self.ngram_range), "max_subwords": self.max_subwords}

    def save(self, directory: Path) -> None:
        body = {"format": "hsops-text-encoder/1", "config": self.config(), "words": self.words}
        (Path(directory) / ENCODER_FILE).write_text(json.dumps(body), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "TextEncoder":
        body = json.loads((Path(directory) / ENCODER_FILE).read_text(encoding="utf-8"))
        if body.get("format") != "hsops-text-encoder/1":
            raise ValueError(f"{directory}: {ENCODER_FILE} is not an hsops text encoder")
        config = dict(body["config"])
        config["ngram_range"] = tuple(config["ngram_range"])
        encoder = cls(**config)
        encoder.words = [str(w) for w in body["words"]]
        encoder._word_ids = {w: encoder._word_offset + i for i, w in enumerate(encoder.words)}
        return encoder
