"""Accuracy per slice (issue 18, item 6), the pure parts: the slice plan from training rows,
every slice's figures against a direct pandas computation (``groupby`` on the same rows)
on Iris, Titanic, a numeric-only generated set and one with missing values in its slice
features, "not computed" below the minimum, the worst slice, the spec's ``slices`` key,
and the realized slice figures recomputed when labels arrive.

The whole flow (``sml infer`` logging the table and the worst slice on a real run, and
``sml labels`` recomputing it) is ``tests/integration/test_slice_runs.py``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier

from serverless_ml import defaults, registry
from serverless_ml.datasets import get_dataset, load_spec_file
from serverless_ml.datasets.sources import load_source
from serverless_ml.datasets.spec import DatasetSpec, parse_spec
from serverless_ml.datasets.validation import build_feature_rows
from serverless_ml.errors import SpecError
from serverless_ml.inference import realized, slices
from serverless_ml.training import evaluation
from serverless_ml.training.model import as_model_input
from slice_direct import assert_matches_direct

pytestmark = pytest.mark.unit

NUMERIC = parse_spec({
    "name": "gauges", "label": "state", "classes": ["ok", "worn", "broken"],
    "features": {"pressure": {"type": "double"}, "temperature": {"type": "double"}, "cycles": {"type": "bigint"}},
}, "gauges.yaml")
GAPS = parse_spec({
    "name": "gaps", "label": "y", "classes": [0, 1],
    "features": {"colour": {"type": "string", "nullable": True}, "size": {"type": "double", "nullable": True},
                 "weight": {"type": "double"}},
    "slices": ["colour", "size"],
}, "gaps.yaml")


def scored(spec: DatasetSpec, reference: pd.DataFrame, batch: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The batch's predictions by a small forest fitted on ``reference`` (a real model's
    probabilities, for the estimates)."""
    model = RandomForestClassifier(n_estimators=15, max_depth=3, random_state=seed)
    numeric = [f.name for f in spec.features if f.is_numeric]
    model.fit(as_model_input(reference, spec)[numeric].fillna(-1), reference[spec.label].astype(str))
    proba = model.predict_proba(as_model_input(batch, spec)[numeric].fillna(-1))
    classes = [type(spec.classes[0])(c) for c in model.classes_]
    best = proba.argmax(axis=1)
    return pd.DataFrame({
        spec.primary_key: batch[spec.primary_key].to_numpy(), "actual": batch[spec.label].to_numpy(),
        "prediction": np.asarray(classes, dtype=object)[best], "probability": proba[np.arange(len(best)), best],
    })


def real_rows(spec: DatasetSpec, data_dir: Path) -> pd.DataFrame:
    return build_feature_rows(load_source(spec, data_dir=data_dir), spec, origin="backfill", event_time="2024-01-01")


def check_dataset(spec: DatasetSpec, rows: pd.DataFrame, train_share: float = 0.5) -> slices.SliceTable:
    shuffled = rows.sample(frac=1.0, random_state=3).reset_index(drop=True)
    cut = int(len(shuffled) * train_share)
    reference, batch = shuffled.iloc[:cut], shuffled.iloc[cut:]
    plan = slices.plan_slices(spec, reference)
    predictions = scored(spec, reference, batch)
    table = slices.slice_table(spec, plan, predictions, rows)
    features = batch[[f.name for f in plan.features]].reset_index(drop=True)
    assert_matches_direct(plan, table, pd.concat([features, predictions], axis=1))
    return table


# --- the figures against the direct computation ----------------------------------------------------


def test_titanic_slices_equal_a_direct_groupby_and_missing_ages_are_a_slice(data_dir: Path) -> None:
    spec = get_dataset("titanic")
    table = check_dataset(spec, real_rows(spec, data_dir))
    age = [s for s in table.slices if s.feature == "age"]
    assert [s.slice for s in age][-1] == "missing" and age[-1].missing and age[-1].rows > 30
    # pclass has three training values: one slice each, not quantile bins over them.
    assert [s.slice for s in table.slices if s.feature == "pclass"] == ["1", "2", "3"]
    worst = table.worst
    assert worst is not None and worst.accuracy == min(s.accuracy for s in table.slices if s.accuracy is not None)


def test_iris_slices_equal_a_direct_groupby(data_dir: Path) -> None:
    spec = get_dataset("iris")
    table = check_dataset(spec, real_rows(spec, data_dir))
    kinds = {f.name: f.kind for f in table.plan.features}
    assert set(kinds.values()) == {slices.BINS} and len(kinds) == 4
    assert table.worst is not None


def _generated(spec: DatasetSpec, n: int, seed: int, gaps: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({spec.primary_key: np.arange(1, n + 1)})
    if gaps:
        frame["colour"] = rng.choice(np.array(["red", "green", "blue", None], dtype=object), n, p=[0.4, 0.3, 0.2, 0.1])
        frame["size"] = np.where(rng.random(n) < 0.15, np.nan, rng.gamma(2.0, 3.0, n).round(1))
        frame["weight"] = rng.normal(50, 10, n)
        signal = frame["size"].fillna(5) + (frame["colour"] == "red") * 3
        frame[spec.label] = (signal + rng.normal(0, 2, n) > 7).astype(np.int64)
    else:
        frame["pressure"] = rng.normal(3.0, 0.5, n)
        frame["temperature"] = rng.uniform(10, 90, n)
        frame["cycles"] = rng.integers(0, 5000, n)
        wear = frame["cycles"] / 5000 + (frame["temperature"] - 50) / 80 + rng.normal(0, 0.2, n)
        frame[spec.label] = np.where(wear < 0.4, "ok", np.where(wear < 0.9, "worn", "broken"))
    return frame


def test_a_numeric_only_set_is_cut_at_training_quantiles_and_equals_a_direct_groupby() -> None:
    rows = _generated(NUMERIC, 900, 1, gaps=False)
    table = check_dataset(NUMERIC, rows)
    assert [f.kind for f in table.plan.features] == [slices.BINS] * 3
    reference = rows.sample(frac=1.0, random_state=3).reset_index(drop=True).iloc[:450]
    # The edges are the training rows' quartiles, exactly.
    assert table.plan.features[1].edges == tuple(np.quantile(reference["temperature"], [0.25, 0.5, 0.75]))
    assert [s.slice for s in table.slices if s.feature == "pressure"][0].startswith("< ")


def test_missing_values_in_slice_features_are_a_slice_of_their_own() -> None:
    rows = _generated(GAPS, 1200, 2, gaps=True)
    table = check_dataset(GAPS, rows)
    assert [f.name for f in table.plan.features] == ["colour", "size"], "the spec's slices only"
    for name in ("colour", "size"):
        last = [s for s in table.slices if s.feature == name][-1]
        assert (last.slice, last.missing, last.value) == ("missing", True, None)
        assert last.rows == int(rows.sample(frac=1.0, random_state=3).iloc[600:][name].isna().sum())


# --- not computed, the worst slice, the plan --------------------------------------------------------


def _frame(groups: dict[str, tuple[int, int, int]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Feature rows and predictions where group ``g`` has ``(rows, labelled, correct)``."""
    keys, values, actual, prediction = [], [], [], []
    for name, (n, labelled, correct) in groups.items():
        for i in range(n):
            keys.append(len(keys) + 1)
            values.append(name)
            known = i < labelled
            prediction.append(0)
            actual.append((0 if i < correct else 1) if known else None)
    features = pd.DataFrame({"row_id": keys, "colour": values, "size": 1.0, "weight": 1.0})
    predictions = pd.DataFrame({"row_id": keys, "actual": pd.array(actual, dtype="Int64"), "prediction": prediction,
                                "probability": 0.9})
    return features, predictions


def test_a_slice_below_the_minimum_is_not_computed_and_never_the_worst() -> None:
    minimum = defaults.SLICE_MIN_ROWS
    features, predictions = _frame({"red": (minimum - 1, minimum - 1, 0),     # all wrong, too few rows
                                    "green": (minimum, minimum, minimum - 6),  # enough labelled rows
                                    "blue": (minimum + 5, minimum - 1, 0)})    # enough rows, too few labels
    plan = slices.SlicePlan((slices.SliceFeature("colour", slices.CATEGORY),))
    table = slices.slice_table(GAPS, plan, predictions, features)
    by_name = {s.slice: s for s in table.slices}
    red, green, blue = by_name["red"], by_name["green"], by_name["blue"]
    assert (red.realized, red.estimated, red.basis, red.accuracy) == (None, None, slices.NOT_COMPUTED, None)
    assert green.realized == pytest.approx((minimum - 6) / minimum) and green.basis == slices.REALIZED
    assert blue.realized is None and blue.estimated == pytest.approx(0.9) and blue.basis == slices.ESTIMATED
    assert table.worst is green, "the all-wrong slice of 29 rows is not computed, not the worst"
    payload = json.loads(json.dumps(table.to_json()))
    row = next(r for r in payload["slices"] if r["slice"] == "red")
    assert (row["realized"], row["estimated"], row["basis"]) == (None, None, "not computed")
    assert payload["worst"]["name"] == "colour: green" and payload["worst"]["basis"] == "realized"
    assert slices.SliceTable.from_json(payload) == table
    assert slices.worst_slice_tags(table) == {registry.WORST_SLICE_TAG: "colour: green",
                                              registry.WORST_SLICE_BASIS_TAG: "realized"}


def test_no_slice_with_enough_rows_names_no_worst_slice_and_says_so() -> None:
    features, predictions = _frame({"red": (5, 5, 1), "green": (6, 6, 6)})
    table = slices.slice_table(GAPS, slices.SlicePlan((slices.SliceFeature("colour", slices.CATEGORY),)), predictions,
                               features)
    assert table.worst is None and slices.worst_slice_tags(table) == {}
    assert table.notes == (f"slices: no worst slice: no slice has {defaults.SLICE_MIN_ROWS} rows",)


def test_the_plan_follows_the_training_rows() -> None:
    reference = pd.DataFrame({"cycles": [0] * 80 + [1, 2, 3, 4, 5] * 4, "pressure": [1.0, 2.0, 2.0, 3.0] * 25,
                              "temperature": np.nan})
    plan = slices.plan_slices(NUMERIC, reference)
    kinds = {f.name: (f.kind, f.edges) for f in plan.features}
    assert kinds["pressure"] == (slices.VALUES, ()), "three training values: a slice each"
    # Skewed: every quartile is 0, the minimum; the edge moves up to the next value.
    assert kinds["cycles"] == (slices.BINS, (1.0,))
    assert "temperature" not in kinds
    assert plan.notes == ("slices: temperature not sliced: no training value to cut it at",)
    cycles = next(f for f in plan.features if f.name == "cycles")
    assert [cycles.label(k) for k in (0, 1)] == ["< 1", ">= 1"]
    assert slices.SlicePlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_a_value_outside_the_training_range_falls_in_an_open_bin() -> None:
    feature = slices.SliceFeature("temperature", slices.BINS, (20.0, 40.0, 60.0))
    codes, keys = feature.keys(pd.Series([-500.0, 20.0, 59.999, 60.0, 1e9, np.nan]))
    assert codes.tolist() == [0, 1, 2, 3, 3, -1]
    assert [feature.label(keys[c]) for c in codes[:5]] == ["< 20", "[20, 40)", "[40, 60)", ">= 60", ">= 60"]


def test_a_text_feature_of_too_many_values_is_dropped_with_a_note() -> None:
    n = slices.MAX_VALUES + 1
    features = pd.DataFrame({"row_id": range(1, n + 1), "colour": [f"c{i}" for i in range(n)], "size": 1.0})
    predictions = pd.DataFrame({"row_id": range(1, n + 1), "actual": 0, "prediction": 0, "probability": 0.9})
    plan = slices.SlicePlan((slices.SliceFeature("colour", slices.CATEGORY), slices.SliceFeature("size", slices.VALUES)))
    table = slices.slice_table(GAPS, plan, predictions, features)
    assert [s.name for s in table.slices] == ["size: 1"]
    assert table.notes == (f"slices: colour not sliced: more than {slices.MAX_VALUES} distinct values in the batch",)


# --- the spec key --------------------------------------------------------------------------------


BASE: dict[str, Any] = {"name": "gaps", "label": "y", "classes": [0, 1],
                        "features": {"colour": {"type": "string"}, "size": {"type": "double"}}}


def test_slices_default_to_every_feature_and_keep_the_order_written() -> None:
    assert parse_spec(BASE, "f.yaml").slices is None
    assert slices.slice_feature_names(parse_spec(BASE, "f.yaml")) == ["colour", "size"]
    assert parse_spec({**BASE, "slices": ["size", "colour"]}, "f.yaml").slices == ("size", "colour")
    assert parse_spec({**BASE, "slices": []}, "f.yaml").slices == ()
    assert get_dataset("titanic").slices is None


@pytest.mark.parametrize(("value", "message"), [
    (["colour", "Size"], "f.yaml: slices: unknown feature(s) 'Size' (features: colour, size)"),
    ("colour", "f.yaml: slices must be a list of feature names, got 'colour'"),
    (["colour", 3], "f.yaml: slices must be a list of feature names, got ['colour', 3]"),
    (["colour", "colour"], "f.yaml: slices lists a feature twice"),
    (["y"], "f.yaml: slices: unknown feature(s) 'y' (features: colour, size)"),
])
def test_a_bad_slices_key_is_refused_in_one_line(value: Any, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec({**BASE, "slices": value}, "f.yaml")
    assert str(caught.value) == message


def test_a_spec_file_naming_an_unknown_slice_feature_is_refused_at_load(tmp_path: Path) -> None:
    path = tmp_path / "gaps.yaml"
    path.write_text("name: gaps\nlabel: y\nclasses: [0, 1]\nfeatures:\n  colour: {type: string}\nslices: [color]\n")
    with pytest.raises(SpecError) as caught:
        load_spec_file(path)
    assert str(caught.value).endswith("slices: unknown feature(s) 'color' (features: colour)")
    assert "\n" not in str(caught.value)


# --- late labels: the realized part follows -------------------------------------------------------


def _red_and_green_batch() -> tuple[pd.DataFrame, pd.DataFrame, slices.SlicePlan]:
    """A scored batch (run r1) of two colours, each 10 rows above the slice minimum, its
    feature rows, and a plan slicing it by colour."""
    minimum = defaults.SLICE_MIN_ROWS
    features, predictions = _frame({"red": (minimum + 10, 0, 0), "green": (minimum + 10, 0, 0)})
    predictions = predictions.assign(run_id="r1", scored_at=pd.Timestamp("2024-02-01 12:00", tz="UTC"),
                                     event_time=pd.Timestamp("2024-02-01", tz="UTC"), model_version=1)
    return features, predictions, slices.SlicePlan((slices.SliceFeature("colour", slices.CATEGORY),))


def test_the_realized_slice_figures_follow_the_labels_and_move_the_digest() -> None:
    minimum = defaults.SLICE_MIN_ROWS
    features, predictions, plan = _red_and_green_batch()
    run = realized.BatchRun("r1", 1, 30, pd.Timestamp("2024-02-02", tz="UTC"), plan)
    before = realized.realized_figures(GAPS, predictions, run, features)
    assert before is not None and before.slices is not None
    assert before.slices["worst"]["basis"] == "estimated"
    # Every row of 'red' gets a label, wrong for 15 of them.
    red = (features["colour"] == "red").to_numpy()
    labels = features.assign(y=pd.array(np.where(red, 0, None), dtype="Int64"))
    labels.loc[labels.index[red][:15], "y"] = 1
    relabelled, changed = realized.relabel_predictions(GAPS, predictions, labels)
    after = realized.realized_figures(GAPS, relabelled, run, labels)
    assert changed.sum() == minimum + 10 and after is not None and after.slices is not None
    table = slices.SliceTable.from_json(after.slices)
    assert table is not None
    by_name = {s.slice: s for s in table.slices}
    assert by_name["red"].realized == pytest.approx((minimum - 5) / (minimum + 10))
    assert by_name["green"].realized is None and by_name["green"].estimated == pytest.approx(0.9)
    assert table.worst is by_name["red"]
    assert after.metrics[registry.WORST_SLICE_ACCURACY_METRIC] == by_name["red"].realized
    assert after.digest != before.digest
    update = realized.plan_run_update(GAPS, after, {registry.WORST_SLICE_ACCURACY_METRIC: 0.9}, None)
    assert update is not None and update.slices == after.slices
    assert update.metrics[registry.WORST_SLICE_ACCURACY_METRIC] == by_name["red"].realized
    # Every row is predicted 0: the labelled windows have no precision of class 1 (not a 0).
    undefined = registry.MESSAGE_SEPARATOR.join(f"{window} figures not computed: precision of '1' (predicted for no row)"
                                                for window in ("batch", "rolling"))
    assert update.tags == {registry.WORST_SLICE_TAG: "colour: red", registry.WORST_SLICE_BASIS_TAG: "realized",
                           registry.NOT_COMPUTED_TAG: undefined}
    assert "batch_precision_1" not in after.metrics and after.metrics["batch_recall_1"] == 0


def test_a_run_without_a_slice_table_keeps_its_figures_and_digest() -> None:
    features, predictions = _frame({"red": (40, 40, 30)})
    predictions = predictions.assign(run_id="r1", scored_at=pd.Timestamp("2024-02-01 12:00", tz="UTC"),
                                     event_time=pd.Timestamp("2024-02-01", tz="UTC"), model_version=1)
    end = pd.Timestamp("2024-02-02", tz="UTC")
    without = realized.realized_figures(GAPS, predictions, realized.BatchRun("r1", 1, 30, end), features)
    plain = realized.realized_figures(GAPS, predictions, realized.BatchRun("r1", 1, 30, end))
    assert without is not None and plain is not None
    assert without.slices is None and without.digest == plain.digest
    assert registry.WORST_SLICE_ACCURACY_METRIC not in without.metrics
    assert not math.isnan(without.metrics[registry.BATCH_ACCURACY_METRIC])
    assert evaluation.class_codes(predictions["prediction"], pd.Index([0, 1])).tolist() == [0] * 40


@pytest.mark.parametrize("text", ["{not json", '{"plan": 3}', "[]"])
def test_a_damaged_slice_table_is_no_plan_and_a_warning(tmp_path: Path, text: str, caplog: pytest.LogCaptureFixture) -> None:
    """`sml labels` reading a run whose slices.json is damaged leaves its slices as they
    were (with a warning naming the run) instead of failing the whole job."""
    from types import SimpleNamespace

    from serverless_ml import registry
    from serverless_ml.pipelines.labels import slice_plan

    (tmp_path / registry.SLICES_ARTIFACT).write_text(text, encoding="utf-8")
    info = SimpleNamespace(artifact_uri=tmp_path.as_uri(), run_id="run-1")
    with caplog.at_level("WARNING"):
        assert slice_plan(None, info) is None  # type: ignore[arg-type]
    assert f"run run-1: {registry.SLICES_ARTIFACT} is unreadable" in caplog.text


def test_a_few_valued_number_meeting_many_values_in_a_batch_is_dropped_too() -> None:
    """A number sliced by value (few training values) that a batch brings many values of is
    capped like a text feature: no table of single rows."""
    n = slices.MAX_VALUES + 1
    features = pd.DataFrame({"row_id": range(1, n + 1), "colour": "red", "size": np.arange(n, dtype=float)})
    predictions = pd.DataFrame({"row_id": range(1, n + 1), "actual": 0, "prediction": 0, "probability": 0.9})
    plan = slices.SlicePlan((slices.SliceFeature("colour", slices.CATEGORY), slices.SliceFeature("size", slices.VALUES)))
    table = slices.slice_table(GAPS, plan, predictions, features)
    assert [s.name for s in table.slices] == ["colour: red"]
    assert table.notes == (f"slices: size not sliced: more than {slices.MAX_VALUES} distinct values in the batch",)


def test_the_page_does_not_call_a_dropped_feature_sliced() -> None:
    """Found by a new user: the footnote said "Sliced: clinic: each value" next to the note
    that clinic was not sliced."""
    from dash_text import text_of

    from monitoring_app.pages.slices import about_plan

    n = slices.MAX_VALUES + 1
    features = pd.DataFrame({"row_id": range(1, n + 1), "colour": [f"c{i}" for i in range(n)], "size": 1.0})
    predictions = pd.DataFrame({"row_id": range(1, n + 1), "actual": 0, "prediction": 0, "probability": 0.9})
    plan = slices.SlicePlan((slices.SliceFeature("colour", slices.CATEGORY), slices.SliceFeature("size", slices.VALUES)))
    text = text_of(about_plan(slices.slice_table(GAPS, plan, predictions, features)))
    assert "Sliced: size: each value. Not sliced in this batch: colour." in text
    assert "colour not sliced: more than" in text


def test_the_recomputed_slice_estimates_are_recalibrated_as_the_run_logged_them() -> None:
    from serverless_ml.inference.estimate import Recalibration
    from serverless_ml.pipelines.labels import logged_recalibration

    features, predictions, plan = _red_and_green_batch()
    logged = {registry.ESTIMATE_RECALIBRATION_ROWS_METRIC: 400.0, registry.ESTIMATE_RECALIBRATION_A_METRIC: -0.8,
              registry.ESTIMATE_RECALIBRATION_B_METRIC: 0.9}
    recalibration = logged_recalibration(logged)
    assert (recalibration.a, recalibration.b, recalibration.rows) == (-0.8, 0.9, 400)
    assert logged_recalibration({registry.ESTIMATE_RECALIBRATION_ROWS_METRIC: 0.0}).identity  # plain CBPE
    assert logged_recalibration({}).identity  # a run from before recalibration
    scored_then = slices.slice_table(GAPS, plan, predictions, features, recalibration)
    run = realized.BatchRun("r1", 1, 30, pd.Timestamp("2024-02-02", tz="UTC"), plan, recalibration)
    red = (features["colour"] == "red").to_numpy()
    labels = features.assign(y=pd.array(np.where(red, 0, None), dtype="Int64"))
    relabelled, _ = realized.relabel_predictions(GAPS, predictions, labels)
    after = realized.realized_figures(GAPS, relabelled, run, labels)
    assert after is not None and after.slices is not None
    table = slices.SliceTable.from_json(after.slices)
    assert table is not None
    green = {s.slice: s for s in table.slices}["green"]
    want = {s.slice: s for s in scored_then.slices}["green"]
    # Unlabelled: its estimate is the one logged at scoring time, the map of its 0.9s.
    assert green.estimated == pytest.approx(float(Recalibration(-0.8, 0.9, 400).apply(np.array([0.9]))[0]))
    assert (green.estimated, green.estimated_low, green.estimated_high) == (
        want.estimated, want.estimated_low, want.estimated_high)
    assert green.estimated < 0.8  # not the plain 0.9
