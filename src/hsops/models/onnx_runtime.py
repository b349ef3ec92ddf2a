"""Serve an exported neural model with onnxruntime: our encoder in numpy, the network in
ONNX, no torch import. Loaded by :func:`hsops.models.runtime.load_runtime` for any
artifact whose ``model.json`` says ``"runtime": "onnx"``.

Threads: one intra-op thread by default (``HSOPS_ORT_THREADS`` to change). For one short
description the work is a few small matrix products, where a thread pool costs more in
hand-offs than it saves, and a server scales by replicas, not by threads per request.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from hsops.models.base import NotFittedError, read_model_json, softmax
from hsops.models.encoder import TextEncoder

RUN_BATCH = 256


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("HSOPS_ORT_THREADS", "1"))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers are not the user's
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class OnnxTextClassifier:
    """``predict_proba`` of an exported neural kind; same answers as the torch model."""

    def __init__(self, kind: str, classes: np.ndarray, encoder: TextEncoder,
                 session: ort.InferenceSession, spec: dict):
        self.kind = kind
        self.classes_ = classes
        self.encoder = encoder
        self._session = session
        self._input = spec.get("input", "ids")
        self._output = spec.get("output", "logits")

    def __repr__(self) -> str:
        return f"OnnxTextClassifier(kind={self.kind!r}, classes={len(self.classes_)})"

    @classmethod
    def load(cls, directory: Path) -> "OnnxTextClassifier":
        directory = Path(directory)
        spec = read_model_json(directory)
        onnx_spec = spec.get("onnx") or {}
        name = str(onnx_spec.get("file", "model.onnx"))
        if Path(name).name != name:  # only a file of this artifact, whose hash was checked
            raise ValueError(f"{directory}: model.json names {name!r}, not a file of the artifact")
        model_file = directory / name
        if not model_file.is_file():
            raise NotFittedError(f"{directory}: no exported ONNX model ({model_file.name})")
        session = _session(model_file)
        classes = np.array(spec["classes"])
        outputs = session.get_outputs()
        width = outputs[0].shape[-1] if outputs else None
        if isinstance(width, int) and width != len(classes):
            raise ValueError(f"{directory}: the ONNX model gives {width} scores for {len(classes)} classes")
        model = cls(spec["kind"], classes, TextEncoder.load(directory), session, onnx_spec)
        model._check_table_size()
        return model

    def _check_table_size(self) -> None:
        """The encoder's largest id must exist in the network's embedding table: a
        mismatch would otherwise surface as an out-of-bounds error on some request."""
        largest = np.full((1, 1, self.encoder.width), self.encoder.n_ids - 1,
                          dtype=np.int64)
        try:
            self._session.run([self._output], {self._input: largest})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise ValueError(f"the encoder ({self.encoder.n_ids} ids) does not fit the network: {exc}") from exc

    def logits(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), RUN_BATCH):
            ids = self.encoder.encode(texts[start : start + RUN_BATCH])
            out.append(self._session.run([self._output], {self._input: ids})[0])
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), dtype=np.float32)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return softmax(self.logits(list(texts)).astype(np.float64))
