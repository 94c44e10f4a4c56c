"""Batch inference: score exactly the new rows with the champion, record every prediction
next to its actual label, and log the batch as a monitoring run.

Reads: ``models:/<dataset>@champion``, the feature group ``<dataset>`` and the champion's
training run (its training keys and data version, for drift). Writes: the feature group
``<dataset>_predictions`` (key: the row's key and the model version). Logs: one run in
experiment ``<dataset>-monitoring`` per batch: accuracy (batch, rolling window, since
promotion), per-class metrics, confusion matrices (JSON and PNG), drift per feature,
predicted class shares, the latest scored row, accuracy per slice (``slices.json``, the
worst slice as tags and a metric; slice edges from the champion's training rows, for drift
too), and alerts as tags; the batch's rows as its dataset input and the champion's logged
model as its model input.

Served rows: the rows ``sml serve`` answered with the champion before the batch's bound
and recorded with no ``run_id`` (:func:`unbatched_served`) are the batch's rows too, taken
in with their served predictions rather than scored again (:func:`_take_in_served`); the
run's ``served_rows`` says how many, and their predictions rows are written back naming
the run, so a deployment whose only traffic is served gets its monitoring runs.

Shadow challenger: when ``@challenger`` is another version, it scores the batch's rows it
was not trained on too; its predictions go to the same group with its version and the
``run_id`` :func:`~serverless_ml.inference.scoring.shadow_run_id` of the run (never
served: every reader of the champion's predictions leaves them out), and the run logs its
figures and the paired comparison with the champion over the rolling window
(:mod:`serverless_ml.inference.paired`). ``--promote live`` then moves ``@champion`` to it
when the one-sided McNemar test says it is better (:func:`apply_live_decision`, after the
predictions landed; the version's ``promoted_by_run`` tag names the run, whose decision
tags are logged last).

Order: the run is logged completely before the predictions are upserted, and the run is
marked FINISHED only after the upsert. A crash in between leaves a RUNNING run that the
next job closes (FINISHED when its predictions landed, FAILED otherwise); a retry after a
failure before the upsert scores the same rows again without duplicates.

Memory does not grow with the rows (:func:`score_batch`): the feature group and the
predictions so far are read in batches (``FeatureGroup.read_batches``), the statistics are
running totals (:class:`~serverless_ml.inference.batch.BatchTotals`), a drift window is
judged on a uniform seeded sample of at most ``drift.MAX_DRIFT_ROWS`` rows (the run's
notes say so), and a batch of more than one chunk is staged in the predictions group as
it is scored (``FeatureGroup.stage_new``) and lands in one commit after the run is
logged. One thread reads and prepares the next chunk and another writes the last one
while this one predicts (``python -m bench inference`` measures it on ten million rows).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serverless_ml import defaults, registry, tracking
from serverless_ml.datasets.groups import existing_feature_group
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.dates import check_date, check_not_future
from serverless_ml.errors import NotFoundError, SmlError
from serverless_ml.faults import crash_point
from serverless_ml.feature_store.base import (
    BACKFILL_ORIGIN,
    ORIGIN_COLUMN,
    FeatureGroup,
    FeatureStore,
    arrow_schema,
    conform,
    is_missing,
    to_utc,
)
from serverless_ml.inference import drift as drift_stats
from serverless_ml.inference import monitoring, paired
from serverless_ml.inference import slices as slice_stats
from serverless_ml.inference.batch import (
    BatchStatistics,
    BatchTotals,
    DriftStatistics,
    DriftWindowRows,
    as_of_day,
    count_days,
    streamed_drift,
    streamed_statistics,
    utc_values,
)
from serverless_ml.inference.paired import PairedRows
from serverless_ml.inference.scoring import (
    CHUNK_ROWS,
    MODEL_VERSION_COLUMN,
    ChunkScorer,
    KeySet,
    RowsDigest,
    new_rows_mask,
    normalise_predictions,
    predictions_group,
    predictions_schema,
    predictions_table,
    served_mask,
    served_mask_arrow,
    shadow_run_id,
)
from serverless_ml.locks import job_lock
from serverless_ml.settings import Settings
from serverless_ml.training import evaluation

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from serverless_ml.notify import Receiver

ALERT_EXIT_CODE = 3


class AlertRaised(SmlError):
    """``--fail-on-alert``: the batch was scored and logged, and an alert fired."""

    exit_code = ALERT_EXIT_CODE


@dataclass(frozen=True)
class InferOptions:
    """Options of one batch-inference job (defaults in :mod:`serverless_ml.defaults`; the
    alert thresholds are checked by :class:`monitoring.AlertRule`)."""

    as_of: dt.date | None = None
    rolling_days: int = defaults.INFER_ROLLING_DAYS
    rule: monitoring.AlertRule = field(default_factory=monitoring.AlertRule)
    fail_on_alert: bool = False
    figures: bool = defaults.LOG_FIGURES
    promote: str = defaults.INFER_PROMOTE
    """``live``: promote ``@challenger`` when the paired test on live rows says it is better."""
    notify: tuple[Receiver, ...] = ()
    """Where each alert of the batch is sent (``--notify``; :mod:`.notifications`)."""

    def __post_init__(self) -> None:
        if self.as_of is not None:
            check_date(self.as_of, "--as-of")
            check_not_future(self.as_of, "--as-of", "a batch's date")
        if self.rolling_days < 1:
            raise SmlError(f"--rolling-days must be >= 1, got {self.rolling_days}")
        if self.promote not in defaults.INFER_PROMOTE_MODES:
            raise SmlError(f"--promote must be one of {', '.join(defaults.INFER_PROMOTE_MODES)}, got {self.promote!r}")


@dataclass
class InferReport:
    """What a batch-inference job did."""

    dataset: str
    model_version: int
    as_of: str
    rows_scored: int
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    challenger_version: int | None = None
    """The ``@challenger`` version that shadow-scored the batch (``None``: none did)."""
    promotion: str | None = None
    """``--promote live``: the decision and its reason."""
    rows_served: int = 0
    """How many of ``rows_scored`` are served rows the batch took in (predicted when served)."""

    def summary(self) -> str:
        if self.rows_scored == 0:
            # Notes still matter here: a run a crashed job left RUNNING was closed.
            return "\n".join([
                f"{self.dataset}: nothing new to score up to {self.as_of} (champion version {self.model_version}); no run logged",
                *(f"  note: {note}" for note in self.notes),
            ])
        m = self.metrics
        what = f"scored {self.rows_scored} rows"
        if self.rows_served:
            what = (f"scored {self.rows_scored - self.rows_served} rows and took in {self.rows_served} served "
                    f"row{'s' if self.rows_served != 1 else ''} (predicted when served), {self.rows_scored} in the batch,")
        lines = [
            f"{self.dataset}: {what} up to {self.as_of} with champion version {self.model_version}",
            f"  batch accuracy {_fmt(m.get(registry.BATCH_ACCURACY_METRIC))} "
            f"({int(m.get(registry.ROWS_LABELLED_METRIC, 0))} labelled), "
            f"estimated {_fmt(m.get(registry.ESTIMATED_ACCURACY_METRIC))} "
            f"({_fmt(m.get(registry.ESTIMATED_ACCURACY_CI_LOW_METRIC))}-{_fmt(m.get(registry.ESTIMATED_ACCURACY_CI_HIGH_METRIC))}"
            f"{_recalibrated(m)}), "
            f"rolling {_fmt(m.get(registry.ROLLING_ACCURACY_METRIC))} over {int(m.get(registry.ROLLING_ROWS_METRIC, 0))}, "
            f"since promotion {_fmt(m.get(registry.CUMULATIVE_ACCURACY_METRIC))} over {int(m.get(registry.CUMULATIVE_ROWS_METRIC, 0))}",
            f"  drift share {_fmt(m.get(registry.DRIFT_SHARE_METRIC))}; monitoring run {self.run_id}",
        ]
        if self.challenger_version is not None:
            lines.append(_challenger_line(self.challenger_version, m))
        if self.promotion:
            lines.append(f"  live promotion: {self.promotion}")
        lines += [f"  note: {note}" for note in self.notes]
        # The alerts are printed once, by raise_alerts (with the dataset and date).
        return "\n".join(lines)


def _recalibrated(m: dict[str, float]) -> str:
    """``, recalibrated on N labels`` when the estimate was (:class:`estimate.Recalibration`)."""
    rows = int(m.get(registry.ESTIMATE_RECALIBRATION_ROWS_METRIC, 0) or 0)
    return f", recalibrated on {rows:,} labels" if rows else ""


def _challenger_line(version: int, m: dict[str, float]) -> str:
    """The summary's line about the shadow challenger and the paired comparison."""
    return (
        f"  challenger version {version} (shadow): batch accuracy {_fmt(m.get(registry.CHALLENGER_BATCH_ACCURACY_METRIC))}, "
        f"estimated {_fmt(m.get(registry.CHALLENGER_ESTIMATED_ACCURACY_METRIC))}; paired over "
        f"{int(m.get(registry.PAIRED_ROWS_METRIC, 0))} labelled rows: champion {_fmt(m.get(registry.PAIRED_CHAMPION_ACCURACY_METRIC))} "
        f"vs challenger {_fmt(m.get(registry.PAIRED_CHALLENGER_ACCURACY_METRIC))}, difference "
        f"{_fmt(m.get(registry.PAIRED_DIFFERENCE_METRIC))} ({_fmt(m.get(registry.PAIRED_DIFFERENCE_CI_LOW_METRIC))}"
        f"..{_fmt(m.get(registry.PAIRED_DIFFERENCE_CI_HIGH_METRIC))}), McNemar p {_fmt(m.get(registry.PAIRED_P_VALUE_METRIC), '.3g')} "
        f"(discordant {int(m.get(registry.PAIRED_CHAMPION_ONLY_METRIC, 0))} champion / "
        f"{int(m.get(registry.PAIRED_CHALLENGER_ONLY_METRIC, 0))} challenger)"
    )


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


@dataclass
class Champion:
    """The model behind ``@champion`` and what its training run recorded."""

    version: int
    model: Any
    holdout_accuracy: float | None
    training_keys: pd.Index
    reference_rows: pd.DataFrame | None
    promoted_at: str | None
    drift_reference: drift_stats.DriftReference | None = None
    model_id: str | None = None
    """The logged model behind the version (MLflow 3; ``None`` for a version registered
    from a run's artifact path), which each monitoring run names as its model input."""
    model_uri: str = ""

    def load_model(self) -> Any:
        """The model itself, loaded at the first call (``model`` until then is ``None``): a
        job with nothing to score does not pay for its files, scikit-learn and skops
        (seconds of a no-op ``sml infer``, measured by ``python -m bench startup``)."""
        if self.model is None:
            name = self.model_uri.removeprefix("models:/").split("/")[0]
            try:
                self.model = registry.load_version_model(name, self.version)
            except Exception as exc:  # noqa: BLE001 - any load failure is reported in one line
                raise SmlError(f"champion version {self.version} of model '{name}' cannot be loaded: "
                               f"{str(exc).splitlines()[0][:200]}") from None
        return self.model


def load_champion(spec: DatasetSpec, group: FeatureGroup, current: pd.DataFrame | None, client: MlflowClient) -> Champion:
    """Load ``models:/<dataset>@champion`` and its training rows (for exclusion and drift).

    ``current``: the feature group's rows now; ``None`` reads only the rows needed (the
    training rows, else the backfill rows) from the group.
    """
    import mlflow

    name = registry.model_name(spec.name)
    info = registry.champion_version(spec.name, client, spec.dataset_arg)
    model_uri = registry.version_uri(name, info.version)
    try:
        # The model's MLmodel file only: the model is loaded when there is something to
        # score (Champion.load_model).
        signature = mlflow.models.get_model_info(model_uri).signature
    except Exception as exc:  # noqa: BLE001 - any load failure is reported in one line
        raise SmlError(f"champion version {info.version} of model '{name}' cannot be loaded: {str(exc).splitlines()[0][:200]}") from None
    expected = [c.name for c in signature.inputs.inputs] if signature is not None else None
    if expected is not None and expected != spec.feature_names:
        raise SmlError(
            f"champion version {info.version} of model '{name}' expects columns {expected}, "
            f"but feature group '{spec.name}' has {spec.feature_names}; train and promote a model of these columns: "
            f"`sml train --dataset {spec.dataset_arg} --promote always`"
        )
    training_keys = pd.Index([])
    trained_on: pd.DataFrame | None = None
    keys = registry.version_training_keys(info, spec.primary_key, client)
    if current is None:
        if keys is not None:
            training_keys = pd.Index(keys.all)
        reference = _reference_rows(spec, group, info, keys.train if keys is not None else None, client)
    elif keys is not None:
        training_keys = pd.Index(keys.all)
        # The rows as the training run read them (its data version), else as they are now.
        source = current
        try:
            training_run_id = registry.training_run_id(info)
            data_version = client.get_run(training_run_id).data.params.get(registry.DATA_VERSION_TAG) if training_run_id else None
            if data_version not in (None, "None"):
                source = group.read(version=int(data_version))
        except Exception:  # noqa: BLE001 - a deleted run or an old data version: the rows as they are now
            source = current
        trained_on = source
    if current is not None:
        reference, _ = registry.reference_rows(trained_on if trained_on is not None else current, spec.primary_key,
                                               keys.train if keys is not None else None, real_rows=current)
    return Champion(
        version=int(info.version), model=None,
        holdout_accuracy=registry.holdout_accuracy(info),
        training_keys=training_keys, reference_rows=reference, promoted_at=registry.promoted_at(info),
        drift_reference=drift_stats.DriftReference(reference, spec) if len(reference) >= drift_stats.MIN_ROWS else None,
        model_id=tracking.logged_model_id(info), model_uri=model_uri,
    )


@dataclass
class Challenger:
    """The model behind ``@challenger`` when it is not the champion: it scores each batch
    in the shadow (its predictions stored with its version, never served)."""

    version: int
    info: Any
    """Its ``ModelVersion``."""
    model: Any = None
    """Loaded by :meth:`load` (a job with nothing to score does not pay for it)."""
    training_keys: KeySet = field(default_factory=lambda: KeySet(np.array([])))
    """Rows it was trained on: not shadow-scored (a model judged on its training rows looks better than it is)."""

    def load(self, spec: DatasetSpec, client: MlflowClient) -> str | None:
        """Load the model and its training keys; a note when it cannot score this
        dataset's rows (the batch is scored by the champion as always: a shadow never
        fails the job)."""
        import mlflow

        name, version = registry.model_name(spec.name), self.version
        try:
            signature = mlflow.models.get_model_info(registry.version_uri(name, version)).signature
            expected = [c.name for c in signature.inputs.inputs] if signature is not None else None
            if expected is not None and expected != spec.feature_names:
                return f"challenger version {version} not scored: it expects columns {expected}, not {spec.feature_names}"
            model = registry.load_version_model(name, version)
            missing = [c for c in spec.classes if c not in list(model.classes_)]
            if missing:
                return f"challenger version {version} not scored: it does not know class(es) {missing}"
            keys = registry.version_training_keys(self.info, spec.primary_key, client)
        except Exception as exc:  # noqa: BLE001 - any load failure is one note, not a failed batch
            return f"challenger version {version} not scored: it cannot be loaded: {tracking.first_line(exc, '')[:200]}"
        self.model = model
        if keys is not None:
            self.training_keys = KeySet(np.asarray(keys.all))
        return None


def find_challenger(spec: DatasetSpec, champion: Champion, client: MlflowClient) -> Challenger | None:
    """``@challenger`` (not loaded), unless there is none or it is the champion."""
    info = registry.alias_version(registry.model_name(spec.name), registry.CHALLENGER, client)
    if info is None or int(info.version) == champion.version:
        return None
    return Challenger(int(info.version), info)


def _group_rows(group: FeatureGroup, where: Any, version: int | None = None) -> pd.DataFrame:
    """The group's rows that satisfy ``where`` (read in batches), in key order, typed as
    :meth:`FeatureGroup.read` types them."""
    import pyarrow as pa

    schema = arrow_schema(group.features)
    table = pa.Table.from_batches(list(group.read_batches(where=where, version=version)), schema=schema)
    return table.to_pandas().sort_values(group.primary_key, kind="stable").reset_index(drop=True)


def _reference_rows(spec: DatasetSpec, group: FeatureGroup, info: Any, train_keys: pd.Series | None,
                    client: MlflowClient) -> pd.DataFrame:
    """:func:`registry.reference_rows` read from the group: the champion's training rows as
    its training run read them (its data version, else as they are now), else the
    backfill rows."""
    if train_keys is not None and len(train_keys):
        where = group.get_feature(spec.primary_key).isin(pd.unique(train_keys))
        try:
            training_run_id = registry.training_run_id(info)
            data_version = client.get_run(training_run_id).data.params.get(registry.DATA_VERSION_TAG) if training_run_id else None
            rows = _group_rows(group, where, None if data_version in (None, "None") else int(data_version))
        except Exception:  # noqa: BLE001 - a deleted run or an old data version: the rows as they are now
            rows = _group_rows(group, where)
        if not rows.empty:
            return rows
    return _group_rows(group, group.get_feature(ORIGIN_COLUMN) == BACKFILL_ORIGIN)


def _as_of_bounds(as_of: dt.date | None, now: dt.datetime) -> tuple[pd.Timestamp, str]:
    """Rows up to the end of the as-of date (or up to now), and the date's label."""
    if as_of is None:
        moment = to_utc(now)
        return moment, moment.date().isoformat()
    return to_utc(as_of + dt.timedelta(days=1)), as_of.isoformat()


def close_stale_runs(experiment_id: str, history: pd.DataFrame, client: MlflowClient) -> list[str]:
    """Runs left RUNNING by a crashed job (none can be live: the caller holds the job lock).
    FINISHED when their predictions landed, FAILED otherwise."""
    closed = []
    landed = set(history["run_id"]) if not history.empty else set()
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        status = "FINISHED" if run.info.run_id in landed else "FAILED"
        client.set_tag(run.info.run_id, tracking.RECOVERED_TAG, f"closed as {status} by a later job")
        # A simulated day's run ends at its batch's time, as it would have without the crash.
        end_time = run.info.start_time if run.data.tags.get(registry.SIMULATED_TAG) == "true" else None
        client.set_terminated(run.info.run_id, status=status, end_time=end_time)
        closed.append(run.info.run_id)
    return closed


@dataclass
class InferContext:
    """Everything a batch is scored and judged against, read once per job."""

    group: FeatureGroup
    target: FeatureGroup
    data_version: int | None
    features: pd.DataFrame
    history: pd.DataFrame
    champion: Champion
    experiment_id: str
    source: dict[str, Any] = field(default_factory=dict)
    """Where the batches come from (:func:`tracking.feature_group_source`)."""


def load_context(spec: DatasetSpec, store: FeatureStore, tracker: tracking.Tracking) -> InferContext:
    """Read the features, the predictions so far and the champion (call under the job lock,
    with tracking configured). The tracking store is opened only after the features are
    found (opening a new SQLite database creates it: a refused command leaves none)."""
    group = existing_feature_group(spec, store)
    data_version = group.data_version()
    features = group.read(version=data_version)
    if features.empty:
        raise NotFoundError(f"feature group '{spec.name}' has no rows; run `sml features --dataset {spec.dataset_arg}` first")
    champion = load_champion(spec, group, features, tracker.client)
    target = predictions_group(spec, store)
    history = target.read() if target.exists() else pd.DataFrame(columns=[f.name for f in predictions_schema(spec)])
    if not history.empty:  # the challenger's shadow rows were never served: not the history
        history = history[served_mask(history["run_id"])].reset_index(drop=True)
    experiment_id = tracking.get_or_create_experiment(registry.monitoring_experiment(spec.name))
    source = tracking.feature_group_source(store, group, data_version)
    return InferContext(group, target, data_version, features, history, champion, experiment_id, source)


def infer(
    spec: DatasetSpec, store: FeatureStore, settings: Settings, options: InferOptions, now: dt.datetime,
    tracker: tracking.Tracking | None = None,
) -> InferReport:
    """Score the new rows and log the batch. See the module docstring.

    Args:
        tracker: The process's tracking (:func:`tracking.configure_tracking`); configured
            here when not given.
    """
    as_of_end, as_of_label = _as_of_bounds(options.as_of, now)
    tracker = tracking.tracking_for(settings, tracker)
    existing_feature_group(spec, store)
    with job_lock(settings.state_dir, f"infer-{spec.name}"):
        report = score_batch(spec, store, options, now, tracker, as_of_end, as_of_label)
        if options.notify:  # under the lock: two jobs cannot both find an alert unsent
            from serverless_ml.pipelines.notifications import notify_batch, notify_live_promotion, sent_notes

            report.notes += sent_notes(notify_batch(spec.name, report.run_id, options.notify, tracker))
            moved = notify_live_promotion(spec.name, report.promotion, report.challenger_version, report.run_id,
                                          options.notify, tracker)
            if moved is not None:
                report.notes.append(f"alias move of @{registry.CHAMPION} to version {report.challenger_version} sent")
    raise_alerts(spec, report, options)
    return report


HISTORY_COLUMNS = (MODEL_VERSION_COLUMN, EVENT_TIME_COLUMN, "prediction", "actual", "probability", "run_id")
"""The columns of the predictions so far a batch's statistics read (with the key)."""
DRIFT_SEED = 0
"""Seed of the drift windows' samples (:class:`batch.DriftSample`)."""


@dataclass
class StreamedContext:
    """What a streamed batch is scored and judged against (:func:`score_batch`)."""

    group: FeatureGroup
    target: FeatureGroup
    data_version: int | None
    champion: Champion
    experiment_id: str
    source: dict[str, Any]
    totals: BatchTotals
    excluded: tuple[KeySet, ...]
    """Keys not to score: every scored key, the champion's training keys."""
    scored: KeySet
    landed_runs: set[str]
    rows: int = 0
    """The batch's rows (counted before scoring)."""
    batch_days: dict[Any, int] = field(default_factory=dict)
    shadow: Shadow | None = None
    """The challenger's scoring of the batch, when there is one (:func:`find_challenger`)."""
    served: KeySet = field(default_factory=lambda: KeySet(np.array([])))
    """Keys of the batch's served rows (:func:`unbatched_served` whose feature rows are
    stored): predicted when served, taken in by the batch's run without scoring them again."""
    served_rows: int = 0
    """How many of :attr:`rows` they are."""


@dataclass
class Shadow:
    """The challenger scoring a batch beside the champion: its totals (batch accuracy and
    estimate) and the rows of the rolling window both scored (the paired comparison)."""

    challenger: Challenger
    totals: BatchTotals
    paired: PairedRows
    scorer: ChunkScorer | None = None
    """Set once the run exists (its predictions carry :func:`shadow_run_id` of the run)."""
    skipped: int = 0
    """The batch's rows it trained on (not shadow-scored)."""

    def score(self, rows: pd.DataFrame, model_input: Any) -> pd.DataFrame | None:
        """The challenger's predictions of the batch's ``rows`` it did not train on (``None``: none)."""
        assert self.scorer is not None, "the run exists"
        fresh = ~self.challenger.training_keys.contains(rows[self.scorer.spec.primary_key].to_numpy())
        self.skipped += int((~fresh).sum())
        if not fresh.any():
            return None
        if not fresh.all():
            rows, model_input = rows[fresh], model_input[fresh]
        scored = self.scorer.score(rows, model_input)
        self.totals.add_batch(scored, self.scorer.spec)
        self.paired.add(scored, np.zeros(len(scored), dtype=bool), scored[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64))
        return scored


def _read_history(spec: DatasetSpec, target: FeatureGroup, totals: BatchTotals,
                  shadow: Shadow | None = None) -> tuple[KeySet, set[str], KeySet]:
    """The predictions so far, read in batches into ``totals`` (the served ones: the
    challenger's shadow rows are not the champion's history) and, with a ``shadow``
    challenger, its paired rows (the rolling window's rows of champion and challenger)
    and its totals' recalibration (its own labelled shadow rows): their keys, the runs
    whose predictions landed, and the keys of the rows ``sml serve`` answered with the
    champion before ``totals.as_of_end`` that no run holds yet (:func:`unbatched_served`:
    they are the batch's, not its history)."""
    if not target.exists():
        return KeySet(np.array([])), set(), KeySet(np.array([]))
    import pyarrow.compute as pc

    keys: list[np.ndarray] = []
    waiting: list[np.ndarray] = []
    runs: set[str] = set()
    needed = [spec.primary_key, *(c for c in HISTORY_COLUMNS if c != "run_id")]
    for batch in target.read_batches(columns=[*needed, "run_id"]):
        # The run ids stay Arrow strings: a Python string per row costs seconds a million.
        run_ids = batch.column(batch.schema.get_field_index("run_id"))
        runs.update(str(v) for v in pc.unique(run_ids).drop_null().to_pylist())
        frame = batch.select(needed).to_pandas()
        served = served_mask_arrow(run_ids)
        if shadow is not None:
            shadow.paired.add(frame, served, frame[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64))
            if not served.all():
                shadow.totals.add_labelled_history(frame[~served])
        if run_ids.null_count:
            unbatched = unbatched_served(frame, np.asarray(pc.is_null(run_ids), dtype=bool), totals.champion_version,
                                         totals.as_of_end)
            if unbatched.any():
                waiting.append(frame.loc[unbatched, spec.primary_key].to_numpy())
                served &= ~unbatched
        totals.add_history(frame if served.all() else frame[served])
        keys.append(frame[spec.primary_key].to_numpy())
    waiting_keys = KeySet(np.concatenate(waiting) if waiting else np.array([]))
    if not keys:
        return KeySet(np.array([])), runs, waiting_keys
    scored = np.concatenate(keys)
    del keys
    scored.sort()  # in place: one copy of the key column, not two
    return KeySet(scored, presorted=True), runs, waiting_keys


def unbatched_served(frame: pd.DataFrame, no_run: np.ndarray, champion_version: int, as_of_end: pd.Timestamp) -> np.ndarray:
    """Which predictions rows ``sml serve`` recorded (no ``run_id``) with the champion's
    version, for rows before ``as_of_end``: served traffic no monitoring run holds yet, which
    the next batch takes in as its own rows (not scored again). A row served by an
    earlier champion stays history: a batch is one version's."""
    return (no_run & (frame[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64) == champion_version)
            & (utc_values(frame[EVENT_TIME_COLUMN]) < to_utc(as_of_end).to_datetime64()))


def load_streamed_context(
    spec: DatasetSpec, store: FeatureStore, tracker: tracking.Tracking, as_of_end: pd.Timestamp, rolling_days: int,
) -> StreamedContext:
    """The champion, the predictions so far (as totals and keys) and the batch's size per
    day, read in batches (call under the job lock). The tracking store is opened only
    after the group is found to have rows (a refused command leaves no database)."""
    group = existing_feature_group(spec, store)
    data_version = group.data_version()
    if not any(batch.num_rows for batch in group.read_batches(columns=[spec.primary_key], version=data_version,
                                                               batch_rows=1024)):
        raise NotFoundError(f"feature group '{spec.name}' has no rows; run `sml features --dataset {spec.dataset_arg}` first")
    champion = load_champion(spec, group, None, tracker.client)
    target = predictions_group(spec, store)
    totals = BatchTotals(list(spec.classes), champion.version, as_of_end, rolling_days)
    totals.slices = slice_stats.SliceTotals(slice_stats.plan_slices(spec, champion.reference_rows))
    challenger = find_challenger(spec, champion, tracker.client)
    shadow = None
    if challenger is not None:
        shadow = Shadow(challenger, BatchTotals(list(spec.classes), challenger.version, as_of_end, rolling_days),
                        PairedRows(spec.primary_key, champion.version, challenger.version,
                                   as_of_end - pd.Timedelta(days=rolling_days), as_of_end))
    scored, landed, waiting = _read_history(spec, target, totals, shadow)
    training = np.asarray(champion.training_keys)
    excluded = (scored, KeySet(training))
    experiment_id = tracking.get_or_create_experiment(registry.monitoring_experiment(spec.name))
    source = tracking.feature_group_source(store, group, data_version)
    ctx = StreamedContext(group, target, data_version, champion, experiment_id, source, totals, excluded, scored, landed,
                          shadow=shadow)
    served: list[np.ndarray] = []
    # The batch's rows per day, from two columns: the drift windows are known before scoring.
    for batch in group.read_batches(columns=[spec.primary_key, EVENT_TIME_COLUMN], version=data_version,
                                    where=group.get_feature(EVENT_TIME_COLUMN) < as_of_end):
        frame = batch.to_pandas()
        new = new_rows_mask(frame, spec, excluded, as_of_end)
        if len(waiting):
            was_served = waiting.contains(frame[spec.primary_key].to_numpy())
            if was_served.any():
                served.append(frame.loc[was_served, spec.primary_key].to_numpy())
                ctx.served_rows += int(was_served.sum())
                new = new | was_served
        ctx.rows += int(new.sum())
        days, counts = count_days(utc_values(frame.loc[new, EVENT_TIME_COLUMN]).astype("datetime64[D]"))
        for day, count in zip(days, counts, strict=True):
            ctx.batch_days[day] = ctx.batch_days.get(day, 0) + int(count)
    if served:
        ctx.served = KeySet(np.concatenate(served))
    totals.batch_rows = ctx.rows  # how many labelled rows the estimate's recalibration reads
    if shadow is not None:
        shadow.totals.batch_rows = ctx.rows
    return ctx


class _PredictionSink:
    """Where a batch's predictions wait for the run to be logged: in memory for a batch of
    one chunk (upserted as a frame), else staged in the predictions group
    (:meth:`FeatureGroup.stage_new`: written as they come, added in one commit)."""

    def __init__(self, spec: DatasetSpec, target: FeatureGroup, in_memory: bool) -> None:
        self.spec, self.target = spec, target
        self.schema = arrow_schema(predictions_schema(spec))
        self.frames: list[pd.DataFrame] = []
        self.served: list[pd.DataFrame] = []
        self.stage = None if in_memory else target.stage_new()

    def write(self, scored: pd.DataFrame) -> None:
        if self.stage is None:
            self.frames.append(scored)
            return
        self.stage.write(predictions_table(scored, self.schema))

    def write_served(self, predictions: pd.DataFrame) -> None:
        """Stored predictions of served rows, now naming the batch's run (an update of
        their rows: never staged, which adds new keys only)."""
        self.served.append(predictions)

    def upsert(self) -> None:
        """Write the predictions to the group: in one commit, but for a staged batch with
        served rows, whose run is named by a second commit after it (a crash between
        leaves them to the next batch, which takes them in again)."""
        if self.stage is not None:
            self.stage.commit()
            if self.served:
                self.target.insert(normalise_predictions(pd.concat(self.served, ignore_index=True), self.spec), wait=True)
            return
        frames = self.frames + self.served
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        self.target.insert(normalise_predictions(frame, self.spec), wait=True)

    def close(self) -> None:
        """Drop what was staged and not committed."""
        if self.stage is not None:
            self.stage.discard()


class _Worker:
    """One background thread for the work that can overlap ``predict``: counting the
    scored chunks into the batch's totals, encoding and writing them, digesting the batch's rows (Arrow and NumPy release the
    interpreter lock). At most ``depth`` tasks wait, so memory holds a few chunks."""

    def __init__(self, depth: int = 2) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sml-infer")
        self.pending: list[Any] = []
        self.depth = depth

    def submit(self, task: Any, *args: Any) -> None:
        while len(self.pending) >= self.depth:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(task, *args))

    def finish(self) -> None:
        """Wait for every task (raising the first failure)."""
        while self.pending:
            self.pending.pop(0).result()

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pool.shutdown(wait=True)


def score_batch(
    spec: DatasetSpec, store: FeatureStore, options: InferOptions, now: dt.datetime, tracker: tracking.Tracking,
    as_of_end: pd.Timestamp, as_of_label: str,
) -> InferReport:
    """The job under its lock: the feature group is read three times in batches (the keys
    and event times to count the batch per day, then every column to score the new rows
    chunk by chunk and sample the drift windows), so memory holds a few chunks, the
    running totals and the drift samples, whatever the number of rows."""
    ctx = load_streamed_context(spec, store, tracker, as_of_end, options.rolling_days)
    client = tracker.client
    landed = pd.DataFrame({"run_id": sorted(ctx.landed_runs)})
    notes = [f"closed stale run {run_id}" for run_id in close_stale_runs(ctx.experiment_id, landed, client)]
    report = InferReport(spec.name, ctx.champion.version, as_of_label, ctx.rows, notes=notes, rows_served=ctx.served_rows)
    if not ctx.rows:
        return report
    model = ctx.champion.load_model()  # before the run: a model that cannot load logs nothing
    shadow = ctx.shadow
    if shadow is None and options.promote == "live":
        report.notes.append(f"--promote live: nothing to judge, @{registry.CHALLENGER} is not another version than "
                            f"@{registry.CHAMPION}")
    if shadow is not None:
        note = shadow.challenger.load(spec, client)
        if note is not None:
            report.notes.append(note)
            shadow = ctx.shadow = None
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(tracking.job_run(ctx.experiment_id, f"{spec.name}-batch-{as_of_label}", client))
        report.run_id = run.info.run_id
        crash_point("infer.after_run_created")
        sink = _PredictionSink(spec, ctx.target, in_memory=ctx.rows <= CHUNK_ROWS)
        stack.callback(sink.close)
        scorer = ChunkScorer(model, spec, ctx.champion.version, to_utc(now), run.info.run_id)
        if shadow is not None:
            shadow.scorer = ChunkScorer(shadow.challenger.model, spec, shadow.challenger.version, to_utc(now),
                                        shadow_run_id(run.info.run_id))
        drift, digest = _score_stream(spec, ctx, scorer, sink, as_of_end, options)
        stats = streamed_statistics(spec, ctx.totals, drift, ctx.champion, options.rule)
        stats.metrics[registry.ROWS_SERVED_METRIC] = float(ctx.served_rows)
        looks = (earlier_looks(ctx.experiment_id, shadow.challenger.version, client)
                 if shadow is not None and options.promote == "live" else 0)
        judged = judge_shadow(shadow, stats, options, looks) if shadow is not None else None
        report.metrics, report.alerts = stats.metrics, stats.alerts.messages
        report.notes += stats.notes
        dataset = tracking.dataset_input(
            spec.name, ctx.source, digest.rows, tracking.spec_columns(spec, list(digest.schema.names)),
            digest.hexdigest(tracking.DIGEST_LENGTH), BATCH_INPUT_CONTEXT, tags={registry.AS_OF_TAG: as_of_label})
        log_batch_run(spec, run.info, stats, ctx.champion, as_of_label, as_of_end, ctx.data_version, options,
                      dataset=dataset, client=client, shadow=judged, scored_at=scorer.scored_at)
        crash_point("infer.after_run_logged")
        sink.upsert()
        crash_point("infer.after_upsert")
    # After the run is finished: the batch is logged and its predictions landed whatever
    # the registry says next; a decision that cannot be applied is a note, not a failed job.
    if judged is not None:
        report.challenger_version = judged.version
        if judged.decision is not None:
            try:
                report.promotion = apply_live_decision(spec, judged, ctx.champion.version, report.run_id, as_of_end, now,
                                                       client)
            except Exception as exc:  # noqa: BLE001 - the batch stands; the next batch judges again
                first = tracking.first_line(exc, tracker.uri)
                report.notes.append(f"--promote live: the decision could not be applied ({type(exc).__name__}: {first}); "
                                    "the next batch judges again")
    return report


@dataclass(frozen=True)
class ShadowJudgement:
    """What a monitoring run logs about its batch's challenger (:func:`judge_shadow`)."""

    version: int
    window: str
    """The days of the paired comparison."""
    comparison: paired.PairedComparison
    decision: Any = None
    """``--promote live``: the :class:`promotion.PromotionDecision`; ``None`` otherwise."""

    def tags(self) -> dict[str, str]:
        return {registry.CHALLENGER_VERSION_TAG: str(self.version), registry.PAIRED_WINDOW_TAG: self.window}


def earlier_looks(experiment_id: str, version: int, client: MlflowClient) -> int:
    """How many earlier batches judged challenger ``version`` with ``--promote live`` (the
    monitoring runs that logged :data:`registry.LIVE_PROMOTION_LOOK_METRIC` for it)."""
    runs = client.search_runs(
        [experiment_id], max_results=10_000,
        filter_string=(f"tags.`{registry.CHALLENGER_VERSION_TAG}` = '{int(version)}' "
                       f"and metrics.`{registry.LIVE_PROMOTION_LOOK_METRIC}` > 0"))
    return len(runs)


def judge_shadow(shadow: Shadow, stats: BatchStatistics, options: InferOptions, looks_before: int = 0) -> ShadowJudgement:
    """The challenger's figures and the paired comparison added to the batch's
    ``stats`` (metrics, and a note for rows it was not judged on), and, with
    ``--promote live``, the promotion decision: this batch's is the challenger's look
    ``looks_before + 1`` (:func:`promotion.look_level`), counted only when there were
    enough discordant rows to test at all."""
    from serverless_ml.training import promotion

    version = shadow.challenger.version
    comparison = shadow.paired.comparison()
    stats.metrics.update(paired.shadow_metrics(shadow.totals.matrices["batch"], shadow.totals.accuracy_estimate(),
                                               comparison, shadow.totals.fitted_recalibration()))
    if shadow.skipped:
        stats.notes.append(f"challenger version {version} did not score {shadow.skipped} of the batch's rows: "
                           "it was trained on them")
    last_day = as_of_day(shadow.paired.end)
    first_day = (shadow.paired.start.to_datetime64()).astype("datetime64[D]")
    window = f"{first_day}..{last_day}"
    decision = None
    if options.promote == "live":
        look = looks_before + 1
        decision = promotion.decide_live_promotion(comparison.p_value_better, comparison.discordant, comparison.difference,
                                                   comparison.rows, window=window, look=look)
        if comparison.discordant >= defaults.LIVE_PROMOTE_MIN_DISCORDANT:
            stats.metrics[registry.LIVE_PROMOTION_LOOK_METRIC] = float(look)
            stats.metrics[registry.LIVE_PROMOTION_LEVEL_METRIC] = promotion.look_level(defaults.LIVE_PROMOTE_ALPHA, look)
    return ShadowJudgement(version, window, comparison, decision)


def apply_live_decision(
    spec: DatasetSpec, judged: ShadowJudgement, champion_version: int, run_id: str, as_of_end: pd.Timestamp,
    now: dt.datetime, client: MlflowClient,
) -> str:
    """``--promote live``, after the batch's predictions landed: move ``@champion`` to the
    challenger when the decision says so (stamping the version as a training job's
    promotion does, plus the run whose evidence promoted it and the champion it replaced),
    then log the decision on the monitoring run. Returns the decision as one line.

    A champion that moved since the batch started (a training job promoted another
    version) is left alone: the evidence was about the champion this batch compared."""
    from mlflow.entities import Metric, RunTag

    decision = judged.decision
    promote, reason = bool(decision.promote), str(decision.reason)
    name = registry.model_name(spec.name)
    if promote:
        current = registry.alias_version(name, registry.CHAMPION, client)
        if current is None or int(current.version) != champion_version:
            promote = False
            reason = (f"{reason}; not applied: @{registry.CHAMPION} moved to version "
                      f"{getattr(current, 'version', None)} while the batch was scored")
    if promote:
        # The version's record first, then the alias: a crash in between leaves a version
        # tagged by the run whose evidence would have promoted it, still @challenger, and
        # the next batch judges it again (a crash after the alias move: the tags say why).
        version = str(judged.version)
        client.set_model_version_tag(name, version, registry.PROMOTED_AT_TAG, to_utc(now).isoformat())
        client.set_model_version_tag(name, version, registry.PROMOTED_BY_RUN_TAG, run_id)
        client.set_model_version_tag(name, version, registry.PROMOTION_PREVIOUS_CHAMPION_TAG, str(champion_version))
        crash_point("infer.before_live_promotion")
        client.set_registered_model_alias(name, registry.CHAMPION, version)
        crash_point("infer.after_live_promotion")
    stamp = int((as_of_end - pd.Timedelta(milliseconds=1)).timestamp() * 1000)
    word = "promoted" if promote else "not promoted"
    client.log_batch(run_id, metrics=[Metric(registry.LIVE_PROMOTED_METRIC, float(promote), stamp, 0)], tags=[
        RunTag(registry.LIVE_PROMOTION_DECISION_TAG, word), RunTag(registry.LIVE_PROMOTION_REASON_TAG, reason[:4000])])
    target = f"version {judged.version} is now @{registry.CHAMPION}" if promote else f"version {champion_version} stays @{registry.CHAMPION}"
    return f"{word}: {target} ({reason})"


def _new_chunks(
    spec: DatasetSpec, ctx: StreamedContext, as_of_end: pd.Timestamp, scan_end: pd.Timestamp, sampler: DriftWindowRows,
    digest: RowsDigest, prepare: Any, served: list[pd.DataFrame],
) -> Iterator[tuple[pd.DataFrame, Any, Any]]:
    """The batch's new rows read from the feature group, ``CHUNK_ROWS`` or so at a time,
    each with its model input and that input through the champion's transforming steps
    (``prepare``: :meth:`ChunkScorer.prepare`); on the way, the digest of the rows and
    the drift windows' samples (run in a background thread: :func:`_in_background`), and
    the feature rows of the batch's served rows (``ctx.served``) appended to ``served``."""
    import pyarrow as pa

    from serverless_ml.training.model import as_model_input

    names = [f.name for f in ctx.group.features]
    columns = [c for c in spec.store_columns if c in names]
    pending: list[pd.DataFrame] = []
    held = 0
    for batch in ctx.group.read_batches(columns=columns, version=ctx.data_version, batch_rows=CHUNK_ROWS,
                                        where=ctx.group.get_feature(EVENT_TIME_COLUMN) < scan_end):
        frame = batch.to_pandas()
        new = new_rows_mask(frame, spec, ctx.excluded, as_of_end)
        if ctx.served_rows:
            was_served = ctx.served.contains(frame[spec.primary_key].to_numpy())
            if was_served.any():
                digest.add(batch.filter(pa.array(was_served)))
                served.append(frame[was_served])
        if new.all():  # no copies of a chunk of new rows only
            digest.add(batch)
            pending.append(frame)
            held += len(frame)
        elif new.any():
            digest.add(batch.filter(pa.array(new)))
            pending.append(frame[new])
            held += int(new.sum())
        sampler.add(frame, new, ctx.scored)
        if held >= CHUNK_ROWS:
            rows = pending[0] if len(pending) == 1 else pd.concat(pending, ignore_index=True)
            model_input = as_model_input(rows, spec)
            yield rows, model_input, prepare(model_input)
            pending, held = [], 0
    if pending:
        rows = pd.concat(pending, ignore_index=True)
        model_input = as_model_input(rows, spec)
        yield rows, model_input, prepare(model_input)


def _in_background(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items`` produced by a background thread, at most ``depth`` ahead of the consumer
    (reading and preparing the next chunk overlaps ``predict``); a failure there is raised
    here, and a consumer that stops early stops the thread."""
    import queue
    import threading

    done, failed = object(), []
    ahead: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            failed.append(exc)
        offer(done)

    thread = threading.Thread(target=produce, name="sml-infer-read", daemon=True)
    thread.start()
    try:
        while True:
            item = ahead.get()
            if item is done:
                break
            yield item
        if failed:
            raise failed[0]
    finally:
        stop.set()
        thread.join()


def _count_and_write(totals: BatchTotals, sink: _PredictionSink, spec: DatasetSpec, scored: pd.DataFrame,
                     rows: pd.DataFrame) -> None:
    """A scored chunk counted into the batch's totals and written to ``sink``."""
    totals.add_batch(scored, spec, rows)
    sink.write(scored)


def _shape_count_and_write(scorer: ChunkScorer, totals: BatchTotals, sink: _PredictionSink, spec: DatasetSpec,
                           rows: pd.DataFrame, proba: Any) -> None:
    """A chunk's predictions shaped from the final estimator's ``proba``
    (:meth:`ChunkScorer.score`), then :func:`_count_and_write`."""
    _count_and_write(totals, sink, spec, scorer.score(rows, proba=proba), rows)


def _score_stream(
    spec: DatasetSpec, ctx: StreamedContext, scorer: ChunkScorer, sink: _PredictionSink, as_of_end: pd.Timestamp,
    options: InferOptions,
) -> tuple[DriftStatistics, RowsDigest]:
    """Read the feature group in batches, score its new rows chunk by chunk into ``sink``
    and ``ctx.totals``, digest the batch's feature rows and sample its drift windows: one
    thread reads and prepares the chunks, this one predicts, another writes."""
    last_day = as_of_day(as_of_end)
    day_counts = dict(ctx.totals.history_days)
    for day, count in ctx.batch_days.items():
        day_counts[day] = day_counts.get(day, 0) + count
    windows = drift_stats.drift_windows_of_counts(day_counts, last_day, options.rolling_days)
    sampler = DriftWindowRows(spec, windows if ctx.champion.drift_reference is not None else None, as_of_end,
                              seed=DRIFT_SEED)
    names = [f.name for f in ctx.group.features]
    digest = RowsDigest(arrow_schema([ctx.group.get_feature(c) for c in spec.store_columns if c in names]))
    # Rows up to the end of the batch's last day: a drift window's scored rows may lie past
    # ``as_of_end`` (a batch scored up to now), and only rows before it are new.
    scan_end = max(to_utc(pd.Timestamp(last_day + np.timedelta64(1, "D"))), as_of_end)
    worker = _Worker()
    try:
        served: list[pd.DataFrame] = []
        chunks = _new_chunks(spec, ctx, as_of_end, scan_end, sampler, digest, scorer.prepare, served)
        for rows, model_input, prepared in _in_background(chunks):
            proba = scorer.final.predict_proba(prepared)
            if ctx.shadow is None:
                # Shaped, counted and written in the writing thread, in chunk order: this
                # one only predicts.
                worker.submit(_shape_count_and_write, scorer, ctx.totals, sink, spec, rows, proba)
                continue
            # With a challenger, its paired rows need the champion's predictions here.
            scored = scorer.score(rows, proba=proba)
            worker.submit(_count_and_write, ctx.totals, sink, spec, scored, rows)
            ctx.shadow.paired.add(scored, np.ones(len(scored), dtype=bool), scored[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64))
            shadow_scored = ctx.shadow.score(rows, model_input)
            if shadow_scored is not None:
                worker.submit(sink.write, shadow_scored)
        worker.finish()
        if served:
            _take_in_served(spec, ctx, scorer.run_id, sink, pd.concat(served, ignore_index=True))
    finally:
        worker.close()
    drift = streamed_drift(spec, sampler, ctx.totals, ctx.champion.drift_reference, as_of_end, options.rolling_days,
                           options.rule)
    return drift, digest


def _take_in_served(spec: DatasetSpec, ctx: StreamedContext, run_id: str, sink: _PredictionSink,
                    features: pd.DataFrame) -> None:
    """The batch's served rows (``features``: their feature rows): their predictions as
    ``sml serve`` recorded them (version, probabilities, the request's time as
    ``scored_at``), counted into the batch's totals and written back naming the run, with
    ``actual`` and ``correct`` from the rows' current labels. A challenger scores them as
    it scores the batch's other rows."""
    from serverless_ml.training.model import as_model_input

    key = spec.primary_key
    version = ctx.champion.version
    stored = []
    for batch in ctx.target.read_batches(where=(ctx.target.get_feature(MODEL_VERSION_COLUMN) == version)
                                         & ctx.target.get_feature(key).isin(features[key].tolist())):
        frame = batch.to_pandas()
        stored.append(frame[frame["run_id"].isna().to_numpy()])
    predictions = pd.concat(stored, ignore_index=True).drop_duplicates(key)
    # In the feature rows' order, with their labels (the store's current ones).
    predictions = predictions.set_index(key).reindex(features[key].to_numpy()).reset_index(names=key)
    assert not predictions["prediction"].isna().any(), "every served key has its stored prediction"
    labels = pd.Index(list(spec.classes))
    actual = features[spec.label]
    correct = pd.array(labels.get_indexer(predictions["prediction"]) == labels.get_indexer(actual), dtype="boolean")
    correct[actual.isna().to_numpy()] = pd.NA
    predictions["actual"] = actual.array
    predictions["correct"] = correct
    predictions["run_id"] = run_id
    predictions = normalise_predictions(predictions, spec)
    for start in range(0, len(predictions), CHUNK_ROWS):
        part = slice(start, start + CHUNK_ROWS)
        rows, scored = features.iloc[part].reset_index(drop=True), predictions.iloc[part].reset_index(drop=True)
        ctx.totals.add_batch(scored, spec, rows)
        sink.write_served(scored)
        if ctx.shadow is not None:
            shadow_scored = ctx.shadow.score(rows, as_model_input(rows, spec))
            if shadow_scored is not None:
                sink.write(shadow_scored)


def raise_alerts(spec: DatasetSpec, report: InferReport, options: InferOptions) -> None:
    """Print the batch's alerts; with ``--fail-on-alert`` turn them into exit code 3."""
    for message in report.alerts:
        print(f"ALERT {spec.name} {report.as_of}: {message}")
    if options.fail_on_alert and report.alerts:
        raise AlertRaised(f"{spec.name} {report.as_of}: {'; '.join(report.alerts)} (run {report.run_id})")


def batch_run_tags(
    spec: DatasetSpec, stats: BatchStatistics, champion: Champion, as_of_label: str, data_version: int | None
) -> dict[str, str]:
    """The tags of a batch's monitoring run (known before the run is created, so a
    simulation can pass them to ``create_run`` and save a call per run)."""
    latest = stats.latest
    return {
        "dataset": spec.name,
        registry.MODEL_VERSION_TAG: str(champion.version),
        "model_uri": champion.model_uri,
        registry.AS_OF_TAG: as_of_label,
        registry.DATA_VERSION_TAG: str(data_version),
        registry.DRIFT_BASIS_TAG: stats.drift_basis,
        registry.DRIFT_WINDOW_TAG: stats.drift_window,
        registry.DRIFT_WINDOW_ROLLING_TAG: stats.drift_window_rolling,
        registry.ALERT_TAG: "true" if stats.alerts.any else "false",
        registry.ALERT_ACCURACY: str(stats.alerts.accuracy).lower(),
        registry.ALERT_DRIFT: str(stats.alerts.drift).lower(),
        registry.ACCURACY_BASIS_TAG: stats.accuracy_basis,
        registry.ALERTS_TAG: registry.MESSAGE_SEPARATOR.join(stats.alerts.messages)[:4000],
        registry.NOT_COMPUTED_TAG: registry.MESSAGE_SEPARATOR.join(stats.notes)[:4000],
        registry.LATEST_KEY_TAG: _text(latest[spec.primary_key]),
        registry.LATEST_PREDICTION_TAG: _text(latest["prediction"]),
        registry.LATEST_ACTUAL_TAG: _text(latest["actual"]),  # empty while its label is not known
        **slice_stats.worst_slice_tags(stats.slices),
        tracking.NOTE_TAG: f"Batch of {int(stats.metrics[registry.ROWS_SCORED_METRIC])} {spec.name} rows up to {as_of_label}, "
        f"scored by champion version {champion.version}.",
    }


def _text(value: Any) -> str:
    """A value as a tag holds it: empty when it is not known (not the text "None" or "<NA>")."""
    return "" if is_missing(value) else str(value)


BATCH_INPUT_CONTEXT = "inference"
"""The dataset-input context of a batch on its monitoring run."""


def batch_input(spec: DatasetSpec, rows: pd.DataFrame, source: dict[str, Any], as_of_label: str) -> Any:
    """A batch's feature rows (key, event time, features, label, origin) as a dataset
    input of its monitoring run: the feature group and data version they were read from
    and a digest of the rows."""
    columns = [c for c in spec.store_columns if c in rows.columns]
    features = {f.name: f for f in spec.store_schema()}
    # The digest `sml infer` streams (:class:`RowsDigest`: the same rows give the same
    # digest whichever job logged them, in any order).
    digest = RowsDigest(arrow_schema([features[c] for c in columns]))
    for batch in conform(rows[columns], [features[c] for c in columns], [spec.primary_key], spec.name).to_batches():
        digest.add(batch)
    return tracking.dataset_input(
        spec.name, source, digest.rows, tracking.spec_columns(spec, columns), digest.hexdigest(tracking.DIGEST_LENGTH),
        BATCH_INPUT_CONTEXT, tags={registry.AS_OF_TAG: as_of_label},
    )


def log_batch_run(
    spec: DatasetSpec,
    run_info: Any,
    stats: BatchStatistics,
    champion: Champion,
    as_of_label: str,
    as_of_end: pd.Timestamp,
    data_version: int | None,
    options: InferOptions,
    tags_logged: bool = False,
    *,
    batch_rows: pd.DataFrame | None = None,
    source: dict[str, Any] | None = None,
    dataset: Any = None,
    client: MlflowClient,
    shadow: ShadowJudgement | None = None,
    scored_at: pd.Timestamp | None = None,
) -> None:
    """Log a batch's statistics on the run ``run_info`` (an ``mlflow.entities.RunInfo``):
    metrics, params and (unless ``tags_logged``) tags in one batch call, timestamped at
    the as-of date; the batch's feature rows ``batch_rows`` as the run's dataset input
    (from ``source``; or ``dataset``, the input already built) and the champion's logged
    model as its model input, in one call;
    then the JSON tables and figures in one upload."""
    from mlflow.entities import Metric, Param, RunTag

    stamp = int((as_of_end - pd.Timedelta(milliseconds=1)).timestamp() * 1000)
    tags = {} if tags_logged else batch_run_tags(spec, stats, champion, as_of_label, data_version)
    if shadow is not None:  # (its metrics are in stats.metrics)
        tags.update(shadow.tags())
    if scored_at is not None:
        tags[registry.SCORED_AT_TAG] = to_utc(scored_at).isoformat()
    params: dict[str, Any] = {
        registry.ROLLING_DAYS_PARAM: options.rolling_days,
        registry.ACCURACY_DROP_PARAM: options.rule.accuracy_drop,
        registry.DRIFT_P_VALUE_PARAM: options.rule.drift_p_value,
        registry.DRIFT_SHARE_THRESHOLD_PARAM: options.rule.drift_share,
        registry.DRIFT_MIN_EFFECT_PARAM: options.rule.drift_min_effect,
        registry.DRIFT_WINDOW_ROWS_PARAM: drift_stats.WINDOW_ROWS,
        registry.FIGURES_PARAM: options.figures,
    }
    if shadow is not None:
        params.update({registry.PROMOTE_MODE_PARAM: options.promote,
                       registry.LIVE_PROMOTE_ALPHA_PARAM: defaults.LIVE_PROMOTE_ALPHA,
                       registry.LIVE_PROMOTE_MIN_DISCORDANT_PARAM: defaults.LIVE_PROMOTE_MIN_DISCORDANT})
    client.log_batch(
        run_info.run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in stats.metrics.items() if not math.isnan(float(v))],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    if dataset is None and batch_rows is not None:
        dataset = batch_input(spec, batch_rows, source or {}, as_of_label)
    if dataset is not None:
        tracking.log_inputs(run_info.run_id, [dataset], [champion.model_id] if champion.model_id else None, client)
    names = list(spec.class_names) if spec.class_names else None
    files: dict[str, Any] = {registry.confusion_artifact(label): table for label, table in stats.tables.items()}
    files[registry.DRIFT_ARTIFACT] = registry.DriftReport(
        basis=stats.drift_basis, window=stats.drift_window, rows=stats.metrics.get(registry.DRIFT_ROWS_METRIC),
        rolling_window=stats.drift_window_rolling, rolling_rows=stats.metrics.get(registry.DRIFT_ROWS_ROLLING_METRIC),
        p_threshold=options.rule.drift_p_value, min_effect=options.rule.drift_min_effect,
        features=tuple(vars(d) for d in stats.drift),
    ).to_json()
    files[registry.LATEST_ARTIFACT] = {k: None if is_missing(v) else str(v) for k, v in stats.latest.items()}
    if stats.slices is not None:
        files[registry.SLICES_ARTIFACT] = stats.slices.to_json()
    # One upload for all of a batch's files, straight to the run's artifact location
    # (``MlflowClient.log_artifacts`` would first fetch the whole run to find it).
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for relative, payload in files.items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(json.dumps(payload, indent=1, default=str))
        if options.figures:
            import matplotlib.pyplot as plt

            for label, table in stats.tables.items():
                if label == "since_promotion":
                    continue
                figure = evaluation.confusion_figure(table, f"{spec.name} {label} ({as_of_label})", names)
                figure.savefig(root / registry.confusion_artifact(label, "png"))
                plt.close(figure)
        tracking.upload_artifacts(run_info, folder)
