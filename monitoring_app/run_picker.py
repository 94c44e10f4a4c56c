"""Pages that show one monitoring run's artifacts, chosen in a picker of the dataset's runs
(the Confusion matrices and Slices pages): the picker's options, the page's layout, the
line about the chosen run, and the two callbacks (draw the chosen run; new runs join the
picker), written once.

Reads the runs' batch dates, model versions, rows and alerts (the picker) and, per run,
what the page's ``body`` reads (its artifacts, kept once read until late labels change
them: ``sml labels`` stamps the run when it does, and the stamp is the cache's version).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html

from monitoring_app.components import (
    control, dataset_callback, dataset_page, guarded, kept_on_failure, link_or_text, refresh_target, token,
)
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec

METRICS = (registry.ROWS_SCORED_METRIC, registry.ROWS_LABELLED_METRIC)
TAGS = (registry.MODEL_VERSION_TAG, registry.ALERT_TAG, registry.LABELS_UPDATED_AT_TAG)

Body = Callable[[str, "str | None"], list[Any]]
"""What a page draws for a run: ``body(run_id, version)`` (``version``: the run's late-label
stamp, the cache version of its artifacts; ``None`` before any)."""


def register_callbacks(app: dash.Dash, ids_: tuple[str, str, str], show_run: Callable[..., Any], refresh: str) -> None:
    """The page's two callbacks: ``show_run`` draws the run the picker chose; on each tick
    of ``refresh`` (the site's interval) new runs join the picker. ``ids_``: the picker's,
    the body's and the page state's component ids."""
    picker_id, body_id, state_id = ids_
    app.callback(Output(body_id, "children"), Input(picker_id, "value"), State(state_id, "data"),
                 prevent_initial_call=True)(show_run)
    app.callback(Output(picker_id, "options"), Output(state_id, "data"), Input(refresh, "n_intervals"),
                 State(state_id, "data"), prevent_initial_call=True)(refresh_runs)


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


def picker_layout(
    title: str, dataset: str | None, run: str | None, ids_: tuple[str, str, str],
    render: Callable[[Site, DatasetSpec, str, pd.DataFrame | None], Any],
) -> html.Div:
    """The page: a picker of the monitoring runs (``run`` chosen when it is one, else the
    newest) above ``render`` of the chosen run. ``ids_``: the picker's, the body's and the
    page state's component ids."""
    picker_id, body_id, state_id = ids_

    def picker(site: Site, spec: DatasetSpec, state: dict[str, Any]) -> Any:
        state["signature"] = token(site.data.runs_signature(registry.monitoring_experiment(spec.name)))
        runs = site.data.monitoring_runs(spec, METRICS, TAGS)
        chosen = run if run is not None and run in runs.index else str(runs.index[-1])
        return [
            control("Monitoring run", dcc.Dropdown(id=picker_id, options=run_options(runs), value=chosen,
                                                   clearable=False, className="dropdown-wide")),
            html.Div(render(site, spec, chosen, runs), id=body_id),
        ]

    return dataset_page(title, dataset, state_id, picker)


def render_run(site: Site, spec: DatasetSpec, run_id: str, runs: pd.DataFrame | None, body: Body) -> Any:
    """A line about the run (batch, model version, a link to it) and ``body`` of it; a
    notice for a run that is not a finished monitoring run of the dataset."""

    def draw() -> Any:
        frame = runs if runs is not None else site.data.monitoring_runs(spec, METRICS, TAGS)
        if run_id not in frame.index:
            return html.Div(f"run {run_id} is not a finished monitoring run of {spec.name}", className="notice notice-error")
        row = frame.loc[run_id]
        experiment_id = site.data.experiment_id(registry.monitoring_experiment(spec.name))
        relabelled = row.get(registry.tag_column(registry.LABELS_UPDATED_AT_TAG))
        version = relabelled if isinstance(relabelled, str) else None
        about = html.Div([
            f"Batch {row[registry.tag_column(registry.AS_OF_TAG)]}, model v{row.get(registry.tag_column(registry.MODEL_VERSION_TAG))}, run ",
            link_or_text(run_id, site.run_url(experiment_id, run_id)),
        ], className="muted")
        return [about, *body(run_id, version)]

    return guarded(draw)


def show_run_callback(render: Callable[[Site, DatasetSpec, str], Any]) -> Callable[[str | None, dict[str, Any] | None], Any]:
    """The callback that draws the run the picker chose."""

    def show_run(run_id: str | None, state: dict[str, Any] | None) -> Any:
        def draw(site: Site, spec: DatasetSpec) -> Any:
            if not run_id:
                raise dash.exceptions.PreventUpdate
            return render(site, spec, run_id)

        return dataset_callback(state, draw)

    return show_run


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
