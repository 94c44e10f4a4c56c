"""Past days are history: ``sml daily`` and ``sml simulate`` never rewrite a day silently.

A day's synthetic rows are made from its date, the seed, the number of rows, the drift
and the real rows, so the same arguments make the same rows and a re-run writes nothing.
Other arguments for a day that already has rows would change them, while that day's
predictions and monitoring runs stayed as they were: the site would disagree with the
store. So, before anything is written:

- :func:`find_conflicts` lists the stored rows of those days (and that seed) that the new
  rows would change (:meth:`FeatureGroup.compare`, the check that
  ``insert(on_change="refuse")`` makes at the store) or leave behind (a smaller
  ``--rows``: rows the new arguments no longer make);
- without ``--replace`` the job stops with :class:`HistoryConflict`, one line naming the
  first such day and the ways forward;
- with ``--replace``, :func:`replace_rows` un-scores those rows and rewrites them: the
  monitoring runs that scored any of them are deleted (MLflow's soft delete, tagged
  :data:`serverless_ml.registry.REPLACED_TAG` with why), and so are all the predictions of those runs, so the
  next inference job (or the simulation itself) scores the rows again and logs new runs.

Deleted, not tagged "superseded": every reader of monitoring runs (the site's SQL and
REST readers, ``mlflow.search_runs``, the MLflow UI) already leaves deleted runs out, so
no reader has to learn a new tag to stay right, and a deleted run can still be restored
(``mlflow runs restore``) until ``mlflow gc`` purges it. All the predictions of a deleted
run go with it (not only those of the replaced rows), so that a live run and its
predictions always come and go together.

Order, under the inference job's lock so that no batch is scored in between: (1) the
runs are deleted, (2) their predictions, (3) the left-over rows, then the new rows are
upserted. A crash after (1) or (2) leaves the rows as they were, still differing: the
same command run again finds the same conflicts and completes the steps (a run already
deleted is skipped). A crash after (3) leaves new rows that nothing scored: the next
inference job, or the same simulation run again, scores them. Rewriting the rows first
would leave predictions of rows that no longer exist, and no difference for a re-run
to notice.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from serverless_ml import registry, tracking
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.datasets.synthetic import MAX_ROWS_PER_DAY, synthetic_keys
from serverless_ml.errors import SmlError
from serverless_ml.faults import crash_point
from serverless_ml.feature_store.base import FeatureGroup, FeatureStore, InsertResult, RowsChangedError
from serverless_ml.inference.batch import utc_values
from serverless_ml.inference.realized import scored_through_of
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN, batch_run_ids, predictions_group
from serverless_ml.locks import job_lock
from serverless_ml.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient


class HistoryConflict(SmlError):
    """Rows of days that already exist would change; nothing was written."""


@dataclass(frozen=True)
class Conflicts:
    """Stored rows that new rows for the same days would change or leave behind.

    Attributes:
        changed: Stored rows whose key the new rows have, with other values.
        left_over: Stored rows of the same days and seed whose key the new rows do not
            have (they were made with a larger ``--rows``).
    """

    changed: pd.DataFrame
    left_over: pd.DataFrame

    @property
    def rows(self) -> pd.DataFrame:
        """Every conflicting stored row."""
        parts = [part for part in (self.changed, self.left_over) if not part.empty]
        return pd.concat(parts, ignore_index=True) if parts else self.changed

    @property
    def days(self) -> list[dt.date]:
        """The days with conflicting rows, in order."""
        return sorted(set(event_dates(self.rows[EVENT_TIME_COLUMN]))) if len(self) else []

    def __len__(self) -> int:
        return len(self.changed) + len(self.left_over)


def event_dates(times: pd.Series) -> pd.Series:
    """The UTC dates of event times."""
    return pd.to_datetime(times, utc=True).dt.date


def find_conflicts(group: FeatureGroup, stored: pd.DataFrame, rows: pd.DataFrame, spec: DatasetSpec, seed: int) -> Conflicts:
    """The stored rows that ``rows`` (synthetic rows made with ``seed``) would change or
    leave behind on their days. Writes nothing.

    Args:
        group: The dataset's feature group.
        stored: Its rows, as read (for the rows left behind).
        rows: The new rows.
        spec: The dataset spec.
        seed: The seed ``rows`` were made with (a day's rows of another seed are another
            history, never in conflict).
    """
    changed = group.compare(rows).changed
    return Conflicts(changed, left_over_rows(stored, rows, spec, seed))


def left_over_rows(stored: pd.DataFrame, rows: pd.DataFrame, spec: DatasetSpec, seed: int) -> pd.DataFrame:
    """Stored rows of ``rows``'s days made with ``seed`` whose keys ``rows`` lacks.

    A day's keys for a seed are the first N of a fixed sequence
    (:func:`~serverless_ml.datasets.synthetic.synthetic_keys`), so rows made with a
    larger ``--rows`` are recognised by their keys; rows of other seeds are left alone.
    """
    key = spec.primary_key
    days = set(event_dates(rows[EVENT_TIME_COLUMN]))
    candidates = stored[event_dates(stored[EVENT_TIME_COLUMN]).isin(days).to_numpy() & ~stored[key].isin(rows[key]).to_numpy()]
    if candidates.empty:
        return candidates.reset_index(drop=True)
    own = pd.concat([synthetic_keys(spec, day, seed, MAX_ROWS_PER_DAY) for day in sorted(set(event_dates(candidates[EVENT_TIME_COLUMN])))])
    return candidates[candidates[key].isin(own)].reset_index(drop=True)


def conflict_message(spec: DatasetSpec, conflicts: Conflicts, seed: int, scope: str, ways: str) -> str:
    """The one line a refused job prints: the first day in conflict and the ways forward."""
    days = conflicts.days
    first = days[0].isoformat()
    where = first if len(days) == 1 else f"{len(days)} {scope} days, the first {first},"
    return (
        f"{spec.name}: {where} already {'has' if len(days) == 1 else 'have'} rows for --seed {seed} that these "
        f"arguments would change ({len(conflicts)} stored row(s) differ); nothing was written. {ways}"
    )


def conflict_from(exc: RowsChangedError) -> Conflicts:
    """The conflicts a refused insert reported (rows another writer changed meanwhile)."""
    return Conflicts(exc.changed, exc.changed.iloc[0:0])


@dataclass
class ReplaceReport:
    """What ``--replace`` rewrote and un-scored."""

    days: list[dt.date] = field(default_factory=list)
    rows: int = 0
    predictions: int = 0
    runs: list[str] = field(default_factory=list)
    written: InsertResult | None = None

    def summary(self) -> str:
        span = self.days[0].isoformat() if len(self.days) == 1 else f"{self.days[0]} .. {self.days[-1]}"
        return (
            f"replaced {self.rows} stored row(s) of {len(self.days)} day(s) ({span}); removed {self.predictions} "
            f"prediction(s) and {len(self.runs)} monitoring run(s) that scored them"
        )


def replace_rows(
    spec: DatasetSpec,
    store: FeatureStore,
    settings: Settings,
    group: FeatureGroup,
    rows: pd.DataFrame,
    conflicts: Conflicts,
    command: str,
    tracker: tracking.Tracking | None = None,
) -> ReplaceReport:
    """Un-score the conflicting rows, delete the left-over ones and upsert ``rows`` (the
    new rows of the days in conflict). See the module docstring for the order.

    Args:
        command: What replaces them (``sml daily``...), for the deleted runs' tag.
        tracker: The process's tracking (:func:`tracking.configure_tracking`); configured
            here when not given (``sml daily`` reaches tracking only when it replaces).
    """
    key = spec.primary_key
    with job_lock(settings.state_dir, f"infer-{spec.name}"):
        predictions, runs = unscore_rows(spec, store, settings, conflicts.rows[[key]], command, tracker)
        if not conflicts.left_over.empty:
            group.delete(conflicts.left_over[[key]], wait=True)
        written = group.insert(rows, wait=True)
        crash_point("replace.after_rows_written")
    return ReplaceReport(conflicts.days, len(conflicts), predictions, runs, written)


def unscore_rows(spec: DatasetSpec, store: FeatureStore, settings: Settings, keys: pd.DataFrame, command: str,
                 tracker: tracking.Tracking | None = None) -> tuple[int, list[str]]:
    """Delete the monitoring runs that scored any of ``keys``'s rows, then every
    prediction of those runs (and any other prediction of those rows). Call under the
    inference job's lock.

    Returns:
        How many predictions were deleted, and the runs deleted.
    """
    key = spec.primary_key
    target = predictions_group(spec, store)
    if not target.exists():
        return 0, []
    history = target.read()
    hit = history[key].isin(keys[key]).to_numpy()
    if not hit.any():
        return 0, []
    # A challenger's shadow rows go with the run of their batch (batch_run_ids).
    runs = batch_run_ids(history["run_id"])
    run_ids = sorted({str(r) for r in runs[hit].dropna()} - {""})
    in_runs = runs.isin(run_ids).fillna(False).to_numpy(dtype=bool)
    reason = (f"its rows were rewritten by `{command} --replace` at "
              f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
    if not run_ids:
        doomed = history[hit]
        deleted: list[str] = []
    else:
        # Tracking is reached only when there are runs to delete (as before).
        client = tracking.tracking_for(settings, tracker).client
        experiment = registry.monitoring_experiment(spec.name)
        found = find_runs(client, experiment, run_ids)
        # Served rows those runs took in are answers given, not rows of the replaced
        # days: handed back to the next batch (no run), first, so that a crash after
        # leaves them to a re-run of the same command rather than naming a deleted run.
        kept = served_in_runs(history, found) & in_runs & ~hit
        if kept.any():
            handed_back = history[kept].copy()
            handed_back["run_id"] = None
            target.insert(handed_back.reset_index(drop=True), wait=True)
            crash_point("replace.after_served_handed_back")
        doomed = history[hit | (in_runs & ~kept)]
        deleted = delete_runs(client, experiment, run_ids, reason, found)
    crash_point("replace.after_runs_deleted")
    target.delete(doomed[[key, MODEL_VERSION_COLUMN]], wait=True)
    crash_point("replace.after_predictions_deleted")
    return len(doomed), deleted


def served_in_runs(history: pd.DataFrame, runs: dict[str, Any]) -> np.ndarray:
    """Which predictions rows are served rows a batch took in: the champion's rows of one
    of ``runs`` (its own ``run_id``, not a shadow one) scored before the run's
    :data:`registry.SCORED_AT_TAG` (each keeps its request's time; a run without the tag
    took in none)."""
    out = np.zeros(len(history), dtype=bool)
    run_ids = history["run_id"].astype(object).to_numpy()
    scored_at = utc_values(history["scored_at"])
    for run_id, run in runs.items():
        bound = scored_through_of(run.data.tags)
        if bound is not None:
            out |= (run_ids == run_id) & (scored_at < bound.tz_convert(None).to_datetime64())
    return out


def find_runs(client: MlflowClient, experiment: str, run_ids: list[str]) -> dict[str, Any]:
    """The runs of ``experiment`` among ``run_ids``, deleted ones included (one query
    per 100 runs, not one per run)."""
    from mlflow.entities import ViewType

    found_experiment = client.get_experiment_by_name(experiment)
    if found_experiment is None or not run_ids:
        return {}
    found = {}
    for start in range(0, len(run_ids), 100):
        chunk = run_ids[start:start + 100]
        quoted = ", ".join(f"'{run_id}'" for run_id in chunk)
        for run in client.search_runs(
            [found_experiment.experiment_id], filter_string=f"attributes.run_id IN ({quoted})",
            run_view_type=ViewType.ALL, max_results=len(chunk),
        ):
            found[run.info.run_id] = run
    return found


def delete_runs(client: MlflowClient, experiment: str, run_ids: list[str], reason: str,
                found: dict[str, Any] | None = None) -> list[str]:
    """Tag each run of ``experiment`` with ``reason`` and delete it (MLflow's soft
    delete). A run that is already deleted (by an interrupted replace) or unknown to the
    tracking store is skipped; one left RUNNING by a crashed job is closed as FAILED
    first. ``found``: :func:`find_runs` of them, when looked up already."""
    if not run_ids:
        return []
    if found is None:
        found = find_runs(client, experiment, run_ids)
    deleted = []
    for run_id in run_ids:
        run = found.get(run_id)
        info = run.info if run is not None else None
        if info is None or info.lifecycle_stage == "deleted":
            continue
        if info.status == "RUNNING":
            client.set_terminated(run_id, status="FAILED")
        client.set_tag(run_id, registry.REPLACED_TAG, reason)
        client.delete_run(run_id)
        deleted.append(run_id)
    return deleted
