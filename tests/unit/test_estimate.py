"""CBPE (:mod:`serverless_ml.inference.estimate`) against direct computations: the
estimate and its interval, the expected confusion matrix, and calibration quality (ECE,
Brier score, reliability bins) compared with scikit-learn's figures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from serverless_ml.inference import estimate

pytestmark = pytest.mark.unit


def test_the_interval_covers_the_realized_accuracy_of_calibrated_rows_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(7)
    covered, batches = 0, 2000
    for _ in range(batches):
        confidence = rng.uniform(0.5, 1.0, size=150)
        realized = float(np.mean(rng.uniform(size=150) < confidence))  # calibrated: right with probability p
        found = estimate.estimate_accuracy(confidence)
        covered += found.low <= realized <= found.high
    assert 0.93 <= covered / batches <= 0.97


def test_no_rows_give_no_estimate_and_the_interval_stays_in_0_1() -> None:
    empty = estimate.estimate_accuracy(np.array([]))
    assert empty.rows == 0 and math.isnan(empty.accuracy)
    sure = estimate.estimate_accuracy(np.array([1.0, 1.0, 0.99]))
    assert sure.high <= 1.0 and sure.low <= sure.accuracy <= sure.high


def test_the_expected_confusion_matrix_sums_each_rows_probabilities_under_its_predicted_class() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    predicted = proba.argmax(axis=1)
    matrix = estimate.expected_confusion(proba, predicted)
    expected = np.zeros((3, 3))
    for row, k in zip(proba, predicted, strict=True):
        expected[:, k] += row
    np.testing.assert_allclose(matrix, expected)
    assert np.trace(matrix) / len(proba) == pytest.approx(estimate.estimate_accuracy(proba.max(axis=1)).accuracy)


def test_brier_score_and_reliability_bins_match_scikit_learn_on_a_binary_problem() -> None:
    rng = np.random.default_rng(3)
    p1 = rng.uniform(size=500)
    actual = (rng.uniform(size=500) < p1 ** 1.5).astype(int)  # miscalibrated on purpose
    proba = np.column_stack([1 - p1, p1])
    found = estimate.calibration_summary(proba, actual)
    # Multi-class Brier (sum over classes) is twice scikit-learn's binary Brier score.
    assert found.brier == pytest.approx(2 * brier_score_loss(actual, p1))
    confidence = proba.max(axis=1)
    right = (proba.argmax(axis=1) == actual).astype(int)
    accuracy, mean_confidence = calibration_curve(right, confidence, n_bins=10, strategy="uniform")
    assert [b["accuracy"] for b in found.bins] == pytest.approx(list(accuracy))
    assert [b["confidence"] for b in found.bins] == pytest.approx(list(mean_confidence))
    weights = np.array([b["rows"] for b in found.bins]) / len(actual)
    assert found.ece == pytest.approx(float(np.sum(weights * np.abs(accuracy - mean_confidence))))
    assert found.ece > 0.02  # the miscalibration is seen
