"""The monitoring calculations of :mod:`serverless_ml.inference.batch` on hand-made
predictions, without a store or a tracking database: the windows' bounds, the metrics'
names (the registry's), what is not computed and why, and the drift report's JSON.

The same numbers through a real ``sml infer`` are checked against scikit-learn in
``tests/integration/test_logged_metrics_exact.py``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from serverless_ml import registry
from serverless_ml.datasets import titanic
from serverless_ml.inference import batch, monitoring

pytestmark = pytest.mark.unit

SPEC = titanic.SPEC  # classes 0 and 1, named died and survived
KEY = SPEC.primary_key


def _rows(rows: list[tuple[int, str, int, int, int]]) -> pd.DataFrame:
    """(key, event time, actual, prediction, model version) as predictions."""
    frame = pd.DataFrame(rows, columns=[KEY, "event_time", "actual", "prediction", "model_version"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    return frame


HISTORY = _rows([
    (1, "2024-03-08 12:00", 1, 1, 1),  # before the 2-day rolling window
    (2, "2024-03-09 12:00", 1, 0, 1),  # rolling window, the old champion
    (3, "2024-03-10 08:00", 0, 0, 2),  # rolling window, the champion
    (4, "2024-03-11 00:00", 0, 0, 2),  # the next day at midnight: a later batch's row
])
BATCH = _rows([(5, "2024-03-10 12:00", 1, 1, 2), (6, "2024-03-10 13:00", 0, 1, 2)])
AS_OF_END = pd.Timestamp("2024-03-11", tz="UTC")  # the end of as-of date 2024-03-10


def test_the_windows_end_at_the_as_of_date_and_since_promotion_counts_the_champions_rows() -> None:
    codes = batch.prediction_codes(SPEC, BATCH, HISTORY)
    assert list(codes.keys) == [1, 2, 3, 4, 5, 6]
    matrices = batch.confusion_windows(codes, 2, champion_version=2, as_of_end=AS_OF_END, rolling_days=2)
    assert set(matrices) == set(batch.CONFUSION_WINDOWS)
    assert (int(matrices["batch"].sum()), int(np.trace(matrices["batch"]))) == (2, 1)
    assert (int(matrices["rolling"].sum()), int(np.trace(matrices["rolling"]))) == (4, 2)  # keys 2, 3, 5, 6
    assert (int(matrices["since_promotion"].sum()), int(np.trace(matrices["since_promotion"]))) == (3, 2)  # 3, 5, 6

    computed = batch.accuracy_metrics(matrices, rows_scored=len(BATCH), holdout_accuracy=0.8)
    assert computed.metrics == pytest.approx({
        registry.ROWS_SCORED_METRIC: 2.0, registry.ROWS_LABELLED_METRIC: 2.0, registry.LABELLED_SHARE_METRIC: 1.0,
        registry.BATCH_ACCURACY_METRIC: 0.5,
        registry.BATCH_ACCURACY_CI_LOW_METRIC: monitoring.wilson_interval(1, 2)[0],
        registry.BATCH_ACCURACY_CI_HIGH_METRIC: monitoring.wilson_interval(1, 2)[1],
        registry.ROLLING_ROWS_METRIC: 4.0, registry.CUMULATIVE_ROWS_METRIC: 3.0,
        registry.ROLLING_ACCURACY_METRIC: 0.5, registry.CUMULATIVE_ACCURACY_METRIC: 2 / 3,
        registry.CHAMPION_HOLDOUT_ACCURACY_METRIC: 0.8,
    })
    assert computed.notes == []


def test_a_batch_without_labels_has_no_accuracy_and_says_why() -> None:
    unlabelled = BATCH.assign(actual=None)
    codes = batch.prediction_codes(SPEC, unlabelled, HISTORY.iloc[:0])
    matrices = batch.confusion_windows(codes, 2, champion_version=2, as_of_end=AS_OF_END, rolling_days=2)
    computed = batch.accuracy_metrics(matrices, rows_scored=2, holdout_accuracy=None)
    assert computed.metrics == {registry.ROWS_SCORED_METRIC: 2.0, registry.ROWS_LABELLED_METRIC: 0.0,
                                registry.LABELLED_SHARE_METRIC: 0.0,
                                registry.ROLLING_ROWS_METRIC: 0.0, registry.CUMULATIVE_ROWS_METRIC: 0.0}
    assert computed.notes == ["batch accuracy not computed: no labelled rows"]


def test_per_class_metrics_are_named_by_the_registry_and_need_enough_rows() -> None:
    matrices = {"batch": np.array([[5, 0], [0, 5]]), "rolling": np.array([[8, 2], [4, 6]])}
    keys = ["died", "survived"]
    computed = batch.class_metrics(SPEC, matrices, keys)
    assert computed.notes == [f"batch per-class metrics not computed: 10 labelled rows < {monitoring.MIN_ROWS_FOR_CLASS_METRICS}"]
    metrics = computed.metrics
    assert metrics[registry.class_metric(registry.ROLLING_PRECISION_STEM, "survived")] == pytest.approx(6 / 8)
    assert metrics[registry.class_metric(registry.ROLLING_RECALL_STEM, "died")] == pytest.approx(8 / 10)
    assert registry.ROLLING_ACCURACY_METRIC not in metrics  # logged by accuracy_metrics
    assert not any(name.startswith(registry.window_metric_prefix("batch")) for name in metrics)


def test_class_shares_of_the_predictions_and_of_the_reference_rows() -> None:
    reference = pd.DataFrame({SPEC.label: [0, 1, 1, 1]})
    shares = batch.class_share_metrics(SPEC, np.array([0, 0, 1, -1]), 4, reference, ["died", "survived"])
    assert shares == pytest.approx({
        registry.class_metric(registry.PREDICTED_SHARE_STEM, "died"): 0.5,
        registry.class_metric(registry.TRAINING_SHARE_STEM, "died"): 0.25,
        registry.class_metric(registry.PREDICTED_SHARE_STEM, "survived"): 0.25,
        registry.class_metric(registry.TRAINING_SHARE_STEM, "survived"): 0.75,
    })


def test_drift_without_a_reference_is_not_computed_and_the_accuracy_alert_still_fires() -> None:
    codes = batch.prediction_codes(SPEC, BATCH, HISTORY)
    rule = monitoring.AlertRule()
    drift = batch.drift_statistics(SPEC, codes, BATCH, BATCH, None, AS_OF_END, 2, rule)
    assert (drift.basis, drift.results, drift.computed.metrics) == ("none", [], {})
    assert drift.computed.notes == ["drift not computed: the champion's training rows are fewer than 30"]
    matrices = {"batch": np.array([[25, 25], [25, 25]]), "rolling": np.array([[0, 0], [0, 0]])}
    alerts = batch.alert_decision(rule, 0.9, matrices, drift, None)
    assert (alerts.accuracy, alerts.drift) == (True, False)
    assert alerts.messages[0].startswith("accuracy alert: batch accuracy 0.500 over 100 rows")


def test_the_drift_report_round_trips_through_json_and_tolerates_old_or_broken_files() -> None:
    report = registry.DriftReport(basis="window", window="2024-03-09..2024-03-10", rows=36.0, rolling_window="",
                                  rolling_rows=None, p_threshold=0.01, min_effect=0.1,
                                  features=({"feature": "age", "window": "recent", "drifted": True},))
    payload = json.loads(json.dumps(report.to_json()))
    assert list(payload) == ["basis", "window", "rows", "rolling_window", "rolling_rows", "p_threshold", "min_effect",
                             "features"]
    assert registry.DriftReport.from_json(payload) == report
    assert registry.DriftReport.from_json(None) == registry.DriftReport()
    old = registry.DriftReport.from_json({"basis": "batch", "features": [{"feature": "age"}, "junk"]})
    assert (old.basis, old.window, old.features) == ("batch", None, ({"feature": "age"},))


def _with_probabilities(frame: pd.DataFrame, survived: list[float]) -> pd.DataFrame:
    """Predictions with class probabilities (died, survived); the prediction is the likelier class."""
    p = np.asarray(survived)
    return frame.assign(proba_0=1 - p, proba_1=p, prediction=(p > 0.5).astype(int), probability=np.maximum(p, 1 - p))


def test_an_unlabelled_batch_gets_an_estimate_from_its_probabilities_and_no_realized_accuracy() -> None:
    rows = _rows([(10 + i, "2024-03-10 12:00", 0, 0, 2) for i in range(25)]).assign(actual=None)
    survived = [0.9] * 10 + [0.3] * 15  # confidence 0.9 x 10, 0.7 x 15
    scored = _with_probabilities(rows, survived)
    codes = batch.prediction_codes(SPEC, scored, HISTORY.iloc[:0])
    computed, found, recalibration = batch.estimated_metrics(SPEC, scored, codes, AS_OF_END, 2, ["died", "survived"], 2)
    assert recalibration.identity
    expected = (10 * 0.9 + 15 * 0.7) / 25
    variance = 10 * 0.9 * 0.1 + 15 * 0.7 * 0.3
    assert found is not None and found.accuracy == pytest.approx(expected)
    assert (found.low, found.high) == pytest.approx((expected - 1.959964 * variance ** 0.5 / 25,
                                                     expected + 1.959964 * variance ** 0.5 / 25))
    metrics = computed.metrics
    assert metrics[registry.ESTIMATED_ACCURACY_METRIC] == pytest.approx(expected)
    assert metrics[registry.ESTIMATE_RECALIBRATION_ROWS_METRIC] == 0.0  # no labelled history: plain CBPE
    assert registry.ESTIMATE_RECALIBRATION_A_METRIC not in metrics
    assert metrics[registry.ROLLING_ESTIMATED_ACCURACY_METRIC] == pytest.approx(expected)
    # Expected confusion: predicted survived (10 rows at 0.9): 9 right, 1 wrong; predicted died (15 at 0.7 died).
    assert metrics[registry.class_metric("estimated_precision", "survived")] == pytest.approx(0.9)
    assert metrics[registry.class_metric("estimated_recall", "survived")] == pytest.approx(9 / (9 + 15 * 0.3))
    matrices = batch.confusion_windows(codes, 2, 2, AS_OF_END, 2)
    accuracy = batch.accuracy_metrics(matrices, len(scored), 0.8)
    assert registry.BATCH_ACCURACY_METRIC not in accuracy.metrics
    assert accuracy.metrics[registry.LABELLED_SHARE_METRIC] == 0.0
    assert batch.accuracy_basis(0, 25, found) == "estimated"
    assert batch.accuracy_basis(25, 25, found) == "realized"
    assert batch.accuracy_basis(0, 25, None) == "none"


def test_the_accuracy_alert_uses_the_estimate_while_labels_are_missing_and_says_so() -> None:
    rule = monitoring.AlertRule()
    drift = batch.DriftStatistics()
    low_confidence = batch.estimate.estimate_accuracy(np.full(200, 0.55))
    no_labels = {"batch": np.zeros((2, 2)), "rolling": np.zeros((2, 2))}
    alerts = batch.alert_decision(rule, 0.85, no_labels, drift, None, low_confidence)
    assert alerts.accuracy
    assert alerts.messages[0].startswith("accuracy alert (estimated: 200 rows have no label yet): estimated batch accuracy 0.550")
    confident = batch.estimate.estimate_accuracy(np.full(200, 0.8))
    assert not batch.alert_decision(rule, 0.85, no_labels, drift, None, confident).accuracy
    # Every row labelled: the realized accuracy is judged, not the estimate.
    labelled = {"batch": np.array([[100, 0], [0, 100]]), "rolling": np.zeros((2, 2))}
    assert not batch.alert_decision(rule, 0.85, labelled, drift, None, low_confidence).accuracy


def test_the_estimate_is_recalibrated_on_the_champions_labelled_predictions_before_the_batch() -> None:
    rng = np.random.default_rng(3)
    n = 400
    times = pd.Timestamp("2024-03-01", tz="UTC") + pd.to_timedelta(rng.uniform(0, 12, n), unit="D")
    survived = rng.uniform(0.05, 0.95, n)
    confidence = np.maximum(survived, 1 - survived)
    # Over-confident: a prediction is right with probability confidence - 0.15.
    right = rng.uniform(size=n) < confidence - 0.15
    prediction = (survived > 0.5).astype(int)
    actual = np.where(right, prediction, 1 - prediction).astype(float)
    actual[rng.uniform(size=n) < 0.2] = np.nan  # some labels not back
    version = np.where(rng.uniform(size=n) < 0.25, 1, 2)  # some by the old champion
    history = _with_probabilities(pd.DataFrame({KEY: np.arange(100, 100 + n), "event_time": times,
                                                "actual": pd.array(actual).astype("Int64"), "model_version": version}),
                                  list(survived))
    rows = _rows([(10 + i, "2024-03-10 12:00", 0, 0, 2) for i in range(50)]).assign(actual=None)
    scored = _with_probabilities(rows, list(rng.uniform(0.05, 0.95, 50)))
    codes = batch.prediction_codes(SPEC, scored, history)
    computed, found, recalibration = batch.estimated_metrics(SPEC, scored, codes, AS_OF_END, 2, ["died", "survived"], 2)
    # Directly: the champion's (version 2) labelled rows before the end of the as-of date.
    used = (~np.isnan(actual)) & (version == 2) & (times < AS_OF_END)
    assert 0 < used.sum() < n  # some rows of each kind are left out
    fitted = batch.estimate.fit_recalibration(confidence[used], right[used])
    want = batch.estimate.estimate_accuracy(scored["probability"].to_numpy(), recalibration=fitted)
    assert (found.accuracy, found.low, found.high) == pytest.approx((want.accuracy, want.low, want.high))
    metrics = computed.metrics
    assert metrics[registry.ESTIMATE_RECALIBRATION_ROWS_METRIC] == float(used.sum())
    assert (metrics[registry.ESTIMATE_RECALIBRATION_A_METRIC], metrics[registry.ESTIMATE_RECALIBRATION_B_METRIC]) == (
        pytest.approx(fitted.a), pytest.approx(fitted.b))
    assert (recalibration.a, recalibration.b) == (pytest.approx(fitted.a), pytest.approx(fitted.b))
    plain = float(scored["probability"].mean())
    assert found.accuracy < plain - 0.05  # the over-confidence is taken out
    # The per-class estimates come from the recalibrated probabilities: a row predicted
    # survived is survived with probability g(confidence), died with the rest.
    g = fitted.apply(scored["probability"].to_numpy())
    says_survived = scored["prediction"].to_numpy() == 1
    true_survived = float(np.sum(g[says_survived]))
    false_survived = float(np.sum(1 - g[says_survived]))
    missed_survived = float(np.sum(1 - g[~says_survived]))
    assert metrics[registry.class_metric("estimated_precision", "survived")] == pytest.approx(
        true_survived / (true_survived + false_survived), rel=1e-4)
    assert metrics[registry.class_metric("estimated_recall", "survived")] == pytest.approx(
        true_survived / (true_survived + missed_survived), rel=1e-4)
    # The rolling window (2 days up to the as-of date): history and batch rows, mapped the same way.
    window = np.concatenate([confidence[(times >= AS_OF_END - pd.Timedelta(days=2)) & (times < AS_OF_END)],
                             scored["probability"].to_numpy()])
    assert metrics[registry.ROLLING_ESTIMATED_ACCURACY_METRIC] == pytest.approx(float(np.mean(fitted.apply(window))),
                                                                                 abs=1e-4)
