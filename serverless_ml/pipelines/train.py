"""The training job: tune a random forest with Optuna, log everything to MLflow, register
the refitted best pipeline and promote it by the rule in :mod:`..training.promotion`.

Reads: the feature view ``<dataset>_training`` (by default only ``backfill`` rows).
Logs: a parent run in experiment ``<dataset>-training`` (params: search space, seed, data
version, row counts; metrics: CV and holdout scores, baseline; artifacts: confusion matrix
as JSON and PNG, feature importances, training row keys, the model) and one nested run
per trial. Registers: model ``<dataset>`` with alias ``challenger``, and ``champion`` when
promoted.
"""

from __future__ import annotations

import datetime as dt
import multiprocessing
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import DataValidationError, SmlError
from serverless_ml.feature_store.base import ORIGIN_COLUMN, FeatureStore
from serverless_ml.pipelines.features import existing_feature_group
from serverless_ml.settings import Settings
from serverless_ml.training import evaluation, promotion, search
from serverless_ml.training.model import (
    SKOPS_TRUSTED_TYPES,
    as_model_input,
    build_pipeline,
    raw_feature_importances,
)

TRAINING_VIEW_VERSION = 1
TRAINING_KEYS_ARTIFACT = "training/keys.parquet"
MIN_ROWS = 20


@dataclass(frozen=True)
class TrainOptions:
    """Options of one training job (defaults in :mod:`serverless_ml.defaults`)."""

    trials: int
    seed: int
    timeout: float | None = None
    holdout: float = 0.2
    folds: int = 5
    storage: str | None = None
    study_name: str | None = None
    include_synthetic: bool = False
    promote: str = "if-better"
    workers: int = 1
    quiet: bool = False


@dataclass
class TrainReport:
    """What a training job produced."""

    run_id: str
    experiment_id: str
    study_name: str
    trials_total: int
    trials_this_run: int
    best_trial: int
    best_params: dict[str, Any]
    cv_mean: float
    cv_std: float
    holdout_metrics: dict[str, float]
    baseline_accuracy: float
    model_version: str
    champion_accuracy: float | None
    decision: promotion.PromotionDecision
    data_version: int | None
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        holdout = self.holdout_metrics.get("test_accuracy", float("nan"))
        champion = "none" if self.champion_accuracy is None else f"{self.champion_accuracy:.4f}"
        params = ", ".join(f"{k}={v}" for k, v in self.best_params.items())
        lines = [
            f"study {self.study_name}: {self.trials_this_run} trials this run, {self.trials_total} in the study",
            f"best trial #{self.best_trial}: CV accuracy {self.cv_mean:.4f} +/- {self.cv_std:.4f}",
            f"  {params}",
            f"holdout ({self.rows.get('holdout', 0)} rows): accuracy {holdout:.4f}, "
            f"majority baseline {self.baseline_accuracy:.4f}, champion {champion}",
            f"registered version {self.model_version} as challenger; "
            f"{'promoted to champion' if self.decision.promote else 'not promoted'} ({self.decision.reason})",
            f"MLflow run {self.run_id} (experiment {self.experiment_id}), data version {self.data_version}",
        ]
        return "\n".join(lines)


def training_view(spec: DatasetSpec, store: FeatureStore):  # noqa: ANN201 - FeatureView
    """The dataset's training feature view: its features and label."""
    group = existing_feature_group(spec, store)
    query = group.select([spec.primary_key, *spec.feature_names, spec.label, ORIGIN_COLUMN])
    view = store.get_or_create_feature_view(
        f"{spec.name}_training", TRAINING_VIEW_VERSION, query, labels=[spec.label],
        description=f"features and label of {spec.name} for training",
    )
    return group, view


def load_training_rows(
    spec: DatasetSpec, store: FeatureStore, include_synthetic: bool
) -> tuple[pd.DataFrame, pd.Series, pd.Series, int | None]:
    """Features, labels and primary keys of the training rows, and the data version read."""
    group, view = training_view(spec, store)
    data_version = group.data_version()
    only_real = None if include_synthetic else (group.get_feature(ORIGIN_COLUMN) == "backfill")
    x, y = view.training_data(extra_filter=only_real, version=data_version)
    keys = x[spec.primary_key].reset_index(drop=True)
    return as_model_input(x, spec).reset_index(drop=True), y[spec.label].reset_index(drop=True), keys, data_version


def check_training_rows(spec: DatasetSpec, y: pd.Series, holdout: float, folds: int) -> None:
    """Enough rows, at least two classes, and every class in both splits and every fold."""
    if len(y) < MIN_ROWS:
        raise DataValidationError(f"dataset '{spec.name}' has {len(y)} training rows; need at least {MIN_ROWS}")
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataValidationError(
            f"dataset '{spec.name}': training rows have a single class ({counts.index[0]}); need at least two"
        )
    needed = int(np.ceil(folds / (1 - holdout))) + 1
    for cls in spec.classes:
        have = int(counts.get(cls, 0))
        if have < needed:
            raise DataValidationError(
                f"dataset '{spec.name}': class {cls!r} has {have} training rows; need at least {needed} "
                f"for a {holdout:.0%} holdout and {folds}-fold CV"
            )


def _worker(args: dict[str, Any]) -> None:
    """A tuning process: loads the shared study and adds trials until the cap is reached."""
    import optuna

    from serverless_ml.tracking import TrialLogger

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=args["study_name"], storage=args["storage"],
        sampler=search.make_sampler(args["sampler_seed"]), pruner=search.make_pruner(),
    )
    callbacks = []
    if args.get("tracking_uri"):
        callbacks.append(TrialLogger(args["tracking_uri"], args["experiment_id"], args["parent_run_id"], args["dataset"]))
    objective = search.make_objective(args["spec"], args["x"], args["y"], args["folds"], args["seed"])
    search.run_trials(study, objective, args["n_trials"], args["timeout"], callbacks, total_cap=args["total_cap"])


def tune(
    spec: DatasetSpec,
    x: pd.DataFrame,
    y: pd.Series,
    options: TrainOptions,
    storage: str,
    study_name: str,
    logger: Any | None,
    tracking: dict[str, str] | None,
) -> tuple[Any, int]:
    """Run the study's new trials (in ``options.workers`` processes); return it and how
    many trials this call added."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = search.open_study(storage, study_name, options.seed)
    before = len(study.get_trials(deepcopy=False))
    cap = before + options.trials
    folds = search.cv_folds(y, options.folds, options.seed)
    processes = []
    if options.workers > 1:
        context = multiprocessing.get_context("spawn")
        for index in range(1, options.workers):
            args = {
                "spec": spec, "x": x, "y": y, "folds": folds, "seed": options.seed,
                "sampler_seed": options.seed + index, "study_name": study_name, "storage": storage,
                "n_trials": options.trials, "timeout": options.timeout, "total_cap": cap,
                "dataset": spec.name, **(tracking or {}),
            }
            process = context.Process(target=_worker, args=(args,), daemon=True)
            process.start()
            processes.append(process)
    callbacks = [logger] if logger is not None else []
    objective = search.make_objective(spec, x, y, folds, options.seed)
    try:
        search.run_trials(
            study, objective, options.trials, options.timeout, callbacks, total_cap=cap,
            show_progress_bar=not options.quiet,
        )
    finally:
        for process in processes:
            process.join()
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    if failed:
        raise SmlError(f"{len(failed)} tuning worker process(es) failed (exit codes {failed})")
    return study, len(study.get_trials(deepcopy=False)) - before


def default_study_name(spec: DatasetSpec, data_version: int | None, options: TrainOptions) -> str:
    """Same data, seed and row selection -> same study, so an interrupted job resumes."""
    rows = "all" if options.include_synthetic else "real"
    return f"{spec.name}-v{spec.version}-data{data_version}-{rows}-seed{options.seed}"


def champion_holdout_accuracy(name: str, x: pd.DataFrame, y: pd.Series) -> tuple[float | None, str | None]:
    """The current champion re-scored on these rows, or ``None`` (and why)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    try:
        version = client.get_model_version_by_alias(name, promotion.CHAMPION)
    except MlflowException:
        return None, "no champion"
    try:
        model = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
        return float(model.score(x, y)), None
    except Exception as exc:  # noqa: BLE001 - a champion that cannot score is reported, not fatal
        return None, f"champion version {version.version} cannot score these rows: {str(exc).splitlines()[0][:200]}"


def train(spec: DatasetSpec, store: FeatureStore, settings: Settings, options: TrainOptions) -> TrainReport:
    """Tune, log, register and promote. See the module docstring for what it writes."""
    import mlflow
    import optuna
    from sklearn.model_selection import train_test_split

    from serverless_ml import tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    if options.trials < 1:
        raise SmlError(f"--trials must be >= 1, got {options.trials}")
    if not 0.05 <= options.holdout <= 0.5:
        raise SmlError(f"--holdout must be between 0.05 and 0.5, got {options.holdout}")
    if not 2 <= options.folds <= 20:
        raise SmlError(f"--folds must be between 2 and 20, got {options.folds}")
    if options.workers < 1:
        raise SmlError(f"--workers must be >= 1, got {options.workers}")
    if options.timeout is not None and options.timeout <= 0:
        raise SmlError(f"--timeout must be > 0 seconds, got {options.timeout}")
    if options.promote not in promotion.PROMOTE_MODES:
        raise SmlError(f"--promote must be one of {', '.join(promotion.PROMOTE_MODES)}")

    # Everything that can fail on bad input fails here, before any run is started.
    x, y, keys, data_version = load_training_rows(spec, store, options.include_synthetic)
    check_training_rows(spec, y, options.holdout, options.folds)
    x_train, x_hold, y_train, y_hold, keys_train, keys_hold = train_test_split(
        x, y, keys, test_size=options.holdout, stratify=y, random_state=options.seed
    )
    for frame in (x_train, x_hold, y_train, y_hold):
        frame.reset_index(drop=True, inplace=True)
    uri = tracking.configure_tracking(settings)
    storage = options.storage or tracking.default_optuna_storage(uri, settings.store_dir.parent)
    study_name = options.study_name or default_study_name(spec, data_version, options)
    search.open_study(storage, study_name, options.seed)  # fails fast on a bad storage URL
    experiment_id = tracking.get_or_create_experiment(tracking.training_experiment(spec.name))
    name = tracking.model_name(spec.name)
    started = dt.datetime.now(dt.timezone.utc)
    run_name = f"{spec.name}-tune-{started:%Y%m%d-%H%M%S}"

    with tracking.job_run(experiment_id, run_name) as parent:
        run_id = parent.info.run_id
        mlflow.set_tags({
            "dataset": spec.name,
            "data_version": str(data_version),
            "study_name": study_name,
            tracking.NOTE_TAG: (
                f"Optuna search ({options.trials} trials, seed {options.seed}) for the {spec.name} random forest, "
                f"{options.folds}-fold CV on {len(y_train)} rows, {len(y_hold)} holdout rows; started {started:%Y-%m-%d %H:%M} UTC."
            ),
        })
        tracking.log_params_batch(run_id, {
            "dataset": spec.name,
            "feature_group_version": spec.version,
            "data_version": data_version,
            "seed": options.seed,
            "trials": options.trials,
            "timeout_s": options.timeout,
            "cv_folds": options.folds,
            "holdout_fraction": options.holdout,
            "include_synthetic": options.include_synthetic,
            "workers": options.workers,
            "promote_mode": options.promote,
            "study_name": study_name,
            "optuna_storage": tracking.redact_uri(storage),
            "search_space": search.search_space_description(),
            "rows_total": len(y),
            "rows_train": len(y_train),
            "rows_holdout": len(y_hold),
            "features": spec.feature_names,
        })
        mlflow.log_dict(search.search_space_description(), "search_space.json")
        baseline_cv = float(np.mean([
            evaluation.baseline_accuracy(y_train.iloc[tr], y_train.iloc[va])
            for tr, va in search.cv_folds(y_train, options.folds, options.seed)
        ]))
        baseline_test = evaluation.baseline_accuracy(y_train, y_hold)
        tracking.log_metrics_batch(run_id, {"baseline_val_accuracy_mean": baseline_cv, "baseline_test_accuracy": baseline_test})

        logger = tracking.TrialLogger(uri, experiment_id, run_id, spec.name)
        study, added = tune(
            spec, x_train, y_train, options, storage, study_name, logger,
            {"tracking_uri": uri, "experiment_id": experiment_id, "parent_run_id": run_id},
        )
        if not search.finished_trials(study):
            raise SmlError(f"study {study_name} has no completed trial (all pruned or failed); run more --trials")
        best = study.best_trial
        best_scores = best.user_attrs.get("val_scores", [best.value])

        model = build_pipeline(spec, dict(best.params), options.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            model.fit(x_train, y_train)
        predicted = model.predict(x_hold)
        proba = model.predict_proba(x_hold)
        classes = list(spec.classes)
        holdout_metrics = evaluation.classification_metrics(y_hold, predicted, proba, classes, prefix="test_")
        holdout_metrics["train_accuracy"] = float(model.score(x_train, y_train))
        holdout_metrics["val_accuracy_mean"] = float(np.mean(best_scores))
        holdout_metrics["val_accuracy_std"] = float(np.std(best_scores))
        holdout_metrics["trials_completed"] = float(len(search.finished_trials(study)))
        tracking.log_metrics_batch(run_id, holdout_metrics)

        table = evaluation.confusion_table(y_hold, predicted, classes)
        mlflow.log_dict(table, "evaluation/confusion_matrix.json")
        names = list(spec.class_names) if spec.class_names else None
        tracking.log_figure(evaluation.confusion_figure(table, f"{spec.name}: holdout confusion matrix", names),
                    "evaluation/confusion_matrix.png")
        importances = raw_feature_importances(model, spec)
        mlflow.log_dict(importances, "evaluation/feature_importances.json")
        tracking.log_figure(evaluation.importance_figure(importances, f"{spec.name}: feature importances"),
                    "evaluation/feature_importances.png")
        with tempfile.TemporaryDirectory() as tmp:
            keys_path = Path(tmp) / "keys.parquet"
            pd.DataFrame({
                spec.primary_key: pd.concat([keys_train, keys_hold], ignore_index=True),
                "split": ["train"] * len(keys_train) + ["holdout"] * len(keys_hold),
            }).to_parquet(keys_path, index=False)
            mlflow.log_artifact(str(keys_path), artifact_path="training")

        mlflow.set_tags({"best_trial_number": str(best.number), "best_trial_value": f"{best.value:.6f}"})
        champion_accuracy, champion_note = champion_holdout_accuracy(name, x_hold, y_hold)
        decision = promotion.decide_promotion(holdout_metrics["test_accuracy"], champion_accuracy, options.promote)
        if champion_note and champion_accuracy is None and options.promote == "if-better":
            decision = promotion.PromotionDecision(decision.promote, champion_note)

        version = log_and_register(model, x_train, name)
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(name, promotion.CHALLENGER, version)
        client.set_model_version_tag(name, version, "holdout_accuracy", f"{holdout_metrics['test_accuracy']:.6f}")
        client.set_model_version_tag(name, version, "training_run_id", run_id)
        client.set_model_version_tag(name, version, "data_version", str(data_version))
        if decision.promote:
            client.set_registered_model_alias(name, promotion.CHAMPION, version)
            client.set_model_version_tag(name, version, "promoted_at", dt.datetime.now(dt.timezone.utc).isoformat())
        decision_metrics = {"promoted": float(decision.promote)}
        if champion_accuracy is not None:
            decision_metrics["champion_test_accuracy"] = champion_accuracy
        tracking.log_metrics_batch(run_id, decision_metrics)
        mlflow.set_tags({
            "promotion_decision": "promoted" if decision.promote else "not promoted",
            "promotion_reason": decision.reason,
            "model_version": str(version),
        })

    return TrainReport(
        run_id=run_id, experiment_id=experiment_id, study_name=study_name,
        trials_total=len(study.get_trials(deepcopy=False)), trials_this_run=added,
        best_trial=best.number, best_params=dict(best.params),
        cv_mean=float(np.mean(best_scores)), cv_std=float(np.std(best_scores)),
        holdout_metrics=holdout_metrics, baseline_accuracy=baseline_test, model_version=str(version),
        champion_accuracy=champion_accuracy, decision=decision, data_version=data_version,
        rows={"total": len(y), "train": len(y_train), "holdout": len(y_hold)},
    )


def model_requirements() -> list[str]:
    """What the logged pipeline needs to load and predict, pinned to this environment."""
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "skops", "pandas", "numpy", "scipy")]


def log_and_register(model: Any, x_train: pd.DataFrame, name: str) -> str:
    """Log the pipeline with a signature and input example; register it under ``name``."""
    import mlflow
    from mlflow.models import infer_signature

    example = x_train.head(5)
    with warnings.catch_warnings():
        # Integer features are non-nullable by the dataset schema, so MLflow's hint about
        # integer columns with missing values does not apply.
        warnings.simplefilter("ignore", category=UserWarning)
        signature = infer_signature(example, model.predict(example))
    info = mlflow.sklearn.log_model(
        model, name="model", signature=signature, input_example=example,
        registered_model_name=name, skops_trusted_types=SKOPS_TRUSTED_TYPES,
        # Stated, not inferred: inference loads the model in a subprocess (~10 s).
        pip_requirements=model_requirements(),
    )
    return str(info.registered_model_version)
