"""The model registry on MLflow (skinny, SQLite under ``HSOPS_HOME``).

Every trained model becomes an MLflow run (parameters, metrics, dataset version, git
commit, the artifact manifest) and a version of the registered model; aliases
``champion`` and ``challenger`` point at versions. After each change the plain-JSON
index (``registry/index.py``) is rewritten from MLflow so serving can resolve aliases
without importing MLflow. Every alias move is written to the audit log.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from hsops._fs import file_lock
from hsops.registry.index import ALIASES, DEFAULT_MODEL, ModelNotFound, read_index, write_index

EXPERIMENT = "hsops"


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


class Registry:
    def __init__(self, home: Path):
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow import MlflowClient

        _quiet_mlflow()  # after the import: MLflow sets up its own logger on import

        self.home = Path(home)
        uri = f"sqlite:///{self.home / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        self._mlflow = mlflow
        # MLflow creates and migrates its database on first use, and two processes doing
        # that at once (two pipeline workers) collide ("duplicate column name"): one at a time
        with file_lock(self.home / "registry" / ".init.lock"):
            self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            self.experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
                EXPERIMENT, artifact_location=(self.home / "mlruns").as_uri())

    # -- writing -------------------------------------------------------------------------
    def register(self, result, *, name: str = DEFAULT_MODEL, alias: str | None = None,
                 tags: dict | None = None, metrics: dict | None = None) -> str:
        # one writer at a time: two trainings finishing together must not interleave
        # their version checks and index rewrites
        with file_lock(self.home / "registry" / ".lock"):
            return self._register(result, name=name, alias=alias, extra_tags=tags or {},
                                  extra_metrics=metrics or {})

    def _register(self, result, *, name: str, alias: str | None, extra_tags: dict,
                  extra_metrics: dict) -> str:
        """Log a TrainResult as a run and a new model version; return the version.

        ``extra_tags``/``extra_metrics`` record how the model came about (e.g. the tuning
        study behind its hyper-parameters). Idempotent: an artifact that is already
        registered (the same content address, e.g. a deterministic re-training) returns
        its existing version, and the extras are written to that version's run (tags and
        metrics, unlike parameters, may be updated).
        """
        from mlflow.exceptions import MlflowException

        artifact_dir = Path(result.artifact_dir)
        for existing in self.versions(name):
            if (self.home / existing["artifact"]).resolve() == artifact_dir.resolve():
                for key, value in extra_tags.items():
                    self.client.set_tag(existing["run_id"], key, str(value))
                for key, value in extra_metrics.items():
                    self.client.log_metric(existing["run_id"], key, float(value))
                if alias:
                    self._set_alias(alias, existing["version"], name=name, reason="re-registered")
                return existing["version"]
        tags = {"dataset_version": result.dataset_version, "model_kind": result.kind,
                "git_commit": result.git_commit or "unknown", "artifact_dir": str(artifact_dir)}
        with self._mlflow.start_run(experiment_id=self.experiment_id,
                                    run_name=f"{result.kind}-{result.dataset_version}") as run:
            self._mlflow.log_params({k: json.dumps(v) if not isinstance(v, (int, float, str)) else v
                                     for k, v in result.params.items()})
            upsample = getattr(result, "upsample", None)  # what the train split was up-sampled to
            self._mlflow.log_params({"target_accuracy": result.calibration["target_accuracy"],
                                     "upsample": json.dumps(upsample) if upsample else "none"})
            metrics = {f"test_{k}": v for k, v in result.test_metrics.items()
                       if isinstance(v, (int, float)) and v is not None}
            metrics |= {f"dev_{k}": v for k, v in result.dev_metrics.items()
                        if isinstance(v, (int, float)) and v is not None}
            metrics |= {"train_seconds": result.train_seconds,
                        "temperature": result.calibration["temperature"],
                        "abstain_threshold": result.calibration["threshold"]}
            self._mlflow.log_metrics(metrics | {k: float(v) for k, v in extra_metrics.items()})
            self._mlflow.set_tags(tags | {k: str(v) for k, v in extra_tags.items()})
            self._mlflow.log_artifact(str(artifact_dir / "manifest.json"))
        try:
            self.client.create_registered_model(name, description="HS6 classifier for customs descriptions")
        except MlflowException:
            pass  # already registered
        version = self.client.create_model_version(name, source=str(artifact_dir), run_id=run.info.run_id,
                                                   tags=tags).version
        self._sync_index(name)
        if alias:
            self._set_alias(alias, str(version), name=name, reason="registered with alias")
        return str(version)

    def set_alias(self, alias: str, version: str, *, name: str = DEFAULT_MODEL, reason: str = "") -> None:
        with file_lock(self.home / "registry" / ".lock"):
            self._set_alias(alias, version, name=name, reason=reason)

    def _set_alias(self, alias: str, version: str, *, name: str, reason: str) -> None:
        if alias not in ALIASES:
            raise ValueError(f"unknown alias {alias!r}; use one of {ALIASES}")
        self.client.get_model_version(name, version)  # raises when it does not exist
        previous = next((v["version"] for v in self.versions(name) if alias in v["aliases"]), None)
        self.client.set_registered_model_alias(name, alias, version)
        self._sync_index(name)
        self._audit({"action": "set_alias", "model": name, "alias": alias, "version": version,
                     "previous": previous, "reason": reason})

    # -- reading -------------------------------------------------------------------------
    def versions(self, name: str = DEFAULT_MODEL) -> list[dict]:
        try:
            index = read_index(self.home).get("models", {}).get(name, {})
        except ModelNotFound:
            return []
        aliases: dict[str, list[str]] = {}
        for alias, version in sorted(index.get("aliases", {}).items()):
            aliases.setdefault(version, []).append(alias)
        out = []
        for version, info in sorted(index.get("versions", {}).items(), key=lambda kv: int(kv[0])):
            out.append({"name": name, "version": version, "aliases": aliases.get(version, []), **info})
        return out

    def _sync_index(self, name: str) -> None:
        """Rewrite this model's entry of the JSON index from MLflow (the source of truth)."""
        model = self.client.get_registered_model(name)
        versions = {}
        for mv in self.client.search_model_versions(f"name='{name}'"):
            run = self.client.get_run(mv.run_id)
            artifact_dir = Path(mv.source)
            versions[str(mv.version)] = {
                "artifact": self._home_relative(artifact_dir),
                "kind": run.data.tags.get("model_kind"),
                "dataset_version": run.data.tags.get("dataset_version"),
                "git_commit": run.data.tags.get("git_commit"),
                "run_id": mv.run_id,
                "created_at": datetime.fromtimestamp(mv.creation_timestamp / 1000, timezone.utc)
                .isoformat(timespec="seconds"),
                "metrics": {k.removeprefix("test_"): v for k, v in run.data.metrics.items()
                            if k.startswith("test_")},
                "params": dict(run.data.params),
            }
        try:
            index = read_index(self.home)
        except ModelNotFound:  # corrupt: MLflow holds the truth, rebuild this model's entry
            index = {"models": {}}
        index.setdefault("models", {})[name] = {"versions": versions,
                                                "aliases": {a: str(v) for a, v in model.aliases.items()}}
        write_index(self.home, index)

    def _home_relative(self, artifact_dir: Path) -> str:
        """The artifact's path inside HSOPS_HOME. MLflow stores absolute paths; artifacts
        live at ``artifacts/<digest>``, so a copied or moved home still finds its own."""
        if artifact_dir.parent.name == "artifacts" and (self.home / "artifacts" / artifact_dir.name).is_dir():
            return f"artifacts/{artifact_dir.name}"
        return os.path.relpath(artifact_dir, self.home)

    def _audit(self, entry: dict) -> None:
        path = self.home / "registry" / "audit.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **entry}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
