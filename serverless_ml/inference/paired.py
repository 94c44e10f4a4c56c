"""The champion and the challenger compared on the same rows (paired), as plain functions
that return dataclasses; the job :mod:`serverless_ml.pipelines.infer` collects the rows
both models scored, calls :func:`paired_window` and logs the figures.

Each labelled row both models scored is one of four kinds: both right, only the champion
right (``champion_only``, McNemar's ``b``), only the challenger right
(``challenger_only``, ``c``), both wrong. Only the discordant rows (``b + c``) tell the
models apart:

- :func:`mcnemar_exact`: McNemar's exact test, the binomial test of ``c`` among the
  ``b + c`` discordant rows with probability 1/2 (two-sided, and one-sided "the
  challenger is more often right"), computed from log binomial coefficients (no SciPy:
  the unit tests compare it with ``scipy.stats.binomtest``);
- :func:`paired_difference_interval`: the challenger's accuracy minus the champion's,
  ``(c - b) / n``, with a 95 % interval: the Wald interval of a difference of matched
  proportions after adding 1/2 to each of the four cells (Agresti and Min, 2005; its
  coverage stays near 95 % for small ``n``, where the plain Wald interval collapses to a
  point when ``b = c = 0``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serverless_ml import registry
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN
from serverless_ml.inference.estimate import AccuracyEstimate, Recalibration
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN, served_mask

Z_95 = 1.959963984540054


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's exact test of ``challenger_only`` among ``discordant`` rows."""

    p_value: float
    """Two-sided: the models are right equally often."""
    p_value_better: float
    """One-sided: the challenger is right more often (small when ``c`` is large)."""


@dataclass(frozen=True)
class PairedComparison:
    """The champion and the challenger on the same labelled rows."""

    rows: int
    both_correct: int
    champion_only: int
    challenger_only: int
    both_wrong: int
    champion_accuracy: float
    challenger_accuracy: float
    difference: float
    """Challenger's accuracy minus the champion's (NaN without rows)."""
    ci_low: float
    ci_high: float
    p_value: float
    p_value_better: float

    @property
    def discordant(self) -> int:
        return self.champion_only + self.challenger_only


def _log_binomial_pmf(k: int, n: int) -> float:
    """``log(C(n, k) / 2**n)``."""
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) - n * math.log(2.0)


def _upper_tail(k: int, n: int) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, 1/2)``, summed from the logs of its terms (exact
    to rounding for any ``n``; ``math.comb`` would build numbers of ``n`` bits)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    logs = [_log_binomial_pmf(i, n) for i in range(k, n + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def mcnemar_exact(champion_only: int, challenger_only: int) -> McNemarResult:
    """McNemar's exact test on the discordant counts (``b``: only the champion right,
    ``c``: only the challenger right). With no discordant rows both p-values are 1."""
    b, c = int(champion_only), int(challenger_only)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b} and {c}")
    n = b + c
    if n == 0:
        return McNemarResult(1.0, 1.0)
    # Binomial(n, 1/2) is symmetric: the two-sided p-value (every outcome as unlikely as
    # the one observed) is twice the smaller tail, and 1 when b == c.
    two_sided = 1.0 if b == c else min(1.0, 2.0 * _upper_tail(max(b, c), n))
    return McNemarResult(two_sided, _upper_tail(c, n))


def paired_difference_interval(n: int, champion_only: int, challenger_only: int,
                               z: float = Z_95) -> tuple[float, float, float]:
    """The difference of accuracies ``(c - b) / n`` and its interval (Agresti-Min adjusted
    Wald: 1/2 added to each cell), clipped to [-1, 1]; NaNs for no rows."""
    if n <= 0:
        return math.nan, math.nan, math.nan
    b, c = float(champion_only), float(challenger_only)
    difference = (c - b) / n
    n_adj, b_adj, c_adj = n + 2.0, b + 0.5, c + 0.5
    centre = (c_adj - b_adj) / n_adj
    variance = ((b_adj + c_adj) - (c_adj - b_adj) ** 2 / n_adj) / n_adj**2
    half = z * math.sqrt(max(variance, 0.0))
    return difference, max(-1.0, centre - half), min(1.0, centre + half)


def compare_paired(champion_correct: np.ndarray, challenger_correct: np.ndarray) -> PairedComparison:
    """The comparison of two models' right/wrong on the same rows (boolean arrays, one
    entry per labelled row, in the same order)."""
    first = np.asarray(champion_correct, dtype=bool)
    second = np.asarray(challenger_correct, dtype=bool)
    if first.shape != second.shape:
        raise ValueError(f"paired rows differ in number: {first.size} and {second.size}")
    n = int(first.size)
    both = int(np.sum(first & second))
    b = int(np.sum(first & ~second))
    c = int(np.sum(~first & second))
    test = mcnemar_exact(b, c)
    difference, low, high = paired_difference_interval(n, b, c)
    return PairedComparison(
        rows=n, both_correct=both, champion_only=b, challenger_only=c, both_wrong=n - both - b - c,
        champion_accuracy=(both + b) / n if n else math.nan, challenger_accuracy=(both + c) / n if n else math.nan,
        difference=difference, ci_low=low, ci_high=high, p_value=test.p_value, p_value_better=test.p_value_better,
    )


def paired_window(
    champion_rows: pd.DataFrame, challenger_rows: pd.DataFrame, key: str, start: pd.Timestamp | None, end: pd.Timestamp,
) -> PairedComparison:
    """The comparison over the rows both models scored with event time in ``[start,
    end)`` (``start`` ``None``: no lower bound) whose label is known. Each frame holds a
    model's predictions rows: ``key``, ``event_time``, ``prediction`` and ``actual``
    (the champion's the served rows of the champion version, the challenger's its shadow
    rows); a key is paired with itself."""
    def labelled(frame: pd.DataFrame) -> pd.DataFrame:
        times = pd.to_datetime(frame[EVENT_TIME_COLUMN], utc=True)
        keep = (times < end) & frame["actual"].notna()
        if start is not None:
            keep &= times >= start
        picked = frame.loc[keep.to_numpy(), [key, "prediction", "actual"]]
        return picked.assign(correct=(picked["prediction"].astype(object) == picked["actual"].astype(object)).to_numpy(dtype=bool))

    champion, challenger = labelled(champion_rows), labelled(challenger_rows)
    joined = champion[[key, "correct"]].drop_duplicates(key).merge(
        challenger[[key, "correct"]].drop_duplicates(key), on=key, suffixes=("_champion", "_challenger"))
    return compare_paired(joined["correct_champion"].to_numpy(), joined["correct_challenger"].to_numpy())


PAIRED_COLUMNS = (EVENT_TIME_COLUMN, "prediction", "actual")
"""The columns of a predictions row the comparison reads (with the key)."""


@dataclass
class PairedRows:
    """The labelled predictions rows of a window, the champion's served ones and the
    challenger's shadow ones, collected as the predictions stream by (a batch job reads
    them in chunks): :meth:`comparison` pairs them by key. Memory holds those rows' key,
    event time, prediction and label (a job without a challenger keeps none)."""

    key: str
    champion_version: int
    challenger_version: int
    start: pd.Timestamp
    end: pd.Timestamp
    champion: list[pd.DataFrame] = field(default_factory=list)
    challenger: list[pd.DataFrame] = field(default_factory=list)

    def add(self, frame: pd.DataFrame, served: np.ndarray, versions: np.ndarray) -> None:
        """Keep ``frame``'s labelled rows of the window that are the champion's served
        rows (``served``, of its version) or the challenger's shadow rows."""
        if frame.empty:
            return
        times = pd.to_datetime(frame[EVENT_TIME_COLUMN], utc=True)
        keep = ((times >= self.start) & (times < self.end) & frame["actual"].notna()).to_numpy(dtype=bool)
        columns = [self.key, *PAIRED_COLUMNS]
        mine = keep & served & (versions == self.champion_version)
        theirs = keep & ~served & (versions == self.challenger_version)
        if mine.any():
            self.champion.append(frame.loc[mine, columns])
        if theirs.any():
            self.challenger.append(frame.loc[theirs, columns])

    def _frame(self, parts: list[pd.DataFrame]) -> pd.DataFrame:
        if not parts:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in (self.key, *PAIRED_COLUMNS)})
        return pd.concat(parts, ignore_index=True)

    def comparison(self) -> PairedComparison:
        """:func:`paired_window` of the rows kept."""
        return paired_window(self._frame(self.champion), self._frame(self.challenger), self.key, self.start, self.end)


def shadow_metrics(batch_matrix: np.ndarray, estimated: AccuracyEstimate | None, comparison: PairedComparison,
                   recalibration: Recalibration | None = None) -> dict[str, float]:
    """What a monitoring run logs about the challenger: its accuracy on the batch's
    labelled rows (``batch_matrix``: its confusion matrix there; none without labels), its
    estimated accuracy (``estimated``: CBPE of its probabilities, mapped through
    ``recalibration``, fitted on its labelled shadow predictions), and the paired
    comparison with the champion (rows, accuracies, difference and interval, discordant
    counts, p-values; the accuracies, the difference and the p-values only with paired
    rows)."""
    metrics: dict[str, float] = {}
    labelled = int(batch_matrix.sum())
    metrics[registry.CHALLENGER_ROWS_LABELLED_METRIC] = float(labelled)
    if labelled:
        metrics[registry.CHALLENGER_BATCH_ACCURACY_METRIC] = float(np.trace(batch_matrix)) / labelled
    if estimated is not None and estimated.rows:
        metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_METRIC] = estimated.accuracy
        metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_CI_LOW_METRIC] = estimated.low
        metrics[registry.CHALLENGER_ESTIMATED_ACCURACY_CI_HIGH_METRIC] = estimated.high
        if recalibration is not None:
            metrics[registry.CHALLENGER_ESTIMATE_RECALIBRATION_ROWS_METRIC] = float(recalibration.rows)
            if not recalibration.identity:
                metrics[registry.CHALLENGER_ESTIMATE_RECALIBRATION_A_METRIC] = recalibration.a
                metrics[registry.CHALLENGER_ESTIMATE_RECALIBRATION_B_METRIC] = recalibration.b
    metrics.update({
        registry.PAIRED_ROWS_METRIC: float(comparison.rows),
        registry.PAIRED_CHAMPION_ONLY_METRIC: float(comparison.champion_only),
        registry.PAIRED_CHALLENGER_ONLY_METRIC: float(comparison.challenger_only),
    })
    if comparison.rows:  # no paired labelled rows: no test, not a p-value of 1 from nothing
        metrics.update({
            registry.PAIRED_P_VALUE_METRIC: comparison.p_value,
            registry.PAIRED_P_VALUE_BETTER_METRIC: comparison.p_value_better,
            registry.PAIRED_CHAMPION_ACCURACY_METRIC: comparison.champion_accuracy,
            registry.PAIRED_CHALLENGER_ACCURACY_METRIC: comparison.challenger_accuracy,
            registry.PAIRED_DIFFERENCE_METRIC: comparison.difference,
            registry.PAIRED_DIFFERENCE_CI_LOW_METRIC: comparison.ci_low,
            registry.PAIRED_DIFFERENCE_CI_HIGH_METRIC: comparison.ci_high,
        })
    return metrics


REALIZED_SHADOW_METRICS = (
    registry.CHALLENGER_ROWS_LABELLED_METRIC, registry.CHALLENGER_BATCH_ACCURACY_METRIC, registry.PAIRED_ROWS_METRIC,
    registry.PAIRED_CHAMPION_ONLY_METRIC, registry.PAIRED_CHALLENGER_ONLY_METRIC, registry.PAIRED_P_VALUE_METRIC,
    registry.PAIRED_P_VALUE_BETTER_METRIC, registry.PAIRED_CHAMPION_ACCURACY_METRIC,
    registry.PAIRED_CHALLENGER_ACCURACY_METRIC, registry.PAIRED_DIFFERENCE_METRIC, registry.PAIRED_DIFFERENCE_CI_LOW_METRIC,
    registry.PAIRED_DIFFERENCE_CI_HIGH_METRIC,
)
"""The challenger's figures of a monitoring run that depend on labels (``sml labels``
recomputes them with :func:`realized_shadow_metrics`)."""


def realized_shadow_metrics(
    predictions: pd.DataFrame, key: str, run_id: str, shadow_run_id: str, champion_version: int, challenger_version: int,
    start: pd.Timestamp, end: pd.Timestamp,
) -> dict[str, float]:
    """A run's label-dependent challenger figures from the predictions as they are now
    (``run_id`` column; the rows scored up to and including the run's batch, as batch
    inference judged it): the challenger's accuracy on its shadow rows of the batch
    (``shadow_run_id``) and the paired comparison over ``[start, end)``."""
    mine = (predictions["run_id"] == shadow_run_id).to_numpy()
    if mine.any():
        batch_scored_at = predictions.loc[mine | (predictions["run_id"] == run_id).to_numpy(), "scored_at"].max()
        predictions = predictions[(predictions["scored_at"] <= batch_scored_at).to_numpy()]
        mine = (predictions["run_id"] == shadow_run_id).to_numpy()
    served = served_mask(predictions["run_id"])
    versions = predictions[MODEL_VERSION_COLUMN].to_numpy(dtype=np.int64)
    collector = PairedRows(key, champion_version, challenger_version, start, end)
    collector.add(predictions, served, versions)
    shadow = predictions[mine]
    labelled = shadow[shadow["actual"].notna()]
    right = int((labelled["prediction"].astype(object) == labelled["actual"].astype(object)).sum())
    matrix = np.array([[right, len(labelled) - right], [0, 0]])  # only its trace and total are read
    metrics = shadow_metrics(matrix, None, collector.comparison())
    return {k: v for k, v in metrics.items() if k in REALIZED_SHADOW_METRICS}
