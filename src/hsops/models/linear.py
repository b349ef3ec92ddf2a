"""The linear baseline: TF-IDF (word + character n-grams) with multinomial logistic
regression (softmax), trained by mini-batch AdaGrad on a sparse top-k gradient.

Why this solver: one-vs-rest LinearSVC over ~46k rows and ~2.3k classes took about 12
minutes on 2 cores here, because each of the 2.3k binary problems passes over all the
data; scikit-learn's SGD one-vs-rest was slower still, and a full softmax gradient
touches every class of every feature in a batch (minutes per epoch). One softmax model
passes over the data once per epoch for all classes, and keeping only each row's
``top_k_classes`` competitors in the gradient (see ``_TopKSoftmax``) makes an epoch a
sparse product plus a scatter-add: about 20 seconds on the corpus.

The learned matrix is sparse (a class only gets weights for the features of rows it
competed for), so the export is small and scoring is one sparse product. Training and
prediction need only numpy and scipy: the serving path stays free of torch and
scikit-learn. The training stage calibrates a temperature on the dev split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import sparse

from hsops.models.base import (
    Classifier,
    NotFittedError,
    check_training_input,
    save_directory,
    saved_params,
    softmax,
    write_model_json,
)
from hsops.models.text_features import TfidfFeaturizer

WEIGHTS_FILE = "linear_weights.npz"


class _TopKSoftmax:
    """AdaGrad steps on the softmax cross-entropy, with the gradient kept only for each
    description's ``k`` highest-scoring classes and its true class.

    The full gradient touches every class of every feature in a batch (~2.3k x 100
    values per description); all but a handful of those classes have a probability
    near zero, so their gradient is near zero too. Keeping the top ``k`` makes a step a
    scatter-add of a few thousand values per description and leaves the weight matrix
    sparse: a class only gets weights for the features of descriptions it competed for.
    """

    def __init__(self, n_features: int, n_classes: int, learning_rate: float, k: int):
        self.w = np.zeros((n_features, n_classes), dtype=np.float32)
        self.g2 = np.zeros_like(self.w)  # AdaGrad accumulators
        self.b = np.zeros(n_classes, dtype=np.float32)
        self.b2 = np.zeros_like(self.b)
        self.lr = np.float32(learning_rate)
        self.k = min(k, n_classes)

    def gradient(self, scores: np.ndarray, yb: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """The loss, and d loss / d score on each row's candidate classes."""
        rows = np.arange(len(yb))
        probs = softmax(scores)
        loss = float(-np.log(probs[rows, yb] + 1e-12).mean())
        candidates = np.argpartition(-probs, self.k - 1, axis=1)[:, : self.k]
        has_true = (candidates == yb[:, None]).any(axis=1)
        candidates[~has_true, -1] = yb[~has_true]
        grads = probs[rows[:, None], candidates]
        grads[candidates == yb[:, None]] -= 1.0
        return loss, candidates, grads

    def step(self, xb: sparse.csr_matrix, yb: np.ndarray) -> float:
        n, n_classes = xb.shape[0], self.w.shape[1]
        rows = np.arange(n)
        loss, candidates, grads = self.gradient(xb @ self.w + self.b, yb)

        per_row = np.diff(xb.indptr)
        doc_of_entry = np.repeat(rows, per_row)
        index = (xb.indices.astype(np.int64)[:, None] * n_classes + candidates[doc_of_entry]).ravel()
        values = (xb.data[:, None] * grads[doc_of_entry]).ravel()
        unique, inverse = np.unique(index, return_inverse=True)
        g = np.bincount(inverse, weights=values).astype(np.float32)
        flat_w, flat_g2 = self.w.reshape(-1), self.g2.reshape(-1)
        flat_g2[unique] += g * g
        flat_w[unique] -= self.lr * g / (np.sqrt(flat_g2[unique]) + 1e-8)

        gb = np.bincount(candidates.ravel(), weights=grads.ravel(), minlength=n_classes).astype(np.float32)
        self.b2 += gb * gb
        self.b -= self.lr * gb / (np.sqrt(self.b2) + 1e-8)
        return loss

    def weights(self) -> tuple[np.ndarray, np.ndarray]:
        return self.w, self.b


class _HybridScorer:
    """``x @ weights`` for serving, with the frequent features' rows kept dense.

    The weight matrix is sparse overall, but the features every description has
    (common character bigrams and trigrams) carry a weight for nearly every class: on
    the corpus 5% of the rows hold two thirds of the non-zeros, and a sparse-by-sparse
    product spends most of its time building a nearly dense result from them. Rows with
    at least a quarter of the classes are stored dense (a dense row costs 4 bytes a
    class, a sparse one 8 a non-zero, so memory stays about the same) and scored with
    a sparse-by-dense product, which is 4-6 times faster on the corpus; the rest stays
    sparse. The sum is the same product, up to float rounding.
    """

    def __init__(self, weights: sparse.csr_matrix):
        n_classes = weights.shape[1]
        per_row = np.diff(weights.indptr)
        dense_rows = per_row >= max(1, n_classes // 4)
        self.dense_features = np.flatnonzero(dense_rows)
        self.dense = weights[self.dense_features].toarray()
        keep = sparse.diags((~dense_rows).astype(np.float32))
        self.sparse = sparse.csr_matrix(keep @ weights, dtype=np.float32)
        self.sparse.eliminate_zeros()

    @classmethod
    def from_parts(cls, dense_features: np.ndarray, dense: np.ndarray, sparse_part: sparse.csr_matrix):
        """The scorer as saved (``parts``): no splitting to redo when a replica starts."""
        n_features, n_classes = sparse_part.shape
        if dense.shape != (len(dense_features), n_classes) or (
                len(dense_features) and not 0 <= dense_features.min() <= dense_features.max() < n_features):
            raise ValueError("the saved scorer's dense rows do not fit its sparse part")
        scorer = cls.__new__(cls)
        scorer.dense_features, scorer.dense, scorer.sparse = dense_features, dense, sparse_part
        return scorer

    def parts(self) -> dict[str, np.ndarray]:
        s = self.sparse
        index = np.int32 if s.nnz < 2**31 and s.shape[1] < 2**31 else np.int64  # one dtype: scipy keeps them as is
        return {"dense_features": self.dense_features.astype(np.int64), "dense": self.dense,
                "data": s.data, "indices": s.indices.astype(index), "indptr": s.indptr.astype(index),
                "shape": np.array(s.shape)}

    def whole(self) -> sparse.csr_matrix:
        """The original matrix: the dense rows put back among the sparse ones."""
        n_features, n_dense = self.sparse.shape[0], len(self.dense_features)
        place = sparse.csr_matrix((np.ones(n_dense, dtype=np.float32), (self.dense_features, np.arange(n_dense))),
                                  shape=(n_features, n_dense))
        whole = sparse.csr_matrix(self.sparse + place @ sparse.csr_matrix(self.dense))
        whole.eliminate_zeros()
        whole.sort_indices()
        return whole

    def scores(self, x: sparse.csr_matrix) -> np.ndarray:
        out = (x @ self.sparse).toarray()
        if len(self.dense_features):
            out += x[:, self.dense_features] @ self.dense
        return out


class TfidfLinearClassifier(Classifier):
    kind = "linear"
    _trainer = _TopKSoftmax  # the loss; ``svc`` swaps in the hinge

    def __init__(self, *, char_ngrams: tuple[int, int] = (2, 5), min_df: int = 2,
                 max_features: int = 200_000, fold_digits: bool = False,
                 epochs: int = 4, learning_rate: float = 0.5,
                 batch_size: int = 256, top_k_classes: int = 10,
                 weights_per_class: int = 20_000, seed: int = 0):
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.max_features = max_features
        self.fold_digits = fold_digits
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.top_k_classes = top_k_classes
        self.weights_per_class = weights_per_class
        self.seed = seed

    # -- training ------------------------------------------------------------------------
    def fit(self, texts, labels, *, eval_set=None, on_epoch=None) -> "TfidfLinearClassifier":
        """Fit on ``texts``/``labels``; with ``eval_set=(texts, labels)`` keep the epoch
        with the best top-1 accuracy on it (early stopping)."""
        check_training_input(texts, labels)
        self._check_hyper_parameters()
        self.classes_ = np.array(sorted(set(labels)))
        class_index = {c: i for i, c in enumerate(self.classes_)}
        self.featurizer_ = TfidfFeaturizer(char_ngrams=tuple(self.char_ngrams), min_df=self.min_df,
                                           max_features=self.max_features,
                                           fold_digits=self.fold_digits).fit(list(texts))
        x = self.featurizer_.transform(list(texts))
        y = np.array([class_index[label] for label in labels])
        eval_x = eval_y = None
        if eval_set is not None and len(eval_set[0]):
            eval_x = self.featurizer_.transform(list(eval_set[0]))
            eval_y = np.asarray(eval_set[1])

        trainer = self._trainer(x.shape[1], len(self.classes_), self.learning_rate, self.top_k_classes)
        rng = np.random.default_rng(self.seed)
        best_score, best, self.history_ = -1.0, None, []
        for epoch in range(1, self.epochs + 1):
            order = rng.permutation(x.shape[0])
            loss = 0.0
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                loss += trainer.step(x[rows], y[rows]) * len(rows)
            record = {"epoch": epoch, "train_loss": loss / x.shape[0]}
            if eval_x is not None:
                # scored as it would be kept: capped to weights_per_class
                weights, bias = trainer.weights()
                kept = (self._sparsify(weights), bias.copy())
                scores = (eval_x @ kept[0]).toarray() + kept[1]
                record["eval_top1"] = float(np.mean(self.classes_[scores.argmax(1)] == eval_y))
                if record["eval_top1"] > best_score:
                    best_score, best = record["eval_top1"], kept
                    self.best_epoch_ = epoch
            self.history_.append(record)
            if on_epoch:
                on_epoch(record)
        if best is None:
            weights, bias = trainer.weights()
            best = (self._sparsify(weights), bias)
        self._set_weights(*best)
        return self

    def _check_hyper_parameters(self) -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "min_df": self.min_df,
                    "top_k_classes": self.top_k_classes, "learning_rate": self.learning_rate}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")
        low, high = self.char_ngrams
        if not 1 <= low <= high <= 10:
            raise ValueError(f"char_ngrams must be (low, high) with 1 <= low <= high <= 10, got {self.char_ngrams}")
        if self.max_features is not None and self.max_features < 1:
            raise ValueError(f"max_features must be positive or None, got {self.max_features!r}")
        if self.weights_per_class is not None and self.weights_per_class < 0:
            raise ValueError(f"weights_per_class must be >= 0 (0: no cap), got {self.weights_per_class!r}")

    def _sparsify(self, dense: np.ndarray) -> sparse.csr_matrix:
        """Exact zeros dropped; past ``weights_per_class`` per class, the smallest too."""
        matrix = sparse.csc_matrix(dense)
        matrix.eliminate_zeros()
        keep = self.weights_per_class
        counts = np.diff(matrix.indptr)
        if keep and counts.max(initial=0) > keep:
            for j in np.flatnonzero(counts > keep):
                lo, hi = matrix.indptr[j], matrix.indptr[j + 1]
                column = matrix.data[lo:hi]
                cut = np.partition(np.abs(column), len(column) - keep)[len(column) - keep]
                column[np.abs(column) < cut] = 0.0
            matrix.eliminate_zeros()
        return matrix.tocsr()

    def _set_weights(self, weights: "sparse.spmatrix | _HybridScorer", bias: np.ndarray) -> None:
        """The whole matrix (split into a scorer here) or a scorer already split (loaded)."""
        self._weights_by_class = None
        self._scorer = (weights if isinstance(weights, _HybridScorer)
                        else _HybridScorer(sparse.csr_matrix(weights, dtype=np.float32)))
        self.bias_ = np.asarray(bias, dtype=np.float32)

    @property
    def weights_(self) -> sparse.csr_matrix:
        """The learnt (features x classes) matrix, rebuilt from the scorer's two parts
        (only saving and explanations need it whole; scoring does not)."""
        scorer = getattr(self, "_scorer", None)
        if scorer is None:
            raise AttributeError("weights_")  # not fitted: hasattr() says False
        return scorer.whole()

    # -- prediction ----------------------------------------------------------------------
    def decision_function(self, texts) -> np.ndarray:
        if not getattr(self, "_scorer", None) is not None:
            raise NotFittedError("this model is not fitted; call fit() or load()")
        x = self.featurizer_.transform(list(texts))
        return self._scorer.scores(x) + self.bias_

    def predict_proba(self, texts) -> np.ndarray:
        return softmax(self.decision_function(texts))

    def feature_contributions(self, text: str, class_index: int, top: int = 5) -> list[tuple[str, float]]:
        """The words (and word pairs) of ``text`` that pushed most towards ``class_index``.

        A character n-gram is not something a person reads, so each one's contribution
        is shared out among the words of the text that contain it; a word feature or a
        word pair counts for itself. Each term is named once, with its whole weight.
        """
        from hsops.models.text_features import normalise_text

        words = normalise_text(text, self.featurizer_.fold_digits).split()
        x = self.featurizer_.transform([text])
        if getattr(self, "_weights_by_class", None) is None:  # column slices of CSR are slow
            self._weights_by_class = self.weights_.tocsc()
        column = self._weights_by_class[:, class_index].toarray().ravel()
        totals: dict[str, float] = {}
        for j, v in zip(x.indices, x.data):
            block, term = self.featurizer_.term(int(j))
            weight = float(v * column[j])
            owners = [term] if block == "word" else sorted({w for w in words if term in f" {w} "})
            for owner in owners:
                totals[owner] = totals.get(owner, 0.0) + weight / len(owners)
        ranked = sorted(totals.items(), key=lambda item: -item[1])
        return [(term, weight) for term, weight in ranked[:top] if weight > 0]

    # -- files ---------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        directory = save_directory(directory, getattr(self, "_scorer", None) is not None)
        self.featurizer_.save(directory)
        # the scorer's own parts, uncompressed: a replica's cold start is mostly this file,
        # and inflating it and splitting the matrix again took longer than reading it
        # twice the size (verifying its SHA-256 reads it anyway)
        np.savez(directory / WEIGHTS_FILE, bias=self.bias_, **self._scorer.parts())
        params = {**self.get_params(), "char_ngrams": list(self.char_ngrams)}
        write_model_json(directory, self.kind, params, self.classes_,
                         history=getattr(self, "history_", []))

    @classmethod
    def load(cls, directory: Path) -> "TfidfLinearClassifier":
        directory = Path(directory)
        spec, params = saved_params(cls, directory)
        model = cls(**params)
        model.classes_ = np.array(spec["classes"])
        model.featurizer_ = TfidfFeaturizer.load(directory)
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as f:
            shape = tuple(int(s) for s in f["shape"])
            weights = sparse.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=shape)
            if "dense" in f.files:
                model._set_weights(_HybridScorer.from_parts(f["dense_features"], f["dense"], weights), f["bias"])
            else:  # saved before the scorer's parts were (the whole matrix, compressed)
                model._set_weights(weights, f["bias"])
        if weights.shape != (model.featurizer_.n_features, len(model.classes_)):
            raise ValueError(f"{directory}: weight shape {weights.shape} does not match the "
                             "featurizer and classes")
        return model
