"""What the PyTorch text classifiers (dnn, lstm, textcnn) share: the sub-word embedding
over our :mod:`~hsops.models.encoder`, the training loop, and the export.

Training: Adam on cross-entropy, mini-batches in a seeded order, early stopping on the
dev split (``eval_set``) with ``patience`` epochs, the best epoch's weights kept. The
torch thread count is set to ``num_threads`` for the fit and restored after (0 leaves
torch's own setting), so a worker can bound what one training takes of the machine.
Same data, seed and thread count give the same weights (float sums are ordered by the
thread count, so a different count gives a slightly different model).

Export (``save``): ``encoder.json`` (vocabulary), ``weights.npz`` (the state dict, for
``load`` in-framework) and ``model.onnx`` (ids -> logits, dynamic batch and length),
which the serving path runs with onnxruntime and no torch (see ``onnx_runtime.py``).
Each module is written so a text's logits do not depend on how much padding its batch
has: padded positions are masked, never averaged or pooled in.
"""

from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hsops.models.base import (
    Classifier,
    NotFittedError,
    check_training_input,
    save_directory,
    saved_params,
    softmax,
    write_model_json,
)
from hsops.models.encoder import TextEncoder

WEIGHTS_FILE = "weights.npz"
ONNX_FILE = "model.onnx"
ONNX_OPSET = 17
PREDICT_BATCH = 512
EMBEDDING_INIT_STD = 0.05
EMBEDDING_LR_SCALE = 5.0  # the sparse table learns faster than the dense layers (see _optimisers)


class SubwordEmbedding(nn.Module):
    """Ids ``[b, t, s]`` -> token vectors ``[b, t, d]`` (mean of a token's non-pad ids)
    and the token mask ``[b, t, 1]`` (1 where the token exists)."""

    def __init__(self, n_ids: int, dim: int):
        super().__init__()
        # sparse gradients: a batch touches a few thousand of the ~80k rows, and a dense
        # Adam step over the whole table cost more than the rest of the step together
        self.table = nn.Embedding(n_ids, dim, padding_idx=0, sparse=True)
        # small initial vectors: Adam moves a row by about the learning rate per update,
        # and a rare n-gram is updated a few times per epoch; from N(0, 1) it would
        # hardly leave its random start
        nn.init.normal_(self.table.weight, std=EMBEDDING_INIT_STD)
        with torch.no_grad():
            self.table.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        present = (ids > 0).to(self.table.weight.dtype)
        count = present.sum(dim=2, keepdim=True)
        tokens = self.table(ids).sum(dim=2) / count.clamp(min=1.0)
        return tokens, (count > 0).to(tokens.dtype)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


def masked_max(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over valid positions; 0 for a text with no tokens (x is post-ReLU or bounded)."""
    return (x * mask + (mask - 1.0) * 1e4).max(dim=1).values * (mask.sum(dim=1) > 0).to(x.dtype)


@dataclass(kw_only=True, repr=False, eq=False)
class NeuralTextClassifier(Classifier):
    """Base of the torch kinds; a subclass (also a keyword-only dataclass, which gives
    the scikit-learn style constructor) adds its own hyper-parameters, sets ``kind`` and
    builds its ``nn.Module``."""

    kind = "abstract-neural"

    embedding_dim: int = 128
    max_tokens: int = 32
    max_words: int = 30_000
    min_count: int = 2
    hash_buckets: int = 50_000
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 3e-3
    dropout: float = 0.3
    weight_decay: float = 0.0
    patience: int = 2
    # one thread by default: results then do not depend on the machine's core count, and
    # on a shared 2-core machine two threads trained 5x slower than one (spinning workers)
    num_threads: int = 1
    seed: int = 0

    def _module(self, n_ids: int, n_classes: int) -> nn.Module:
        raise NotImplementedError

    # -- hyper-parameters ------------------------------------------------------------------
    def _encoder(self) -> TextEncoder:
        return TextEncoder(max_tokens=self.max_tokens, max_words=self.max_words,
                           min_count=self.min_count, hash_buckets=self.hash_buckets)

    def _check_hyper_parameters(self) -> None:
        positive = {name: value for name, value in self.get_params().items()
                    if name not in {"seed", "weight_decay", "dropout", "num_threads", "patience"}
                    and isinstance(value, (int, float)) and not isinstance(value, bool)}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{self.kind}: {name} must be positive, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{self.kind}: dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("weight_decay", "num_threads", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{self.kind}: {name} must be >= 0, got {getattr(self, name)!r}")
        widths = getattr(self, "filter_widths", (1,))
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths):
            raise ValueError(f"{self.kind}: filter_widths must be positive integers, got {widths!r}")

    # -- training --------------------------------------------------------------------------
    def fit(self, texts, labels, *, eval_set=None, on_epoch=None) -> "NeuralTextClassifier":
        """Fit on ``texts``/``labels``; with ``eval_set=(texts, labels)`` keep the epoch
        with the best top-1 accuracy on it and stop after ``patience`` epochs without
        improvement. ``on_epoch(record)`` is called after every epoch."""
        check_training_input(texts, labels)
        self._check_hyper_parameters()
        threads = torch.get_num_threads()
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        try:
            self._fit(list(texts), list(labels), eval_set, on_epoch)
        finally:
            torch.set_num_threads(threads)
        return self

    def _fit(self, texts, labels, eval_set, on_epoch) -> None:
        torch.manual_seed(self.seed)
        self.classes_ = np.array(sorted(set(labels)))
        index = {c: i for i, c in enumerate(self.classes_)}
        self.encoder_ = self._encoder().fit(texts)
        x = torch.from_numpy(self.encoder_.encode(texts))
        y = torch.tensor([index[label] for label in labels], dtype=torch.long)
        eval_texts = list(eval_set[0]) if eval_set is not None else []
        eval_y = np.asarray(eval_set[1]) if eval_texts else None

        self.module_ = self._module(self.encoder_.n_ids, len(self.classes_))
        optimisers = _optimisers(self.module_, self.learning_rate, self.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        order_rng = torch.Generator().manual_seed(self.seed)
        best_score, best_state, stale, self.history_ = -1.0, None, 0, []
        for epoch in range(1, self.epochs + 1):
            self.module_.train()
            total = 0.0
            for rows in torch.randperm(len(y), generator=order_rng).split(self.batch_size):
                batch = _trim(x[rows])
                for optimiser in optimisers:
                    optimiser.zero_grad()
                loss = loss_fn(self.module_(batch), y[rows])
                loss.backward()
                for optimiser in optimisers:
                    optimiser.step()
                total += loss.item() * len(rows)
            record = {"epoch": epoch, "train_loss": total / len(y)}
            if eval_y is not None:
                predicted = self.classes_[self._logits(eval_texts).argmax(axis=1)]
                record["eval_top1"] = float(np.mean(predicted == eval_y))
                if record["eval_top1"] > best_score:
                    best_score, stale = record["eval_top1"], 0
                    best_state = copy.deepcopy(self.module_.state_dict())
                    self.best_epoch_ = epoch
                else:
                    stale += 1
            self.history_.append(record)
            if on_epoch:
                on_epoch(record)
            if eval_y is not None and stale > self.patience:
                break
        if best_state is not None:
            self.module_.load_state_dict(best_state)
        self.module_.eval()

    # -- prediction ------------------------------------------------------------------------
    def _logits(self, texts: list[str]) -> np.ndarray:
        if not hasattr(self, "module_"):
            raise NotFittedError("this model is not fitted; call fit() or load()")
        self.module_.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), PREDICT_BATCH):
                ids = self.encoder_.encode(texts[start : start + PREDICT_BATCH])
                out.append(self.module_(torch.from_numpy(ids)).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), dtype=np.float32)

    def predict_proba(self, texts) -> np.ndarray:
        return softmax(self._logits(list(texts)).astype(np.float64))

    # -- files -----------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = save_directory(directory, hasattr(self, "module_"))
        self.encoder_.save(directory)
        state = {k: v.detach().cpu().numpy() for k, v in self.module_.state_dict().items()}
        np.savez_compressed(directory / WEIGHTS_FILE, **state)
        self._export_onnx(directory / ONNX_FILE)
        params = json_safe(self.get_params())
        write_model_json(directory, self.kind, params, self.classes_, runtime="onnx",
                         onnx={"file": ONNX_FILE, "input": "ids", "output": "logits"},
                         history=getattr(self, "history_", []))

    def _export_onnx(self, path: Path) -> None:
        self.module_.eval()
        example = torch.from_numpy(self.encoder_.encode(["plastic cups 70 ctns"]))
        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the exporter's notes on tracing; parity is tested
            warnings.simplefilter("ignore")
            torch.onnx.export(self.module_, (example,), buffer, dynamo=False, opset_version=ONNX_OPSET,
                              input_names=["ids"], output_names=["logits"],
                              dynamic_axes={"ids": {0: "batch", 1: "tokens"}, "logits": {0: "batch"}})
        path.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, directory: Path) -> "NeuralTextClassifier":
        directory = Path(directory)
        spec, params = saved_params(cls, directory)
        model = cls(**params)
        model.classes_ = np.array(spec["classes"])
        model.encoder_ = TextEncoder.load(directory)
        model.module_ = model._module(model.encoder_.n_ids, len(model.classes_))
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as f:
            state = {k: torch.from_numpy(f[k]) for k in f.files}
        model.module_.load_state_dict(state)
        model.module_.eval()
        model.history_ = spec.get("history", [])
        return model


def _optimisers(module: nn.Module, learning_rate: float, weight_decay: float) -> list:
    """SparseAdam for the sparse embedding table, Adam (with weight decay) for the rest.

    The table gets a larger step: each row is updated only in batches that contain its
    word or n-gram, so at the dense layers' rate most rows would barely train."""
    sparse = [p for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse
              for p in m.parameters()]
    dense = [p for p in module.parameters() if all(p is not q for q in sparse)]
    optimisers = [torch.optim.Adam(dense, lr=learning_rate, weight_decay=weight_decay)]
    if sparse:
        optimisers.append(torch.optim.SparseAdam(sparse, lr=learning_rate * EMBEDDING_LR_SCALE))
    return optimisers


def _trim(ids: torch.Tensor) -> torch.Tensor:
    """Drop trailing all-padding token columns of a batch (faster; results unchanged)."""
    used = (ids > 0).any(dim=2).any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else 1
    return ids[:, :length]


def json_safe(params: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
