"""The training job: tune a random forest with Optuna, log everything to MLflow, register
the refitted best pipeline and promote it by the rule in :mod:`..training.promotion`.

Reads: the feature view ``<dataset>_training`` (by default only ``backfill`` rows).
Logs: a parent run in experiment ``<dataset>-training`` (params: search space, seed, data
version, row counts and the best trial's hyper-parameters; dataset inputs: the training
and holdout rows with their feature view, data version and digest; metrics: CV and
holdout scores, per class by class name, baseline; artifacts: confusion matrix as JSON
and PNG, feature importances, training row keys; the logged model
``<dataset>-random-forest``) and one nested run per trial (a pruned one ends KILLED).
Registers: model ``<dataset>`` (described when it has no description) with a described
version, alias ``challenger``, and ``champion`` when promoted.

Across machines (:func:`tune_as_worker`, ``sml train --workers-only``): every worker adds
trials to one shared Optuna study (PostgreSQL) under its own parent run in the same
experiment, tagged ``sml.role=worker`` and the study's name, and registers nothing; a
final ``train`` with ``trials=0`` refits the study's best trial and registers it once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import multiprocessing
import secrets
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serverless_ml import defaults, registry
from serverless_ml.datasets.groups import existing_feature_group
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import DataValidationError, SmlError
from serverless_ml.feature_store.base import (
    BACKFILL_ORIGIN,
    LIVE_ORIGIN,
    ORIGIN_COLUMN,
    FeatureGroup,
    FeatureStore,
    FeatureView,
)
from serverless_ml.settings import Settings
from serverless_ml.progress import ProgressCallback
from serverless_ml.system_faults import remember_place
from serverless_ml.datasets import split
from serverless_ml.training import evaluation, promotion, search
from serverless_ml.inference import estimate
from serverless_ml.training.model import (
    SKOPS_TRUSTED_TYPES,
    as_model_input,
    calibrated_pipeline,
    calibration_method,
    fit_pipeline,
    raw_feature_importances,
)
from serverless_ml.tracking import Tracking
from serverless_ml.trial_logging import TrialLogger

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from serverless_ml.notify import Receiver

MIN_ROWS = 20
WORKER_RUN_ATTR = "worker_run_id"
"""Trial user attribute: the MLflow run of the worker that ran the trial."""
STUDY_ROWS_ATTRS = ("sml.dataset", "sml.rows_sha256", "sml.seed", "sml.folds", "sml.search_space")
"""Study user attributes that pin a study to its training rows, split, folds and search space."""


@dataclass(frozen=True)
class TrainOptions:
    """Options of one training job (defaults in :mod:`serverless_ml.defaults`); an
    out-of-range value fails at construction with the CLI's one-line error, whoever
    builds it (the CLI, the scheduler, a simulation's retrain, a benchmark)."""

    trials: int = defaults.TRAIN_TRIALS
    seed: int = defaults.TRAIN_SEED
    timeout: float | None = None
    """Stop starting trials after this many seconds; ``None``: :data:`defaults.TRAIN_TIME_BUDGET_S`."""
    holdout: float = defaults.TRAIN_HOLDOUT
    """Holdout share; 0: :data:`defaults.TRAIN_AUTO_HOLDOUT`, at least one row of each class."""
    folds: int = defaults.TRAIN_FOLDS
    """CV folds; 0: :data:`defaults.TRAIN_AUTO_FOLDS`, fewer when a class has fewer training rows."""
    auto_folds: int = defaults.TRAIN_AUTO_FOLDS
    """With ``folds`` 0: the most folds to choose (a quick retrain asks for fewer)."""
    storage: str | None = None
    study_name: str | None = None
    include_synthetic: bool = False
    promote: str = defaults.TRAIN_PROMOTE
    workers: int = defaults.TRAIN_WORKERS
    quiet: bool = False
    workers_only: bool = False
    worker_id: int | None = None
    progress: ProgressCallback | None = field(default=None, compare=False, repr=False)
    """Called as ``progress(done, total, label)`` after each trial this process ran (the
    ``sml`` command's line per trial in a log; on a terminal Optuna's bar is shown instead)."""
    notify: tuple[Receiver, ...] = ()
    """Where each alias move is sent (``--notify``; :mod:`.notifications`)."""

    def __post_init__(self) -> None:
        """Refuse out-of-range options in one line each, before anything is read."""
        if self.seed < 0:
            raise SmlError(f"--seed must be >= 0, got {self.seed}")
        if self.worker_id is not None and not self.workers_only:
            raise SmlError("--worker-id needs --workers-only")
        if self.trials < 0:
            raise SmlError(f"--trials must be >= 1 (or 0 to refit an existing study's best trial), got {self.trials}")
        if self.workers_only and self.trials < 1:
            raise SmlError(f"--trials must be >= 1 with --workers-only, got {self.trials}")
        if self.workers_only and not self.study_name:
            raise SmlError("--workers-only needs --study-name: every worker and the final `sml train --trials 0` "
                           "name the same study")
        if self.worker_id is not None and self.worker_id < 0:
            raise SmlError(f"--worker-id must be >= 0, got {self.worker_id}")
        if self.holdout != 0 and not 0.05 <= self.holdout <= 0.5:
            raise SmlError(f"--holdout must be between 0.05 and 0.5 (or 0: {defaults.TRAIN_AUTO_HOLDOUT}, "
                           f"at least one row of each class), got {self.holdout}")
        if self.folds != 0 and not 2 <= self.folds <= 20:
            raise SmlError(f"--folds must be between 2 and 20 (or 0: {defaults.TRAIN_AUTO_FOLDS}, fewer when a class "
                           f"has fewer training rows), got {self.folds}")
        if self.workers < 1:
            raise SmlError(f"--workers must be >= 1, got {self.workers}")
        if self.timeout is not None and self.timeout <= 0:
            raise SmlError(f"--timeout must be > 0 seconds (or 0 for the default budget), got {self.timeout}")
        if self.promote not in defaults.TRAIN_PROMOTE_MODES:
            raise SmlError(f"--promote must be one of {', '.join(defaults.TRAIN_PROMOTE_MODES)}")


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
    kept: bool = False
    """Nothing was trained: ``model_version`` (the champion or challenger) had been trained
    on the same rows, seed and search (:func:`same_training_version`); ``run_id`` is its
    training run and ``decision.reason`` says so."""
    split: str = ""
    """The holdout and folds chosen (:meth:`split.SplitPlan.describe`)."""
    notes: list[str] = field(default_factory=list)
    """What the holdout says the model cannot do (:func:`model_notes`)."""

    def outcome(self) -> str:
        """One line: the version registered and whether it was promoted, or the version kept."""
        if self.kept:
            return self.decision.reason
        return (f"registered version {self.model_version} as challenger; "
                f"{'promoted to champion' if self.decision.promote else 'not promoted'} ({self.decision.reason})")

    def summary(self) -> str:
        if self.kept:
            return self.outcome()
        holdout = self.holdout_metrics.get(registry.HOLDOUT_ACCURACY_METRIC, float("nan"))
        champion = "none" if self.champion_accuracy is None else f"{self.champion_accuracy:.4f}"
        params = ", ".join(f"{k}={v}" for k, v in self.best_params.items())
        lines = [
            f"study {self.study_name}: {self.trials_this_run} trials this run, {self.trials_total} in the study",
            *([self.split] if self.split else []),
            f"best trial #{self.best_trial}: CV accuracy {self.cv_mean:.4f} +/- {self.cv_std:.4f}",
            f"  {params}",
            f"holdout ({self.rows.get('holdout', 0)} rows): accuracy {holdout:.4f}, "
            f"majority baseline {self.baseline_accuracy:.4f}, champion {champion}",
            self.outcome(),
            f"MLflow run {self.run_id} (experiment {self.experiment_id}), data version {self.data_version}",
            *(f"note: {note}" for note in self.notes),
        ]
        return "\n".join(lines)


def holdout_undefined(spec: DatasetSpec, confusion: dict[str, Any]) -> str:
    """The holdout figures :func:`evaluation.metrics_from_confusion` left out of a training
    run's metrics (no denominator), for its :data:`registry.NOT_COMPUTED_TAG` ("" none)."""
    from serverless_ml.training import evaluation

    undefined = evaluation.undefined_figures(np.asarray(confusion["matrix"]), list(spec.classes),
                                             [spec.class_name(c) for c in spec.classes])
    return f"holdout figures not computed: {undefined}" if undefined else ""


def model_notes(spec: DatasetSpec, metrics: dict[str, float], baseline: float) -> list[str]:
    """What the holdout says a trained model cannot do, for the job's summary: a class of
    the holdout it never predicts (recall 0; on imbalanced classes an accuracy search
    rewards the majority), and a holdout accuracy no better than always predicting the
    majority class."""
    from serverless_ml.training import evaluation

    notes = []
    keys = evaluation.class_metric_keys(list(spec.classes), spec.class_names)
    for value, key in zip(spec.classes, keys, strict=True):
        support = metrics.get(f"{registry.HOLDOUT_METRIC_PREFIX}support_{key}")
        if support and metrics.get(f"{registry.HOLDOUT_METRIC_PREFIX}recall_{key}") == 0:
            positive = " (the positive class)" if len(spec.classes) == 2 and value == spec.positive_class else ""
            notes.append(f"the model predicts {spec.class_name(value)!r}{positive} for none of the {int(support)} holdout "
                         f"rows of that class (recall 0): the search maximises accuracy, which on imbalanced classes "
                         f"the majority can win")
    accuracy = metrics.get(registry.HOLDOUT_ACCURACY_METRIC)
    if accuracy is not None and accuracy <= baseline:
        notes.append(f"holdout accuracy {accuracy:.4f} is no better than always predicting the majority class "
                     f"({baseline:.4f})")
    return notes


@dataclass
class WorkerReport:
    """What one tuning worker (``--workers-only``) added to a shared study."""

    run_id: str
    experiment_id: str
    dataset: str
    study_name: str
    sampler_seed: int
    trials_this_worker: int
    trials_total: int
    best_trial: int | None
    best_value: float | None
    split: str = ""

    def summary(self) -> str:
        best = ("no completed trial yet" if self.best_trial is None
                else f"best trial so far #{self.best_trial}: CV accuracy {self.best_value:.4f}")
        return "\n".join([
            f"study {self.study_name}: this worker added {self.trials_this_worker} trials, "
            f"{self.trials_total} in the study (sampler seed {self.sampler_seed})",
            *([self.split] if self.split else []),
            best,
            f"MLflow run {self.run_id} (experiment {self.experiment_id}); nothing registered",
            "when every worker is done, refit and register once: "
            f"sml train --dataset {self.dataset} --storage URL --study-name {self.study_name} --trials 0",
        ])


def training_view(spec: DatasetSpec, store: FeatureStore) -> tuple[FeatureGroup, FeatureView]:
    """The dataset's training feature view ``<dataset>_training``: its features and label.
    Its version is the feature group's: a spec whose ``version:`` is bumped for a new
    schema gets a new view too (the view of the old group stays as it was)."""
    group = existing_feature_group(spec, store)
    query = group.select([spec.primary_key, *spec.feature_names, spec.label, ORIGIN_COLUMN])
    view = store.get_or_create_feature_view(
        f"{spec.name}_training", spec.version, query, labels=[spec.label],
        description=f"features and label of {spec.name} for training",
    )
    return group, view


def load_training_rows(
    spec: DatasetSpec, store: FeatureStore, include_synthetic: bool
) -> tuple[pd.DataFrame, pd.Series, pd.Series, int | None]:
    """Features, labels and primary keys of the training rows, and the data version read."""
    group, view = training_view(spec, store)
    return read_training_rows(spec, group, view, include_synthetic)


REAL_ORIGINS = (BACKFILL_ORIGIN, LIVE_ORIGIN)
"""The rows training reads unless synthetic rows are included: the backfill and the live
rows (``sml ingest``) whose labels have arrived."""


def read_training_rows(
    spec: DatasetSpec, group: Any, view: Any, include_synthetic: bool
) -> tuple[pd.DataFrame, pd.Series, pd.Series, int | None]:
    """:func:`load_training_rows` from the group and view :func:`training_view` opened."""
    data_version = group.data_version()
    # Real rows: the backfill and the live rows (`sml ingest`) whose labels have arrived.
    only_real = None if include_synthetic else group.get_feature(ORIGIN_COLUMN).isin(list(REAL_ORIGINS))
    x, y = view.training_data(extra_filter=only_real, version=data_version)
    # Rows whose label is not known yet (live rows awaiting `sml labels`) cannot be trained on.
    labelled = y[spec.label].notna().to_numpy()
    if not labelled.all():
        x, y = x[labelled], y[labelled].copy()
        if spec.label_type == "bigint":  # a nullable integer column without its gaps: plain integers again
            y[spec.label] = y[spec.label].astype("int64")
    keys = x[spec.primary_key].reset_index(drop=True)
    return as_model_input(x, spec).reset_index(drop=True), y[spec.label].reset_index(drop=True), keys, data_version


def training_labels(spec: DatasetSpec, group: FeatureGroup, include_synthetic: bool) -> pd.Series:
    """The labels :func:`read_training_rows` would train on (the known labels of the real
    rows, or of every row with ``include_synthetic``), read from the group alone."""
    origins = None if include_synthetic else list(REAL_ORIGINS)
    parts = [batch.to_pandas() for batch in group.read_batches(columns=[spec.label, ORIGIN_COLUMN])]
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=[spec.label, ORIGIN_COLUMN])
    if origins is not None:
        frame = frame[frame[ORIGIN_COLUMN].isin(origins)]
    return frame[spec.label].dropna().reset_index(drop=True)


def check_training_rows(spec: DatasetSpec, y: pd.Series, holdout: float, folds: int,
                        auto_folds: int = defaults.TRAIN_AUTO_FOLDS) -> split.SplitPlan:
    """Enough rows, at least two classes, and every class in both splits and every fold:
    the split that does it (``holdout``/``folds`` 0: adapted to the smallest class)."""
    if len(y) < MIN_ROWS:
        raise DataValidationError(f"dataset '{spec.name}' has {len(y)} training rows; need at least {MIN_ROWS}")
    counts = y.value_counts()
    if len(counts) < 2:
        raise DataValidationError(
            f"dataset '{spec.name}': training rows have a single class ({counts.index[0]}); need at least two"
        )
    return split.plan_split({cls: int(counts.get(cls, 0)) for cls in spec.classes}, holdout, folds, spec.name,
                            auto_folds)


def _worker(args: dict[str, Any]) -> None:
    """A tuning process: loads the shared study and adds trials until the cap is reached."""
    import optuna

    from serverless_ml.redaction import install_log_scrubber, remember

    remember(args["storage"])  # a spawned process: its log lines never show the password either
    install_log_scrubber()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=args["study"], storage=args["storage"],
        sampler=search.make_sampler(args["sampler_seed"]), pruner=search.make_pruner(),
    )
    callbacks = [args["trial_sink"]] if args.get("trial_sink") is not None else []
    objective = search.make_objective(args["spec"], args["x"], args["y"], args["folds"], args["seed"], args["space"])
    objective = _with_trial_attrs(objective, args.get("trial_attrs"))
    try:
        search.run_trials(study, objective, args["n_trials"], args["timeout"], callbacks, total_cap=args["total_cap"])
    finally:
        _close_callbacks(callbacks)


class _TrialProgress:
    """An Optuna callback reporting each trial this process finished to a progress callback."""

    def __init__(self, progress: ProgressCallback, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, study: Any, trial: Any) -> None:
        self.done += 1
        value = f", CV accuracy {trial.value:.4f}" if trial.value is not None else ""
        try:
            best = f" (best {study.best_value:.4f}, trial {study.best_trial.number})"
        except ValueError:  # no trial completed yet
            best = ""
        self.progress(self.done, self.total, f"trial {trial.number} {trial.state.name.lower()}{value}{best}")


def _close_callbacks(callbacks: list[Any]) -> None:
    """Let callbacks that log in the background (``TrialLogger``, ``TrialSink``) finish."""
    for callback in callbacks:
        close = getattr(callback, "close", None)
        if close is not None:
            close()


def _with_trial_attrs(objective: Any, attrs: dict[str, Any] | None) -> Any:
    """``objective`` that first stamps on the trial the process running it
    (:func:`search.stamp_owner`) and ``attrs`` (e.g. which worker ran it)."""

    def stamped(trial: Any) -> float:
        search.stamp_owner(trial)
        for key, value in (attrs or {}).items():
            trial.set_user_attr(key, value)
        return objective(trial)

    return stamped


def worker_sampler_seed(seed: int, worker_id: int | None) -> int:
    """The sampler seed of one ``--workers-only`` process.

    Workers on one study must not share a sampler seed: with the same seed and the same
    history they would suggest the same points. ``worker_id`` makes the seed
    reproducible; without it the seed is drawn at random (and logged).
    """
    entropy = [seed, worker_id] if worker_id is not None else [seed, secrets.randbits(64)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0] & 0x7FFFFFFF)


def tune(
    spec: DatasetSpec,
    x: pd.DataFrame,
    y: pd.Series,
    options: TrainOptions,
    storage: str,
    study_name: str,
    logger: Any | None,
    *,
    sampler_seed: int | None = None,
    trial_attrs: dict[str, Any] | None = None,
) -> tuple[Any, int]:
    """Run the study's new trials (in ``options.workers`` processes); return it and how
    many trials it gained meanwhile. ``options`` are resolved (:func:`resolved_options`:
    the folds and time budget chosen), as :func:`train` and :func:`tune_as_worker` pass them.

    The samplers are seeded ``sampler_seed`` (default ``options.seed``) plus the process
    index. ``trial_attrs`` are set on every trial this call runs. With
    ``options.workers_only`` other machines add trials at the same time, so a cap on the
    study's total would count theirs: each process runs its share of ``options.trials``.
    """
    import optuna

    callbacks: list[Any] = [logger] if logger is not None else []
    if options.progress is not None:
        callbacks.append(_TrialProgress(options.progress, options.trials))
    try:
        timeout = options.timeout
        if timeout is None or options.folds < 2:
            raise ValueError(f"tune() takes resolved options (resolved_options), got folds={options.folds}, "
                             f"timeout={options.timeout}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        base_seed = options.seed if sampler_seed is None else sampler_seed
        study = search.open_study(storage, study_name, base_seed)  # the default trials queued once
        before = search.started_trials(study)
        if options.workers_only:
            per_process, cap = search.trial_cap(options.trials, options.workers), None
        else:
            per_process, cap = options.trials, before + options.trials
        space = search.search_space_for(spec, y)
        folds = search.cv_folds(y, options.folds, options.seed)
        processes = []
        sink = next((c.sink() for c in callbacks if hasattr(c, "sink")), None)
        if options.workers > 1:
            context = multiprocessing.get_context("spawn")
            with signals_deferred():  # a SIGTERM or Ctrl-C while spawning is raised after it
                for index in range(1, options.workers):
                    args = {
                        "spec": spec, "x": x, "y": y, "folds": folds, "seed": options.seed,
                        "sampler_seed": base_seed + index, "study": study_name, "storage": storage,
                        "n_trials": per_process, "timeout": timeout, "total_cap": cap, "space": space,
                        "dataset": spec.name, "trial_attrs": trial_attrs,
                        "trial_sink": sink,
                    }
                    process = context.Process(target=_worker, args=(args,), daemon=True)
                    process.start()
                    processes.append(process)
        objective = search.make_objective(spec, x, y, folds, options.seed, space,
                                          n_jobs=search.forest_jobs(options.workers, len(y)))
        objective = _with_trial_attrs(objective, trial_attrs)
        try:
            search.run_trials(
                study, objective, per_process, timeout, callbacks, total_cap=cap,
                show_progress_bar=not options.quiet,
            )
        finally:
            for process in processes:
                process.join()
        failed = [p.exitcode for p in processes if p.exitcode != 0]
        if failed:
            raise SmlError(f"{len(failed)} tuning worker process(es) failed (exit codes {failed})")
        return study, search.started_trials(study) - before
    finally:
        _close_callbacks(callbacks)


def start_trial_logger(prep: _Prepared, run_id: str, spec: DatasetSpec) -> TrialLogger:
    """The trials' logger of run ``run_id``, its helper process spawned with the signals
    held (:func:`signals_deferred`): a SIGTERM while the child reads its arguments left it
    printing "Ran out of input" under the scheduler's clean stop."""
    with signals_deferred():
        return TrialLogger(prep.tracker.uri, prep.experiment_id, run_id, spec.name)


@contextlib.contextmanager
def signals_deferred(signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Hold SIGINT and SIGTERM (their Python handlers) until the block ends, then raise the
    ones that came: spawning a tuning worker writes its pickled arguments into the child's
    pipe after starting it, and a handler raising in between (the scheduler's ``Shutdown``)
    left a child reading an empty pipe, which printed a traceback ("Ran out of input").
    Outside the main thread (where handlers cannot be set) the block runs as it is."""
    import threading

    held = {s: signal.getsignal(s) for s in signals} if threading.current_thread() is threading.main_thread() else {}
    held = {s: h for s, h in held.items() if h is not None}  # a handler set outside Python stays
    caught: list[int] = []

    def hold(signum: int, _frame: Any) -> None:
        caught.append(signum)

    for sig in held:
        signal.signal(sig, hold)
    try:
        yield
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)


def default_study_name(spec: DatasetSpec, data_version: int | None, options: TrainOptions,
                       space: dict[str, Any]) -> str:
    """Same data, seed, row selection and search space -> same study, so an interrupted
    job resumes."""
    rows = "all" if options.include_synthetic else "real"
    fingerprint = search.search_space_fingerprint(space, spec)
    return f"{spec.name}-v{spec.version}-data{data_version}-{rows}-seed{options.seed}-space{fingerprint}"


@dataclass(frozen=True)
class ChampionComparison:
    """The current champion against the challenger on the holdout rows the champion was
    not trained on (a row it learned from would flatter it: the holdout is drawn anew from
    the rows of each training, so part of it may be the champion's training rows)."""

    champion_accuracy: float | None
    challenger_accuracy: float | None
    rows: int
    note: str | None


def compare_with_champion(
    name: str, challenger: Any, x: pd.DataFrame, y: pd.Series, keys: pd.Series, primary_key: str, client: Any
) -> ChampionComparison:
    """Score the champion and ``challenger`` on the holdout rows (``x``, ``y``, ``keys``)
    the champion was not trained on; the champion's accuracy is ``None`` (and ``note``
    says why) when there is no champion, it cannot score these rows, or every holdout row
    was one of its training rows. ``client``: the job's ``MlflowClient``."""
    version = registry.alias_version(name, registry.CHAMPION, client)
    if version is None:
        return ChampionComparison(None, None, len(y), "no champion")
    training_keys = registry.version_training_keys(version, primary_key, client)
    seen = training_keys.train if training_keys is not None else None
    unseen = np.ones(len(y), dtype=bool) if seen is None else ~keys.isin(seen).to_numpy()
    rows = int(unseen.sum())
    if rows == 0:
        return ChampionComparison(None, None, 0, (
            f"champion version {version.version} was trained on every holdout row: no fair comparison; "
            "kept (retrain when new rows have arrived, or use --promote always)"))
    try:
        model = registry.load_version_model(name, version.version)
        champion_accuracy = float(model.score(x[unseen], y[unseen]))
    except Exception as exc:  # noqa: BLE001 - a champion that cannot score is reported, not fatal
        return ChampionComparison(None, None, rows, (
            f"champion version {version.version} cannot score these rows: {str(exc).splitlines()[0][:200]}"))
    note = None if seen is not None else f"champion version {version.version} has no training keys: compared on every holdout row"
    return ChampionComparison(champion_accuracy, float(challenger.score(x[unseen], y[unseen])), rows, note)


@dataclass
class _Prepared:
    """Training rows split, tracking configured, study opened: what every mode starts from."""

    x_train: pd.DataFrame
    x_hold: pd.DataFrame
    y_train: pd.Series
    y_hold: pd.Series
    keys_train: pd.Series
    keys_hold: pd.Series
    rows_total: int
    data_version: int | None
    tracker: Tracking
    storage: str
    study_name: str
    study: Any
    experiment_id: str
    plan: split.SplitPlan
    """The holdout and folds chosen (adapted to the smallest class unless given)."""
    space: dict[str, Any]
    """The search space derived from the training rows (:func:`search.search_space_for`)."""
    options: TrainOptions
    """The job's options with the folds, holdout share and time budget resolved."""
    rows_fingerprint: dict[str, str]
    """:func:`study_rows_fingerprint` of the training rows (checked against the study)."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where the rows came from (:func:`tracking.feature_group_source`)."""


def study_rows_fingerprint(spec: DatasetSpec, keys: pd.Series, x: pd.DataFrame, y: pd.Series,
                           options: TrainOptions, space: dict[str, Any] | None = None) -> dict[str, str]:
    """What a study's trials were scored on: the training rows (keys, features, labels),
    the seed of the split and folds, the number of folds (resolved) and the search space
    (default: the one derived from these rows)."""
    rows = pd.concat([keys.reset_index(drop=True), x.reset_index(drop=True), y.reset_index(drop=True)], axis=1)
    digest = hashlib.sha256(rows.to_csv(index=False).encode()).hexdigest()
    space = search.search_space_for(spec, y) if space is None else space
    values = (spec.name, digest, str(options.seed), str(options.folds), search.search_space_fingerprint(space, spec))
    return dict(zip(STUDY_ROWS_ATTRS, values, strict=True))


def check_study_rows(study: Any, fingerprint: dict[str, str]) -> None:
    """Pin a new study to its rows; refuse to add to or refit a study scored on others.

    Trials of one study are only comparable, and its best trial only refittable, on the
    rows, split and folds they were scored on: workers on several machines must agree.
    An attribute not stored yet is no difference: workers starting together on a new study
    each pin it (one attribute per call), and one may read it half pinned by another.
    """
    stored = {key: study.user_attrs.get(key) for key in fingerprint}
    differ = [key.removeprefix("sml.") for key in fingerprint if stored[key] not in (None, fingerprint[key])]
    if not differ:
        for key, value in fingerprint.items():
            if stored[key] is None:
                study.set_user_attr(key, value)
        return
    raise SmlError(
        f"study '{study.study_name}' was tuned on other training rows or settings ({', '.join(differ)} differ): "
        "use the same --dataset, --seed, --folds, --holdout, --include-synthetic and feature data as its "
        "other trials (and the same sml version: search_space differs after an upgrade), or another --study-name"
    )


def _existing_study(storage: str, study_name: str, seed: int) -> Any:
    """The study, which must exist (``--trials 0`` refits, it does not tune)."""
    import optuna

    try:
        names = optuna.study.get_all_study_names(storage)
    except Exception as exc:  # noqa: BLE001 - storage drivers raise many kinds
        raise search.storage_error(storage, exc) from None
    if study_name not in names:
        from serverless_ml.tracking import redact_uri

        raise SmlError(
            f"--trials must be >= 1 to tune; 0 refits the best trial of an existing study, and study "
            f"'{study_name}' does not exist in {redact_uri(storage)}"
        )
    return optuna.load_study(study_name=study_name, storage=storage, sampler=search.make_sampler(seed),
                             pruner=search.make_pruner())


def _prepare(spec: DatasetSpec, store: FeatureStore, settings: Settings, options: TrainOptions,
             tracker: Tracking | None = None) -> _Prepared:
    """Everything that can fail on bad input fails here, before any run is started."""
    import optuna

    from serverless_ml import tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Tracking and an explicit storage are checked before the feature view is created.
    tracker = tracking.tracking_for(settings, tracker)
    if options.storage:
        search.check_storage(options.storage)
    # The classes are checked on the group's labels before the feature view is created, so
    # that a refusal writes nothing (the view's metadata included).
    check_training_rows(spec, training_labels(spec, existing_feature_group(spec, store), options.include_synthetic),
                        options.holdout, options.folds, options.auto_folds)
    group, view = training_view(spec, store)
    x, y, keys, data_version = read_training_rows(spec, group, view, options.include_synthetic)
    plan = check_training_rows(spec, y, options.holdout, options.folds, options.auto_folds)
    options = resolved_options(options, plan)
    train_idx, hold_idx = split.split_holdout(y, plan, options.seed)
    x_train, x_hold, y_train, y_hold, keys_train, keys_hold = (
        frame.iloc[idx].reset_index(drop=True)
        for frame, idx in ((x, train_idx), (x, hold_idx), (y, train_idx), (y, hold_idx), (keys, train_idx), (keys, hold_idx))
    )
    space = search.search_space_for(spec, y_train)
    storage = options.storage or settings.optuna_storage
    if not options.storage:  # the default database's folder (SML_STATE_DIR) may not exist yet
        settings.optuna_dir.mkdir(parents=True, exist_ok=True)
    if storage.startswith("sqlite:///"):
        remember_place("Optuna study database", storage.removeprefix("sqlite:///").split("?", 1)[0])
    study_name = options.study_name or default_study_name(spec, data_version, options, space)
    if options.trials == 0:
        study = _existing_study(storage, study_name, options.seed)
    else:
        study = search.open_study(storage, study_name, options.seed)  # fails fast on a bad storage URL
    rows_fingerprint = study_rows_fingerprint(spec, keys_train, x_train, y_train, options, space)
    check_study_rows(study, rows_fingerprint)
    experiment_id = tracking.get_or_create_experiment(registry.training_experiment(spec.name))
    for run_id in tracking.close_orphaned_runs(experiment_id, tracker.client):
        print(f"closed run {run_id}: left RUNNING by a training process of this machine that ended without closing it (killed, or its store failed)")
    for number in search.fail_orphaned_trials(study):
        print(f"failed trial {number} of study {study_name}: left RUNNING by a training process of this machine that ended without closing it (killed, or its store failed)")
    return _Prepared(
        x_train=x_train, x_hold=x_hold, y_train=y_train, y_hold=y_hold, keys_train=keys_train,
        keys_hold=keys_hold, rows_total=len(y), data_version=data_version, tracker=tracker,
        storage=storage, study_name=study_name, study=study, experiment_id=experiment_id,
        source=tracking.feature_group_source(store, group, data_version, view_name=view.name, view_version=view.version),
        plan=plan, space=space, options=options, rows_fingerprint=rows_fingerprint,
    )


def resolved_options(options: TrainOptions, plan: split.SplitPlan) -> TrainOptions:
    """``options`` with the folds and holdout share of ``plan`` and the time budget filled in."""
    timeout = defaults.TRAIN_TIME_BUDGET_S if options.timeout is None else options.timeout
    return dataclasses.replace(options, folds=plan.folds, holdout=plan.holdout, timeout=timeout)


def _log_training_inputs(run_id: str, spec: DatasetSpec, prep: _Prepared, options: TrainOptions) -> None:
    """Log the training and holdout rows as the run's dataset inputs (contexts
    ``training`` and ``testing``): the feature view and group they were read from, the
    data version, and a digest of each split's keys, features and labels."""
    from serverless_ml import tracking

    columns = tracking.spec_columns(spec, [spec.primary_key, *spec.feature_names, spec.label])
    name = prep.source.get("feature_view") or spec.name
    rows = "real and synthetic rows" if options.include_synthetic else "real rows only"
    inputs = []
    for context, split_name, keys, x, y in (("training", "train", prep.keys_train, prep.x_train, prep.y_train),
                                            ("testing", "holdout", prep.keys_hold, prep.x_hold, prep.y_hold)):
        frame = pd.concat([keys.rename(spec.primary_key), x, y.rename(spec.label)], axis=1)
        inputs.append(tracking.dataset_input(
            name, prep.source, len(frame), columns, tracking.rows_digest(frame), context,
            tags={"split": split_name, "rows": rows, "seed": str(options.seed)},
        ))
    tracking.log_inputs(run_id, inputs, client=prep.tracker.client)


def _run_params(spec: DatasetSpec, prep: _Prepared, options: TrainOptions) -> dict[str, Any]:
    """The params every tuning, worker and refit run logs (the storage URL redacted)."""
    from serverless_ml.tracking import redact_uri

    return {
        "dataset": spec.name,
        "feature_group_version": spec.version,
        registry.DATA_VERSION_TAG: prep.data_version,
        "seed": options.seed,
        "trials": options.trials,
        "timeout_s": options.timeout,
        "cv_folds": options.folds,
        "holdout_fraction": options.holdout,
        "split": prep.plan.describe(),
        "cv_folds_auto": prep.plan.folds_auto,
        "holdout_auto": prep.plan.holdout_auto,
        "include_synthetic": options.include_synthetic,
        "workers": options.workers,
        "promote_mode": options.promote,
        registry.STUDY_NAME_TAG: prep.study_name,
        "optuna_storage": redact_uri(prep.storage),
        "search_space": search.search_space_description(prep.space),
        "rows_total": prep.rows_total,
        "rows_train": len(prep.y_train),
        "rows_holdout": len(prep.y_hold),
        "features": spec.feature_names,
        "numeric_products": spec.numeric_products,
        # Binary only: the class test_precision, test_recall, test_f1 and test_roc_auc are about.
        **({registry.POSITIVE_CLASS_PARAM: spec.positive_class} if spec.positive_class is not None else {}),
    }


def _log_baseline(run_id: str, prep: _Prepared, options: TrainOptions) -> float:
    """Log the majority-class baseline (CV and holdout); return the holdout one."""
    from serverless_ml import tracking

    baseline_cv = float(np.mean([
        evaluation.baseline_accuracy(prep.y_train.iloc[tr], prep.y_train.iloc[va])
        for tr, va in search.cv_folds(prep.y_train, options.folds, options.seed)
    ]))
    baseline_test = evaluation.baseline_accuracy(prep.y_train, prep.y_hold)
    tracking.log_metrics_batch(run_id, {"baseline_val_accuracy_mean": baseline_cv, registry.BASELINE_HOLDOUT_ACCURACY_METRIC: baseline_test},
                               client=prep.tracker.client)
    return baseline_test


def tune_as_worker(spec: DatasetSpec, store: FeatureStore, settings: Settings, options: TrainOptions,
                   tracker: Tracking | None = None) -> WorkerReport:
    """Add ``options.trials`` trials to a shared study; register nothing.

    Logs one parent run in ``<dataset>-training`` (tags ``sml.role=worker``,
    ``study_name``; params as :func:`train`'s plus the worker's sampler seed) with one
    nested run per trial this worker ran. Each trial records the worker's run id in its
    user attribute ``worker_run_id``.
    """
    import mlflow

    from serverless_ml import tracking

    if not options.workers_only:
        raise SmlError("tune_as_worker needs options.workers_only")
    prep = _prepare(spec, store, settings, options, tracker)
    options = prep.options  # the folds, holdout and time budget chosen
    sampler_seed = worker_sampler_seed(options.seed, options.worker_id)
    started = dt.datetime.now(dt.timezone.utc)
    run_name = f"{spec.name}-worker-{started:%Y%m%d-%H%M%S}-{sampler_seed}"
    with tracking.job_run(prep.experiment_id, run_name, prep.tracker.client) as run:
        run_id = run.info.run_id
        mlflow.set_tags({
            "dataset": spec.name,
            registry.DATA_VERSION_TAG: str(prep.data_version),
            registry.STUDY_NAME_TAG: prep.study_name,
            registry.ROLE_TAG: "worker",
            tracking.NOTE_TAG: (
                f"Worker adding {options.trials} trials to the shared Optuna study {prep.study_name} "
                f"(sampler seed {sampler_seed}); started {started:%Y-%m-%d %H:%M} UTC. Registers nothing: "
                "a final `sml train --trials 0` refits the study's best trial."
            ),
        })
        tracking.log_params_batch(run_id, {
            **_run_params(spec, prep, options),
            "workers_only": True,
            "worker_id": options.worker_id,
            "sampler_seed": sampler_seed,
        }, client=prep.tracker.client)
        _log_training_inputs(run_id, spec, prep, options)
        _log_baseline(run_id, prep, options)
        logger = start_trial_logger(prep, run_id, spec)
        study, _ = tune(
            spec, prep.x_train, prep.y_train, options, prep.storage, prep.study_name, logger,
            sampler_seed=sampler_seed, trial_attrs={WORKER_RUN_ATTR: run_id},
        )
        trials = study.get_trials(deepcopy=False)
        mine = [t for t in trials if t.user_attrs.get(WORKER_RUN_ATTR) == run_id]
        finished = search.finished_trials(study)
        best = max(finished, key=search.trial_value) if finished else None
        in_study = search.started_trials(study)  # a queued trial (WAITING) is not one yet
        metrics = {"trials_this_worker": float(len(mine)), "trials_in_study": float(in_study)}
        if best is not None:
            metrics["best_val_accuracy_mean"] = search.trial_value(best)
            mlflow.set_tags({registry.BEST_TRIAL_NUMBER_TAG: str(best.number), registry.BEST_TRIAL_VALUE_TAG: f"{best.value:.6f}"})
        tracking.log_metrics_batch(run_id, metrics, client=prep.tracker.client)
    return WorkerReport(
        run_id=run_id, experiment_id=prep.experiment_id, dataset=spec.dataset_arg, study_name=prep.study_name,
        sampler_seed=sampler_seed, trials_this_worker=len(mine), trials_total=in_study,
        best_trial=None if best is None else best.number, best_value=None if best is None else search.trial_value(best),
        split=prep.plan.describe(),
    )


def training_fingerprint(spec: DatasetSpec, prep: _Prepared, options: TrainOptions) -> str:
    """:func:`promotion.training_fingerprint` of what :func:`train` would train from: the
    training and holdout rows (digests of keys, features and labels, so a new data version
    with the same rows matches), the feature group version and features, the seed, folds,
    holdout, trials, time budget, workers, study name given, search space and this
    package's version. A refit (``trials == 0``) adds the study's finished trials, which
    workers may have added to since."""
    from serverless_ml import __version__, tracking

    holdout = pd.concat([prep.keys_hold.rename(spec.primary_key), prep.x_hold, prep.y_hold.rename(spec.label)], axis=1)
    parts: dict[str, Any] = {
        **prep.rows_fingerprint,
        "holdout_rows_sha256": tracking.rows_digest(holdout),
        "feature_group_version": spec.version,
        "features": spec.feature_names,
        "numeric_products": spec.numeric_products,
        "classes": list(spec.classes),
        "trials": options.trials,
        "timeout": options.timeout,
        "holdout": options.holdout,
        "include_synthetic": options.include_synthetic,
        "workers": options.workers,
        registry.STUDY_NAME_TAG: options.study_name,  # the given name, under a key every stored fingerprint hashed
        "sml_version": __version__,
    }
    if options.trials == 0:
        finished = search.finished_trials(prep.study)
        parts["study"] = prep.study_name
        parts["study_finished_trials"] = sorted(t.number for t in finished)
    return promotion.training_fingerprint(parts)


def same_training_version(client: MlflowClient, name: str, fingerprint: str) -> tuple[str, Any] | None:
    """The alias (``champion``, else ``challenger``) and version of model ``name`` whose
    training had ``fingerprint``, or ``None``: training again would register its twin."""
    from mlflow.exceptions import MlflowException

    for alias in (registry.CHAMPION, registry.CHALLENGER):
        try:
            version = client.get_model_version_by_alias(name, alias)
        except MlflowException:  # no such model or alias
            continue
        if version.tags.get(registry.TRAINING_FINGERPRINT_TAG) == fingerprint:
            return alias, version
    return None


def kept_report(alias: str, version: Any, prep: _Prepared) -> TrainReport:
    """The :class:`TrainReport` of a version given back instead of training its twin,
    read from its training run."""
    from mlflow.exceptions import MlflowException

    client = prep.tracker.client
    run_id = registry.training_run_id(version) or ""
    try:
        run = client.get_run(run_id)
        metrics, tags, experiment_id = run.data.metrics, run.data.tags, run.info.experiment_id
    except MlflowException:  # its run was deleted: the version's own tags remain
        metrics, tags, experiment_id = {}, {}, prep.experiment_id
    try:
        best_params = dict(client.get_logged_model(version.model_id).params) if version.model_id else {}
    except MlflowException:
        best_params = {}
    holdout = {k: v for k, v in metrics.items() if k.startswith((registry.HOLDOUT_METRIC_PREFIX, "train_", "val_"))}
    recorded = registry.holdout_accuracy(version)
    if registry.HOLDOUT_ACCURACY_METRIC not in holdout and recorded is not None:
        holdout[registry.HOLDOUT_ACCURACY_METRIC] = recorded
    return TrainReport(
        run_id=run_id, experiment_id=experiment_id, study_name=tags.get(registry.STUDY_NAME_TAG, prep.study_name),
        trials_total=search.started_trials(prep.study), trials_this_run=0,
        best_trial=int(tags.get(registry.BEST_TRIAL_NUMBER_TAG, -1)), best_params=best_params,
        cv_mean=float(metrics.get(registry.CV_ACCURACY_METRIC, float("nan"))),
        cv_std=float(metrics.get(registry.CV_ACCURACY_STD_METRIC, float("nan"))),
        holdout_metrics=holdout, baseline_accuracy=float(metrics.get(registry.BASELINE_HOLDOUT_ACCURACY_METRIC, float("nan"))),
        model_version=str(version.version), champion_accuracy=None,
        decision=promotion.PromotionDecision(False, promotion.same_training_message(alias, version.version)),
        data_version=prep.data_version,
        rows={"total": prep.rows_total, "train": len(prep.y_train), "holdout": len(prep.y_hold)},
        kept=True,
    )


def train(spec: DatasetSpec, store: FeatureStore, settings: Settings, options: TrainOptions,
          tracker: Tracking | None = None) -> TrainReport:
    """Tune, log, register and promote. See the module docstring for what it writes.

    With ``options.trials == 0`` nothing is tuned: the best trial of the existing study
    (e.g. one that ``--workers-only`` processes filled) is refitted, registered and
    promoted, and the parent run is tagged ``sml.role=refit`` with the workers' run ids.

    When the champion (or else the challenger) was trained from the same rows, seed and
    search (:func:`training_fingerprint`), nothing is tuned, logged or registered: it is
    given back (``report.kept``) unless ``options.promote == "always"``.

    The steps: :func:`_prepare` (every bad input fails there, before any run starts),
    :func:`_start_run`, :func:`_fit`, :func:`_evaluate`, :func:`_log_run`,
    :func:`_register_and_promote`, :func:`_report`.
    """
    import optuna

    from serverless_ml import tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if options.workers_only:
        raise SmlError("train() registers a model; use tune_as_worker() for --workers-only")
    prep = _prepare(spec, store, settings, options, tracker)
    options = prep.options  # the folds, holdout and time budget chosen
    name = registry.model_name(spec.name)
    fingerprint = training_fingerprint(spec, prep, options)
    # Before any run starts: a rerun on unchanged data leaves no run and no version.
    same = same_training_version(prep.tracker.client, name, fingerprint) if options.promote != "always" else None
    if same is not None:
        return kept_report(*same, prep)
    started = dt.datetime.now(dt.timezone.utc)
    run_name = f"{spec.name}-{'refit' if options.trials == 0 else 'tune'}-{started:%Y%m%d-%H%M%S}"
    with tracking.job_run(prep.experiment_id, run_name, prep.tracker.client) as parent:
        run_id = parent.info.run_id
        baseline = _start_run(run_id, spec, prep, fingerprint, started)
        fitted = _fit(run_id, spec, prep)
        evaluated = _evaluate(spec, prep, fitted)
        _log_run(run_id, spec, prep, fitted, evaluated)
        registered = _register_and_promote(run_id, spec, prep, fitted, evaluated, baseline, fingerprint)
    report = _report(run_id, prep, fitted, evaluated, baseline, registered)
    report.notes = model_notes(spec, evaluated.metrics, baseline)
    undefined = holdout_undefined(spec, evaluated.confusion)
    if undefined:
        report.notes.append(f"{undefined} (left out of the run's metrics, not logged as 0)")
    if options.notify:
        from serverless_ml.pipelines.notifications import notify_training

        notify_training(spec.name, str(report.model_version), report.decision.promote, report.outcome(),
                        report.decision.reason, options.notify, prep.tracker, run_id=run_id,
                        experiment_id=report.experiment_id)
    return report


@dataclass(frozen=True)
class _Fitted:
    """The study after tuning and its best trial's pipeline refitted on the training rows."""

    study: Any
    added: int
    """Trials this job added to the study (0: a refit of the workers' study)."""
    best: Any
    """The study's best trial (an ``optuna.trial.FrozenTrial``)."""
    scores: list[float]
    """The best trial's CV accuracy, fold by fold."""
    model: Any
    """The refitted scikit-learn pipeline."""


@dataclass(frozen=True)
class _Evaluation:
    """The refitted model on the holdout rows."""

    metrics: dict[str, float]
    """The run's metrics: holdout scores (:data:`registry.HOLDOUT_METRIC_PREFIX`), training
    accuracy, the best trial's CV mean and std, trials completed."""
    confusion: dict[str, Any]
    """The holdout confusion matrix (:func:`evaluation.confusion_table`)."""
    importances: dict[str, float]
    """Importance of each raw feature (:func:`raw_feature_importances`)."""
    calibration: estimate.Calibration | None = None
    """How well the model's probabilities are calibrated on the holdout (ECE, Brier score,
    reliability bins; ``None`` without holdout rows)."""

    @property
    def holdout_accuracy(self) -> float:
        return self.metrics[registry.HOLDOUT_ACCURACY_METRIC]


@dataclass(frozen=True)
class _Registered:
    """The version a training job registered and what was decided about it."""

    version: str
    decision: promotion.PromotionDecision
    champion_accuracy: float | None
    """The champion's accuracy on the holdout rows it was not trained on (``None``: not compared)."""


def _start_run(run_id: str, spec: DatasetSpec, prep: _Prepared, fingerprint: str, started: dt.datetime) -> float:
    """Log what is known before tuning on the open training run: its tags (role, note,
    training fingerprint), params, dataset inputs, search space and the majority-class
    baseline. Returns the baseline's holdout accuracy."""
    import mlflow

    from serverless_ml import tracking

    options, refit_only = prep.options, prep.options.trials == 0
    if refit_only:
        note = (f"Refit of the best trial of the Optuna study {prep.study_name} for the {spec.name} random forest, "
                f"on {len(prep.y_train)} rows, {len(prep.y_hold)} holdout rows; started {started:%Y-%m-%d %H:%M} UTC.")
    else:
        note = (f"Optuna search ({options.trials} trials, seed {options.seed}) for the {spec.name} random forest, "
                f"{options.folds}-fold CV on {len(prep.y_train)} rows, {len(prep.y_hold)} holdout rows; "
                f"started {started:%Y-%m-%d %H:%M} UTC.")
    mlflow.set_tags({
        "dataset": spec.name,
        registry.DATA_VERSION_TAG: str(prep.data_version),
        registry.STUDY_NAME_TAG: prep.study_name,
        registry.ROLE_TAG: "refit" if refit_only else "tune",
        tracking.NOTE_TAG: note,
        registry.TRAINING_FINGERPRINT_TAG: fingerprint,
    })
    tracking.log_params_batch(run_id, _run_params(spec, prep, options), client=prep.tracker.client)
    _log_training_inputs(run_id, spec, prep, options)
    mlflow.log_dict(search.search_space_description(prep.space), registry.SEARCH_SPACE_ARTIFACT)
    return _log_baseline(run_id, prep, options)


def _fit(run_id: str, spec: DatasetSpec, prep: _Prepared) -> _Fitted:
    """Tune (each trial a nested run of ``run_id``) or, with ``trials`` 0, take the study
    as the workers left it (tagging the run with their runs); then refit the best trial's
    pipeline on the training rows."""
    import mlflow

    from serverless_ml import tracking

    options = prep.options
    if options.trials == 0:
        study, added = prep.study, 0
        workers = sorted({str(t.user_attrs[WORKER_RUN_ATTR]) for t in study.get_trials(deepcopy=False)
                          if WORKER_RUN_ATTR in t.user_attrs})
        if workers:
            mlflow.set_tag(registry.WORKER_RUN_IDS_TAG, ",".join(workers)[: tracking.MAX_PARAM_LENGTH])
    else:
        logger = start_trial_logger(prep, run_id, spec)
        study, added = tune(spec, prep.x_train, prep.y_train, options, prep.storage, prep.study_name, logger)
    if not search.finished_trials(study):
        raise SmlError(f"study {prep.study_name} has no completed trial (all pruned or failed); run more --trials")
    best = study.best_trial
    # The chosen forest, its probabilities calibrated (one Pipeline: what CBPE estimates
    # performance from while labels are missing, :mod:`serverless_ml.inference.estimate`).
    model = calibrated_pipeline(spec, dict(best.params), options.seed, prep.y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        fit_pipeline(model, prep.x_train, prep.y_train)
    return _Fitted(study=study, added=added, best=best, scores=best.user_attrs.get("val_scores", [best.value]),
                   model=model)


def _evaluate(spec: DatasetSpec, prep: _Prepared, fitted: _Fitted) -> _Evaluation:
    """Score the refitted model on the holdout rows (nothing is logged)."""
    model, classes = fitted.model, list(spec.classes)
    predicted = model.predict(prep.x_hold)
    metrics = evaluation.classification_metrics(
        prep.y_hold, predicted, model.predict_proba(prep.x_hold), classes, prefix=registry.HOLDOUT_METRIC_PREFIX,
        positive_class=spec.positive_class, proba_classes=model.classes_,
        class_keys=evaluation.class_metric_keys(classes, spec.class_names),
    )
    metrics["train_accuracy"] = float(model.score(prep.x_train, prep.y_train))
    metrics[registry.CV_ACCURACY_METRIC] = float(np.mean(fitted.scores))
    metrics[registry.CV_ACCURACY_STD_METRIC] = float(np.std(fitted.scores))
    metrics[registry.TRIALS_COMPLETED_METRIC] = float(len(search.finished_trials(fitted.study)))
    calibration = None
    if len(prep.y_hold):
        order = [list(model.classes_).index(c) for c in classes]
        calibration = estimate.calibration_summary(model.predict_proba(prep.x_hold)[:, order],
                                                   evaluation.class_codes(prep.y_hold, pd.Index(classes)))
        metrics[registry.HOLDOUT_ECE_METRIC] = calibration.ece
        metrics[registry.HOLDOUT_BRIER_METRIC] = calibration.brier
    return _Evaluation(metrics=metrics, confusion=evaluation.confusion_table(prep.y_hold, predicted, classes),
                       importances=raw_feature_importances(model, spec), calibration=calibration)


def _log_run(run_id: str, spec: DatasetSpec, prep: _Prepared, fitted: _Fitted, evaluated: _Evaluation) -> None:
    """Log the evaluation on the training run: its metrics, the confusion matrix and
    feature importances (JSON and PNG), the training keys, and the best trial (tags, and
    its hyper-parameters as params)."""
    import mlflow

    from serverless_ml import tracking

    tracking.log_metrics_batch(run_id, evaluated.metrics, client=prep.tracker.client)
    undefined = holdout_undefined(spec, evaluated.confusion)
    if undefined:  # figures with no denominator are left out of the metrics: said here
        prep.tracker.client.set_tag(run_id, registry.NOT_COMPUTED_TAG, undefined)
    mlflow.log_dict(evaluated.confusion, registry.evaluation_artifact("confusion_matrix"))
    names = list(spec.class_names) if spec.class_names else None
    tracking.log_figure(evaluation.confusion_figure(evaluated.confusion, f"{spec.name}: holdout confusion matrix", names),
                        registry.evaluation_artifact("confusion_matrix", "png"))
    mlflow.log_dict(evaluated.importances, registry.evaluation_artifact("feature_importances"))
    tracking.log_figure(evaluation.importance_figure(evaluated.importances, f"{spec.name}: feature importances"),
                        registry.evaluation_artifact("feature_importances", "png"))
    if evaluated.calibration is not None:
        calibration = evaluated.calibration
        mlflow.log_dict({"ece": calibration.ece, "brier": calibration.brier, "bins": calibration.bins},
                        registry.evaluation_artifact(registry.RELIABILITY_ARTIFACT_STEM))
        tracking.log_figure(estimate.reliability_figure(calibration, f"{spec.name}: holdout reliability"),
                            registry.evaluation_artifact(registry.RELIABILITY_ARTIFACT_STEM, "png"))
    registry.log_training_keys(prep.keys_train, prep.keys_hold, spec.primary_key)
    best = fitted.best
    mlflow.set_tags({registry.BEST_TRIAL_NUMBER_TAG: str(best.number), registry.BEST_TRIAL_VALUE_TAG: f"{best.value:.6f}"})
    # The chosen hyper-parameters as params too (named as in the trials' runs), so
    # retrains compare side by side in the runs table.
    params = best_params(best.params, _run_params(spec, prep, prep.options))
    params[registry.CALIBRATION_METHOD_PARAM] = calibration_method(fitted.model)
    tracking.log_params_batch(run_id, params, client=prep.tracker.client)


def _decide(name: str, spec: DatasetSpec, prep: _Prepared, model: Any,
            holdout_accuracy: float) -> tuple[ChampionComparison, promotion.PromotionDecision]:
    """Compare ``model`` with the champion on the holdout rows the champion was not
    trained on; promote or not by ``--promote``."""
    promote = prep.options.promote
    comparison = compare_with_champion(name, model, prep.x_hold, prep.y_hold, prep.keys_hold, spec.primary_key,
                                       prep.tracker.client)
    champion_accuracy = comparison.champion_accuracy
    if comparison.rows == 0 and promote == "if-better":
        return comparison, promotion.PromotionDecision(False, comparison.note or "no fair comparison")
    challenger_accuracy = (comparison.challenger_accuracy if comparison.challenger_accuracy is not None
                           else holdout_accuracy)
    decision = promotion.decide_promotion(challenger_accuracy, champion_accuracy, promote,
                                          rows=comparison.rows if champion_accuracy is not None else None)
    if comparison.note and champion_accuracy is None and promote == "if-better":
        decision = promotion.PromotionDecision(decision.promote, comparison.note)
    return comparison, decision


def _register_and_promote(run_id: str, spec: DatasetSpec, prep: _Prepared, fitted: _Fitted, evaluated: _Evaluation,
                          baseline: float, fingerprint: str) -> _Registered:
    """Decide (:func:`_decide`), register the refitted pipeline as a described version
    with its tags, alias it ``challenger`` (and ``champion`` when promoted, stamping
    ``promoted_at``), and log the decision on the training run."""
    import mlflow

    from serverless_ml import tracking

    name = registry.model_name(spec.name)
    comparison, decision = _decide(name, spec, prep, fitted.model, evaluated.holdout_accuracy)
    version = log_and_register(fitted.model, prep.x_train, name, logged_model_name(spec.name), params=dict(fitted.best.params),
                               tags={"dataset": spec.name, registry.DATA_VERSION_TAG: str(prep.data_version), registry.TRAINING_RUN_ID_TAG: run_id},
                               spec=spec)
    client = prep.tracker.client
    describe_registered_model(client, name, spec)
    client.update_model_version(name, version, description=version_description(
        spec, prep, prep.options, fitted.best.number, evaluated.metrics, baseline, run_id))
    client.set_registered_model_alias(name, registry.CHALLENGER, version)
    client.set_model_version_tag(name, version, registry.HOLDOUT_ACCURACY_TAG, f"{evaluated.holdout_accuracy:.6f}")
    client.set_model_version_tag(name, version, registry.TRAINING_RUN_ID_TAG, run_id)
    client.set_model_version_tag(name, version, registry.DATA_VERSION_TAG, str(prep.data_version))
    client.set_model_version_tag(name, version, registry.TRAINING_FINGERPRINT_TAG, fingerprint)
    if decision.promote:
        client.set_registered_model_alias(name, registry.CHAMPION, version)
        client.set_model_version_tag(name, version, registry.PROMOTED_AT_TAG, dt.datetime.now(dt.timezone.utc).isoformat())
    champion_accuracy = comparison.champion_accuracy
    decision_metrics = {"promoted": float(decision.promote)}
    if champion_accuracy is not None:
        decision_metrics["champion_test_accuracy"] = champion_accuracy
        decision_metrics["champion_comparison_rows"] = float(comparison.rows)
        if comparison.challenger_accuracy is not None:
            decision_metrics["challenger_comparison_accuracy"] = comparison.challenger_accuracy
    tracking.log_metrics_batch(run_id, decision_metrics, client=prep.tracker.client)
    mlflow.set_tags({
        registry.PROMOTION_DECISION_TAG: "promoted" if decision.promote else "not promoted",
        registry.PROMOTION_REASON_TAG: decision.reason,
        registry.MODEL_VERSION_TAG: str(version),
    })
    return _Registered(version=version, decision=decision, champion_accuracy=champion_accuracy)


def _report(run_id: str, prep: _Prepared, fitted: _Fitted, evaluated: _Evaluation, baseline: float,
            registered: _Registered) -> TrainReport:
    """The :class:`TrainReport` of a job that trained and registered a version."""
    return TrainReport(
        run_id=run_id, experiment_id=prep.experiment_id, study_name=prep.study_name,
        trials_total=search.started_trials(fitted.study), trials_this_run=fitted.added,
        best_trial=fitted.best.number, best_params=dict(fitted.best.params),
        cv_mean=float(np.mean(fitted.scores)), cv_std=float(np.std(fitted.scores)),
        holdout_metrics=evaluated.metrics, baseline_accuracy=baseline, model_version=str(registered.version),
        champion_accuracy=registered.champion_accuracy, decision=registered.decision, data_version=prep.data_version,
        rows={"total": prep.rows_total, "train": len(prep.y_train), "holdout": len(prep.y_hold)},
        split=prep.plan.describe(),
    )


def model_requirements() -> list[str]:
    """What the logged pipeline needs to load and predict, pinned to this environment."""
    from importlib.metadata import version

    return [f"{dist}=={version(dist)}" for dist in ("scikit-learn", "skops", "pandas", "numpy", "scipy")]


LOGGED_MODEL_SUFFIX = "-random-forest"


def logged_model_name(dataset: str) -> str:
    """The name of a dataset's logged models (``titanic-random-forest``) in the runs and
    models views. Loading goes through the registry (``models:/<dataset>/<version>``),
    never through this name, so versions logged under an older name still load."""
    return f"{dataset}{LOGGED_MODEL_SUFFIX}"


def best_params(params: dict[str, Any], run_params: dict[str, Any]) -> dict[str, Any]:
    """The best trial's hyper-parameters as run params; a name the run already uses for
    something else (none today) gets a ``best_`` prefix rather than a conflicting value."""
    return {(f"best_{key}" if key in run_params else key): value for key, value in params.items()}


def describe_registered_model(client: Any, name: str, spec: DatasetSpec) -> None:
    """Give the registered model a description when it has none (one a user wrote in the
    MLflow UI stays as it is)."""
    current = client.get_registered_model(name).description
    if current:
        return
    target = f"{spec.label} ({', '.join(spec.class_name(c) for c in spec.classes)})"
    client.update_registered_model(name, description=(
        f"scikit-learn pipeline predicting {target} of the {spec.name} dataset"
        f"{f' ({spec.description})' if spec.description else ''} from its raw features "
        f"({', '.join(spec.feature_names)}): median imputation with missing-value indicators, one-hot "
        f"encoding, then a random forest (or extra trees) tuned by Optuna. Trained by `sml train --dataset "
        f"{spec.spec_path if spec.spec_path is not None else spec.name}`; "
        f"alias `{registry.CHAMPION}` is the version batch inference and the site use, `{registry.CHALLENGER}` "
        "the latest trained."
    ))


def version_description(
    spec: DatasetSpec, prep: _Prepared, options: TrainOptions, trial: int,
    metrics: dict[str, float], baseline: float, run_id: str,
) -> str:
    """What a registered version is: the data it was trained on, its holdout accuracy."""
    source = prep.source
    rows = "real and synthetic rows" if options.include_synthetic else "real rows only"
    return (
        f"Forest of Optuna trial #{trial} (study {prep.study_name}), refitted on {len(prep.y_train)} rows "
        f"of feature view {source.get('feature_view')} v{source.get('feature_view_version')} "
        f"(feature group {spec.name} v{spec.version}, data version {prep.data_version}, {rows}). "
        f"Holdout accuracy {metrics[registry.HOLDOUT_ACCURACY_METRIC]:.4f} on {len(prep.y_hold)} rows "
        f"(majority-class baseline {baseline:.4f}); CV accuracy {metrics[registry.CV_ACCURACY_METRIC]:.4f}. "
        f"Training run {run_id}."
    )


def log_and_register(
    model: Any, x_train: pd.DataFrame, name: str, logged_name: str | None = None, *,
    params: dict[str, Any] | None = None, tags: dict[str, str] | None = None, spec: DatasetSpec | None = None,
) -> str:
    """Log the pipeline with a signature and input example as ``logged_name`` (default:
    :func:`logged_model_name` of ``name``); register it under ``name``.

    With ``spec``, one MLmodel holds two flavors (:mod:`serverless_ml.serving.flavor`):
    ``sklearn``, the plain Pipeline (what the jobs and the site load), and
    ``python_function``, which checks rows against the spec and answers class names and
    per-class probabilities (``mlflow.pyfunc.load_model``, ``mlflow models serve``).
    Without it, the sklearn flavor's own pyfunc (class values)."""
    import mlflow
    from mlflow.models import Model, infer_signature

    # Rows without a missing value where there are such: MLflow writes a missing number in
    # the example files as a bare NaN, which is not JSON (posting the model's own example
    # to a server was refused). Rows with the fewest missing values otherwise.
    missing = x_train.isna().sum(axis=1).to_numpy()
    example = x_train.iloc[np.argsort(missing, kind="stable")[:5]]
    with warnings.catch_warnings():
        # A nullable integer feature is a float column here (as_model_input), so MLflow's
        # hint about integer columns with missing values does not apply.
        warnings.simplefilter("ignore", category=UserWarning)
        signature = infer_signature(example, model.predict(example))
    common: dict[str, Any] = dict(
        signature=signature, input_example=example, params=params, tags=tags,
        registered_model_name=name, skops_trusted_types=SKOPS_TRUSTED_TYPES,
        # Stated, not inferred: inference loads the model in a subprocess (~10 s).
        pip_requirements=model_requirements(),
    )
    if spec is None:
        info = mlflow.sklearn.log_model(model, name=logged_name or logged_model_name(name), **common)
        return str(info.registered_model_version)
    from serverless_ml.serving import flavor
    from serverless_ml.serving.schema import ServingSchema

    info = Model.log(
        artifact_path=None, name=logged_name or logged_model_name(name), flavor=flavor, flavor_name="sklearn",
        sk_model=model, serving_schema=ServingSchema.from_spec(spec), serialization_format="skops", **common,
    )
    return str(info.registered_model_version)
