"""Feature pipelines: the backfill from a dataset's source and the daily synthetic rows.

Both write to the feature group named after the dataset (``<dataset>``, version from the
spec) and validate everything before writing, so bad input leaves the group untouched.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from serverless_ml.datasets.sources import Source
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.datasets.synthetic import Drift, generate_rows
from serverless_ml.datasets.validation import build_feature_rows
from serverless_ml.errors import NotFoundError
from serverless_ml.feature_store.base import ORIGIN_COLUMN, FeatureGroup, FeatureStore


@dataclass(frozen=True)
class WriteReport:
    """What a feature job wrote."""

    group: str
    rows: int
    inserted: int
    updated: int
    unchanged: int
    data_version: int | None

    def summary(self) -> str:
        return (
            f"{self.group}: {self.rows} rows in, {self.inserted} inserted, {self.updated} updated, "
            f"{self.unchanged} unchanged; table version {self.data_version}"
        )


def feature_group_for(spec: DatasetSpec, store: FeatureStore) -> FeatureGroup:
    """The dataset's feature group (created on its first insert)."""
    return store.get_or_create_feature_group(
        name=spec.name,
        version=spec.version,
        primary_key=[spec.primary_key],
        event_time=EVENT_TIME_COLUMN,
        description=spec.description,
        features=spec.store_schema(),
    )


def existing_feature_group(spec: DatasetSpec, store: FeatureStore) -> FeatureGroup:
    """The dataset's feature group, which must hold data already."""
    group = feature_group_for(spec, store)
    if not group.exists():
        raise NotFoundError(
            f"feature group '{spec.name}' version {spec.version} is empty; run `sml features --dataset {spec.name}` first"
        )
    return group


def backfill(spec: DatasetSpec, store: FeatureStore, source: Source) -> WriteReport:
    """Validate and transform the source's rows and upsert them as ``backfill`` rows.

    Writes: the feature group ``<dataset>``. Running it twice on the same input leaves the
    table at the same version.
    """
    rows = build_feature_rows(source, spec, origin="backfill", event_time=spec.backfill_event_time)
    group = feature_group_for(spec, store)
    result = group.insert(rows, wait=True)
    return WriteReport(group.name, len(rows), result.inserted, result.updated, result.unchanged, result.version)


def add_daily_rows(
    spec: DatasetSpec,
    store: FeatureStore,
    day: dt.date,
    n: int,
    seed: int,
    drift: tuple[Drift, ...] = (),
) -> WriteReport:
    """Generate ``n`` synthetic rows for ``day`` from the real rows and upsert them.

    Reads: the feature group's ``backfill`` rows. Writes: ``synthetic`` rows with event
    time ``day``. The same day and seed twice adds nothing the second time.
    """
    group = existing_feature_group(spec, store)
    stored = group.read()
    real = stored[stored[ORIGIN_COLUMN] == "backfill"]
    rows = generate_rows(real, spec, day, n, seed, drift)
    result = group.insert(rows, wait=True)
    return WriteReport(group.name, len(rows), result.inserted, result.updated, result.unchanged, result.version)
