"""Drift of feature distributions between a reference (the champion's training rows) and a
current sample: two-sample Kolmogorov-Smirnov for numeric features, chi-squared for
categorical ones, and the population stability index (PSI) for both.

Statistics are not computed on samples smaller than :data:`MIN_DRIFT_ROWS`: a KS test on
a handful of rows is noise, and the caller says so in the run instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec

MIN_DRIFT_ROWS = 30
PSI_BINS = 10
_EPS = 1e-4
MISSING = "<missing>"


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature."""

    feature: str
    test: str  # "ks" or "chi2"
    p_value: float
    psi: float
    drifted: bool


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms (counts or shares)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = np.clip(e / e.sum(), _EPS, None)
    a = np.clip(a / a.sum(), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_drift(reference: pd.Series, current: pd.Series, p_threshold: float) -> FeatureDrift:
    """KS p-value and PSI over reference deciles (missing values form their own bin)."""
    ref = reference.astype(float)
    cur = current.astype(float)
    ref_present, cur_present = ref.dropna().to_numpy(), cur.dropna().to_numpy()
    if len(ref_present) and len(cur_present):
        p_value = float(stats.ks_2samp(ref_present, cur_present).pvalue)
    else:
        p_value = 1.0 if len(ref_present) == len(cur_present) == 0 else 0.0
    edges = np.unique(np.quantile(ref_present, np.linspace(0, 1, PSI_BINS + 1))) if len(ref_present) else np.array([0.0])
    inner = edges[1:-1]
    ref_bins = np.bincount(np.searchsorted(inner, ref_present, side="right"), minlength=len(inner) + 1)
    cur_bins = np.bincount(np.searchsorted(inner, cur_present, side="right"), minlength=len(inner) + 1)
    ref_counts = np.append(ref_bins, ref.isna().sum())
    cur_counts = np.append(cur_bins, cur.isna().sum())
    value = psi(ref_counts, cur_counts)
    return FeatureDrift(str(reference.name), "ks", p_value, value, p_value < p_threshold)


def categorical_drift(reference: pd.Series, current: pd.Series, p_threshold: float) -> FeatureDrift:
    """Chi-squared test of homogeneity and PSI over the categories (missing included)."""
    ref = reference.astype(object).where(reference.notna(), MISSING)
    cur = current.astype(object).where(current.notna(), MISSING)
    categories = sorted(set(ref) | set(cur), key=str)
    ref_counts = ref.value_counts().reindex(categories, fill_value=0).to_numpy()
    cur_counts = cur.value_counts().reindex(categories, fill_value=0).to_numpy()
    table = np.vstack([ref_counts, cur_counts])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        p_value = 1.0
    else:
        p_value = float(stats.chi2_contingency(table, correction=False).pvalue)
    value = psi(ref_counts, cur_counts)
    return FeatureDrift(str(reference.name), "chi2", p_value, value, p_value < p_threshold)


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, spec: DatasetSpec, p_threshold: float
) -> list[FeatureDrift]:
    """Drift of every feature of ``spec`` (``current`` must have >= MIN_DRIFT_ROWS rows)."""
    results = []
    for feature in spec.features:
        results.append(_one(reference[feature.name], current[feature.name], feature, p_threshold))
    return results


def _one(reference: pd.Series, current: pd.Series, feature: FeatureSpec, p_threshold: float) -> FeatureDrift:
    if feature.is_numeric:
        return numeric_drift(reference.rename(feature.name), current.rename(feature.name), p_threshold)
    return categorical_drift(reference.rename(feature.name), current.rename(feature.name), p_threshold)


def class_shares(values: pd.Series, classes: list[object]) -> dict[object, float]:
    """Share of each class in ``values`` (0 for absent classes)."""
    counts = values.value_counts()
    total = max(len(values), 1)
    return {cls: float(counts.get(cls, 0)) / total for cls in classes}
