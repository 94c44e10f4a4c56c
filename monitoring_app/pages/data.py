"""Data: what the lab looked at in a notebook before building features, read from the
feature group: per-feature type and schema, missing values, distributions by class, and
the correlation of each feature with the label. Real (backfilled), synthetic and live
rows are told apart throughout.

Reads the feature group ``<dataset>`` (cached until its data version moves).
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html

from monitoring_app import analysis, figures, ids
from monitoring_app.components import (
    GRAPH_CONFIG, control, dataset_callback, dataset_page, feature_callback, feature_picker, register_page, simple_table,
)
from monitoring_app.site import Site
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.feature_store.base import ORIGIN_COLUMN

PATH = "/data"
TITLE = "Data"
ROWS_OPTIONS = [{"label": "real rows", "value": "real"}, {"label": "synthetic rows", "value": "synthetic"},
                {"label": "live rows", "value": "live"}, {"label": "all rows", "value": "all"}]


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=5, layout=layout)
    app.callback(
        Output(ids.DATA_DISTRIBUTION, "children"),
        Input(ids.DATA_FEATURE, "value"),
        State(ids.DATA_STATE, "data"),
    )(show_distribution)
    app.callback(
        Output(ids.DATA_CORRELATION, "children"),
        Input(ids.DATA_ROWS, "value"),
        State(ids.DATA_STATE, "data"),
    )(show_correlation)


def layout(dataset: str | None = None, **_: Any) -> html.Div:
    return dataset_page(TITLE, dataset, ids.DATA_STATE, content)


def content(site: Site, spec: DatasetSpec, state: dict[str, Any]) -> Any:
    rows = site.data.feature_rows(spec)
    counts = rows[ORIGIN_COLUMN].map(analysis.origin_label).value_counts()
    described = ", ".join(f"{n:,} {origin}" for origin, n in counts.items())
    summary = analysis.feature_summary(rows, spec)
    return [
        html.P(f"{spec.description or spec.name}. {len(rows):,} rows in feature group '{spec.name}' "
               f"version {spec.version}: {described}. Label: {spec.label} "
               f"({', '.join(analysis.class_label(c, spec) for c in spec.classes)}).", className="muted"),
        html.Div(simple_table(summary.to_dict("records"), list(summary.columns), table_id=ids.DATA_SUMMARY),
                 className="table-wrap"),
        html.H3("Distribution by class"),
        feature_picker(ids.DATA_FEATURE, spec, spec.feature_names[0]),
        dcc.Loading(html.Div(id=ids.DATA_DISTRIBUTION), type="dot"),
        html.H3("Correlation with the label"),
        control("Rows", dcc.RadioItems(id=ids.DATA_ROWS, options=ROWS_OPTIONS, value="real", inline=True)),
        dcc.Loading(html.Div(id=ids.DATA_CORRELATION), type="dot"),
    ]


def show_distribution(feature: str | None, state: dict[str, Any] | None) -> Any:
    return feature_callback(feature, state, distribution_graph)


def distribution_graph(site: Site, spec: DatasetSpec, feature: str) -> dcc.Graph:
    rows = site.data.feature_rows(spec)
    rows = rows.assign(origin_label=rows[ORIGIN_COLUMN].map(analysis.origin_label))
    figure = figures.class_distribution_figure(rows, spec.feature(feature), spec)
    return dcc.Graph(figure=figure, config=GRAPH_CONFIG, id=ids.DATA_DISTRIBUTION_GRAPH)


def show_correlation(which: str | None, state: dict[str, Any] | None) -> Any:
    which = which or "real"

    def draw(site: Site, spec: DatasetSpec) -> Any:
        rows = analysis.select_origin(site.data.feature_rows(spec), which)
        labelled = int(rows[spec.label].notna().sum())
        kind = "" if which == "all" else f" {which}"
        if not labelled:
            return html.Div(f"no labelled{kind} rows yet", className="notice notice-info")
        matrix = analysis.label_correlations(rows, spec)
        unlabelled = f"; {len(rows) - labelled:,} without a label yet left out" if labelled < len(rows) else ""
        title = f"correlation with each class ({labelled:,}{kind} rows{unlabelled})"
        return dcc.Graph(figure=figures.correlation_figure(matrix, title), config=GRAPH_CONFIG, id=ids.DATA_CORRELATION_GRAPH)

    return dataset_callback(state, draw)
