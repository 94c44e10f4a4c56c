"""Every number a monitoring run logs about a scored batch, as plain functions that return
dataclasses (the calculation half of the calculation/rendering split; the job
``serverless_ml.pipelines.infer`` reads the rows, calls :func:`batch_statistics`, logs
and writes).

The steps, each on arrays of class codes rather than copies of the predictions (a batch
of a million rows costs a few array passes):

- :func:`prediction_codes`: the predictions so far and the batch as class codes, event
  times and model versions;
- :func:`confusion_windows`: the confusion matrices of the batch, the rolling window and
  the champion's time since promotion;
- :func:`accuracy_metrics` and :func:`class_metrics`: accuracy (with the batch's Wilson
  interval) and per-class precision/recall/F1 of those windows;
- :func:`drift_statistics`: the drift windows (:func:`serverless_ml.inference.drift.drift_windows`)
  and each feature's drift in them;
- :func:`class_share_metrics`: predicted and training class shares;
- :func:`estimated_metrics`: the batch's accuracy and per-class figures estimated from the
  champion's probabilities (:mod:`serverless_ml.inference.estimate`), for the time its
  labels are missing, and the rolling window's estimated accuracy;
- :func:`alert_decision`: the alert rule (:func:`serverless_ml.inference.monitoring.evaluate_alerts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from serverless_ml import registry
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.inference import drift as drift_stats
from serverless_ml.inference import estimate, monitoring
from serverless_ml.inference import slices as slice_stats
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN, KeySet, probability_columns
from serverless_ml.training import evaluation

CONFUSION_WINDOWS = ("batch", "rolling", "since_promotion")
"""The confusion matrices of a batch (:func:`registry.confusion_artifact` names their files)."""
CLASS_METRIC_WINDOWS = ("batch", "rolling")
"""The windows whose per-class metrics are logged (:func:`registry.window_metric_prefix`)."""


class ChampionFacts(Protocol):
    """What the statistics need of the scoring champion (the job's ``Champion`` has it)."""

    @property
    def version(self) -> int: ...
    @property
    def holdout_accuracy(self) -> float | None: ...
    @property
    def reference_rows(self) -> pd.DataFrame | None: ...
    @property
    def drift_reference(self) -> drift_stats.DriftReference | None: ...


@dataclass
class BatchStatistics:
    """What a monitoring run logs: metrics, confusion tables, drift, the latest row,
    alerts, and what could not be computed (``notes``)."""

    metrics: dict[str, float]
    tables: dict[str, dict[str, Any]]
    drift: list[drift_stats.FeatureDrift]
    drift_basis: str
    latest: dict[str, Any]
    alerts: monitoring.Alerts
    notes: list[str]
    drift_window: str = ""
    drift_window_rolling: str = ""
    accuracy_basis: str = "none"
    """What the batch's accuracy alert was judged on (:data:`registry.ACCURACY_BASIS_TAG`)."""
    slices: slice_stats.SliceTable | None = None
    """Accuracy per slice of the batch (:func:`attach_slices`)."""


@dataclass(frozen=True)
class PredictionCodes:
    """The predictions so far followed by the batch's, as arrays (one entry per row)."""

    batch_actual: np.ndarray
    batch_predicted: np.ndarray
    actual: np.ndarray
    predicted: np.ndarray
    event_time: np.ndarray
    """UTC ``datetime64[ns]``."""
    versions: np.ndarray
    keys: np.ndarray
    confidence: np.ndarray | None = None
    """Each row's probability of its predicted class (``None`` when a frame lacks it)."""


@dataclass
class Computed:
    """Metrics of one step, and why what it could not compute was not computed."""

    metrics: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class DriftStatistics:
    """The drift of a batch: each feature's figures, on what it was judged, the metrics."""

    results: list[drift_stats.FeatureDrift] = field(default_factory=list)
    basis: str = "none"
    window_label: str = ""
    rolling_label: str = ""
    computed: Computed = field(default_factory=Computed)


def utc_values(series: pd.Series) -> np.ndarray:
    """Event times as UTC ``datetime64[ns]`` values (comparable across frames)."""
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    return series.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def count_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(days, return_counts=True)`` of ``datetime64[D]`` values, by counting
    (a chunk of event times spans a few days: a tenth of the time of sorting it)."""
    days = np.asarray(days, dtype="datetime64[D]")
    if not days.size or np.isnat(days).any():
        return np.unique(days, return_counts=True)
    numbers = days.view(np.int64)
    first = int(numbers.min())
    if int(numbers.max()) - first > 4 * days.size + 1024:  # a sparse span: sorting is cheaper
        return np.unique(days, return_counts=True)
    counts = np.bincount(numbers - first)
    present = np.flatnonzero(counts)
    return (present + first).astype("datetime64[D]"), counts[present]


def prediction_codes(spec: DatasetSpec, scored: pd.DataFrame, history: pd.DataFrame) -> PredictionCodes:
    """The predictions so far (``history``) and the batch (``scored``) as class codes."""
    lookup = pd.Index(list(spec.classes))
    batch_actual = evaluation.class_codes(scored["actual"], lookup)
    batch_predicted = evaluation.class_codes(scored["prediction"], lookup)
    batch_confidence = _confidence(scored)
    if history.empty:
        return PredictionCodes(
            batch_actual, batch_predicted, batch_actual, batch_predicted, utc_values(scored[EVENT_TIME_COLUMN]),
            scored[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64), scored[spec.primary_key].to_numpy(),
            batch_confidence,
        )
    history_confidence = _confidence(history)
    confidence = (None if batch_confidence is None or history_confidence is None
                  else np.concatenate([history_confidence, batch_confidence]))
    return PredictionCodes(
        batch_actual, batch_predicted,
        np.concatenate([evaluation.class_codes(history["actual"], lookup), batch_actual]),
        np.concatenate([evaluation.class_codes(history["prediction"], lookup), batch_predicted]),
        np.concatenate([utc_values(history[EVENT_TIME_COLUMN]), utc_values(scored[EVENT_TIME_COLUMN])]),
        np.concatenate([history[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64), scored[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64)]),
        np.concatenate([history[spec.primary_key].to_numpy(), scored[spec.primary_key].to_numpy()]),
        confidence,
    )


def _confidence(frame: pd.DataFrame) -> np.ndarray | None:
    """The ``probability`` column (of the predicted class) as floats, when the frame has it."""
    return frame["probability"].to_numpy(dtype=float) if "probability" in frame.columns else None


def confusion_windows(
    codes: PredictionCodes, n_classes: int, champion_version: int, as_of_end: pd.Timestamp, rolling_days: int
) -> dict[str, np.ndarray]:
    """The confusion matrices of :data:`CONFUSION_WINDOWS`: the batch; the rolling window
    (rows of the ``rolling_days`` days up to the end of the as-of date: a row of the next
    day at midnight is not in it, the same bound as ``select_new_rows``); the champion's
    rows since its promotion, also up to the batch (days added later for earlier dates
    must not count rows of later days)."""
    end = as_of_end.to_datetime64()
    rolling_start = (as_of_end - pd.Timedelta(days=rolling_days)).to_datetime64()
    in_rolling = (codes.event_time >= rolling_start) & (codes.event_time < end)
    since_promotion = (codes.versions == champion_version) & (codes.event_time < end)
    return {
        "batch": evaluation.confusion_from_codes(codes.batch_actual, codes.batch_predicted, n_classes),
        "rolling": evaluation.confusion_from_codes(codes.actual, codes.predicted, n_classes, in_rolling),
        "since_promotion": evaluation.confusion_from_codes(codes.actual, codes.predicted, n_classes, since_promotion),
    }


def matrix_accuracy(matrix: np.ndarray) -> tuple[float, int]:
    """The accuracy of a confusion matrix (NaN when empty) and its rows."""
    total = int(matrix.sum())
    return (float(np.trace(matrix)) / total if total else math.nan), total


def accuracy_metrics(matrices: dict[str, np.ndarray], rows_scored: int, holdout_accuracy: float | None) -> Computed:
    """Rows scored and labelled, the batch's accuracy and its Wilson interval, the
    rolling and cumulative accuracy and rows, and the champion's holdout accuracy."""
    out = Computed({registry.ROWS_SCORED_METRIC: float(rows_scored)})
    batch_accuracy, labelled = matrix_accuracy(matrices["batch"])
    out.metrics[registry.ROWS_LABELLED_METRIC] = float(labelled)
    if rows_scored:
        out.metrics[registry.LABELLED_SHARE_METRIC] = labelled / rows_scored
    if labelled:
        low, high = monitoring.wilson_interval(int(np.trace(matrices["batch"])), labelled)
        out.metrics.update({registry.BATCH_ACCURACY_METRIC: batch_accuracy, registry.BATCH_ACCURACY_CI_LOW_METRIC: low,
                            registry.BATCH_ACCURACY_CI_HIGH_METRIC: high})
    else:
        out.notes.append("batch accuracy not computed: no labelled rows")
    rolling_accuracy, rolling_rows = matrix_accuracy(matrices["rolling"])
    cumulative_accuracy, cumulative_rows = matrix_accuracy(matrices["since_promotion"])
    out.metrics.update({registry.ROLLING_ROWS_METRIC: float(rolling_rows),
                        registry.CUMULATIVE_ROWS_METRIC: float(cumulative_rows)})
    if rolling_rows:
        out.metrics[registry.ROLLING_ACCURACY_METRIC] = rolling_accuracy
    if cumulative_rows:
        out.metrics[registry.CUMULATIVE_ACCURACY_METRIC] = cumulative_accuracy
    if holdout_accuracy is not None:
        out.metrics[registry.CHAMPION_HOLDOUT_ACCURACY_METRIC] = holdout_accuracy
    return out


def class_metrics(spec: DatasetSpec, matrices: dict[str, np.ndarray], class_keys: list[str]) -> Computed:
    """Per-class metrics of :data:`CLASS_METRIC_WINDOWS` holding at least
    ``MIN_ROWS_FOR_CLASS_METRICS`` labelled rows (their accuracy is logged by
    :func:`accuracy_metrics`)."""
    out = Computed()
    for label in CLASS_METRIC_WINDOWS:
        known = int(matrices[label].sum())
        if known < monitoring.MIN_ROWS_FOR_CLASS_METRICS:
            out.notes.append(f"{label} per-class metrics not computed: {known} labelled rows < {monitoring.MIN_ROWS_FOR_CLASS_METRICS}")
            continue
        prefix = registry.window_metric_prefix(label)
        per_class = evaluation.metrics_from_confusion(matrices[label], list(spec.classes), prefix=prefix,
                                                      positive_class=spec.positive_class, class_keys=class_keys)
        out.metrics.update({k: v for k, v in per_class.items() if k != f"{prefix}accuracy"})
        undefined = evaluation.undefined_figures(matrices[label], list(spec.classes), _class_names(spec))
        if undefined:
            out.notes.append(f"{label} {UNDEFINED_NOTE}: {undefined}")
    return out


UNDEFINED_NOTE = "figures not computed"
"""How a window's note on the per-class figures it has no denominator for goes on (after
the window's name: ``batch figures not computed: precision of 'b' (predicted for no row)``)."""


def _class_names(spec: DatasetSpec) -> list[str]:
    return [spec.class_name(c) for c in spec.classes]


def day_range(first: np.datetime64, last: np.datetime64) -> str:
    """``first..last``, or one day."""
    return str(first) if first == last else f"{first}..{last}"


def as_of_day(as_of_end: pd.Timestamp) -> np.datetime64:
    """The last day a batch covers: its as-of date, or today for a batch scored up to now."""
    return (as_of_end - pd.Timedelta(microseconds=1)).to_datetime64().astype("datetime64[D]")


def drift_not_computed(drift_reference: object, event_days: np.ndarray, last_day: np.datetime64, rolling_days: int) -> str:
    """Why drift was not computed: too few recent rows, or too few reference rows."""
    recent = int(drift_stats.in_lookback(event_days, last_day, rolling_days).sum()) if drift_reference is not None else 0
    return drift_not_computed_of(drift_reference, recent, rolling_days)


def drift_not_computed_of(drift_reference: object, recent: int, rolling_days: int) -> str:
    """:func:`drift_not_computed` given the rows of the last ``rolling_days`` days (``recent``)."""
    if drift_reference is None:
        return f"drift not computed: the champion's training rows are fewer than {drift_stats.MIN_ROWS}"
    return f"drift not computed: {recent} rows in the last {rolling_days} days, fewer than {drift_stats.MIN_ROWS}"


def drift_statistics(
    spec: DatasetSpec,
    codes: PredictionCodes,
    scored: pd.DataFrame,
    features: pd.DataFrame,
    drift_reference: drift_stats.DriftReference | None,
    as_of_end: pd.Timestamp,
    rolling_days: int,
    rule: monitoring.AlertRule,
    batch_features: pd.DataFrame | None = None,
) -> DriftStatistics:
    """The drift of a batch: the newest days pooled until they are enough (``recent``),
    and the rolling window when it holds more (:func:`drift.drift_windows`), each
    compared with the champion's reference rows. ``batch_features`` (the batch's feature
    rows) saves looking them up in ``features`` when the recent window is the batch."""
    event_days = codes.event_time.astype("datetime64[D]")
    last_day = as_of_day(as_of_end)
    chosen = drift_stats.drift_windows(event_days, last_day, lookback_days=rolling_days)
    if chosen is None or drift_reference is None:
        return DriftStatistics(computed=Computed(notes=[drift_not_computed(drift_reference, event_days, last_day, rolling_days)]))
    out = DriftStatistics(computed=Computed())
    window_keys = pd.unique(codes.keys[chosen.recent])
    batch_keys = scored[spec.primary_key]
    only_batch = len(window_keys) == len(batch_keys) and bool(batch_keys.isin(window_keys).all())
    out.basis = "batch" if only_batch else "window"
    current = batch_features if batch_features is not None and only_batch else features[features[spec.primary_key].isin(window_keys)]
    out.window_label = day_range(chosen.recent_first_day, last_day)
    windows = [("recent", current)]
    metrics = out.computed.metrics
    if chosen.rolling is not None and chosen.rolling_first_day is not None:  # (set together)
        rolling_current = features[features[spec.primary_key].isin(pd.unique(codes.keys[chosen.rolling]))]
        windows.append(("rolling", rolling_current))
        metrics[registry.DRIFT_ROWS_ROLLING_METRIC] = float(len(rolling_current))
        out.rolling_label = day_range(chosen.rolling_first_day, last_day)
    out.results = drift_reference.compare_windows(windows, rule.drift_p_value, rule.drift_min_effect)
    metrics.update(feature_drift_metrics(out.results))
    metrics[registry.DRIFT_SHARE_METRIC] = float(np.mean([d.drifted for d in out.results]))
    metrics[registry.DRIFT_ROWS_METRIC] = float(len(current))
    metrics[registry.DRIFT_WINDOW_DAYS_METRIC] = float((last_day - chosen.recent_first_day).astype(int) + 1)
    return out


def feature_drift_metrics(results: list[drift_stats.FeatureDrift]) -> dict[str, float]:
    """Each feature's p-value, adjusted p-value, effect size and PSI as metrics."""
    metrics: dict[str, float] = {}
    for item in results:
        key = evaluation.metric_key(item.feature)
        metrics[registry.DRIFT_P_PREFIX + key] = item.p_value
        metrics[registry.DRIFT_PADJ_PREFIX + key] = item.p_adjusted
        metrics[registry.DRIFT_EFFECT_PREFIX + key] = item.effect
        metrics[registry.DRIFT_PSI_PREFIX + key] = item.psi
    return metrics


def class_share_metrics(
    spec: DatasetSpec, batch_predicted: np.ndarray, rows_scored: int, reference: pd.DataFrame | None, class_keys: list[str]
) -> dict[str, float]:
    """Each class's share of the batch's predictions and of the champion's reference rows."""
    predicted_counts = np.bincount(batch_predicted[batch_predicted >= 0], minlength=len(spec.classes))
    return class_share_of_counts(spec, predicted_counts, rows_scored, reference, class_keys)


def class_share_of_counts(
    spec: DatasetSpec, predicted_counts: np.ndarray, rows_scored: int, reference: pd.DataFrame | None, class_keys: list[str]
) -> dict[str, float]:
    """:func:`class_share_metrics` of the batch's predictions counted per class."""
    classes = list(spec.classes)
    train_labels = reference[spec.label] if reference is not None else pd.Series(dtype=object)
    training_shares = drift_stats.class_shares(train_labels, classes)
    metrics: dict[str, float] = {}
    for i, (cls, key) in enumerate(zip(classes, class_keys, strict=True)):
        metrics[registry.class_metric(registry.PREDICTED_SHARE_STEM, key)] = float(predicted_counts[i]) / max(rows_scored, 1)
        metrics[registry.class_metric(registry.TRAINING_SHARE_STEM, key)] = training_shares[cls]
    return metrics


ROLLING_CONFIDENCE_GRID = 10_000
"""The rolling window's confidences are counted on a grid of this many steps (a
recalibrated window's estimate needs each row's confidence, and the history streams by
before the recalibration is fitted); the estimate is then exact to ``1 / (2 * GRID)``."""


def confidence_counts(confidence: np.ndarray) -> np.ndarray:
    """How many of the (finite) confidences fall on each point of the grid of
    :data:`ROLLING_CONFIDENCE_GRID` steps (nearest point)."""
    c = np.asarray(confidence, dtype=float)
    c = c[np.isfinite(c)]
    return np.bincount(np.rint(np.clip(c, 0.0, 1.0) * ROLLING_CONFIDENCE_GRID).astype(np.int64),
                       minlength=ROLLING_CONFIDENCE_GRID + 1)


def rolling_estimate(counts: np.ndarray, exact_sum: float, rows: int, recalibration: estimate.Recalibration) -> float | None:
    """The rolling window's estimated accuracy: the mean of its confidences mapped through
    ``recalibration`` (the exact mean when it is the identity; from the grid's ``counts``
    otherwise); ``None`` when the window has no row."""
    if not rows:
        return None
    if recalibration.identity:
        return exact_sum / rows
    grid = np.arange(ROLLING_CONFIDENCE_GRID + 1) / ROLLING_CONFIDENCE_GRID
    return float(counts @ recalibration.apply(grid)) / rows


def labelled_before(actual: np.ndarray, versions: np.ndarray, event_time: np.ndarray, confidence: np.ndarray,
                    champion_version: int, as_of_end: pd.Timestamp) -> np.ndarray:
    """Which predictions made before a batch (their actual class codes, model versions,
    UTC event times and confidences) its estimate is recalibrated on: the champion's,
    labelled, with a confidence, before the end of the as-of date."""
    return ((actual >= 0) & (versions == champion_version) & (event_time < as_of_end.to_datetime64())
            & np.isfinite(confidence))


def estimated_metrics(
    spec: DatasetSpec, scored: pd.DataFrame, codes: PredictionCodes, as_of_end: pd.Timestamp, rolling_days: int,
    class_keys: list[str], champion_version: int,
) -> tuple[Computed, estimate.AccuracyEstimate | None, estimate.Recalibration]:
    """The batch's accuracy estimated from the champion's probabilities with the interval
    of the accuracy its rows will realise, recalibrated on the champion's labelled
    predictions so far (:class:`estimate.Recalibration`), estimated per-class
    precision/recall/F1 (from :data:`monitoring.MIN_ROWS_FOR_CLASS_METRICS` rows; the
    expected confusion matrix of the recalibrated probabilities,
    :func:`estimate.expected_confusion`), and the rolling window's estimated accuracy
    (every scored row of the window, labelled or not, recalibrated as the batch); and the
    recalibration (the slice table's estimates use it too)."""
    out = Computed()
    columns = probability_columns(spec.classes)
    if codes.confidence is None or any(c not in scored.columns for c in columns):
        out.notes.append("estimated accuracy not computed: the predictions have no class probabilities")
        return out, None, estimate.Recalibration()
    history = slice(0, len(codes.actual) - len(scored))
    actual, predicted, event_time, confidence = (codes.actual[history], codes.predicted[history],
                                                 codes.event_time[history], codes.confidence[history])
    known = labelled_before(actual, codes.versions[history], event_time, confidence, champion_version, as_of_end)
    tail = estimate.LabelledTail()
    tail.add(event_time[known], confidence[known], actual[known] == predicted[known])
    recalibration = tail.fit(len(scored))
    # Each row's g once, for the estimate and the expected confusion matrix, as a chunk of the streamed path.
    mapped, total, spread, gradient = recalibration.mapped_sums(codes.confidence[-len(scored):])
    found = estimate.estimate_from_sums(total, spread, len(scored), fit_variance=recalibration.sum_variance(gradient))
    expected = estimate.expected_confusion(scored[columns].to_numpy(dtype=float), codes.batch_predicted,
                                           None if recalibration.identity else mapped)
    end = as_of_end.to_datetime64()
    in_rolling = (codes.event_time >= (as_of_end - pd.Timedelta(days=rolling_days)).to_datetime64()) & (codes.event_time < end)
    window = codes.confidence[in_rolling]
    rolling = rolling_estimate(confidence_counts(window), float(window.sum()), int(in_rolling.sum()), recalibration)
    return estimated_figures(spec, found, expected, rolling, class_keys, recalibration), found, recalibration


def estimated_figures(
    spec: DatasetSpec, found: estimate.AccuracyEstimate, expected: np.ndarray, rolling: float | None,
    class_keys: list[str], recalibration: estimate.Recalibration,
) -> Computed:
    """The estimated metrics of a batch from its estimate, its expected confusion matrix,
    the rolling window's estimated accuracy (``None``: no row in the window) and the
    recalibration the estimates used: the one ending of :func:`estimated_metrics` and
    :func:`estimated_of_totals`."""
    out = Computed({registry.ESTIMATED_ACCURACY_METRIC: found.accuracy,
                    registry.ESTIMATED_ACCURACY_CI_LOW_METRIC: found.low,
                    registry.ESTIMATED_ACCURACY_CI_HIGH_METRIC: found.high,
                    registry.ESTIMATE_RECALIBRATION_ROWS_METRIC: float(recalibration.rows)})
    if not recalibration.identity:
        out.metrics[registry.ESTIMATE_RECALIBRATION_A_METRIC] = recalibration.a
        out.metrics[registry.ESTIMATE_RECALIBRATION_B_METRIC] = recalibration.b
    if found.rows >= monitoring.MIN_ROWS_FOR_CLASS_METRICS:
        per_class = evaluation.metrics_from_confusion(expected, list(spec.classes), registry.ESTIMATED_PREFIX,
                                                      positive_class=spec.positive_class, class_keys=class_keys)
        out.metrics.update({k: v for k, v in per_class.items() if k != registry.ESTIMATED_ACCURACY_METRIC})
        undefined = evaluation.undefined_figures(expected, list(spec.classes), _class_names(spec))
        if undefined:
            out.notes.append(f"estimated {UNDEFINED_NOTE}: {undefined}")
    else:
        out.notes.append(f"estimated per-class metrics not computed: {found.rows} rows < {monitoring.MIN_ROWS_FOR_CLASS_METRICS}")
    if rolling is not None:
        out.metrics[registry.ROLLING_ESTIMATED_ACCURACY_METRIC] = rolling
    return out


def accuracy_basis(labelled: int, rows_scored: int, estimated: estimate.AccuracyEstimate | None) -> str:
    """``realized`` when every row of the batch is labelled, ``estimated`` when some are not
    and an estimate exists, else ``none``."""
    if rows_scored and labelled == rows_scored:
        return "realized"
    return "estimated" if estimated is not None else "none"


def alert_decision(
    rule: monitoring.AlertRule, holdout_accuracy: float | None, matrices: dict[str, np.ndarray],
    drift: DriftStatistics, drift_share: float | None, estimated: estimate.AccuracyEstimate | None = None,
) -> monitoring.Alerts:
    """The alert rule on the batch's and the rolling window's accuracy and the drift
    (each drifted feature named with the window it drifted on). A batch with rows whose
    label is missing is judged on ``estimated`` (when given) instead of its labelled rows."""
    where = {"recent": f"recent days {drift.window_label}", "rolling": f"rolling window {drift.rolling_label}"}
    drifted = [f"{d.feature} on the {where.get(d.window, d.window)}" for d in drift.results if d.drifted]
    labelled = int(matrices["batch"].sum())
    use_estimate = estimated is not None and labelled < estimated.rows
    batch_correct, batch_labelled = (0, 0) if use_estimate else (int(np.trace(matrices["batch"])), labelled)
    return monitoring.evaluate_alerts(
        rule, holdout_accuracy, batch_correct, batch_labelled,
        int(np.trace(matrices["rolling"])), int(matrices["rolling"].sum()), drift_share, drifted,
        estimated=(estimated.accuracy, estimated.low, estimated.high, estimated.rows - labelled)
        if use_estimate and estimated is not None else None,
    )


def batch_statistics(
    spec: DatasetSpec,
    scored: pd.DataFrame,
    history: pd.DataFrame,
    features: pd.DataFrame,
    champion: ChampionFacts,
    as_of_end: pd.Timestamp,
    rolling_days: int,
    rule: monitoring.AlertRule,
    batch_features: pd.DataFrame | None = None,
) -> BatchStatistics:
    """Every number the monitoring run of batch ``scored`` logs, from the batch and the
    predictions so far (``history``), judged against ``champion``.

    ``features``: the feature group's rows (the drift windows' rows are looked up in it);
    ``batch_features`` (the batch's feature rows) saves looking them up.
    """
    class_keys = evaluation.class_metric_keys(list(spec.classes), spec.class_names)
    codes = prediction_codes(spec, scored, history)
    matrices = confusion_windows(codes, len(spec.classes), champion.version, as_of_end, rolling_days)
    accuracy = accuracy_metrics(matrices, len(scored), champion.holdout_accuracy)
    per_class = class_metrics(spec, matrices, class_keys)
    drift = drift_statistics(spec, codes, scored, features, champion.drift_reference, as_of_end, rolling_days, rule,
                             batch_features)
    estimated, found, recalibration = estimated_metrics(spec, scored, codes, as_of_end, rolling_days, class_keys,
                                                        champion.version)
    shares = class_share_metrics(spec, codes.batch_predicted, len(scored), champion.reference_rows, class_keys)
    stats = assemble_statistics(spec, matrices, [accuracy, per_class, estimated], drift, shares, found,
                                monitoring.latest_row(scored, spec.primary_key), len(scored), champion, rule)
    rows = batch_features if batch_features is not None else features[features[spec.primary_key].isin(scored[spec.primary_key])]
    plan = slice_stats.plan_slices(spec, champion.reference_rows)
    return attach_slices(stats, slice_stats.slice_table(spec, plan, scored, rows, recalibration))


def attach_slices(stats: BatchStatistics, table: slice_stats.SliceTable) -> BatchStatistics:
    """``stats`` with the batch's slice table, the worst slice's accuracy as a metric
    (:data:`registry.WORST_SLICE_ACCURACY_METRIC`) and the table's notes."""
    stats.slices = table
    stats.metrics.update(slice_stats.worst_slice_metrics(table))
    stats.notes += list(table.notes)
    return stats


def assemble_statistics(
    spec: DatasetSpec, matrices: dict[str, np.ndarray], parts: list[Computed], drift: DriftStatistics,
    shares: dict[str, float], found: estimate.AccuracyEstimate | None, latest: dict[str, Any], rows: int,
    champion: ChampionFacts, rule: monitoring.AlertRule,
) -> BatchStatistics:
    """The :class:`BatchStatistics` of computed parts (accuracy, per-class, estimated), the
    drift, the class shares and the latest row, with the alert decision: the one ending of
    :func:`batch_statistics` and :func:`streamed_statistics`."""
    metrics: dict[str, float] = {}
    for part in parts:
        metrics.update(part.metrics)
    metrics.update(drift.computed.metrics)
    metrics.update(shares)
    metrics[registry.LATEST_PROBABILITY_METRIC] = float(latest["probability"])
    alerts = alert_decision(rule, champion.holdout_accuracy, matrices, drift, metrics.get(registry.DRIFT_SHARE_METRIC),
                            found)
    metrics[registry.ALERT_ACCURACY] = float(alerts.accuracy)
    metrics[registry.ALERT_DRIFT] = float(alerts.drift)
    tables = {label: evaluation.table_from_matrix(matrix, list(spec.classes)) for label, matrix in matrices.items() if matrix.sum()}
    notes = [note for part in parts for note in part.notes] + drift.computed.notes
    return BatchStatistics(metrics, tables, drift.results, drift.basis, latest, alerts, notes,
                           drift.window_label, drift.rolling_label,
                           accuracy_basis(int(matrices["batch"].sum()), rows, found))


# --- the same statistics over a batch that streams by in chunks ------------------------------


def _window_masks(
    event_time: np.ndarray, versions: np.ndarray, champion_version: int, as_of_end: pd.Timestamp, rolling_days: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Which rows are in the rolling window and in the champion's time since promotion
    (the masks of :func:`confusion_windows`)."""
    end = as_of_end.to_datetime64()
    rolling_start = (as_of_end - pd.Timedelta(days=rolling_days)).to_datetime64()
    in_rolling = (event_time >= rolling_start) & (event_time < end)
    return in_rolling, (versions == champion_version) & (event_time < end)


@dataclass
class BatchTotals:
    """Running totals of a batch's statistics, fed chunk by chunk: the predictions so far
    (:meth:`add_history`) and the batch's scored rows (:meth:`add_batch`). What
    :func:`batch_statistics` computes from arrays of every row, kept as counts and sums, so
    memory does not grow with the rows (:func:`streamed_statistics` turns them into the
    run's figures)."""

    classes: list[Any]
    champion_version: int
    as_of_end: pd.Timestamp
    rolling_days: int
    matrices: dict[str, np.ndarray] = field(init=False)
    rows: int = 0
    confidence_sum: float = 0.0
    confidence_spread: float = 0.0
    """Sum of ``p (1 - p)`` over the batch's confidences (the estimate's variance)."""
    expected: np.ndarray = field(init=False)
    """The batch's expected confusion matrix (:func:`estimate.expected_confusion`)."""
    predicted_counts: np.ndarray = field(init=False)
    probabilities: bool = True
    """Whether every frame had the class probabilities (else nothing is estimated)."""
    rolling_confidence_sum: float = 0.0
    rolling_confidence_rows: int = 0
    rolling_confidence_counts: np.ndarray = field(init=False)
    """The rolling window's confidences on a grid (:func:`confidence_counts`)."""
    labelled: estimate.LabelledTail = field(default_factory=estimate.LabelledTail)
    """The champion's latest labelled predictions so far (:meth:`add_history`), which the
    batch's estimate is recalibrated on."""
    recalibration: estimate.Recalibration | None = None
    """Fitted on ``labelled`` when the first chunk of the batch arrives (then fixed)."""
    batch_rows: int = 0
    """The batch's rows, when counted before it is scored (how many labelled rows the
    recalibration reads: :func:`estimate.recalibration_rows`)."""
    gradient_sums: np.ndarray = field(init=False)
    """The batch's gradient sums (:meth:`estimate.Recalibration.sums`, for the interval)."""
    latest: dict[str, Any] | None = None
    day_counts: dict[np.datetime64, int] = field(default_factory=dict)
    """Rows scored per event day (history and batch), for the drift windows."""
    history_days: dict[np.datetime64, int] = field(default_factory=dict)
    """The history's share of ``day_counts``."""
    slices: slice_stats.SliceTotals | None = None
    """The batch's per-slice counts (fed by :meth:`add_batch` given the feature rows)."""

    def __post_init__(self) -> None:
        k = len(self.classes)
        self.matrices = {label: np.zeros((k, k), dtype=np.int64) for label in CONFUSION_WINDOWS}
        self.expected = np.zeros((k, k))
        self.predicted_counts = np.zeros(k, dtype=np.int64)
        self.rolling_confidence_counts = np.zeros(ROLLING_CONFIDENCE_GRID + 1, dtype=np.int64)
        self.gradient_sums = np.zeros(2)

    def _codes(self, frame: pd.DataFrame, column: str) -> np.ndarray:
        return evaluation.class_codes(frame[column], pd.Index(self.classes))

    def _windows(self, frame: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, history: bool) -> None:
        event_time = utc_values(frame[EVENT_TIME_COLUMN])
        versions = frame[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64)
        in_rolling, since = _window_masks(event_time, versions, self.champion_version, self.as_of_end, self.rolling_days)
        k = len(self.classes)
        self.matrices["rolling"] += evaluation.confusion_from_codes(actual, predicted, k, in_rolling)
        self.matrices["since_promotion"] += evaluation.confusion_from_codes(actual, predicted, k, since)
        confidence = _confidence(frame)
        if confidence is None:
            self.probabilities = False
        elif in_rolling.any():
            self.rolling_confidence_sum += float(np.sum(confidence[in_rolling]))
            self.rolling_confidence_rows += int(in_rolling.sum())
            if history or not self.fitted_recalibration().identity:  # the identity reads the exact sum
                self.rolling_confidence_counts += confidence_counts(confidence[in_rolling])
        days, counts = count_days(event_time.astype("datetime64[D]"))
        for day, count in zip(days, counts, strict=True):
            self.day_counts[day] = self.day_counts.get(day, 0) + int(count)
            if history:
                self.history_days[day] = self.history_days.get(day, 0) + int(count)

    def add_history(self, history: pd.DataFrame) -> None:
        """Count in predictions made before the batch (the predictions group's rows)."""
        if history.empty:
            return
        assert self.recalibration is None, "the history comes before the batch"
        actual, predicted = self._codes(history, "actual"), self._codes(history, "prediction")
        self._windows(history, actual, predicted, history=True)
        self._add_labelled(history, actual, predicted)

    def add_labelled_history(self, history: pd.DataFrame) -> None:
        """Keep the labelled predictions among ``history`` for the recalibration only (a
        challenger's totals: its shadow rows recalibrate its estimate, and are no
        window's rows)."""
        if history.empty:
            return
        assert self.recalibration is None, "the history comes before the batch"
        self._add_labelled(history, self._codes(history, "actual"), self._codes(history, "prediction"))

    def _add_labelled(self, history: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray) -> None:
        confidence = _confidence(history)
        if confidence is not None:
            event_time = utc_values(history[EVENT_TIME_COLUMN])
            known = labelled_before(actual, history[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64), event_time, confidence,
                                    self.champion_version, self.as_of_end)
            if known.any():
                self.labelled.add(event_time[known], confidence[known], actual[known] == predicted[known])

    def fitted_recalibration(self) -> estimate.Recalibration:
        """The recalibration of the batch's estimate, fitted on the labelled history once."""
        if self.recalibration is None:
            self.recalibration = self.labelled.fit(self.batch_rows)
        return self.recalibration

    def add_batch(self, scored: pd.DataFrame, spec: DatasetSpec, features: pd.DataFrame | None = None) -> None:
        """Count in a chunk of the batch's predictions (:class:`scoring.ChunkScorer`'s rows)
        and, given ``features`` (the chunk's feature rows, in the same order), its slices."""
        if scored.empty:
            return
        actual, predicted = self._codes(scored, "actual"), self._codes(scored, "prediction")
        columns = probability_columns(spec.classes)
        confidence = _confidence(scored)
        mapped = None  # each row's recalibrated confidence
        if confidence is None or any(c not in scored.columns for c in columns):
            self.probabilities = False
        else:
            recalibration = self.fitted_recalibration()
            mapped, total, spread, gradient = recalibration.mapped_sums(confidence)
            self.confidence_sum += total
            self.confidence_spread += spread
            self.gradient_sums += gradient
            self.expected += estimate.expected_confusion(scored[columns].to_numpy(dtype=float), predicted,
                                                         None if recalibration.identity else mapped)
        if self.slices is not None and features is not None:
            # Recalibrated as the batch's estimate (without class probabilities: not estimated, as they are).
            self.slices.add(features, actual, predicted, confidence if mapped is None else mapped)  # by position: no index reset
        k = len(self.classes)
        self.matrices["batch"] += evaluation.confusion_from_codes(actual, predicted, k)
        self._windows(scored, actual, predicted, history=False)
        self.rows += len(scored)
        self.predicted_counts += np.bincount(predicted[predicted >= 0], minlength=k)
        candidate = monitoring.latest_row(scored, spec.primary_key)
        if self.latest is None or (candidate[EVENT_TIME_COLUMN], candidate[spec.primary_key]) > (
                self.latest[EVENT_TIME_COLUMN], self.latest[spec.primary_key]):
            self.latest = candidate

    def accuracy_estimate(self) -> estimate.AccuracyEstimate | None:
        """:func:`estimate.estimate_accuracy` of the batch's confidences, from their sums."""
        if not self.probabilities:
            return None
        recalibration = self.fitted_recalibration()
        return estimate.estimate_from_sums(self.confidence_sum, self.confidence_spread, self.rows,
                                           fit_variance=recalibration.sum_variance(self.gradient_sums))


def estimated_of_totals(spec: DatasetSpec, totals: BatchTotals, class_keys: list[str]) -> tuple[Computed, estimate.AccuracyEstimate | None]:
    """:func:`estimated_metrics` of running totals."""
    found = totals.accuracy_estimate()
    if found is None:
        return Computed(notes=["estimated accuracy not computed: the predictions have no class probabilities"]), None
    recalibration = totals.fitted_recalibration()
    rolling = rolling_estimate(totals.rolling_confidence_counts, totals.rolling_confidence_sum,
                               totals.rolling_confidence_rows, recalibration)
    return estimated_figures(spec, found, totals.expected, rolling, class_keys, recalibration), found


class DriftSample:
    """A uniform, seeded sample of at most ``cap`` rows of a window that streams by: each
    row draws a random priority and the ``cap`` smallest are kept (bottom-k sampling), so
    memory holds at most twice ``cap`` rows, and every row is equally likely to be kept
    whatever the chunks. ``seen`` counts the window's rows."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.seen = 0
        self._frames: list[pd.DataFrame] = []
        self._priorities: list[np.ndarray] = []
        self._held = 0
        self.threshold = 2.0
        """A row whose priority is not below this can no longer be kept: the largest
        priority kept by the last shrink to a full sample (the sample's cut only falls
        after it); 2.0, above every draw, before the sample was ever full."""

    def offer(self, frame: pd.DataFrame, mask: np.ndarray, columns: list[str], priorities: np.ndarray) -> None:
        """:meth:`add` the ``columns`` of ``frame``'s rows in ``mask``, copying only those
        whose priority can still be kept (the rest are counted in ``seen``): once the
        sample is full, a chunk adds a handful of rows, not all of them. The sample is the
        one :meth:`add` of every masked row would keep."""
        offered = int(mask.sum())
        if not offered:
            return
        chosen = mask & (priorities < self.threshold)
        self.add(frame.loc[chosen, columns], priorities[chosen], seen=offered)

    def add(self, rows: pd.DataFrame, priorities: np.ndarray, seen: int | None = None) -> None:
        """Offer ``rows`` with their ``priorities`` (uniform draws, one per row); ``seen``:
        how many rows of the window they stand for (more when :meth:`offer` left out rows
        that could not be kept)."""
        self.seen += len(rows) if seen is None else seen
        if rows.empty:
            return
        self._frames.append(rows)
        self._priorities.append(priorities)
        self._held += len(rows)
        if self._held > 2 * self.cap:
            self._shrink()

    def _shrink(self) -> None:
        frame = pd.concat(self._frames, ignore_index=True)
        priorities = np.concatenate(self._priorities)
        if len(frame) > self.cap:
            keep = np.sort(np.argpartition(priorities, self.cap - 1)[: self.cap])
            frame, priorities = frame.iloc[keep].reset_index(drop=True), priorities[keep]
        self._frames, self._priorities, self._held = [frame], [priorities], len(frame)
        if len(frame) == self.cap:
            self.threshold = float(priorities.max())

    @property
    def sampled(self) -> bool:
        """Whether the window held more rows than the sample."""
        return self.seen > self.cap

    def rows(self) -> pd.DataFrame:
        """The sample (every row of the window when it holds at most ``cap``)."""
        if not self._frames:
            return pd.DataFrame()
        self._shrink()
        return self._frames[0]


class DriftWindowRows:
    """The feature rows of a batch's drift windows, sampled as the feature group streams
    by (:class:`DriftSample` each): the windows are chosen first from the rows counted
    per day (:func:`drift.drift_windows_of_counts`), and a window's rows are the feature
    rows of its days that were scored before or are scored now (the rows
    :func:`drift_statistics` looks up by key)."""

    def __init__(self, spec: DatasetSpec, windows: drift_stats.DayWindows | None, as_of_end: pd.Timestamp,
                 cap: int = drift_stats.MAX_DRIFT_ROWS, seed: int = 0) -> None:
        self.spec, self.windows, self.last_day = spec, windows, as_of_day(as_of_end)
        self.recent = DriftSample(cap) if windows is not None else None
        self.rolling = DriftSample(cap) if windows is not None and windows.rolling_first_day is not None else None
        self._rng = np.random.default_rng(seed)
        self._columns = [f.name for f in spec.features]

    def add(self, frame: pd.DataFrame, is_new: np.ndarray, scored: KeySet) -> None:
        """Offer a chunk of feature rows: ``is_new`` marks the batch's rows, ``scored``
        holds the keys scored before."""
        if self.windows is None or self.recent is None:
            return
        days = utc_values(frame[EVENT_TIME_COLUMN]).astype("datetime64[D]")
        first = self.windows.rolling_first_day if self.windows.rolling_first_day is not None else self.windows.recent_first_day
        in_days = (days <= self.last_day) & (days >= first)
        if not in_days.any():
            return
        counted = in_days & is_new
        before = in_days & ~is_new
        if before.any():
            counted[before] = scored.contains(frame.loc[before, self.spec.primary_key].to_numpy())
        priorities = self._rng.random(len(frame))
        in_recent = counted & (days >= self.windows.recent_first_day)
        self.recent.offer(frame, in_recent, self._columns, priorities)
        if self.rolling is not None:
            self.rolling.offer(frame, counted, self._columns, priorities)


def streamed_drift(
    spec: DatasetSpec, rows: DriftWindowRows, totals: BatchTotals, drift_reference: drift_stats.DriftReference | None,
    as_of_end: pd.Timestamp, rolling_days: int, rule: monitoring.AlertRule,
) -> DriftStatistics:
    """:func:`drift_statistics` of windows chosen from the rows counted per day
    (:func:`drift.drift_windows_of_counts`) and sampled as they streamed by: a window of
    more than its sample's cap (:data:`drift.MAX_DRIFT_ROWS`) is judged on a uniform
    seeded sample of its rows, and a note says so (the tests are unchanged)."""
    last_day = as_of_day(as_of_end)
    windows, recent, rolling = rows.windows, rows.recent, rows.rolling
    if windows is None or drift_reference is None or recent is None:
        days = np.array(sorted(totals.day_counts), dtype="datetime64[D]")
        counts = np.array([totals.day_counts[d] for d in sorted(totals.day_counts)], dtype=np.int64)
        lookback = int(counts[drift_stats.in_lookback(days, last_day, rolling_days)].sum()) if days.size else 0
        return DriftStatistics(computed=Computed(notes=[drift_not_computed_of(drift_reference, lookback, rolling_days)]))
    out = DriftStatistics(computed=Computed())
    in_recent = {d: n for d, n in totals.day_counts.items() if windows.recent_first_day <= d <= last_day}
    history_in_recent = sum(n for d, n in totals.history_days.items() if windows.recent_first_day <= d <= last_day)
    out.basis = "batch" if history_in_recent == 0 and sum(in_recent.values()) == totals.rows else "window"
    out.window_label = day_range(windows.recent_first_day, last_day)
    metrics = out.computed.metrics
    chosen = [("recent", recent)]
    if windows.rolling_first_day is not None and rolling is not None:
        chosen.append(("rolling", rolling))
        metrics[registry.DRIFT_ROWS_ROLLING_METRIC] = float(rolling.seen)
        out.rolling_label = day_range(windows.rolling_first_day, last_day)
    for label, sample in chosen:
        if sample.sampled:
            out.computed.notes.append(
                f"drift of the {label} window judged on a uniform seeded sample of {sample.cap:,} of its {sample.seen:,} rows "
                f"(at most {drift_stats.MAX_DRIFT_ROWS:,} rows a window)")
    out.results = drift_reference.compare_windows([(label, sample.rows()) for label, sample in chosen],
                                                  rule.drift_p_value, rule.drift_min_effect)
    metrics.update(feature_drift_metrics(out.results))
    metrics[registry.DRIFT_SHARE_METRIC] = float(np.mean([d.drifted for d in out.results]))
    metrics[registry.DRIFT_ROWS_METRIC] = float(recent.seen)
    metrics[registry.DRIFT_WINDOW_DAYS_METRIC] = float((last_day - windows.recent_first_day).astype(int) + 1)
    return out


def streamed_statistics(
    spec: DatasetSpec, totals: BatchTotals, drift: DriftStatistics, champion: ChampionFacts, rule: monitoring.AlertRule,
) -> BatchStatistics:
    """:func:`batch_statistics` of running totals (:class:`BatchTotals`) and the drift of
    streamed windows (:func:`streamed_drift`)."""
    class_keys = evaluation.class_metric_keys(list(spec.classes), spec.class_names)
    matrices = totals.matrices
    accuracy = accuracy_metrics(matrices, totals.rows, champion.holdout_accuracy)
    per_class = class_metrics(spec, matrices, class_keys)
    estimated, found = estimated_of_totals(spec, totals, class_keys)
    assert totals.latest is not None, "a batch has rows"
    shares = class_share_of_counts(spec, totals.predicted_counts, totals.rows, champion.reference_rows, class_keys)
    stats = assemble_statistics(spec, matrices, [accuracy, per_class, estimated], drift, shares, found, totals.latest,
                                totals.rows, champion, rule)
    return stats if totals.slices is None else attach_slices(stats, totals.slices.table())
