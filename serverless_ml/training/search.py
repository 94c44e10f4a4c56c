"""The hyperparameter search: a seeded TPE sampler over the forest's real knobs, scored by
stratified k-fold cross-validation with per-fold pruning.

Trials can run in several processes that share one Optuna storage (SQLite by default,
PostgreSQL to share across machines); each process gets its own sampler seed so they
explore different points, and a cap on the study's trial count keeps the total right.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import SmlError
from serverless_ml.training.model import build_pipeline

# The search space, declared once: logged as a run param and used by suggest_params.
#
# Measured with `python -m bench train` (5x5 repeated CV of the chosen Titanic pipeline):
# - n_estimators 20-80: accuracy does not grow with more trees here (25 trees 0.833,
#   300 trees 0.831) while each trial's cost grows linearly. Over 8 seeds
#   (`python -m bench train --only quality --other-seeds 1,2,3,4,5,6,7`) the chosen
#   pipelines average the same with 20-80 as with 25-120 (Titanic 0.8321 vs 0.8323,
#   Iris 0.9462 vs 0.9467) at about a quarter fewer trees per trial; 15-60 averaged
#   less on Titanic (0.8310).
# - max_depth stops at 12: deeper trees fit the few hundred training rows' noise.
# - class_weight is not searched (scikit-learn's default, None): the objective is
#   accuracy, and 'balanced' trades accuracy for minority-class recall; chosen on
#   cross-validation noise it cost 0.4-1.4 points of accuracy on unseen folds.
SEARCH_SPACE: dict[str, dict[str, Any]] = {
    "n_estimators": {"type": "int", "low": 20, "high": 80, "log": True},
    "max_depth": {"type": "int", "low": 2, "high": 12},
    "min_samples_split": {"type": "int", "low": 2, "high": 20},
    "min_samples_leaf": {"type": "int", "low": 1, "high": 10},
    "max_features": {"type": "categorical", "choices": ["sqrt", "log2", 0.5, 0.8]},
    "criterion": {"type": "categorical", "choices": ["gini", "entropy"]},
    "bootstrap": {"type": "categorical", "choices": [True, False]},
}


def search_space_fingerprint(spec: DatasetSpec | None = None) -> str:
    """A short hash of :data:`SEARCH_SPACE` (and of the spec's ``numeric_products``, which
    changes what every trial fits): studies tuned over another space (an older version of
    sml) are neither resumed by default nor mixed with this one's trials."""
    scored: dict[str, Any] = dict(SEARCH_SPACE)
    if spec is not None and spec.numeric_products:
        scored["numeric_products"] = True
    text = json.dumps(scored, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]

METRIC_NAME = "accuracy"


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """One point of :data:`SEARCH_SPACE`."""
    params: dict[str, Any] = {}
    for name, space in SEARCH_SPACE.items():
        if space["type"] == "int":
            params[name] = trial.suggest_int(name, space["low"], space["high"], log=space.get("log", False))
        else:
            params[name] = trial.suggest_categorical(name, space["choices"])
    return params


@dataclass(frozen=True)
class FoldScores:
    """Per-fold accuracies of one trial (validation and training folds)."""

    val: list[float]
    train: list[float]

    @property
    def val_mean(self) -> float:
        return float(np.mean(self.val))

    @property
    def val_std(self) -> float:
        return float(np.std(self.val))


def cv_folds(y: pd.Series, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled, seeded folds (the same for every trial)."""
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


@dataclass(frozen=True)
class PreparedFold:
    """One CV fold's rows after the pipeline's preparation step (imputation, encoding),
    fitted on the fold's training rows only."""

    x_train: Any
    y_train: pd.Series
    x_val: Any
    y_val: pd.Series


def prepare_folds(
    spec: DatasetSpec, x: pd.DataFrame, y: pd.Series, folds: Sequence[tuple[np.ndarray, np.ndarray]], seed: int
) -> list[PreparedFold]:
    """Each fold through the pipeline's ``prepare`` step, fitted on that fold's training
    rows exactly as fitting the whole pipeline would. The step does not depend on a trial's
    params, so every trial's forest is fitted on the same arrays: identical scores, without
    refitting the imputer and encoder and re-slicing frames per trial (that was about half
    of a Titanic trial's time)."""
    prepare = build_pipeline(spec, {}, seed).named_steps["prepare"]
    prepared = []
    for train_idx, val_idx in folds:
        step = clone(prepare)
        x_train, y_train = x.iloc[train_idx], y.iloc[train_idx]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            fitted = step.fit_transform(x_train, y_train)
            prepared.append(PreparedFold(fitted, y_train, step.transform(x.iloc[val_idx]), y.iloc[val_idx]))
    return prepared


def make_objective(
    spec: DatasetSpec,
    x: pd.DataFrame,
    y: pd.Series,
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    seed: int,
    n_jobs: int = 1,
    score_train: bool = False,
) -> Callable[[optuna.Trial], float]:
    """The study's objective: mean validation accuracy over ``folds``.

    After each fold the running mean is reported, so the pruner can stop a hopeless trial
    early. Fold scores are kept in the trial's user attributes for logging; training-fold
    scores only with ``score_train`` (they cost another prediction pass per fold). The
    folds are prepared once (:func:`prepare_folds`), at the first trial.
    """
    prepared: list[PreparedFold] = []

    def objective(trial: optuna.Trial) -> float:
        if not prepared:
            prepared.extend(prepare_folds(spec, x, y, folds, seed))
        params = suggest_params(trial)
        template = build_pipeline(spec, params, seed, n_jobs=n_jobs).named_steps["forest"]
        val: list[float] = []
        train: list[float] = []
        for step, fold in enumerate(prepared):
            forest = clone(template)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                forest.fit(fold.x_train, fold.y_train)
                val.append(float(forest.score(fold.x_val, fold.y_val)))
                if score_train:
                    train.append(float(forest.score(fold.x_train, fold.y_train)))
            trial.report(float(np.mean(val)), step)
            if trial.should_prune():
                _keep_scores(trial, val, train)
                raise optuna.TrialPruned()
        _keep_scores(trial, val, train)
        return float(np.mean(val))

    return objective


def _keep_scores(trial: optuna.Trial, val: list[float], train: list[float]) -> None:
    trial.set_user_attr("val_scores", val)
    trial.set_user_attr("train_scores", train)


def stamp_owner(trial: optuna.Trial) -> None:
    """Record on ``trial`` the host and process running it (the names of the MLflow owner
    tags), so that a later job can tell a trial whose process was killed from one still
    at work: see :func:`fail_orphaned_trials`."""
    from serverless_ml import tracking

    for key, value in tracking.owner_tags().items():
        trial.set_user_attr(key, value)


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the trials of ``study`` left RUNNING by a killed process of this machine
    (the trial names this host and a process that is gone), as :func:`tracking.close_orphaned_runs`
    does for their MLflow runs. Trials of other machines (a shared study) and of live
    processes are left alone. Returns the numbers of the trials it failed.

    Optuna's heartbeat (``RDBStorage(heartbeat_interval=..., grace_period=...)`` and
    ``fail_stale_trials``) would also do it, but only after a grace period (a job started
    at once would still see the trial RUNNING) and at the cost of a write per interval per
    worker on a shared SQLite file; a dead process of this machine is known at once.
    """
    import socket

    from serverless_ml import tracking

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = str(trial.user_attrs.get(tracking.PID_TAG, ""))
        if trial.user_attrs.get(tracking.HOST_TAG) != host or not pid.isdigit():
            continue
        started_ms = int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else 0
        if tracking.process_alive(int(pid), started_ms):
            continue
        # Optuna has no public call to end another process's trial: the storage's own.
        storage = study._storage  # noqa: SLF001
        storage.set_trial_user_attr(trial._trial_id, "recovered", f"failed by process {os.getpid()}: its process {pid} had died")  # noqa: SLF001
        if storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL):  # noqa: SLF001
            failed.append(trial.number)
    return failed


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, multivariate=True)


def make_pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


OPEN_STUDY_ATTEMPTS = 3


def open_study(storage: str, study_name: str, seed: int) -> optuna.Study:
    """Create or load the study (``load_if_exists``: studies resume and can be shared).

    Workers started together on a fresh database race to create Optuna's tables (on
    PostgreSQL the loser gets a unique violation); the loser retries and finds them.
    """
    import sqlalchemy.exc

    for attempt in range(1, OPEN_STUDY_ATTEMPTS + 1):
        try:
            return optuna.create_study(
                storage=storage,
                study_name=study_name,
                direction="maximize",
                sampler=make_sampler(seed),
                pruner=make_pruner(),
                load_if_exists=True,
            )
        except sqlalchemy.exc.IntegrityError as exc:
            if attempt == OPEN_STUDY_ATTEMPTS:
                raise storage_error(storage, exc) from None
            time.sleep(0.2 * attempt)
        except Exception as exc:  # noqa: BLE001 - storage drivers raise many kinds
            raise storage_error(storage, exc) from None
    raise AssertionError("unreachable")


def check_storage(storage: str) -> None:
    """Refuse a storage URL that cannot be opened, in one line, without creating anything
    (no study, no tables, no SQLite file)."""
    from pathlib import Path

    import sqlalchemy

    from serverless_ml.redaction import remember

    remember(storage)  # no log line or error of this process shows its password

    try:
        url = sqlalchemy.engine.make_url(storage)
        url.get_dialect()
    except Exception as exc:  # noqa: BLE001 - SQLAlchemy raises several kinds for a bad URL
        raise storage_error(storage, exc) from None
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            path = Path(url.database).expanduser()
            if path.is_dir():
                raise storage_error(storage, OSError(f"{path} is a folder, expected a SQLite database file"))
            if not path.resolve().parent.is_dir():
                raise storage_error(storage, OSError(f"folder {path.resolve().parent} does not exist"))
        return
    connect_args = {"connect_timeout": 5} if url.get_backend_name() in ("postgresql", "mysql") else {}
    try:
        engine = sqlalchemy.create_engine(storage, connect_args=connect_args)
        try:
            with engine.connect():
                pass
        finally:
            engine.dispose()
    except Exception as exc:  # noqa: BLE001 - drivers raise their own kinds
        raise storage_error(storage, exc) from None


def storage_error(storage: str, exc: BaseException) -> SmlError:
    """One line for a storage that cannot be opened (its password masked: a driver may
    quote the URL it could not parse)."""
    from serverless_ml.tracking import first_line, redact_uri

    return SmlError(f"cannot open Optuna storage {redact_uri(storage)}: {first_line(exc, storage)[:200]}")


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    timeout: float | None,
    callbacks: Sequence[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = (),
    total_cap: int | None = None,
    show_progress_bar: bool = False,
) -> None:
    """Run up to ``n_trials`` trials in this process (fewer if ``total_cap`` is reached)."""
    cbs = list(callbacks)
    if total_cap is not None:
        cbs.append(
            optuna.study.MaxTrialsCallback(
                total_cap, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
            )
        )
    study.optimize(
        objective,
        n_trials=n_trials,
        timeout=timeout,
        callbacks=cbs,
        gc_after_trial=False,
        show_progress_bar=show_progress_bar,
        catch=(),
    )


def search_space_description() -> dict[str, Any]:
    """The search space as plain JSON-able data (for MLflow params and artifacts)."""
    return {name: {k: v for k, v in space.items()} for name, space in SEARCH_SPACE.items()}


def trial_cap(n_trials: int, workers: int) -> int:
    """Trials per worker so that ``workers`` processes together reach ``n_trials``."""
    return math.ceil(n_trials / max(workers, 1))
