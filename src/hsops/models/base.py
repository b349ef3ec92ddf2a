"""The Classifier contract every model kind implements (scikit-learn style).

* the constructor takes only keyword hyper-parameters and stores them unchanged;
* ``fit(texts, labels) -> self``; ``predict_proba(texts) -> ndarray[n, n_classes]`` with
  rows summing to 1, columns in the order of ``classes_``;
* ``save(dir)`` writes plain files only (JSON, npz, ONNX, safetensors; never a pickle)
  and ``load(dir)`` reads them back to a model with identical predictions.

Kinds are found by name: the built-ins below plus any plug-in registered under the
``hsops.models`` entry-point group, so a third-party model passes the same conformance
suite and serves through the same Predictor.
"""

from __future__ import annotations

import inspect
import json
import math
from abc import ABC, abstractmethod
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

MODEL_FILE = "model.json"


class NotFittedError(RuntimeError):
    pass


class Classifier(ABC):
    kind: str = "abstract"
    classes_: np.ndarray

    def get_params(self) -> dict:
        names = [p.name for p in inspect.signature(type(self).__init__).parameters.values()
                 if p.kind is p.KEYWORD_ONLY]
        return {name: getattr(self, name) for name in names}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    @abstractmethod
    def fit(self, texts: list[str], labels: list[str]) -> "Classifier": ...

    @abstractmethod
    def predict_proba(self, texts: list[str]) -> np.ndarray: ...

    def predict(self, texts: list[str]) -> np.ndarray:
        proba = self.predict_proba(texts)  # raises NotFittedError before classes_ is read
        return self.classes_[np.argmax(proba, axis=1)]

    @abstractmethod
    def save(self, directory: Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, directory: Path) -> "Classifier": ...


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax (a new array; ``scores`` is left as it was)."""
    scores = scores - scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


def check_training_input(texts: list[str], labels: list[str]) -> None:
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(texts) == 0:
        raise ValueError("cannot fit on no examples")
    if len(set(labels)) < 2:
        raise ValueError("need at least two distinct classes to fit a classifier")


def write_model_json(directory: Path, kind: str, params: dict, classes: np.ndarray, **extra) -> None:
    body = {"kind": kind, "params": params, "classes": [str(c) for c in classes], **extra}
    (Path(directory) / MODEL_FILE).write_text(json.dumps(body), encoding="utf-8")


def read_model_json(directory: Path) -> dict:
    return json.loads((Path(directory) / MODEL_FILE).read_text(encoding="utf-8"))


def save_directory(directory: Path, fitted: bool) -> Path:
    """The folder ``save`` writes into (created), after refusing an unfitted model."""
    if not fitted:
        raise NotFittedError("cannot save a model that is not fitted")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def saved_params(cls: type["Classifier"], directory: Path) -> tuple[dict, dict]:
    """``(model.json, constructor arguments)`` of a model ``cls`` saved in ``directory``.

    Refuses a folder holding another kind; JSON lists become tuples where the
    constructor's default is a tuple."""
    spec = read_model_json(directory)
    if spec.get("kind") != cls.kind:
        raise ValueError(f"{directory} holds a {spec.get('kind')!r} model, not {cls.kind!r}")
    defaults = {p.name: p.default for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is p.KEYWORD_ONLY}
    params = {k: tuple(v) if isinstance(defaults.get(k), tuple) and isinstance(v, list) else v
              for k, v in spec["params"].items()}
    return spec, params


def _builtin_kinds() -> dict[str, str]:
    return {"linear": "hsops.models.linear:TfidfLinearClassifier",
            "svc": "hsops.models.svc:LinearSVCClassifier",
            "dnn": "hsops.models.dnn:DNNClassifier",
            "lstm": "hsops.models.lstm:LSTMClassifier",
            "textcnn": "hsops.models.textcnn:TextCNNClassifier"}


def model_kinds() -> dict[str, str]:
    """Kind name -> 'module:Class', built-ins first, then entry-point plug-ins."""
    kinds = dict(_builtin_kinds())
    for ep in entry_points(group="hsops.models"):
        kinds.setdefault(ep.name, ep.value)
    return kinds


def model_class(kind: str) -> type[Classifier]:
    kinds = model_kinds()
    if kind not in kinds:
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {sorted(kinds)}")
    module_name, _, attr = kinds[kind].partition(":")
    module = __import__(module_name, fromlist=[attr])
    return getattr(module, attr)


def check_params(cls: type[Classifier], params: dict) -> dict:
    """Hyper-parameters checked against the constructor: unknown names and values of
    the wrong type are refused with a message that lists what is accepted."""
    signature = inspect.signature(cls.__init__).parameters
    accepted = {n: p.default for n, p in signature.items() if p.kind is p.KEYWORD_ONLY}
    checked = {}
    for name, value in params.items():
        if name not in accepted:
            raise ValueError(f"{cls.kind} has no hyper-parameter {name!r}; accepted: {sorted(accepted)}")
        default = accepted[name]
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            value = float(value) if ok else value
        elif isinstance(default, tuple):
            ok = isinstance(value, (list, tuple)) and len(value) == len(default)
            value = tuple(value) if ok else value
        else:
            ok = True
        if not ok:
            raise ValueError(f"{cls.kind}: {name} must be like {default!r} "
                             f"({type(default).__name__}), got {value!r}")
        checked[name] = value
    return checked


def create(kind: str, **params) -> Classifier:
    cls = model_class(kind)
    return cls(**check_params(cls, params))


def load_model(directory: Path) -> Classifier:
    """Load any saved model by the kind recorded in its ``model.json``."""
    return model_class(read_model_json(directory)["kind"]).load(directory)
