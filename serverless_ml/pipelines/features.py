"""Feature pipelines: the backfill from a dataset's source and the daily synthetic rows.

Both write to the feature group named after the dataset (``<dataset>``, version from the
spec) and validate everything before writing, so bad input leaves the group untouched.

The backfill is an upsert: a corrected source updates its rows. The daily rows are
history: the same date and seed again write nothing, and other arguments for a date and
seed that already have rows are refused (nothing written) unless ``replace`` is set, which
rewrites them and removes the predictions and monitoring runs that scored them, for the
next ``sml infer`` to score again (:mod:`serverless_ml.pipelines.history`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from serverless_ml.datasets.groups import existing_feature_group, feature_group_for
from serverless_ml.datasets.sources import Source
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.datasets.synthetic import Drift, check_rows_and_seed, generate_rows
from serverless_ml.datasets.validation import build_feature_rows, unread_columns
from serverless_ml.dates import check_date, check_not_future
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, ORIGIN_COLUMN, FeatureStore, RowsChangedError
from serverless_ml.pipelines.history import (
    HistoryConflict,
    ReplaceReport,
    conflict_from,
    conflict_message,
    find_conflicts,
    replace_rows,
)
from serverless_ml.settings import Settings


@dataclass(frozen=True)
class WriteReport:
    """What a feature job wrote."""

    group: str
    rows: int
    inserted: int
    updated: int
    unchanged: int
    data_version: int | None
    replaced: ReplaceReport | None = None
    ignored: tuple[str, ...] = ()
    """The source's columns nothing reads (``sml features``; named in a note, as ``sml ingest`` does)."""

    def summary(self) -> str:
        line = (
            f"{self.group}: {self.rows} rows in, {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged; table version {self.data_version}"
        )
        if self.ignored:
            shown = ", ".join(repr(c) for c in self.ignored[:10]) + (", ..." if len(self.ignored) > 10 else "")
            line += f"\n  note: column(s) {shown} not read: not in the spec (key, features, label)"
        if self.replaced is None:
            return line
        again = " (`sml infer` scores them again)" if self.replaced.runs or self.replaced.predictions else ""
        return f"{line}\n  {self.replaced.summary()}{again}"


def backfill(spec: DatasetSpec, store: FeatureStore, source: Source) -> WriteReport:
    """Validate and transform the source's rows and upsert them as ``backfill`` rows.

    Writes: the feature group ``<dataset>``. Running it twice on the same input leaves the
    table at the same version.
    """
    rows = build_feature_rows(source, spec, origin=BACKFILL_ORIGIN, event_time=spec.backfill_event_time)
    group = feature_group_for(spec, store)
    result = group.insert(rows, wait=True)
    # The event-time column is read by `sml ingest` only: a backfill's rows take the spec's date.
    ignored = unread_columns(spec, list(source.frame.columns), spec.event_time_column)
    return WriteReport(group.name, len(rows), result.inserted, result.updated, result.unchanged, result.version,
                       ignored=ignored)


def add_daily_rows(
    spec: DatasetSpec,
    store: FeatureStore,
    day: dt.date,
    n: int,
    seed: int,
    drift: tuple[Drift, ...] = (),
    replace: bool = False,
    settings: Settings | None = None,
) -> WriteReport:
    """Generate ``n`` synthetic rows for ``day`` from the real rows and add them.

    Reads: the feature group's ``backfill`` rows. Writes: ``synthetic`` rows with event
    time ``day``. The same day and seed twice adds nothing the second time.

    Args:
        replace: Rewrite the day's rows of this seed when they exist and differ, and
            remove the predictions and monitoring runs that scored them (needs
            ``settings``: the tracking database and the job locks).

    Raises:
        HistoryConflict: the day already has rows of this seed that these arguments
            would change or leave behind, and ``replace`` is not set; nothing is written.
    """
    check_date(day, "--date")
    check_not_future(day, "--date", "the rows' event time")
    check_rows_and_seed(n, seed)  # before anything is read, whoever calls (the CLI, the scheduler)
    if replace and settings is None:
        raise ValueError("replace=True needs the settings (tracking URI and store directory)")
    group = existing_feature_group(spec, store)
    stored = group.read()
    real = stored[stored[ORIGIN_COLUMN] == BACKFILL_ORIGIN]
    rows = generate_rows(real, spec, day, n, seed, drift)
    conflicts = find_conflicts(group, stored, rows, spec, seed)
    ways = (f"Use another --date or --seed, or --replace to rewrite the day's rows (the predictions and monitoring "
            f"runs that scored them are removed, for `sml infer --dataset {spec.dataset_arg}` to score the day again)")
    if len(conflicts) and not replace:
        raise HistoryConflict(conflict_message(spec, conflicts, seed, "", ways))
    if len(conflicts):
        assert settings is not None
        replaced = replace_rows(spec, store, settings, group, rows, conflicts, "sml daily")
        assert replaced.written is not None
        result = replaced.written
    else:
        replaced = None
        try:
            # The check again, at the store: another writer may have written the day meanwhile.
            result = group.insert(rows, wait=True, on_change="refuse")
        except RowsChangedError as exc:
            raise HistoryConflict(conflict_message(spec, conflict_from(exc), seed, "", ways)) from None
    return WriteReport(group.name, len(rows), result.inserted, result.updated, result.unchanged, result.version, replaced)
