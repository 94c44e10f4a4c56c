"""Drift of feature distributions between a reference (the champion's training rows) and a
current sample: two-sample Kolmogorov-Smirnov for numeric features, chi-squared for
categorical ones, and the population stability index (PSI) for both.

Statistics are not computed on samples smaller than :data:`MIN_DRIFT_ROWS`: a KS test on
a handful of rows is noise, and the caller says so in the run instead. A current sample
larger than :data:`MAX_DRIFT_ROWS` is replaced by a seeded random subsample of that size:
the reference (a champion's training rows) is far smaller, and the two-sample tests' power
is bounded by the smaller sample (KS's effective size is n*m/(n+m)), so p-values and PSI
barely move while the cost of a million-row batch drops tenfold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from serverless_ml.datasets.spec import DatasetSpec

MIN_DRIFT_ROWS = 30
MAX_DRIFT_ROWS = 100_000
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


@dataclass(frozen=True)
class _NumericReference:
    values: np.ndarray  # present values, sorted
    inner_edges: np.ndarray  # decile edges without the ends
    counts: np.ndarray  # per bin, then missing


@dataclass(frozen=True)
class _CategoricalReference:
    counts: dict[object, int]  # per category, missing as MISSING


def _numeric_reference(values: pd.Series) -> _NumericReference:
    numbers = values.astype(float).to_numpy()
    present = np.sort(numbers[~np.isnan(numbers)])
    edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1))) if present.size else np.array([0.0])
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
    return _NumericReference(present, inner, np.append(counts, np.isnan(numbers).sum()))


def _categorical_counts(values: pd.Series) -> dict[object, int]:
    counts: dict[object, int] = {}
    for value, count in values.value_counts(dropna=False).items():
        if not count:  # a categorical dtype lists its unused categories
            continue
        key = MISSING if pd.isna(value) else value
        counts[key] = counts.get(key, 0) + int(count)
    return counts


class DriftReference:
    """The reference side of every feature's drift statistics, computed once (the
    champion's training rows are the same for every batch it scores)."""

    def __init__(self, reference: pd.DataFrame, spec: DatasetSpec) -> None:
        self.spec = spec
        self.rows = len(reference)
        self._numeric = {f.name: _numeric_reference(reference[f.name]) for f in spec.features if f.is_numeric}
        self._categorical = {
            f.name: _CategoricalReference(_categorical_counts(reference[f.name])) for f in spec.features if not f.is_numeric
        }

    def compare(self, current: pd.DataFrame, p_threshold: float) -> list[FeatureDrift]:
        """Drift of every feature of ``current`` against the reference (a seeded sample of
        :data:`MAX_DRIFT_ROWS` rows of it when larger)."""
        if len(current) > MAX_DRIFT_ROWS:
            current = current.sample(n=MAX_DRIFT_ROWS, random_state=0)
        results = []
        for feature in self.spec.features:
            column = current[feature.name]
            if feature.is_numeric:
                results.append(_compare_numeric(self._numeric[feature.name], feature.name, column, p_threshold))
            else:
                results.append(_compare_categorical(self._categorical[feature.name], feature.name, column, p_threshold))
        return results


def _compare_numeric(ref: _NumericReference, name: str, values: pd.Series, p_threshold: float) -> FeatureDrift:
    numbers = values.astype(float).to_numpy()
    present = numbers[~np.isnan(numbers)]
    if ref.values.size and present.size:
        p_value = float(stats.ks_2samp(ref.values, present).pvalue)
    else:
        p_value = 1.0 if ref.values.size == present.size == 0 else 0.0
    bins = np.bincount(np.searchsorted(ref.inner_edges, present, side="right"), minlength=len(ref.inner_edges) + 1)
    value = psi(ref.counts, np.append(bins, numbers.size - present.size))
    return FeatureDrift(name, "ks", p_value, value, p_value < p_threshold)


def _compare_categorical(ref: _CategoricalReference, name: str, values: pd.Series, p_threshold: float) -> FeatureDrift:
    current = _categorical_counts(values)
    categories = sorted(set(ref.counts) | set(current), key=str)
    table = np.array([[ref.counts.get(c, 0) for c in categories], [current.get(c, 0) for c in categories]])
    nonzero = table[:, table.sum(axis=0) > 0]
    p_value = 1.0 if nonzero.shape[1] < 2 else float(stats.chi2_contingency(nonzero, correction=False).pvalue)
    return FeatureDrift(name, "chi2", p_value, psi(table[0], table[1]), p_value < p_threshold)


def numeric_drift(reference: pd.Series, current: pd.Series, p_threshold: float) -> FeatureDrift:
    """KS p-value and PSI over reference deciles (missing values form their own bin)."""
    return _compare_numeric(_numeric_reference(reference), str(reference.name), current, p_threshold)


def categorical_drift(reference: pd.Series, current: pd.Series, p_threshold: float) -> FeatureDrift:
    """Chi-squared test of homogeneity and PSI over the categories (missing included)."""
    return _compare_categorical(
        _CategoricalReference(_categorical_counts(reference)), str(reference.name), current, p_threshold
    )


def feature_drift(
    reference: pd.DataFrame, current: pd.DataFrame, spec: DatasetSpec, p_threshold: float
) -> list[FeatureDrift]:
    """Drift of every feature of ``spec`` (``current`` must have >= MIN_DRIFT_ROWS rows)."""
    return DriftReference(reference, spec).compare(current, p_threshold)


def class_shares(values: pd.Series, classes: list[object]) -> dict[object, float]:
    """Share of each class in ``values`` (0 for absent classes)."""
    counts = values.value_counts()
    total = max(len(values), 1)
    return {cls: float(counts.get(cls, 0)) / total for cls in classes}
