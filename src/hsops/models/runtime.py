"""Load any exported artifact for serving, by the runtime its ``model.json`` names.

Neural kinds export ONNX (``"runtime": "onnx"``) and are served by onnxruntime without
torch; the linear kinds are plain numpy/scipy and load as themselves; a plug-in kind
without an export runs in its own framework through the Classifier contract.
"""

from __future__ import annotations

from pathlib import Path

from hsops.models.base import load_model, read_model_json


def load_runtime(directory: Path):
    """An object with ``kind``, ``classes_`` and ``predict_proba(texts)``."""
    spec = read_model_json(directory)
    if spec.get("runtime") == "onnx":
        from hsops.models.onnx_runtime import OnnxTextClassifier

        return OnnxTextClassifier.load(directory)
    return load_model(directory)
