"""Overview: accuracy over time with its references, the latest prediction, headline numbers.

Reads the dataset's monitoring runs (only the metrics and tags below) and the registry's
champion. The layout renders the page at once; the refresh callback re-renders it only
when a run was added or finished, or the champion changed.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html

from monitoring_app import analysis, figures, ids
from monitoring_app.components import (
    GRAPH_CONFIG, card, class_badge, control, fmt, guarded, page, page_dataset, register_page, token, triggered_id,
)
from monitoring_app.site import Site
from serverless_ml import tracking
from serverless_ml.datasets.spec import DatasetSpec

PATH = "/"
TITLE = "Overview"
METRICS = (
    "rows_scored", "rows_labelled", "batch_accuracy", "batch_accuracy_ci_low", "batch_accuracy_ci_high",
    "rolling_accuracy", "champion_holdout_accuracy",
)
TAGS = ("model_version", "alert")
# Read only for the runs that show them: the latest batch, and the batches with an alert.
DETAIL_METRICS = ("latest_probability",)
DETAIL_TAGS = ("alerts", "latest_key", "latest_prediction", "latest_actual")
WINDOW_OPTIONS = [{"label": label, "value": value} for label, value in
                  (("30 days", "30d"), ("90 days", "90d"), ("1 year", "1y"), ("all", "all"))]
DEFAULT_WINDOW = "all"


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=0, layout=layout)
    app.callback(
        Output(ids.OVERVIEW_BODY, "children"),
        Output(ids.OVERVIEW_STATE, "data"),
        Input(ids.REFRESH, "n_intervals"),
        Input(ids.OVERVIEW_WINDOW, "value"),
        State(ids.OVERVIEW_STATE, "data"),
        prevent_initial_call=True,
    )(refresh_overview)


def signature(site: Site, spec: DatasetSpec) -> str:
    """What the page shows changes only when this changes."""
    champion = site.data.champion(spec)
    return token([site.data.runs_signature(tracking.monitoring_experiment(spec.name)),
                  champion.version if champion else None])


def layout(dataset: str | None = None, **_: Any) -> html.Div:
    site, spec, problem = page_dataset(dataset)
    if spec is None:
        return page(TITLE, problem)
    body, state = render(site, spec, DEFAULT_WINDOW)
    return page(
        TITLE,
        control("Show", dcc.RadioItems(id=ids.OVERVIEW_WINDOW, options=WINDOW_OPTIONS, value=DEFAULT_WINDOW, inline=True)),
        html.Div(body, id=ids.OVERVIEW_BODY),
        state_id=ids.OVERVIEW_STATE, state=state,
    )


def render(site: Site, spec: DatasetSpec, window: str) -> tuple[Any, dict[str, Any]]:
    """The page's body for ``window`` and the state it was drawn from."""
    state: dict[str, Any] = {"dataset": spec.name, "signature": None, "window": window}

    def draw() -> Any:
        state["signature"] = signature(site, spec)
        runs = with_details(site, spec, site.data.monitoring_runs(spec, METRICS, TAGS))
        champion = site.data.champion(spec)
        return body(spec, runs, champion, window, site)

    return guarded(draw), state


def with_details(site: Site, spec: DatasetSpec, runs: Any) -> Any:
    """``runs`` with the detail columns filled in for the latest run and alerted runs."""
    wanted = [runs.index[-1], *runs.index[runs["tags.alert"].eq("true")]]
    details = site.data.run_values(tracking.monitoring_experiment(spec.name), wanted, DETAIL_METRICS, DETAIL_TAGS)
    columns = [f"metrics.{k}" for k in DETAIL_METRICS] + [f"tags.{k}" for k in DETAIL_TAGS]
    return runs.join(details[columns])


def body(spec: DatasetSpec, runs: Any, champion: Any, window: str, site: Site) -> list[Any]:
    numbers = analysis.headline(runs, champion, site.now())
    latest = analysis.latest_prediction(runs, spec)
    shown = analysis.within_window(runs, analysis.WINDOWS.get(window))
    return [
        html.Div(headline_cards(numbers), className="cards", id=ids.OVERVIEW_HEADLINE),
        html.Div([
            dcc.Graph(id=ids.OVERVIEW_GRAPH, figure=figures.accuracy_figure(shown, spec), config=GRAPH_CONFIG,
                      className="graph-main"),
            latest_card(spec, latest),
        ], className="row"),
    ]


def headline_cards(numbers: analysis.Headline) -> list[html.Div]:
    champion = "none" if numbers.champion_version is None else f"version {numbers.champion_version}"
    holdout = None if numbers.champion_holdout is None else f"holdout accuracy {fmt(numbers.champion_holdout)}"
    days = "-" if numbers.days_since_retrain is None else str(numbers.days_since_retrain)
    alert = "alert in the latest batch" if numbers.alerts_latest else "no alert in the latest batch"
    return [
        card("rows scored", f"{numbers.rows_scored:,}", f"in {numbers.batches:,} batches", card_id=ids.HEADLINE_ROWS),
        card("latest batch", numbers.latest_batch, alert, card_id=ids.HEADLINE_LATEST),
        card("current champion", champion, holdout, card_id=ids.HEADLINE_CHAMPION),
        card("days since retrain", days, None, card_id=ids.HEADLINE_RETRAIN),
        card("batches with an alert", f"{numbers.alert_batches:,}", None, card_id=ids.HEADLINE_ALERTS),
    ]


def latest_card(spec: DatasetSpec, latest: analysis.LatestPrediction | None) -> html.Div:
    if latest is None:
        return html.Div("no prediction yet", className="latest")
    verdict = {True: "correct", False: "wrong", None: "label not known yet"}[latest.correct]
    return html.Div([
        html.H3("Latest prediction"),
        html.Div(f"batch {latest.as_of}, row {latest.key}, model v{latest.model_version}", className="muted"),
        html.Div([
            html.Div([html.Div("predicted", className="card-label"), class_badge(spec, latest.prediction, 56),
                      html.Div(f"probability {fmt(latest.probability)}", className="muted")], className="latest-side"),
            html.Div([html.Div("actual", className="card-label"), class_badge(spec, latest.actual, 56)],
                     className="latest-side"),
        ], className="latest-pair"),
        html.Div(verdict, className=f"verdict verdict-{verdict.split()[0]}"),
    ], className="latest", id=ids.OVERVIEW_LATEST)


def refresh_overview(
    n_intervals: int | None, window: str | None, state: dict[str, Any] | None, trigger: str | None = None
) -> tuple[Any, Any]:
    """Re-render when the window changes, or on a refresh tick when the data changed."""
    state = state or {}
    site, spec, problem = page_dataset(state.get("dataset"))
    if spec is None:
        return problem, dash.no_update
    window = window or DEFAULT_WINDOW
    if (trigger or triggered_id()) == ids.REFRESH and window == state.get("window"):
        current = guarded(lambda: signature(site, spec))
        if isinstance(current, str) and current == state.get("signature"):
            raise dash.exceptions.PreventUpdate
    return render(site, spec, window)
