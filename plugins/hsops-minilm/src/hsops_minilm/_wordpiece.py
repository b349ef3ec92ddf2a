"""BERT's uncased WordPiece tokenizer, as the ``tokenizer.json`` of all-MiniLM-L6-v2
configures it in Hugging Face ``tokenizers``, in plain Python.

Why our own: the ``tokenizers`` package pulls ``huggingface-hub`` (an HTTP client with a
native transfer agent) into the environment for a job that is a page of code. The rules
follow the Rust implementation, step for step:

1. special tokens ("[CLS]", "[SEP]", ...) written in the text are matched before
   anything else and map straight to their ids;
2. BertNormalizer: drop NUL, U+FFFD and control characters, turn white space into
   spaces, put spaces around CJK ideographs, strip accents (NFD, drop non-spacing
   marks), lower-case character by character;
3. BertPreTokenizer: split on white space, and make every punctuation character
   (Unicode P* or ASCII punctuation) a word of its own;
4. WordPiece: greedy longest match with "##" continuations; a word with a piece not in
   the vocabulary, or longer than 100 characters, becomes "[UNK]";
5. "[CLS]" + pieces truncated to ``max_length - 2`` + "[SEP]".

tests/models/test_minilm.py checks it against ids produced by ``tokenizers``.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_SPECIAL = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_SPACE = re.compile(r"[\t\n\r]")
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    return any(low <= cp <= high for low, high in _CJK)


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize(text: str) -> str:
    if text.isascii():  # the common case for declarations, and much faster
        return _ASCII_SPACE.sub(" ", _ASCII_CONTROL.sub("", text)).lower()
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD:
            continue
        category = unicodedata.category(ch)
        if ch in "\t\n\r" or category in ("Zs", "Zl", "Zp"):
            out.append(" ")
        elif category.startswith("C"):
            continue
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFD", "".join(out))
    return "".join(ch.lower() for ch in text if unicodedata.category(ch) != "Mn")


def split_words(text: str) -> list[str]:
    """Pre-tokenize normalized text: white space separates, punctuation stands alone."""
    words = []
    for chunk in text.split():
        start = 0
        for i, ch in enumerate(chunk):
            if _is_punct(ch):
                if start < i:
                    words.append(chunk[start:i])
                words.append(ch)
                start = i + 1
        if start < len(chunk):
            words.append(chunk[start:])
    return words


class WordPieceTokenizer:
    def __init__(self, vocab: dict[str, int], *, max_chars_per_word: int = 100, cache_size: int = 200_000):
        self.vocab = vocab
        self.max_chars_per_word = max_chars_per_word
        self.unk_id = vocab["[UNK]"]
        self.cls_id = vocab["[CLS]"]
        self.sep_id = vocab["[SEP]"]
        self.pad_id = vocab["[PAD]"]
        self._cache: dict[str, list[int]] = {}
        self._cache_size = cache_size

    @classmethod
    def from_vocab_file(cls, path: Path) -> "WordPieceTokenizer":
        lines = Path(path).read_text(encoding="utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return cls({token: i for i, token in enumerate(lines)})

    def word_ids(self, word: str) -> list[int]:
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        ids = self._wordpiece(word)
        if len(self._cache) < self._cache_size:
            self._cache[word] = ids
        return ids

    def _wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk_id]
            start = end
        return ids

    def tokenize_ids(self, text: str) -> list[int]:
        """Ids of ``text`` without [CLS]/[SEP] and without truncation."""
        ids: list[int] = []
        for part in _SPECIAL.split(str(text)):
            if part in SPECIAL_TOKENS:
                ids.append(self.vocab[part])
            elif part:
                for word in split_words(normalize(part)):
                    ids.extend(self.word_ids(word))
        return ids

    def encode(self, text: str, max_length: int) -> list[int]:
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
        return [self.cls_id, *self.tokenize_ids(text)[: max_length - 2], self.sep_id]
