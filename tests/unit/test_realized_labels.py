"""Late labels, the pure parts (issue 17): reading a labels file, choosing the feature rows
it changes, the predictions' actual labels taken from the store, a run's realized figures
recomputed from the predictions, and what a run update logs.

The whole flow (the store, the predictions and the monitoring runs through ``sml labels``)
is ``tests/integration/test_late_labels.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from serverless_ml import registry
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.spec import parse_spec
from serverless_ml.datasets.sources import Source
from serverless_ml.errors import DataValidationError
from serverless_ml.inference import realized
from serverless_ml.pipelines.labels import read_labels, rows_to_label

IRIS = get_dataset("iris")
CODES = parse_spec({
    "name": "codes", "label": "kind", "classes": ["a", "b"],
    "primary_key": {"column": "code", "type": "string", "source_column": "Code"},
    "features": {"x": {"type": "double"}},
}, "codes.yaml")
UTC = "UTC"


def source(text_rows: list[list[str]], header: list[str]) -> Source:
    return Source(pd.DataFrame(text_rows, columns=header, dtype=object), "labels.csv", True)


def stored_codes() -> pd.DataFrame:
    return pd.DataFrame({
        "code": ["0001", "1", "07"], "event_time": pd.Timestamp("2024-02-01", tz=UTC),
        "x": [1.0, 2.0, 3.0], "kind": [None, "a", None], "origin": "live",
    })


# --- the file and the rows it changes --------------------------------------------------------


def test_text_keys_are_matched_exactly_and_only_unknown_labels_are_written() -> None:
    labels = read_labels(source([["0001", " b "], ["1", "a"]], ["Code", "kind"]), CODES)
    write = rows_to_label(CODES, stored_codes(), labels, overwrite=False)
    assert (write.labels_set, write.labels_changed, write.unchanged) == (1, 0, 1)
    assert write.rows["code"].tolist() == ["0001"] and write.rows["kind"].tolist() == ["b"]
    assert write.rows["x"].tolist() == [1.0], "the other columns as stored"
    with pytest.raises(DataValidationError, match=r"column 'Code', row 1 \(line 2\): key '7' is not in feature group 'codes'"):
        rows_to_label(CODES, stored_codes(), read_labels(source([["7", "a"]], ["Code", "kind"]), CODES), overwrite=False)


def test_a_known_label_changes_only_with_overwrite() -> None:
    labels = read_labels(source([["1", "b"], ["07", "a"]], ["Code", "kind"]), CODES)
    with pytest.raises(DataValidationError, match=r"row 1 \(line 2\): key '1' already has label 'a', not 'b' \(1 known"):
        rows_to_label(CODES, stored_codes(), labels, overwrite=False)
    write = rows_to_label(CODES, stored_codes(), labels, overwrite=True)
    assert (write.labels_set, write.labels_changed, write.unchanged) == (1, 1, 0)
    assert dict(zip(write.rows["code"], write.rows["kind"], strict=True)) == {"1": "b", "07": "a"}


def test_integer_keys_compare_as_numbers_and_labelled_at_is_checked() -> None:
    stored = pd.DataFrame({"iris_id": [7, 8], "event_time": pd.Timestamp("2024-02-01", tz=UTC), "variety": [None, None]})
    header = ["iris_id", "variety", "labelled_at"]
    labels = read_labels(source([["7.0", "Setosa", "2024-02-03T10:00:00+02:00"], ["8", "Virginica", ""]], header), IRIS)
    assert labels.frame["iris_id"].tolist() == [7, 8] and labels.has_labelled_at
    assert labels.frame["labelled_at"].iloc[0] == pd.Timestamp("2024-02-03 08:00", tz=UTC)
    assert pd.isna(labels.frame["labelled_at"].iloc[1]), "an empty field: not known"
    assert rows_to_label(IRIS, stored, labels, overwrite=False).labels_set == 2
    early = read_labels(source([["8", "Virginica", "2024-01-31"]], header), IRIS)
    with pytest.raises(DataValidationError, match=r"2024-01-31T00:00:00\+00:00 is before the row's event time 2024-02-01") as caught:
        rows_to_label(IRIS, stored, early, overwrite=False)
    assert "a date alone" not in str(caught.value)  # another day: no hint
    # A date alone on the row's own day is midnight, before a row that happened later that day: the error says so.
    evening = stored.assign(event_time=pd.Timestamp("2024-02-01 21:18", tz=UTC))
    same_day = read_labels(source([["8", "Virginica", "2024-02-01"]], header), IRIS)
    with pytest.raises(DataValidationError) as caught:
        rows_to_label(IRIS, evening, same_day, overwrite=False)
    assert str(caught.value).endswith(
        "2024-02-01T00:00:00+00:00 is before the row's event time 2024-02-01T21:18:00+00:00 (key 8); a date alone is "
        "midnight UTC: give the time the label became known, e.g. 2024-02-01T21:18:00+00:00 or later")
    with pytest.raises(DataValidationError, match=r"key 7 appears twice \(first in row 1 \(line 2\)\)"):
        read_labels(source([["7", "Setosa"], ["7", "Setosa"]], ["iris_id", "variety"]), IRIS)
    # One key written two ways: the parsed key is shown, as for an unknown key.
    with pytest.raises(DataValidationError, match=r"row 2 \(line 3\).*key 7 appears twice \(first in row 1 \(line 2\)\)"):
        read_labels(source([["7", "Setosa"], ["7.0", "Setosa"]], ["iris_id", "variety"]), IRIS)
    with pytest.raises(DataValidationError, match=r"missing column\(s\) 'iris_id' \(did you mean 'iris_ids'\?\)"):
        read_labels(source([["7", "Setosa"]], ["iris_ids", "variety"]), IRIS)


# --- predictions and figures ------------------------------------------------------------------


def predictions(rows: list[tuple[int, int, str, str | None, str, str, str]]) -> pd.DataFrame:
    """(key, model version, prediction, actual, event day, scored at, run id) rows."""
    frame = pd.DataFrame(rows, columns=["iris_id", "model_version", "prediction", "actual", "event_time", "scored_at", "run_id"])
    frame["event_time"] = pd.to_datetime(frame["event_time"], utc=True)
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    frame["correct"] = pd.array([None if a is None else p == a for p, a in zip(frame["prediction"], frame["actual"], strict=True)],
                                dtype="boolean")
    frame["probability"] = 0.9
    return frame


def test_actual_labels_come_from_the_store_for_every_model_version() -> None:
    scored = predictions([
        (1, 1, "Setosa", None, "2024-02-01", "2024-02-02", "r1"),
        (1, 2, "Virginica", None, "2024-02-01", "2024-02-03", "r2"),
        (2, 1, "Setosa", "Setosa", "2024-02-01", "2024-02-02", "r1"),
        (3, 1, "Setosa", "Virginica", "2024-02-01", "2024-02-02", "r1"),  # not in the store any more: kept
    ])
    features = pd.DataFrame({"iris_id": [1, 2], "variety": ["Setosa", None]})
    out, changed = realized.relabel_predictions(IRIS, scored, features)
    assert changed.tolist() == [True, True, True, False]
    assert out["actual"].tolist()[:2] == ["Setosa", "Setosa"] and out["actual"].iloc[2] is None
    assert out["correct"].tolist()[:2] == [True, False] and out["correct"].isna().tolist() == [False, False, True, False]
    assert out["actual"].iloc[3] == "Virginica" and not out["correct"].iloc[3]
    assert out.drop(columns=["actual", "correct"]).equals(scored.drop(columns=["actual", "correct"]))


def test_a_run_s_figures_count_its_history_up_to_its_batch_only() -> None:
    scored = predictions([
        (1, 1, "Setosa", "Setosa", "2024-02-01", "2024-02-02 00:15", "r1"),
        (2, 1, "Setosa", "Virginica", "2024-02-01", "2024-02-02 00:15", "r1"),
        (3, 1, "Setosa", None, "2024-02-02", "2024-02-03 00:15", "r2"),
        # Scored after r2's batch for an earlier day: not in r2's history.
        (4, 1, "Setosa", "Setosa", "2024-02-01", "2024-02-04 00:15", "r3"),
    ])
    end = pd.Timestamp("2024-02-03", tz=UTC)
    figures = realized.realized_figures(IRIS, scored, realized.BatchRun("r2", 1, 30, end))
    assert figures is not None
    m = figures.metrics
    assert m[registry.ROWS_LABELLED_METRIC] == 0 and m[registry.LABELLED_SHARE_METRIC] == 0
    assert registry.BATCH_ACCURACY_METRIC not in m, "no labelled row: no accuracy, not a 0"
    assert (m[registry.ROLLING_ROWS_METRIC], m[registry.ROLLING_ACCURACY_METRIC]) == (2, 0.5)
    assert (m[registry.CUMULATIVE_ROWS_METRIC], m[registry.CUMULATIVE_ACCURACY_METRIC]) == (2, 0.5)
    assert set(figures.tables) == {"rolling", "since_promotion"}
    assert figures.tables["rolling"]["matrix"] == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    later = realized.realized_figures(IRIS, scored, realized.BatchRun("r3", 2, 30, end))
    assert later is not None and later.metrics[registry.CUMULATIVE_ROWS_METRIC] == 0, "version 2 has no rows"
    assert realized.realized_figures(IRIS, scored, realized.BatchRun("gone", 1, 30, end)) is None


def test_the_digest_moves_with_the_tables_even_when_the_metrics_do_not() -> None:
    rows = [(1, 1, "Setosa", "Virginica", "2024-02-01", "2024-02-02", "r1"),
            (2, 1, "Setosa", "Setosa", "2024-02-01", "2024-02-02", "r1")]
    run = realized.BatchRun("r1", 1, 30, pd.Timestamp("2024-02-02", tz=UTC))
    one = realized.realized_figures(IRIS, predictions(rows), run)
    rows[0] = (1, 1, "Setosa", "Versicolor", "2024-02-01", "2024-02-02", "r1")  # another wrong label
    other = realized.realized_figures(IRIS, predictions(rows), run)
    assert one is not None and other is not None
    assert one.metrics == other.metrics and one.digest != other.digest


def test_an_update_logs_what_changed_withdraws_what_cannot_be_computed_and_adds_nothing_else() -> None:
    figures = realized.RealizedFigures("r1", {registry.ROWS_LABELLED_METRIC: 2.0, registry.LABELLED_SHARE_METRIC: 1.0,
                                              registry.BATCH_ACCURACY_METRIC: 0.5, registry.ROLLING_ROWS_METRIC: 2.0})
    logged = {registry.ROWS_LABELLED_METRIC: 2.0, registry.LABELLED_SHARE_METRIC: 0.5,
              registry.ROLLING_ACCURACY_METRIC: 0.75, registry.ROWS_SCORED_METRIC: 2.0, registry.ALERT_ACCURACY: 1.0}
    update = realized.plan_run_update(IRIS, figures, logged, None)
    assert update is not None and update.digest == figures.digest
    assert update.changed == sorted([registry.BATCH_ACCURACY_METRIC, registry.LABELLED_SHARE_METRIC,
                                     registry.ROLLING_ACCURACY_METRIC, registry.ROLLING_ROWS_METRIC])
    assert update.metrics[registry.BATCH_ACCURACY_METRIC] == 0.5
    assert math.isnan(update.metrics[registry.ROLLING_ACCURACY_METRIC]), "no longer computable: withdrawn"
    assert registry.CUMULATIVE_ACCURACY_METRIC not in update.metrics, "never logged, not computable: stays absent"
    assert update.metrics[registry.ROWS_LABELLED_METRIC] == 2.0, "always logged: its history counts the updates"
    assert registry.ALERT_ACCURACY not in update.metrics and registry.ROWS_SCORED_METRIC not in update.metrics
    assert realized.plan_run_update(IRIS, figures, logged, figures.digest) is None


def test_the_realized_names_are_the_label_dependent_ones() -> None:
    names = realized.realized_metric_names(IRIS)
    assert {registry.BATCH_ACCURACY_METRIC, registry.LABELLED_SHARE_METRIC, "rolling_recall_Virginica",
            "batch_f1_Setosa"} <= names
    for other in (registry.ROWS_SCORED_METRIC, registry.ESTIMATED_ACCURACY_METRIC, registry.ROLLING_ESTIMATED_ACCURACY_METRIC,
                  registry.ALERT_ACCURACY, registry.CHAMPION_HOLDOUT_ACCURACY_METRIC):
        assert other not in names
    assert np.all([n.startswith(("batch_", "rolling_", "rows_", "labelled_", "cumulative_")) for n in names])


def test_every_run_s_figures_equal_those_of_its_own_rows_and_history_computed_directly() -> None:
    """figures_by_run (the predictions' arrays made once, windows as slices) against
    batch inference's own functions on each run's rows and the history it had (every other
    row scored no later than its last one), on runs of two model versions whose rows are
    scored late, out of event-time order, with labels missing."""
    from serverless_ml.inference import batch as batch_stats
    from serverless_ml.training import evaluation

    rng = np.random.default_rng(11)
    n, classes = 3000, list(IRIS.classes)
    runs = [f"r{i:02d}" for i in range(40)]
    run_of = rng.integers(0, len(runs), n)
    start = pd.Timestamp("2024-01-01", tz=UTC)
    scored_at = start + pd.to_timedelta(run_of * 24 + 12, unit="h")
    # Most rows happen the day before they are scored; some days earlier (late rows).
    event_time = scored_at - pd.to_timedelta(np.where(rng.random(n) < 0.8, 12, rng.integers(12, 24 * 20, n)), unit="h")
    # Some at the very end of their run's as-of date (in no window), and some scoring times lost.
    event_time = event_time.where(rng.random(n) > 0.05, scored_at + pd.Timedelta(hours=12))
    scored_at = scored_at.where(rng.random(n) > 0.03, pd.NaT)
    predicted = np.asarray(classes, dtype=object)[rng.integers(0, 3, n)]
    actual = np.where(rng.random(n) < 0.7, predicted, np.asarray(classes, dtype=object)[rng.integers(0, 3, n)])
    actual[rng.random(n) < 0.3] = None
    frame = pd.DataFrame({"iris_id": np.arange(n), "model_version": np.where(run_of < 25, 1, 2),
                          "prediction": predicted, "actual": actual, "event_time": event_time, "scored_at": scored_at,
                          "run_id": np.asarray(runs, dtype=object)[run_of], "probability": rng.uniform(0.4, 1, n)})
    frame = frame.sample(frac=1.0, random_state=3).reset_index(drop=True)  # stored in no particular order
    facts = [realized.BatchRun(run, 1 if i < 25 else 2, rolling, start + pd.Timedelta(days=i + 1))
             for i, run in enumerate(runs) for rolling in [(3, 30)[i % 2]]]
    got = realized.figures_by_run(IRIS, frame, [*facts, realized.BatchRun("gone", 1, 30, start)])
    assert set(got) == set(runs)
    compared = 0
    for run in facts:
        mine = (frame["run_id"] == run.run_id).to_numpy()
        batch = frame[mine]
        history = frame[~mine & (frame["scored_at"] <= batch["scored_at"].max()).to_numpy()]
        codes = batch_stats.prediction_codes(IRIS, batch, history)
        matrices = batch_stats.confusion_windows(codes, 3, run.model_version, run.as_of_end, run.rolling_days)
        for label, matrix in matrices.items():
            if matrix.sum():
                assert got[run.run_id].tables[label] == evaluation.table_from_matrix(matrix, classes), (run, label)
                compared += 1
            else:
                assert label not in got[run.run_id].tables
        want = batch_stats.accuracy_metrics(matrices, len(batch), None).metrics
        for name in (registry.ROWS_LABELLED_METRIC, registry.ROLLING_ROWS_METRIC, registry.CUMULATIVE_ROWS_METRIC,
                     registry.BATCH_ACCURACY_METRIC, registry.ROLLING_ACCURACY_METRIC):
            assert got[run.run_id].metrics.get(name) == want.get(name), (run, name)
    assert compared > 2 * len(runs)  # the windows held rows


def test_the_labels_alert_is_added_once_and_beside_an_estimate_s_alert() -> None:
    """The accuracy rule on a run's labelled figures: raised when the batch fails, not again
    once raised, and added beside an alert decided on the estimate (found by a user trial:
    such a run kept saying its rows had no label yet)."""
    from serverless_ml.inference.realized import RealizedFigures
    from serverless_ml.pipelines.labels import LABELS_ALERT, MonitoringRun, labelled_accuracy_alert

    def run(alert: bool, alerts: str) -> MonitoringRun:
        return MonitoringRun(None, None, "2024-03-02", 0, 1, {}, None, holdout_accuracy=0.85, accuracy_drop=0.1,
                             alert_accuracy=alert, alerts=alerts)

    failing = RealizedFigures("r", {"rows_labelled": 200.0, "batch_accuracy": 0.075, "rolling_rows": 400.0,
                                    "rolling_accuracy": 0.46})
    fine = RealizedFigures("r", {"rows_labelled": 200.0, "batch_accuracy": 0.84, "rolling_rows": 400.0,
                                 "rolling_accuracy": 0.85})
    message = labelled_accuracy_alert(run(False, ""), failing)
    assert message is not None and message.startswith(f"{LABELS_ALERT}: batch accuracy 0.075 over 200 rows")
    assert "is below 0.750 (champion holdout 0.850 - 0.10)" in message
    assert labelled_accuracy_alert(run(False, ""), fine) is None
    assert labelled_accuracy_alert(run(True, message), failing) is None
    estimated = "accuracy alert (estimated: 200 rows have no label yet): estimated batch accuracy 0.461"
    assert labelled_accuracy_alert(run(True, estimated), failing) == message
    assert labelled_accuracy_alert(run(True, f"{estimated} | {message}"), failing) is None
    assert labelled_accuracy_alert(run(True, "drift alert: 1 feature(s) drifted"), failing) is None  # decided: kept
    assert labelled_accuracy_alert(run(False, ""), RealizedFigures("r", {"rows_labelled": 0.0})) is None
