"""Drift: why a batch raised (or did not raise) a drift alert, per-feature drift over time,
and one feature's distribution in a window of the chosen run (the window it was judged on,
the batch, the recent or the rolling window) against the rows the model was trained on.

Reads the monitoring runs' per-feature drift metrics (``drift_effect_<f>``,
``drift_padj_<f>``, ``drift_p_<f>``, ``drift_psi_<f>``), tags (``alert_drift``, ``alerts``,
``not_computed``, ``drift_window``...) and params (``drift_p_value``,
``drift_min_effect``: the rule each run judged drift with); the chosen run's
``drift.json`` (only that run's: artifacts are read per run, and kept); for the
distribution, the predictions (their keys and event times) and the feature group. The
training rows are those of the run's model's training run (``training/keys.parquet``), or
the real rows when that run logged no keys.

Runs logged before drift had windows, adjusted p-values and effect sizes (their
``drift.json`` holds ``basis`` and per feature ``test``, ``p_value``, ``psi``,
``drifted``) are shown with what they have and "n/a" for the rest.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import dash
import pandas as pd
from dash import Input, Output, State, dcc, html

from monitoring_app import figures, ids
from monitoring_app.components import (
    GRAPH_CONFIG, control, dataset_callback, feature_picker, guarded, notice, page, page_dataset, register_page,
    token, triggered_id,
)
from monitoring_app.site import Site
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.inference.drift import FeatureDrift
from serverless_ml.training.evaluation import metric_key

PATH = "/drift"
TITLE = "Drift"
STAT_OPTIONS = [{"label": figures.DRIFT_STATS[key].label, "value": key} for key in ("effect", "padj", "psi")]
DRIFT_ARTIFACT = registry.DRIFT_ARTIFACT
METRIC_PREFIXES = {"p_value": registry.DRIFT_P_PREFIX, "p_adjusted": registry.DRIFT_PADJ_PREFIX,
                   "effect": registry.DRIFT_EFFECT_PREFIX, "psi": registry.DRIFT_PSI_PREFIX}
"""The per-feature metrics of a monitoring run, by the name of the figure in ``drift.json``."""
RUN_TAGS = (registry.ALERT_DRIFT,)
RULE_PARAMS = (registry.DRIFT_P_VALUE_PARAM, registry.DRIFT_MIN_EFFECT_PARAM)
DETAIL_METRICS = (registry.DRIFT_ROWS_METRIC, registry.DRIFT_ROWS_ROLLING_METRIC, registry.DRIFT_SHARE_METRIC)
DETAIL_TAGS = (registry.AS_OF_TAG, registry.MODEL_VERSION_TAG, registry.ALERT_DRIFT, registry.ALERTS_TAG, registry.NOT_COMPUTED_TAG,
               registry.DRIFT_BASIS_TAG, registry.DRIFT_WINDOW_TAG, registry.DRIFT_WINDOW_ROLLING_TAG)
DRIFT_ALERT_PREFIX = "drift alert"
NOT_COMPUTED_PREFIX = "drift not computed"
WINDOW_NAMES = {"recent": "recent", "window": "recent", "rolling": "rolling"}
OLD_BASES = {"batch": "the batch", "rolling_window": "the rolling window"}
TEST_NAMES = {"mwu": "Mann-Whitney U", "ks": "Kolmogorov-Smirnov", "missing": "Fisher (missing share)",
              "chi2": "chi-squared"}
EFFECT_NAMES = {"wasserstein_std": "Wasserstein distance / reference std", "missing_share": "change of missing share",
                "total_variation": "total variation distance"}
TABLE_COLUMNS = ("Feature", "Window", "Test", "Statistic", "Effect size", "p-value", "Adjusted p", "PSI", "Drifted")
NA = "n/a"
ALERT_STYLE = {"background": "#fffbeb", "border": "1px solid #fcd34d", "color": "#92400e"}
DRIFTED_ROW_STYLE = {"background": "#fef3c7", "fontWeight": 600}
WINDOW_OPTIONS = [
    {"label": "the window it was judged on", "value": "judged"},
    {"label": "the batch", "value": "batch"},
    {"label": "the recent window", "value": "recent"},
    {"label": "the rolling window", "value": "rolling"},
]
"""What the distribution chart compares with the training rows: the rows of the chosen
run's batch, or of one of the windows its drift was judged on (see ``serverless_ml.inference.drift``)."""
DEFAULT_WINDOW = "judged"


def register(app: dash.Dash) -> None:
    register_page(__name__, PATH, TITLE, order=3, layout=layout)
    app.callback(
        Output(ids.DRIFT_HISTORY, "children"),
        Output(ids.DRIFT_STATE, "data"),
        Output(ids.DRIFT_RUN, "options"),
        Output(ids.DRIFT_RUN, "value"),
        Input(ids.DRIFT_STAT, "value"),
        Input(ids.REFRESH, "n_intervals"),
        State(ids.DRIFT_STATE, "data"),
        State(ids.DRIFT_RUN, "value"),
    )(show_history)
    app.callback(
        Output(ids.DRIFT_RUN_BODY, "children"),
        Input(ids.DRIFT_RUN, "value"),
        State(ids.DRIFT_STATE, "data"),
        prevent_initial_call=True,
    )(show_run)
    app.callback(
        Output(ids.DRIFT_DISTRIBUTION, "children"),
        Input(ids.DRIFT_FEATURE, "value"),
        Input(ids.DRIFT_RUN, "value"),
        Input(ids.DRIFT_WINDOW, "value"),
        State(ids.DRIFT_STATE, "data"),
    )(show_distribution)


# --- pure parts: the rule, the run picker, the table ------------------------------------------


def _number(value: Any) -> float | None:
    """A finite number, or ``None`` (missing, NaN, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def history_metrics(spec: DatasetSpec) -> tuple[str, ...]:
    """Every per-feature drift metric: the chart's choices and the drifted markers (which
    need the adjusted p-value and the effect whatever is shown) come from one read."""
    return tuple(f"{prefix}{metric_key(f)}" for prefix in METRIC_PREFIXES.values() for f in spec.feature_names)


def rule_frame(run_ids: pd.Index, params: pd.DataFrame) -> pd.DataFrame:
    """Per run, the thresholds it judged drift with: ``p_threshold`` and ``min_effect``
    (NaN where the run did not log one: runs before effect sizes had no minimum)."""
    frame = params.reindex(run_ids)
    return pd.DataFrame({
        "p_threshold": pd.to_numeric(frame.get(registry.param_column(registry.DRIFT_P_VALUE_PARAM)), errors="coerce"),
        "min_effect": pd.to_numeric(frame.get(registry.param_column(registry.DRIFT_MIN_EFFECT_PARAM)), errors="coerce"),
    }, index=run_ids)


def drifted_flags(runs: pd.DataFrame, spec: DatasetSpec, rule: pd.DataFrame) -> pd.DataFrame:
    """Per run and feature, whether the feature drifted by that run's rule: adjusted
    p-value below its threshold and effect at least its minimum; for runs logged before
    adjusted p-values, the test's p-value below the threshold (the rule then)."""
    p_threshold = rule["p_threshold"].reindex(runs.index)
    min_effect = rule["min_effect"].reindex(runs.index).fillna(0.0)
    empty = pd.Series(float("nan"), index=runs.index)

    def metric(name: str, feature: str) -> pd.Series:
        return runs.get(registry.metric_column(f"{METRIC_PREFIXES[name]}{metric_key(feature)}"), empty).astype(float)

    flags = {}
    for feature in spec.feature_names:
        adjusted, effect, raw = metric("p_adjusted", feature), metric("effect", feature), metric("p_value", feature)
        flags[feature] = ((adjusted < p_threshold) & (effect >= min_effect)) | (adjusted.isna() & (raw < p_threshold))
    return pd.DataFrame(flags, index=runs.index, columns=list(spec.feature_names)).astype(bool)


def run_options(runs: pd.DataFrame) -> list[dict[str, str]]:
    """Picker options, newest batch first: the batch date, ``⚠ drift`` when the run raised a
    drift alert, and the run's name when two runs share a date."""
    newest = runs.iloc[::-1]
    if newest.empty:
        return []
    dates = newest[registry.tag_column(registry.AS_OF_TAG)].astype(str)
    alert = newest.get(registry.tag_column(registry.ALERT_DRIFT), pd.Series(None, index=newest.index)).eq("true")
    labels = dates + alert.map({True: " ⚠ drift", False: ""})
    shared = dates.duplicated(keep=False)
    if shared.any():
        names = newest["run_name"].fillna(pd.Series(newest.index, index=newest.index)).astype(str)
        labels = labels.where(~shared, labels + " (" + names + ")")
    return [{"label": label, "value": str(run_id)} for run_id, label in zip(newest.index, labels, strict=True)]


def messages(text: Any, prefix: str) -> list[str]:
    """The messages of a ``" | "``-joined tag (``alerts``, ``not_computed``) that start
    with ``prefix``."""
    return [m.strip() for m in str(text or "").split(registry.MESSAGE_SEPARATOR) if m.strip().startswith(prefix)]


def day_span(span: str) -> tuple[dt.date, dt.date] | None:
    """The first and last day of a window written ``2024-01-23..2024-01-30`` (or one day)."""
    first, _, last = str(span or "").partition("..")
    try:
        start = dt.date.fromisoformat(first.strip())
        end = dt.date.fromisoformat((last or first).strip())
    except ValueError:
        return None
    return (start, end) if start <= end else None


def window_text(window: str | None, basis: str | None, report: registry.DriftReport, run: Mapping[str, Any]) -> str:
    """Where a feature's figures come from: ``recent 2024-03-06..2024-03-08 (3 days, 36
    rows)``, ``rolling ...``; for runs without windows, their basis (``the batch``)."""
    if window in WINDOW_NAMES:
        rolling = window == "rolling"
        name = WINDOW_NAMES[window]
        span = str((report.rolling_window if rolling else report.window) or
                   run.get(registry.tag_column(registry.DRIFT_WINDOW_ROLLING_TAG) if rolling else registry.tag_column(registry.DRIFT_WINDOW_TAG)) or "")
        rows = _number(report.rolling_rows if rolling else report.rows)
        if rows is None:
            rows = _number(run.get(registry.metric_column(registry.DRIFT_ROWS_ROLLING_METRIC) if rolling else registry.metric_column(registry.DRIFT_ROWS_METRIC)))
    else:
        name = OLD_BASES.get(str(basis), str(basis) if basis and basis != "none" else NA)
        span, rows = "", _number(run.get(registry.metric_column(registry.DRIFT_ROWS_METRIC)))
    parts = []
    days = day_span(span)
    if days is not None:
        count = (days[1] - days[0]).days + 1
        parts.append(f"{count} day{'s' if count != 1 else ''}")
    if rows is not None:
        parts.append(f"{int(rows)} rows")
    return f"{name} {span}".strip() + (f" ({', '.join(parts)})" if parts else "")


@dataclass(frozen=True)
class LoggedDrift:
    """A feature's entry of ``drift.json`` as the page reads it: the fields of
    :class:`serverless_ml.inference.drift.FeatureDrift` (the job writes its ``vars``), each
    ``None`` when the run did not log it (older runs, a feature known from metrics only)."""

    feature: str | None = None
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    effect: float | None = None
    effect_name: str | None = None
    psi: float | None = None
    drifted: bool | None = None
    window: str | None = None

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> LoggedDrift:
        """The entry's figures, by :class:`FeatureDrift`'s field names (a value of the wrong
        type: ``None``)."""
        return cls(**{f.name: _typed(entry.get(f.name), str(f.type)) for f in fields(FeatureDrift)})


def _typed(value: Any, kind: str) -> Any:
    if kind.startswith("float"):
        return _number(value)
    if kind.startswith("bool"):
        return value if isinstance(value, bool) else None
    return None if value is None else str(value)


@dataclass(frozen=True)
class FeatureRow:
    """One line of the drift table (``None``: the run did not log that figure)."""

    feature: str
    window: str
    test: str | None
    statistic: float | None
    effect: float | None
    effect_name: str | None
    p_value: float | None
    p_adjusted: float | None
    psi: float | None
    drifted: bool | None

    def sort_key(self) -> tuple[int, float, float]:
        p = self.p_adjusted if self.p_adjusted is not None else self.p_value
        return (0 if self.drifted else 1, p if p is not None else math.inf, -(self.effect or 0.0))


def feature_rows(
    spec: DatasetSpec, report: registry.DriftReport | Mapping[str, Any] | None, run: Mapping[str, Any],
    p_threshold: float | None = None, min_effect: float | None = None,
) -> list[FeatureRow]:
    """The drift table of a run, drifted features first, then by (adjusted) p-value.

    Args:
        spec: The dataset (its features).
        report: The run's ``drift.json``, read or as its JSON (``None`` when it logged none).
        run: The run's values: ``metrics.<name>`` and ``tags.<name>`` (the figures of a
            feature ``drift.json`` lacks come from its metrics).
        p_threshold: The run's ``drift_p_value`` (judges a feature known from metrics only).
        min_effect: The run's ``drift_min_effect``.
    """
    report = report if isinstance(report, registry.DriftReport) else registry.DriftReport.from_json(report)
    basis = report.basis or run.get(registry.tag_column(registry.DRIFT_BASIS_TAG))
    entries = {str(d.feature): d for d in map(LoggedDrift.of, report.features)}
    names = list(spec.feature_names) + [f for f in entries if f not in spec.feature_names]
    rows = []
    for feature in names:
        entry = entries.get(feature)
        if entry is None:
            logged = {name: _number(run.get(registry.metric_column(f"{prefix}{metric_key(feature)}")))
                      for name, prefix in METRIC_PREFIXES.items()}
            if all(v is None for v in logged.values()):
                continue
            window = "recent" if run.get(registry.tag_column(registry.DRIFT_WINDOW_TAG)) else None
            entry = replace(LoggedDrift.of(logged), window=window)
        drifted = entry.drifted if entry.drifted is not None else _judged(entry, p_threshold, min_effect)
        rows.append(FeatureRow(
            feature=feature,
            window=window_text(entry.window, basis, report, run),
            test=entry.test or None,
            statistic=entry.statistic,
            effect=entry.effect,
            effect_name=entry.effect_name or None,
            p_value=entry.p_value,
            p_adjusted=entry.p_adjusted,
            psi=entry.psi,
            drifted=drifted,
        ))
    return sorted(rows, key=FeatureRow.sort_key)


def _judged(entry: LoggedDrift, p_threshold: float | None, min_effect: float | None) -> bool | None:
    adjusted, effect, raw = entry.p_adjusted, entry.effect, entry.p_value
    if p_threshold is None:
        return None
    if adjusted is not None:
        return adjusted < p_threshold and effect is not None and effect >= (min_effect or 0.0)
    return raw < p_threshold if raw is not None else None


def describe_test(test: str | None) -> str:
    """``mwu+ks+missing`` as ``Mann-Whitney U + Kolmogorov-Smirnov + Fisher (missing share)``."""
    if not test:
        return NA
    return " + ".join(TEST_NAMES.get(part, part) for part in test.split("+"))


def _figure(value: float | None, spec: str = ".3f") -> str:
    return NA if value is None else format(value, spec)


def _p(value: float | None) -> str:
    return NA if value is None else figures.p_value_text(value)


def drift_table(rows: Sequence[FeatureRow]) -> html.Table:
    """The rows as a table of text cells; drifted features highlighted."""
    head = html.Thead(html.Tr([html.Th(c) for c in TABLE_COLUMNS]))
    body = []
    for row in rows:
        effect: list[Any] = [_figure(row.effect)]
        if row.effect_name:
            effect += [html.Br(), html.Span(EFFECT_NAMES.get(row.effect_name, row.effect_name), className="muted")]
        cells = [row.feature, row.window, describe_test(row.test), _figure(row.statistic, ".3g"), effect,
                 _p(row.p_value), _p(row.p_adjusted), _figure(row.psi),
                 NA if row.drifted is None else ("yes" if row.drifted else "no")]
        extra: dict[str, Any] = {"style": DRIFTED_ROW_STYLE} if row.drifted else {}
        body.append(html.Tr([html.Td(c) for c in cells], className="drifted" if row.drifted else "", **extra))
    return html.Table([head, html.Tbody(body)], className="table", id=ids.DRIFT_TABLE)


def rule_text(p_threshold: float | None, min_effect: float | None, adjusted: bool) -> str:
    """The rule a run judged drift with, in words."""
    if p_threshold is None:
        return "The run logged no drift rule."
    if not adjusted:
        return f"Rule of this run: a feature drifted when its test's p-value was below {p_threshold:g}."
    effect = f" and its effect size is at least {min_effect:g}" if min_effect is not None else ""
    return (f"Rule: a feature drifted when its adjusted p-value (Benjamini-Hochberg over every feature and window, the recent window weighted 3:1) "
            f"is below {p_threshold:g}{effect}.")


def run_summary(
    run: Mapping[str, Any], rows: Sequence[FeatureRow], p_threshold: float | None, min_effect: float | None
) -> list[Any]:
    """Above the table: the drift alert (or that there was none), why drift was not
    computed, the batch and its model, the rule."""
    out: list[Any] = []
    alerts = messages(run.get(registry.tag_column(registry.ALERTS_TAG)), DRIFT_ALERT_PREFIX)
    if alerts:
        out.append(html.Div([html.Div(m) for m in alerts], id=ids.DRIFT_ALERT, className="notice notice-alert",
                            role="status", style=ALERT_STYLE))
    skipped = messages(run.get(registry.tag_column(registry.NOT_COMPUTED_TAG)), NOT_COMPUTED_PREFIX)
    for message in skipped:
        out.append(notice(message, "info"))
    if not alerts and not skipped:
        drifted = sum(1 for r in rows if r.drifted)
        text = "No drift alert for this batch." + (f" {drifted} feature(s) drifted." if drifted else "")
        out.append(html.Div(text, id=ids.DRIFT_ALERT, className="muted"))
    about = f"Batch {run.get(registry.tag_column(registry.AS_OF_TAG))}, model v{run.get(registry.tag_column(registry.MODEL_VERSION_TAG))}."
    # Runs logged before adjusted p-values have neither them nor a minimum effect.
    adjusted = min_effect is not None or any(r.p_adjusted is not None for r in rows)
    out.append(html.Div([about, " ", rule_text(p_threshold, min_effect, adjusted)], className="muted"))
    return out


# --- reading ---------------------------------------------------------------------------------


def monitoring_history(site: Site, spec: DatasetSpec) -> pd.DataFrame:
    """The runs with every drift metric (one cached read serves the picker and the chart)."""
    return site.data.monitoring_runs(spec, history_metrics(spec), RUN_TAGS)


def run_rule(site: Site, spec: DatasetSpec, run_id: str) -> tuple[float | None, float | None]:
    params = site.data.run_params(registry.monitoring_experiment(spec.name), RULE_PARAMS)
    rule = rule_frame(pd.Index([run_id]), params).iloc[0]
    return _number(rule["p_threshold"]), _number(rule["min_effect"])


def run_values(site: Site, spec: DatasetSpec, run_id: str) -> dict[str, Any] | None:
    """The chosen run's drift metrics and tags (``None``: not a finished monitoring run)."""
    values = site.data.run_values(registry.monitoring_experiment(spec.name), [run_id],
                                  (*DETAIL_METRICS, *history_metrics(spec)), DETAIL_TAGS)
    if run_id not in values.index:
        return None
    return values.loc[run_id].to_dict()


def explain_run(site: Site, spec: DatasetSpec, run_id: str | None) -> tuple[Any, list[FeatureRow]]:
    """One run's drift explained: the summary and the table (a notice when reading fails),
    and the table's rows."""
    rows: list[FeatureRow] = []

    def draw() -> Any:
        if not run_id:
            monitoring_history(site, spec)  # says which command to run when there are no runs
            return notice(f"no monitoring run chosen for {spec.name}")
        run = run_values(site, spec, run_id)
        if run is None:
            return notice(f"run {run_id} is not a finished monitoring run of {spec.name}", "error")
        report = registry.DriftReport.from_json(site.data.run_json(run_id, DRIFT_ARTIFACT))
        p_threshold, min_effect = run_rule(site, spec, run_id)
        # What the run judged with, as it wrote it down.
        if _number(report.p_threshold) is not None:
            p_threshold = _number(report.p_threshold)
        if _number(report.min_effect) is not None:
            min_effect = _number(report.min_effect)
        rows.extend(feature_rows(spec, report, run, p_threshold, min_effect))
        parts = run_summary(run, rows, p_threshold, min_effect)
        if rows:
            parts.append(html.Div(drift_table(rows), className="table-wrap"))
        return parts

    return guarded(draw), rows


def initial_run(site: Site, spec: DatasetSpec, run: str | None) -> tuple[list[dict[str, str]], str | None]:
    runs = monitoring_history(site, spec)
    chosen = run if run in runs.index else (str(runs.index[-1]) if len(runs) else None)
    return run_options(runs), chosen


def layout(dataset: str | None = None, feature: str | None = None, run: str | None = None, **_: Any) -> html.Div:
    site, spec, problem = page_dataset(dataset)
    if spec is None:
        return page(TITLE, problem)
    state: dict[str, Any] = {"dataset": spec.name}
    try:
        options, chosen = initial_run(site, spec, run)
    except Exception:  # noqa: BLE001 - the body below says what failed
        options, chosen = [], None
    state["latest"] = options[0]["value"] if options else None
    body, rows = explain_run(site, spec, chosen)
    # Unless the URL names one, the feature the table puts first (drifted, or closest to it).
    top = rows[0].feature if rows and rows[0].feature in spec.feature_names else spec.feature_names[0]
    picked = feature if feature in spec.feature_names else top
    return page(
        TITLE,
        control("Monitoring run", dcc.Dropdown(id=ids.DRIFT_RUN, options=options, value=chosen, clearable=False,
                                               className="dropdown")),
        html.Div(body, id=ids.DRIFT_RUN_BODY),
        html.H3("Over time"),
        control("Show", dcc.RadioItems(id=ids.DRIFT_STAT, options=STAT_OPTIONS, value=figures.DEFAULT_DRIFT_STAT,
                                       inline=True)),
        dcc.Loading(html.Div(id=ids.DRIFT_HISTORY), type="dot"),
        html.H3("Distribution"),
        feature_picker(ids.DRIFT_FEATURE, spec, picked),
        control("Rows compared with the training rows", dcc.RadioItems(
            id=ids.DRIFT_WINDOW, options=WINDOW_OPTIONS, value=DEFAULT_WINDOW, inline=True)),
        dcc.Loading(html.Div(id=ids.DRIFT_DISTRIBUTION), type="dot"),
        state_id=ids.DRIFT_STATE, state=state,
    )


# --- callbacks -------------------------------------------------------------------------------


def show_history(
    stat: str | None, n_intervals: int | None, state: dict[str, Any] | None, run: str | None = None,
    trigger: str | None = None,
) -> tuple[Any, Any, Any, Any]:
    """The drift chart; on a refresh tick only when a run was added or finished, and then
    new runs join the picker (which moves to the newest run if it showed the newest)."""
    state = dict(state or {})
    site, spec, problem = page_dataset(state.get("dataset"))
    if spec is None:
        return problem, dash.no_update, dash.no_update, dash.no_update
    stat = stat if stat in figures.DRIFT_STATS else figures.DEFAULT_DRIFT_STAT
    fired = trigger or triggered_id()
    picker: list[Any] = [dash.no_update, dash.no_update]

    def draw() -> Any:
        experiment = registry.monitoring_experiment(spec.name)
        current = token(site.data.runs_signature(experiment))
        if fired == ids.REFRESH and current == state.get("signature") and stat == state.get("stat"):
            raise dash.exceptions.PreventUpdate
        state.update(signature=current, stat=stat)
        runs = monitoring_history(site, spec)
        if fired == ids.REFRESH and len(runs):
            newest = str(runs.index[-1])
            picker[0] = run_options(runs)
            if newest != state.get("latest") and (run is None or run == state.get("latest")):
                picker[1] = newest
            state["latest"] = newest
        rule = rule_frame(runs.index, site.data.run_params(experiment, RULE_PARAMS))
        threshold = {"padj": rule["p_threshold"], "effect": rule["min_effect"]}.get(stat)
        figure = figures.drift_history_figure(runs, spec, stat, drifted_flags(runs, spec, rule), threshold)
        return dcc.Graph(figure=figure, config=GRAPH_CONFIG, id=ids.DRIFT_HISTORY_GRAPH)

    graph = guarded(draw)
    return graph, state, picker[0], picker[1]


def show_run(run: str | None, state: dict[str, Any] | None) -> Any:
    """The table of the run chosen in the picker."""

    def draw(site: Site, spec: DatasetSpec) -> Any:
        if not run:
            raise dash.exceptions.PreventUpdate
        return explain_run(site, spec, run)[0]

    return dataset_callback(state, draw)


def window_rows(
    site: Site, spec: DatasetSpec, run_id: str | None, feature: str, window: str = DEFAULT_WINDOW
) -> tuple[pd.DataFrame, str, pd.DataFrame, str]:
    """The rows of run ``run_id`` (default: the newest) that ``window`` names - the batch it
    scored, its recent or rolling drift window, or (``judged``) the window ``feature``'s
    drift was judged on - and the training rows of the run's model, with labels. A window
    the run did not have is replaced by the next one that it had, and the label says so."""
    if not run_id:
        run_id = str(monitoring_history(site, spec).index[-1])
    run = run_values(site, spec, run_id)
    if run is None:
        raise dash.exceptions.PreventUpdate
    report = registry.DriftReport.from_json(site.data.run_json(run_id, DRIFT_ARTIFACT))
    spans = {
        "recent": str(report.window or run.get(registry.tag_column(registry.DRIFT_WINDOW_TAG)) or ""),
        "rolling": str(report.rolling_window or run.get(registry.tag_column(registry.DRIFT_WINDOW_ROLLING_TAG)) or ""),
    }
    note = ""
    if window not in ("batch", "recent", "rolling"):
        entry = next((d for d in map(LoggedDrift.of, report.features) if d.feature == feature), LoggedDrift())
        window = "rolling" if entry.window == "rolling" else "recent"
        if day_span(spans["recent"]) is None:  # runs before windows were judged on their batch
            window = "batch"
    if window == "rolling" and day_span(spans["rolling"]) is None and day_span(spans["recent"]) is not None:
        window, note = "recent", " (the run's rolling window had no more days than its recent window)"
    if window != "batch" and day_span(spans[window]) is None:
        window, note = "batch", f" (the run has no {window} window)"
    rows = site.data.feature_rows(spec)
    predictions = site.data.predictions(spec)
    days = day_span(spans[window]) if window != "batch" else None
    if days is None:
        keys = predictions.loc[predictions["run_id"] == run_id, spec.primary_key]
        current_label = f"batch {run.get(registry.tag_column(registry.AS_OF_TAG))}{note}"
    else:
        event_day = pd.to_datetime(predictions["event_time"], utc=True).dt.tz_convert(None).dt.normalize()
        inside = (event_day >= pd.Timestamp(days[0])) & (event_day <= pd.Timestamp(days[1]))
        keys = predictions.loc[inside, spec.primary_key]
        current_label = f"{window} window {spans[window]}{note}"
    current = rows[rows[spec.primary_key].isin(keys)]
    version = next((v for v in site.data.model_versions(spec) if str(v.version) == str(run.get(registry.tag_column(registry.MODEL_VERSION_TAG)))), None)
    train_keys = site.data.training_keys(spec, version.training_run_id) if version and version.training_run_id else None
    reference, from_training = registry.reference_rows(rows, spec.primary_key, train_keys)
    reference_label = f"training rows of model v{version.version}" if from_training and version else "real rows"
    return reference, reference_label, current, current_label


def show_distribution(
    feature: str | None, run: str | None, window: str | None, state: dict[str, Any] | None
) -> Any:
    """One feature: the rows of the chosen window of the chosen run (by default the window
    the feature was judged on), against the training rows of the run's model."""

    def draw(site: Site, spec: DatasetSpec) -> Any:
        if not feature or feature not in spec.feature_names:
            raise dash.exceptions.PreventUpdate
        chosen = window if window in {o["value"] for o in WINDOW_OPTIONS} else DEFAULT_WINDOW
        reference, reference_label, current, current_label = window_rows(site, spec, run, feature, chosen)
        figure = figures.distribution_figure(reference[feature], current[feature], spec.feature(feature),
                                             reference_label, current_label)
        return dcc.Graph(figure=figure, config=GRAPH_CONFIG, id=ids.DRIFT_DISTRIBUTION_GRAPH)

    return dataset_callback(state, draw)
