"""Overview: accuracy over time (realized from labels, and estimated from the champion's
probabilities with its 95 % band while labels are missing) with its references and
alerts, the latest prediction, headline numbers (the latest batch's accuracy says which
of the two it is), label coverage per batch, per-class precision and recall, predicted
class shares against training, and data quality per batch.

Reads the dataset's monitoring runs (only the metrics and tags below; per-class metrics
through :func:`monitoring_app.data_access.class_metric`), the registry's champion, and for
data quality the predictions group, the feature group and the training keys of each model
version (``training/keys.parquet``; the real rows for a version without them). The layout
renders the page at once; the refresh callback re-renders it only when a run was added or
finished, or the champion changed, or the time window was changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html

from monitoring_app import analysis, figures, ids
from monitoring_app.components import (
    GRAPH_CONFIG, card, class_badge, control, fmt, guarded, page, page_dataset, register_page, token, triggered_id,
)
from monitoring_app.data_access import class_metric, class_metric_keys
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.inference.monitoring import MIN_ROWS_FOR_CLASS_METRICS
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN

PATH = "/"
TITLE = "Overview"
METRICS = (
    registry.ROWS_SCORED_METRIC, registry.ROWS_LABELLED_METRIC, registry.BATCH_ACCURACY_METRIC,
    registry.BATCH_ACCURACY_CI_LOW_METRIC, registry.BATCH_ACCURACY_CI_HIGH_METRIC,
    registry.ROLLING_ACCURACY_METRIC, registry.CHAMPION_HOLDOUT_ACCURACY_METRIC,
    registry.ESTIMATED_ACCURACY_METRIC, registry.ESTIMATED_ACCURACY_CI_LOW_METRIC,
    registry.ESTIMATED_ACCURACY_CI_HIGH_METRIC, registry.LABELLED_SHARE_METRIC,
)
CLASS_STEMS = (registry.ROLLING_PRECISION_STEM, registry.ROLLING_RECALL_STEM, registry.PREDICTED_SHARE_STEM,
               registry.TRAINING_SHARE_STEM)
"""Per-class metrics of a monitoring run that the page shows (one metric per class)."""
TAGS = (registry.MODEL_VERSION_TAG, registry.ALERT_TAG, registry.ALERT_ACCURACY, registry.ALERT_DRIFT)
# Read only for the runs that show them: the latest batch, and the batches with an alert.
DETAIL_METRICS = (registry.LATEST_PROBABILITY_METRIC,)
DETAIL_TAGS = (registry.ALERTS_TAG, registry.LATEST_KEY_TAG, registry.LATEST_PREDICTION_TAG, registry.LATEST_ACTUAL_TAG)
WINDOW_OPTIONS = [{"label": label, "value": value} for label, value in
                  (("30 days", "30d"), ("90 days", "90d"), ("1 year", "1y"), ("all", "all"))]
DEFAULT_WINDOW = "all"
MAX_ALERTS_LISTED = 20


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
    return token([site.data.runs_signature(registry.monitoring_experiment(spec.name)),
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


def metrics(spec: DatasetSpec) -> tuple[str, ...]:
    """The metrics the page reads of every run: :data:`METRICS` and the per-class ones."""
    return (*METRICS, *class_metric_keys(spec, *CLASS_STEMS))


def render(site: Site, spec: DatasetSpec, window: str) -> tuple[Any, dict[str, Any]]:
    """The page's body for ``window`` and the state it was drawn from."""
    state: dict[str, Any] = {"dataset": spec.name, "signature": None, "window": window}

    def draw() -> Any:
        state["signature"] = signature(site, spec)
        runs = with_details(site, spec, site.data.monitoring_runs(spec, metrics(spec), TAGS))
        champion = site.data.champion(spec)
        return body(spec, runs, champion, window, site)

    return guarded(draw), state


def with_details(site: Site, spec: DatasetSpec, runs: Any) -> Any:
    """``runs`` with the detail columns filled in for the latest run and alerted runs."""
    wanted = [runs.index[-1], *runs.index[runs[registry.tag_column(registry.ALERT_TAG)].eq("true")]]
    details = site.data.run_values(registry.monitoring_experiment(spec.name), wanted, DETAIL_METRICS, DETAIL_TAGS)
    columns = [*map(registry.metric_column, DETAIL_METRICS), *map(registry.tag_column, DETAIL_TAGS)]
    return runs.join(details[columns])


def window_days(window: Any) -> int | None:
    """Days of a window option (``None``: every batch; so is anything that is not one)."""
    return analysis.WINDOWS.get(window) if isinstance(window, str) else None


def body(spec: DatasetSpec, runs: pd.DataFrame, champion: Any, window: str, site: Site) -> list[Any]:
    days = window_days(window)
    numbers = analysis.headline(runs, champion, days)
    latest = guarded(lambda: with_known_label(site, spec, analysis.latest_prediction(runs, spec)))
    if not isinstance(latest, (analysis.LatestPrediction, type(None))):  # the predictions could not be read
        latest = analysis.latest_prediction(runs, spec)
    shown = analysis.within_window(runs, days)
    precision, recall, predicted, training = (class_metric(shown, spec, stem) for stem in CLASS_STEMS)
    return [
        html.Div(headline_cards(numbers), className="cards", id=ids.OVERVIEW_HEADLINE),
        html.Div([
            dcc.Graph(id=ids.OVERVIEW_GRAPH, figure=figures.accuracy_figure(shown, spec), config=GRAPH_CONFIG,
                      className="graph-main"),
            latest_card(spec, latest),
        ], className="row"),
        alert_panel(shown, days),
        html.H3("Labels"),
        dcc.Graph(id=ids.OVERVIEW_LABELS, figure=figures.label_coverage_figure(shown, spec), config=GRAPH_CONFIG,
                  className="graph-wide"),
        html.H3("Per class"),
        html.Div([
            dcc.Graph(id=ids.OVERVIEW_CLASS_METRICS, config=GRAPH_CONFIG, className="graph-half",
                      figure=figures.class_metrics_figure(shown, precision, recall, spec, "rolling window",
                                                          MIN_ROWS_FOR_CLASS_METRICS)),
            dcc.Graph(id=ids.OVERVIEW_CLASS_SHARES, config=GRAPH_CONFIG, className="graph-half",
                      figure=figures.class_share_figure(shown, predicted, training, spec)),
        ], className="row"),
        html.H3("Data quality"),
        guarded(lambda: quality_section(site, spec, shown)),
    ]


def window_text(days: int | None) -> str:
    return "" if days is None else f", last {days} days"


def headline_cards(numbers: analysis.Headline) -> list[html.Div]:
    champion = "none" if numbers.champion_version is None else f"version {numbers.champion_version}"
    holdout = None if numbers.champion_holdout is None else f"holdout accuracy {fmt(numbers.champion_holdout)}"
    days = "-" if numbers.days_since_retrain is None else str(numbers.days_since_retrain)
    if numbers.champion_version is None:
        since = None
    elif numbers.champion_since:
        since = f"in batch dates: v{numbers.champion_version} has scored since {numbers.champion_since}"
    else:
        since = f"in batch dates: v{numbers.champion_version} has not scored a batch yet"
    alert = "alert in the latest batch" if numbers.alerts_latest else "no alert in the latest batch"
    span = window_text(numbers.window_days)
    kinds = f"{numbers.accuracy_alert_batches:,} accuracy, {numbers.drift_alert_batches:,} drift"
    return [
        card(f"rows scored{span}", f"{numbers.rows_scored:,}", f"in {numbers.batches:,} batches", card_id=ids.HEADLINE_ROWS),
        card("latest batch", numbers.latest_batch, alert, card_id=ids.HEADLINE_LATEST),
        accuracy_card(numbers.latest_accuracy),
        card("current champion", champion, holdout, card_id=ids.HEADLINE_CHAMPION),
        card("days since retrain", days, since, card_id=ids.HEADLINE_RETRAIN),
        card(f"batches with an alert{span}", f"{numbers.alert_batches:,}", kinds, card_id=ids.HEADLINE_ALERTS),
    ]


def accuracy_card(accuracy: analysis.BatchAccuracy | None) -> html.Div:
    """The latest batch's accuracy, its label saying whether it is realized (from labels)
    or estimated (from the champion's probabilities, while labels are missing)."""
    if accuracy is None or accuracy.basis == analysis.NO_ACCURACY or accuracy.value is None:
        return card("latest batch accuracy", "-", "no labels and no estimate for this batch", card_id=ids.HEADLINE_ACCURACY,
                    class_name="card-wide")
    interval = "" if accuracy.low is None or accuracy.high is None else f"95 % interval {fmt(accuracy.low)}-{fmt(accuracy.high)}"
    counted = accuracy.rows_scored is not None and accuracy.rows_labelled is not None
    labelled = f"{accuracy.rows_labelled:,} of {accuracy.rows_scored:,} rows labelled" if counted else ""
    if accuracy.basis == analysis.REALIZED:
        detail = "; ".join(p for p in (labelled, interval) if p)
        return card("latest batch accuracy, realized", fmt(accuracy.value), detail or None, card_id=ids.HEADLINE_ACCURACY,
                    class_name="card-wide")
    if not accuracy.rows_labelled or accuracy.realized is None:
        known = f"no labels yet ({labelled})" if counted else "no labels yet"
    else:
        known = f"{labelled} (realized {fmt(accuracy.realized)} on those)"
    source = "from the champion's probabilities" + (f", {interval}" if interval else "")
    return card("latest batch accuracy, estimated", f"≈ {fmt(accuracy.value)}", f"{known}; {source}",
                card_id=ids.HEADLINE_ACCURACY, class_name="card-wide")


def alert_panel(runs: pd.DataFrame, days: int | None) -> html.Div:
    """The alerts of the batches shown, newest first, each with its message (the markers'
    hover text, readable without hovering)."""
    items = analysis.alert_list(runs)
    if not items:
        text = "No alert." if days is None else f"No alert in the last {days} days."
        return html.Div(text, className="muted alerts", id=ids.OVERVIEW_ALERTS)
    listed = []
    for item in items[:MAX_ALERTS_LISTED]:
        text = item.message
        prefix = f"{item.kind} alert"
        if text.startswith(prefix):
            text = text[len(prefix):].lstrip(": ") or text
        listed.append(html.Li([
            html.Span(item.as_of, className="alert-date"),
            html.Span(prefix, className=f"alert-kind alert-kind-{item.kind}"),
            html.Span(text, className="alert-text"),
        ]))
    more = len(items) - MAX_ALERTS_LISTED
    return html.Div([
        html.H3(f"Alerts{window_text(days)} (newest first)"),
        html.Ul(listed, className="alert-list"),
        *([html.Div(f"and {more:,} older alert(s) in this window", className="muted")] if more > 0 else []),
    ], className="alerts", id=ids.OVERVIEW_ALERTS)


def quality_frame(site: Site, spec: DatasetSpec) -> pd.DataFrame:
    """:func:`monitoring_app.analysis.data_quality` of every batch, each against the
    training rows of the model that scored it; computed once per version of the
    predictions, the feature rows and the registered versions."""
    predictions = site.data.predictions(spec)
    rows = site.data.feature_rows(spec)
    versions = site.data.model_versions(spec)

    def compute() -> tuple[Any, Any, pd.DataFrame]:
        real = analysis.reference_profile(registry.reference_rows(rows, spec.primary_key, None)[0], spec)
        profiles = {}
        for version in versions:
            keys = site.data.training_keys(spec, version.training_run_id) if version.training_run_id else None
            reference, from_training = registry.reference_rows(rows, spec.primary_key, keys)
            if from_training:
                profiles[str(version.version)] = analysis.reference_profile(reference, spec)
        return predictions, rows, analysis.data_quality(predictions, rows, spec, profiles, real)

    # The cached triple holds the frames: their ids are not reused while it is kept.
    _, _, quality = site.data.cached(("quality", spec.name), compute,
                                     signature=lambda: (id(predictions), id(rows), tuple(v.version for v in versions)))
    return quality


def quality_section(site: Site, spec: DatasetSpec, runs: pd.DataFrame) -> Any:
    """The data-quality chart of the batches shown."""
    quality = quality_frame(site, spec)
    return dcc.Graph(id=ids.OVERVIEW_QUALITY, config=GRAPH_CONFIG, className="graph-wide",
                     figure=figures.data_quality_figure(runs, quality, spec))


def with_known_label(site: Site, spec: DatasetSpec, latest: analysis.LatestPrediction | None) -> Any:
    """``latest`` with the label the store knows now, when its run recorded none: labels
    that arrive later (``sml labels``) update the predictions group, not the run's tags."""
    if latest is None or latest.actual is not None or latest.model_version is None:
        return latest
    predictions = site.data.predictions(spec)

    def look_up() -> tuple[pd.DataFrame, Any]:
        keys = predictions[spec.primary_key]
        key: Any = latest.key
        if pd.api.types.is_integer_dtype(keys):
            try:
                key = int(latest.key)
            except ValueError:
                return predictions, None
        found = predictions[keys.eq(key).to_numpy()]  # a key's rows: one per model version that scored it
        found = found[found[MODEL_VERSION_COLUMN].astype(str).eq(str(latest.model_version)).to_numpy()]
        return predictions, found["actual"].iloc[0] if len(found) else None

    # The cached pair holds the frame: its id is not reused while it is kept.
    _, actual = site.data.cached(("latest-actual", spec.name, latest.key, latest.model_version), look_up,
                                 signature=lambda: id(predictions))
    known = analysis.parse_class(None if actual is None or pd.isna(actual) else actual, spec)
    return latest if known is None else dataclasses.replace(latest, actual=known)


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
    window = window if isinstance(window, str) and window in analysis.WINDOWS else DEFAULT_WINDOW
    if (trigger or triggered_id()) == ids.REFRESH and window == state.get("window"):
        current = guarded(lambda: signature(site, spec))
        if isinstance(current, str) and current == state.get("signature"):
            raise dash.exceptions.PreventUpdate
    return render(site, spec, window)
