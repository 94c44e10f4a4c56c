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


def test_a_recalibrated_expected_confusion_matrix_gives_the_predicted_class_g_and_shares_the_rest() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    predicted = np.array([0, 1, 2, 0, 1])
    recalibration = estimate.Recalibration(0.4, 0.7, 50)
    g = recalibration.apply(proba[np.arange(5), predicted])
    matrix = estimate.expected_confusion(proba, predicted, g)
    expected = np.zeros((3, 3))
    expected[:, 0] += [g[0], 0.2 / 0.3 * (1 - g[0]), 0.1 / 0.3 * (1 - g[0])]
    expected[:, 1] += [0.1 / 0.4 * (1 - g[1]), g[1], 0.3 / 0.4 * (1 - g[1])]
    expected[:, 2] += [0.5 * (1 - g[2]), 0.5 * (1 - g[2]), g[2]]
    expected[:, 0] += [g[3], (1 - g[3]) / 2, (1 - g[3]) / 2]  # sure: the rest shared evenly
    expected[:, 1] += [1 - g[4], g[4], 0.0]
    np.testing.assert_allclose(matrix, expected)
    assert matrix.sum() == pytest.approx(5.0)  # each row still sums to 1
    # Its trace is the recalibrated estimate's expected right rows.
    assert np.trace(matrix) / 5 == pytest.approx(
        estimate.estimate_accuracy(proba[np.arange(5), predicted], recalibration=recalibration).accuracy)
    assert not np.allclose(matrix, estimate.expected_confusion(proba, predicted))


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


# --- recalibration on the labels that came back ---------------------------------------------


def _miscalibrated(rng: np.random.Generator, n: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidences and outcomes whose true map is ``sigmoid(a + b logit p)``."""
    p = rng.uniform(0.5, 0.999, size=n)
    truth = 1.0 / (1.0 + np.exp(-(a + b * np.log(p / (1 - p)))))
    return p, rng.uniform(size=n) < truth


def test_without_labelled_rows_the_recalibration_is_the_identity_and_the_estimate_plain_cbpe() -> None:
    identity = estimate.fit_recalibration(np.array([]), np.array([], dtype=bool))
    assert identity.identity and identity.rows == 0
    confidence = np.random.default_rng(1).uniform(0.5, 1.0, 300)
    assert estimate.estimate_accuracy(confidence, recalibration=identity) == estimate.estimate_accuracy(confidence)


def test_the_fit_recovers_a_known_map_and_its_estimate_the_accuracy_of_new_rows() -> None:
    rng = np.random.default_rng(11)
    confidence, right = _miscalibrated(rng, 20_000, a=-0.8, b=0.7)  # over-confident
    fitted = estimate.fit_recalibration(confidence, right)
    assert fitted.rows == 20_000
    assert fitted.a == pytest.approx(-0.8, abs=0.1) and fitted.b == pytest.approx(0.7, abs=0.06)
    # The standard errors from the covariance are what the spread of refits shows.
    refits = np.array([(f.a, f.b) for f in (estimate.fit_recalibration(*_miscalibrated(rng, 20_000, -0.8, 0.7))
                                            for _ in range(40))])
    assert np.sqrt(np.diag(np.asarray(fitted.covariance))) == pytest.approx(refits.std(axis=0), rel=0.35)
    new_conf, new_right = _miscalibrated(rng, 5_000, a=-0.8, b=0.7)
    plain, recalibrated = estimate.estimate_accuracy(new_conf), estimate.estimate_accuracy(new_conf, recalibration=fitted)
    assert plain.accuracy - new_right.mean() > 0.05  # plain CBPE is over-confident here
    assert abs(recalibrated.accuracy - new_right.mean()) < 0.015
    assert recalibrated.low <= new_right.mean() <= recalibrated.high


def test_the_fit_is_the_penalised_maximum_likelihood_scipy_finds() -> None:
    from scipy.optimize import minimize

    rng = np.random.default_rng(8)
    confidence, right = _miscalibrated(rng, 400, a=0.5, b=1.4)
    x = np.log(confidence / (1 - confidence))

    def loss(theta: np.ndarray) -> float:
        z = theta[0] + theta[1] * x
        return float(np.sum(np.logaddexp(0, -z) * right + np.logaddexp(0, z) * ~right)
                     + estimate.RECALIBRATION_PRIOR / 2 * (theta[0] ** 2 + (theta[1] - 1) ** 2))

    best = minimize(loss, np.array([0.0, 1.0]), method="BFGS", options={"gtol": 1e-8})
    fitted = estimate.fit_recalibration(confidence, right)
    assert (fitted.a, fitted.b) == pytest.approx(tuple(best.x), abs=1e-4)


def test_labels_that_are_all_right_or_all_wrong_move_the_estimate_without_driving_it_to_the_edge() -> None:
    confidence = np.random.default_rng(2).uniform(0.6, 0.99, 3000)
    up = estimate.fit_recalibration(confidence, np.ones(3000, dtype=bool))
    down = estimate.fit_recalibration(confidence, np.zeros(3000, dtype=bool))
    assert confidence.mean() < up.apply(confidence).mean() < 1.0
    assert 0.0 < down.apply(confidence).mean() < confidence.mean()
    assert all(np.isfinite([up.a, up.b, down.a, down.b]))


def test_a_few_labelled_rows_move_the_map_less_than_many() -> None:
    rng = np.random.default_rng(4)
    confidence, right = _miscalibrated(rng, 5, a=-2.0, b=0.5)
    few = estimate.fit_recalibration(confidence, right)
    grid = np.linspace(0.55, 0.99, 20)
    many = estimate.fit_recalibration(*_miscalibrated(rng, 5000, a=-2.0, b=0.5))
    assert np.max(np.abs(few.apply(grid) - grid)) < np.max(np.abs(many.apply(grid) - grid))


def test_the_recalibrated_interval_covers_the_realized_accuracy_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(9)
    covered, batches = 0, 600
    for _ in range(batches):
        fitted = estimate.fit_recalibration(*_miscalibrated(rng, 300, a=0.3, b=0.6))  # few labels: a wide fit
        confidence, right = _miscalibrated(rng, 500, a=0.3, b=0.6)
        found = estimate.estimate_accuracy(confidence, recalibration=fitted)
        covered += found.low <= right.mean() <= found.high
    assert 0.92 <= covered / batches <= 0.98


def test_the_labelled_tail_keeps_the_latest_rows_whatever_the_order_they_come_in() -> None:
    rng = np.random.default_rng(5)
    time = rng.permutation(np.arange(1000)).astype("datetime64[s]")
    confidence, right = rng.uniform(0.5, 1, 1000), rng.uniform(size=1000) < 0.8
    latest = np.argsort(time)[-100:]
    for chunk in (1, 37, 1000):
        tail = estimate.LabelledTail(cap=100)
        for start in range(0, 1000, chunk):
            part = slice(start, start + chunk)
            tail.add(time[part], confidence[part], right[part])
            assert tail._held <= 2 * 100 + chunk
        kept_conf, kept_right = tail.rows()
        assert sorted(kept_conf) == sorted(confidence[latest])
        assert sorted(zip(kept_conf, kept_right, strict=True)) == sorted(zip(confidence[latest], right[latest], strict=True))


def test_a_batch_is_recalibrated_on_six_batches_of_labels_at_least_3000_and_at_most_200000() -> None:
    assert estimate.recalibration_rows(0) == estimate.recalibration_rows(100) == 3000
    assert estimate.recalibration_rows(10_000) == 60_000
    assert estimate.recalibration_rows(10_000_000) == 200_000
    rng = np.random.default_rng(6)
    time = rng.permutation(np.arange(10_000)).astype("datetime64[s]")
    confidence, right = rng.uniform(0.5, 1, 10_000), rng.uniform(size=10_000) < 0.8
    tail = estimate.LabelledTail()
    for start in range(0, 10_000, 999):
        tail.add(time[start:start + 999], confidence[start:start + 999], right[start:start + 999])
    latest = np.argsort(time)[-3000:]
    kept, _ = tail.rows(3000)
    assert sorted(kept) == sorted(confidence[latest])
    fitted = tail.fit(batch_rows=200)  # 3,000 rows: the latest
    assert fitted.rows == 3000
    assert (fitted.a, fitted.b) == pytest.approx(
        (estimate.fit_recalibration(confidence[latest], right[latest]).a,
         estimate.fit_recalibration(confidence[latest], right[latest]).b))
    assert tail.fit(batch_rows=1000).rows == 6000


def test_the_fit_does_not_depend_on_the_order_the_labelled_rows_came_in() -> None:
    rng = np.random.default_rng(12)
    time = rng.integers(0, 50, 2000).astype("datetime64[D]")  # many ties in time
    confidence, right = _miscalibrated(rng, 2000, a=0.2, b=0.8)
    fits = []
    for order in (np.arange(2000), rng.permutation(2000), np.arange(2000)[::-1]):
        tail = estimate.LabelledTail()
        for start in range(0, 2000, 300):
            part = order[start:start + 300]
            tail.add(time[part], confidence[part], right[part])
        fitted = tail.fit(batch_rows=100)
        fits.append((fitted.a, fitted.b, fitted.covariance))
    assert fits[0] == fits[1] == fits[2]  # bit for bit
