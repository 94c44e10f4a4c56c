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

**Recalibrated on the labels that came back** (:class:`Recalibration`). Calibration fitted
at training time rests on out-of-fold predictions of weaker fold models (a few hundred
rows on small datasets), and under covariate shift a forest is over-confident in the
regions that grow. Once labels of the champion's earlier batches arrive, the estimate
for a new batch maps each confidence ``p`` through ``g(p) = sigmoid(a + b logit p)``,
fitted (``a``, ``b``) by maximum likelihood on whether each of the most recent labelled
predictions of the same model version was right against its confidence (six batches'
worth, at least :data:`RECALIBRATION_ROWS`: :func:`recalibration_rows`), with a weak prior
towards no change (``a = 0``, ``b = 1``) worth about one labelled row: labels that are all
right (or all wrong) do not push it to 1 (or 0), but a few labels move it, and the
interval's fit variance says how much that is worth. The
estimate is then the mean of ``g(p)``, and its interval adds the fit's own uncertainty
(delta method) to the batch's Poisson-binomial spread. Without labelled rows ``g`` is the
identity: plain CBPE. The per-class estimates use the same map (a row's predicted class
gets ``g(p)``, its other classes share ``1 - g(p)`` in proportion to their probabilities:
:func:`expected_confusion`), and so do the slices' estimates, so that every estimated
figure of a batch agrees with its estimated accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Z_95 = 1.959963984540054
RELIABILITY_BINS = 10
RECALIBRATION_ROWS = 3000
RECALIBRATION_BATCHES = 6
RECALIBRATION_MAX_ROWS = 200_000
"""A batch's estimate is recalibrated on the champion's most recent labelled predictions:
:data:`RECALIBRATION_BATCHES` times the batch's rows, at least :data:`RECALIBRATION_ROWS`
and at most :data:`RECALIBRATION_MAX_ROWS` (:func:`recalibration_rows`). Counted in
batches, the fit follows a shift as fast whatever the batch size, and its own noise stays
under the batch's sampling noise (the labels of six batches against one batch)."""
RECALIBRATION_PRIOR = 1.0
"""Strength of the prior towards no change (``a = 0``, ``b = 1``): a Gaussian penalty
``PRIOR / 2 * (a^2 + (b - 1)^2)`` on the log-likelihood, worth about one labelled row."""
_LOGIT_CLIP = 1e-6


@dataclass(frozen=True)
class AccuracyEstimate:
    """The estimated accuracy of ``rows`` scored rows and the 95 % interval of the accuracy
    they will realise."""

    accuracy: float
    low: float
    high: float
    rows: int


def estimate_accuracy(confidence: np.ndarray, z: float = Z_95,
                      recalibration: Recalibration | None = None) -> AccuracyEstimate:
    """The estimate from each row's probability of its predicted class (``confidence``),
    mapped through ``recalibration`` when given (:class:`Recalibration`).

    The interval is the normal approximation of the Poisson-binomial count of right
    predictions plus the recalibration fit's variance, clipped to [0, 1]; NaN figures for
    no rows.
    """
    p = np.asarray(confidence, dtype=float)
    r = recalibration if recalibration is not None else Recalibration()
    total, spread, gradient = r.sums(p)
    return estimate_from_sums(total, spread, int(p.size), z, r.sum_variance(gradient))


def estimate_from_sums(confidence_sum: float, spread_sum: float, rows: int, z: float = Z_95,
                       fit_variance: float = 0.0) -> AccuracyEstimate:
    """:func:`estimate_accuracy` from the sums of ``p`` and of ``p (1 - p)`` over ``rows``
    rows (a batch that streams by keeps only these). ``fit_variance``: the variance of the
    sum of ``p`` that comes from the recalibration's fit (:meth:`Recalibration.sum_variance`)."""
    if rows == 0:
        return AccuracyEstimate(math.nan, math.nan, math.nan, 0)
    mean = confidence_sum / rows
    half = z * math.sqrt(spread_sum + fit_variance) / rows
    return AccuracyEstimate(mean, max(0.0, mean - half), min(1.0, mean + half), rows)


def recalibration_rows(batch_rows: int) -> int:
    """How many of the latest labelled predictions a batch of ``batch_rows`` rows is
    recalibrated on (:data:`RECALIBRATION_BATCHES`)."""
    return int(min(RECALIBRATION_MAX_ROWS, max(RECALIBRATION_ROWS, RECALIBRATION_BATCHES * batch_rows)))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _LOGIT_CLIP, 1.0 - _LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class Recalibration:
    """The map ``g(p) = sigmoid(a + b logit p)`` of a confidence ``p`` to the probability
    the prediction is right, fitted on labelled predictions (:func:`fit_recalibration`);
    the default is the identity (no labelled rows: plain CBPE).

    Attributes:
        a, b: The map's intercept and slope (``0``, ``1``: the identity).
        rows: The labelled predictions it was fitted on.
        covariance: The covariance of (``a``, ``b``) (the inverse of the penalised
            log-likelihood's Hessian), for the interval.
    """

    a: float = 0.0
    b: float = 1.0
    rows: int = 0
    covariance: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))

    @property
    def identity(self) -> bool:
        return self.rows == 0

    def apply(self, confidence: np.ndarray) -> np.ndarray:
        """``g`` of each confidence (the confidences themselves for the identity)."""
        p = np.asarray(confidence, dtype=float)
        if self.identity:
            return p
        return _sigmoid(self.a + self.b * _logit(p))

    def sums(self, confidence: np.ndarray) -> tuple[float, float, np.ndarray]:
        """What an estimate needs of some rows, kept as sums while a batch streams by: the
        sum of ``g``, of ``g (1 - g)`` (the batch's own spread), and the sums of ``g``'s
        derivatives with respect to (``a``, ``b``), for :meth:`sum_variance` (zero for the
        identity)."""
        return self.mapped_sums(confidence)[1:]

    def mapped_sums(self, confidence: np.ndarray) -> tuple[np.ndarray, float, float, np.ndarray]:
        """Each row's ``g`` (as :meth:`apply` gives it) and :meth:`sums`, from one logit and
        one sigmoid a row."""
        p = np.asarray(confidence, dtype=float)
        if self.identity:
            return p, float(p.sum()), float(np.sum(p * (1.0 - p))), np.zeros(2)
        x = _logit(p)
        g = _sigmoid(self.a + self.b * x)
        w = g * (1.0 - g)  # dg/da; dg/db is w x
        spread = float(np.sum(w))
        return g, float(g.sum()), spread, np.array([spread, float(np.sum(w * x))])

    def sum_variance(self, gradient_sums: np.ndarray) -> float:
        """The variance the fit adds to the sum of ``g`` over a batch (delta method), given
        the batch's gradient sums (:meth:`sums`)."""
        if self.identity:
            return 0.0
        j = np.asarray(gradient_sums, dtype=float)
        return float(max(0.0, j @ np.asarray(self.covariance) @ j))


def fit_recalibration(confidence: np.ndarray, right: np.ndarray, prior: float = RECALIBRATION_PRIOR) -> Recalibration:
    """The :class:`Recalibration` of labelled predictions: their confidences and whether each
    was right. Maximum likelihood of ``right ~ Bernoulli(sigmoid(a + b logit p))`` with the
    penalty ``prior / 2 * (a^2 + (b - 1)^2)`` (Newton's method; the problem is strictly
    convex, so it converges from the identity). No rows: the identity."""
    p = np.asarray(confidence, dtype=float)
    y = np.asarray(right, dtype=float)
    keep = np.isfinite(p)
    p, y = p[keep], y[keep]
    if p.size == 0:
        return Recalibration()
    x = _logit(p)
    design = np.column_stack([np.ones_like(x), x])
    theta = np.array([0.0, 1.0])
    centre = np.array([0.0, 1.0])

    def objective(t: np.ndarray) -> float:
        z = design @ t
        return float(-np.sum(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z))
                     - prior / 2.0 * np.sum((t - centre) ** 2))

    def curvature(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``g`` at ``t`` and the penalised negative log-likelihood's Hessian."""
        g = _sigmoid(design @ t)
        return g, (design * (g * (1.0 - g))[:, None]).T @ design + prior * np.eye(2)

    current = objective(theta)
    for _ in range(100):
        g, hessian = curvature(theta)
        gradient = design.T @ (y - g) - prior * (theta - centre)
        step = np.linalg.solve(hessian, gradient)
        # Damped: halve the step until the penalised likelihood does not fall.
        for _ in range(60):
            candidate = objective(theta + step)
            if candidate >= current:
                break
            step = step / 2.0
        else:
            break
        theta, current = theta + step, candidate
        if float(np.max(np.abs(step))) < 1e-10:
            break
    cov = np.linalg.inv(curvature(theta)[1])
    return Recalibration(float(theta[0]), float(theta[1]), int(p.size),
                         ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))))


class LabelledTail:
    """The most recent ``cap`` labelled predictions offered to it (by event time), kept in
    bounded memory (at most twice ``cap`` rows) while the predictions so far stream by."""

    def __init__(self, cap: int = RECALIBRATION_MAX_ROWS) -> None:
        self.cap = cap
        self._time: list[np.ndarray] = []
        self._confidence: list[np.ndarray] = []
        self._right: list[np.ndarray] = []
        self._held = 0
        self._ordered = True
        """Whether the rows are one array each, in :meth:`_trim`'s order."""

    def add(self, event_time: np.ndarray, confidence: np.ndarray, right: np.ndarray) -> None:
        if len(event_time) == 0:
            return
        self._time.append(np.asarray(event_time).astype("datetime64[ns]").astype(np.int64))
        self._confidence.append(np.asarray(confidence, dtype=float))
        self._right.append(np.asarray(right, dtype=bool))
        self._held += len(event_time)
        self._ordered = False
        if self._held > 2 * self.cap:
            self._trim()

    def _trim(self) -> None:
        """Keep the latest ``cap`` rows as one array each, latest first, ties broken by
        confidence and outcome: an order that does not depend on the order the rows came
        in (so a fit on them is the same to the last bit whichever backend read them)."""
        time, confidence, right = (np.concatenate(parts) for parts in (self._time, self._confidence, self._right))
        order = np.lexsort((right, confidence, -time))[: self.cap]
        self._time, self._confidence, self._right = [time[order]], [confidence[order]], [right[order]]
        self._held = len(order)
        self._ordered = True

    def rows(self, latest: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The confidences and outcomes kept (the ``latest`` of them, when given), in the
        order of :meth:`_trim`."""
        if not self._time:
            return np.array([], dtype=float), np.array([], dtype=bool)
        if not self._ordered:
            self._trim()
        return self._confidence[0][:latest], self._right[0][:latest]

    def fit(self, batch_rows: int) -> Recalibration:
        """The recalibration of a batch of ``batch_rows`` rows: fitted on the latest
        :func:`recalibration_rows` rows kept."""
        return fit_recalibration(*self.rows(recalibration_rows(batch_rows)))


def expected_confusion(proba: np.ndarray, predicted: np.ndarray, mapped: np.ndarray | None = None) -> np.ndarray:
    """The expected confusion matrix (rows actual, columns predicted, in the probability
    columns' class order) of rows with class probabilities ``proba`` (``n x k``) and
    predicted class codes ``predicted``.

    ``mapped``: each row's recalibrated probability that its prediction is right
    (:meth:`Recalibration.apply` of its confidence; ``None``: the probabilities as they
    are). A row's predicted class then gets that probability and its other classes share
    the rest in proportion to their probabilities (evenly when they have none), so the
    matrix's trace is the recalibrated estimate's expected correct rows and the per-class
    estimates agree with it."""
    proba = np.asarray(proba, dtype=float)
    k = proba.shape[1]
    if mapped is not None:
        return _recalibrated_confusion(proba, np.asarray(predicted), np.asarray(mapped, dtype=float))
    matrix = np.zeros((k, k))
    for column in range(k):
        chosen = predicted == column
        if chosen.any():
            matrix[:, column] = proba[chosen].sum(axis=0)
    return matrix


def _recalibrated_confusion(proba: np.ndarray, predicted: np.ndarray, mapped: np.ndarray) -> np.ndarray:
    """:func:`expected_confusion` with each row's predicted class at ``mapped`` and its other
    classes scaled by ``(1 - mapped) / (1 - p)`` (shared evenly when ``p`` is 1), without
    building the scaled rows: row ``a`` is the sum of ``scale * p(a)`` by predicted class
    (a ``bincount`` per class), the diagonal the sum of ``mapped``."""
    n, k = proba.shape
    valid = (predicted >= 0) & (predicted < k)
    chosen = np.where(valid, predicted, 0)
    rest = 1.0 - np.take_along_axis(proba, chosen[:, None], axis=1)[:, 0]
    has_rest = valid & (rest > 0)
    scale = np.zeros(n)  # 0 for a row without a valid prediction: it adds nothing
    np.divide(1.0 - mapped, rest, out=scale, where=has_rest)
    matrix = np.empty((k, k))
    for actual in range(k):
        matrix[actual] = np.bincount(chosen, weights=scale * proba[:, actual], minlength=k)
    sure = valid & ~has_rest  # p is 1: the rest shared evenly among the other classes
    if sure.any():
        matrix += (np.bincount(chosen[sure], weights=1.0 - mapped[sure], minlength=k) / max(k - 1, 1))[None, :]
    matrix[np.arange(k), np.arange(k)] = np.bincount(chosen[valid], weights=mapped[valid], minlength=k)
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
