import json

import optuna
import pytest
from optuna.trial import TrialState

from hsops.data.datasets import load_dataset
from hsops.data.ingest import ingest_file
from hsops.training import tune as tune_module
from hsops.training.train import train
from hsops.training.tune import (
    SEARCH_SPACES,
    STORAGE,
    EpochReporter,
    TuningError,
    search_space,
    study_name,
    tune,
)
from tests._samples import sample_rows, write_csv

GOOD = {"epochs": 3, "min_df": 1, "learning_rate": 0.5}
NEVER_PRUNE = optuna.pruners.NopPruner()


@pytest.fixture
def dataset(hsops_home, tmp_path):
    report = ingest_file(write_csv(tmp_path / "d.csv", sample_rows()), hsops_home)
    return load_dataset(hsops_home, report.dataset_version)


def fast_space(trial) -> dict:
    """The linear space with a short schedule: the tests are about the study, not the model."""
    return {**SEARCH_SPACES["linear"](trial), "epochs": 2, "min_df": 1}


def stored_trials(home, name):
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{home / STORAGE}")
    return study.get_trials(deepcopy=False)


def test_a_stopped_study_resumes_and_runs_only_the_missing_trials(dataset, hsops_home):
    first = tune(dataset, hsops_home, kind="linear", n_trials=2, space=fast_space, name="split")
    assert (first.ran, first.finished) == (2, 2)
    second = tune(dataset, hsops_home, kind="linear", n_trials=4, space=fast_space, name="split")
    assert (second.ran, second.finished, second.study_name) == (2, 4, first.study_name)
    assert len(stored_trials(hsops_home, first.study_name)) == 4
    assert tune(dataset, hsops_home, kind="linear", n_trials=3, space=fast_space, name="split").ran == 0

    # seeded by position in the study: 2 + 2 trials sample what 4 in one go sample
    whole = tune(dataset, hsops_home, kind="linear", n_trials=4, space=fast_space, name="whole")
    assert whole.study_name != first.study_name
    params = lambda name: [t.params for t in stored_trials(hsops_home, name)]  # noqa: E731
    assert params(first.study_name) == params(whole.study_name)
    assert len({json.dumps(p, sort_keys=True) for p in params(whole.study_name)}) == 4


def test_a_trial_left_running_by_a_killed_tuner_is_marked_failed(dataset, hsops_home):
    name = study_name("linear", dataset.version)
    (hsops_home / STORAGE).parent.mkdir(parents=True)
    study = optuna.create_study(storage=f"sqlite:///{hsops_home / STORAGE}", study_name=name,
                                direction="maximize")
    study.ask()  # the process dies here: the trial stays RUNNING
    result = tune(dataset, hsops_home, kind="linear", n_trials=1, space=fast_space)
    trials = stored_trials(hsops_home, name)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "interrupted" in trials[0].user_attrs["error"]
    assert (result.failed, result.complete) == (1, 1)


class FakeTrial:
    def __init__(self, prune_at: int):
        self.prune_at, self.reported = prune_at, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.reported[-1][0] >= self.prune_at


def test_the_epoch_callback_reports_dev_top1_and_prunes_when_told():
    trial = FakeTrial(prune_at=2)
    seen = []
    reporter = EpochReporter(trial, seen.append)
    reporter({"epoch": 1, "train_loss": 2.0, "eval_top1": 0.25})
    reporter({"epoch": 1, "train_loss": 2.0})  # no dev score: nothing to report
    with pytest.raises(optuna.TrialPruned):
        reporter({"epoch": 2, "eval_top1": 0.2})
    assert trial.reported == [(1, 0.25), (2, 0.2)]
    assert len(seen) == 3  # every record is passed on


def test_the_default_pruner_waits_for_five_trials_and_the_second_epoch():
    study = optuna.create_study(direction="maximize", pruner=tune_module.default_pruner())

    def poor_trial_pruned_at() -> list[bool]:
        trial = study.ask()
        verdicts = []
        for epoch in (1, 2):
            trial.report(0.1, epoch)
            verdicts.append(trial.should_prune())
        study.tell(trial, state=TrialState.FAIL)  # keep it out of the median
        return verdicts

    for number in range(5):
        assert poor_trial_pruned_at() == [False, False]  # fewer than 5 completed: no median yet
        good = study.ask()
        for epoch in (1, 2):
            good.report(0.9, epoch)
        study.tell(good, 0.9)
    assert poor_trial_pruned_at() == [False, True]  # never judged on its first epoch


def test_a_trial_far_below_the_median_is_pruned_early(dataset, hsops_home):
    def space(trial):  # two sensible trials, then one with a single feature: it cannot learn
        return {**GOOD, "epochs": 4, "max_features": 200_000 if trial.number < 2 else 1}

    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    result = tune(dataset, hsops_home, kind="linear", n_trials=3, space=space, pruner=pruner)
    trials = stored_trials(hsops_home, result.study_name)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert len(trials[2].intermediate_values) < 4  # stopped before its last epoch
    assert (result.complete, result.pruned, result.finished) == (2, 1, 3)
    assert result.best_params["max_features"] == 200_000


def test_a_failing_trial_is_recorded_and_the_study_goes_on(dataset, hsops_home):
    def space(trial):
        return {**GOOD, "learning_rate": -1.0 if trial.number == 1 else 0.5}

    result = tune(dataset, hsops_home, kind="linear", n_trials=2, space=space, pruner=NEVER_PRUNE)
    assert (result.ran, result.complete, result.failed, result.stopped) == (3, 2, 1, None)
    failed = stored_trials(hsops_home, result.study_name)[1]
    assert failed.state is TrialState.FAIL
    assert "learning_rate must be positive" in failed.user_attrs["error"]
    assert result.errors == [(1, failed.user_attrs["error"])]


def test_when_every_trial_fails_tuning_stops_with_the_error(dataset, hsops_home):
    with pytest.raises(TuningError, match="no completed trial.*learning_rate must be positive"):
        tune(dataset, hsops_home, kind="linear", n_trials=2, space=lambda t: {**GOOD, "learning_rate": -1.0})
    trials = stored_trials(hsops_home, study_name("linear", dataset.version))
    assert [t.state for t in trials] == [TrialState.FAIL] * 2  # gave up; did not loop


def test_timeout_starts_no_new_trial_once_passed(dataset, hsops_home, monkeypatch):
    clock = iter(range(0, 1000, 10))  # every look at the clock is 10 s later
    monkeypatch.setattr(tune_module, "monotonic", lambda: next(clock))
    result = tune(dataset, hsops_home, kind="linear", n_trials=5, space=fast_space, timeout=25)
    assert (result.ran, result.stopped) == (2, "timeout")


def test_unknown_kinds_and_kinds_without_a_space_are_refused(dataset, hsops_home, monkeypatch):
    with pytest.raises(ValueError, match="unknown model kind 'nope'"):
        tune(dataset, hsops_home, kind="nope", n_trials=1)
    with pytest.raises(ValueError, match="n_trials must be a positive integer"):
        tune(dataset, hsops_home, kind="linear", n_trials=0)
    with pytest.raises(ValueError, match="study name"):
        tune(dataset, hsops_home, kind="linear", n_trials=1, name="../x")

    class Plugin:
        kind = "plugin"

    monkeypatch.setattr(tune_module, "model_class", lambda kind: Plugin)
    with pytest.raises(ValueError, match="no search space for model kind 'plugin'"):
        search_space("plugin")
    Plugin.search_space = staticmethod(lambda trial: {"epochs": trial.suggest_int("epochs", 1, 2)})
    assert search_space("plugin") is Plugin.search_space
    assert not (hsops_home / STORAGE).exists()  # nothing was started


def test_a_dataset_without_dev_rows_cannot_be_tuned(dataset, hsops_home):
    dataset.splits = ["train"] * len(dataset)
    with pytest.raises(ValueError, match="needs train and dev rows"):
        tune(dataset, hsops_home, kind="linear", n_trials=1)


def test_a_second_tuner_on_the_same_study_is_refused(dataset, hsops_home):
    name = study_name("linear", dataset.version)
    with tune_module._exclusive(_lock_path(hsops_home, name), name):
        with pytest.raises(TuningError, match="another process"):
            tune(dataset, hsops_home, kind="linear", n_trials=1, space=fast_space)


def _lock_path(home, name):
    (home / STORAGE).parent.mkdir(parents=True, exist_ok=True)
    return (home / STORAGE).parent / f"{name}.lock"


def test_the_best_parameters_train_the_final_model_and_describe_the_registry_run(dataset, hsops_home):
    result = tune(dataset, hsops_home, kind="linear", n_trials=2, space=fast_space)
    trained = train(dataset, hsops_home, params=result.best_params)  # lists become tuples again
    assert trained.params["learning_rate"] == result.best_params["learning_rate"]
    assert list(trained.params["char_ngrams"]) == result.best_params["char_ngrams"]
    assert trained.dev_metrics["hs6_top1"] == pytest.approx(result.best_value)  # the study scored this model
    tags, metrics = result.run_tags(), result.run_metrics()
    assert tags["tune_study"] == result.study_name and tags["tune_best_trial"] == result.best_trial
    assert json.loads(tags["tune_best_params"]) == result.best_params
    assert metrics == {"tune_best_dev_top1": result.best_value, "tune_trials_complete": 2,
                       "tune_trials_pruned": 0, "tune_trials_failed": 0}


@pytest.mark.parametrize("kind", sorted(SEARCH_SPACES))
def test_every_built_in_space_names_hyper_parameters_its_model_accepts(kind):
    from hsops.models.base import check_params, model_class

    try:
        cls = model_class(kind)
    except (ImportError, ValueError) as exc:  # a kind still being written, or torch missing
        pytest.skip(f"{kind} not available: {exc}")
    study = optuna.create_study(direction="maximize")
    for _ in range(3):
        check_params(cls, search_space(kind)(study.ask()))  # raises on an unknown name or type
