"""Performance estimated from the champion's probabilities while labels are missing
(confidence-based performance estimation, CBPE, as NannyML names it).

If the model's probabilities are calibrated, a row predicted as class ``k`` with
probability ``p_i(k)`` is right with probability ``p_i(k)``, and its actual class is ``a``
with probability ``p_i(a)``. So, for a batch of ``n`` rows:

- the expected accuracy is the mean probability of the predicted classes, and the number
  of right predictions is a sum of independent Bernoulli variables (Poisson-binomial),
  with variance ``sum p_i (1 - p_i)``: the interval :func:`estimate_accuracy` gives is
  where the batch's *realized* accuracy will fall (95 %), the figure the labels will
  show, not the model's long-run accuracy;
- the expected confusion matrix has ``E[M[a, k]] = sum over rows predicted k of p_i(a)``,
  from which per-class precision, recall and F1 are estimated
  (:func:`expected_confusion`).

Training calibrates the probabilities (:mod:`serverless_ml.training.model`) and logs how
well on the holdout (:func:`calibration_summary`); ``python -m bench estimate`` measures
the estimate against realized accuracy on simulated histories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Z_95 = 1.959963984540054
RELIABILITY_BINS = 10


@dataclass(frozen=True)
class AccuracyEstimate:
    """The estimated accuracy of ``rows`` scored rows and the 95 % interval of the accuracy
    they will realise."""

    accuracy: float
    low: float
    high: float
    rows: int


def estimate_accuracy(confidence: np.ndarray, z: float = Z_95) -> AccuracyEstimate:
    """The estimate from each row's probability of its predicted class (``confidence``).

    The interval is the normal approximation of the Poisson-binomial count of right
    predictions, clipped to [0, 1]; NaN figures for no rows.
    """
    p = np.asarray(confidence, dtype=float)
    return estimate_from_sums(float(p.sum()), float(np.sum(p * (1.0 - p))), int(p.size), z)


def estimate_from_sums(confidence_sum: float, spread_sum: float, rows: int, z: float = Z_95) -> AccuracyEstimate:
    """:func:`estimate_accuracy` from the sums of ``p`` and of ``p (1 - p)`` over ``rows``
    rows (a batch that streams by keeps only these)."""
    if rows == 0:
        return AccuracyEstimate(math.nan, math.nan, math.nan, 0)
    mean = confidence_sum / rows
    half = z * math.sqrt(spread_sum) / rows
    return AccuracyEstimate(mean, max(0.0, mean - half), min(1.0, mean + half), rows)


def expected_confusion(proba: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The expected confusion matrix (rows actual, columns predicted, in the probability
    columns' class order) of rows with class probabilities ``proba`` (``n x k``) and
    predicted class codes ``predicted``."""
    proba = np.asarray(proba, dtype=float)
    k = proba.shape[1]
    matrix = np.zeros((k, k))
    for column in range(k):
        chosen = predicted == column
        if chosen.any():
            matrix[:, column] = proba[chosen].sum(axis=0)
    return matrix


@dataclass(frozen=True)
class Calibration:
    """How well probabilities match outcomes on labelled rows.

    Attributes:
        ece: Expected calibration error of the predicted class's probability
            (:data:`RELIABILITY_BINS` equal-width bins, weighted by their rows).
        brier: Multi-class Brier score: mean over rows of the squared distance between the
            probability vector and the one-hot actual class.
        bins: The reliability diagram: for each non-empty bin, its bounds, rows, mean
            confidence and accuracy.
    """

    ece: float
    brier: float
    bins: list[dict[str, Any]]


def calibration_summary(proba: np.ndarray, actual_codes: np.ndarray, bins: int = RELIABILITY_BINS) -> Calibration:
    """ECE, Brier score and reliability bins of probabilities ``proba`` (``n x k``, in the
    class order of ``actual_codes``)."""
    proba = np.asarray(proba, dtype=float)
    actual = np.asarray(actual_codes)
    n = len(actual)
    if n == 0:
        return Calibration(math.nan, math.nan, [])
    predicted = proba.argmax(axis=1)
    confidence = proba[np.arange(n), predicted]
    right = predicted == actual
    onehot = np.zeros_like(proba)
    onehot[np.arange(n), actual] = 1.0
    brier = float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    table: list[dict[str, Any]] = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        if not count:
            continue
        mean_confidence, accuracy = float(confidence[members].mean()), float(right[members].mean())
        ece += count / n * abs(accuracy - mean_confidence)
        table.append({"low": b / bins, "high": (b + 1) / bins, "rows": count,
                      "confidence": mean_confidence, "accuracy": accuracy})
    return Calibration(float(ece), brier, table)


def reliability_figure(calibration: Calibration, title: str) -> Any:
    """The reliability diagram: accuracy against mean confidence per bin, with the
    diagonal of perfect calibration (a matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    xs = [b["confidence"] for b in calibration.bins]
    ys = [b["accuracy"] for b in calibration.bins]
    sizes = [20 + 180 * b["rows"] / max(1, max(x["rows"] for x in calibration.bins)) for b in calibration.bins]
    axes.plot(xs, ys, color="#1f77b4", linewidth=1)
    axes.scatter(xs, ys, s=sizes, color="#1f77b4", label="holdout bins (size: rows)")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("mean probability of the predicted class")
    axes.set_ylabel("accuracy")
    axes.set_title(f"{title}\nECE {calibration.ece:.3f}, Brier {calibration.brier:.3f}", fontsize=9)
    axes.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    return figure
