"""The hyperparameter search: a seeded TPE sampler over the forest's real knobs (a space
derived from the training rows, :func:`derive_search_space`), starting from scikit-learn's
default forests, scored by stratified k-fold cross-validation with per-fold pruning.

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
from serverless_ml.training.model import FOREST_FAMILIES, build_pipeline

DEFAULT_FOREST: dict[str, Any] = {
    "family": "random_forest",
    "n_estimators": 100,
    "max_depth": None,
    "min_samples_split": 2,
    "min_samples_leaf": 1,
    "max_features": "sqrt",
    "criterion": "gini",
    "bootstrap": True,
}
"""scikit-learn's ``RandomForestClassifier()`` on every searched knob: enqueued as a study's
first trial by the process that creates it (:func:`open_study`), so the search never ends below it."""

DEFAULT_EXTRA_TREES: dict[str, Any] = {**DEFAULT_FOREST, "family": "extra_trees", "bootstrap": False}
"""scikit-learn's ``ExtraTreesClassifier()``: the second trial."""

DEPTHS = (4, 6, 8, 12, 16, 24)
MAX_FEATURES = ("sqrt", "log2", 0.3, 0.5, 0.8)


def derive_search_space(rows: int, features: int, classes: int) -> dict[str, dict[str, Any]]:
    """The search space for ``rows`` tuning rows, ``features`` encoded feature columns and
    ``classes`` classes; it always holds :data:`DEFAULT_FOREST` and :data:`DEFAULT_EXTRA_TREES`.

    Measured with ``python -m bench train --only datasets`` (5x5 repeated stratified CV of
    the pipeline default ``sml train`` chose, against scikit-learn's default forest and
    gradient boosting on the same folds, seven datasets of 150 to 20,000 rows). The fixed
    space this replaces (<= 80 trees, depth <= 12, chosen on Titanic and Iris) scored 0.658
    on a 6,500-row wine-quality CSV where the default forest scored 0.691: deep trees are
    what fit there.

    - ``family``: a random forest or extra trees (random split thresholds). Without extra
      trees the chosen pipelines scored 0.8700 on digits (default gradient boosting 0.8838)
      and 0.9606 on breast cancer (0.9652); with them 0.8905 and 0.9666, wine 0.9775 ->
      0.9798, the 6,500-row set 0.7298 -> 0.7305, Titanic 0.8301 -> 0.8292 (one seed's
      choice: over seeds 42 and 1-4, 0.8308 on average).
    - ``n_estimators`` 50..300 (log), 50..200 above 2,000 rows: accuracy hardly grows past
      100 trees (Titanic: 25 trees 0.833, 300 trees 0.831) while a trial's cost grows with
      trees x rows; a floor of 100 averaged the same on Titanic over five seeds (0.8313 vs 0.8308).
    - ``max_depth``: the depths below 1.5 x log2(rows) (deeper ones are unlimited in effect
      on so few rows) and ``None``, unlimited.
    - ``min_samples_leaf`` 1..(5 % of an average class's rows, 4..100) (log), and
      ``min_samples_split`` 2..(twice that, at least 20): leaf sizes grow with the data.
    - ``max_features``: ``sqrt``, ``log2``, 0.3, 0.5, 0.8 of the encoded columns, each
      share kept only when it draws another number of columns than those before it.
    - ``criterion`` and ``bootstrap`` as scikit-learn offers them. ``class_weight`` is not
      searched (scikit-learn's default, ``None``): the objective is accuracy, and
      'balanced' chosen on CV noise cost 0.4-1.4 points of accuracy on unseen folds.
    """
    rows, features, classes = max(rows, 2), max(features, 1), max(classes, 2)
    depths = [d for d in DEPTHS if d < 1.5 * math.log2(rows)]
    leaf = int(min(100, max(4, round(0.05 * rows / classes))))
    drawn: set[int] = set()
    max_features: list[Any] = []
    for choice in MAX_FEATURES:
        count = _columns_drawn(choice, features)
        if count not in drawn:
            drawn.add(count)
            max_features.append(choice)
    return {
        "family": {"type": "categorical", "choices": list(FOREST_FAMILIES)},
        "n_estimators": {"type": "int", "low": 50, "high": 300 if rows <= 2000 else 200, "log": True},
        "max_depth": {"type": "categorical", "choices": [*depths, None]},
        "min_samples_split": {"type": "int", "low": 2, "high": max(20, 2 * leaf), "log": True},
        "min_samples_leaf": {"type": "int", "low": 1, "high": leaf, "log": True},
        "max_features": {"type": "categorical", "choices": max_features},
        "criterion": {"type": "categorical", "choices": ["gini", "entropy"]},
        "bootstrap": {"type": "categorical", "choices": [True, False]},
    }


def _columns_drawn(choice: Any, features: int) -> int:
    """Columns a split considers for ``max_features=choice`` (as scikit-learn counts them)."""
    if choice == "sqrt":
        return max(1, int(math.sqrt(features)))
    if choice == "log2":
        return max(1, int(math.log2(features)))
    return max(1, int(choice * features))


def encoded_columns(spec: DatasetSpec) -> int:
    """Columns the pipeline's preparation step gives the forest (before missing-value
    indicators, which depend on the rows): numbers, their products, one-hot categories."""
    numeric = sum(1 for f in spec.features if f.is_numeric)
    products = numeric * (numeric - 1) // 2 if spec.numeric_products else 0
    categories = sum(max(1, len(f.categories or ())) for f in spec.features if not f.is_numeric)
    return numeric + products + categories


def search_space_for(spec: DatasetSpec, y_train: pd.Series) -> dict[str, dict[str, Any]]:
    """:func:`derive_search_space` for the training rows ``y_train`` of ``spec``."""
    return derive_search_space(len(y_train), encoded_columns(spec), len(spec.classes))


def search_space_fingerprint(space: dict[str, dict[str, Any]], spec: DatasetSpec | None = None) -> str:
    """A short hash of the search ``space`` (and of the spec's ``numeric_products``, which
    changes what every trial fits): studies tuned over another space (other rows, an older
    version of sml) are neither resumed by default nor mixed with this one's trials."""
    scored: dict[str, Any] = dict(space)
    if spec is not None and spec.numeric_products:
        scored["numeric_products"] = True
    text = json.dumps(scored, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:8]

METRIC_NAME = "accuracy"


def suggest_params(trial: optuna.Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One point of ``space``."""
    params: dict[str, Any] = {}
    for name, dimension in space.items():
        if dimension["type"] == "int":
            params[name] = trial.suggest_int(name, dimension["low"], dimension["high"], log=dimension.get("log", False))
        else:
            params[name] = trial.suggest_categorical(name, dimension["choices"])
    return params


DEFAULT_TRIALS = (DEFAULT_FOREST, DEFAULT_EXTRA_TREES)
"""The trials a study :func:`open_study` creates starts from, in their order."""


def enqueue_default_forest(study: optuna.Study) -> None:
    """Queue :data:`DEFAULT_FOREST` and :data:`DEFAULT_EXTRA_TREES` as the study's next
    trials, each unless the study has one with those params already (a resumed study keeps
    a single one).

    ``skip_if_exists`` looks, then inserts: two processes calling this on one study at the
    same time may both find no such trial and both queue it. Only the process that created
    the study calls it for a new one (:func:`open_study`)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=optuna.exceptions.ExperimentalWarning)
        for params in DEFAULT_TRIALS:
            study.enqueue_trial(dict(params), skip_if_exists=True)


DEFAULT_TRIALS_WAIT_S = 2.0
"""How long a process that loaded a study waits for the default trials its creator is
queueing (the creator queues them right after creating it: milliseconds)."""


def await_default_forest(study: optuna.Study, wait: float | None = None) -> None:
    """For a study this process loaded (another created it): wait for the default trials
    its creator queues, or queue them into a study that was made without them.

    - The study has both: nothing to do.
    - Its only trials are part of the defaults, waiting (none yet, or the first): its
      creator is queueing them. Wait up to ``wait`` seconds (default
      :data:`DEFAULT_TRIALS_WAIT_S`) for the rest, and queue nothing even when they do not
      come: every process that loaded the study would queue them at once.
    - It has other trials but neither default (a study made outside sml, or whose creator
      stopped between creating it and queueing them and that was searched since): queue
      both. Two processes loading such a study at the same instant may both queue them;
      a study :func:`open_study` created never comes here.
    - It has other trials and one default: its creator stopped between queueing the two.
      The other is left out (queueing it could race a creator that was only slow).
    """
    deadline = time.monotonic() + (DEFAULT_TRIALS_WAIT_S if wait is None else wait)
    while True:
        trials = study.get_trials(deepcopy=False)
        found = [any(_has_params(t, params) for t in trials) for params in DEFAULT_TRIALS]
        if all(found):
            return
        queueing = all(t.state == optuna.trial.TrialState.WAITING and any(_has_params(t, p) for p in DEFAULT_TRIALS)
                       for t in trials)
        if not queueing:
            if not any(found):
                enqueue_default_forest(study)
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.05)


def _has_params(trial: optuna.trial.FrozenTrial, params: dict[str, Any]) -> bool:
    """Whether ``trial`` is (or is queued to be) the point ``params`` (a queued trial's
    params are its ``fixed_params`` until it runs)."""
    return bool(trial.system_attrs.get("fixed_params", trial.params) == params)


def started_trials(study: optuna.Study) -> int:
    """The study's trials that have started (all but the queued ones, WAITING)."""
    waiting = optuna.trial.TrialState.WAITING
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state != waiting)


PARALLEL_ROWS = 1000
"""Fewer training rows than this: one thread per forest. Measured on 2 cores (100 trees, 12
columns, fit and score): 570 rows 0.12 s on one thread, 0.16 s on two; 1,400 rows 0.25 s
and 0.18 s; 4,000 rows 0.71 s and 0.41 s."""


def forest_jobs(workers: int, rows: int = PARALLEL_ROWS) -> int:
    """Threads per forest fitted on ``rows`` rows: the machine's cores shared among the
    tuning processes, or one on small data where threads cost more than they save (a
    forest's trees fit in parallel threads; results do not depend on their number)."""
    if rows < PARALLEL_ROWS:
        return 1
    return max(1, available_cpus() // max(workers, 1))


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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
    space: dict[str, dict[str, Any]],
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
        params = suggest_params(trial, space)
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
        storage.set_trial_user_attr(trial._trial_id, tracking.RECOVERED_TAG, f"failed by process {os.getpid()}: its process {pid} had died")  # noqa: SLF001
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
    """Create the study, or load it when it exists (studies resume and can be shared),
    with its default trials queued exactly once.

    The process whose call creates the study queues them at once
    (:func:`enqueue_default_forest`); a process that loads it waits for them, or queues them
    only into a study that has other trials and none of them (:func:`await_default_forest`).
    The database decides which process creates it (study names are unique): workers that
    open a new study together and each queued the defaults unless the study had them (a
    look, then an insert) both found none and both queued them.

    Workers started together on a fresh database race to create Optuna's tables (on
    PostgreSQL the loser gets a unique violation, or ``relation "studies" already exists``
    when both issue ``CREATE TABLE`` at once); the loser retries and finds them.
    """
    study, created = _create_or_load_study(storage, study_name, seed)
    try:
        if created:
            enqueue_default_forest(study)
        else:
            await_default_forest(study)
    except Exception as exc:  # noqa: BLE001 - storage drivers raise many kinds
        raise storage_error(storage, exc) from None
    return study


def _create_or_load_study(storage: str, study_name: str, seed: int) -> tuple[optuna.Study, bool]:
    """The study, and whether this call created it (``False``: it existed and was loaded)."""
    import sqlalchemy.exc

    sampler, pruner = make_sampler(seed), make_pruner()
    for attempt in range(1, OPEN_STUDY_ATTEMPTS + 1):
        try:
            try:
                study = optuna.create_study(
                    storage=storage,
                    study_name=study_name,
                    direction="maximize",
                    sampler=sampler,
                    pruner=pruner,
                    load_if_exists=False,
                )
                return study, True
            except optuna.exceptions.DuplicatedStudyError:
                return optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner), False
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as exc:
            lost_race = isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in str(exc)
            if not lost_race or attempt == OPEN_STUDY_ATTEMPTS:
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


def trial_value(trial: optuna.trial.FrozenTrial) -> float:
    """A finished trial's objective value (Optuna types it ``float | None``: a trial that
    has not finished has none)."""
    if trial.value is None:
        raise ValueError(f"trial {trial.number} has no value (state {trial.state.name})")
    return trial.value


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


def search_space_description(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The search space as plain JSON-able data (for MLflow params and artifacts)."""
    return {name: dict(dimension) for name, dimension in space.items()}


def trial_cap(n_trials: int, workers: int) -> int:
    """Trials per worker so that ``workers`` processes together reach ``n_trials``."""
    return math.ceil(n_trials / max(workers, 1))
