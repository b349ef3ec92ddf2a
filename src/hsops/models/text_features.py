"""TF-IDF text features for short, noisy customs descriptions, with no scikit-learn.

Why our own instead of ``TfidfVectorizer``: the same code must run at training time and
in the serving path, which loads only plain files (JSON + npz) and must not unpickle a
fitted vectorizer. Owning the featuriser makes train/serve parity hold by construction.

Two blocks, each L2-normalised on its own so the ~150 character n-grams of a
description do not drown its ~6 words:

* ``word``: word unigrams and bigrams over letter-bearing tokens;
* ``char``: character n-grams inside word boundaries (like scikit-learn's ``char_wb``),
  which give unseen words, typos ("LITHIOM") and glued tokens ("70CTNS") a vector.

Digits are kept by default: they carry HS information (the engine capacity in "150CC"
decides between 871120 and 871130, the cc of a used car between 870322 and 870323),
and ``min_df`` already drops one-off part and chassis numbers. ``fold_digits=True``
maps every digit to ``0`` instead ("500ML" and "250ML" then share "00ml"); on the
corpus the two were within a point of each other on the dev split.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import sparse

_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_DIGIT = re.compile(r"[0-9]")
_HAS_LETTER = re.compile(r"[a-z]")


def normalise_text(text: str, fold_digits: bool = False) -> str:
    """Lower-case ASCII-folded words separated by single spaces (digits as ``0``)."""
    text = unicodedata.normalize("NFKD", text)
    text = text.encode("ascii", "ignore").decode("ascii").lower()
    if fold_digits:
        text = _DIGIT.sub("0", text)
    return _NON_ALNUM.sub(" ", text).strip()


def word_terms(words: list[str]) -> list[str]:
    tokens = [w for w in words if len(w) > 1 and _HAS_LETTER.search(w)]
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def char_terms(words: list[str], n_min: int, n_max: int) -> list[str]:
    terms: list[str] = []
    for word in words:
        padded = f" {word} "
        size = len(padded)
        for n in range(n_min, min(n_max, size) + 1):
            terms += [padded[i : i + n] for i in range(size - n + 1)]
    return terms


@dataclass
class Block:
    name: str  # "word" or "char"
    terms: list[str]
    idf: np.ndarray
    index: dict[str, int]

    @classmethod
    def build(cls, name: str, terms: list[str], idf: np.ndarray) -> "Block":
        return cls(name, terms, np.asarray(idf, dtype=np.float32), {t: i for i, t in enumerate(terms)})


class TfidfFeaturizer:
    """Fit a vocabulary on training texts; turn texts into a sparse CSR matrix.

    ``min_df`` drops terms seen in fewer documents (noise, part numbers);
    ``max_features`` caps each block at its most frequent terms.
    """

    def __init__(self, *, char_ngrams: tuple[int, int] = (2, 5), min_df: int = 2,
                 max_features: int | None = 200_000, fold_digits: bool = False):
        self.char_ngrams = tuple(char_ngrams)
        self.fold_digits = fold_digits
        self.min_df = min_df
        self.max_features = max_features
        self.blocks: list[Block] = []

    # -- terms -------------------------------------------------------------------------
    def _terms(self, text: str) -> dict[str, list[str]]:
        words = normalise_text(text, self.fold_digits).split()
        return {
            "word": word_terms(words),
            "char": char_terms(words, *self.char_ngrams),
        }

    # -- fit / transform ---------------------------------------------------------------
    def fit(self, texts: list[str]) -> "TfidfFeaturizer":
        n_docs = len(texts)
        if n_docs == 0:
            raise ValueError("cannot fit a vocabulary on no texts")
        doc_freq = {"word": Counter(), "char": Counter()}
        for text in texts:
            for name, terms in self._terms(text).items():
                doc_freq[name].update(set(terms))
        self.blocks = []
        for name in ("word", "char"):
            kept = [(t, df) for t, df in doc_freq[name].items() if df >= self.min_df]
            kept.sort(key=lambda item: (-item[1], item[0]))
            if self.max_features:
                kept = kept[: self.max_features]
            kept.sort(key=lambda item: item[0])
            terms = [t for t, _ in kept]
            dfs = np.array([df for _, df in kept], dtype=np.float64)
            idf = np.log((1 + n_docs) / (1 + dfs)) + 1.0  # smooth idf, as scikit-learn
            self.blocks.append(Block.build(name, terms, idf))
        if self.n_features == 0:
            raise ValueError(f"the vocabulary is empty: no term occurs in min_df={self.min_df} "
                             f"of the {n_docs} texts; lower min_df")
        return self

    @property
    def n_features(self) -> int:
        return sum(len(b.terms) for b in self.blocks)

    def transform(self, texts: list[str]) -> sparse.csr_matrix:
        """TF-IDF rows: sublinear term frequency times idf, each block L2-normalised.

        Python only generates the terms and looks them up; counting, weighting and
        normalising run once over the whole batch in numpy (sorting the (row, feature)
        keys also gives the CSR layout, with the word block before the char block in each
        row, so every (row, block) group is a contiguous run).
        """
        if not self.blocks:
            raise RuntimeError("featurizer is not fitted")
        n_features = self.n_features
        feature_ids: list[int] = []
        row_lengths = []
        for text in texts:
            all_terms = self._terms(text)
            before = len(feature_ids)
            offset = 0
            for block in self.blocks:
                lookup = block.index.get
                ids = [i + offset for i in map(lookup, all_terms[block.name]) if i is not None]
                feature_ids.extend(ids)
                offset += len(block.terms)
            row_lengths.append(len(feature_ids) - before)
        n_rows = len(row_lengths)
        rows = np.repeat(np.arange(n_rows, dtype=np.int64), row_lengths)
        keys, tf = np.unique(rows * n_features + np.asarray(feature_ids, dtype=np.int64), return_counts=True)
        key_rows, features = np.divmod(keys, n_features)
        idf = np.concatenate([b.idf for b in self.blocks]) if len(self.blocks) > 1 else self.blocks[0].idf
        weights = (1.0 + np.log(tf)) * idf[features].astype(np.float64)  # sublinear tf
        block_of = np.searchsorted(np.cumsum([len(b.terms) for b in self.blocks]), features, side="right")
        group = key_rows * len(self.blocks) + block_of
        if len(group):
            starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
            norms = np.sqrt(np.add.reduceat(weights * weights, starts))
            weights /= np.repeat(norms, np.diff(np.r_[starts, len(group)]))
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(key_rows, minlength=n_rows), out=indptr[1:])
        return sparse.csr_matrix((weights.astype(np.float32), features, indptr), shape=(n_rows, n_features))

    def term(self, feature: int) -> tuple[str, str]:
        """(block name, term) of a feature column, for explanations."""
        for block in self.blocks:
            if feature < len(block.terms):
                return block.name, block.terms[feature]
            feature -= len(block.terms)
        raise IndexError(feature)

    # -- files -------------------------------------------------------------------------
    def save(self, directory: Path) -> list[str]:
        """Write ``featurizer.json`` and ``featurizer_idf.npz``; return the file names."""
        directory = Path(directory)
        config = {
            "format": "hsops.tfidf/1",
            "char_ngrams": list(self.char_ngrams),
            "min_df": self.min_df,
            "max_features": self.max_features,
            "fold_digits": self.fold_digits,
            "blocks": [{"name": b.name, "terms": b.terms} for b in self.blocks],
        }
        (directory / "featurizer.json").write_text(json.dumps(config), encoding="utf-8")
        np.savez(directory / "featurizer_idf.npz", **{b.name: b.idf for b in self.blocks})
        return ["featurizer.json", "featurizer_idf.npz"]

    @classmethod
    def load(cls, directory: Path) -> "TfidfFeaturizer":
        directory = Path(directory)
        config = json.loads((directory / "featurizer.json").read_text(encoding="utf-8"))
        if config.get("format") != "hsops.tfidf/1":
            raise ValueError(f"unknown featurizer format {config.get('format')!r}")
        self = cls(char_ngrams=tuple(config["char_ngrams"]), min_df=config["min_df"],
                   max_features=config["max_features"], fold_digits=config.get("fold_digits", True))
        with np.load(directory / "featurizer_idf.npz", allow_pickle=False) as idf:
            self.blocks = [Block.build(b["name"], b["terms"], idf[b["name"]]) for b in config["blocks"]]
        return self
