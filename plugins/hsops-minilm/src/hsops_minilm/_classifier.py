"""MiniLM sentence embeddings with a linear softmax head, behind hsops' Classifier contract.

The encoder is frozen: ``fit`` embeds the texts once and trains only a multinomial
logistic regression on the standardised 384-d vectors (Adam on mini-batches, L2
penalty, early stopping on ``eval_set`` top-1). Embedding and training run with torch's
thread setting, or with ``num_threads`` when it is not 0 (restored afterwards).

The export holds the head and the standardisation (``minilm_head.npz``) and, in
``model.json``, the encoder's package, version and weights SHA-256; the 90 MB of
encoder weights stay in their package, and ``load`` refuses an installation whose
encoder differs from the recorded one.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hsops.models.base import (
    Classifier,
    NotFittedError,
    check_training_input,
    read_model_json,
    write_model_json,
)

from ._encoder import check_identity, shared_encoder

HEAD_FILE = "minilm_head.npz"
_MEMO_ENTRIES = 2  # training evaluates the dev split several times in a row


class MiniLMClassifier(Classifier):
    kind = "minilm"

    def __init__(self, *, batch_size: int = 64, max_length: int = 64, epochs: int = 30,
                 learning_rate: float = 0.001, head_batch_size: int = 256, l2: float = 1e-5,
                 patience: int = 3, num_threads: int = 0, seed: int = 0):
        self.batch_size = batch_size
        self.max_length = max_length
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.head_batch_size = head_batch_size
        self.l2 = l2
        self.patience = patience
        self.num_threads = num_threads
        self.seed = seed

    @contextmanager
    def _threads(self):
        """torch's thread count as set by the caller, or ``num_threads`` if not 0."""
        if not self.num_threads:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.num_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    # -- embedding -----------------------------------------------------------------------
    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length MiniLM vectors [n, 384] of ``texts`` (duplicates embedded once)."""
        texts = [str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        encoder, identity = shared_encoder()
        self.encoder_ = identity
        with self._threads():
            vectors = encoder.embed(unique, batch_size=self.batch_size, max_length=self.max_length)
        if len(unique) == len(texts):
            return vectors
        row = {t: i for i, t in enumerate(unique)}
        return vectors[[row[t] for t in texts]]

    def _embed_memo(self, texts: list[str]) -> np.ndarray:
        memo = self.__dict__.setdefault("_memo", OrderedDict())
        key = tuple(str(t) for t in texts)
        if key in memo:
            memo.move_to_end(key)
            return memo[key]
        vectors = self.embed(list(key))
        memo[key] = vectors
        while len(memo) > _MEMO_ENTRIES:
            memo.popitem(last=False)
        return vectors

    # -- training ------------------------------------------------------------------------
    def fit(self, texts, labels, *, eval_set=None, on_epoch=None) -> "MiniLMClassifier":
        """Fit the head on ``texts``/``labels``; with ``eval_set=(texts, labels)`` keep the
        epoch with the best top-1 on it and stop after ``patience`` epochs without gain."""
        check_training_input(texts, labels)
        self._check_hyper_parameters()
        with self._threads():
            return self._fit(list(texts), [str(y) for y in labels], eval_set, on_epoch)

    def _fit(self, texts, labels, eval_set, on_epoch) -> "MiniLMClassifier":
        classes = np.array(sorted(set(labels)))
        index = {c: i for i, c in enumerate(classes)}
        x = self.embed(texts)
        mean = x.mean(axis=0)
        scale = x.std(axis=0) + 1e-6
        z = torch.from_numpy((x - mean) / scale)
        y = torch.tensor([index[label] for label in labels])
        eval_z = eval_y = None
        if eval_set is not None and len(eval_set[0]):
            eval_z = torch.from_numpy((self._embed_memo(list(eval_set[0])) - mean) / scale)
            eval_y = torch.tensor([index.get(str(label), -1) for label in eval_set[1]])

        weight = torch.zeros((z.shape[1], len(classes)), requires_grad=True)
        bias = torch.zeros(len(classes), requires_grad=True)
        optimizer = torch.optim.Adam([weight, bias], lr=self.learning_rate)
        generator = torch.Generator().manual_seed(self.seed)
        best_score, best, stale, history = -1.0, None, 0, []
        for epoch in range(1, self.epochs + 1):
            order = torch.randperm(len(y), generator=generator)
            total = 0.0
            for start in range(0, len(order), self.head_batch_size):
                rows = order[start : start + self.head_batch_size]
                loss = F.cross_entropy(z[rows] @ weight + bias, y[rows])
                total += loss.item() * len(rows)
                optimizer.zero_grad()
                (loss + 0.5 * self.l2 * weight.pow(2).sum()).backward()
                optimizer.step()
            record = {"epoch": epoch, "train_loss": total / len(y)}
            if eval_z is not None:
                with torch.no_grad():
                    predicted = (eval_z @ weight + bias).argmax(dim=1)
                record["eval_top1"] = float((predicted == eval_y).float().mean())
                if record["eval_top1"] > best_score:
                    best_score, stale = record["eval_top1"], 0
                    best = (weight.detach().clone(), bias.detach().clone())
                    self.best_epoch_ = epoch
                else:
                    stale += 1
            history.append(record)
            if on_epoch:
                on_epoch(record)
            if eval_z is not None and self.patience and stale >= self.patience:
                break
        if best is None:
            best = (weight.detach(), bias.detach())
        self.classes_ = classes
        self.history_ = history
        self._set_head(best[0].numpy(), best[1].numpy(), mean, scale)
        return self

    def _check_hyper_parameters(self) -> None:
        positive = {"batch_size": self.batch_size, "epochs": self.epochs,
                    "learning_rate": self.learning_rate, "head_batch_size": self.head_batch_size}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        if not 2 <= self.max_length <= 512:
            raise ValueError(f"max_length must be between 2 and 512 tokens, got {self.max_length!r}")
        for name in ("l2", "patience", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def _set_head(self, weight, bias, mean, scale) -> None:
        self.weight_ = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias_ = np.asarray(bias, dtype=np.float32)
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.scale_ = np.asarray(scale, dtype=np.float32)

    # -- prediction ----------------------------------------------------------------------
    def decision_function(self, texts) -> np.ndarray:
        if not hasattr(self, "weight_"):
            raise NotFittedError("this model is not fitted; call fit() or load()")
        z = (self._embed_memo(list(texts)) - self.mean_) / self.scale_
        return z @ self.weight_ + self.bias_

    def predict_proba(self, texts) -> np.ndarray:
        scores = self.decision_function(texts).astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=1, keepdims=True)
        return scores

    # -- files ---------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        if not hasattr(self, "weight_"):
            raise NotFittedError("cannot save a model that is not fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(directory / HEAD_FILE, weight=self.weight_, bias=self.bias_,
                            mean=self.mean_, scale=self.scale_)
        write_model_json(directory, self.kind, self.get_params(), self.classes_,
                         encoder=self.encoder_, history=getattr(self, "history_", []))

    @classmethod
    def load(cls, directory: Path) -> "MiniLMClassifier":
        directory = Path(directory)
        spec = read_model_json(directory)
        if spec.get("kind") != cls.kind:
            raise ValueError(f"{directory} holds a {spec.get('kind')!r} model, not {cls.kind!r}")
        if not isinstance(spec.get("encoder"), dict):
            raise ValueError(f"{directory}: model.json does not say which encoder the head was trained on")
        check_identity(spec["encoder"])
        model = cls(**spec["params"])
        model.classes_ = np.array(spec["classes"])
        model.encoder_ = spec["encoder"]
        with np.load(directory / HEAD_FILE, allow_pickle=False) as f:
            model._set_head(f["weight"], f["bias"], f["mean"], f["scale"])
        if model.weight_.shape != (model.mean_.shape[0], len(model.classes_)):
            raise ValueError(f"{directory}: head shape {model.weight_.shape} does not match "
                             f"{len(model.classes_)} classes")
        return model
