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
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN, probability_column
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
    return out


def day_range(first: np.datetime64, last: np.datetime64) -> str:
    """``first..last``, or one day."""
    return str(first) if first == last else f"{first}..{last}"


def as_of_day(as_of_end: pd.Timestamp) -> np.datetime64:
    """The last day a batch covers: its as-of date, or today for a batch scored up to now."""
    return (as_of_end - pd.Timedelta(microseconds=1)).to_datetime64().astype("datetime64[D]")


def drift_not_computed(drift_reference: object, event_days: np.ndarray, last_day: np.datetime64, rolling_days: int) -> str:
    """Why drift was not computed: too few recent rows, or too few reference rows."""
    if drift_reference is None:
        return f"drift not computed: the champion's training rows are fewer than {drift_stats.MIN_ROWS}"
    recent = int(drift_stats.in_lookback(event_days, last_day, rolling_days).sum())
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
    classes = list(spec.classes)
    train_labels = reference[spec.label] if reference is not None else pd.Series(dtype=object)
    predicted_counts = np.bincount(batch_predicted[batch_predicted >= 0], minlength=len(classes))
    training_shares = drift_stats.class_shares(train_labels, classes)
    metrics: dict[str, float] = {}
    for i, (cls, key) in enumerate(zip(classes, class_keys, strict=True)):
        metrics[registry.class_metric(registry.PREDICTED_SHARE_STEM, key)] = float(predicted_counts[i]) / max(rows_scored, 1)
        metrics[registry.class_metric(registry.TRAINING_SHARE_STEM, key)] = training_shares[cls]
    return metrics


def estimated_metrics(
    spec: DatasetSpec, scored: pd.DataFrame, codes: PredictionCodes, as_of_end: pd.Timestamp, rolling_days: int,
    class_keys: list[str],
) -> tuple[Computed, estimate.AccuracyEstimate | None]:
    """The batch's accuracy estimated from the champion's probabilities with the interval
    of the accuracy its rows will realise, estimated per-class precision/recall/F1 (from
    :data:`monitoring.MIN_ROWS_FOR_CLASS_METRICS` rows), and the rolling window's estimated
    accuracy (every scored row of the window, labelled or not)."""
    out = Computed()
    columns = [probability_column(c) for c in spec.classes]
    if codes.confidence is None or any(c not in scored.columns for c in columns):
        out.notes.append("estimated accuracy not computed: the predictions have no class probabilities")
        return out, None
    batch_confidence = codes.confidence[-len(scored):]
    found = estimate.estimate_accuracy(batch_confidence)
    out.metrics.update({registry.ESTIMATED_ACCURACY_METRIC: found.accuracy,
                        registry.ESTIMATED_ACCURACY_CI_LOW_METRIC: found.low,
                        registry.ESTIMATED_ACCURACY_CI_HIGH_METRIC: found.high})
    if len(scored) >= monitoring.MIN_ROWS_FOR_CLASS_METRICS:
        per_class = estimate.estimated_class_metrics(
            scored[columns].to_numpy(dtype=float), codes.batch_predicted, list(spec.classes), registry.ESTIMATED_PREFIX,
            positive_class=spec.positive_class, class_keys=class_keys)
        out.metrics.update({k: v for k, v in per_class.items() if k != registry.ESTIMATED_ACCURACY_METRIC})
    else:
        out.notes.append(f"estimated per-class metrics not computed: {len(scored)} rows < {monitoring.MIN_ROWS_FOR_CLASS_METRICS}")
    end = as_of_end.to_datetime64()
    in_rolling = (codes.event_time >= (as_of_end - pd.Timedelta(days=rolling_days)).to_datetime64()) & (codes.event_time < end)
    if in_rolling.any():
        out.metrics[registry.ROLLING_ESTIMATED_ACCURACY_METRIC] = float(codes.confidence[in_rolling].mean())
    return out, found


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
    estimated, found = estimated_metrics(spec, scored, codes, as_of_end, rolling_days, class_keys)
    metrics = {**accuracy.metrics, **per_class.metrics, **estimated.metrics, **drift.computed.metrics,
               **class_share_metrics(spec, codes.batch_predicted, len(scored), champion.reference_rows, class_keys)}
    latest = monitoring.latest_row(scored, spec.primary_key)
    metrics[registry.LATEST_PROBABILITY_METRIC] = float(latest["probability"])
    alerts = alert_decision(rule, champion.holdout_accuracy, matrices, drift, metrics.get(registry.DRIFT_SHARE_METRIC),
                            found)
    metrics[registry.ALERT_ACCURACY] = float(alerts.accuracy)
    metrics[registry.ALERT_DRIFT] = float(alerts.drift)
    tables = {label: evaluation.table_from_matrix(matrix, list(spec.classes)) for label, matrix in matrices.items() if matrix.sum()}
    return BatchStatistics(metrics, tables, drift.results, drift.basis, latest, alerts,
                           accuracy.notes + per_class.notes + estimated.notes + drift.computed.notes,
                           drift.window_label, drift.rolling_label,
                           accuracy_basis(int(matrices["batch"].sum()), len(scored), found))
