"""Batch inference: score exactly the new rows with the champion, record every prediction
next to its actual label, and log the batch as a monitoring run.

Reads: ``models:/<dataset>@champion``, the feature group ``<dataset>`` and the champion's
training run (its training keys and data version, for drift). Writes: the feature group
``<dataset>_predictions`` (key: the row's key and the model version). Logs: one run in
experiment ``<dataset>-monitoring`` per batch: accuracy (batch, rolling window, since
promotion), per-class metrics, confusion matrices (JSON and PNG), drift per feature,
predicted class shares, the latest scored row, and alerts as tags; the batch's rows as its
dataset input and the champion's logged model as its model input.

Order: the run is logged completely before the predictions are upserted, and the run is
marked FINISHED only after the upsert. A crash in between leaves a RUNNING run that the
next job closes (FINISHED when its predictions landed, FAILED otherwise); a retry after a
failure before the upsert scores the same rows again without duplicates.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml import tracking
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.dates import check_date
from serverless_ml.errors import NotFoundError, SmlError
from serverless_ml.faults import crash_point
from serverless_ml.feature_store.base import ORIGIN_COLUMN, FeatureGroup, FeatureStore, to_utc
from serverless_ml.inference import drift as drift_stats
from serverless_ml.inference import monitoring
from serverless_ml.inference.scoring import predictions_schema, predictions_version, score_rows, select_new_rows
from serverless_ml.locks import job_lock
from serverless_ml.pipelines.features import existing_feature_group
from serverless_ml.settings import Settings
from serverless_ml.training import evaluation
from serverless_ml.training.promotion import CHAMPION

ALERT_EXIT_CODE = 3


class AlertRaised(SmlError):
    """``--fail-on-alert``: the batch was scored and logged, and an alert fired."""

    exit_code = ALERT_EXIT_CODE


@dataclass(frozen=True)
class InferOptions:
    """Options of one batch-inference job."""

    as_of: dt.date | None = None
    rolling_days: int = monitoring.DEFAULT_ROLLING_DAYS
    rule: monitoring.AlertRule = field(default_factory=monitoring.AlertRule)
    fail_on_alert: bool = False
    figures: bool = True

    def __post_init__(self) -> None:
        if self.as_of is not None:
            check_date(self.as_of, "--as-of")


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

    def summary(self) -> str:
        if self.rows_scored == 0:
            # Notes still matter here: a run a crashed job left RUNNING was closed.
            return "\n".join([
                f"{self.dataset}: nothing new to score up to {self.as_of} (champion version {self.model_version}); no run logged",
                *(f"  note: {note}" for note in self.notes),
            ])
        m = self.metrics
        lines = [
            f"{self.dataset}: scored {self.rows_scored} rows up to {self.as_of} with champion version {self.model_version}",
            f"  batch accuracy {_fmt(m.get('batch_accuracy'))} ({int(m.get('rows_labelled', 0))} labelled), "
            f"rolling {_fmt(m.get('rolling_accuracy'))} over {int(m.get('rolling_rows', 0))}, "
            f"since promotion {_fmt(m.get('cumulative_accuracy'))} over {int(m.get('cumulative_rows', 0))}",
            f"  drift share {_fmt(m.get('drift_share'))}; monitoring run {self.run_id}",
        ]
        lines += [f"  note: {note}" for note in self.notes]
        # The alerts are printed once, by raise_alerts (with the dataset and date).
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


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
            import mlflow

            try:
                self.model = mlflow.sklearn.load_model(self.model_uri)
            except Exception as exc:  # noqa: BLE001 - any load failure is reported in one line
                name = self.model_uri.removeprefix("models:/").split("/")[0]
                raise SmlError(f"champion version {self.version} of model '{name}' cannot be loaded: "
                               f"{str(exc).splitlines()[0][:200]}") from None
        return self.model


def champion_version(spec: DatasetSpec) -> Any:
    """The registry's ``@champion`` version of the dataset's model (NotFoundError if none)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name = tracking.model_name(spec.name)
    tracking.init_sqlite_database(mlflow.get_tracking_uri())  # this read would create a new database
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        raise NotFoundError(f"model '{name}' has no champion; run `sml train --dataset {spec.dataset_arg}` first") from None


def load_champion(spec: DatasetSpec, group: FeatureGroup, current: pd.DataFrame) -> Champion:
    """Load ``models:/<dataset>@champion`` and its training rows (for exclusion and drift)."""
    import mlflow

    client = mlflow.MlflowClient()
    name = tracking.model_name(spec.name)
    info = champion_version(spec)
    try:
        # The model's MLmodel file only: the model is loaded when there is something to
        # score (Champion.load_model).
        signature = mlflow.models.get_model_info(f"models:/{name}/{info.version}").signature
    except Exception as exc:  # noqa: BLE001 - any load failure is reported in one line
        raise SmlError(f"champion version {info.version} of model '{name}' cannot be loaded: {str(exc).splitlines()[0][:200]}") from None
    expected = [c.name for c in signature.inputs.inputs] if signature is not None else None
    if expected is not None and expected != spec.feature_names:
        raise SmlError(
            f"champion version {info.version} of model '{name}' expects columns {expected}, "
            f"but feature group '{spec.name}' has {spec.feature_names}; train and promote a model of these columns: "
            f"`sml train --dataset {spec.dataset_arg} --promote always`"
        )
    holdout = info.tags.get("holdout_accuracy")
    training_keys = pd.Index([])
    reference = None
    run_id = info.tags.get("training_run_id") or info.run_id
    if run_id:
        try:
            keys = tracking.training_keys(run_id)
            training_keys = pd.Index(keys[spec.primary_key])
            data_version = client.get_run(run_id).data.params.get("data_version")
            source = current
            if data_version not in (None, "None"):
                try:
                    source = group.read(version=int(data_version))
                except SmlError:
                    source = current
            train_keys = keys.loc[keys["split"] == "train", spec.primary_key]
            reference = source[source[spec.primary_key].isin(train_keys)]
        except Exception:  # noqa: BLE001 - a model registered elsewhere has no keys artifact
            reference = None
    if reference is None or reference.empty:
        reference = current[current[ORIGIN_COLUMN] == "backfill"]
    return Champion(
        version=int(info.version), model=None,
        holdout_accuracy=float(holdout) if holdout is not None else None,
        training_keys=training_keys, reference_rows=reference, promoted_at=info.tags.get("promoted_at"),
        drift_reference=drift_stats.DriftReference(reference, spec) if len(reference) >= drift_stats.MIN_ROWS else None,
        model_id=tracking.logged_model_id(info), model_uri=f"models:/{name}/{info.version}",
    )


def _as_of_bounds(as_of: dt.date | None, now: dt.datetime) -> tuple[pd.Timestamp, str]:
    """Rows up to the end of the as-of date (or up to now), and the date's label."""
    if as_of is None:
        moment = to_utc(now)
        return moment, moment.date().isoformat()
    return to_utc(as_of + dt.timedelta(days=1)), as_of.isoformat()


def predictions_group(spec: DatasetSpec, store: FeatureStore) -> FeatureGroup:
    return store.get_or_create_feature_group(
        name=spec.predictions_group,
        version=predictions_version(spec),
        primary_key=[spec.primary_key, "model_version"],
        event_time=EVENT_TIME_COLUMN,
        description=f"predictions of the {spec.name} champion, next to the actual labels",
        features=predictions_schema(spec),
    )


def close_stale_runs(experiment_id: str, history: pd.DataFrame) -> list[str]:
    """Runs left RUNNING by a crashed job (none can be live: the caller holds the job lock).
    FINISHED when their predictions landed, FAILED otherwise."""
    import mlflow

    client = mlflow.MlflowClient()
    closed = []
    landed = set(history["run_id"]) if not history.empty else set()
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'"):
        status = "FINISHED" if run.info.run_id in landed else "FAILED"
        client.set_tag(run.info.run_id, "recovered", f"closed as {status} by a later job")
        # A simulated day's run ends at its batch's time, as it would have without the crash.
        end_time = run.info.start_time if run.data.tags.get("simulated") == "true" else None
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


def load_context(spec: DatasetSpec, store: FeatureStore) -> InferContext:
    """Read the features, the predictions so far and the champion (call under the job lock,
    with tracking configured)."""
    group = existing_feature_group(spec, store)
    data_version = group.data_version()
    features = group.read(version=data_version)
    if features.empty:
        raise NotFoundError(f"feature group '{spec.name}' has no rows; run `sml features --dataset {spec.dataset_arg}` first")
    champion = load_champion(spec, group, features)
    target = predictions_group(spec, store)
    history = target.read() if target.exists() else pd.DataFrame(columns=[f.name for f in predictions_schema(spec)])
    experiment_id = tracking.get_or_create_experiment(tracking.monitoring_experiment(spec.name))
    source = tracking.feature_group_source(store, group, data_version)
    return InferContext(group, target, data_version, features, history, champion, experiment_id, source)


def infer(
    spec: DatasetSpec, store: FeatureStore, settings: Settings, options: InferOptions, now: dt.datetime
) -> InferReport:
    """Score the new rows and log the batch. See the module docstring."""
    if options.rolling_days < 1:
        raise SmlError(f"--rolling-days must be >= 1, got {options.rolling_days}")
    as_of_end, as_of_label = _as_of_bounds(options.as_of, now)
    tracking.configure_tracking(settings)
    existing_feature_group(spec, store)
    with job_lock(settings.store_dir, f"infer-{spec.name}"):
        ctx = load_context(spec, store)
        notes = [f"closed stale run {run_id}" for run_id in close_stale_runs(ctx.experiment_id, ctx.history)]
        new = select_new_rows(ctx.features, spec, ctx.history[spec.primary_key], ctx.champion.training_keys, as_of_end)
        report = InferReport(spec.name, ctx.champion.version, as_of_label, len(new), notes=notes)
        if new.empty:
            return report
        model = ctx.champion.load_model()  # before the run: a model that cannot load logs nothing
        with tracking.job_run(ctx.experiment_id, f"{spec.name}-batch-{as_of_label}") as run:
            report.run_id = run.info.run_id
            crash_point("infer.after_run_created")
            scored = score_rows(model, new, spec, ctx.champion.version, to_utc(now), run.info.run_id)
            stats = batch_statistics(spec, scored, ctx.history, ctx.features, ctx.champion, as_of_end, options, new)
            report.metrics, report.alerts = stats.metrics, stats.alerts.messages
            report.notes += stats.notes
            log_batch_run(spec, run.info, stats, ctx.champion, as_of_label, as_of_end, ctx.data_version, options,
                          batch_rows=new, source=ctx.source)
            crash_point("infer.after_run_logged")
            ctx.target.insert(scored, wait=True)
            crash_point("infer.after_upsert")
    raise_alerts(spec, report, options)
    return report


def raise_alerts(spec: DatasetSpec, report: InferReport, options: InferOptions) -> None:
    """Print the batch's alerts; with ``--fail-on-alert`` turn them into exit code 3."""
    for message in report.alerts:
        print(f"ALERT {spec.name} {report.as_of}: {message}")
    if options.fail_on_alert and report.alerts:
        raise AlertRaised(f"{spec.name} {report.as_of}: {'; '.join(report.alerts)} (run {report.run_id})")


@dataclass
class BatchStatistics:
    metrics: dict[str, float]
    tables: dict[str, dict[str, Any]]
    drift: list[drift_stats.FeatureDrift]
    drift_basis: str
    latest: dict[str, Any]
    alerts: monitoring.Alerts
    notes: list[str]
    drift_window: str = ""
    drift_window_rolling: str = ""


def _matrix_accuracy(matrix: np.ndarray) -> tuple[float, int]:
    total = int(matrix.sum())
    return (float(np.trace(matrix)) / total if total else math.nan), total


def batch_statistics(
    spec: DatasetSpec,
    scored: pd.DataFrame,
    history: pd.DataFrame,
    features: pd.DataFrame,
    champion: Champion,
    as_of_end: pd.Timestamp,
    options: InferOptions,
    batch_features: pd.DataFrame | None = None,
) -> BatchStatistics:
    """Every number the monitoring run logs, from the batch and the predictions so far.

    The windows (batch, rolling, since promotion) are masks over class codes, not copies of
    the predictions: a batch of a million rows costs a few array passes.
    ``batch_features`` (the batch's feature rows) saves looking them up in ``features``.
    """
    classes = list(spec.classes)
    n_classes = len(classes)
    lookup = pd.Index(classes)
    class_keys = evaluation.class_metric_keys(classes, spec.class_names)
    notes: list[str] = []

    batch_actual = evaluation.class_codes(scored["actual"], lookup)
    batch_predicted = evaluation.class_codes(scored["prediction"], lookup)
    if history.empty:
        actual, predicted = batch_actual, batch_predicted
        event_time = _utc_values(scored[EVENT_TIME_COLUMN])
        versions = scored["model_version"].to_numpy(dtype=np.int64)
    else:
        actual = np.concatenate([evaluation.class_codes(history["actual"], lookup), batch_actual])
        predicted = np.concatenate([evaluation.class_codes(history["prediction"], lookup), batch_predicted])
        event_time = np.concatenate([_utc_values(history[EVENT_TIME_COLUMN]), _utc_values(scored[EVENT_TIME_COLUMN])])
        versions = np.concatenate([history["model_version"].to_numpy(dtype=np.int64), scored["model_version"].to_numpy(dtype=np.int64)])
    rolling_start = (as_of_end - pd.Timedelta(days=options.rolling_days)).to_datetime64()
    # Rows up to the end of the as-of date: a row of the next day at midnight is not in it
    # (the same bound as select_new_rows).
    in_rolling = (event_time >= rolling_start) & (event_time < as_of_end.to_datetime64())
    # "Since promotion" ends at the batch too: days added later for earlier dates must
    # not count rows of later days.
    since_promotion = (versions == champion.version) & (event_time < as_of_end.to_datetime64())

    matrices = {
        "batch": evaluation.confusion_from_codes(batch_actual, batch_predicted, n_classes),
        "rolling": evaluation.confusion_from_codes(actual, predicted, n_classes, in_rolling),
        "since_promotion": evaluation.confusion_from_codes(actual, predicted, n_classes, since_promotion),
    }
    metrics: dict[str, float] = {"rows_scored": float(len(scored))}
    batch_accuracy, labelled = _matrix_accuracy(matrices["batch"])
    metrics["rows_labelled"] = float(labelled)
    if labelled:
        low, high = monitoring.wilson_interval(int(np.trace(matrices["batch"])), labelled)
        metrics.update(batch_accuracy=batch_accuracy, batch_accuracy_ci_low=low, batch_accuracy_ci_high=high)
    else:
        notes.append("batch accuracy not computed: no labelled rows")
    rolling_accuracy, rolling_rows = _matrix_accuracy(matrices["rolling"])
    cumulative_accuracy, cumulative_rows = _matrix_accuracy(matrices["since_promotion"])
    metrics.update(rolling_rows=float(rolling_rows), cumulative_rows=float(cumulative_rows))
    if rolling_rows:
        metrics["rolling_accuracy"] = rolling_accuracy
    if cumulative_rows:
        metrics["cumulative_accuracy"] = cumulative_accuracy
    if champion.holdout_accuracy is not None:
        metrics["champion_holdout_accuracy"] = champion.holdout_accuracy

    tables = {label: evaluation.table_from_matrix(matrix, classes) for label, matrix in matrices.items() if matrix.sum()}
    for label in ("batch", "rolling"):
        known = int(matrices[label].sum())
        if known >= monitoring.MIN_ROWS_FOR_CLASS_METRICS:
            per_class = evaluation.metrics_from_confusion(matrices[label], classes, prefix=f"{label}_",
                                                          positive_class=spec.positive_class, class_keys=class_keys)
            metrics.update({k: v for k, v in per_class.items() if k != f"{label}_accuracy"})
        else:
            notes.append(f"{label} per-class metrics not computed: {known} labelled rows < {monitoring.MIN_ROWS_FOR_CLASS_METRICS}")

    # Drift: the newest days pooled until they are enough, and the rolling window
    # (drift.drift_windows).
    drift_results: list[drift_stats.FeatureDrift] = []
    reference = champion.reference_rows
    all_keys = (np.concatenate([history[spec.primary_key].to_numpy(), scored[spec.primary_key].to_numpy()])
                if not history.empty else scored[spec.primary_key].to_numpy())
    event_days = event_time.astype("datetime64[D]")
    # The last day the batch covers: the as-of date, or today for a batch scored up to now.
    as_of_day = (as_of_end - pd.Timedelta(microseconds=1)).to_datetime64().astype("datetime64[D]")
    chosen = drift_stats.drift_windows(event_days, as_of_day, lookback_days=options.rolling_days)
    basis = "none"
    window_label = rolling_label = ""
    if chosen is not None and champion.drift_reference is not None:
        window_keys = pd.unique(all_keys[chosen.recent])
        batch_keys = scored[spec.primary_key]
        only_batch = len(window_keys) == len(batch_keys) and bool(batch_keys.isin(window_keys).all())
        basis = "batch" if only_batch else "window"
        if batch_features is not None and only_batch:
            current = batch_features
        else:
            current = features[features[spec.primary_key].isin(window_keys)]
        window_label = _day_range(chosen.recent_first_day, as_of_day)
        windows = [("recent", current)]
        if chosen.rolling is not None:
            rolling_current = features[features[spec.primary_key].isin(pd.unique(all_keys[chosen.rolling]))]
            windows.append(("rolling", rolling_current))
            metrics["drift_rows_rolling"] = float(len(rolling_current))
            rolling_label = _day_range(chosen.rolling_first_day, as_of_day)
        drift_results = champion.drift_reference.compare_windows(
            windows, options.rule.drift_p_value, options.rule.drift_min_effect
        )
        for item in drift_results:
            key = evaluation.metric_key(item.feature)
            metrics[f"drift_p_{key}"] = item.p_value
            metrics[f"drift_padj_{key}"] = item.p_adjusted
            metrics[f"drift_effect_{key}"] = item.effect
            metrics[f"drift_psi_{key}"] = item.psi
        metrics["drift_share"] = float(np.mean([d.drifted for d in drift_results]))
        metrics["drift_rows"] = float(len(current))
        metrics["drift_window_days"] = float((as_of_day - chosen.recent_first_day).astype(int) + 1)
    else:
        notes.append(
            f"drift not computed: {int(drift_stats.in_lookback(event_days, as_of_day, options.rolling_days).sum())} rows "
            f"in the last {options.rolling_days} days, fewer than {drift_stats.MIN_ROWS}"
            if champion.drift_reference is not None else
            f"drift not computed: the champion's training rows are fewer than {drift_stats.MIN_ROWS}"
        )
    train_labels = reference[spec.label] if reference is not None else pd.Series(dtype=object)
    predicted_counts = np.bincount(batch_predicted[batch_predicted >= 0], minlength=n_classes)
    training_shares = drift_stats.class_shares(train_labels, classes)
    for i, (cls, key) in enumerate(zip(classes, class_keys, strict=True)):
        metrics[f"predicted_share_{key}"] = float(predicted_counts[i]) / max(len(scored), 1)
        metrics[f"training_share_{key}"] = training_shares[cls]

    latest = monitoring.latest_row(scored, spec.primary_key)
    metrics["latest_probability"] = float(latest["probability"])
    where = {"recent": f"recent days {window_label}", "rolling": f"rolling window {rolling_label}"}
    drifted = [f"{d.feature} on the {where.get(d.window, d.window)}" for d in drift_results if d.drifted]
    alerts = monitoring.evaluate_alerts(
        options.rule, champion.holdout_accuracy, int(np.trace(matrices["batch"])), labelled,
        int(np.trace(matrices["rolling"])), rolling_rows, metrics.get("drift_share"), drifted,
    )
    metrics["alert_accuracy"] = float(alerts.accuracy)
    metrics["alert_drift"] = float(alerts.drift)
    return BatchStatistics(metrics, tables, drift_results, basis, latest, alerts, notes, window_label, rolling_label)


def _day_range(first: np.datetime64, last: np.datetime64) -> str:
    return str(first) if first == last else f"{first}..{last}"


def _utc_values(series: pd.Series) -> np.ndarray:
    """Event times as UTC ``datetime64[ns]`` values (comparable across frames)."""
    if not isinstance(series.dtype, pd.DatetimeTZDtype):
        series = pd.to_datetime(series, utc=True)
    return series.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")


def batch_run_tags(
    spec: DatasetSpec, stats: BatchStatistics, champion: Champion, as_of_label: str, data_version: int | None
) -> dict[str, str]:
    """The tags of a batch's monitoring run (known before the run is created, so a
    simulation can pass them to ``create_run`` and save a call per run)."""
    latest = stats.latest
    return {
        "dataset": spec.name,
        "model_version": str(champion.version),
        "model_uri": champion.model_uri,
        "as_of": as_of_label,
        "data_version": str(data_version),
        "drift_basis": stats.drift_basis,
        "drift_window": stats.drift_window,
        "drift_window_rolling": stats.drift_window_rolling,
        "alert": "true" if stats.alerts.any else "false",
        "alert_accuracy": str(stats.alerts.accuracy).lower(),
        "alert_drift": str(stats.alerts.drift).lower(),
        "alerts": " | ".join(stats.alerts.messages)[:4000],
        "not_computed": " | ".join(stats.notes)[:4000],
        "latest_key": str(latest[spec.primary_key]),
        "latest_prediction": str(latest["prediction"]),
        "latest_actual": str(latest["actual"]),
        tracking.NOTE_TAG: f"Batch of {int(stats.metrics['rows_scored'])} {spec.name} rows up to {as_of_label}, "
        f"scored by champion version {champion.version}.",
    }


BATCH_INPUT_CONTEXT = "inference"
"""The dataset-input context of a batch on its monitoring run."""


def batch_input(spec: DatasetSpec, rows: pd.DataFrame, source: dict[str, Any], as_of_label: str) -> Any:
    """A batch's feature rows (key, event time, features, label, origin) as a dataset
    input of its monitoring run: the feature group and data version they were read from
    and a digest of the rows."""
    columns = [c for c in spec.store_columns if c in rows.columns]
    frame = rows[columns].sort_values(spec.primary_key, kind="stable").reset_index(drop=True)
    return tracking.dataset_input(
        spec.name, source, len(frame), tracking.spec_columns(spec, columns), tracking.rows_digest(frame),
        BATCH_INPUT_CONTEXT, tags={"as_of": as_of_label},
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
) -> None:
    """Log a batch's statistics on the run ``run_info`` (an ``mlflow.entities.RunInfo``):
    metrics, params and (unless ``tags_logged``) tags in one batch call, timestamped at
    the as-of date; the batch's feature rows ``batch_rows`` as the run's dataset input
    (from ``source``) and the champion's logged model as its model input, in one call;
    then the JSON tables and figures in one upload."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient()
    stamp = int((as_of_end - pd.Timedelta(milliseconds=1)).timestamp() * 1000)
    tags = {} if tags_logged else batch_run_tags(spec, stats, champion, as_of_label, data_version)
    params = {
        "rolling_days": options.rolling_days,
        "accuracy_drop": options.rule.accuracy_drop,
        "drift_p_value": options.rule.drift_p_value,
        "drift_share_threshold": options.rule.drift_share,
        "drift_min_effect": options.rule.drift_min_effect,
        "drift_window_rows": drift_stats.WINDOW_ROWS,
    }
    client.log_batch(
        run_info.run_id,
        metrics=[Metric(k, float(v), stamp, 0) for k, v in stats.metrics.items() if not math.isnan(float(v))],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    if batch_rows is not None:
        tracking.log_inputs(run_info.run_id, [batch_input(spec, batch_rows, source or {}, as_of_label)],
                            [champion.model_id] if champion.model_id else None)
    names = list(spec.class_names) if spec.class_names else None
    files: dict[str, Any] = {f"confusion/{label}.json": table for label, table in stats.tables.items()}
    files["drift.json"] = {
        "basis": stats.drift_basis, "window": stats.drift_window, "rows": stats.metrics.get("drift_rows"),
        "rolling_window": stats.drift_window_rolling, "rolling_rows": stats.metrics.get("drift_rows_rolling"),
        "p_threshold": options.rule.drift_p_value, "min_effect": options.rule.drift_min_effect,
        "features": [vars(d) for d in stats.drift],
    }
    files["latest.json"] = {k: str(v) for k, v in stats.latest.items()}
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
                figure.savefig(root / "confusion" / f"{label}.png")
                plt.close(figure)
        tracking.upload_artifacts(run_info, folder)
