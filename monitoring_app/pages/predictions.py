"""Predictions: the recent predictions table (key, event time, prediction, probability,
actual, correct), sorted, filtered and paged on the server, and its filtered rows as a CSV
download. Rows whose label is not known yet say ``awaiting label`` in the actual column;
the count says how many there are and a button filters the table to them.

Reads the feature group ``<dataset>_predictions`` (cached until its data version moves);
only the page asked for goes to the browser (or, for the download, every row the filter
keeps, in the table's order).
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html
# (from its module: dash.dash_table's __init__ re-exports it in a way mypy cannot follow)
from dash.dash_table.DataTable import DataTable

from monitoring_app import ids, table_query
from monitoring_app.components import page, page_dataset, problem_notice, register_page
from monitoring_app.site import Site
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN

PATH = "/predictions"
TITLE = "Predictions"
COLUMNS: list[DataTable.Columns] = [
    {"name": "key", "id": "key"},
    {"name": "event time (UTC)", "id": "event_time"},
    {"name": "prediction", "id": "prediction"},
    {"name": "probability", "id": "probability", "type": "numeric"},
    {"name": "actual", "id": "actual"},
    {"name": "correct", "id": "correct"},
    {"name": "model version", "id": MODEL_VERSION_COLUMN, "type": "numeric"},
]


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=2, layout=layout)
    app.callback(
        Output(ids.PREDICTIONS_TABLE, "data"),
        Output(ids.PREDICTIONS_TABLE, "page_count"),
        Output(ids.PREDICTIONS_NOTICE, "children"),
        Input(ids.PREDICTIONS_TABLE, "page_current"),
        Input(ids.PREDICTIONS_TABLE, "page_size"),
        Input(ids.PREDICTIONS_TABLE, "sort_by"),
        Input(ids.PREDICTIONS_TABLE, "filter_query"),
        Input(ids.REFRESH, "n_intervals"),
        State(ids.PREDICTIONS_STATE, "data"),
    )(page_predictions)
    app.callback(
        Output(ids.PREDICTIONS_DOWNLOAD, "data"),
        Input(ids.PREDICTIONS_EXPORT, "n_clicks"),
        State(ids.PREDICTIONS_TABLE, "sort_by"),
        State(ids.PREDICTIONS_TABLE, "filter_query"),
        State(ids.PREDICTIONS_STATE, "data"),
        prevent_initial_call=True,
    )(export_predictions)
    app.callback(
        Output(ids.PREDICTIONS_TABLE, "filter_query"),
        Input(ids.PREDICTIONS_AWAITING, "n_clicks"),
        State(ids.PREDICTIONS_TABLE, "filter_query"),
        prevent_initial_call=True,
    )(show_awaiting)


def layout(dataset: str | None = None, **_: Any) -> html.Div:
    _site, spec, problem = page_dataset(dataset)
    if spec is None:
        return page(TITLE, problem)
    table = DataTable(
        id=ids.PREDICTIONS_TABLE, columns=COLUMNS, data=[], page_current=0, page_size=table_query.PAGE_SIZE,
        page_action="custom", sort_action="custom", sort_mode="multi", sort_by=[],
        filter_action="custom", filter_query="",
        style_table={"overflowX": "auto"}, style_cell={"fontFamily": "inherit", "padding": "4px 8px", "textAlign": "left"},
        style_header={"fontWeight": "600"},
        style_data_conditional=[
            {"if": {"filter_query": "{correct} = no"}, "backgroundColor": "#fef2f2"},
            {"if": {"filter_query": table_query.AWAITING_FILTER, "column_id": "actual"}, "color": "#6b7280",
             "fontStyle": "italic"},
        ],
    )
    hint = html.Div(
        "Type in a column's filter cell: text matches anywhere (survived), numbers compare (> 0.9). "
        "Click headers to sort (shift-click: several).",
        className="muted",
    )
    export = html.Div([
        html.Button("Download CSV", id=ids.PREDICTIONS_EXPORT, n_clicks=0, className="button"),
        html.Span("every row the filter keeps, in the table's order (a text cell starting with = + - @ gets a ' "
                  "in front, so a spreadsheet does not run it)", className="muted"),
        dcc.Download(id=ids.PREDICTIONS_DOWNLOAD),
    ], className="export")
    awaiting = html.Div([
        html.Button("Show rows awaiting a label", id=ids.PREDICTIONS_AWAITING, n_clicks=0, className="button button-secondary"),
        html.Span("rows whose outcome is not known yet (labels come later, with `sml labels`)", className="muted"),
    ], className="export")
    return page(TITLE, hint, export, awaiting, html.Div(id=ids.PREDICTIONS_NOTICE), table,
                state_id=ids.PREDICTIONS_STATE, state={"dataset": spec.name})


def displayed(site: Site, spec: DatasetSpec) -> pd.DataFrame:
    """The table's rows, formatted once per version of the predictions group."""
    predictions = site.data.predictions(spec)
    _, frame = site.data.cached(
        ("predictions-table", spec.name),
        lambda: (predictions, table_query.display_predictions(predictions, spec)),
        signature=lambda: id(predictions),  # the cached pair holds the frame: its id is not reused
    )
    return frame


def filtered(
    site: Site, spec: DatasetSpec, sort_by: list[dict[str, str]] | None, filter_query: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every row of the table and those the filter keeps, sorted as asked.

    Raises:
        table_query.FilterError: the filter cannot be applied.
    """
    frame = displayed(site, spec)
    terms = table_query.parse_filter(filter_query, list(frame.columns), table_query.NUMERIC_COLUMNS)
    return frame, table_query.apply_sort(table_query.apply_filter(frame, terms), sort_by)


def page_predictions(
    page_current: int | None,
    page_size: int | None,
    sort_by: list[dict[str, str]] | None,
    filter_query: str | None,
    n_intervals: int | None,
    state: dict[str, Any] | None,
) -> tuple[list[dict[str, Any]], int, Any]:
    """One page of the filtered, sorted predictions; a message instead of an exception."""
    site, spec, problem = page_dataset((state or {}).get("dataset"))
    if spec is None:
        return [], 1, problem
    try:
        frame, shown = filtered(site, spec, sort_by, filter_query)
    except table_query.FilterError as exc:
        return [], 1, html.Div(f"filter not applied: {exc}", className="notice notice-error", role="alert")
    except Exception as exc:  # noqa: BLE001 - shown as a notice
        return [], 1, problem_notice(exc)
    rows, pages = table_query.page_of(shown, page_current, page_size)
    # Counted once per version of the table (the cached pair holds the frame: its id is not reused).
    _, awaiting = site.data.cached(("predictions-awaiting", spec.name), lambda: (frame, table_query.awaiting_count(frame)),
                                   signature=lambda: id(frame))
    summary = html.Div([
        f"{len(shown):,} of {len(frame):,} predictions",
        html.Span(f" · {awaiting:,} awaiting a label", id=ids.PREDICTIONS_AWAITING_COUNT),
    ], className="muted", id=ids.PREDICTIONS_COUNT)
    return rows.to_dict("records"), pages, summary


def show_awaiting(n_clicks: int | None, filter_query: str | None) -> str:
    """The table's filter with its ``actual`` term replaced by the one keeping the rows
    awaiting a label (the other columns' terms are kept)."""
    if not n_clicks:
        raise dash.exceptions.PreventUpdate
    kept = [part.strip() for part in (filter_query or "").split("&&")
            if part.strip() and not part.strip().startswith("{actual}")]
    return " && ".join([*kept, table_query.AWAITING_FILTER])


def export_predictions(
    n_clicks: int | None, sort_by: list[dict[str, str]] | None, filter_query: str | None, state: dict[str, Any] | None
) -> dict[str, Any]:
    """The rows the table's filter keeps, in its order, as ``<dataset>-predictions.csv``.
    Nothing is sent when the filter cannot be applied or the rows cannot be read: the
    table says why in its notice."""
    if not n_clicks:
        raise dash.exceptions.PreventUpdate
    site, spec, _ = page_dataset((state or {}).get("dataset"))
    if spec is None:
        raise dash.exceptions.PreventUpdate
    try:
        _, shown = filtered(site, spec, sort_by, filter_query)
    except Exception:  # noqa: BLE001 - the table's notice says what failed
        raise dash.exceptions.PreventUpdate from None
    return {"content": table_query.to_csv(shown), "filename": f"{spec.name}-predictions.csv", "type": "text/csv",
            "base64": False}
