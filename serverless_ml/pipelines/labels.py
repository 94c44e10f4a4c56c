"""Late labels: attach labels that became known after their rows arrived, and make every
figure that depends on them follow.

Reads: a CSV (path or http(s) URL) with the dataset's raw key column, its label column
and optionally ``labelled_at`` (when each label became known: an ISO date or date-time,
validated, not stored: the feature group has no column for it); the feature group
``<dataset>``, ``<dataset>_predictions`` and the runs of experiment ``<dataset>-monitoring``.

Writes, in this order, under the lock ``sml infer`` takes (no batch is scored in between):

1. the feature group ``<dataset>``: the rows of those keys with their label set (every
   other column as stored);
2. ``<dataset>_predictions``: ``actual``/``correct`` of every prediction (all model
   versions of a key) whose ``actual`` differs from the store's current label;
3. every monitoring run whose figures depend on changed labels: its batch's labelled rows
   and share, batch accuracy with its Wilson interval, rolling and since-promotion
   accuracy and rows, per-class metrics, confusion tables and the slice table's realized
   part with the worst slice (with the run's own slice plan), recomputed by
   :mod:`serverless_ml.inference.realized` (the functions batch inference uses), logged
   on the run itself at its as-of time with a step above every earlier one, then its
   :data:`registry.REALIZED_DIGEST_TAG` last. Alerts stay as decided when the batch was
   scored.

Refused in one line, nothing written: missing columns, a missing or non-integer key, a
label missing or outside the classes, a key twice in the file, an unreadable
``labelled_at``, one before its row's event time or after now, a key the feature group does not
have, and a label that would change one already known (unless ``overwrite``).

Crash safety: a run about to change is first tagged with a pending digest, then the
predictions are written, then each run's tables, metrics and finally its digest. Whatever
a crash interrupts, running ``sml labels`` again (the same file, or any other) finds the
differences (labels not yet in the predictions, runs whose digest is not their figures')
and completes them; with nothing left to do it writes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serverless_ml import defaults, registry, tracking
from serverless_ml.datasets.groups import existing_feature_group
from serverless_ml.datasets.sources import Source
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.datasets.validation import (
    _coerce_label,
    _first,
    _Locator,
    _missing,
    _parse_numbers,
    _show,
    _show_number,
    _too_large_for_int64,
    check_text_keys,
    missing_column_hint,
)
from serverless_ml.dates import FUTURE_SLACK, MAX_DATE, MIN_DATE, RANGE_TEXT, latest_time
from serverless_ml.errors import DataValidationError
from serverless_ml.faults import crash_point
from serverless_ml.feature_store.base import FeatureStore, is_missing, to_utc
from serverless_ml.inference import estimate, monitoring, paired, realized
from serverless_ml.inference import slices as slice_stats
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN, predictions_group, served_mask, shadow_run_id
from serverless_ml.locks import job_lock
from serverless_ml.settings import Settings
from serverless_ml.training import evaluation

if TYPE_CHECKING:
    from mlflow import MlflowClient

LABELLED_AT_COLUMN = "labelled_at"
"""The optional column of a labels file: when each label became known."""
PENDING_DIGEST = "pending"
"""The :data:`registry.REALIZED_DIGEST_TAG` of a run whose figures are being changed."""


@dataclass(frozen=True)
class LabelOptions:
    """Options of one ``sml labels`` job."""

    overwrite: bool = False
    notify: tuple[Any, ...] = ()
    """Where an accuracy alert the labels raise is sent (``--notify``, ``SML_NOTIFY_URL``)."""


@dataclass(frozen=True)
class LabelFile:
    """A validated labels file: one row per key (stored key type), its label (the spec's
    label type) and, when the file has the column, ``labelled_at`` (UTC, may be missing);
    ``position`` is each row's position in the file (for messages); ``ignored``: the
    file's other columns, which are not read."""

    frame: pd.DataFrame
    key_column: str
    has_labelled_at: bool
    locator: _Locator
    ignored: tuple[str, ...] = ()


@dataclass
class LabelsReport:
    """What a labels job did."""

    dataset: str
    location: str
    rows: int
    labels_set: int = 0
    labels_changed: int = 0
    unchanged: int = 0
    data_version: int | None = None
    has_labelled_at: bool = False
    predictions_updated: int = 0
    predictions_version: int | None = None
    runs_updated: list[str] = field(default_factory=list)
    runs_checked: int = 0
    notes: list[str] = field(default_factory=list)
    alerts: list[tuple[str, str, str]] = field(default_factory=list)
    """(batch's as-of, message, run id) of each accuracy alert the labels raised on a run."""

    def summary(self) -> str:
        written = self.labels_set + self.labels_changed
        lines = [
            f"{self.dataset}: {self.rows} labels in, {self.labels_set} set, {self.labels_changed} changed, "
            f"{self.unchanged} unchanged; feature group table version {self.data_version}"
            + ("" if written else " (no label written)"),
        ]
        if self.has_labelled_at:
            lines.append(f"  {LABELLED_AT_COLUMN}: validated, not stored (the feature group has no column for it)")
        if self.predictions_version is not None or self.predictions_updated:
            lines.append(f"  predictions: {self.predictions_updated} rows' actual label updated; "
                         f"table version {self.predictions_version}")
        if self.runs_checked:
            shown = ", ".join(self.runs_updated[:5]) + (", ..." if len(self.runs_updated) > 5 else "")
            lines.append(f"  monitoring runs: {len(self.runs_updated)} of {self.runs_checked} updated"
                         + (f" ({shown})" if shown else ""))
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"ALERT {self.dataset} {as_of}: {message}" for as_of, message, _run in sorted(self.alerts)]
        return "\n".join(lines)


# --- the file -----------------------------------------------------------------------------


def key_column_of(spec: DatasetSpec) -> str:
    """The labels file's key column: the spec's raw key column, or the stored key's name
    when rows are numbered."""
    return spec.primary_key_source or spec.primary_key


def check_label_columns(raw: pd.DataFrame, needed: list[str], where: str) -> None:
    """The labels file has the key and label columns (a close name is suggested)."""
    missing = [c for c in needed if c not in raw.columns]
    if not missing:
        return
    hint = missing_column_hint(missing, list(raw.columns), where)
    raise DataValidationError(
        f"{where}: missing column(s) {', '.join(map(repr, missing))}{hint}; a labels file has the key column "
        f"and the label column ({', '.join(map(repr, needed))}), and optionally {LABELLED_AT_COLUMN!r}"
    )


def _parse_keys(raw: pd.DataFrame, spec: DatasetSpec, column: str, loc: _Locator) -> pd.Series:
    """The key column as stored keys (integers compared as numbers: ``7`` and ``7.0`` are
    one key; text exactly as written)."""
    keys = raw[column]
    shown = f"'{column}'"
    missing = _missing(keys, spec.missing_for(spec.primary_key_type))
    if missing.any():
        raise loc.fail(shown, _first(missing), "key is missing")
    if spec.primary_key_type != "bigint":
        check_text_keys(keys, shown, loc.location)
        return keys.astype(str)
    numbers = _parse_numbers(keys, ~missing)
    bad = numbers.isna() | (numbers.fillna(0) % 1 != 0)
    if bad.any():
        i = _first(bad)
        raise loc.fail(shown, i, f"key {_show_number(keys, numbers, i)} is not a whole number")
    too_large = _too_large_for_int64(numbers)
    if too_large.any():
        raise loc.fail(shown, _first(too_large), f"key {_show(keys.iloc[_first(too_large)])} is too large for a 64-bit integer")
    return numbers.astype("int64")


LABELLED_AT_SLACK = FUTURE_SLACK
"""How far after now a ``labelled_at`` may be (time zones) before it is refused as in the future."""


def _parse_labelled_at(raw: pd.DataFrame, loc: _Locator) -> pd.Series:
    """``labelled_at`` as UTC timestamps (naive means UTC; an empty field: not known); one
    later than now (with :data:`LABELLED_AT_SLACK`) is refused."""
    texts = raw[LABELLED_AT_COLUMN].astype(str).str.strip()
    present = texts != ""
    now = dt.datetime.now(dt.timezone.utc)
    latest = latest_time(now)  # a day of slack: a naive time is read as UTC, a user east of UTC may write local time
    out = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[us, UTC]")
    for i in np.flatnonzero(present.to_numpy()):
        text = texts.iloc[i]
        try:
            moment = to_utc(dt.datetime.fromisoformat(text))
        except ValueError:
            raise loc.fail(f"'{LABELLED_AT_COLUMN}'", int(i), f"{_show(text)} is not an ISO date or date-time") from None
        if not MIN_DATE <= moment.date() <= MAX_DATE:
            raise loc.fail(f"'{LABELLED_AT_COLUMN}'", int(i), f"{text} is outside the supported dates ({RANGE_TEXT})")
        if moment > latest:
            raise loc.fail(f"'{LABELLED_AT_COLUMN}'", int(i),
                           f"{text} is in the future (a label cannot have become known after now, "
                           f"{now.isoformat(timespec='seconds')})")
        out.iloc[i] = moment
    return out


def _same_day_hint(labelled_at: pd.Timestamp, event_time: pd.Timestamp) -> str:
    """For a ``labelled_at`` at midnight of its row's own day (a date alone is midnight
    UTC): how to say the label came later that day."""
    if labelled_at != labelled_at.normalize() or labelled_at.date() != event_time.date():
        return ""
    return f"; a date alone is midnight UTC: give the time the label became known, e.g. {event_time.isoformat()} or later"


def read_labels(source: Source, spec: DatasetSpec) -> LabelFile:
    """Validate a labels file on its own (the checks against the store come later).

    Raises:
        DataValidationError: no rows, a missing column, a missing or malformed key, a key
            twice, a label missing or outside the classes, a bad ``labelled_at``.
    """
    raw = source.frame
    loc = _Locator(source)
    if raw.empty:
        raise DataValidationError(f"{source.location}: no data rows")
    key_column = key_column_of(spec)
    check_label_columns(raw, [key_column, spec.raw_label], source.location)
    keys = _parse_keys(raw, spec, key_column, loc)
    duplicated = keys.duplicated()
    if duplicated.any():
        i = _first(duplicated)
        first = _first(keys == keys.iloc[i])
        raise loc.fail(f"'{key_column}'", i, f"key {_show(keys.iloc[i])} appears twice (first in {loc.row(first)})")
    labels = _coerce_label(raw, spec, loc)
    frame = pd.DataFrame({spec.primary_key: keys.to_numpy(), spec.label: labels.to_numpy(),
                          "position": np.arange(len(raw))})
    has_labelled_at = LABELLED_AT_COLUMN in raw.columns
    if has_labelled_at:
        frame[LABELLED_AT_COLUMN] = _parse_labelled_at(raw, loc).to_numpy()
    used = {key_column, spec.raw_label, LABELLED_AT_COLUMN}
    ignored = tuple(str(c) for c in raw.columns if c not in used)
    return LabelFile(frame, key_column, has_labelled_at, loc, ignored)


@dataclass(frozen=True)
class LabelWrite:
    """The feature rows a labels file changes (as stored, their label set), and counts."""

    rows: pd.DataFrame
    labels_set: int
    labels_changed: int
    unchanged: int


def rows_to_label(spec: DatasetSpec, stored: pd.DataFrame, labels: LabelFile, overwrite: bool) -> LabelWrite:
    """The stored rows of the file's keys with the file's labels, for those that change.

    Raises:
        DataValidationError: a key the feature group does not have; a ``labelled_at``
            before its row's event time; a known label the file would change (unless
            ``overwrite``). Nothing is written.
    """
    key, label = spec.primary_key, spec.label
    frame, loc = labels.frame, labels.locator
    index = pd.Index(stored[key])
    where = index.get_indexer(frame[key])
    unknown = where < 0
    if unknown.any():
        i = int(np.flatnonzero(unknown)[0])
        raise loc.fail(
            f"'{labels.key_column}'", int(frame["position"].iloc[i]),
            f"key {_show(frame[key].iloc[i])} is not in feature group '{spec.name}' "
            f"({int(unknown.sum())} of the file's {len(frame)} keys are unknown; `sml ingest` adds new rows)",
        )
    matched = stored.iloc[where].reset_index(drop=True)
    if labels.has_labelled_at:
        event_times = pd.to_datetime(matched[EVENT_TIME_COLUMN], utc=True)
        labelled_at = pd.to_datetime(frame[LABELLED_AT_COLUMN], utc=True)
        early = (labelled_at < event_times).fillna(False).to_numpy(dtype=bool)
        if early.any():
            i = int(np.flatnonzero(early)[0])
            raise loc.fail(
                f"'{LABELLED_AT_COLUMN}'", int(frame["position"].iloc[i]),
                f"{labelled_at.iloc[i].isoformat()} is before the row's event time {event_times.iloc[i].isoformat()} "
                f"(key {_show(frame[key].iloc[i])}){_same_day_hint(labelled_at.iloc[i], event_times.iloc[i])}",
            )
    old = realized.label_codes(spec, matched[label])
    new = realized.label_codes(spec, frame[label])
    known = old >= 0
    changes = known & (old != new)
    if changes.any() and not overwrite:
        i = int(np.flatnonzero(changes)[0])
        raise loc.fail(
            f"'{spec.raw_label}'", int(frame["position"].iloc[i]),
            f"key {_show(frame[key].iloc[i])} already has label {_show(realized.label_values(spec, matched[label]).iloc[i])}, not "
            f"{_show(frame[label].iloc[i])} ({int(changes.sum())} known label(s) would change; --overwrite replaces them)",
        )
    write = (~known) | changes
    rows = matched[write].copy()
    rows[label] = realized.label_values(spec, frame.loc[write, label].reset_index(drop=True)).to_numpy()
    if spec.label_type == "bigint":
        rows[label] = rows[label].astype("int64")
    return LabelWrite(rows.reset_index(drop=True), int((~known).sum()), int(changes.sum()), int((~write).sum()))


# --- the job ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitoringRun:
    """A monitoring run with predictions rows: how it was judged, what it shows now."""

    info: Any
    """Its ``mlflow.entities.RunInfo``."""
    batch: realized.BatchRun
    as_of_label: str
    stamp_ms: int
    """Its metrics' timestamp (a millisecond before the as-of bound)."""
    next_step: int
    """A step above every one its label-dependent metrics were logged with."""
    metrics: dict[str, float]
    digest: str | None
    challenger_version: int | None = None
    """The challenger that shadow-scored its batch (its :data:`registry.CHALLENGER_VERSION_TAG`)."""
    notes: str | None = None
    """Its :data:`registry.NOT_COMPUTED_TAG`."""
    figures: bool | None = None
    """Its :data:`registry.FIGURES_PARAM` (``None``: a run logged before the param was)."""
    latest_key: str = ""
    latest_actual: str = ""
    """Its :data:`registry.LATEST_KEY_TAG` and :data:`registry.LATEST_ACTUAL_TAG`: the batch's
    latest row and its label when the run was last logged (empty: not known)."""
    holdout_accuracy: float | None = None
    accuracy_drop: float = defaults.INFER_ACCURACY_DROP
    """The champion's holdout accuracy and the ``--accuracy-drop`` the batch was judged with
    (its :data:`registry.CHAMPION_HOLDOUT_ACCURACY_METRIC` and :data:`registry.ACCURACY_DROP_PARAM`)."""
    alert_accuracy: bool = False
    alerts: str = ""
    """Its :data:`registry.ALERT_ACCURACY` tag (``true``) and :data:`registry.ALERTS_TAG`."""


def _all_runs(client: MlflowClient, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def monitoring_runs(spec: DatasetSpec, client: MlflowClient, predictions: pd.DataFrame) -> list[MonitoringRun]:
    """The monitoring runs that have predictions rows, with what their figures need: the
    model version, rolling days and as-of bound they were judged with."""
    experiment = client.get_experiment_by_name(registry.monitoring_experiment(spec.name))
    if experiment is None:
        return []
    scored = set(predictions[realized.RUN_ID_COLUMN].dropna())
    scored_at = predictions.groupby(realized.RUN_ID_COLUMN)[realized.SCORED_AT_COLUMN].max()
    out = []
    for run in _all_runs(client, experiment.experiment_id):
        run_id = run.info.run_id
        if run_id not in scored:
            continue
        tags, params = run.data.tags, run.data.params
        history = client.get_metric_history(run_id, registry.ROWS_LABELLED_METRIC)
        scored_through = realized.scored_through_of(tags)
        # When it scored its rows (its served rows keep their requests' earlier times).
        batch_scored_at = scored_through if scored_through is not None else pd.Timestamp(scored_at[run_id])
        as_of_label = tags.get(registry.AS_OF_TAG, "")
        if history:
            stamp = min(m.timestamp for m in history)
            end = pd.Timestamp(stamp + 1, unit="ms", tz="UTC")
            # A batch scored "up to now" was bounded by its scoring time, of which the
            # metrics' timestamp kept the milliseconds only.
            if end <= batch_scored_at < end + pd.Timedelta(milliseconds=1):
                end = batch_scored_at
            next_step = max(m.step for m in history) + 1
        else:
            end = to_utc(dt.date.fromisoformat(as_of_label) + dt.timedelta(days=1))
            stamp = int((end - pd.Timedelta(milliseconds=1)).timestamp() * 1000)
            next_step = 1
        version = int(tags.get(registry.MODEL_VERSION_TAG) or predictions.loc[
            predictions[realized.RUN_ID_COLUMN] == run_id, MODEL_VERSION_COLUMN].iloc[0])
        rolling_days = int(params.get(registry.ROLLING_DAYS_PARAM) or defaults.INFER_ROLLING_DAYS)
        batch = realized.BatchRun(run_id, version, rolling_days, end, slice_plan(client, run.info),
                                  logged_recalibration(run.data.metrics), scored_through)
        challenger = tags.get(registry.CHALLENGER_VERSION_TAG)
        out.append(MonitoringRun(run.info, batch, as_of_label,
                                 stamp, next_step, dict(run.data.metrics), tags.get(registry.REALIZED_DIGEST_TAG),
                                 int(challenger) if challenger and challenger.isdigit() else None,
                                 tags.get(registry.NOT_COMPUTED_TAG),
                                 {"True": True, "False": False}.get(params.get(registry.FIGURES_PARAM, "")),
                                 tags.get(registry.LATEST_KEY_TAG, ""), tags.get(registry.LATEST_ACTUAL_TAG, ""),
                                 _finite(run.data.metrics.get(registry.CHAMPION_HOLDOUT_ACCURACY_METRIC)),
                                 _float_param(params.get(registry.ACCURACY_DROP_PARAM), defaults.INFER_ACCURACY_DROP),
                                 tags.get(registry.ALERT_ACCURACY) == "true", tags.get(registry.ALERTS_TAG, "")))
    return out


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _float_param(value: str | None, default: float) -> float:
    try:
        number = float(value) if value else default
    except ValueError:
        return default
    return number if math.isfinite(number) else default


def latest_actuals(spec: DatasetSpec, predictions: pd.DataFrame, runs: list[MonitoringRun]) -> dict[str, str]:
    """Each run's latest row's label in ``predictions`` (their ``actual`` as the store has it
    now), as the run's :data:`registry.LATEST_ACTUAL_TAG` holds it: empty while not known.
    A run whose latest row is not among its predictions is left out."""
    wanted = {run.info.run_id: run.latest_key for run in runs if run.latest_key}
    if not wanted:
        return {}
    rows = predictions[predictions[realized.RUN_ID_COLUMN].isin(list(wanted))]
    same = rows[spec.primary_key].astype(str).to_numpy() == rows[realized.RUN_ID_COLUMN].map(wanted).to_numpy()
    chosen = rows[same]
    actual = realized.label_values(spec, chosen[realized.ACTUAL_COLUMN])
    return {str(run_id): "" if is_missing(value) else str(value)
            for run_id, value in zip(chosen[realized.RUN_ID_COLUMN], actual, strict=True)}


def logged_recalibration(metrics: Mapping[str, float]) -> estimate.Recalibration:
    """The recalibration a monitoring run's estimates used, from its metrics (the identity
    when it logged none: plain CBPE, or a run from before recalibration)."""
    a, b = metrics.get(registry.ESTIMATE_RECALIBRATION_A_METRIC), metrics.get(registry.ESTIMATE_RECALIBRATION_B_METRIC)
    rows = int(metrics.get(registry.ESTIMATE_RECALIBRATION_ROWS_METRIC, 0) or 0)
    if a is None or b is None or rows <= 0 or not (math.isfinite(a) and math.isfinite(b)):
        return estimate.Recalibration()
    return estimate.Recalibration(float(a), float(b), rows)


def _artifact_text(client: MlflowClient, run_info: Any, name: str) -> str | None:
    """The text of the run's top-level artifact ``name`` (``None``: it has none). Artifacts
    on this machine (a SQLite tracking database's ``mlruns/``) are read in place."""
    import urllib.parse

    from mlflow.utils.file_utils import local_file_uri_to_path

    uri = str(run_info.artifact_uri)
    if urllib.parse.urlparse(uri).scheme in ("", "file"):
        path = Path(local_file_uri_to_path(uri)) / name
        return path.read_text(encoding="utf-8") if path.is_file() else None
    if any(a.path == name for a in client.list_artifacts(run_info.run_id)):
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_info.run_id, name, tmp)).read_text(encoding="utf-8")
    return None


def slice_plan(client: MlflowClient, run_info: Any) -> slice_stats.SlicePlan | None:
    """The slice plan of the run's slice table (``None``: the run logged none), with which
    its realized slice figures are recomputed: the edges the batch was cut at.

    Artifacts on this machine (a SQLite tracking database's ``mlruns/``) are read in
    place: through the client, listing and downloading cost 18 ms a run (0.5 s for 30
    runs, measured), which every ``sml labels`` would pay for every run."""
    text = _artifact_text(client, run_info, registry.SLICES_ARTIFACT)
    if text is None:
        return None
    try:
        table = slice_stats.SliceTable.from_json(json.loads(text))
        problem = "not a slice table"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        table, problem = None, f"{type(exc).__name__}: {exc}"
    if table is None:  # a damaged table: its slices stay as they were
        import logging

        logging.getLogger(__name__).warning("run %s: %s is unreadable (%s); its slice table is not recomputed",
                                            run_info.run_id, registry.SLICES_ARTIFACT, problem)
        return None
    return table.plan


def log_run_update(
    spec: DatasetSpec, client: MlflowClient, run: MonitoringRun, update: realized.RunUpdate, now: dt.datetime
) -> None:
    """Log ``update`` on its run: the confusion tables (and figures, when the run was
    logged with them), then the metrics at the run's as-of time with the next step and the update
    time, then the digest (last: a crash before it leaves the run to be redone)."""
    from mlflow.entities import Metric, RunTag

    run_id = run.info.run_id
    # A run logged with figures (`--figures`: PNGs beside the tables) gets its figures
    # redrawn, and drawn for a window that has labelled rows now (never the since-promotion
    # one), a batch scored before any label included. A run logged before the param was:
    # when it has PNGs.
    figures = run.figures
    if figures is None:
        folder_name = registry.confusion_artifact("batch").split("/")[0]
        figures = any(a.path.endswith(".png") for a in client.list_artifacts(run_id, folder_name))
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        names = list(spec.class_names) if spec.class_names else None
        for label, table in update.tables.items():
            path = root / registry.confusion_artifact(label)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(table, indent=1, default=str))
            if figures and label != "since_promotion":
                import matplotlib.pyplot as plt

                figure = evaluation.confusion_figure(table, f"{spec.name} {label} ({run.as_of_label})", names)
                figure.savefig(root / registry.confusion_artifact(label, "png"))
                plt.close(figure)
        if update.slices is not None:
            (root / registry.SLICES_ARTIFACT).write_text(json.dumps(update.slices, indent=1, default=str))
        latest = _latest_file(client, run, update)
        if latest is not None:
            (root / registry.LATEST_ARTIFACT).write_text(json.dumps(latest, indent=1, default=str))
        if update.tables or update.slices is not None or latest is not None:
            tracking.upload_artifacts(run.info, folder)
    crash_point("labels.after_run_artifacts")
    # Stamped with every update, also one that moved only the tables (the site re-reads a
    # run's confusion tables when this tag changes).
    tags = [RunTag(registry.LABELS_UPDATED_AT_TAG, to_utc(now).isoformat())] if update.changed or update.tables else []
    tags += [RunTag(k, v) for k, v in update.tags.items()]
    client.log_batch(run_id, metrics=[Metric(k, float(v), run.stamp_ms, run.next_step) for k, v in update.metrics.items()],
                     tags=tags)
    crash_point("labels.after_run_metrics")
    client.set_tag(run_id, registry.REALIZED_DIGEST_TAG, update.digest)


def _latest_file(client: MlflowClient, run: MonitoringRun, update: realized.RunUpdate) -> dict[str, Any] | None:
    """The run's ``latest.json`` with the label ``update`` gives its latest row (``None``: the
    label did not change, or the run has no readable file, whose tag is still updated)."""
    if registry.LATEST_ACTUAL_TAG not in update.tags:
        return None
    text = _artifact_text(client, run.info, registry.LATEST_ARTIFACT)
    try:
        latest = json.loads(text) if text is not None else None
    except ValueError:
        latest = None
    if not isinstance(latest, dict):
        return None
    actual = update.tags[registry.LATEST_ACTUAL_TAG]
    # `correct` follows too (found by a user trial: it stayed null beside the new label).
    # Written as batch inference writes the file: every value as text.
    correct = None if not actual or latest.get("prediction") is None else str(str(latest["prediction"]) == actual)
    return {**latest, "actual": actual or None, "correct": correct}


def log_challenger_update(spec: DatasetSpec, client: MlflowClient, run: MonitoringRun, predictions: pd.DataFrame) -> None:
    """The challenger's label-dependent figures of ``run`` (its batch accuracy, the paired
    comparison) recomputed from the relabelled ``predictions`` and logged when they
    changed, at the run's as-of time with the next step (before the run's digest, which
    :func:`log_run_update` writes last)."""
    from mlflow.entities import Metric

    assert run.challenger_version is not None
    batch = run.batch
    start = batch.as_of_end - pd.Timedelta(days=batch.rolling_days)
    figures = paired.realized_shadow_metrics(predictions, spec.primary_key, batch.run_id, shadow_run_id(batch.run_id),
                                             batch.model_version, run.challenger_version, start, batch.as_of_end)
    changed = {k: v for k, v in figures.items()
               if run.metrics.get(k) is None or not np.isclose(run.metrics[k], v, rtol=1e-12, atol=0.0)}
    if changed:
        client.log_batch(batch.run_id, metrics=[Metric(k, float(v), run.stamp_ms, run.next_step) for k, v in changed.items()])


def check_tracking_holds_runs(spec: DatasetSpec, target: Any, settings: Settings,
                              tracker: tracking.Tracking | None) -> None:
    """Refuse a tracking store that is down, or that holds none of the monitoring runs the
    predictions group ``target`` names: the labels would be stored and no run would
    follow them (and a SQLite database that does not exist would be created empty)."""
    import pyarrow.compute as pc
    from mlflow.exceptions import MlflowException

    from serverless_ml.errors import SmlError
    from serverless_ml.inference.scoring import batch_run_ids

    found: set[str] = set()
    for batch in target.read_batches(columns=[realized.RUN_ID_COLUMN]):
        found.update(v for v in pc.unique(batch.column(0)).to_pylist() if v)
    run_ids = set(batch_run_ids(pd.Series(list(found), dtype=object)))  # a shadow row names its batch's run
    if not run_ids:
        return
    uri = tracker.uri if tracker is not None else settings.tracking_uri
    wrong = "set MLFLOW_TRACKING_URI to the one `sml infer` logged them in"
    database = tracking.sqlite_database_path(uri)
    if database is not None and not database.exists():
        raise SmlError(f"the predictions of {spec.name} name {len(run_ids)} monitoring run(s), and the MLflow "
                       f"tracking database {database} does not exist: {wrong}")
    client = tracking.tracking_for(settings, tracker).client
    client.search_experiments(max_results=1)  # a store that is down fails here, in one line
    for run_id in sorted(run_ids)[:20]:
        try:
            client.get_run(run_id)
            return
        except MlflowException:
            continue
    raise SmlError(f"the MLflow tracking store {tracking.redact_uri(uri)} holds none of the {len(run_ids)} monitoring "
                   f"run(s) that scored the predictions of {spec.name} (run {min(run_ids)} among them): {wrong}")


def attach_labels(
    spec: DatasetSpec, store: FeatureStore, settings: Settings, source: Source, options: LabelOptions,
    now: dt.datetime, tracker: tracking.Tracking | None = None,
) -> LabelsReport:
    """Attach the file's labels and make the predictions and monitoring runs follow. See
    the module docstring."""
    group = existing_feature_group(spec, store)
    labels = read_labels(source, spec)
    report = LabelsReport(spec.name, source.location, len(labels.frame), has_labelled_at=labels.has_labelled_at)
    if labels.ignored:
        report.notes.append(f"column(s) {', '.join(repr(c) for c in labels.ignored)} not read: a labels file gives "
                            f"the key ('{labels.key_column}'), the label ('{spec.raw_label}') and optionally "
                            f"'{LABELLED_AT_COLUMN}'")
    with job_lock(settings.state_dir, f"infer-{spec.name}"):
        features = group.read()
        write = rows_to_label(spec, features, labels, options.overwrite)
        report.labels_set, report.labels_changed, report.unchanged = write.labels_set, write.labels_changed, write.unchanged
        # The tracking store is checked before the first write: one that is down, or that
        # holds none of the runs the predictions name (another MLFLOW_TRACKING_URI, a
        # database not created yet), is refused with nothing written (not labels stored
        # and runs left behind, nor an empty database).
        predictions = predictions_group(spec, store)
        if predictions.exists():
            check_tracking_holds_runs(spec, predictions, settings, tracker)
            if len(write.rows):
                # The runs are written after the labels: a database another process is
                # writing stops the job here, before anything is.
                tracking.check_sqlite_writable(tracking.tracking_for(settings, tracker).uri)
        if len(write.rows):
            result = group.insert(write.rows, wait=True)
            features = group.read()
            report.data_version = result.version
        else:
            report.data_version = group.data_version()
        crash_point("labels.after_features")
        follow_labels(spec, store, settings, features, report, now, tracker, every_run=False,
                      written=write.rows[spec.primary_key])
        if options.notify and report.alerts:  # under the lock, as `sml infer` sends its alerts
            from serverless_ml.pipelines.notifications import notify_batch, sent_notes

            for _as_of, _message, run_id in report.alerts:
                report.notes += sent_notes(notify_batch(spec.name, run_id, options.notify,
                                                        tracking.tracking_for(settings, tracker)))
    return report


def follow_labels(
    spec: DatasetSpec, store: FeatureStore, settings: Settings, features: pd.DataFrame, report: LabelsReport,
    now: dt.datetime, tracker: tracking.Tracking | None, every_run: bool, written: pd.Series | None = None,
) -> None:
    """Make the predictions and the monitoring runs follow the labels of ``features`` (the
    feature group as it is now); call it holding the infer lock. Fills ``report``.

    ``written``: the keys whose labels this job wrote (rows no model scored yet are noted).

    ``every_run``: also compare the runs no ``sml labels`` has touched (no digest) with
    their figures, and update those whose metrics differ; otherwise such a run is only
    updated when this job's labels move its figures (it shows what batch inference logged
    from the labels its predictions had, which only a label change can make stale)."""
    target = predictions_group(spec, store)
    if not target.exists():
        report.notes.append("no predictions yet: nothing scored to update; the labels count from the monitoring run of "
                            "the batch that scores their rows")
        return
    predictions = target.read()
    if written is not None and len(written):
        unscored = int((~written.isin(predictions[spec.primary_key])).sum())
        if unscored:
            report.notes.append(f"{unscored} of the labels written are for rows no model has scored yet: they count from "
                                "the monitoring run of the batch that scores them")
    relabelled, changed = realized.relabel_predictions(spec, predictions, features)
    report.predictions_version = target.data_version()
    waiting = int((np.asarray(changed, dtype=bool) & predictions[realized.RUN_ID_COLUMN].isna().to_numpy()).sum())
    if waiting:
        report.notes.append(f"{waiting} of the updated predictions are served rows no batch holds yet: they count from "
                            "the next monitoring run `sml infer` logs")
    client = tracking.tracking_for(settings, tracker).client
    runs = monitoring_runs(spec, client, predictions)
    report.runs_checked = len(runs)
    facts = [run.batch for run in runs]
    # The champion's figures are of the served rows (the challenger's shadow rows follow apart).
    served = served_mask(predictions[realized.RUN_ID_COLUMN])
    figures = realized.figures_by_run(spec, relabelled[served], facts, features)
    if changed.any():
        before = realized.figures_by_run(spec, predictions[served], facts, features)
        for run in runs:
            moved = before[run.info.run_id].digest != figures[run.info.run_id].digest
            if moved and run.digest != PENDING_DIGEST:
                client.set_tag(run.info.run_id, registry.REALIZED_DIGEST_TAG, PENDING_DIGEST)
        crash_point("labels.after_runs_marked")
        result = target.insert(relabelled[changed].reset_index(drop=True), wait=True)
        report.predictions_updated, report.predictions_version = result.written, result.version
        crash_point("labels.after_predictions")
        runs = [_marked(run, before, figures) for run in runs]
    latest = latest_actuals(spec, relabelled, runs)
    for run in runs:
        # A run no `sml labels` has touched shows the figures batch inference logged,
        # from the labels its predictions had; only changed labels move them.
        if run.digest is None and not every_run:
            continue
        update = realized.plan_run_update(spec, figures[run.info.run_id], run.metrics, run.digest, run.notes)
        if update is None or (run.digest is None and not update.changed):
            continue
        # The latest row's label, as the store has it now (its row's label moves the
        # run's figures, so a run whose figures stay has the same one).
        actual = latest.get(run.info.run_id)
        if actual is not None and actual != run.latest_actual:
            update.tags[registry.LATEST_ACTUAL_TAG] = actual
        alert = labelled_accuracy_alert(run, figures[run.info.run_id])
        if alert is not None:
            update.tags.update({registry.ALERT_ACCURACY: "true", registry.ALERT_TAG: "true",
                                registry.ALERTS_TAG: registry.MESSAGE_SEPARATOR.join(
                                    m for m in (run.alerts, alert) if m)[:4000]})
            update.metrics[registry.ALERT_ACCURACY] = 1.0
            report.alerts.append((run.as_of_label, alert, run.info.run_id))
        if run.challenger_version is not None:
            log_challenger_update(spec, client, run, relabelled)
        log_run_update(spec, client, run, update, now)
        report.runs_updated.append(run.info.run_id)


def labelled_accuracy_alert(run: MonitoringRun, figures: realized.RealizedFigures) -> str | None:
    """The accuracy alert the labels now raise on ``run`` (``None``: none, or the run has one
    from labels already; one decided on the estimate gets this one beside it): the rule batch inference applies (:func:`monitoring.evaluate_alerts`,
    with the champion's holdout accuracy and ``--accuracy-drop`` the batch was judged
    with) on the batch's labelled rows and its rolling window as the labels show them.
    A batch scored before its labels came could only be judged on its estimate; without
    this a model that the labels show failing raised nothing until a later batch's rolling
    window had enough of them (found by a user trial: seven batches at 0.29-0.32 against a
    floor of 0.64, no alert). Alerts are only added: an alert decided when the batch was
    scored stays."""
    if run.holdout_accuracy is None:
        return None
    if run.alert_accuracy and not (ESTIMATED_ALERT in run.alerts and LABELS_ALERT not in run.alerts):
        return None  # alerted on its labels already (or before any of this)
    m = figures.metrics

    def counts(rows_metric: str, accuracy_metric: str) -> tuple[int, int]:
        rows, accuracy = m.get(rows_metric), m.get(accuracy_metric)
        if not rows or accuracy is None:
            return 0, 0
        return int(round(accuracy * rows)), int(rows)

    batch_correct, batch_rows = counts(registry.ROWS_LABELLED_METRIC, registry.BATCH_ACCURACY_METRIC)
    rolling_correct, rolling_rows = counts(registry.ROLLING_ROWS_METRIC, registry.ROLLING_ACCURACY_METRIC)
    alerts = monitoring.evaluate_alerts(
        monitoring.AlertRule(accuracy_drop=min(max(run.accuracy_drop, 0.0), 1.0)), run.holdout_accuracy,
        batch_correct, batch_rows, rolling_correct, rolling_rows, None, [])
    if not alerts.accuracy:
        return None
    return alerts.messages[0].replace("accuracy alert: ", f"{LABELS_ALERT}: ", 1)


ESTIMATED_ALERT = "accuracy alert (estimated"
"""How an accuracy alert decided on the estimate begins (:func:`monitoring.evaluate_alerts`):
labels that then show the batch failing add theirs beside it, so the run does not say only
that its rows have no label yet (found by a user trial)."""
LABELS_ALERT = "accuracy alert (from labels that came after the batch was scored)"


def refresh_realized(
    spec: DatasetSpec, store: FeatureStore, settings: Settings, tracker: tracking.Tracking | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Bring the predictions' actual labels and every monitoring run's realized figures
    up to the feature group's current labels, whoever logged the run (``sml simulate``
    logs each day with the labels known that day, then calls this). Takes the infer lock.

    Returns:
        How many runs were updated.
    """
    group = existing_feature_group(spec, store)
    report = LabelsReport(spec.name, "", 0)
    with job_lock(settings.state_dir, f"infer-{spec.name}"):
        follow_labels(spec, store, settings, group.read(), report, now or dt.datetime.now(dt.timezone.utc), tracker,
                      every_run=True)
    return len(report.runs_updated)


def _marked(run: MonitoringRun, before: dict[str, realized.RealizedFigures],
            after: dict[str, realized.RealizedFigures]) -> MonitoringRun:
    """``run`` as tagged now: pending when its figures moved with this job's labels."""
    if before[run.info.run_id].digest == after[run.info.run_id].digest:
        return run
    return dataclasses.replace(run, digest=PENDING_DIGEST)
