"""Drift of feature distributions between a reference (the champion's training rows) and a
current window of scored rows: one test per feature, corrected for testing many features at
once, and an effect size that must be large enough to matter.

The design (measured by ``python -m bench drift`` for false alarms and power on datasets
it was not tuned to; the figures are in bench/results/drift.json):

- **Two windows.** *Recent* (:func:`window_start`): the most recent days up to the batch
  pooled, newest first, until they hold at least :data:`WINDOW_ROWS` rows (a batch that
  large is judged alone), for a fresh shift; *rolling*: every row of the lookback (the
  rolling window, 30 days by default), when it holds more, for a smaller shift that
  persists. Days older than the lookback are never pooled, and without
  :data:`MIN_ROWS` rows in it drift is "not computed". Pooling only as far as
  needed keeps a fresh shift from being diluted by a month of older rows (the old rule
  tested small batches against the whole 30-day window, and missed a +1.5 shift of
  Iris's petal length for 10 days), and a fixed minimum keeps the first days of a history
  from being judged on 10 rows.
- **The tests.** Numeric features: Mann-Whitney U (a shift of location: the most common
  drift, and nearly as powerful as a t-test on normal data without its assumptions) and
  two-sample Kolmogorov-Smirnov (any change of shape), plus Fisher's exact test of the
  missing share when either side has missing values; the feature's p-value is the
  smallest of them times their number (Bonferroni). Categorical features: the chi-squared
  test of homogeneity over the categories (missing is a category), with categories whose
  expected count in the window is under 5 pooled into one, so rare categories cannot make
  a p-value from a handful of rows.
- **Many features.** The p-values of all features in both windows are adjusted together
  by a *weighted* Benjamini-Hochberg procedure (Genovese, Roeder and Wasserman, 2006:
  the p-values are divided by weights that average 1, which keeps the false discovery
  rate at the nominal level). The recent window weighs :data:`WINDOW_WEIGHTS` ``recent``
  (1.5) and the rolling window ``rolling`` (0.5): a fresh shift must be found within days
  and the recent window holds only a few of them, while a shift that persists gives the
  rolling window every later day to show it. A feature drifted when its adjusted p-value
  is below the rule's ``drift_p_value`` *and* its effect size is at least the rule's
  ``drift_min_effect``. The default ``drift_p_value`` (0.01) and the weights were chosen
  on ``python -m bench drift`` (40 simulations per dataset and kind, 10 rows a day): the
  smallest level whose +1 std shifts are found within 3 days in at least 95 % of the
  episodes of every dataset, at under 1 % false alarms per clean day.
- **Effect size.** Numeric: the Wasserstein (earth mover's) distance between the two
  samples divided by the reference's standard deviation (how far, in standard deviations,
  the mass moved), or the change of the missing share when that is larger. Categorical:
  the total variation distance between the category shares (half their L1 distance: the
  share of rows that would have to change category). Both read as "share of a standard
  unit", so one threshold serves both. With thousands of rows every test becomes
  significant; the effect size keeps a trivial shift from raising an alert.
- **PSI** over the reference's deciles is still logged for every feature (a familiar
  figure), but it is not part of the rule: on a window of 30 rows its noise alone is
  about 0.3.

A current sample larger than :data:`MAX_DRIFT_ROWS` is replaced by a seeded random
subsample of that size: the tests' power is bounded by the smaller sample, so p-values
barely move while the cost of a million-row batch drops tenfold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec

MIN_ROWS = 30
"""Fewest rows a drift window may hold: below, drift is "not computed"."""
WINDOW_ROWS = 30
"""The newest days are pooled until the window holds at least this many rows."""
WINDOW_WEIGHTS = {"recent": 1.5, "rolling": 0.5}
"""Weights of the weighted Benjamini-Hochberg adjustment per window (normalised to average
1 over the tests of a batch: a window judged alone weighs 1). Other labels weigh 1."""
MAX_DRIFT_ROWS = 100_000
PSI_BINS = 10
MIN_EXPECTED = 5.0
BULK_QUANTILE = 0.01
"""The bulk of a numeric feature, for its effect size: between these quantiles of the reference."""
PERMUTATIONS = 10_000
"""Random tables behind a categorical feature's permutation p-value (its smallest is 1/10,001)..."""
PERMUTATION_CELLS = 20_000_000
"""...fewer with many categories: at most this many table cells in all (2,000 tables of
10,000 categories), at least 1,000 tables."""
PERMUTATION_STEPS = 5_000_000
"""...and at most this many draw steps (a step per category or per row, whichever is fewer)."""
PERMUTATION_CHUNK_CELLS = 2_000_000
"""Tables drawn at a time (memory: 16 bytes a cell)."""
_EPS = 1e-4
MISSING = "<missing>"


@dataclass(frozen=True)
class FeatureDrift:
    """Drift of one feature.

    Attributes:
        feature: The feature's name.
        test: ``"mwu+ks"`` (numeric, ``+missing`` when the missing share was tested too)
            or ``"chi2"`` (categorical).
        statistic: The test statistic behind the smallest p-value (KS's D, the
            Mann-Whitney effect ``|2*AUC - 1|``, or chi-squared).
        p_value: The feature's p-value (Bonferroni over its tests).
        p_adjusted: Benjamini-Hochberg adjusted over all features and windows (weighted
            by window, see :data:`WINDOW_WEIGHTS`).
        effect: Effect size (see the module docstring).
        effect_name: ``"wasserstein_std"``, ``"missing_share"`` or ``"total_variation"``.
        psi: Population stability index (logged, not used by the rule).
        drifted: ``p_adjusted < p threshold`` and ``effect >= min effect``.
        window: The window these figures are of (``recent`` or ``rolling``).
    """

    feature: str
    test: str
    statistic: float
    p_value: float
    p_adjusted: float
    effect: float
    effect_name: str
    psi: float
    drifted: bool
    window: str = "window"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of two histograms (counts or shares)."""
    e = np.asarray(expected, dtype=float)
    a = np.asarray(actual, dtype=float)
    e = np.clip(e / e.sum(), _EPS, None)
    a = np.clip(a / a.sum(), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def benjamini_hochberg(p_values: Sequence[float], weights: Sequence[float] | None = None) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up, monotone, capped at 1).

    With ``weights`` (positive, normalised here to average 1), the weighted procedure of
    Genovese, Roeder and Wasserman (2006): the procedure runs on ``p / weight``, so a test
    with weight 1.5 is judged at 1.5 times the level and one with 0.5 at half of it."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    if weights is not None:
        w = np.asarray(weights, dtype=float)
        if w.shape != p.shape or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError("weights must be positive, one per p-value")
        p = p / (w / w.mean())
    order = np.argsort(p)
    ranked = p[order] * p.size / np.arange(1, p.size + 1)
    adjusted = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty_like(p)
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass(frozen=True)
class _Result:
    """One feature's test before the correction for many features."""

    test: str
    statistic: float
    p_value: float
    effect: float
    effect_name: str
    psi: float


@dataclass(frozen=True)
class _NumericReference:
    values: np.ndarray  # present values, sorted
    missing: int
    std: float
    inner_edges: np.ndarray  # decile edges without the ends
    counts: np.ndarray  # per bin, then missing
    bulk: tuple[float, float] = (math.nan, math.nan)  # the 1st and 99th percentiles
    bulk_std: float = 0.0  # the standard deviation of the values clipped to them


@dataclass(frozen=True)
class _CategoricalReference:
    counts: dict[object, int]  # per category, missing as MISSING


def _numeric_reference(values: pd.Series) -> _NumericReference:
    numbers = values.astype(float).to_numpy()
    present = np.sort(numbers[~np.isnan(numbers)])
    edges = np.unique(np.quantile(present, np.linspace(0, 1, PSI_BINS + 1))) if present.size else np.array([0.0])
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
    std = float(present.std()) if present.size > 1 else 0.0
    missing = int(np.isnan(numbers).sum())
    if present.size > 1:
        low, high = (float(q) for q in np.quantile(present, [BULK_QUANTILE, 1 - BULK_QUANTILE]))
        bulk_std = float(np.clip(present, low, high).std())
    else:
        low = high = math.nan
        bulk_std = 0.0
    return _NumericReference(present, missing, std, inner, np.append(counts, missing), (low, high), bulk_std)


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

    def compare(self, current: pd.DataFrame, p_threshold: float, min_effect: float = 0.0) -> list[FeatureDrift]:
        """Drift of every feature of ``current`` against the reference: a feature drifted
        when its Benjamini-Hochberg adjusted p-value is below ``p_threshold`` and its
        effect size is at least ``min_effect``."""
        return self.compare_windows([("window", current)], p_threshold, min_effect)

    def compare_windows(
        self, windows: Sequence[tuple[str, pd.DataFrame]], p_threshold: float, min_effect: float = 0.0
    ) -> list[FeatureDrift]:
        """Drift of every feature over one or more windows (e.g. the recent days and the
        whole rolling window): the p-values of every (window, feature) pair are adjusted
        together (Benjamini-Hochberg, weighted by :data:`WINDOW_WEIGHTS`), and each
        feature reports the window where it drifted, or else the one closest to it
        (smallest adjusted p-value).

        A window larger than :data:`MAX_DRIFT_ROWS` is replaced by a seeded sample.
        """
        raw: list[tuple[str, FeatureSpec, _Result]] = []
        for label, current in windows:
            if len(current) > MAX_DRIFT_ROWS:
                current = current.sample(n=MAX_DRIFT_ROWS, random_state=0)
            for feature in self.spec.features:
                column = current[feature.name]
                if feature.is_numeric:
                    raw.append((label, feature, _compare_numeric(self._numeric[feature.name], column)))
                else:
                    raw.append((label, feature, _compare_categorical(self._categorical[feature.name], column)))
        adjusted = benjamini_hochberg(
            [r.p_value for _, _, r in raw], [WINDOW_WEIGHTS.get(label, 1.0) for label, _, _ in raw]
        )
        best: dict[str, FeatureDrift] = {}
        for (label, feature, r), p_adj in zip(raw, adjusted, strict=True):
            item = FeatureDrift(
                feature.name, r.test, r.statistic, r.p_value, float(p_adj), r.effect, r.effect_name, r.psi,
                bool(p_adj < p_threshold and r.effect >= min_effect), label,
            )
            held = best.get(feature.name)
            if held is None or (item.drifted, -item.p_adjusted) > (held.drifted, -held.p_adjusted):
                best[feature.name] = item
        return [best[f.name] for f in self.spec.features]


def _wasserstein_std(reference: np.ndarray, current: np.ndarray, std: float) -> float:
    """Wasserstein distance in reference standard deviations (a constant reference: in
    units of its value's magnitude, at least 1)."""
    from scipy import stats

    distance = float(stats.wasserstein_distance(reference, current))
    return distance / (std if std > 0 else max(abs(float(reference[0])), 1.0))


def _numeric_effect(ref: _NumericReference, current: np.ndarray) -> float:
    """The larger of the Wasserstein distance in reference standard deviations and the
    same for the bulk: both samples clipped to the reference's 1st and 99th percentiles,
    in the clipped reference's standard deviation. On a heavy-tailed feature a few huge
    values make the standard deviation, so a shift of all the others stayed under any
    threshold (found by a user trial: every ordinary value tripled, p about 1e-15, effect
    0.06, no alert, and the more rows the smaller); on a normal feature both are alike."""
    plain = _wasserstein_std(ref.values, current, ref.std)
    low, high = ref.bulk
    if not ref.bulk_std > 0 or not math.isfinite(low):
        return plain
    from scipy import stats

    bulk = float(stats.wasserstein_distance(np.clip(ref.values, low, high), np.clip(current, low, high))) / ref.bulk_std
    return max(plain, bulk)


def _compare_numeric(ref: _NumericReference, values: pd.Series) -> _Result:
    from scipy import stats

    numbers = values.astype(float).to_numpy()
    present = numbers[~np.isnan(numbers)]
    missing = int(numbers.size - present.size)
    tests: list[tuple[str, float, float]] = []  # (name, statistic, p-value)
    if ref.values.size and present.size:
        ks = stats.ks_2samp(ref.values, present)
        tests.append(("ks", float(ks.statistic), float(ks.pvalue)))
        mwu = stats.mannwhitneyu(ref.values, present, alternative="two-sided", method="asymptotic")
        auc = float(mwu.statistic) / (ref.values.size * present.size)
        tests.append(("mwu", abs(2 * auc - 1), float(mwu.pvalue) if not math.isnan(mwu.pvalue) else 1.0))
        effect, effect_name = _numeric_effect(ref, present), "wasserstein_std"
    elif ref.values.size == present.size == 0:
        effect, effect_name = 0.0, "wasserstein_std"
    else:
        # Values on one side only: the missing-share test below is all there is to judge
        # (a feature with 3 values in 640 training rows is all missing in most windows).
        effect, effect_name = 0.0, "missing_share"
    test = "mwu+ks"
    ref_total = ref.values.size + ref.missing
    if (ref.missing or missing) and ref_total and numbers.size:
        table = [[ref.missing, ref.values.size], [missing, present.size]]
        tests.append(("missing", abs(missing / numbers.size - ref.missing / ref_total), float(stats.fisher_exact(table).pvalue)))
        test += "+missing"
        share_change = abs(missing / numbers.size - ref.missing / ref_total)
        if share_change > effect:
            effect, effect_name = share_change, "missing_share"
    if tests:
        _name, statistic, p_min = min(tests, key=lambda t: t[2])
        p_value = min(1.0, p_min * len(tests))
    else:
        statistic, p_value = 0.0, 1.0
    bins = np.bincount(np.searchsorted(ref.inner_edges, present, side="right"), minlength=len(ref.inner_edges) + 1)
    value = psi(ref.counts, np.append(bins, missing))
    return _Result(test, statistic, p_value, effect, effect_name, value)


def _count_table(reference: dict[object, int], current: dict[object, int]) -> np.ndarray:
    """The 2 x k table of counts (reference, current) over the categories of either side."""
    categories = sorted(set(reference) | set(current), key=str)
    return np.array([[reference.get(c, 0) for c in categories], [current.get(c, 0) for c in categories]], dtype=float)


def pooled_table(reference: dict[object, int], current: dict[object, int]) -> np.ndarray:
    """The 2 x k table (reference, current) over the categories of either side, with the
    categories whose expected count in the current sample is under :data:`MIN_EXPECTED`
    pooled into one column, together with the next-rarest categories until that column's
    expected count reaches it (Cochran's rule for the chi-squared approximation)."""
    return _pool_rare(_count_table(reference, current))


def _pool_rare(table: np.ndarray) -> np.ndarray:
    """:func:`pooled_table` of a table of counts."""
    table = table[:, table.sum(axis=0) > 0]
    if table.size == 0 or table[1].sum() == 0:
        return table
    expected = table.sum(axis=0) * table[1].sum() / table.sum()
    order = np.argsort(expected, kind="stable")
    pooled = 0
    while pooled < len(order) and (expected[order[pooled]] < MIN_EXPECTED or (0 < pooled and expected[order[:pooled]].sum() < MIN_EXPECTED)):
        pooled += 1
    if pooled == 0:
        return table
    merged = table[:, order[:pooled]].sum(axis=1, keepdims=True)
    return np.column_stack([table[:, np.sort(order[pooled:])], merged])


def _chi2_statistics(current: np.ndarray, totals: np.ndarray, rows: float, reference_rows: float) -> np.ndarray:
    """The chi-squared statistic of homogeneity of each 2 x k table (reference = ``totals``
    - current, current), one table per row of ``current``; ``totals`` > 0."""
    both = rows + reference_rows
    expected = totals * rows / both
    return np.sum((current - expected) ** 2 * (both * both / (totals * rows * reference_rows)), axis=-1)


def _table_statistic(table: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """A 2 x k table of counts without its empty categories, its rows per side (current,
    reference) and its chi-squared statistic (0 when a side is empty)."""
    table = table[:, table.sum(axis=0) > 0]
    rows, reference_rows = float(table[1].sum()), float(table[0].sum())
    if not rows or not reference_rows:
        return table, rows, reference_rows, 0.0
    return table, rows, reference_rows, float(_chi2_statistics(table[1], table.sum(axis=0), rows, reference_rows))


def permutation_p_value(table: np.ndarray, permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """The p-value of the chi-squared statistic of a 2 x k table of counts (reference,
    current) by permutation: the share of random tables with the same category totals and
    the same rows per side (the rows' sides shuffled: multivariate hypergeometric draws)
    whose statistic is at least the table's, counting the table itself. Valid for any
    counts, where the chi-squared distribution needs expected counts of 5 or more.
    Seeded: the same table gives the same p-value."""
    table, rows, reference_rows, observed = _table_statistic(table)
    totals = table.sum(axis=0)
    if table.shape[1] < 2 or rows == 0 or reference_rows == 0:
        return 1.0
    # Bounded work and memory with many categories (at least 1,000 tables).
    # "count" costs a step per drawn row, "marginals" one per category: the cheaper one.
    method: Literal["count", "marginals"] = "count" if rows < totals.size else "marginals"
    steps = min(rows, totals.size)
    permutations = int(min(permutations, max(1_000, min(PERMUTATION_CELLS // totals.size, PERMUTATION_STEPS // int(steps)))))
    rng = np.random.default_rng(seed)
    at_least = 0
    chunk = max(1, min(permutations, PERMUTATION_CHUNK_CELLS // totals.size))
    for start in range(0, permutations, chunk):
        size = min(chunk, permutations - start)
        draws = rng.multivariate_hypergeometric(totals.astype(np.int64), int(rows), size=size, method=method)
        at_least += int(np.sum(_chi2_statistics(draws.astype(float), totals, rows, reference_rows) >= observed * (1 - 1e-12)))
    return float((1 + at_least) / (1 + permutations))


def _compare_categorical(ref: _CategoricalReference, values: pd.Series) -> _Result:
    from scipy import stats

    full = _count_table(ref.counts, _categorical_counts(values))
    table = _pool_rare(full)
    if full.shape[1] < 2 or full[1].sum() == 0 or full[0].sum() == 0:
        statistic, p_value = 0.0, 1.0
    elif table.shape[1] >= max(2, full.shape[1] / 2):  # (every category of the table has a row)
        # Every category expected 5 times or more, or a few rare ones pooled: the
        # chi-squared distribution holds.
        result = stats.chi2_contingency(table, correction=False)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    else:
        # Most categories rare: pooling keeps the chi-squared distribution, but a window in
        # which no category is expected 5 times pools them all into one column and can
        # see nothing (found by a user trial: 200 cities, their shares reversed, p = 1.0).
        # The permutation test of the unpooled table holds at any count; the feature's
        # p-value is the smaller of the two, times two (Bonferroni, as for numbers). Only
        # here: with few categories the factor two cost power that pooling had not
        # (`python -m bench drift`: Titanic's +20-point category shifts found by the end
        # of the episode in 60 % of 40 episodes instead of 68 %).
        pooled = float(stats.chi2_contingency(table, correction=False).pvalue) if table.shape[1] >= 2 else 1.0
        permuted = permutation_p_value(full)
        p_value = min(1.0, 2 * min(pooled, permuted))
        statistic = _table_statistic(full)[3]
    shares = full / np.maximum(full.sum(axis=1, keepdims=True), 1)
    effect = float(np.abs(shares[0] - shares[1]).sum() / 2)
    return _Result("chi2", statistic, p_value, effect, "total_variation", psi(full[0], full[1]))


def in_lookback(event_days: np.ndarray, as_of_day: np.datetime64, lookback_days: int) -> np.ndarray:
    """Which rows fall on the ``lookback_days`` days ending with ``as_of_day`` (a mask)."""
    as_of_day = as_of_day.astype("datetime64[D]")
    days = np.asarray(event_days, dtype="datetime64[D]")
    return (days >= as_of_day - np.timedelta64(lookback_days - 1, "D")) & (days <= as_of_day)


def window_start(
    event_days: np.ndarray, as_of_day: np.datetime64, target_rows: int = WINDOW_ROWS,
    lookback_days: int = 30, min_rows: int = MIN_ROWS,
) -> np.datetime64 | None:
    """The first day of the drift window: the newest days up to ``as_of_day`` pooled,
    newest first, until they hold ``target_rows`` rows, never reaching back more than
    ``lookback_days`` (the as-of day counts as one). When the whole lookback holds fewer
    than ``target_rows`` it is the window if it holds ``min_rows``; else None (drift is
    not computed).

    Args:
        event_days: Each row's event day (``datetime64[D]``).
        as_of_day: The batch's day (rows after it are not in the window).
        target_rows: Rows the window is pooled up to.
        lookback_days: Days the window may reach back.
        min_rows: Fewest rows a window may hold.
    """
    as_of_day = as_of_day.astype("datetime64[D]")
    event_days = np.asarray(event_days, dtype="datetime64[D]")
    days, counts = np.unique(event_days[in_lookback(event_days, as_of_day, lookback_days)], return_counts=True)
    return start_of_counts(days, counts, target_rows, min_rows)


def start_of_counts(days: np.ndarray, counts: np.ndarray, target_rows: int = WINDOW_ROWS, min_rows: int = MIN_ROWS) -> np.datetime64 | None:
    """:func:`window_start` of the lookback's rows given as distinct ``days`` (sorted) and
    each day's rows (``counts``), so a job counting rows day by day as they stream by
    needs no array of every row's day."""
    if int(np.sum(counts)) < max(min_rows, 1):
        return None
    newest_first = np.cumsum(counts[::-1])
    if newest_first[-1] < target_rows:
        return days[0]
    return days[::-1][int(np.argmax(newest_first >= target_rows))]


@dataclass(frozen=True)
class Windows:
    """Which rows the drift of a batch is judged on (masks over the rows given)."""

    recent: np.ndarray
    recent_first_day: np.datetime64
    rolling: np.ndarray | None  # None when it holds no more rows than ``recent``
    rolling_first_day: np.datetime64 | None


def drift_windows(event_days: np.ndarray, as_of_day: np.datetime64, lookback_days: int = 30) -> Windows | None:
    """The recent and the rolling window of a batch on ``as_of_day`` (see the module
    docstring), as masks over ``event_days``; None when drift cannot be computed."""
    event_days = np.asarray(event_days, dtype="datetime64[D]")
    as_of_day = as_of_day.astype("datetime64[D]")
    first = window_start(event_days, as_of_day, lookback_days=lookback_days)
    if first is None:
        return None
    recent = (event_days >= first) & (event_days <= as_of_day)
    lookback = in_lookback(event_days, as_of_day, lookback_days)
    if int(lookback.sum()) > int(recent.sum()):
        return Windows(recent, first, lookback, event_days[lookback].min())
    return Windows(recent, first, None, None)


@dataclass(frozen=True)
class DayWindows:
    """The drift windows of a batch as days (the rows counted day by day)."""

    recent_first_day: np.datetime64
    rolling_first_day: np.datetime64 | None  # None when it holds no more rows than ``recent``


def drift_windows_of_counts(
    day_counts: dict[np.datetime64, int], as_of_day: np.datetime64, lookback_days: int = 30
) -> DayWindows | None:
    """:func:`drift_windows` of rows counted per event day (``day_counts``): the same
    windows, as their first days."""
    as_of_day = as_of_day.astype("datetime64[D]")
    days = np.array(sorted(day_counts), dtype="datetime64[D]")
    counts = np.array([day_counts[d] for d in sorted(day_counts)], dtype=np.int64)
    inside = in_lookback(days, as_of_day, lookback_days) if days.size else np.zeros(0, dtype=bool)
    days, counts = days[inside], counts[inside]
    first = start_of_counts(days, counts)
    if first is None:
        return None
    if int(counts.sum()) > int(counts[days >= first].sum()):
        return DayWindows(first, days.min())
    return DayWindows(first, None)


def class_shares(values: pd.Series, classes: list[object]) -> dict[object, float]:
    """Share of each class in ``values`` (0 for absent classes)."""
    counts = values.value_counts()
    total = max(len(values), 1)
    return {cls: float(counts.get(cls, 0)) / total for cls in classes}
