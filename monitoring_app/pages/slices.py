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
from dash import Input, Output, State, dcc, html

from monitoring_app import ids
from monitoring_app.components import (
    control, dataset_callback, dataset_page, fmt, guarded, kept_on_failure, link_or_text, refresh_target,
    register_page, token,
)
from monitoring_app.pages.confusion import run_options
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.inference import slices as slice_stats

PATH = "/slices"
TITLE = "Slices"
METRICS = (registry.ROWS_SCORED_METRIC, registry.ROWS_LABELLED_METRIC)
TAGS = (registry.MODEL_VERSION_TAG, registry.ALERT_TAG, registry.LABELS_UPDATED_AT_TAG)
COLUMNS = ("feature", "slice", "rows", "labelled", "realized accuracy", "estimated accuracy")
NOT_COMPUTED = "not computed"
WORST_ROW_STYLE = {"background": "#fef3c7", "fontWeight": 600}
KIND_TEXT = {slice_stats.CATEGORY: "each value", slice_stats.VALUES: "each value",
             slice_stats.BINS: "quantile bins of the training rows"}


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=7, layout=layout)
    app.callback(
        Output(ids.SLICES_BODY, "children"),
        Input(ids.SLICES_RUN, "value"),
        State(ids.SLICES_STATE, "data"),
        prevent_initial_call=True,
    )(show_run)
    app.callback(
        Output(ids.SLICES_RUN, "options"),
        Output(ids.SLICES_STATE, "data"),
        Input(ids.REFRESH, "n_intervals"),
        State(ids.SLICES_STATE, "data"),
        prevent_initial_call=True,
    )(refresh_runs)


def layout(dataset: str | None = None, run: str | None = None, **_: Any) -> html.Div:
    def picker(site: Site, spec: DatasetSpec, state: dict[str, Any]) -> Any:
        state["signature"] = token(site.data.runs_signature(registry.monitoring_experiment(spec.name)))
        runs = site.data.monitoring_runs(spec, METRICS, TAGS)
        chosen = run if run is not None and run in runs.index else str(runs.index[-1])
        return [
            control("Monitoring run", dcc.Dropdown(id=ids.SLICES_RUN, options=run_options(runs), value=chosen,
                                                   clearable=False, className="dropdown-wide")),
            html.Div(render(site, spec, chosen), id=ids.SLICES_BODY),
        ]

    return dataset_page(TITLE, dataset, ids.SLICES_STATE, picker)


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
    features = "; ".join(f"{f.name}: {KIND_TEXT.get(f.kind, f.kind)}" for f in table.plan.features)
    return html.Div([
        f"A slice's realized accuracy needs {table.plan.min_rows} labelled rows, its estimate (mean probability of the "
        f"predicted class) {table.plan.min_rows} rows; below, it is not computed. A missing value is a slice of its own. "
        f"Sliced: {features}.",
        *[html.Div(note, className="muted") for note in table.notes],
    ], className="muted")


def render(site: Site, spec: DatasetSpec, run_id: str) -> Any:
    """The slice table of ``run_id`` and a line about the run."""

    def draw() -> Any:
        frame = site.data.monitoring_runs(spec, METRICS, TAGS)
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
        table = slice_stats.SliceTable.from_json(site.data.run_json(run_id, registry.SLICES_ARTIFACT, version))
        if table is None:
            return [about, html.Div("This run logged no slice table (scored before slices were logged).",
                                    className="notice notice-info", id=ids.SLICES_WORST)]
        return [about, worst_line(table), html.Div(slice_table(table), className="table-wrap"), about_plan(table)]

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
