"""The Predictor: a verified, calibrated model that answers with HS codes people can act on.

A Predictor is built from an exported artifact directory only. The manifest is checked
before any file is parsed, so a tampered or truncated copy is refused with an
:class:`~hsops.models.artifact.ArtifactError` instead of serving wrong answers. Nothing
here imports torch, MLflow, pandas or scikit-learn: the serving process stays small and
starts fast.

Calibration (``calibration.json``, written by training) holds the temperature ``T`` and
the abstention threshold. Confidences are ``softmax(log p / T)``; this is the same
formula as ``hsops.training.calibration.apply_temperature``, repeated here (three lines)
so the serving path does not import the training package and scipy.optimize with it. A
test pins the two together.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hsops.domain import nomenclature
from hsops.models import artifact
from hsops.models.artifact import ArtifactError
from hsops.models.base import Classifier
from hsops.models.explain import occlusion
from hsops.models.runtime import load_runtime
from hsops.models.calibration import Calibration, Headings, rank_top
from hsops.registry.index import ModelNotFound, index_path, resolve
from hsops.serving import metrics

log = logging.getLogger("hsops.serving")

MAX_TOP_K = 20
EXPLAIN_TERMS = 5


@dataclass(frozen=True)
class Prediction:
    """One answer: the best HS6 code, how sure, what else it might be, and which model said so.

    ``abstain`` says the HS6 answer is not trustworthy. ``level`` says what is:
    ``"subheading"`` (the HS6 code), ``"heading"`` (only the 4-digit heading, given in
    ``heading`` with its text and confidence) or ``"none"``.
    """

    hs_code: str
    hs_description: str
    in_hs2022: bool
    confidence: float
    alternatives: list[dict]
    abstain: bool
    explanation: list[dict] | None
    model_version: str
    level: str = "subheading"
    heading: dict | None = None  # {"code", "description", "confidence"} when level == "heading"

    def to_dict(self) -> dict:
        # by hand: dataclasses.asdict deep-copies every alternative, a fifth of the
        # serving time of a 256-description request; the nested dicts are built per
        # prediction and never changed, so sharing them is safe
        return {"hs_code": self.hs_code, "hs_description": self.hs_description, "in_hs2022": self.in_hs2022,
                "confidence": self.confidence, "alternatives": self.alternatives, "abstain": self.abstain,
                "explanation": self.explanation, "model_version": self.model_version, "level": self.level,
                "heading": self.heading}


def _hs6(label: object) -> str:
    """The 6-digit subheading of a class label (labels are HS6 already; be defensive)."""
    digits = "".join(ch for ch in str(label) if ch.isdigit())
    return digits[:6] if len(digits) >= 6 else digits.zfill(6)


class Predictor:
    """Answers ``predict(texts)`` from one verified artifact; safe to share across threads."""

    def __init__(self, model: Classifier, *, model_version: str, calibration: Calibration | None = None,
                 artifact_dir: Path | None = None, manifest: dict | None = None):
        self.model = model
        self.model_version = model_version
        self.calibration = calibration or Calibration()
        self.artifact_dir = artifact_dir
        self.manifest = manifest or {}
        self._codes = [_hs6(c) for c in model.classes_]
        self._headings = Headings(self._codes)
        self._describe = nomenclature().describe
        self._hs2022 = {c for c in self._codes if nomenclature().exists(c)}

    def __repr__(self) -> str:
        return (f"Predictor(model_version={self.model_version!r}, kind={self.model.kind!r}, "
                f"classes={len(self._codes)}, T={self.calibration.temperature:.3g}, "
                f"threshold={self.calibration.threshold:.3g})")

    @property
    def threshold(self) -> float:
        return self.calibration.threshold

    @classmethod
    def from_dir(cls, path: Path, model_version: str) -> "Predictor":
        """Verify the artifact at ``path`` against its manifest, then load it."""
        path = Path(path)
        manifest = artifact.verify(path)  # raises ArtifactError before anything is parsed
        calibration = Calibration.read(path)
        try:
            model = load_runtime(path)
        except Exception as exc:  # noqa: BLE001 - whatever a corrupt file raises, refuse it
            raise ArtifactError(f"{path}: the model files do not load ({type(exc).__name__}: {exc})") from exc
        return cls(model, model_version=model_version, calibration=calibration,
                   artifact_dir=path, manifest=manifest)

    @classmethod
    def from_registry(cls, home: Path, ref: str = "champion") -> "Predictor":
        """The model a registry reference points at; ``model_version`` is ``NAME@VERSION``.

        Raises ``registry.index.ModelNotFound`` when nothing is registered under ``ref``.
        """
        resolved = resolve(Path(home), ref)
        return cls.from_dir(resolved.artifact_dir, resolved.label)

    def _explain(self, text: str, class_index: int) -> list[dict]:
        """The words that drove ``class_index``: the model's own weights when it has them
        (linear kinds), occlusion through ``predict_proba`` otherwise (any kind)."""
        own = getattr(self.model, "feature_contributions", None)
        if own is None:
            return occlusion(self.model.predict_proba, text, class_index, top=EXPLAIN_TERMS)
        terms = []
        for term, weight in own(text, class_index, top=EXPLAIN_TERMS):
            # the term is a normalised word (or pair); point at it where the text has it
            words = r"[^a-z0-9]+".join(re.escape(w) for w in term.split())
            found = re.search(rf"(?<![a-z0-9]){words}(?![a-z0-9])", text, re.IGNORECASE)
            span = {"start": found.start(), "end": found.end()} if found else {}
            terms.append({"term": term, "weight": float(weight), **span})
        return terms

    def predict(self, texts: list[str], top_k: int = 5, explain: bool = False) -> list[Prediction]:
        if isinstance(texts, str):
            raise TypeError("predict() takes a list of texts, not one string")
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= MAX_TOP_K:
            raise ValueError(f"top_k must be an integer from 1 to {MAX_TOP_K}, got {top_k!r}")
        texts = list(texts)
        if not texts:
            return []
        proba = self.calibration.apply(np.asarray(self.model.predict_proba(texts), dtype=np.float64))
        heading_codes, heading_confidences = self._headings.best(proba)
        k = min(top_k, proba.shape[1])
        # partition out the top k, then sort only those: O(classes) per row, not a full sort
        ranked, _ = rank_top(proba, k)
        out = []
        for text, row, order, heading_code, heading_confidence in zip(
                texts, proba, ranked, heading_codes, heading_confidences):
            ranks = [{"hs_code": self._codes[j], "hs_description": self._describe(self._codes[j]),
                      "in_hs2022": self._codes[j] in self._hs2022, "confidence": float(row[j])}
                     for j in order]
            best = ranks[0]
            explanation = None
            if explain:
                explanation = self._explain(text, int(order[0]))
            level = self.calibration.level(best["confidence"], float(heading_confidence))
            heading = None
            if level == "heading":
                heading = {"code": str(heading_code), "description": self._describe(str(heading_code)),
                           "confidence": float(heading_confidence)}
            out.append(Prediction(
                hs_code=best["hs_code"], hs_description=best["hs_description"],
                in_hs2022=best["in_hs2022"], confidence=best["confidence"], alternatives=ranks[1:],
                abstain=self.calibration.abstains(best["confidence"]),
                explanation=explanation, model_version=self.model_version, level=level, heading=heading))
        return out


@runtime_checkable
class PredictionSink(Protocol):
    """Where served predictions are recorded (the platform's state store, in practice).

    Defined here, not in ``platform``, because dependencies point from platform to
    serving: the app accepts anything with this method. Each row is a dict with
    ``request_id, batch_id, created_at, text, hs_code, confidence, abstain,
    model_version, alternatives`` (a list of dicts).
    """

    def log_predictions(self, rows: list[dict]) -> None: ...


class RegistrySource:
    """A zero-argument callable giving the Predictor a registry reference points at now.

    Serving calls it on every request so a promotion (the champion alias moving) takes
    effect without a restart. Two ways to follow the registry:

    * on demand (the default): the index is re-read only when its file changes (mtime,
      size, inode), and a changed target is loaded in the calling request, under a lock
      so concurrent requests do not load the same model twice;
    * ``watch()``: a thread polls the index and loads a new target *beside* the one being
      served, then swaps the reference; requests never wait for a load and never see a
      half-loaded model, which is how a replica swaps models under traffic with no failed
      request. A target that fails to load (a refused artifact) is logged and counted,
      and the old model keeps serving.
    """

    def __init__(self, home: Path, ref: str = "champion"):
        self.home = Path(home)
        self.ref = ref
        self._lock = threading.Lock()
        self._current: tuple[tuple | None, Predictor] | None = None  # (index stamp, predictor)
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._refused: tuple | None = None  # the stamp whose target failed to load
        self.on_swap: Callable[[Predictor | None, Predictor], None] | None = None

    def _index_stamp(self) -> tuple | None:
        try:
            st = os.stat(index_path(self.home))
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def __call__(self) -> Predictor:
        current = self._current  # one read of one tuple: stamp and predictor always agree
        if self._watcher is not None and current is not None:
            return current[1]
        stamp = self._index_stamp()
        if current is not None and current[0] == stamp:
            return current[1]
        with self._lock:
            current = self._current
            if current is not None and (current[0] == stamp or self._watcher is not None):
                return current[1]
            return self._load(stamp)

    def _load(self, stamp: tuple | None) -> Predictor:
        """Resolve and (if the target changed) load; caller holds the lock."""
        resolved = resolve(self.home, self.ref)  # ModelNotFound propagates to the caller
        old = self._current[1] if self._current is not None else None
        predictor = old
        if (predictor is None or predictor.artifact_dir != resolved.artifact_dir
                or predictor.model_version != resolved.label):
            predictor = Predictor.from_dir(resolved.artifact_dir, resolved.label)
            metrics.MODEL_LOADS.labels("loaded").inc()
        self._current = (stamp, predictor)
        if predictor is not old and self.on_swap is not None:
            self.on_swap(old, predictor)
        return predictor

    def watch(self, interval: float = 0.5) -> RegistrySource:
        """Follow the registry from a background thread (see the class docstring)."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._follow, args=(interval,), name="hsops-model-watch",
                                             daemon=True)
            self._watcher.start()
        return self

    def _follow(self, interval: float) -> None:
        while not self._stop.wait(interval):
            stamp = self._index_stamp()
            current = self._current
            if (current is not None and current[0] == stamp) or stamp == self._refused:
                continue
            try:
                with self._lock:
                    self._load(stamp)
                self._refused = None
            except ModelNotFound:
                continue  # nothing under the alias yet: keep what is served (or nothing)
            except Exception as exc:  # noqa: BLE001 - a refused artifact must not stop serving
                self._refused = stamp
                metrics.MODEL_LOADS.labels("refused").inc()
                log.error("kept serving %s: the new %s target failed to load: %s",
                          current[1].model_version if current else "nothing", self.ref, exc)

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)


def log_answers(sink: "PredictionSink", batch_id: str, texts: list[str], items: list[dict]) -> None:
    """Record each answer under its request id.

    A failing sink is logged, not raised: the caller already has a valid answer and
    refusing it because the log is down would turn a monitoring gap into an outage.
    """
    created_at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    rows = [{"request_id": item["request_id"], "batch_id": batch_id, "created_at": created_at,
             "text": text, "hs_code": item["hs_code"], "confidence": item["confidence"],
             "abstain": item["abstain"], "model_version": item["model_version"],
             "alternatives": item["alternatives"]}
            for text, item in zip(texts, items)]
    try:
        sink.log_predictions(rows)
    except Exception:
        log.exception("could not log %d predictions of request %s", len(rows), batch_id)
