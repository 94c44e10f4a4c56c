"""Confusion matrices of any monitoring run: its batch, its rolling window and everything
since the champion's promotion, as heatmaps with counts.

Reads the runs' batch dates and model versions (for the picker) and the chosen run's
``confusion/*.json`` artifacts (kept once read, until late labels redraw them: ``sml
labels`` stamps the run when it does).
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html

from monitoring_app import figures, ids
from monitoring_app.components import (
    GRAPH_CONFIG, control, dataset_callback, dataset_page, guarded, kept_on_failure, link_or_text, refresh_target,
    register_page, token,
)
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec

PATH = "/confusion"
TITLE = "Confusion matrices"
TABLES = (("batch", "latest batch"), ("rolling", "rolling window"), ("since_promotion", "since promotion"))
METRICS = (registry.ROWS_SCORED_METRIC, registry.ROWS_LABELLED_METRIC)
TAGS = (registry.MODEL_VERSION_TAG, registry.ALERT_TAG, registry.LABELS_UPDATED_AT_TAG)


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=1, layout=layout)
    app.callback(
        Output(ids.CONFUSION_BODY, "children"),
        Input(ids.CONFUSION_RUN, "value"),
        State(ids.CONFUSION_STATE, "data"),
        prevent_initial_call=True,
    )(show_run)
    app.callback(
        Output(ids.CONFUSION_RUN, "options"),
        Output(ids.CONFUSION_STATE, "data"),
        Input(ids.REFRESH, "n_intervals"),
        State(ids.CONFUSION_STATE, "data"),
        prevent_initial_call=True,
    )(refresh_runs)


def run_options(runs: pd.DataFrame) -> list[dict[str, str]]:
    """Picker options, newest batch first: date, model version, rows, alert (built column
    by column: there may be thousands)."""
    newest = runs.iloc[::-1]
    if newest.empty:
        return []
    rows = newest[registry.metric_column(registry.ROWS_SCORED_METRIC)]
    rows_text = (", " + rows.fillna(0).astype(int).astype(str) + " rows").where(rows.notna(), "")
    alert = newest[registry.tag_column(registry.ALERT_TAG)].eq("true").map({True: ", alert", False: ""})
    names = newest["run_name"].fillna(pd.Series(newest.index, index=newest.index)).astype(str)
    labels = (newest[registry.tag_column(registry.AS_OF_TAG)].astype(str) + " (model v" + newest[registry.tag_column(registry.MODEL_VERSION_TAG)].astype(str) + rows_text
              + alert + ") - " + names)
    return [{"label": label, "value": str(run_id)} for run_id, label in zip(newest.index, labels, strict=True)]


def layout(dataset: str | None = None, run: str | None = None, **_: Any) -> html.Div:
    def picker(site: Site, spec: DatasetSpec, state: dict[str, Any]) -> Any:
        state["signature"] = token(site.data.runs_signature(registry.monitoring_experiment(spec.name)))
        runs = site.data.monitoring_runs(spec, METRICS, TAGS)
        chosen = run if run is not None and run in runs.index else str(runs.index[-1])
        return [
            control("Monitoring run", dcc.Dropdown(id=ids.CONFUSION_RUN, options=run_options(runs), value=chosen,
                                                   clearable=False, className="dropdown-wide")),
            html.Div(render(site, spec, chosen, runs), id=ids.CONFUSION_BODY),
        ]

    return dataset_page(TITLE, dataset, ids.CONFUSION_STATE, picker)


def render(site: Site, spec: DatasetSpec, run_id: str, runs: pd.DataFrame | None = None) -> Any:
    """The three matrices of ``run_id`` and a line about the run."""

    def draw() -> Any:
        frame = runs if runs is not None else site.data.monitoring_runs(spec, METRICS, TAGS)
        if run_id not in frame.index:
            return html.Div(f"run {run_id} is not a finished monitoring run of {spec.name}", className="notice notice-error")
        row = frame.loc[run_id]
        experiment_id = site.data.experiment_id(registry.monitoring_experiment(spec.name))
        relabelled = row.get(registry.tag_column(registry.LABELS_UPDATED_AT_TAG))
        version = relabelled if isinstance(relabelled, str) else None
        graphs = [
            dcc.Graph(figure=figures.confusion_figure(site.data.run_json(run_id, registry.confusion_artifact(name), version),
                                                      spec, title),
                      config=GRAPH_CONFIG, className="graph-third", id=f"{ids.CONFUSION_GRAPH_PREFIX}{name}")
            for name, title in TABLES
        ]
        about = html.Div([
            f"Batch {row[registry.tag_column(registry.AS_OF_TAG)]}, model v{row.get(registry.tag_column(registry.MODEL_VERSION_TAG))}, run ",
            link_or_text(run_id, site.run_url(experiment_id, run_id)),
        ], className="muted")
        return [about, html.Div(graphs, className="row")]

    return guarded(draw)


def show_run(run_id: str | None, state: dict[str, Any] | None) -> Any:
    def draw(site: Site, spec: DatasetSpec) -> Any:
        if not run_id:
            raise dash.exceptions.PreventUpdate
        return render(site, spec, run_id)

    return dataset_callback(state, draw)


def refresh_runs(n_intervals: int | None, state: dict[str, Any] | None) -> tuple[Any, Any]:
    """New runs join the picker (the chosen run stays chosen)."""
    site, spec, state = refresh_target(state)
    with kept_on_failure():
        current = token(site.data.runs_signature(registry.monitoring_experiment(spec.name)))
        if current == state.get("signature"):
            raise dash.exceptions.PreventUpdate
        runs = site.data.monitoring_runs(spec, METRICS, TAGS)
    state["signature"] = current
    return run_options(runs), state
