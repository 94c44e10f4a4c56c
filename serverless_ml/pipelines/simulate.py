"""History simulation: replay N past days of the daily loop with the right dates.

Each day gets its synthetic rows (event time that day), then the day's batch is scored and
logged as a monitoring run dated that day, exactly as ``sml daily`` and ``sml infer`` would
have done on the day; optionally the model is retrained every K days (on real and
synthetic rows up to that day, promoted by the usual rule). A drift episode shifts chosen
features from a given day on, so a new user sees drift and alerts in the site.

For speed the days between two retrains form one segment: their rows are written in one
commit, scored in one pass and their predictions upserted in one commit, while each day
still gets its own run and its own statistics. The segment's runs stay RUNNING until its
predictions have landed, so a crash leaves runs that the next inference job closes as
FAILED, and re-running the simulation completes the days without duplicates. A day's run
starts and ends at that day's scoring time (the next day, 00:15 UTC), as the daily job's
would have, so the MLflow UI shows no run lasting months.

Labels can arrive late, for part of the rows, as in production (``label_delay``,
``label_share``): a day's rows are stored without the labels that have not arrived by
the last simulated day, each day is scored knowing only the labels that had arrived by
then (so its run logs an estimate, :mod:`serverless_ml.inference.estimate`), and when
the days are done every run's realized figures are brought up to the labels known at the
end (:func:`serverless_ml.pipelines.labels.refresh_realized`), as ``sml labels`` does when
real labels arrive. Which rows get a label is drawn with the day's seed (reproducible).

Days that already exist are history. Before anything is written, every day's rows are
compared with the stored ones: the same arguments find them identical (nothing written,
only unscored rows are scored); other arguments that would change or leave behind rows of
an existing day stop the simulation in one line naming the first such day, unless
``replace`` is set. Then those days' rows are rewritten first, the predictions and
monitoring runs that scored them removed (:mod:`serverless_ml.pipelines.history`), and
the segments below score them again: each day ends with exactly one live run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from serverless_ml import defaults, registry, tracking
from serverless_ml.datasets.groups import existing_feature_group
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.datasets.synthetic import Drift, check_rows_and_seed, generate_rows
from serverless_ml.dates import check_date, check_not_future
from serverless_ml.errors import SmlError
from serverless_ml.faults import crash_point
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, ORIGIN_COLUMN, FeatureStore, RowsChangedError, to_utc
from serverless_ml.inference.batch import batch_statistics
from serverless_ml.inference.scoring import score_rows, select_new_rows
from serverless_ml.locks import job_lock
from serverless_ml.pipelines.history import (
    Conflicts,
    HistoryConflict,
    ReplaceReport,
    conflict_from,
    conflict_message,
    event_dates,
    find_conflicts,
    replace_rows,
)
from serverless_ml.pipelines.infer import (
    InferOptions,
    batch_run_tags,
    close_stale_runs,
    load_context,
    log_batch_run,
)
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.progress import ProgressCallback
from serverless_ml.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

MAX_DAYS = 3660
SCORED_AT = dt.time(0, 15)


@dataclass(frozen=True)
class SimulateOptions:
    """Options of a simulation (defaults in :mod:`serverless_ml.defaults`); an
    out-of-range value fails at construction with the CLI's one-line error, before any
    day is written."""

    days: int
    end_date: dt.date
    rows: int = defaults.SIMULATE_ROWS
    seed: int = defaults.DAILY_SEED
    drift: tuple[Drift, ...] = ()
    drift_from: int | None = None
    drift_days: int | None = None
    retrain_every: int | None = None
    retrain_trials: int = defaults.SIMULATE_RETRAIN_TRIALS
    replace: bool = False
    keep_existing: bool = False
    infer: InferOptions = field(default_factory=lambda: InferOptions(figures=False))
    label_delay: int = defaults.SIMULATE_LABEL_DELAY
    """Days after its event day a row's label arrives (0: with the row)."""
    label_share: float = defaults.SIMULATE_LABEL_SHARE
    """The share of rows whose label ever arrives."""

    def __post_init__(self) -> None:
        check_rows_and_seed(self.rows, self.seed)
        if self.replace and self.keep_existing:
            raise SmlError("--replace and --keep-existing exclude each other: rewrite the existing days, or keep them")
        if not 1 <= self.days <= MAX_DAYS:
            raise SmlError(f"--days must be between 1 and {MAX_DAYS}, got {self.days}")
        check_date(self.end_date, "--end-date")
        check_not_future(self.end_date, "--end-date", "a simulated day")
        # The first simulated day too: --days back from --end-date must stay in range.
        check_date(self.first_day, f"the first simulated day (--end-date {self.end_date.isoformat()} minus --days {self.days} + 1)")
        if self.retrain_every is not None and self.retrain_every < 1:
            raise SmlError(f"--retrain-every must be >= 1 (or 0: no retraining), got {self.retrain_every}")
        if self.drift and self.drift_from is None:
            raise SmlError("--drift needs --drift-from DAY (the first day of the drift episode, 1..--days)")
        if self.drift_from is not None and not 1 <= self.drift_from <= self.days:
            raise SmlError(f"--drift-from must be a day between 1 and {self.days}, got {self.drift_from}")
        if self.drift_from is not None and not self.drift:
            raise SmlError("--drift-from needs --drift SPEC (e.g. 'age+15,fare*2')")
        if self.drift_days is not None and self.drift_days < 1:
            raise SmlError(f"--drift-days must be >= 1 (or 0: to the last day), got {self.drift_days}")
        if self.retrain_trials < 1:
            raise SmlError(f"--retrain-trials must be >= 1, got {self.retrain_trials}")
        if not 0 <= self.label_delay <= MAX_DAYS:
            raise SmlError(f"--label-delay must be between 0 and {MAX_DAYS} days, got {self.label_delay}")
        if not 0 <= self.label_share <= 1:  # (NaN too)
            raise SmlError(f"--label-share must be between 0 and 1, got {self.label_share}")

    @property
    def late_labels(self) -> bool:
        """Whether some labels arrive after their rows (or never)."""
        return self.label_delay > 0 or self.label_share < 1

    def label_arrives(self, rows: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
        """The day each row's label arrives (``None``: never), aligned with ``rows``:
        ``label_delay`` days after the event day, for the ``label_share`` of rows drawn by a
        seeded hash of the row's key (the same row is drawn in any frame, in any order)."""
        import numpy as np

        days = event_dates(rows[EVENT_TIME_COLUMN])
        arrives = days.map(lambda day: day + dt.timedelta(days=self.label_delay)).astype(object)
        if self.label_share < 1:
            hashed = pd.util.hash_pandas_object(rows[spec.primary_key].astype(str), index=False,
                                                hash_key=f"sml-labels{self.seed:06d}")
            drawn = hashed.to_numpy(dtype=np.uint64) / float(2**64) < self.label_share
            arrives = arrives.where(drawn, None)
        return arrives

    def without_late_labels(self, rows: pd.DataFrame, spec: DatasetSpec, today: dt.date) -> pd.DataFrame:
        """``rows`` (feature rows) with the labels that have not arrived by ``today`` removed."""
        if not self.late_labels or rows.empty:
            return rows
        arrives = self.label_arrives(rows, spec)
        missing = arrives.map(lambda day: day is None or day > today).to_numpy(dtype=bool)
        if not missing.any():
            return rows
        out = rows.copy()
        label = out[spec.label]
        out[spec.label] = (label.astype("Int64") if spec.label_type == "bigint" else label.astype(object)).mask(missing)
        return out

    @property
    def first_day(self) -> dt.date:
        return self.end_date - dt.timedelta(days=self.days - 1)

    def day(self, index: int) -> dt.date:
        """Day ``index`` (1-based) of the simulation."""
        return self.first_day + dt.timedelta(days=index - 1)

    def drift_on(self, index: int) -> tuple[Drift, ...]:
        if not self.drift or self.drift_from is None or index < self.drift_from:
            return ()
        if self.drift_days is not None and index >= self.drift_from + self.drift_days:
            return ()
        return self.drift


@dataclass
class SimulateReport:
    days: int = 0
    rows_added: int = 0
    runs: int = 0
    retrains: list[str] = field(default_factory=list)
    alert_days: list[str] = field(default_factory=list)
    replaced: ReplaceReport | None = None
    kept_days: int = 0
    runs_relabelled: int = 0
    labels_arrived: int = 0

    def summary(self, spec: DatasetSpec, options: SimulateOptions) -> str:
        lines = [
            f"{spec.name}: simulated {self.days} days ({options.first_day} .. {options.end_date}), "
            f"{self.rows_added} synthetic rows added, {self.runs} monitoring runs logged",
        ]
        if self.replaced is not None:
            lines.append(f"  {self.replaced.summary()}; those days were scored again")
        if options.late_labels:
            arrived = f"{self.labels_arrived} label(s) of days simulated before arrived; " if self.labels_arrived else ""
            waiting = (f"(the last {options.label_delay} day(s)' batches await theirs)" if options.label_delay
                       else "(the rest never arrive)")
            lines.append(f"  labels: {options.label_share:.0%} of the rows, {options.label_delay} day(s) after their day "
                         f"{waiting}; {arrived}realized figures of {self.runs_relabelled} run(s) "
                         "updated to the labels known at the end")
        if self.kept_days:
            lines.append(f"  {self.kept_days} day(s) already had other rows and were kept as they are (--keep-existing)")
        lines += [f"  retrain: {line}" for line in self.retrains]
        if self.alert_days:
            shown = ", ".join(self.alert_days[:10]) + (" ..." if len(self.alert_days) > 10 else "")
            lines.append(f"  alerts on {len(self.alert_days)} day(s): {shown}")
        return "\n".join(lines)


def segments(options: SimulateOptions) -> list[tuple[int, int]]:
    """Inclusive 1-based day ranges between retrains."""
    step = options.retrain_every or options.days
    return [(start, min(start + step - 1, options.days)) for start in range(1, options.days + 1, step)]


def simulate(
    spec: DatasetSpec, store: FeatureStore, settings: Settings, options: SimulateOptions,
    progress: ProgressCallback | None = None, tracker: tracking.Tracking | None = None,
) -> SimulateReport:
    """Replay the days; see the module docstring.

    ``tracker``: the process's tracking (:func:`tracking.configure_tracking`), configured
    here when not given; the retrains and batches of every segment use it.

    ``progress(done, total, label)`` is called when a segment's rows are written (``done``
    the days before it), after each day is scored (``done`` that day's number) and when
    a retrain starts and ends.

    Raises:
        HistoryConflict: days that already exist would change and ``options.replace``
            is not set; nothing is written.
    """

    def tick(done: int, total: int, label: str) -> None:
        if progress is not None:
            progress(done, total, label)

    tracker = tracking.tracking_for(settings, tracker)
    group = existing_feature_group(spec, store)
    check_champion_readable(spec, registry.champion_version(spec.name, tracker.client, spec.dataset_arg))  # before anything is written: scoring needs a champion
    stored = group.read()
    real = stored[stored[ORIGIN_COLUMN] == BACKFILL_ORIGIN]
    # Each day's rows as stored: without the labels that will not have arrived by the end.
    by_day = [options.without_late_labels(
        generate_rows(real, spec, options.day(i), options.rows, options.seed, options.drift_on(i)), spec, options.end_date)
        for i in range(1, options.days + 1)]
    report = SimulateReport()
    ways = ("Use other days (--end-date, --days) or another --seed, or --replace to rewrite those days' rows "
            "and score them again (the predictions and monitoring runs that scored them are removed)")
    # Labels of stored days that have arrived since an earlier run of the simulation (a
    # later --end-date) are arrivals, not changes: stored with the day's rows otherwise
    # as they are, before the days are compared.
    arrived = label_arrivals(spec, stored, pd.concat(by_day, ignore_index=True)) if options.late_labels else stored.iloc[:0]
    # Every day is checked before the first segment is written.
    conflicts = find_conflicts(group, stored, pd.concat(by_day, ignore_index=True), spec, options.seed)
    if len(arrived):
        conflicts = Conflicts(conflicts.changed[~conflicts.changed[spec.primary_key].isin(arrived[spec.primary_key])],
                              conflicts.left_over)
    if len(conflicts) and options.keep_existing:
        # Those days keep the rows they have (and their predictions and runs): none of
        # their new rows is written.
        kept = set(conflicts.days)
        by_day = [rows[~event_dates(rows[EVENT_TIME_COLUMN]).isin(kept).to_numpy()] for rows in by_day]
        report.kept_days = len(kept)
    elif len(conflicts) and not options.replace:
        raise HistoryConflict(conflict_message(spec, conflicts, options.seed, "simulated", ways))
    if len(arrived):
        group.insert(arrived, wait=True)
        report.labels_arrived = len(arrived)
    if len(conflicts) and options.replace:
        days = set(conflicts.days)
        rewritten = pd.concat([rows for rows in by_day if set(event_dates(rows[EVENT_TIME_COLUMN])) & days], ignore_index=True)
        report.replaced = replace_rows(spec, store, settings, group, rewritten, conflicts, "sml simulate", tracker)
        assert report.replaced.written is not None
        report.rows_added += report.replaced.written.inserted
    for first, last in segments(options):
        rows = pd.concat(by_day[first - 1:last], ignore_index=True)
        if not rows.empty:  # empty: every day of the segment was kept (--keep-existing)
            try:
                written = group.insert(rows, wait=True, on_change="refuse")
            except RowsChangedError as exc:  # another writer changed these days since the check
                raise HistoryConflict(conflict_message(spec, conflict_from(exc), options.seed, "simulated", ways)) from None
            report.rows_added += written.inserted
        tick(first - 1, options.days, f"days scored; rows of {_span(options, first, last)} written")
        report.days += last - first + 1
        replay_batches(spec, store, settings, options, first, last, report, tracker, tick)
        if options.retrain_every and last < options.days:
            key = retrain_key(options, last)
            done = previous_retrain(tracker.client, spec, key)
            if done is not None:
                report.retrains.append(f"after {options.day(last)}: done by an earlier run of this simulation "
                                       f"(version {done}), not repeated")
                continue
            tick(last, options.days, f"retraining after {options.day(last)} ({options.retrain_trials} trials)")
            result = train(spec, store, settings, TrainOptions(
                trials=options.retrain_trials, seed=options.seed, folds=0, auto_folds=3, include_synthetic=True,
                quiet=True,
            ), tracker)
            if result.kept:  # its run belongs to an earlier training: not tagged as this retrain
                report.retrains.append(f"after {options.day(last)}: {result.decision.reason}")
            else:
                mark_retrain(tracker.client, result.run_id, key)
                report.retrains.append(
                    f"after {options.day(last)}: version {result.model_version}, holdout accuracy "
                    f"{result.holdout_metrics[registry.HOLDOUT_ACCURACY_METRIC]:.3f}, "
                    f"{'promoted' if result.decision.promote else 'not promoted'}"
                )
            tick(last, options.days, f"retrained: {report.retrains[-1]}")
    if options.late_labels:
        # The days' runs were logged with the labels known on their day: now the realized
        # figures of every run follow the labels known at the end (also when this run
        # logged none: an earlier run may have died in this step, or labels arrived).
        from serverless_ml.pipelines.labels import refresh_realized

        report.runs_relabelled = refresh_realized(spec, store, settings, tracker)
    return report


def label_arrivals(spec: DatasetSpec, stored: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The stored rows whose label is missing and that ``rows`` (the simulation's rows, as
    they are at its end) label, every other column equal: ``stored``'s rows with the label
    set, in ``stored``'s columns."""
    key, label = spec.primary_key, spec.label
    waiting = stored[stored[label].isna()]
    labelled = rows[rows[label].notna()]
    if waiting.empty or labelled.empty:
        return stored.iloc[:0]
    merged = waiting.merge(labelled, on=key, how="inner", suffixes=("", "_now"))
    same = pd.Series(True, index=merged.index)
    for column in stored.columns:
        if column in (key, label) or f"{column}_now" not in merged.columns:
            continue
        old, new = merged[column], merged[f"{column}_now"]
        both_missing = old.isna() & new.isna()
        equal = pd.Series(old.to_numpy(dtype=object) == new.to_numpy(dtype=object), index=merged.index)
        same &= (equal | both_missing).astype(bool)
    chosen = merged[same.to_numpy()]
    out = chosen[list(stored.columns)].copy()
    out[label] = chosen[f"{label}_now"].to_numpy()
    if spec.label_type == "bigint":
        out[label] = out[label].astype("int64")
    return out.reset_index(drop=True)


def known_on(options: SimulateOptions, spec: DatasetSpec, predictions: pd.DataFrame, today: dt.date) -> pd.DataFrame:
    """Predictions with ``actual``/``correct`` as they were known on ``today``: a simulated
    day's row has its label from the day it arrives (:meth:`SimulateOptions.label_arrives`);
    rows of other days are left as they are."""
    if not options.late_labels or predictions.empty:
        return predictions
    days = event_dates(predictions[EVENT_TIME_COLUMN])
    in_span = ((days >= options.first_day) & (days <= options.end_date)).to_numpy(dtype=bool)
    if not in_span.any():
        return predictions
    arrives = options.label_arrives(predictions[in_span], spec)
    late = in_span.copy()
    late[in_span] = arrives.map(lambda day: day is None or day > today).to_numpy(dtype=bool)
    if not late.any():
        return predictions
    out = predictions.copy()
    out["actual"] = out["actual"].astype("Int64" if spec.label_type == "bigint" else object).mask(late)
    out["correct"] = out["correct"].astype("boolean").mask(late)
    return out


def _span(options: SimulateOptions, first: int, last: int) -> str:
    return options.day(first).isoformat() if first == last else f"{options.day(first)}..{options.day(last)}"


def check_champion_readable(spec: DatasetSpec, version: object) -> None:
    """The champion's model files can be read (its MLmodel file): without this a missing
    model was noticed only after the first segment's rows were written."""
    import mlflow

    name = registry.model_name(spec.name)
    number = getattr(version, "version", version)
    try:
        mlflow.models.get_model_info(registry.version_uri(name, number))
    except Exception as exc:  # noqa: BLE001 - any load failure is reported in one line
        raise SmlError(f"champion version {number} of model '{name}' cannot be loaded: {str(exc).splitlines()[0][:200]}") from None


def retrain_key(options: SimulateOptions, last: int) -> str:
    """Identifies the retrain after day ``last``: the day and a digest of what the days up
    to it were made of (first day, rows, seed, drift, retrain settings)."""
    import hashlib

    made_of = repr((options.first_day.isoformat(), options.rows, options.seed, options.drift, options.drift_from,
                    options.drift_days, options.retrain_every, options.retrain_trials))
    return f"{options.day(last).isoformat()} {hashlib.sha256(made_of.encode()).hexdigest()[:12]}"


def previous_retrain(client: MlflowClient, spec: DatasetSpec, key: str) -> str | None:
    """The model version an earlier run of the same simulation registered when it
    retrained at ``key`` (None if it did not get that far).

    Without this, simulating the same days again retrained at every segment end, on all
    the rows the first run had written (later days included), registering new versions
    and possibly promoting one: running the command twice did not leave the state of once.
    """
    experiment = client.get_experiment_by_name(registry.training_experiment(spec.name))
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{registry.RETRAIN_TAG}` = '{key}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].data.tags.get(registry.MODEL_VERSION_TAG, "?") if runs else None


def mark_retrain(client: MlflowClient, run_id: str, key: str) -> None:
    """Tag the retraining run (a crash before this line means the retrain is done again
    by the next run of the simulation, once)."""
    client.set_tag(run_id, registry.RETRAIN_TAG, key)


def replay_batches(
    spec: DatasetSpec,
    store: FeatureStore,
    settings: Settings,
    options: SimulateOptions,
    first: int,
    last: int,
    report: SimulateReport,
    tracker: tracking.Tracking,
    progress: ProgressCallback | None = None,
) -> None:
    """Score and log days ``first..last`` as one segment (one prediction upsert); call
    ``progress`` after each day (see :func:`simulate`)."""

    def tick(index: int, label: str) -> None:
        if progress is not None:
            progress(index, options.days, f"{options.day(index)}: {label}")

    with job_lock(settings.state_dir, f"infer-{spec.name}"):
        ctx = load_context(spec, store, tracker)
        client = tracker.client
        close_stale_runs(ctx.experiment_id, ctx.history, client)
        segment_end = to_utc(options.day(last) + dt.timedelta(days=1))
        pending = select_new_rows(ctx.features, spec, ctx.history[spec.primary_key], ctx.champion.training_keys, segment_end)
        if pending.empty:
            tick(last, f"nothing new to score from {options.day(first)}")
            return
        scored_all = score_rows(ctx.champion.load_model(), pending, spec, ctx.champion.version, segment_end, run_id="")
        history = ctx.history
        batches, run_ids = [], []
        # A simulated run starts and ends at its batch's time: ended "now" it would last
        # up to the whole simulated span in the MLflow UI.
        batch_ms: dict[str, int] = {}
        try:
            for index in range(first, last + 1):
                day = options.day(index)
                day_end = to_utc(day + dt.timedelta(days=1))
                taken = scored_all[EVENT_TIME_COLUMN] < day_end
                batch = scored_all[taken].copy()
                scored_all = scored_all[~taken]
                if batch.empty:
                    tick(index, "nothing new to score")
                    continue
                scored_at = to_utc(dt.datetime.combine(day + dt.timedelta(days=1), SCORED_AT))
                batch["scored_at"] = scored_at
                # What was known on the day: labels arriving later are not in its figures.
                stats = batch_statistics(spec, known_on(options, spec, batch, day), known_on(options, spec, history, day),
                                         ctx.features, ctx.champion, day_end, options.infer.rolling_days, options.infer.rule)
                # The run is created with its tags: one call fewer per day.
                tags = batch_run_tags(spec, stats, ctx.champion, day.isoformat(), ctx.data_version)
                started_ms = int(scored_at.timestamp() * 1000)
                run = client.create_run(
                    ctx.experiment_id, start_time=started_ms,
                    run_name=f"{spec.name}-batch-{day.isoformat()}",
                    tags={registry.SIMULATED_TAG: "true", **tags, **tracking.project_run_tags()},
                )
                batch_ms[run.info.run_id] = started_ms
                run_ids.append(run.info.run_id)
                batch["run_id"] = stats.latest["run_id"] = run.info.run_id
                log_batch_run(spec, run.info, stats, ctx.champion, day.isoformat(), day_end, ctx.data_version,
                              options.infer, tags_logged=True, source=ctx.source,
                              batch_rows=pending[pending[spec.primary_key].isin(batch[spec.primary_key])], client=client)
                if stats.alerts.any:
                    report.alert_days.append(day.isoformat())
                tick(index, f"{len(batch)} rows scored" + (", with an alert" if stats.alerts.any else ""))
                history = pd.concat([history, batch], ignore_index=True) if not history.empty else batch
                batches.append(batch)
            crash_point("simulate.after_runs_logged")
            ctx.target.insert(pd.concat(batches, ignore_index=True), wait=True)
        except BaseException:
            for run_id in run_ids:
                client.set_terminated(run_id, status="FAILED", end_time=batch_ms[run_id])
            raise
        for run_id in run_ids:
            client.set_terminated(run_id, status="FINISHED", end_time=batch_ms[run_id])
        report.runs += len(run_ids)
