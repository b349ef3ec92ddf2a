"""The ``hsops`` command. Every command that reports takes ``--json`` for machines.

Heavy libraries (MLflow, the training stack) are imported inside the commands that need
them, so ``hsops --help`` and ``hsops predict`` start quickly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hsops._cli_common import _emit_json, _fail, console, err
from hsops._config import hsops_home
from hsops.cli_platform import pipeline_app, up
from hsops.cli_serving import batch, invoke, jobs_app, keys_app, serve

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Serverless MLOps for HS code prediction: ingest, train, evaluate, serve.")
models_app = typer.Typer(help="The model registry: versions, metrics, aliases.", invoke_without_command=True)
app.add_typer(models_app, name="models")
app.add_typer(pipeline_app, name="pipeline")
app.command("up")(up)
app.command("serve")(serve)
app.command("batch")(batch)
app.command("invoke")(invoke)
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")


def _parse_params(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--param takes KEY=VALUE, got {pair!r}")
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


# -- ingest ---------------------------------------------------------------------------------
def run_ingest(path: Path, text_column, label_column, fmt, quiet: bool, encoding=None):
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from hsops.data.ingest import ingest_file
    from hsops.data.readers import DataFileError

    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err,
                      disable=quiet, transient=True) as progress:
            task = progress.add_task(f"reading {path.name}", total=None)
            report = ingest_file(path, hsops_home(), text_column=text_column, label_column=label_column,
                                 fmt=fmt, encoding=encoding, on_progress=lambda n: progress.update(
                                     task, description=f"reading {path.name}: {n:,} rows"))
    except DataFileError as exc:
        _fail(str(exc))
    return report


@app.command()
def ingest(path: Path = typer.Argument(..., help="CSV, TSV, JSONL or Parquet file (optionally .gz)"),
           text_column: Optional[str] = typer.Option(None, help="column with the description"),
           label_column: Optional[str] = typer.Option(None, help="column with the HS code"),
           fmt: Optional[str] = typer.Option(None, "--format", help="csv, tsv, jsonl or parquet"),
           encoding: Optional[str] = typer.Option(None, help="text encoding (default UTF-8; UTF-16 by BOM)"),
           as_json: bool = typer.Option(False, "--json", help="print the report as JSON")):
    """Validate a labelled file row by row, quarantine bad rows, store a dataset version.

    Row numbers in the report and the quarantine file count data rows (the header is
    not a row), from 1."""
    from hsops.training.report import ingest_table

    report = run_ingest(path, text_column, label_column, fmt, as_json, encoding).to_dict()
    if as_json:
        _emit_json(report)
    else:
        console.print(ingest_table(report))
    if report["accepted"] == 0:
        _fail(f"no valid rows in {path.name}: all {report['rows_read']} were quarantined "
              f"({report['quarantine_reasons']}); see {report['quarantine_file']}", code=1)


# -- train ----------------------------------------------------------------------------------
def run_train(dataset_version: str, kind: str, params: dict, target_accuracy: float, alias: Optional[str],
              quiet: bool, upsample: bool | dict = False):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from hsops.data.datasets import load_dataset
    from hsops.registry.mlflow_registry import Registry
    from hsops.training.train import train

    home = hsops_home()
    dataset = load_dataset(home, dataset_version)
    epochs = params.get("epochs", 0)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                  TimeElapsedColumn(), console=err, disable=quiet, transient=True) as progress:
        task = progress.add_task(f"training {kind}", total=epochs or None, info="")

        def on_progress(stage: str, info: dict):
            if stage == "epoch":
                shown = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
                progress.update(task, advance=1, info=shown)
            else:
                progress.update(task, description=f"{stage} ({kind})")

        result = train(dataset, home, kind=kind, params=params, target_accuracy=target_accuracy,
                       upsample=upsample, on_progress=on_progress)
        progress.update(task, description="registering")
        registry = Registry(home)
        if alias == "auto":
            has_champion = "champion" in _aliases(home)
            alias = "challenger" if has_champion else "champion"
        version = registry.register(result, alias=alias)
    return result, version, alias


def _aliases(home: Path) -> dict:
    from hsops.registry.index import DEFAULT_MODEL, read_index

    return read_index(home).get("models", {}).get(DEFAULT_MODEL, {}).get("aliases", {})


@app.command("train")
def train_cmd(dataset: Optional[str] = typer.Option(None, help="dataset version (default: the latest ingested)"),
              data: Optional[Path] = typer.Option(None, help="ingest this file first, then train on it"),
              text_column: Optional[str] = typer.Option(None), label_column: Optional[str] = typer.Option(None),
              encoding: Optional[str] = typer.Option(None, help="text encoding of --data"),
              kind: str = typer.Option("linear", "--model", "--kind", help="model kind"),
              param: list[str] = typer.Option([], help="hyper-parameter KEY=VALUE (repeatable)"),
              target_accuracy: float = typer.Option(0.9, help="accuracy the abstention threshold aims for"),
              alias: str = typer.Option("auto", help="champion, challenger, none, or auto (champion if none yet)"),
              upsample: bool = typer.Option(False, "--upsample", help="duplicate rows of rare classes in the "
                                            "train split (dev and test untouched)"),
              as_json: bool = typer.Option(False, "--json")):
    """Train a model on a dataset version, calibrate, evaluate on the test split, register."""
    from hsops.data.datasets import DatasetNotFound, list_versions
    from hsops.models.base import model_kinds
    from hsops.training.report import metrics_table

    if kind not in model_kinds():
        _fail(f"unknown model kind {kind!r}; known: {sorted(model_kinds())}")
    if not 0 < target_accuracy < 1:
        _fail("--target-accuracy must be between 0 and 1")
    if alias not in ("auto", "none", "champion", "challenger"):
        _fail("--alias must be champion, challenger, none or auto")
    from hsops.models.base import check_params, model_class

    try:  # before ingesting --data: a bad parameter should leave nothing behind
        params = check_params(model_class(kind), _parse_params(param))
    except ValueError as exc:
        _fail(str(exc))
    if data is not None:
        dataset = run_ingest(data, text_column, label_column, None, as_json, encoding).dataset_version
        if dataset is None:
            _fail(f"{data}: no valid rows to train on")
    elif dataset is None:
        versions = list_versions(hsops_home())
        if not versions:
            _fail("no dataset yet: run `hsops ingest FILE` or pass --data FILE")
        dataset = versions[0]
    try:
        result, version, alias_set = run_train(dataset, kind, params, target_accuracy,
                                                None if alias == "none" else alias, as_json, upsample)
    except (DatasetNotFound, ValueError, TypeError) as exc:
        _fail(str(exc))
    except (MemoryError, RuntimeError) as exc:  # e.g. an embedding table too large for memory
        _fail(f"training {kind} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    payload = {"version": version, "alias": alias_set, **result.to_dict()}
    if as_json:
        _emit_json(payload)
        return
    console.print(metrics_table(result.test_metrics, f"{kind} on the test split of {dataset}"))
    if result.upsample:
        up = result.upsample
        console.print(f"up-sampled the train split from {up['rows_before']:,} to {up['rows_after']:,} rows "
                      f"({up['classes_raised']:,} classes raised towards {up['min_per_class']} rows)")
    console.print(f"trained in {result.train_seconds:.1f}s; registered as hs-classifier@{version}"
                  + (f" ({alias_set})" if alias_set else ""))
    if not result.calibration.get("calibrated", True):
        err.print(f"[yellow]warning:[/] {result.calibration['note']}")


# -- tune -----------------------------------------------------------------------------------
def run_tune(dataset, kind: str, trials: int, study: Optional[str], timeout: Optional[float],
             alias: Optional[str], register: bool, quiet: bool):
    """The study, then (unless ``register`` is off) the best parameters through the same
    train-and-register path as ``hsops train``, with the study recorded on the run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hsops.training.tune import tune

    home = hsops_home()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=err, disable=quiet,
                  transient=True) as progress:
        task = progress.add_task(f"tuning {kind}", total=trials, info="")

        def on_trial(stage: str, info: dict):
            if stage == "epoch":
                top1 = info.get("eval_top1")
                progress.update(task, description=f"trial {info['trial']}",
                                info=f"epoch {info['epoch']}" + (f" dev top-1 {top1:.3f}" if top1 is not None else ""))
            elif stage == "trial":
                shown = info["state"] + (f" {info['value']:.3f}" if info["value"] is not None else "")
                progress.update(task, completed=info["finished"], info=f"trial {info['number']}: {shown}")

        result = tune(dataset, home, kind=kind, n_trials=trials, name=study, timeout=timeout,
                      on_progress=on_trial)
        if not register:
            return result, None, None, None
        from hsops.registry.mlflow_registry import Registry
        from hsops.training.train import train

        progress.update(task, description=f"training {kind} with the best parameters", info="")
        trained = train(dataset, home, kind=kind, params=result.best_params)
        progress.update(task, description="registering")
        registry = Registry(home)
        if alias == "auto":
            # a re-run that found nothing better re-trains a registered model: leave its
            # aliases alone rather than make it the challenger of itself
            known = any((home / v["artifact"]).resolve() == trained.artifact_dir.resolve()
                        for v in registry.versions())
            alias = None if known else "challenger" if "champion" in _aliases(home) else "champion"
        version = registry.register(trained, alias=alias, tags=result.run_tags(), metrics=result.run_metrics())
    return result, trained, version, alias


@app.command("tune")
def tune_cmd(kind: str = typer.Option("linear", "--model", "--kind", help="model kind to tune"),
             trials: int = typer.Option(20, help="finished (complete or pruned) trials the study should end with; "
                                                 "a resumed study runs only the missing ones"),
             dataset: Optional[str] = typer.Option(None, help="dataset version (default: the latest ingested)"),
             study: Optional[str] = typer.Option(None, help="a name that keeps this study apart from others "
                                                             "of the same model kind and dataset"),
             timeout: Optional[float] = typer.Option(None, help="start no new trial after this many seconds"),
             alias: str = typer.Option("auto", help="champion, challenger, none, or auto (champion if none yet)"),
             register: bool = typer.Option(True, "--register/--no-register",
                                           help="train the best parameters and register the model"),
             as_json: bool = typer.Option(False, "--json")):
    """Tune hyper-parameters (Optuna TPE, median pruning) on the dev split, then train and
    register the best. The study lives in HSOPS_HOME/tuning/optuna.db: re-running the same
    command after a stop continues it."""
    from hsops.data.datasets import DatasetNotFound, list_versions, load_dataset
    from hsops.models.base import model_kinds
    from hsops.training.tune import TuningError, search_space, study_name

    if kind not in model_kinds():
        _fail(f"unknown model kind {kind!r}; known: {sorted(model_kinds())}")
    if trials < 1:
        _fail(f"--trials must be at least 1, got {trials}")
    if timeout is not None and timeout <= 0:
        _fail(f"--timeout must be a positive number of seconds, got {timeout}")
    if alias not in ("auto", "none", "champion", "challenger"):
        _fail("--alias must be champion, challenger, none or auto")
    try:
        search_space(kind)
        study_name(kind, "", study)
    except ValueError as exc:
        _fail(str(exc))
    home = hsops_home()
    if dataset is None:
        versions = list_versions(home)
        if not versions:
            _fail("no dataset yet: run `hsops ingest FILE` first")
        dataset = versions[0]
    try:
        data = load_dataset(home, dataset)
        result, trained, version, alias_set = run_tune(data, kind, trials, study, timeout,
                                                       None if alias == "none" else alias, register, as_json)
    except DatasetNotFound as exc:
        _fail(str(exc))
    except TuningError as exc:
        _fail(str(exc), code=1)
    except ValueError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted: finished trials are kept; run the same command again to continue the study", code=130)
    payload = {**result.to_dict(), "version": version, "alias": alias_set}
    if trained is not None:
        payload |= {"artifact_dir": str(trained.artifact_dir), "dev_metrics": trained.dev_metrics,
                    "test_metrics": trained.test_metrics}
    if as_json:
        _emit_json(payload)
    else:
        console.print(tuning_table(result))
        if trained is not None:
            from hsops.training.report import metrics_table

            console.print(metrics_table(trained.test_metrics, f"best {kind} on the test split of {dataset}"))
            console.print(f"registered as hs-classifier@{version}" + (f" ({alias_set})" if alias_set else ""))
    if result.stopped:
        why = "--timeout" if result.stopped == "timeout" else "too many failed trials"
        err.print(f"[yellow]warning:[/] stopped by {why} with {result.finished} of {trials} trials finished; "
                  "run the same command again to continue")
    for number, error in result.errors:
        err.print(f"[yellow]warning:[/] trial {number} failed: {error}")


def tuning_table(result) -> Table:
    table = Table(title=f"Study {result.study_name} ({result.storage} in HSOPS_HOME)", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("trials run now", str(result.ran))
    table.add_row("complete / pruned / failed", f"{result.complete} / {result.pruned} / {result.failed}")
    table.add_row("best trial", str(result.best_trial))
    table.add_row("best dev top-1", f"{100 * result.best_value:.1f}%")
    for key, value in result.best_params.items():
        table.add_row(f"  {key}", f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


# -- evaluate -------------------------------------------------------------------------------
@app.command()
def evaluate(model: str = typer.Option("champion", help="champion, challenger or NAME@VERSION"),
             data: Optional[Path] = typer.Option(None, help="labelled file (default: the model's test split)"),
             text_column: Optional[str] = typer.Option(None), label_column: Optional[str] = typer.Option(None),
             fmt: Optional[str] = typer.Option(None, "--format"),
             encoding: Optional[str] = typer.Option(None, help="text encoding of --data"),
             as_json: bool = typer.Option(False, "--json")):
    """Score a registered model on a labelled file, or on its own test split.

    Rows whose description (group key) the model was trained on are counted in
    ``rows_seen_in_training``: scores on such rows overstate accuracy."""
    from hsops.data.datasets import DatasetNotFound, load_dataset
    from hsops.data.readers import DataFileError, read_table
    from hsops.data.validation import LabeledRow, validate_row
    from hsops.models.artifact import ArtifactError
    from hsops.registry.index import ModelNotFound, resolve
    from hsops.training.model_io import evaluate_artifact
    from hsops.training.report import curve_table, metrics_table

    home = hsops_home()
    try:
        resolved = resolve(home, model)
    except ModelNotFound as exc:
        _fail(str(exc))
    rejected: dict[str, int] = {}
    if data is None:
        try:
            texts, labels = load_dataset(home, resolved.info["dataset_version"]).part("test")
        except DatasetNotFound as exc:
            _fail(str(exc))
        source = f"test split of {resolved.info['dataset_version']}"
    else:
        texts, labels = [], []
        try:
            for raw in read_table(data, text_column=text_column, label_column=label_column, fmt=fmt,
                                  encoding=encoding):
                row = validate_row(raw)
                if isinstance(row, LabeledRow):
                    texts.append(row.text)
                    labels.append(row.code.full)
                else:
                    rejected[row.reason] = rejected.get(row.reason, 0) + 1
        except DataFileError as exc:
            _fail(str(exc))
        source = str(data)
    if not texts:
        _fail(f"no valid labelled rows to evaluate in {source} (rejected: {rejected})")
    try:
        metrics = evaluate_artifact(resolved.artifact_dir, texts, labels)
    except ArtifactError as exc:
        _fail(str(exc))
    seen = _rows_seen_in_training(home, resolved.info.get("dataset_version"), texts) if data else 0
    payload = {"model": resolved.label, "data": source, "rows_rejected": sum(rejected.values()),
               "rejected_reasons": rejected, "rows_seen_in_training": seen, **metrics}
    if as_json:
        _emit_json(payload)
    else:
        console.print(metrics_table(metrics, f"{resolved.label} on {source}"))
        console.print(curve_table(metrics))
        if rejected:
            console.print(f"{sum(rejected.values()):,} rows could not be scored: {rejected}")
    if seen:
        err.print(f"[yellow]warning:[/] {seen:,} of {len(texts):,} rows describe goods the model was trained "
                  "on (same group key as a training row); these scores overstate accuracy on new data")


def _rows_seen_in_training(home: Path, dataset_version: Optional[str], texts: list[str]) -> int:
    from hsops.data.datasets import DatasetNotFound, load_dataset
    from hsops.data.splits import group_key

    if not dataset_version:
        return 0
    try:
        train_texts, _ = load_dataset(home, dataset_version).part("train")
    except DatasetNotFound:
        return 0
    train_keys = {group_key(t) for t in train_texts}
    return sum(1 for t in texts if group_key(t) in train_keys)


# -- predict --------------------------------------------------------------------------------
@app.command()
def predict(ctx: typer.Context, texts: list[str] = typer.Argument(..., help="one or more product descriptions"),
            model: str = typer.Option("champion", help="champion, challenger or NAME@VERSION"),
            top_k: int = typer.Option(3, min=1, max=20), explain: bool = typer.Option(False),
            server: Optional[str] = typer.Option(None, help="ask a running server (http://127.0.0.1:8000) "
                                                 "instead of loading the model here; it serves its own model"),
            async_: bool = typer.Option(False, "--async", help="with --server: submit an async job and poll it"),
            key: Optional[str] = typer.Option(None, envvar="HSOPS_API_KEY", help="API key for --server "
                                              "(or HSOPS_API_KEY)"),
            as_json: bool = typer.Option(False, "--json")):
    """Predict HS codes for descriptions with a registered model (no server needed), or
    through a server's real-time or async API (``--server``, ``--async``)."""
    from hsops.data.validation import check_text
    from hsops.models.artifact import ArtifactError
    from hsops.registry.index import ModelNotFound
    from hsops.serving.predictor import Predictor

    for i, text in enumerate(texts):
        if check_text(text)[0] is None:
            _fail(f"description {i}: {check_text(text)[2]}")
    from hsops.cli_serving import check_server_options, remote_predict

    # a key from HSOPS_API_KEY is ambient, not asked for: only --key itself needs --server.
    # (by name: typer carries its own copy of click, with its own ParameterSource)
    source = ctx.get_parameter_source("key")
    check_server_options(server, use_async=async_, key_given=getattr(source, "name", None) == "COMMANDLINE")
    if server is not None:
        items = remote_predict(server, list(texts), top_k=top_k, explain=explain, use_async=async_, key=key)
        if as_json:
            _emit_json([{"description": t, **item} for t, item in zip(texts, items)])
        else:
            console.print(predictions_table(list(texts), items))
        return
    try:
        predictor = Predictor.from_registry(hsops_home(), model)
    except (ModelNotFound, ArtifactError) as exc:
        _fail(str(exc))
    import uuid

    from hsops.platform.local.state_store import StateStore
    from hsops.serving.predictor import log_answers

    batch_id = uuid.uuid4().hex
    items = [{**p.to_dict(), "request_id": f"{batch_id}-{i}"}
             for i, p in enumerate(predictor.predict(list(texts), top_k=top_k, explain=explain))]
    log_answers(StateStore(hsops_home()), batch_id, list(texts), items)  # as the HTTP API does
    if as_json:
        _emit_json([{"description": t, **item} for t, item in zip(texts, items)])
        return
    console.print(predictions_table(list(texts), items))


def predictions_table(texts: list[str], predictions: list[dict]) -> Table:
    table = Table(title=f"Predictions ({predictions[0]['model_version'] if predictions else ''})")
    table.add_column("description", min_width=24, max_width=40)
    table.add_column("HS6", no_wrap=True)
    table.add_column("HS 2022 text", max_width=40, overflow="ellipsis", no_wrap=True)
    table.add_column("confidence", no_wrap=True, justify="right")
    table.add_column("next best", no_wrap=True)
    explained = any(p.get("explanation") for p in predictions)
    if explained:
        table.add_column("driven by", max_width=30)
    for text, p in zip(texts, predictions):
        alternatives = " ".join(f"{a['hs_code']}" for a in p["alternatives"][:2])
        conf = f"{100 * p['confidence']:.0f}%" + (" [yellow]abstain[/]" if p["abstain"] else "")
        if p.get("heading"):
            conf += f" [cyan]heading {p['heading']['code']} {100 * p['heading']['confidence']:.0f}%[/]"
        row = [text[:80], p["hs_code"], p["hs_description"], conf, alternatives]
        if explained:
            row.append(", ".join(repr(e["term"]) for e in (p.get("explanation") or [])[:4]))
        table.add_row(*row)
    return table


# -- models ---------------------------------------------------------------------------------
@models_app.callback()
def models_list(ctx: typer.Context, as_json: bool = typer.Option(False, "--json")):
    """List registered model versions with metrics and aliases."""
    if ctx.invoked_subcommand is not None:
        return
    from hsops.registry.index import DEFAULT_MODEL, ModelNotFound, read_index

    try:
        entry = read_index(hsops_home()).get("models", {}).get(DEFAULT_MODEL, {})
    except ModelNotFound as exc:
        _fail(str(exc))
    aliases: dict[str, list[str]] = {}
    for alias, version in sorted(entry.get("aliases", {}).items()):
        aliases.setdefault(version, []).append(alias)
    rows = [{"name": DEFAULT_MODEL, "version": v, "aliases": aliases.get(v, []), **info}
            for v, info in sorted(entry.get("versions", {}).items(), key=lambda kv: int(kv[0]))]
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        console.print("no registered models yet: run `hsops train` (or `make demo`)")
        return
    table = Table(title="Registered models")
    for col in ("version", "aliases", "kind", "dataset", "HS6 top-1", "HS6 top-5", "created", "commit"):
        table.add_column(col)
    for r in rows:
        m = r.get("metrics", {})
        pct = lambda k: f"{100 * m[k]:.1f}%" if k in m else "-"  # noqa: E731
        table.add_row(r["version"], ", ".join(r["aliases"]), r.get("kind") or "", r.get("dataset_version") or "",
                      pct("hs6_top1"), pct("hs6_top5"), r.get("created_at", ""), (r.get("git_commit") or "")[:8])
    console.print(table)


@models_app.command("promote")
def models_promote(version: str = typer.Argument(..., help="version number to point the alias at"),
                   alias: str = typer.Option("champion", help="champion or challenger"),
                   reason: str = typer.Option("manual promotion", help="recorded in the audit log")):
    """Point an alias (champion/challenger) at a version; recorded in the audit log."""
    from hsops.registry.mlflow_registry import Registry

    try:
        Registry(hsops_home()).set_alias(alias, version, reason=reason)
    except Exception as exc:  # MLflow raises its own types for unknown versions
        _fail(str(exc).splitlines()[0])
    console.print(f"{alias} -> hs-classifier@{version}")


# -- demo -----------------------------------------------------------------------------------
@app.command()
def demo(as_json: bool = typer.Option(False, "--json")):
    """The whole loop on real data: ingest, train, evaluate, register, serve, predict."""
    from hsops.demo import run_demo

    run_demo(console=console, as_json=as_json)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
