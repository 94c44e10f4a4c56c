"""The site's layouts and callbacks, called directly (no browser) inside the app's request
context, against a real tracking database and feature store.

One Iris world per module (backfill, a two-trial training run, three days of batch
inference); each test gets a copy and its own app (cache time-to-live 0, so every call
checks for new data).
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dash
import mlflow
import pytest
from mlflow import MlflowClient

from monitoring_app import create_app, ids
from monitoring_app.app import shell, sync_dataset
from monitoring_app.pages import confusion, data, drift, models, overview, predict, predictions
from monitoring_app.site import current_site
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import backfill
from serverless_ml.settings import Settings, resolve_settings
from dash_text import text_of
from worlds import IRIS_DAYS, IRIS_ROWS, IRIS_START, add_iris_batch, copy_world, iris_day, iris_monitored_template  # noqa: F401 - fixture

pytestmark = pytest.mark.unit

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
    app = create_app(world[1], cache_ttl_s=0.0, clock=lambda: NOW, mlflow_ui_url="http://mlflow.example:5000")

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with app.server.test_request_context():
            return fn(*args, **kwargs)

    yield run
    with app.server.app_context():
        current_site().data.close()


def find(component: Any, component_id: Any) -> Any:
    """The component with ``component_id`` in a tree (or ``None``)."""
    if isinstance(component, (list, tuple)):
        for child in component:
            hit = find(child, component_id)
            if hit is not None:
                return hit
        return None
    if isinstance(component, dash.development.base_component.Component):
        if getattr(component, "id", None) == component_id:
            return component
        return find(getattr(component, "children", None), component_id)
    return None


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
    assert figure["data"][0]["x"] == [day(i).isoformat() for i in range(DAYS)]
    registered = MlflowClient().get_model_version("iris", "1").creation_timestamp / 1000
    days = (NOW - dt.datetime.fromtimestamp(registered, tz=dt.timezone.utc)).days
    assert text_of(find(page, ids.HEADLINE_RETRAIN)) == f"days since retrain {max(days, 0)}"


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
    assert graphs(body)[0]["data"][0]["x"][-1] == day(DAYS).isoformat()
    assert f"in {DAYS + 1} batches" in text_of(body)


def test_the_time_window_narrows_the_chart_not_the_headline(call: Call) -> None:
    state = find(call(overview.layout, dataset="iris"), ids.OVERVIEW_STATE).data
    body, _ = call(overview.refresh_overview, None, "30d", state, trigger=ids.OVERVIEW_WINDOW)
    assert len(graphs(body)[0]["data"][0]["x"]) == DAYS  # all within 30 days of the latest batch
    assert f"in {DAYS} batches" in text_of(body)


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


# --- Drift ---------------------------------------------------------------------------------------


def test_drift_history_and_the_latest_batch_against_training_rows(call: Call) -> None:
    history, state = call(drift.show_history, "psi", None, {"dataset": "iris"}, trigger=ids.DRIFT_STAT)
    figure = graphs(history)[0]
    assert [t["name"] for t in figure["data"]] == SPEC.feature_names
    with pytest.raises(dash.exceptions.PreventUpdate):
        call(drift.show_history, "psi", 1, state, trigger=ids.REFRESH)
    p_values, _ = call(drift.show_history, "p", None, state, trigger=ids.DRIFT_STAT)
    assert graphs(p_values)[0]["layout"]["yaxis"]["type"] == "log"
    distribution = graphs(call(drift.show_distribution, "petal_length", state))[0]
    names = [t["name"] for t in distribution["data"]]
    assert names[0].startswith("training rows of model v1") and names[1] == f"batch {day(DAYS - 1).isoformat()} ({ROWS} rows)"


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
    table, options, _ = call(models.refresh_versions, 2, state)
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
        result, messages = predict.predict(1, [5.1, 3.5, 1.4, 0.2], {"dataset": "iris"})
        assert "has no champion yet: run `sml train --dataset iris` first" in text_of(result)
        assert "no monitoring runs for iris yet: run `sml infer --dataset iris`" in text_of(overview.layout(dataset="iris"))


# --- the shell, errors, safety ----------------------------------------------------------------------


def test_the_url_and_the_dataset_picker_stay_in_step(call: Call) -> None:
    search, picked, *hrefs = call(sync_dataset, "?dataset=iris", None)
    assert search is dash.no_update and picked == "iris"
    assert hrefs[0] == "/?dataset=iris" and hrefs[-1] == "/predict?dataset=iris"
    search, picked, *hrefs = call(sync_dataset, "?dataset=iris", "titanic", trigger=ids.DATASET)
    assert search == "?dataset=titanic" and picked is dash.no_update and hrefs[2] == "/predictions?dataset=titanic"
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
