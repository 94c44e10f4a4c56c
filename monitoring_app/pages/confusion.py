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
from dash import dcc, html

from monitoring_app import figures, ids
from monitoring_app.components import GRAPH_CONFIG, register_page
from monitoring_app.run_picker import (  # noqa: F401 - refresh_runs and run_options are this page's too
    picker_layout,
    refresh_runs,
    register_callbacks,
    render_run,
    run_options,
    show_run_callback,
)
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec

PATH = "/confusion"
TITLE = "Confusion matrices"
TABLES = (("batch", "this batch"), ("rolling", "rolling window"), ("since_promotion", "since promotion"))


IDS = (ids.CONFUSION_RUN, ids.CONFUSION_BODY, ids.CONFUSION_STATE)
"""The picker's, the body's and the page state's component ids."""


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=1, layout=layout)
    register_callbacks(app, IDS, show_run, ids.REFRESH)


def layout(dataset: str | None = None, run: str | None = None, **_: Any) -> html.Div:
    return picker_layout(TITLE, dataset, run, IDS, render)


def render(site: Site, spec: DatasetSpec, run_id: str, runs: pd.DataFrame | None = None) -> Any:
    """The three matrices of ``run_id`` and a line about the run."""

    def body(run_id: str, version: str | None) -> list[Any]:
        graphs = [
            dcc.Graph(figure=figures.confusion_figure(site.data.run_json(run_id, registry.confusion_artifact(name), version),
                                                      spec, title),
                      config=GRAPH_CONFIG, className="graph-third", id=f"{ids.CONFUSION_GRAPH_PREFIX}{name}")
            for name, title in TABLES
        ]
        return [html.Div(graphs, className="row")]

    return render_run(site, spec, run_id, runs, body)


show_run = show_run_callback(render)
