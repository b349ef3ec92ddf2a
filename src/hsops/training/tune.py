"""Bayesian hyper-parameter tuning with Optuna: TPE sampling, median pruning, and a
SQLite study under ``HSOPS_HOME`` that a stopped run resumes.

Why these choices:

* **Search spaces are data** (``SEARCH_SPACES``: kind -> ``space(trial) -> params``) and
  live here, so model modules never import Optuna. A model class may define its own
  ``search_space(trial)`` (classmethod or staticmethod); it wins over the table, which
  is how a plug-in kind becomes tunable.
* **Objective**: fit on the train split, score = dev top-1 of the fitted model, which
  keeps its best epoch. It is measured on the model ``fit`` returns, not taken from the
  per-epoch reports, because a model may change its weights after the epoch it reports
  on (``linear`` caps them to ``weights_per_class`` when it keeps an epoch): the study
  must rank what would be trained and served (the per-epoch reports only drive pruning,
  where a proxy will do). The test split is never read while tuning: it scores only the
  final model, once.
* **Pruning**: every model reports ``eval_top1`` after each epoch (``on_epoch``); the
  trial reports it at step ``epoch`` and stops (``TrialPruned``) when Optuna's
  ``MedianPruner`` says so. The pruner waits for ``PRUNE_AFTER_TRIALS`` completed trials
  (a median of fewer is noise) and judges a trial from ``FIRST_PRUNABLE_EPOCH`` on: after
  one epoch a neural model is still finding its feet and a low learning rate has barely
  moved, so the first epoch ranks trials poorly. A pruned trial is below the median of
  the completed ones at the same epoch, the cheap way to cut the hopeless ones.
* **Reproducible and resumable**: trials are run one at a time with ask/tell, and each
  gets a fresh ``TPESampler(seed=seed + number of trials so far)``. One seed for the
  whole study would replay the same first suggestions after a resume; this way a study
  run as 2 + 2 trials samples what one run of 4 samples. The study name is the kind, the
  dataset version and an optional user name, so re-running a command continues its
  study: ``n_trials`` is the number of *finished* (complete or pruned) trials the study
  should end with, and only the missing ones run.
* **Failures**: a trial that raises is recorded as failed with its error (user attribute
  ``error``) and the study goes on; failed trials do not count as finished. A run stops
  after as many failures as trials it set out to run (a broken search space must not
  loop), and raises ``TuningError`` when the study has no completed trial at all.
* **One tuner per study**: a lock file is held while the study runs; a trial left
  ``RUNNING`` by a killed process is therefore known to be dead and is marked failed.
"""

from __future__ import annotations

import contextlib
import fcntl
import inspect
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import monotonic

import numpy as np
import optuna
from optuna.trial import TrialState

from hsops.data.datasets import Dataset
from hsops.models.base import create, model_class

PRUNE_AFTER_TRIALS = 5
FIRST_PRUNABLE_EPOCH = 2  # epochs count from 1; Optuna prunes from step == n_warmup_steps
STORAGE = Path("tuning") / "optuna.db"  # under HSOPS_HOME


class TuningError(RuntimeError):
    pass


# -- search spaces ----------------------------------------------------------------------------
def _linear_space(trial) -> dict:
    low, high = trial.suggest_categorical("char_ngrams", ["2-5", "3-5", "2-4"]).split("-")
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.05, 2.0, log=True),
        "epochs": trial.suggest_int("epochs", 2, 8),
        "top_k_classes": trial.suggest_int("top_k_classes", 5, 30),
        "weights_per_class": trial.suggest_int("weights_per_class", 5_000, 50_000, log=True),
        "min_df": trial.suggest_int("min_df", 1, 3),
        "char_ngrams": (int(low), int(high)),  # Optuna's choices must be scalars
    }


def _neural_space(trial) -> dict:
    return {
        "embedding_dim": trial.suggest_int("embedding_dim", 64, 256, log=True),
        "learning_rate": trial.suggest_float("learning_rate", 3e-4, 1e-2, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128, 256]),
        "epochs": trial.suggest_int("epochs", 4, 12),  # a ceiling: early stopping inside
        # a log scale cannot reach 0, and "no weight decay" is a real contender
        "weight_decay": trial.suggest_categorical("weight_decay", [0.0, 1e-6, 1e-5, 1e-4, 1e-3]),
    }


SEARCH_SPACES: dict[str, Callable[[optuna.Trial], dict]] = {
    "linear": _linear_space,
    "svc": _linear_space,
    "dnn": lambda t: {**_neural_space(t), "hidden_size": t.suggest_int("hidden_size", 128, 1024, log=True)},
    "lstm": lambda t: {**_neural_space(t), "hidden_size": t.suggest_int("hidden_size", 64, 256, log=True)},
    "textcnn": lambda t: {**_neural_space(t), "filters": t.suggest_int("filters", 64, 256, log=True)},
}


def search_space(kind: str) -> Callable[[optuna.Trial], dict]:
    """The model class's own ``search_space`` if it has one, else the built-in table's."""
    try:
        cls = model_class(kind)
    except ImportError as exc:
        raise ValueError(f"model kind {kind!r} cannot be loaded: {exc}") from exc
    own = getattr(cls, "search_space", None)
    if callable(own):
        return own
    if kind in SEARCH_SPACES:
        return SEARCH_SPACES[kind]
    raise ValueError(f"no search space for model kind {kind!r}: give its class a "
                     f"search_space(trial) -> dict; built-in spaces: {sorted(SEARCH_SPACES)}")


# -- one trial --------------------------------------------------------------------------------
class EpochReporter:
    """The ``on_epoch`` callback of a trial: reports dev top-1 at step ``epoch`` and raises
    ``TrialPruned`` (out of ``fit``) when the pruner says the trial is behind."""

    def __init__(self, trial, on_epoch: Callable[[dict], None] | None = None):
        self.trial, self.on_epoch = trial, on_epoch

    def __call__(self, record: dict) -> None:
        if self.on_epoch:
            self.on_epoch(record)
        if record.get("eval_top1") is None:
            return
        score, step = float(record["eval_top1"]), int(record["epoch"])
        self.trial.report(score, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"dev top-1 {score:.4f} at epoch {step} is below the median")


def fit_and_score(kind: str, params: dict, train_part, dev_part, on_epoch: Callable[[dict], None]) -> float:
    model = create(kind, **params)
    accepted = inspect.signature(model.fit).parameters
    kwargs = {}
    if "eval_set" in accepted:
        kwargs["eval_set"] = dev_part
    if "on_epoch" in accepted:
        kwargs["on_epoch"] = on_epoch
    model.fit(*train_part, **kwargs)
    return float(np.mean(model.predict(dev_part[0]) == np.asarray(dev_part[1])))


# -- the study ----------------------------------------------------------------------------------
@dataclass
class TuneResult:
    study_name: str
    storage: str  # relative to HSOPS_HOME
    kind: str
    dataset_version: str
    n_trials: int  # finished trials asked for
    ran: int  # trials started by this call
    complete: int
    pruned: int
    failed: int
    best_value: float
    best_params: dict
    best_trial: int
    stopped: str | None = None  # why fewer than n_trials finished: "timeout" or "failures"
    errors: list = field(default_factory=list)  # (trial number, error) of this call's failures

    @property
    def finished(self) -> int:
        return self.complete + self.pruned

    def run_tags(self) -> dict:
        """What the registry run of the final model records about its tuning."""
        return {"tune_study": self.study_name, "tune_storage": self.storage,
                "tune_best_params": json.dumps(self.best_params, sort_keys=True),
                "tune_best_trial": self.best_trial}

    def run_metrics(self) -> dict:
        return {"tune_best_dev_top1": self.best_value, "tune_trials_complete": self.complete,
                "tune_trials_pruned": self.pruned, "tune_trials_failed": self.failed}

    def to_dict(self) -> dict:
        return {**asdict(self), "finished": self.finished}


def study_name(kind: str, dataset_version: str, name: str | None = None) -> str:
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise ValueError(f"study name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
    return "-".join(p for p in (kind, dataset_version, name) if p)


def default_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_AFTER_TRIALS, n_warmup_steps=FIRST_PRUNABLE_EPOCH)


def tune(dataset: Dataset, home: Path, *, kind: str, n_trials: int, name: str | None = None,
         timeout: float | None = None, seed: int = 0,
         space: Callable[[optuna.Trial], dict] | None = None,
         pruner: optuna.pruners.BasePruner | None = None,
         on_progress: Callable[[str, dict], None] | None = None) -> TuneResult:
    """Run (or resume) the study of ``kind`` on ``dataset`` until it has ``n_trials``
    finished trials; ``on_progress(stage, info)`` gets "epoch" and "trial" events."""
    if not isinstance(n_trials, int) or n_trials < 1:
        raise ValueError(f"n_trials must be a positive integer, got {n_trials!r}")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be positive seconds, got {timeout!r}")
    space = space or search_space(kind)
    train_part, dev_part = dataset.part("train"), dataset.part("dev")
    if not train_part[0] or not dev_part[0]:
        raise ValueError(f"dataset {dataset.version} needs train and dev rows to tune "
                         f"(has {len(train_part[0])} train, {len(dev_part[0])} dev)")
    notify = on_progress or (lambda stage, info: None)
    name = study_name(kind, dataset.version, name)
    path = Path(home) / STORAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else monotonic() + timeout

    with _quiet_optuna(), _exclusive(path.parent / f"{name}.lock", name):
        storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize",
                                    pruner=pruner or default_pruner(), load_if_exists=True)
        study.set_user_attr("kind", kind)
        study.set_user_attr("dataset_version", dataset.version)
        _fail_interrupted(study, storage)
        missing = n_trials - _count(study, TrialState.COMPLETE, TrialState.PRUNED)
        ran, errors, stopped = 0, [], None
        while _count(study, TrialState.COMPLETE, TrialState.PRUNED) < n_trials:
            if len(errors) >= missing:
                stopped = "failures"
                break
            if deadline is not None and monotonic() >= deadline:
                stopped = "timeout"
                break
            study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
            frozen = _run_trial(study, kind, space, train_part, dev_part, notify)
            ran += 1
            if frozen.state is TrialState.FAIL:
                errors.append((frozen.number, frozen.user_attrs.get("error", "unknown error")))
            notify("trial", {"number": frozen.number, "state": frozen.state.name.lower(),
                             "value": frozen.value, "params": frozen.user_attrs.get("params"),
                             "error": frozen.user_attrs.get("error"),
                             "finished": _count(study, TrialState.COMPLETE, TrialState.PRUNED)})
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            last = f"; last error: {errors[-1][1]}" if errors else ""
            raise TuningError(f"study {name!r} has no completed trial "
                              f"({_count(study, TrialState.FAIL)} failed){last}")
        best = study.best_trial
        return TuneResult(name, STORAGE.as_posix(), kind, dataset.version, n_trials, ran, len(complete),
                          _count(study, TrialState.PRUNED), _count(study, TrialState.FAIL),
                          float(best.value), best.user_attrs["params"], best.number, stopped, errors)


def _run_trial(study, kind, space, train_part, dev_part, notify):
    trial = study.ask()
    reporter = EpochReporter(trial, lambda record: notify("epoch", {"trial": trial.number, **record}))
    try:
        params = space(trial)
        # JSON-shaped (tuples as lists), as it is stored; create() turns lists back into tuples
        trial.set_user_attr("params", json.loads(json.dumps(params)))
        value = fit_and_score(kind, params, train_part, dev_part, reporter)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except KeyboardInterrupt:
        trial.set_user_attr("error", "interrupted")
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of one trial is recorded, not fatal
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, value)
    return study.get_trials(deepcopy=False)[trial.number]


def _count(study, *states: TrialState) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def _fail_interrupted(study, storage) -> None:
    """Trials left RUNNING by a killed tuner (we hold the study's lock, so none is alive)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_user_attr(trial_id, "error", "interrupted: the tuning process stopped")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)


@contextlib.contextmanager
def _exclusive(path: Path, name: str):
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TuningError(f"study {name!r} is being tuned by another process") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna logs every trial (and a traceback per failure); the caller reports instead."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)
