"""Drift: per-feature drift scores over time, and the latest batch's distribution of one
feature against the rows the model was trained on.

Reads the monitoring runs' ``drift_psi_<feature>`` / ``drift_p_<feature>`` metrics, the
latest run's predictions (its keys) and the feature group; the training rows are those
of the champion's training run (``training/keys.parquet``), or the real rows when that
run logged no keys.
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html

from monitoring_app import figures, ids
from monitoring_app.components import (
    GRAPH_CONFIG, control, feature_callback, feature_picker, guarded, page, page_dataset, register_page, token,
    triggered_id,
)
from monitoring_app.site import Site
from serverless_ml import tracking
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.feature_store.base import ORIGIN_COLUMN

PATH = "/drift"
TITLE = "Drift"
STAT_OPTIONS = [{"label": "PSI", "value": "psi"}, {"label": "test p-value", "value": "p"}]
LATEST_TAGS = ("model_version",)


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=3, layout=layout)
    app.callback(
        Output(ids.DRIFT_HISTORY, "children"),
        Output(ids.DRIFT_STATE, "data"),
        Input(ids.DRIFT_STAT, "value"),
        Input(ids.REFRESH, "n_intervals"),
        State(ids.DRIFT_STATE, "data"),
    )(show_history)
    app.callback(
        Output(ids.DRIFT_DISTRIBUTION, "children"),
        Input(ids.DRIFT_FEATURE, "value"),
        Input(ids.DRIFT_STATE, "data"),
    )(show_distribution)


def layout(dataset: str | None = None, feature: str | None = None, **_: Any) -> html.Div:
    _, spec, problem = page_dataset(dataset)
    if spec is None:
        return page(TITLE, problem)
    chosen = feature if feature in spec.feature_names else spec.feature_names[0]
    return page(
        TITLE,
        control("Score", dcc.RadioItems(id=ids.DRIFT_STAT, options=STAT_OPTIONS, value="psi", inline=True)),
        dcc.Loading(html.Div(id=ids.DRIFT_HISTORY), type="dot"),
        feature_picker(ids.DRIFT_FEATURE, spec, chosen),
        dcc.Loading(html.Div(id=ids.DRIFT_DISTRIBUTION), type="dot"),
        state_id=ids.DRIFT_STATE, state={"dataset": spec.name},
    )


def history_metrics(spec: DatasetSpec, stat: str) -> tuple[str, ...]:
    """The metrics the chart shows: one per feature, of the chosen score only."""
    prefix = "drift_psi_" if stat == "psi" else "drift_p_"
    return tuple(f"{prefix}{f}" for f in spec.feature_names)


def show_history(
    stat: str | None, n_intervals: int | None, state: dict[str, Any] | None, trigger: str | None = None
) -> tuple[Any, Any]:
    """The drift chart; on a refresh tick only when a run was added or finished."""
    state = dict(state or {})
    site, spec, problem = page_dataset(state.get("dataset"))
    if spec is None:
        return problem, dash.no_update
    stat = stat or "psi"
    fired = trigger or triggered_id()

    def draw() -> Any:
        current = token(site.data.runs_signature(tracking.monitoring_experiment(spec.name)))
        if fired == ids.REFRESH and current == state.get("signature") and stat == state.get("stat"):
            raise dash.exceptions.PreventUpdate
        state.update(signature=current, stat=stat)
        runs = site.data.monitoring_runs(spec, history_metrics(spec, stat))
        figure = figures.drift_history_figure(runs, spec, stat, site.drift_p_value)
        return dcc.Graph(figure=figure, config=GRAPH_CONFIG, id=ids.DRIFT_HISTORY_GRAPH)

    return guarded(draw), state


def latest_batch_rows(site: Site, spec: DatasetSpec) -> tuple[pd.DataFrame, str, pd.DataFrame, str]:
    """The latest batch's feature rows and the champion's training rows, with labels."""
    runs = site.data.monitoring_runs(spec, (), LATEST_TAGS)
    latest_id = str(runs.index[-1])
    latest = runs.iloc[-1]
    rows = site.data.feature_rows(spec)
    predictions = site.data.predictions(spec)
    keys = predictions.loc[predictions["run_id"] == latest_id, spec.primary_key]
    current = rows[rows[spec.primary_key].isin(keys)]
    version = next((v for v in site.data.model_versions(spec) if str(v.version) == str(latest.get("tags.model_version"))), None)
    train_keys = site.data.training_keys(spec, version.training_run_id) if version and version.training_run_id else None
    if train_keys is not None and len(train_keys):
        reference = rows[rows[spec.primary_key].isin(train_keys)]
        reference_label = f"training rows of model v{version.version}"
    else:
        reference = rows[rows[ORIGIN_COLUMN] == "backfill"]
        reference_label = "real rows"
    return reference, reference_label, current, f"batch {latest['tags.as_of']}"


def show_distribution(feature: str | None, state: dict[str, Any] | None) -> Any:
    """One feature: latest batch against training rows (redrawn when the history is)."""
    return feature_callback(feature, state, distribution_graph)


def distribution_graph(site: Site, spec: DatasetSpec, feature: str) -> dcc.Graph:
    reference, reference_label, current, current_label = latest_batch_rows(site, spec)
    figure = figures.distribution_figure(reference[feature], current[feature], spec.feature(feature),
                                         reference_label, current_label)
    return dcc.Graph(figure=figure, config=GRAPH_CONFIG, id=ids.DRIFT_DISTRIBUTION_GRAPH)
