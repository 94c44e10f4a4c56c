"""Models: the registered versions with their aliases and holdout metrics, and the tuning
history (best score per trial) of the run that produced the chosen version.

Reads the registry (versions, aliases, version tags), the chosen version's training run
and its nested trial runs (trial number and mean CV accuracy only). Links go to the
MLflow UI when its URL is configured.
"""

from __future__ import annotations

from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html

from monitoring_app import figures, ids
from monitoring_app.components import (
    GRAPH_CONFIG, control, dataset_callback, dataset_page, fmt, kept_on_failure, link_or_text, notice, refresh_target,
    register_page, simple_table, token,
)
from monitoring_app.data_access import ModelVersion, dataset_option
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec

PATH = "/models"
TITLE = "Models"
HOLDOUT_METRICS = (
    (registry.HOLDOUT_ACCURACY_METRIC, "accuracy"), (registry.HOLDOUT_PRECISION_METRIC, "precision"),
    (registry.HOLDOUT_RECALL_METRIC, "recall"), (registry.HOLDOUT_F1_METRIC, "F1"), (registry.HOLDOUT_ROC_AUC_METRIC, "ROC AUC"),
    (registry.BASELINE_HOLDOUT_ACCURACY_METRIC, "baseline accuracy (majority class)"),
    (registry.CV_ACCURACY_METRIC, "mean CV accuracy of the best trial"), (registry.TRIALS_COMPLETED_METRIC, "trials completed"),
)

# Metrics about one class (binary) or averaged over the classes (multiclass).
CLASS_METRICS = (registry.HOLDOUT_PRECISION_METRIC, registry.HOLDOUT_RECALL_METRIC, registry.HOLDOUT_F1_METRIC,
                 registry.HOLDOUT_ROC_AUC_METRIC)


def metric_label(key: str, label: str, spec: DatasetSpec, params: dict[str, str]) -> str:
    """A holdout metric's label, saying which class it is about: the positive class the
    training run logged (binary), or that it is a macro mean (multiclass)."""
    if key not in CLASS_METRICS:
        return label
    if len(spec.classes) > 2:
        return f"{label} (one-vs-rest macro mean)" if key == registry.HOLDOUT_ROC_AUC_METRIC else f"{label} (macro mean)"
    positive = params.get(registry.POSITIVE_CLASS_PARAM)
    return f"{label} (positive class: {positive})" if positive else label


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=4, layout=layout)
    app.callback(
        Output(ids.MODELS_DETAIL, "children"),
        Input(ids.MODELS_VERSION, "value"),
        State(ids.MODELS_STATE, "data"),
    )(show_version)
    app.callback(
        Output(ids.MODELS_TABLE, "children"),
        Output(ids.MODELS_VERSION, "options"),
        Output(ids.MODELS_STATE, "data"),
        Input(ids.REFRESH, "n_intervals"),
        State(ids.MODELS_STATE, "data"),
        prevent_initial_call=True,
    )(refresh_versions)


def layout(dataset: str | None = None, version: str | None = None, **_: Any) -> html.Div:
    def content(site: Site, spec: DatasetSpec, state: dict[str, Any]) -> Any:
        versions = site.data.model_versions(spec)
        if not versions:
            return notice(f"no registered model '{registry.model_name(spec.name)}' yet: "
                          f"run `sml train --dataset {dataset_option(spec)}` first")
        state["signature"] = token([(v.version, v.aliases) for v in versions])
        champion = next((v for v in versions if registry.CHAMPION in v.aliases), versions[0])
        chosen = int(version) if version and version.isdigit() and any(v.version == int(version) for v in versions) else champion.version
        return [
            html.Div(versions_table(site, versions), id=ids.MODELS_TABLE),
            html.Div(live_comparison(site, spec), id=ids.MODELS_LIVE),
            control("Version", dcc.Dropdown(id=ids.MODELS_VERSION, options=version_options(versions), value=chosen,
                                            clearable=False, className="dropdown")),
            dcc.Loading(html.Div(id=ids.MODELS_DETAIL), type="dot"),
        ]

    return dataset_page(TITLE, dataset, ids.MODELS_STATE, content)


def version_options(versions: list[ModelVersion]) -> list[dict[str, Any]]:
    return [{"label": f"version {v.version}" + (f" ({', '.join(v.aliases)})" if v.aliases else ""), "value": v.version}
            for v in versions]


def versions_table(site: Site, versions: list[ModelVersion]) -> html.Table:
    rows = []
    for v in versions:
        run_id = v.training_run_id
        details = site.data.run_details(run_id) if run_id else None
        rows.append({
            "version": link_or_text(str(v.version), site.model_url(v.name, v.version)),
            "aliases": html.Span([html.Span(a, className=f"alias alias-{a}") for a in v.aliases]) if v.aliases else "",
            "registered (UTC)": f"{v.created:%Y-%m-%d %H:%M}",
            "holdout accuracy": fmt(v.holdout_accuracy, ".4f"),
            "data version": v.tags.get(registry.DATA_VERSION_TAG, ""),
            "promoted at": (registry.promoted_at(v) or "")[:16].replace("T", " "),
            "training run": link_or_text(run_id[:12], site.run_url(details.experiment_id if details else None, run_id)) if run_id else "",
        })
    columns = ["version", "aliases", "registered (UTC)", "holdout accuracy", "data version", "promoted at", "training run"]
    return simple_table(rows, columns, table_id=ids.MODELS_VERSIONS_TABLE)


LIVE_METRICS = (
    registry.PAIRED_ROWS_METRIC, registry.PAIRED_CHAMPION_ACCURACY_METRIC, registry.PAIRED_CHALLENGER_ACCURACY_METRIC,
    registry.PAIRED_DIFFERENCE_METRIC, registry.PAIRED_DIFFERENCE_CI_LOW_METRIC, registry.PAIRED_DIFFERENCE_CI_HIGH_METRIC,
    registry.PAIRED_P_VALUE_METRIC, registry.PAIRED_P_VALUE_BETTER_METRIC, registry.PAIRED_CHAMPION_ONLY_METRIC,
    registry.PAIRED_CHALLENGER_ONLY_METRIC, registry.CHALLENGER_BATCH_ACCURACY_METRIC,
    registry.CHALLENGER_ESTIMATED_ACCURACY_METRIC,
)
LIVE_TAGS = (registry.MODEL_VERSION_TAG, registry.CHALLENGER_VERSION_TAG, registry.PAIRED_WINDOW_TAG,
             registry.LIVE_PROMOTION_DECISION_TAG, registry.LIVE_PROMOTION_REASON_TAG)
LIVE_BATCHES = 10
"""The latest batches with a shadow challenger the table lists."""


def live_comparison(site: Site, spec: DatasetSpec) -> Any:
    """Champion vs challenger on live rows: for the latest batches a challenger
    shadow-scored, each model's accuracy on the same labelled rows of the rolling
    window, the difference with its interval, McNemar's exact p-value and the live
    promotion decision (``sml infer --promote live``)."""
    from serverless_ml.errors import NotFoundError

    try:
        runs = site.data.monitoring_runs(spec, LIVE_METRICS, LIVE_TAGS)
    except NotFoundError:
        return []
    column = registry.tag_column(registry.CHALLENGER_VERSION_TAG)
    shadowed = runs[runs[column].notna() & (runs[column].astype(str) != "")] if column in runs.columns else runs.iloc[:0]
    title = html.H3("Champion vs challenger on live rows")
    if shadowed.empty:
        return [title, html.Div("No batch was scored by a challenger yet: a version tagged @challenger that is not the "
                                "champion scores each batch in the shadow.", className="muted")]

    def metric(row: Any, name: str) -> float | None:
        value = row.get(registry.metric_column(name))
        return None if value is None or pd.isna(value) else float(value)

    def tag(row: Any, name: str) -> str:
        value = row.get(registry.tag_column(name))
        return "" if value is None or pd.isna(value) else str(value)

    rows = []
    for _, row in shadowed.tail(LIVE_BATCHES).iloc[::-1].iterrows():
        decision = tag(row, registry.LIVE_PROMOTION_DECISION_TAG)
        rows.append({
            "batch": row["as_of_text"],
            "champion version": tag(row, registry.MODEL_VERSION_TAG),
            "challenger version": tag(row, registry.CHALLENGER_VERSION_TAG),
            "paired rows": fmt(metric(row, registry.PAIRED_ROWS_METRIC), ".0f"),
            "champion accuracy": fmt(metric(row, registry.PAIRED_CHAMPION_ACCURACY_METRIC)),
            "challenger accuracy": fmt(metric(row, registry.PAIRED_CHALLENGER_ACCURACY_METRIC)),
            "difference (95% CI)": f"{fmt(metric(row, registry.PAIRED_DIFFERENCE_METRIC), '+.3f')} "
                                   f"({fmt(metric(row, registry.PAIRED_DIFFERENCE_CI_LOW_METRIC), '+.3f')}.."
                                   f"{fmt(metric(row, registry.PAIRED_DIFFERENCE_CI_HIGH_METRIC), '+.3f')})",
            "discordant (champion/challenger)": f"{fmt(metric(row, registry.PAIRED_CHAMPION_ONLY_METRIC), '.0f')}/"
                                                f"{fmt(metric(row, registry.PAIRED_CHALLENGER_ONLY_METRIC), '.0f')}",
            "McNemar p": fmt(metric(row, registry.PAIRED_P_VALUE_METRIC), ".4g"),
            "p (challenger better)": fmt(metric(row, registry.PAIRED_P_VALUE_BETTER_METRIC), ".4g"),
            "decision": decision or "-",
        })
    columns = list(rows[0])
    decided = shadowed[shadowed[registry.tag_column(registry.LIVE_PROMOTION_DECISION_TAG)].notna()] \
        if registry.tag_column(registry.LIVE_PROMOTION_DECISION_TAG) in shadowed.columns else shadowed.iloc[:0]
    if decided.empty:
        last = "No live promotion decided yet (`sml infer --promote live`)."
    else:
        row = decided.iloc[-1]
        last = (f"Last live promotion decision ({row['as_of_text']}): {tag(row, registry.LIVE_PROMOTION_DECISION_TAG)}, "
                f"{tag(row, registry.LIVE_PROMOTION_REASON_TAG)}.")
    window = tag(shadowed.iloc[-1], registry.PAIRED_WINDOW_TAG)
    about = (f"Accuracy of each model on the same labelled rows of the rolling window ({window} for the latest batch), "
             f"McNemar's exact test on the rows only one of them got right. {last}")
    return [title, html.Div(about, className="muted", id=ids.MODELS_LIVE_DECISION),
            simple_table(rows, columns, table_id=ids.MODELS_LIVE_TABLE)]


def render_version(site: Site, spec: DatasetSpec, number: int) -> Any:
    """Holdout metrics of a version's training run and the run's tuning history."""
    version = next((v for v in site.data.model_versions(spec) if v.version == number), None)
    if version is None:
        return notice(f"model '{registry.model_name(spec.name)}' has no version {number}", "error")
    run_id = version.training_run_id
    details = site.data.run_details(run_id) if run_id else None
    if details is None:
        return notice(f"version {number} has no training run in this tracking store")
    metrics = [{"metric": metric_label(key, label, spec, details.params),
                "value": fmt(details.metrics.get(key), ".4f" if key != registry.TRIALS_COMPLETED_METRIC else ".0f")}
               for key, label in HOLDOUT_METRICS if key in details.metrics]
    trials = site.data.trials(spec, details.run_id)
    url = site.run_url(details.experiment_id, details.run_id)
    best = details.tags.get(registry.BEST_TRIAL_NUMBER_TAG)
    summary = f" ({len(trials)} trials" + (f", best trial {best}" if best else "") + ")."
    reason = details.tags.get(registry.PROMOTION_REASON_TAG)
    live_run = version.tags.get(registry.PROMOTED_BY_RUN_TAG)
    if reason:
        decided = "at training: " if live_run else ""
        summary += f" Promotion decision {decided}{details.tags.get(registry.PROMOTION_DECISION_TAG, '?')} ({reason})."
    if live_run:  # --promote live moved @champion to it later, on paired live evidence
        summary += (f" Promoted live by monitoring run {live_run} at {version.tags.get(registry.PROMOTED_AT_TAG, '?')}, "
                    f"replacing version {version.tags.get(registry.PROMOTION_PREVIOUS_CHAMPION_TAG, '?')}.")
    about = [f"Version {number} was trained by run ", link_or_text(details.name or details.run_id, url), summary]
    return [
        html.Div(about, className="muted"),
        html.Div([
            html.Div([html.H3("Holdout metrics"), simple_table(metrics, ["metric", "value"], table_id=ids.MODELS_METRICS_TABLE)],
                     className="side"),
            dcc.Graph(figure=figures.tuning_figure(trials, f"tuning history of version {number}"), config=GRAPH_CONFIG,
                      className="graph-main", id=ids.MODELS_TUNING),
        ], className="row"),
    ]


def show_version(number: int | None, state: dict[str, Any] | None) -> Any:
    def draw(site: Site, spec: DatasetSpec) -> Any:
        if number is None:
            raise dash.exceptions.PreventUpdate
        try:
            version = int(number)
        except (TypeError, ValueError):  # a forged request: the dropdown only offers numbers
            return notice(f"no model version {str(number)[:40]!r}", "error")
        return render_version(site, spec, version)

    return dataset_callback(state, draw)


def refresh_versions(n_intervals: int | None, state: dict[str, Any] | None) -> tuple[Any, Any, Any]:
    """A newly registered version or a moved alias shows up without a reload."""
    site, spec, state = refresh_target(state)
    with kept_on_failure():
        versions = site.data.model_versions(spec)
    current = token([(v.version, v.aliases) for v in versions])
    if current == state.get("signature") or not versions:
        raise dash.exceptions.PreventUpdate
    state["signature"] = current
    return versions_table(site, versions), version_options(versions), state
