"""Realized performance that follows the labels: what a monitoring run's figures become
when labels arrive after its batch was scored (the calculation half; the job
:mod:`serverless_ml.pipelines.labels` reads, calls these, logs and writes).

- :func:`relabel_predictions`: the predictions with ``actual``/``correct`` taken from the
  feature group's current labels (the predictions' ``actual`` is never a frozen copy);
- :func:`realized_figures`: a run's label-dependent figures recomputed from the
  predictions, with the very functions batch inference uses
  (:mod:`serverless_ml.inference.batch`): rows labelled, labelled share, batch accuracy
  and its Wilson interval, rolling and since-promotion accuracy and rows, per-class batch
  and rolling metrics, the confusion tables and, for a run that logged one, its slice
  table recomputed with the run's own slice plan (:mod:`serverless_ml.inference.slices`)
  and the worst slice's accuracy; and their digest;
- :func:`plan_run_update`: what to log on a run so that it shows those figures.

A run's rows are the predictions rows carrying its ``run_id``; its history, the rows
scored up to and including its batch (``scored_at`` at most the batch's), which is what
batch inference judged it against.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml import registry
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.inference import batch as batch_stats
from serverless_ml.inference import estimate
from serverless_ml.inference import monitoring
from serverless_ml.inference import slices as slice_stats
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN
from serverless_ml.training import evaluation

RUN_ID_COLUMN = "run_id"
SCORED_AT_COLUMN = "scored_at"
ACTUAL_COLUMN = "actual"
CORRECT_COLUMN = "correct"
PREDICTION_COLUMN = "prediction"

WINDOW_METRICS = (
    registry.ROWS_LABELLED_METRIC,
    registry.LABELLED_SHARE_METRIC,
    registry.BATCH_ACCURACY_METRIC,
    registry.BATCH_ACCURACY_CI_LOW_METRIC,
    registry.BATCH_ACCURACY_CI_HIGH_METRIC,
    registry.ROLLING_ROWS_METRIC,
    registry.ROLLING_ACCURACY_METRIC,
    registry.CUMULATIVE_ROWS_METRIC,
    registry.CUMULATIVE_ACCURACY_METRIC,
)
"""The figures of a monitoring run that depend on labels, per-class metrics aside
(:func:`realized_metric_names` adds those)."""


@dataclass(frozen=True)
class BatchRun:
    """What a monitoring run says about how its batch was judged.

    Attributes:
        run_id: The run (its predictions carry the id).
        model_version: The champion version that scored it (its ``model_version`` tag):
            the since-promotion window counts that version's rows.
        rolling_days: Its ``rolling_days`` param.
        as_of_end: The end of its as-of bound (exclusive; its metrics are timestamped a
            millisecond before it).
        slices: The slice plan of its slice table (``None``: it logged none).
        recalibration: The recalibration its estimates used (from its
            ``estimate_recalibration_a``/``_b`` metrics; the identity when it logged none),
            with which the slice table's estimated part is recomputed as it was logged.
    """

    run_id: str
    model_version: int
    rolling_days: int
    as_of_end: pd.Timestamp
    slices: slice_stats.SlicePlan | None = None
    recalibration: estimate.Recalibration = field(default_factory=estimate.Recalibration)
    scored_through: pd.Timestamp | None = None
    """When it was scored (its :data:`registry.SCORED_AT_TAG`): the predictions its windows
    had seen are those scored no later (``None``: a run logged before the tag, whose rows
    were all scored by it, bounded by their latest ``scored_at``)."""


def scored_through_of(tags: Mapping[str, str]) -> pd.Timestamp | None:
    """A run's :data:`registry.SCORED_AT_TAG` from its ``tags`` (``None``: absent or not a time)."""
    value = tags.get(registry.SCORED_AT_TAG)
    if not value:
        return None
    try:
        moment = pd.Timestamp(value)
    except ValueError:
        return None
    return moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")


@dataclass(frozen=True)
class RealizedFigures:
    """A run's label-dependent metrics and confusion tables (windows with labelled rows)."""

    run_id: str
    metrics: dict[str, float]
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    slices: dict[str, Any] | None = None
    """The run's slice table (:data:`registry.SLICES_ARTIFACT`; ``None``: it logged none)."""
    notes: tuple[str, ...] = ()
    """Why a label-dependent figure is not computed (:func:`is_label_note`), as batch
    inference would say it now."""

    @property
    def digest(self) -> str:
        """A digest of every figure (exact floats), for :data:`registry.REALIZED_DIGEST_TAG`."""
        payload: dict[str, Any] = {"metrics": {k: float(v).hex() for k, v in sorted(self.metrics.items())},
                                   "tables": self.tables}
        if self.slices is not None:  # (a run without a slice table keeps the digest it had)
            payload["slices"] = self.slices
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class RunUpdate:
    """What to log on a run: ``metrics`` (changed figures; NaN for one that can no longer
    be computed, and always the rows labelled, whose history counts the updates), the
    confusion ``tables`` and, last, the ``digest``."""

    run_id: str
    metrics: dict[str, float]
    tables: dict[str, dict[str, Any]]
    digest: str
    changed: list[str]
    """The names of the metrics whose value changed."""
    slices: dict[str, Any] | None = None
    """The slice table to upload (``None``: the run has none)."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags to set: the worst slice (:func:`slices.worst_slice_tags`)."""


def class_keys_of(spec: DatasetSpec) -> list[str]:
    return evaluation.class_metric_keys(list(spec.classes), spec.class_names)


def realized_metric_names(spec: DatasetSpec) -> frozenset[str]:
    """Every label-dependent metric a monitoring run may carry: :data:`WINDOW_METRICS`
    and the per-class metrics of :data:`batch.CLASS_METRIC_WINDOWS`."""
    n = len(spec.classes)
    # A matrix holding enough rows for every window's per-class metrics to be computed.
    per_cell = max(1, math.ceil(monitoring.MIN_ROWS_FOR_CLASS_METRICS / (n * n)))
    full = {label: np.full((n, n), per_cell, dtype=np.int64) for label in batch_stats.CONFUSION_WINDOWS}
    per_class = batch_stats.class_metrics(spec, full, class_keys_of(spec)).metrics
    return frozenset(WINDOW_METRICS) | frozenset(per_class)


def label_codes(spec: DatasetSpec, values: pd.Series) -> np.ndarray:
    """Class codes of labels (-1 for a missing one)."""
    return evaluation.class_codes(values, pd.Index(list(spec.classes)))


def label_values(spec: DatasetSpec, values: pd.Series) -> pd.Series:
    """Labels in the dtype a store column of the spec's label type takes (``Int64`` for
    integer classes, so a missing label stays missing; text as objects)."""
    if spec.label_type == "bigint":
        return pd.Series(pd.array(values.to_numpy(dtype=object), dtype="Int64"), index=values.index)
    return values.astype(object).where(values.notna(), None)


def relabel_predictions(spec: DatasetSpec, predictions: pd.DataFrame, features: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The predictions with ``actual`` set to the feature group's current label of their
    key (every model version's row of a key) and ``correct`` recomputed; and which rows
    that changed. A prediction whose key is not in the feature group keeps its values.
    The other columns stay exactly as stored."""
    key = spec.primary_key
    labels = features.drop_duplicates(key).set_index(key)[spec.label]
    known = predictions[key].isin(labels.index).to_numpy()
    current = predictions[key].map(labels)
    old_codes = label_codes(spec, predictions[ACTUAL_COLUMN])
    new_codes = np.where(known, label_codes(spec, current), old_codes)
    changed = new_codes != old_codes
    out = predictions.copy()
    actual = label_values(spec, current.where(pd.Series(known, index=current.index), predictions[ACTUAL_COLUMN]))
    out[ACTUAL_COLUMN] = actual
    predicted = label_codes(spec, predictions[PREDICTION_COLUMN])
    correct = pd.array(predicted == new_codes, dtype="boolean")
    correct[new_codes < 0] = pd.NA
    out[CORRECT_COLUMN] = correct
    return out, changed


@dataclass(frozen=True)
class PredictionArrays:
    """The predictions group's rows as arrays sorted by event time, made once for every run
    one job recomputes: a run's windows are then slices of them and a comparison or two,
    not a filtered copy of the table with its class codes made anew (which made ``sml
    labels`` quadratic in the history: a year of daily runs took 12.6 s at 1,000 rows a day and
    131 s at 10,000, now 1.0 s and 12.5 s: still a pass over the rows before each run's
    as-of end, but numeric only).

    Attributes:
        pairs: Each row's ``actual * classes + predicted`` (``-1``: either is missing).
        event_time, scored_at: UTC ``datetime64[ns]`` (``NaT``: missing); event times ascending.
        versions: Model versions.
        rows_by_run: Each run id's row positions (in this order).
        classes: How many classes.
        positions: Each row's position in the predictions frame.
    """

    pairs: np.ndarray
    event_time: np.ndarray
    scored_at: np.ndarray
    versions: np.ndarray
    rows_by_run: dict[str, np.ndarray]
    classes: int
    positions: np.ndarray

    @classmethod
    def of(cls, spec: DatasetSpec, predictions: pd.DataFrame) -> PredictionArrays:
        lookup = pd.Index(list(spec.classes))
        k = len(spec.classes)
        event_time = batch_stats.utc_values(predictions[EVENT_TIME_COLUMN])
        by_time = np.argsort(event_time, kind="stable")
        actual = evaluation.class_codes(predictions[ACTUAL_COLUMN], lookup)[by_time]
        predicted = evaluation.class_codes(predictions[PREDICTION_COLUMN], lookup)[by_time]
        pairs = np.where((actual >= 0) & (predicted >= 0), actual * k + predicted, -1)
        codes, runs = pd.factorize(predictions[RUN_ID_COLUMN].astype(object).to_numpy()[by_time], use_na_sentinel=True)
        order = np.argsort(codes, kind="stable")
        starts = np.searchsorted(codes[order], np.arange(len(runs) + 1))
        return cls(
            pairs, event_time[by_time], batch_stats.utc_values(predictions[SCORED_AT_COLUMN])[by_time],
            predictions[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64)[by_time],
            {str(run): order[starts[i]:starts[i + 1]] for i, run in enumerate(runs)}, k, by_time,
        )

    def _confusion(self, pairs: np.ndarray) -> np.ndarray:
        k = self.classes
        return np.bincount(pairs[pairs >= 0], minlength=k * k).reshape(k, k)

    def matrices(self, rows: np.ndarray, run: BatchRun) -> dict[str, np.ndarray]:
        """The confusion matrices of the run whose rows are ``rows``, as
        :func:`batch.confusion_windows` makes them of :func:`batch.prediction_codes` of its
        rows and its history (every other row scored no later than its last one): the
        rolling window and the since-promotion rows are those of that set with an event
        time in the window, or before the as-of end and of the run's model version."""
        scored = self.scored_at[rows]
        scored = scored[~np.isnat(scored)]
        end = int(np.searchsorted(self.event_time, run.as_of_end.to_datetime64(), side="left"))
        start = int(np.searchsorted(self.event_time, (run.as_of_end - pd.Timedelta(days=run.rolling_days)).to_datetime64(),
                                    side="left"))
        # Of the rows before the as-of end, those the run had seen: scored no later than it
        # (its served rows keep their requests' times), and its own.
        if run.scored_through is not None:
            seen = self.scored_at[:end] <= run.scored_through.tz_convert(None).to_datetime64()
        else:
            seen = self.scored_at[:end] <= scored.max() if len(scored) else np.zeros(end, dtype=bool)
        seen[rows[rows < end]] = True
        return {
            "batch": self._confusion(self.pairs[rows]),
            "rolling": self._confusion(self.pairs[start:end][seen[start:]]),
            "since_promotion": self._confusion(self.pairs[:end][seen & (self.versions[:end] == run.model_version)]),
        }


def realized_figures(
    spec: DatasetSpec, predictions: pd.DataFrame, run: BatchRun, features: pd.DataFrame | None = None,
    arrays: PredictionArrays | None = None,
) -> RealizedFigures | None:
    """The run's label-dependent figures from ``predictions`` (``None`` when the run has no
    predictions rows), computed as batch inference computes them (its rows and the
    history it had, :meth:`PredictionArrays.matrices`; :func:`batch.accuracy_metrics`,
    :func:`batch.class_metrics`); with ``features`` (the feature group's rows) and the
    run's slice plan, its slice table (:func:`slices.slice_table`: the realized part
    follows the labels, the estimated part is the one the probabilities gave,
    recalibrated as the run's estimate was). ``arrays``: :meth:`PredictionArrays.of` the
    predictions, when made once for many runs."""
    arrays = arrays if arrays is not None else PredictionArrays.of(spec, predictions)
    rows = arrays.rows_by_run.get(run.run_id)
    if rows is None or not len(rows):
        return None
    matrices = arrays.matrices(rows, run)
    accuracy = batch_stats.accuracy_metrics(matrices, len(rows), None)
    per_class = batch_stats.class_metrics(spec, matrices, class_keys_of(spec))
    names = realized_metric_names(spec)
    metrics = {k: float(v) for k, v in {**accuracy.metrics, **per_class.metrics}.items()
               if k in names and not math.isnan(float(v))}
    metrics[registry.LABELLED_SHARE_METRIC] = metrics[registry.ROWS_LABELLED_METRIC] / len(rows)
    tables = {label: evaluation.table_from_matrix(matrix, list(spec.classes))
              for label, matrix in matrices.items() if matrix.sum()}
    notes = tuple(accuracy.notes + per_class.notes)
    if run.slices is None or features is None:
        return RealizedFigures(run.run_id, metrics, tables, notes=notes)
    table = slice_stats.slice_table(spec, run.slices, predictions.iloc[np.sort(arrays.positions[rows])], features, run.recalibration)
    metrics.update(slice_stats.worst_slice_metrics(table))
    return RealizedFigures(run.run_id, metrics, tables, table.to_json(), notes)


LABEL_NOTE_STARTS = ("batch accuracy not computed", *(f"{label} per-class metrics not computed"
                                                      for label in batch_stats.CLASS_METRIC_WINDOWS),
                     *(f"{label} {batch_stats.UNDEFINED_NOTE}" for label in batch_stats.CLASS_METRIC_WINDOWS))
"""How the notes of label-dependent figures start (:func:`batch_stats.accuracy_metrics`,
:func:`batch_stats.class_metrics`)."""


def is_label_note(note: str) -> bool:
    """A note about a figure labels can make computable (it changes when labels arrive)."""
    return note.startswith(LABEL_NOTE_STARTS)


def updated_notes(logged: str | None, figures: RealizedFigures) -> str | None:
    """The run's :data:`registry.NOT_COMPUTED_TAG` with its label-dependent notes replaced
    by ``figures``' (``None``: unchanged)."""
    kept = [n for n in (logged or "").split(registry.MESSAGE_SEPARATOR) if n and not is_label_note(n)]
    new = registry.MESSAGE_SEPARATOR.join([*figures.notes, *kept])[:4000]
    return None if new == (logged or "") else new


def figures_by_run(
    spec: DatasetSpec, predictions: pd.DataFrame, runs: Iterable[BatchRun], features: pd.DataFrame | None = None,
) -> dict[str, RealizedFigures]:
    """:func:`realized_figures` of every run that has predictions rows (the predictions'
    arrays and the features' index made once, not once a run)."""
    out = {}
    if features is not None:
        features = slice_stats.features_by_key(spec, features)
    arrays = PredictionArrays.of(spec, predictions)
    for run in runs:
        figures = realized_figures(spec, predictions, run, features, arrays)
        if figures is not None:
            out[run.run_id] = figures
    return out


def _same(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def plan_run_update(
    spec: DatasetSpec, figures: RealizedFigures, logged: Mapping[str, float], logged_digest: str | None,
    logged_notes: str | None = None,
) -> RunUpdate | None:
    """What to log on the run so that it shows ``figures``; ``None`` when its digest says
    it does already. ``logged``: the run's metrics as MLflow shows them (latest values).

    A figure that cannot be computed any more (labels removed through the store) is
    logged as NaN rather than left showing a value its rows no longer support; one that
    was never logged stays absent (a batch without labels has no accuracy, not a 0)."""
    if logged_digest == figures.digest:
        return None
    metrics: dict[str, float] = {}
    changed = []
    slice_metrics = {registry.WORST_SLICE_ACCURACY_METRIC} if figures.slices is not None else set()
    for name in sorted(realized_metric_names(spec) | slice_metrics):
        want, have = figures.metrics.get(name), logged.get(name)
        if want is None:
            if have is not None and not math.isnan(have):
                metrics[name] = math.nan
                changed.append(name)
        elif have is None or not _same(want, have):
            metrics[name] = want
            changed.append(name)
    metrics.setdefault(registry.ROWS_LABELLED_METRIC, figures.metrics[registry.ROWS_LABELLED_METRIC])
    tags = slice_stats.worst_slice_tags(slice_stats.SliceTable.from_json(figures.slices)) if figures.slices else {}
    notes = updated_notes(logged_notes, figures)
    if notes is not None:  # "batch accuracy not computed: no labelled rows" no more, once they arrived
        tags[registry.NOT_COMPUTED_TAG] = notes
    return RunUpdate(figures.run_id, metrics, figures.tables, figures.digest, changed, figures.slices, tags)
