"""The site's layouts and callbacks, called directly (no browser) inside the app's request
context, against a real tracking database and feature store.

One Iris world per module (backfill, a two-trial training run, three days of batch
inference); each test gets a copy and its own app (cache time-to-live 0, so every call
checks for new data).
"""

from __future__ import annotations

import datetime as dt
import io
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import json

import dash
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag

from monitoring_app import create_app, figures, ids
from monitoring_app.app import shell, sync_dataset
from monitoring_app.pages import confusion, data, drift, models, overview, predict, predictions
from monitoring_app.site import current_site
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import backfill
from serverless_ml.pipelines.simulate import SimulateOptions, simulate
from serverless_ml.settings import Settings, resolve_settings
from dash_text import find, text_of
from worlds import (  # noqa: F401 - fixture
    IRIS_DAYS, IRIS_ROWS, IRIS_START, add_iris_batch, add_iris_live_batch, copy_world, iris_day, iris_monitored_template,
)

pytestmark = pytest.mark.integration

SPEC = get_dataset("iris")
START = IRIS_START
DAYS = IRIS_DAYS
ROWS = IRIS_ROWS
NOW = dt.datetime(2024, 3, 20, 12, tzinfo=dt.timezone.utc)


day = iris_day


def add_batch(store: LocalFeatureStore, settings: Settings, i: int, rows: int = ROWS) -> str:
    """Rows for day ``i`` and the batch-inference run that scores them; returns its id."""
    return add_iris_batch(store, settings, i, rows)


@pytest.fixture
def world(iris_monitored_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalFeatureStore, Settings]]:
    monkeypatch.chdir(tmp_path)
    yield copy_world(iris_monitored_template, tmp_path, monkeypatch)
    mlflow.set_tracking_uri(None)


Call = Callable[..., Any]


@pytest.fixture
def call(world: tuple[LocalFeatureStore, Settings]) -> Iterator[Call]:
    """``call(fn, *args)`` runs a layout or callback inside the app's request context."""
    yield from _calls_into(create_app(world[1], cache_ttl_s=0.0, clock=lambda: NOW, mlflow_ui_url="http://mlflow.example:5000"))


def _calls_into(app: Any) -> Iterator[Call]:
    """``call(fn, *args)`` inside ``app``'s request context; the site's reader closed after."""

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with app.server.test_request_context():
            return fn(*args, **kwargs)

    yield run
    with app.server.app_context():
        current_site().data.close()


def graphs(component: Any) -> list[Any]:
    out: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, (list, tuple)):
            for child in node:
                walk(child)
        elif isinstance(node, dash.dcc.Graph):
            out.append(node.figure if isinstance(node.figure, dict) else node.figure.to_plotly_json())
        elif isinstance(node, dash.development.base_component.Component):
            walk(getattr(node, "children", None))
    walk(component)
    return out


# --- Overview -----------------------------------------------------------------------------------


def test_overview_shows_the_headline_the_latest_prediction_and_the_history(call: Call) -> None:
    page = call(overview.layout, dataset="iris")
    shown = text_of(page)
    assert f"{DAYS * ROWS:,}" in shown and f"in {DAYS} batches" in shown
    assert "version 1" in shown and day(DAYS - 1).isoformat() in shown
    assert "Latest prediction" in shown and "probability" in shown
    latest = find(page, ids.OVERVIEW_LATEST)
    assert latest is not None and any(c.startswith("data:image/svg+xml;base64,") for c in
                                      [getattr(i, "src", "") for i in _all(latest)])
    figure = graphs(page)[0]
    assert trace(figure, figures.REALIZED_NAME)["x"] == [day(i).isoformat() for i in range(DAYS)]
    # Every batch is labelled: the headline's accuracy is the latest batch's realized one.
    latest = logged_runs().iloc[-1]
    assert text_of(find(page, ids.HEADLINE_ACCURACY)) == (
        f"latest batch accuracy, realized {latest['metrics.batch_accuracy']:.3f} {ROWS} of {ROWS} rows "
        f"labelled; 95 % interval {latest['metrics.batch_accuracy_ci_low']:.3f}-{latest['metrics.batch_accuracy_ci_high']:.3f}")
    assert trace(figure, figures.AWAITING_NAME) is None
    # In batch dates (the wall clock, NOW, is weeks later): v1 scored every batch.
    assert text_of(find(page, ids.HEADLINE_RETRAIN)) == (
        f"days since retrain {DAYS - 1} in batch dates: v1 has scored since {day(0).isoformat()}")
    assert text_of(find(page, ids.OVERVIEW_ALERTS)) == "No alert."


def logged_runs() -> Any:
    return mlflow.search_runs(experiment_names=["iris-monitoring"], order_by=["tags.as_of ASC"])


def trace(figure: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The trace of ``figure`` named ``name`` (``None`` when it has none)."""
    return next((t for t in figure["data"] if t.get("name") == name), None)


def test_a_batch_awaiting_labels_shows_its_estimate_in_a_band_its_coverage_and_an_estimated_headline(
    call: Call, world: tuple[LocalFeatureStore, Settings]
) -> None:
    store, settings = world
    live = add_iris_live_batch(store, settings, DAYS)
    page = call(overview.layout, dataset="iris")
    runs = logged_runs()
    assert runs["run_id"].iloc[-1] == live and pd.isna(runs["metrics.batch_accuracy"].iloc[-1])
    accuracy = find(page, ids.OVERVIEW_GRAPH).figure
    dates = [day(i).isoformat() for i in range(DAYS + 1)]
    # The estimate of every batch, as logged, in its band; the realized accuracy where labels exist.
    line = trace(accuracy, figures.ESTIMATED_NAME)
    assert line["x"] == dates and line["y"] == [pytest.approx(v, abs=1e-4) for v in runs["metrics.estimated_accuracy"]]
    band = trace(accuracy, "estimated 95 % interval")
    assert band["fill"] == "toself" and band["x"] == dates + dates[::-1]
    assert band["y"] == [pytest.approx(v, abs=1e-4) for v in [*runs["metrics.estimated_accuracy_ci_high"],
                                                                *runs["metrics.estimated_accuracy_ci_low"][::-1]]]
    awaiting = trace(accuracy, figures.AWAITING_NAME)
    assert awaiting["x"] == [day(DAYS).isoformat()]
    assert f"0 of {ROWS} rows labelled" in awaiting["customdata"][0]
    realized = trace(accuracy, figures.REALIZED_NAME)
    assert realized["y"][-1] is None and realized["y"][:DAYS] == [pytest.approx(v, abs=1e-4)
                                                                  for v in runs["metrics.batch_accuracy"][:DAYS]]
    assert [t["name"] for t in accuracy["data"]].index(figures.REALIZED_NAME) > [t["name"] for t in accuracy["data"]].index(
        "estimated 95 % interval")  # the band is drawn under the points
    # Label coverage: the labelled batches whole, the live one not at all.
    labelled, waiting = find(page, ids.OVERVIEW_LABELS).figure["data"]
    assert labelled["x"] == dates and labelled["y"] == [1.0] * DAYS + [0.0] and waiting["y"] == [0.0] * DAYS + [1.0]
    # The headline says the latest batch's accuracy is an estimate, and why.
    estimate = runs.iloc[-1]
    assert text_of(find(page, ids.HEADLINE_ACCURACY)) == (
        f"latest batch accuracy, estimated ≈ {estimate['metrics.estimated_accuracy']:.3f} no labels yet (0 of {ROWS} "
        f"rows labelled); from the champion's probabilities, 95 % interval "
        f"{estimate['metrics.estimated_accuracy_ci_low']:.3f}-{estimate['metrics.estimated_accuracy_ci_high']:.3f}")
    latest = text_of(find(page, ids.OVERVIEW_LATEST))
    assert "not known yet" in latest and "label not known yet" in latest
    # The Predictions table: the live rows say so, the count names them and the button filters to them.
    state = {"dataset": "iris"}
    rows, _, summary = call(predictions.page_predictions, 0, 100, [], "", None, state)
    assert text_of(summary) == f"{(DAYS + 1) * ROWS} of {(DAYS + 1) * ROWS} predictions  · {ROWS} awaiting a label"
    newest = rows[:ROWS]
    assert {r["actual"] for r in newest} == {"awaiting label"} and {r["correct"] for r in newest} == {""}
    assert "awaiting label" not in {r["actual"] for r in rows[ROWS:]}
    query = call(predictions.show_awaiting, 1, "{prediction} contains Setosa && {actual} contains Virginica")
    assert query == '{prediction} contains Setosa && {actual} = "awaiting label"'
    query = call(predictions.show_awaiting, 1, "")
    kept, _, summary = call(predictions.page_predictions, 0, 100, [], query, None, state)
    assert len(kept) == ROWS and {r["key"] for r in kept} == {r["key"] for r in newest}
    assert text_of(summary).startswith(f"{ROWS} of {(DAYS + 1) * ROWS} predictions")
    with pytest.raises(dash.exceptions.PreventUpdate):
        call(predictions.show_awaiting, 0, "")
    # Labels arrive (as `sml labels` writes them into the predictions group): the rows and the
    # latest prediction show them, although the run's own tags were written before.
    group = store.get_feature_group(SPEC.predictions_group, SPEC.predictions_version)
    stored = group.read()
    batch = stored[stored["run_id"] == live].copy()
    batch["actual"] = batch["prediction"]
    batch["correct"] = pd.array([True] * len(batch), dtype="boolean")
    group.insert(batch.reset_index(drop=True), wait=True)
    rows, _, summary = call(predictions.page_predictions, 0, 100, [], "", None, state)
    assert text_of(summary).endswith(" · 0 awaiting a label") and "awaiting label" not in {r["actual"] for r in rows}
    latest = text_of(find(call(overview.layout, dataset="iris"), ids.OVERVIEW_LATEST))
    assert "not known yet" not in latest and latest.endswith("correct")
    # ... and on the batch's own run (its table, realized figures and the update's stamp, as
    # `sml labels` logs them): the Overview and the confusion page follow without a restart.
    before = graphs(call(confusion.show_run, live, state))[0]  # read (and kept) before the labels
    assert before["data"] == [] and "no labelled rows" in before["layout"]["annotations"][0]["text"]
    table = {"labels": list(SPEC.classes), "matrix": [[int(((batch["actual"] == a) & (batch["prediction"] == b)).sum())
                                                        for b in SPEC.classes] for a in SPEC.classes]}
    (Path.cwd() / "batch.json").write_text(json.dumps(table))
    client = MlflowClient()
    client.log_artifact(live, str(Path.cwd() / "batch.json"), "confusion")
    stamp = client.get_run(live).info.start_time
    client.log_batch(live, metrics=[Metric(k, v, stamp, 1) for k, v in (
        ("batch_accuracy", 1.0), ("batch_accuracy_ci_low", 0.8), ("batch_accuracy_ci_high", 1.0),
        ("rows_labelled", float(ROWS)), ("labelled_share", 1.0))], tags=[RunTag("labels_updated_at", "2024-04-01T00:00:00+00:00")])
    page = call(overview.layout, dataset="iris")
    accuracy = find(page, ids.OVERVIEW_GRAPH).figure
    assert trace(accuracy, figures.REALIZED_NAME)["y"][-1] == 1.0 and trace(accuracy, figures.AWAITING_NAME) is None
    assert text_of(find(page, ids.HEADLINE_ACCURACY)).startswith("latest batch accuracy, realized 1.000 ")
    assert find(page, ids.OVERVIEW_LABELS).figure["data"][0]["y"][-1] == 1.0
    matrix = graphs(call(confusion.show_run, live, state))[0]
    assert [[int(v) for v in row] for row in matrix["data"][0]["text"]] == table["matrix"]


def test_overview_draws_the_logged_per_class_figures_and_class_shares(call: Call) -> None:
    page = call(overview.layout, dataset="iris")
    runs = logged_runs()
    classes = list(SPEC.classes)
    per_class = find(page, ids.OVERVIEW_CLASS_METRICS).figure
    names = [t["name"] for t in per_class["data"]]
    assert names == [f"{c} precision" for c in classes] + [f"{c} recall" for c in classes]
    for trace, (cls, what) in zip(per_class["data"], [(c, "precision") for c in classes] + [(c, "recall") for c in classes],
                                  strict=True):
        logged = runs.get(f"metrics.rolling_{what}_{cls}")
        assert logged is not None and logged.notna().any()  # the rolling window reached 20 labelled rows
        assert trace["y"] == [None if v != v else pytest.approx(v, abs=1e-4) for v in logged]
    shares = find(page, ids.OVERVIEW_CLASS_SHARES).figure
    assert [t["name"] for t in shares["data"]] == [f"{c} predicted" for c in classes] + [f"{c} in training" for c in classes]
    for trace, cls in zip(shares["data"], classes + classes, strict=True):
        kind = "predicted" if trace["name"].endswith("predicted") else "training"
        assert trace["y"] == [pytest.approx(v, abs=1e-4) for v in runs[f"metrics.{kind}_share_{cls}"]]
    assert sum(t["y"][-1] for t in shares["data"][:len(classes)]) == pytest.approx(1.0, abs=1e-3)


def test_overview_shows_data_quality_per_batch_from_the_stores(call: Call, world: tuple[LocalFeatureStore, Settings]) -> None:
    store, _ = world
    page = call(overview.layout, dataset="iris")
    quality = find(page, ids.OVERVIEW_QUALITY).figure
    rows, missing, out_of_range, unseen = quality["data"]
    assert rows["y"] == [ROWS] * DAYS and rows["x"] == [day(i).isoformat() for i in range(DAYS)]
    assert missing["y"] == [0.0] * DAYS  # Iris rows have every value
    assert unseen["y"] == [0] * DAYS  # and no text feature
    # Out of the training range: counted here from the stores and the training run's keys.
    runs = logged_runs()
    features = store.get_feature_group("iris", SPEC.version).read().set_index(SPEC.primary_key)
    predictions = store.get_feature_group(SPEC.predictions_group, 1).read()
    version = MlflowClient().get_model_version("iris", "1")
    local = MlflowClient().download_artifacts(version.run_id, "training/keys.parquet", str(Path.cwd()))
    trained = pd.read_parquet(local)
    training = features.loc[trained.loc[trained["split"] == "train", SPEC.primary_key]]
    expected = []
    for run_id in runs["run_id"]:
        batch = features.loc[predictions.loc[predictions["run_id"] == run_id, SPEC.primary_key]][SPEC.feature_names]
        outside = (batch < training[SPEC.feature_names].min()) | (batch > training[SPEC.feature_names].max())
        expected.append(outside.to_numpy().sum() / batch.size)
    assert out_of_range["y"] == [pytest.approx(v, abs=1e-4) for v in expected]


def html_root(children: Any) -> Any:
    return dash.html.Div(children)


def _all(component: Any) -> list[Any]:
    out = [component]
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if isinstance(child, dash.development.base_component.Component):
            out += _all(child)
    return out


def test_a_refresh_tick_redraws_only_when_a_run_arrived(call: Call, world: tuple[LocalFeatureStore, Settings]) -> None:
    store, settings = world
    page = call(overview.layout, dataset="iris")
    state = find(page, ids.OVERVIEW_STATE).data
    with pytest.raises(dash.exceptions.PreventUpdate):
        call(overview.refresh_overview, 1, "all", state, trigger=ids.REFRESH)
    add_batch(store, settings, DAYS)
    body, new_state = call(overview.refresh_overview, 2, "all", state, trigger=ids.REFRESH)
    assert new_state["signature"] != state["signature"]
    assert trace(graphs(body)[0], figures.REALIZED_NAME)["x"][-1] == day(DAYS).isoformat()
    assert f"in {DAYS + 1} batches" in text_of(body)


def test_the_time_window_narrows_the_charts_and_the_counts(call: Call, world: tuple[LocalFeatureStore, Settings]) -> None:
    store, settings = world
    far = DAYS + 40  # a batch 40 days after the others: the last 30 days hold only it
    add_batch(store, settings, far)
    state = find(call(overview.layout, dataset="iris"), ids.OVERVIEW_STATE).data
    body, _ = call(overview.refresh_overview, None, "30d", state, trigger=ids.OVERVIEW_WINDOW)
    accuracy, labels, per_class, shares, quality = graphs(body)
    assert trace(accuracy, figures.REALIZED_NAME)["x"] == [day(far).isoformat()]
    assert [f["data"][0]["x"] for f in (labels, shares, quality)] == [[day(far).isoformat()]] * 3
    # Its rolling window (7 days) holds its 12 rows only: too few for per-class figures.
    assert per_class["data"] == [] and "from 20 labelled rows" in per_class["layout"]["annotations"][0]["text"]
    rows = text_of(find(html_root(body), ids.HEADLINE_ROWS))
    assert rows == f"rows scored, last 30 days {ROWS:,} in 1 batches"
    assert text_of(find(html_root(body), ids.HEADLINE_ALERTS)).startswith("batches with an alert, last 30 days")
    assert text_of(find(html_root(body), ids.OVERVIEW_ALERTS)) == "No alert in the last 30 days."
    # The latest batch and the days since retrain are the whole history's.
    assert day(far).isoformat() in text_of(find(html_root(body), ids.HEADLINE_LATEST))
    assert text_of(find(html_root(body), ids.HEADLINE_RETRAIN)).startswith(f"days since retrain {far} ")
    body, _ = call(overview.refresh_overview, None, "all", state, trigger=ids.OVERVIEW_WINDOW)
    assert text_of(find(html_root(body), ids.HEADLINE_ROWS)) == f"rows scored {(DAYS + 1) * ROWS:,} in {DAYS + 1} batches"
    assert len(trace(graphs(body)[0], figures.REALIZED_NAME)["x"]) == DAYS + 1


def test_alerts_are_listed_under_the_chart_with_their_messages(call: Call) -> None:
    client = MlflowClient()
    experiment = client.get_experiment_by_name("iris-monitoring").experiment_id
    messages = {"accuracy": "accuracy alert: rolling accuracy 0.500 over 40 rows is below <b>0.800</b>",
                "drift": "drift alert: 1 feature(s) drifted (petal_length on the recent days 2024-03-04)"}
    alerted = client.create_run(experiment, run_name="alerted", tags={
        "as_of": day(DAYS).isoformat(), "model_version": "1", "alert": "true", "alert_accuracy": "true",
        "alert_drift": "true", "alerts": " | ".join(messages.values()), "latest_key": "1", "latest_prediction": "Setosa",
        "latest_actual": "Setosa"})
    client.log_metric(alerted.info.run_id, "batch_accuracy", 0.5)
    client.set_terminated(alerted.info.run_id)
    page = call(overview.layout, dataset="iris")
    listed = find(page, ids.OVERVIEW_ALERTS)
    items = listed.children[1].children
    assert [text_of(i) for i in items] == [
        f"{day(DAYS).isoformat()} accuracy alert rolling accuracy 0.500 over 40 rows is below <b>0.800</b>",
        f"{day(DAYS).isoformat()} drift alert 1 feature(s) drifted (petal_length on the recent days 2024-03-04)"]
    assert [i.children[1].className for i in items] == ["alert-kind alert-kind-accuracy", "alert-kind alert-kind-drift"]
    accuracy, drift_marker = (next(t for t in graphs(page)[0]["data"] if t["name"] == f"{k} alert") for k in ("accuracy", "drift"))
    assert accuracy["x"] == drift_marker["x"] == [day(DAYS).isoformat()] and accuracy["y"] == [0.5]
    assert "&lt;b&gt;0.800&lt;/b&gt;" in accuracy["hovertext"][0]
    assert "1 accuracy, 1 drift" in text_of(find(page, ids.HEADLINE_ALERTS))


# --- Confusion matrices ---------------------------------------------------------------------------


def test_confusion_matrices_of_any_run_with_their_counts(call: Call) -> None:
    runs = mlflow.search_runs(experiment_names=["iris-monitoring"], order_by=["tags.as_of ASC"])
    first = runs["run_id"].iloc[0]
    page = call(confusion.layout, dataset="iris", run=first)
    picker = find(page, ids.CONFUSION_RUN)
    assert picker.value == first and len(picker.options) == DAYS
    assert picker.options[0]["label"].startswith(day(DAYS - 1).isoformat())  # newest first
    figures = graphs(call(confusion.show_run, first, {"dataset": "iris"}))
    assert len(figures) == 3
    table = mlflow.artifacts.load_dict(f"runs:/{first}/confusion/batch.json")
    counts = [[int(v) for v in row] for row in figures[0]["data"][0]["text"]]
    assert counts == table["matrix"]
    links = [c.href for c in _all(html_root(call(confusion.show_run, first, {"dataset": "iris"}))) if isinstance(c, dash.html.A)]
    experiment = MlflowClient().get_experiment_by_name("iris-monitoring").experiment_id
    assert links == [f"http://mlflow.example:5000/#/experiments/{experiment}/runs/{first}"]
    missing = call(confusion.show_run, "0" * 32, {"dataset": "iris"})
    assert "is not a finished monitoring run" in text_of(missing)


def test_the_run_picker_gains_new_runs_on_refresh(call: Call, world: tuple[LocalFeatureStore, Settings]) -> None:
    store, settings = world
    state = find(call(confusion.layout, dataset="iris"), ids.CONFUSION_STATE).data
    with pytest.raises(dash.exceptions.PreventUpdate):
        call(confusion.refresh_runs, 1, state)
    new_run = add_batch(store, settings, DAYS)
    options, _ = call(confusion.refresh_runs, 2, state)
    assert options[0]["value"] == new_run


# --- Predictions ---------------------------------------------------------------------------------


def test_predictions_are_paged_sorted_and_filtered_on_the_server(call: Call) -> None:
    state = {"dataset": "iris"}
    rows, pages, summary = call(predictions.page_predictions, 0, 5, [], "", None, state)
    assert len(rows) == 5 and pages == (DAYS * ROWS + 4) // 5
    assert set(rows[0]) == {"key", "event_time", "prediction", "probability", "actual", "correct", "model_version"}
    assert rows[0]["event_time"].startswith(day(DAYS - 1).isoformat())  # newest first
    assert f"{DAYS * ROWS} of {DAYS * ROWS} predictions" in text_of(summary)
    ordered, _, _ = call(predictions.page_predictions, 0, 100, [{"column_id": "probability", "direction": "asc"}], "", None, state)
    assert [r["probability"] for r in ordered] == sorted(r["probability"] for r in ordered)
    setosa, _, summary = call(predictions.page_predictions, 0, 100, [], "{prediction} contains Setosa", None, state)
    assert setosa and {r["prediction"] for r in setosa} == {"Setosa"}
    rows, pages, message = call(predictions.page_predictions, 0, 5, [], "{probability} > lots", None, state)
    assert rows == [] and "filter not applied: 'lots' is not a number" in text_of(message)


def test_the_filtered_predictions_download_as_csv(call: Call) -> None:
    state = {"dataset": "iris"}
    order = [{"column_id": "probability", "direction": "asc"}]
    query = "{prediction} contains Versicolor"
    _, _, summary = call(predictions.page_predictions, 0, 5, order, query, None, state)
    kept = int(text_of(summary).split(" of ")[0].replace(",", ""))
    download = call(predictions.export_predictions, 1, order, query, state)
    assert download["filename"] == "iris-predictions.csv" and download["type"] == "text/csv" and not download["base64"]
    table = pd.read_csv(io.StringIO(download["content"]))
    assert list(table.columns) == ["key", "event_time", "prediction", "probability", "actual", "correct", "model_version"]
    assert 0 < len(table) == kept < DAYS * ROWS  # every row the filter keeps, not one page
    assert set(table["prediction"]) == {"Versicolor"} and table["probability"].is_monotonic_increasing
    everything = pd.read_csv(io.StringIO(call(predictions.export_predictions, 2, [], "", state)["content"]))
    assert len(everything) == DAYS * ROWS
    for clicks, query, dataset in ((0, "", "iris"), (1, "{probability} > lots", "iris"), (1, "", "<nope>")):
        with pytest.raises(dash.exceptions.PreventUpdate):  # nothing to send; the table says why
            call(predictions.export_predictions, clicks, [], query, {"dataset": dataset})


# --- Drift ---------------------------------------------------------------------------------------


def test_drift_history_and_the_latest_batch_against_training_rows(call: Call) -> None:
    page = call(drift.layout, dataset="iris")
    state = find(page, ids.DRIFT_STATE).data
    picker = find(page, ids.DRIFT_RUN)
    assert len(picker.options) == DAYS and picker.value == picker.options[0]["value"]  # the newest run
    history, state, options, value = call(drift.show_history, None, None, state, picker.value, trigger=ids.DRIFT_STAT)
    assert options is dash.no_update and value is dash.no_update
    figure = graphs(history)[0]
    assert [t["name"] for t in figure["data"]][:len(SPEC.feature_names)] == SPEC.feature_names
    assert "effect size per feature" in figure["layout"]["title"]["text"]  # the default
    with pytest.raises(dash.exceptions.PreventUpdate):
        call(drift.show_history, "effect", 1, state, picker.value, trigger=ids.REFRESH)
    adjusted, _, _, _ = call(drift.show_history, "padj", None, state, picker.value, trigger=ids.DRIFT_STAT)
    assert graphs(adjusted)[0]["layout"]["yaxis"]["type"] == "log"
    distribution = graphs(call(drift.show_distribution, "petal_length", picker.value, "judged", state))[0]
    names = [t["name"] for t in distribution["data"]]
    run = MlflowClient().get_run(picker.value).data
    assert names[0].startswith("training rows of model v1")
    assert names[1] == f"recent window {run.tags['drift_window']} ({int(run.metrics['drift_rows'])} rows)"
    batch = graphs(call(drift.show_distribution, "petal_length", picker.value, "batch", state))[0]
    assert batch["data"][1]["name"] == f"batch {day(DAYS - 1).isoformat()} ({ROWS} rows)"


def test_new_runs_join_the_drift_picker_which_follows_the_newest(call: Call, world: tuple[LocalFeatureStore, Settings]) -> None:
    store, settings = world
    page = call(drift.layout, dataset="iris")
    state, latest = find(page, ids.DRIFT_STATE).data, find(page, ids.DRIFT_RUN).value
    _, state, _, _ = call(drift.show_history, "effect", None, state, latest, trigger=ids.DRIFT_STAT)
    new_run = add_batch(store, settings, DAYS)
    _, state, options, value = call(drift.show_history, "effect", 2, state, latest, trigger=ids.REFRESH)
    assert options[0]["value"] == new_run and value == new_run
    older = options[-1]["value"]
    add_batch(store, settings, DAYS + 1)
    _, _, options, value = call(drift.show_history, "effect", 3, state, older, trigger=ids.REFRESH)
    assert len(options) == DAYS + 2 and value is dash.no_update  # a run the reader chose stays chosen


def test_a_run_logged_before_effect_sizes_is_shown_with_what_it_has(call: Call) -> None:
    """Runs of the first drift rule: raw p-values and PSI, a drift.json without windows."""
    client = MlflowClient()
    experiment = client.get_experiment_by_name("iris-monitoring").experiment_id
    old = client.create_run(experiment, run_name="old-rule", tags={
        "as_of": day(DAYS).isoformat(), "model_version": "1", "drift_basis": "batch", "alert": "true",
        "alert_drift": "true", "alerts": "drift alert: 1 feature(s) drifted (petal_length), share 0.25 >= 0.10",
        "not_computed": "",
    })
    run_id = old.info.run_id
    p_values = {"sepal_length": 0.5, "sepal_width": 0.2, "petal_length": 1e-5, "petal_width": 0.04}
    for feature, p_value in p_values.items():
        client.log_metric(run_id, f"drift_p_{feature}", p_value)
        client.log_metric(run_id, f"drift_psi_{feature}", 0.3 if feature == "petal_length" else 0.01)
    client.log_metric(run_id, "drift_rows", 40)
    client.log_param(run_id, "drift_p_value", "0.001")
    client.log_dict(run_id, {"basis": "batch", "features": [
        {"feature": f, "test": "ks", "p_value": p, "psi": 0.01, "drifted": p < 0.001} for f, p in p_values.items()
    ]}, "drift.json")
    client.set_terminated(run_id)

    page = call(drift.layout, dataset="iris")
    assert find(page, ids.DRIFT_RUN).options[0] == {"label": f"{day(DAYS).isoformat()} ⚠ drift", "value": run_id}
    table = find(page, ids.DRIFT_TABLE)
    first = table.children[1].children[0]
    assert [text_of(cell) for cell in first.children] == [
        "petal_length", "the batch (40 rows)", "Kolmogorov-Smirnov", "n/a", "n/a", "1e-5", "n/a", "0.010", "yes"]
    assert "test's p-value was below 0.001" in text_of(page)
    assert find(page, ids.DRIFT_FEATURE).value == "petal_length"  # the table's first feature
    state = find(page, ids.DRIFT_STATE).data
    history, _, _, _ = call(drift.show_history, "psi", None, state, run_id, trigger=ids.DRIFT_STAT)
    marked = graphs(history)[0]["data"][-1]
    assert marked["name"].startswith("drifted") and marked["x"] == [day(DAYS).isoformat()]  # by the old rule
    distribution = graphs(call(drift.show_distribution, "petal_length", run_id, None, state))[0]
    assert distribution["data"][1]["name"] == f"batch {day(DAYS).isoformat()} (0 rows)"  # judged on its batch
    rolling = graphs(call(drift.show_distribution, "petal_length", run_id, "rolling", state))[0]
    assert rolling["data"][1]["name"] == f"batch {day(DAYS).isoformat()} (the run has no rolling window) (0 rows)"


DRIFT_END = IRIS_START + dt.timedelta(days=IRIS_DAYS + 5)
DRIFT_FROM = 4  # the simulation's fourth day


@pytest.fixture(scope="module")
def iris_drifted_template(iris_monitored_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Iris world plus six simulated days of 30 rows; petal length + 2 from the fourth."""
    folder = tmp_path_factory.mktemp("iris_drifted")
    with pytest.MonkeyPatch.context() as patch:
        store, settings = copy_world(iris_monitored_template, folder, patch)
        patch.chdir(folder)
        simulate(SPEC, store, settings, SimulateOptions(
            days=6, end_date=DRIFT_END, rows=30, drift=parse_drift("petal_length+2", SPEC), drift_from=DRIFT_FROM,
        ))
    mlflow.set_tracking_uri(None)
    return folder


@pytest.fixture
def drifted_call(iris_drifted_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Call]:
    monkeypatch.chdir(tmp_path)
    _, settings = copy_world(iris_drifted_template, tmp_path, monkeypatch)
    yield from _calls_into(create_app(settings, cache_ttl_s=0.0, clock=lambda: NOW))
    mlflow.set_tracking_uri(None)


def test_the_drift_table_explains_an_alert_with_the_runs_numbers(drifted_call: Call) -> None:
    call = drifted_call
    runs = mlflow.search_runs(experiment_names=["iris-monitoring"], order_by=["tags.as_of ASC"]).set_index("tags.as_of")
    drift_from = (DRIFT_END - dt.timedelta(days=6 - DRIFT_FROM)).isoformat()
    alerted = runs[runs["tags.alert_drift"] == "true"]
    assert len(alerted) and alerted.index.min() >= drift_from and (runs.loc[runs.index < drift_from, "tags.alert_drift"] == "false").all()
    as_of = alerted.index.min()
    run = alerted.loc[as_of]
    run_id = run["run_id"]

    page = call(drift.layout, dataset="iris")
    options = find(page, ids.DRIFT_RUN).options
    assert {o["label"] for o in options if o["label"].endswith("⚠ drift")} == {f"{d} ⚠ drift" for d in alerted.index}
    state = find(page, ids.DRIFT_STATE).data

    body = call(drift.show_run, run_id, state)
    assert text_of(find(html_root(body), ids.DRIFT_ALERT)) == run["tags.alerts"].split(" | ")[-1]
    rows = find(html_root(body), ids.DRIFT_TABLE).children[1].children
    cells = [text_of(cell) for cell in rows[0].children]
    metric = {name: run[f"metrics.drift_{name}_petal_length"] for name in ("p", "padj", "effect", "psi")}
    report = mlflow.artifacts.load_dict(f"runs:/{run_id}/drift.json")
    window = next(e for e in report["features"] if e["feature"] == "petal_length")["window"]
    span, window_rows = ((run["tags.drift_window_rolling"], run["metrics.drift_rows_rolling"]) if window == "rolling"
                         else (run["tags.drift_window"], run["metrics.drift_rows"]))
    first, _, last = span.partition("..")
    days = (dt.date.fromisoformat(last or first) - dt.date.fromisoformat(first)).days + 1
    assert cells[0] == "petal_length" and cells[-1] == "yes" and rows[0].className == "drifted"
    assert cells[1] == f"{window} {span} ({days} day{'s' if days != 1 else ''}, {int(window_rows)} rows)"
    assert cells[4].startswith(f"{metric['effect']:.3f}") and "Wasserstein distance / reference std" in cells[4]
    assert cells[5:8] == [figures.p_value_text(metric["p"]), figures.p_value_text(metric["padj"]), f"{metric['psi']:.3f}"]
    assert all(text_of(r.children[-1]) == "no" for r in rows[1:])

    explained = call(lambda: drift.explain_run(current_site(), SPEC, run_id))[1]
    top = explained[0]
    assert (top.p_value, top.p_adjusted, top.effect, top.psi) == (metric["p"], metric["padj"], metric["effect"], metric["psi"])
    assert top.p_adjusted < float(run["params.drift_p_value"]) and top.effect >= float(run["params.drift_min_effect"])

    history, _, _, _ = call(drift.show_history, "effect", None, state, run_id, trigger=ids.DRIFT_STAT)
    figure = graphs(history)[0]
    marked = figure["data"][-1]
    assert marked["name"].startswith("drifted") and as_of in marked["x"]
    assert set(marked["hovertext"]) == {f"petal_length drifted on {d}" for d in marked["x"]}
    assert figure["layout"]["shapes"][0]["y0"] == float(run["params.drift_min_effect"])
    adjusted = graphs(call(drift.show_history, "padj", None, state, run_id, trigger=ids.DRIFT_STAT)[0])[0]
    assert adjusted["layout"]["shapes"][0]["y0"] == float(run["params.drift_p_value"])
    assert "0.001" in adjusted["layout"]["yaxis"]["ticktext"]

    distribution = graphs(call(drift.show_distribution, "petal_length", run_id, "judged", state))[0]
    assert distribution["data"][1]["name"] == f"{window} window {span} ({int(window_rows)} rows)"
    # The other windows of the run: the rows the site finds for them are those the run counted.
    shown = {w: graphs(call(drift.show_distribution, "petal_length", run_id, w, state))[0]["data"][1]["name"]
             for w in ("batch", "recent", "rolling")}
    assert shown["batch"] == f"batch {as_of} ({int(run['metrics.rows_scored'])} rows)"
    assert shown["recent"] == f"recent window {run['tags.drift_window']} ({int(run['metrics.drift_rows'])} rows)"
    assert run["tags.drift_window_rolling"]  # six days of 30 rows and three of 12: a longer rolling window
    assert shown["rolling"] == (f"rolling window {run['tags.drift_window_rolling']} "
                                f"({int(run['metrics.drift_rows_rolling'])} rows)")
    for shown_window in ("batch", "rolling"):
        figure = call(drift.show_distribution, "petal_length", run_id, shown_window, state).figure  # a go.Figure
        tallest = max(float(np.max(t.y)) for t in figure.data)
        assert 0 < tallest < figure.layout.yaxis.range[1]


# --- Models --------------------------------------------------------------------------------------


def test_models_list_versions_aliases_holdout_metrics_and_tuning_history(call: Call) -> None:
    page = call(models.layout, dataset="iris")
    table = find(page, ids.MODELS_VERSIONS_TABLE)
    assert "champion" in text_of(table) and "challenger" in text_of(table)
    detail = call(models.show_version, 1, {"dataset": "iris"})
    shown = text_of(detail)
    assert "accuracy" in shown and "2 trials" in shown
    tuning = graphs(detail)[0]
    assert len(tuning["data"][0]["x"]) == 2
    assert "http://mlflow.example:5000/#/experiments/" in repr(detail)


def test_a_new_version_appears_on_refresh(call: Call) -> None:
    state = find(call(models.layout, dataset="iris"), ids.MODELS_STATE).data
    with pytest.raises(dash.exceptions.PreventUpdate):
        call(models.refresh_versions, 1, state)
    client = MlflowClient()
    source = client.get_model_version("iris", "1")
    client.create_model_version("iris", source.source, run_id=source.run_id)
    _table, options, _ = call(models.refresh_versions, 2, state)
    assert [o["value"] for o in options] == [2, 1]


# --- Data ----------------------------------------------------------------------------------------


def test_data_page_summarises_features_and_tells_real_from_synthetic(call: Call) -> None:
    page = call(data.layout, dataset="iris")
    shown = text_of(page)
    assert f"150 real, {DAYS * ROWS} synthetic" in shown
    summary = find(page, ids.DATA_SUMMARY)
    assert "sepal_length" in text_of(summary) and "0 to 10; required" in text_of(summary)
    distribution = graphs(call(data.show_distribution, "petal_width", {"dataset": "iris"}))[0]
    assert {t["name"] for t in distribution["data"]} == set(SPEC.classes)
    correlation = graphs(call(data.show_correlation, "real", {"dataset": "iris"}))[0]
    assert list(correlation["data"][0]["x"]) == list(SPEC.classes)
    assert "150" in correlation["layout"]["title"]["text"]


# --- Predict -------------------------------------------------------------------------------------


def test_the_form_comes_from_the_spec_and_the_champion_answers(call: Call) -> None:
    page = call(predict.layout, dataset="iris")
    for name in SPEC.feature_names:
        assert find(page, ids.predict_input(name)) is not None
    result, messages = call(predict.predict, 1, [5.1, 3.5, 1.4, 0.2], {"dataset": "iris"})
    assert messages == ["", "", "", ""]
    answer = find(result, ids.PREDICT_ANSWER)
    assert answer is not None and getattr(answer, "data-class") == "Setosa"
    result, messages = call(predict.predict, 2, [5.1, 30, None, "x"], {"dataset": "iris"})
    assert messages[0] == "" and "outside the allowed range (0 to 10)" in messages[1]
    assert "required" in messages[2] and "'x' is not a number" in messages[3]
    assert "3 value(s) outside the schema" in text_of(result)


def test_predict_without_a_champion_says_what_to_run(tmp_path: Path, mlflow_template_db: Path, data_dir: Path) -> None:
    shutil.copyfile(mlflow_template_db, tmp_path / "mlflow.db")
    store = LocalFeatureStore(tmp_path / "store")
    backfill(SPEC, store, load_source(SPEC, None, data_dir))
    app = create_app(resolve_settings(store_dir=store.root, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    with app.server.test_request_context():
        assert "no champion for iris yet" in text_of(predict.layout(dataset="iris"))
        result, _messages = predict.predict(1, [5.1, 3.5, 1.4, 0.2], {"dataset": "iris"})
        assert "has no champion yet: run `sml train --dataset iris` first" in text_of(result)
        assert "no monitoring runs for iris yet: run `sml infer --dataset iris`" in text_of(overview.layout(dataset="iris"))


# --- the shell, errors, safety ----------------------------------------------------------------------


def test_the_url_and_the_dataset_picker_stay_in_step(call: Call) -> None:
    search, picked, *hrefs = call(sync_dataset, "?dataset=iris", None)
    assert search is dash.no_update and picked == "iris"
    assert hrefs[0] == "/?dataset=iris" and hrefs[-1] == "/predict?dataset=iris"
    search, picked, *hrefs = call(sync_dataset, "?dataset=iris", "titanic", trigger=ids.DATASET)
    assert search == "?dataset=titanic" and picked is dash.no_update and "/predictions?dataset=titanic" in hrefs
    assert all(href.endswith("?dataset=titanic") for href in hrefs)
    _, picked, *hrefs = call(sync_dataset, "", None)
    assert picked == "titanic"  # the default dataset
    _, picked, *_ = call(sync_dataset, "?dataset=%3Cscript%3E", None)
    assert picked is None


def test_an_unknown_dataset_is_a_message_shown_as_text(call: Call) -> None:
    for layout in (overview.layout, confusion.layout, predictions.layout, drift.layout, models.layout, data.layout, predict.layout):
        page = call(layout, dataset="<img src=x onerror=alert(1)>")
        notice = page.children[1]
        assert notice.children == "unknown dataset '<img src=x onerror=alert(1)>' (choose one of: iris, titanic)"
        assert isinstance(notice, dash.html.Div)  # a text child: React escapes it


def test_a_tracking_server_that_is_down_gives_a_clear_page(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"http://admin:hunter2@127.0.0.1:{port}")
    app = create_app(settings)
    with app.server.test_request_context():
        for layout in (overview.layout, confusion.layout, models.layout):
            shown = text_of(layout(dataset="titanic"))
            assert "cannot be reached" in shown and "hunter2" not in shown
        assert "hunter2" not in repr(shell(current_site()))
        rows, _, notice = predictions.page_predictions(0, 5, [], "", None, {"dataset": "titanic"})
        assert rows == [] and "no predictions for titanic yet" in text_of(notice)
    assert not (tmp_path / "store").exists()


def test_no_secret_reaches_the_page(tmp_path: Path) -> None:
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri="postgresql://sml:s3cret@db.example/mlflow")
    app = create_app(settings, mlflow_ui_url="https://viewer:t0ken@mlflow.example")
    with app.server.test_request_context():
        page = repr(shell(current_site()))
    assert "s3cret" not in page and "t0ken" not in page
    assert "postgresql://sml:***@db.example/mlflow" in page
    assert app.server.debug is False
