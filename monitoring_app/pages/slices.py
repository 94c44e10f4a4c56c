"""Slices: the accuracy of any monitoring run's batch per slice (each value of a slice
feature, or each quantile bin of a numeric one), realized on the labelled rows and
estimated from the champion's probabilities, with the rows of each; a slice with too few
rows shows "not computed" instead of a number, and the worst slice with enough rows is
highlighted.

Reads the runs' batch dates and model versions (for the picker; the confusion page's
options) and the chosen run's ``slices.json`` (kept once read, until late labels
recompute it: ``sml labels`` stamps the run when it does).
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import html

from monitoring_app import ids
from monitoring_app.components import fmt, register_page
from monitoring_app.run_picker import (
    picker_layout,
    register_callbacks,
    render_run,
    show_run_callback,
)
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.inference import slices as slice_stats

PATH = "/slices"
TITLE = "Slices"
COLUMNS = ("feature", "slice", "rows", "labelled", "realized accuracy", "estimated accuracy")
NOT_COMPUTED = "not computed"
WORST_ROW_STYLE = {"background": "#fef3c7", "fontWeight": 600}
KIND_TEXT = {slice_stats.CATEGORY: "each value", slice_stats.VALUES: "each value",
             slice_stats.BINS: "quantile bins of the training rows"}


IDS = (ids.SLICES_RUN, ids.SLICES_BODY, ids.SLICES_STATE)
"""The picker's, the body's and the page state's component ids."""


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=7, layout=layout)
    register_callbacks(app, IDS, show_run, ids.REFRESH)


def layout(dataset: str | None = None, run: str | None = None, **_: Any) -> html.Div:
    return picker_layout(TITLE, dataset, run, IDS, render)


def _accuracy(value: float | None, low: float | None, high: float | None) -> Any:
    if value is None:
        return html.Span(NOT_COMPUTED, className="muted not-computed")
    interval = "" if low is None or high is None else f" ({fmt(low)}-{fmt(high)})"
    return f"{fmt(value)}{interval}"


def slice_table(table: slice_stats.SliceTable) -> html.Table:
    """Every slice as a row; the worst slice highlighted."""
    worst = table.worst
    head = html.Thead(html.Tr([html.Th(c) for c in COLUMNS]))
    body = []
    for item in table.slices:
        cells = [item.feature, item.slice, f"{item.rows:,}", f"{item.labelled:,}",
                 _accuracy(item.realized, item.realized_low, item.realized_high),
                 _accuracy(item.estimated, item.estimated_low, item.estimated_high)]
        is_worst = item is worst
        extra: dict[str, Any] = {"style": WORST_ROW_STYLE} if is_worst else {}
        body.append(html.Tr([html.Td(c) for c in cells], className="slice-worst" if is_worst else "", **extra))
    return html.Table([head, html.Tbody(body)], className="table", id=ids.SLICES_TABLE)


def worst_line(table: slice_stats.SliceTable) -> html.Div:
    worst = table.worst
    if worst is None:
        text = f"No worst slice: no slice has {table.plan.min_rows} rows."
    else:
        text = (f"Worst slice: {worst.name}, {worst.basis} accuracy {fmt(worst.accuracy)} "
                f"({worst.labelled:,} labelled of {worst.rows:,} rows)")
    return html.Div(text, className="notice notice-info", id=ids.SLICES_WORST)


def about_plan(table: slice_stats.SliceTable) -> html.Div:
    present = {item.feature for item in table.slices}
    features = "; ".join(f"{f.name}: {KIND_TEXT.get(f.kind, f.kind)}" for f in table.plan.features if f.name in present)
    left_out = [f.name for f in table.plan.features if f.name not in present]
    if left_out:  # dropped for too many values (the notes below say why)
        features += f". Not sliced in this batch: {', '.join(left_out)}"
    return html.Div([
        f"A slice's realized accuracy needs {table.plan.min_rows} labelled rows, its estimate (mean probability of the "
        f"predicted class) {table.plan.min_rows} rows; below, it is not computed. A missing value is a slice of its own. "
        f"Sliced: {features}.",
        *[html.Div(note, className="muted") for note in table.notes],
    ], className="muted")


def render(site: Site, spec: DatasetSpec, run_id: str, runs: pd.DataFrame | None = None) -> Any:
    """The slice table of ``run_id`` and a line about the run."""

    def body(run_id: str, version: str | None) -> list[Any]:
        table = slice_stats.SliceTable.from_json(site.data.run_json(run_id, registry.SLICES_ARTIFACT, version))
        if table is None:
            return [html.Div("This run logged no slice table (scored before slices were logged).",
                             className="notice notice-info", id=ids.SLICES_WORST)]
        return [worst_line(table), html.Div(slice_table(table), className="table-wrap"), about_plan(table)]

    return render_run(site, spec, run_id, runs, body)


show_run = show_run_callback(render)
