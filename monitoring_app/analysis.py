"""Pure computations behind the pages: plain functions on frames, no I/O.

Runs frames are those of :meth:`monitoring_app.data_access.SiteData.monitoring_runs`:
one row per monitoring run, ``metrics.<key>`` and ``tags.<key>`` columns and ``as_of``.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec
from serverless_ml.feature_store.base import ORIGIN_COLUMN

WINDOWS = {"30d": 30, "90d": 90, "1y": 365, "all": None}
"""Time windows of the Overview chart: label -> days (``None``: everything)."""

ORIGIN_LABELS = {"backfill": "real", "synthetic": "synthetic", "live": "live"}


def within_window(runs: pd.DataFrame, days: int | None) -> pd.DataFrame:
    """Runs whose batch date is within ``days`` of the newest batch (all when ``None``)."""
    if days is None or runs.empty:
        return runs
    end = runs["as_of"].max()
    return runs[runs["as_of"] > end - pd.Timedelta(days=days)]


def parse_class(value: Any, spec: DatasetSpec) -> Any | None:
    """A label as a tag stores it (a string) back to one of the spec's classes, or ``None``."""
    if value is None:
        return None
    text = str(value).strip()
    for cls in spec.classes:
        if str(cls) == text:
            return cls
    return None


def class_label(value: Any, spec: DatasetSpec) -> str:
    """How a class is shown: its name (``survived``), or the value when it has none."""
    try:
        return spec.class_name(value)
    except ValueError:
        return str(value)


@dataclass(frozen=True)
class Headline:
    """The Overview's numbers."""

    batches: int
    rows_scored: int
    latest_batch: str
    champion_version: int | None
    champion_holdout: float | None
    days_since_retrain: int | None
    alerts_latest: bool
    alert_batches: int


def headline(runs: pd.DataFrame, champion: Any | None, now: dt.datetime) -> Headline:
    """Rows scored, batches, the latest batch date, the champion and days since it was trained.

    Args:
        runs: Monitoring runs (may be empty).
        champion: The champion :class:`~monitoring_app.data_access.ModelVersion`, if any.
        now: The current time (timezone-aware).
    """
    rows = runs["metrics.rows_scored"].fillna(0).sum() if "metrics.rows_scored" in runs else 0
    latest = runs.iloc[-1] if not runs.empty else None
    alerts = runs["tags.alert"].eq("true") if "tags.alert" in runs else pd.Series(dtype=bool)
    days = None
    if champion is not None:
        days = max(0, (now - champion.created).days)
    return Headline(
        batches=len(runs),
        rows_scored=int(rows),
        latest_batch=str(latest["tags.as_of"]) if latest is not None else "-",
        champion_version=champion.version if champion is not None else None,
        champion_holdout=champion.holdout_accuracy if champion is not None else None,
        days_since_retrain=days,
        alerts_latest=bool(alerts.iloc[-1]) if len(alerts) else False,
        alert_batches=int(alerts.sum()),
    )


@dataclass(frozen=True)
class LatestPrediction:
    """The newest scored row, as the latest monitoring run recorded it."""

    as_of: str
    key: str
    prediction: Any | None
    actual: Any | None
    probability: float | None
    model_version: str | None

    @property
    def correct(self) -> bool | None:
        if self.prediction is None or self.actual is None:
            return None
        return self.prediction == self.actual


def latest_prediction(runs: pd.DataFrame, spec: DatasetSpec) -> LatestPrediction | None:
    """The latest run's ``latest_*`` tags and ``latest_probability`` metric."""
    if runs.empty:
        return None
    last = runs.iloc[-1]
    probability = last.get("metrics.latest_probability")
    return LatestPrediction(
        as_of=str(last.get("tags.as_of")),
        key=str(last.get("tags.latest_key")),
        prediction=parse_class(last.get("tags.latest_prediction"), spec),
        actual=parse_class(last.get("tags.latest_actual"), spec),
        probability=None if probability is None or pd.isna(probability) else float(probability),
        model_version=last.get("tags.model_version"),
    )


def version_changes(runs: pd.DataFrame) -> pd.DataFrame:
    """The batches where the model version differs from the batch before (``as_of``,
    ``model_version``); the first batch is not a change."""
    if runs.empty or "tags.model_version" not in runs:
        return pd.DataFrame(columns=["as_of", "model_version"])
    versions = runs["tags.model_version"]
    changed = versions.ne(versions.shift()) & versions.shift().notna()
    return pd.DataFrame({"as_of": runs.loc[changed, "as_of"], "model_version": versions[changed]})


# --- the Data page --------------------------------------------------------------------------


def origin_label(origin: str) -> str:
    return ORIGIN_LABELS.get(origin, origin)


def feature_summary(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Per feature: type, schema, missing values among real and synthetic rows, and a
    short description of the values (range and mean, or the most common categories)."""
    real = rows[rows[ORIGIN_COLUMN] == "backfill"]
    synthetic = rows[rows[ORIGIN_COLUMN] != "backfill"]
    out = []
    for feature in spec.features:
        column = rows[feature.name]
        out.append({
            "feature": feature.name,
            "type": feature.type,
            "schema": schema_text(feature),
            "missing (real)": _missing_text(real[feature.name]),
            "missing (synthetic)": _missing_text(synthetic[feature.name]),
            "values": _values_text(column, feature),
            "description": feature.description,
        })
    return pd.DataFrame(out)


def schema_text(feature: FeatureSpec) -> str:
    """The schema's constraint on a feature, in words."""
    parts = []
    if feature.categories:
        parts.append("one of " + ", ".join(feature.categories))
    if feature.min is not None or feature.max is not None:
        low = "-inf" if feature.min is None else f"{feature.min:g}"
        high = "inf" if feature.max is None else f"{feature.max:g}"
        parts.append(f"{low} to {high}")
    parts.append("may be missing" if feature.nullable else "required")
    return "; ".join(parts)


def _missing_text(column: pd.Series) -> str:
    if column.empty:
        return "no rows"
    missing = int(column.isna().sum())
    return f"{missing} ({missing / len(column):.1%})"


def _values_text(column: pd.Series, feature: FeatureSpec) -> str:
    present = column.dropna()
    if present.empty:
        return "no values"
    if feature.is_numeric:
        values = present.astype(float)
        return f"{values.min():g} to {values.max():g}, mean {values.mean():.3g}"
    counts = present.astype(str).value_counts()
    top = ", ".join(f"{k} {v / len(present):.0%}" for k, v in counts.head(4).items())
    return top + (", ..." if len(counts) > 4 else "")


def encoded_features(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Numeric features as they are and categorical ones one-hot (``feature=value``
    columns, a missing value being its own ``feature=<missing>`` column when present)."""
    parts = {}
    for feature in spec.features:
        column = rows[feature.name]
        if feature.is_numeric:
            parts[feature.name] = pd.to_numeric(column, errors="coerce").astype(float)
            continue
        values = list(feature.categories or sorted(column.dropna().astype(str).unique()))
        for value in values:
            parts[f"{feature.name}={value}"] = (column.astype(object) == value).astype(float)
        if column.isna().any():
            parts[f"{feature.name}=<missing>"] = column.isna().astype(float)
    return pd.DataFrame(parts, index=rows.index)


def label_correlations(rows: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Pearson correlation of each (encoded) feature with each class indicator: rows are
    features, columns class names. Missing numeric values are left out pairwise; a
    constant column has no correlation (NaN)."""
    features = encoded_features(rows, spec)
    out = {}
    for cls in spec.classes:
        indicator = (rows[spec.label] == cls).astype(float)
        out[class_label(cls, spec)] = features.apply(lambda col, ind=indicator: _corr(col, ind))
    return pd.DataFrame(out, index=features.columns)


def _corr(a: pd.Series, b: pd.Series) -> float:
    mask = a.notna() & b.notna()
    if mask.sum() < 3:
        return math.nan
    x, y = a[mask].to_numpy(), b[mask].to_numpy()
    if np.std(x) == 0 or np.std(y) == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def select_origin(rows: pd.DataFrame, which: str) -> pd.DataFrame:
    """``real`` (backfill), ``synthetic`` (synthetic and live) or ``all`` rows."""
    if which == "real":
        return rows[rows[ORIGIN_COLUMN] == "backfill"]
    if which == "synthetic":
        return rows[rows[ORIGIN_COLUMN] != "backfill"]
    return rows
