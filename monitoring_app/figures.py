"""Plotly figures of the site: pure functions from frames to figures (no I/O).

Plotly reads a few HTML tags in text (``<b>``, ``<a href>``...), so every string that
comes from a dataset (feature names, categories, class names, alert messages) goes
through :func:`plot_text`, which escapes it; plotly shows the escaped text as typed.
"""

from __future__ import annotations

import functools
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from monitoring_app import analysis
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec
from serverless_ml.training.evaluation import metric_key

# Columns of a runs frame (``SiteData.monitoring_runs``).
_BATCH_ACCURACY = registry.metric_column(registry.BATCH_ACCURACY_METRIC)
_BATCH_CI_LOW = registry.metric_column(registry.BATCH_ACCURACY_CI_LOW_METRIC)
_BATCH_CI_HIGH = registry.metric_column(registry.BATCH_ACCURACY_CI_HIGH_METRIC)
_ROWS_LABELLED = registry.metric_column(registry.ROWS_LABELLED_METRIC)
_ROLLING_ACCURACY = registry.metric_column(registry.ROLLING_ACCURACY_METRIC)
_CHAMPION_HOLDOUT = registry.metric_column(registry.CHAMPION_HOLDOUT_ACCURACY_METRIC)
_ALERTS = registry.tag_column(registry.ALERTS_TAG)
_ESTIMATED = registry.metric_column(registry.ESTIMATED_ACCURACY_METRIC)
_ESTIMATED_LOW = registry.metric_column(registry.ESTIMATED_ACCURACY_CI_LOW_METRIC)
_ESTIMATED_HIGH = registry.metric_column(registry.ESTIMATED_ACCURACY_CI_HIGH_METRIC)

COLOURS = ("#2563eb", "#ea580c", "#16a34a", "#9333ea", "#db2777", "#0891b2", "#ca8a04", "#4b5563")
ALERT_COLOUR = "#dc2626"
QUALITY_COLOURS = ("#0072B2", "#009E73", "#D55E00", "#CC79A7")
REFERENCE_COLOUR = "#6b7280"
MAX_VERSION_ANNOTATIONS = 40
HISTOGRAM_BINS = 30


def plot_text(value: Any) -> str:
    """A dataset string made safe for plotly text (tags shown, not interpreted)."""
    return html.escape(str(value), quote=False)


@functools.cache
def template() -> go.layout.Template:
    """A light template (plotly's own carry every trace type's styling, and cost ~0.1 s
    to validate on each figure)."""
    axis = {"gridcolor": "#eef0f3", "linecolor": "#d1d5db", "zerolinecolor": "#e5e7eb", "automargin": True,
            "ticks": "", "title": {"standoff": 8}}
    return go.layout.Template(layout={
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "color": "#1f2937", "size": 12},
        "paper_bgcolor": "white", "plot_bgcolor": "white", "colorway": list(COLOURS),
        "xaxis": axis, "yaxis": axis, "hoverlabel": {"align": "left"}, "hovermode": "closest",
    })


def _base(title: str, revision: Any = None, height: int | None = None) -> go.Layout:
    return go.Layout(
        template=template(), title={"text": title, "x": 0.0, "xanchor": "left"},
        margin={"l": 60, "r": 20, "t": 50, "b": 50}, uirevision=revision, height=height,
        legend={"orientation": "h", "y": -0.18},
    )


def _dates(runs: pd.DataFrame) -> list[str]:
    """Batch dates as ``YYYY-MM-DD`` (short in the page's JSON, and what the axis shows);
    the runs frame's ``as_of_text`` when it has one."""
    if "as_of_text" in runs:
        return runs["as_of_text"].tolist()
    return list(np.datetime_as_string(pd.to_datetime(runs[registry.AS_OF_TAG]).to_numpy(dtype="datetime64[ns]"), unit="D"))


def _rounded(values: np.ndarray) -> list[float | None]:
    """Four decimals (enough for a chart; a third of the JSON), missing values as gaps."""
    rounded = np.round(np.asarray(values, dtype=float), 4)
    return [None if v != v else v for v in rounded.tolist()]


def _date_ticks(dates: pd.Series) -> dict[str, Any]:
    """Batch dates as dates: one tick a day for short histories (never hours)."""
    span = (dates.max() - dates.min()) if len(dates) else pd.Timedelta(0)
    if pd.isna(span) or span <= pd.Timedelta(days=14):
        return {"dtick": 86_400_000, "tickformat": "%Y-%m-%d", "hoverformat": "%Y-%m-%d"}
    return {"tickformat": "%Y-%m-%d" if span <= pd.Timedelta(days=120) else "%b %Y", "hoverformat": "%Y-%m-%d"}


@functools.cache
def _template_dict() -> dict[str, Any]:
    return template().to_plotly_json()


def _layout_dict(title: str, revision: Any = None, height: int | None = None) -> dict[str, Any]:
    """:func:`_base` as a plain dict."""
    return {
        "template": _template_dict(), "title": {"text": title, "x": 0.0, "xanchor": "left"},
        "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, "uirevision": revision, "height": height,
        "legend": {"orientation": "h", "y": -0.18},
    }


def discrete_values(series: pd.Series, feature: FeatureSpec, limit: int = 20) -> list[Any] | None:
    """The sorted values of an integer feature with few of them (drawn as bars, not bins)."""
    if feature.type != "bigint":
        return None
    values = sorted(series.dropna().astype("int64").unique().tolist())
    return values if len(values) <= limit else None


def empty_figure(message: str, title: str = "") -> go.Figure:
    """A figure that says why it has nothing to show."""
    figure = go.Figure(layout=_base(title, height=320))
    figure.add_annotation(text=plot_text(message), showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
    figure.update_xaxes(visible=False)
    figure.update_yaxes(visible=False)
    return figure


def class_colour(spec: DatasetSpec, cls: Any) -> str:
    return COLOURS[list(spec.classes).index(cls) % len(COLOURS)] if cls in spec.classes else COLOURS[-1]


# --- Overview -------------------------------------------------------------------------------


ESTIMATE_COLOUR = "#7c3aed"
ESTIMATE_BAND = "rgba(124,58,237,0.16)"
REALIZED_NAME, ROLLING_NAME = "batch accuracy (realized)", "rolling accuracy (realized)"
ESTIMATED_NAME, AWAITING_NAME = "estimated accuracy (95 % band)", "estimated (no labels yet)"
LONE_BAND_HALF_WIDTH = pd.Timedelta(hours=8)
"""Half the width of the band of a batch whose neighbours have no estimate (a lone point
of a polygon has no area)."""


def _labelled_text(coverage: pd.DataFrame) -> list[str]:
    """Per run: ``12 of 30 rows labelled`` (empty when the run did not log its counts)."""
    out = []
    for scored, labelled in zip(coverage["scored"], coverage["labelled"], strict=True):
        out.append("" if scored != scored or labelled != labelled else f"{int(labelled):,} of {int(scored):,} rows labelled")
    return out


def estimate_band(runs: pd.DataFrame) -> dict[str, Any] | None:
    """The estimated accuracy's 95 % intervals as one shaded polygon per stretch of
    consecutive batches that have one (``None`` when no batch has one): plotly closes each
    stretch of a ``fill: toself`` trace on its own where ``None`` separates them, so runs
    without an estimate (logged before estimates existed) stay gaps, never bridged."""
    if _ESTIMATED_LOW not in runs or _ESTIMATED_HIGH not in runs:
        return None
    low, high = runs[_ESTIMATED_LOW].to_numpy(dtype=float), runs[_ESTIMATED_HIGH].to_numpy(dtype=float)
    dates = pd.to_datetime(runs[registry.AS_OF_TAG]).reset_index(drop=True)
    present = ~(np.isnan(low) | np.isnan(high))
    x: list[Any] = []
    y: list[Any] = []
    i = 0
    while i < len(present):
        if not present[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(present) and present[j + 1]:
            j += 1
        when = list(dates.iloc[i:j + 1])
        tops, bottoms = list(high[i:j + 1]), list(low[i:j + 1])
        if i == j:  # a lone batch: a narrow box around its date
            when = [when[0] - LONE_BAND_HALF_WIDTH, when[0] + LONE_BAND_HALF_WIDTH]
            tops, bottoms = tops * 2, bottoms * 2
        text = [f"{w:%Y-%m-%d %H:%M}" if (w.hour or w.minute) else f"{w:%Y-%m-%d}" for w in when]
        if x:
            x.append(None)
            y.append(None)
        x += text + text[::-1]
        y += _rounded(np.array(tops)) + _rounded(np.array(bottoms[::-1]))
        i = j + 1
    if not x:
        return None
    return {"type": "scatter", "x": x, "y": y, "mode": "lines", "fill": "toself", "fillcolor": ESTIMATE_BAND,
            "line": {"width": 0, "color": ESTIMATE_BAND}, "hoverinfo": "skip", "name": "estimated 95 % interval",
            "legendgroup": "estimated", "showlegend": False, "connectgaps": False}


def accuracy_figure(runs: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """Accuracy per batch over batch dates: the accuracy estimated from the champion's
    probabilities (a line in a shaded 95 % band; open circles where the batch has no
    label yet) and the realized accuracy of the labelled rows (points with their 95 %
    interval, and the rolling accuracy), the champion's holdout accuracy as a reference,
    alert markers and model-version changes. Batches without an estimate (logged before
    estimates) or without labels are gaps, and the chart says when no batch has a
    realized accuracy yet.

    A plain figure dict, like :func:`drift_history_figure`: plotly's validation of
    thousands of points costs a tenth of a second a draw, and these two are redrawn on
    every refresh.
    """
    if runs.empty:
        return empty_figure("no monitoring runs yet", "Accuracy over time").to_plotly_json()
    x = _dates(runs)
    coverage = analysis.label_coverage(runs)
    labelled_text = _labelled_text(coverage)
    traces: list[dict[str, Any]] = []
    estimated = runs[_ESTIMATED].to_numpy(dtype=float) if _ESTIMATED in runs else np.full(len(runs), np.nan)
    has_estimate = bool(np.isfinite(estimated).any())
    batch = runs[_BATCH_ACCURACY].to_numpy(dtype=float) if _BATCH_ACCURACY in runs else np.full(len(runs), np.nan)
    has_realized = bool(np.isfinite(batch).any())
    if has_estimate:
        band = estimate_band(runs)
        if band is not None:
            traces.append(band)
        low = runs[_ESTIMATED_LOW].to_numpy(dtype=float) if _ESTIMATED_LOW in runs else np.full(len(runs), np.nan)
        high = runs[_ESTIMATED_HIGH].to_numpy(dtype=float) if _ESTIMATED_HIGH in runs else np.full(len(runs), np.nan)
        hover = []
        for value, lo, hi, labelled in zip(estimated, low, high, labelled_text, strict=True):
            interval = "" if lo != lo or hi != hi else f" (95 % interval {lo:.3f}-{hi:.3f})"
            hover.append(f"estimated accuracy {value:.3f}{interval}" + (f"<br>{labelled}" if labelled else ""))
        traces.append({
            "type": "scatter", "x": x, "y": _rounded(estimated), "mode": "lines+markers", "name": ESTIMATED_NAME,
            "legendgroup": "estimated", "connectgaps": False, "line": {"color": ESTIMATE_COLOUR, "width": 1.5, "dash": "dash"},
            "marker": {"size": 4, "color": ESTIMATE_COLOUR}, "customdata": hover,
            "hovertemplate": "%{x}<br>%{customdata}<extra></extra>",
        })
        awaiting = np.isfinite(estimated) & ~np.isfinite(batch)
        if awaiting.any():
            where = np.flatnonzero(awaiting)
            traces.append({
                "type": "scatter", "x": [x[i] for i in where], "y": _rounded(estimated[where]), "mode": "markers",
                "name": AWAITING_NAME, "legendgroup": "estimated",
                "marker": {"size": 10, "symbol": "circle-open", "color": ESTIMATE_COLOUR, "line": {"width": 2}},
                "customdata": [hover[i] for i in where],
                "hovertemplate": "%{x}<br>no labels yet: %{customdata}<extra></extra>",
            })
    batch_trace: dict[str, Any] = {
        "type": "scatter", "x": x, "y": _rounded(batch), "mode": "markers", "name": REALIZED_NAME,
        "marker": {"size": 6, "color": COLOURS[0]}, "customdata": labelled_text,
        "hovertemplate": "%{x}<br>realized batch accuracy %{y:.3f}<br>%{customdata}<extra></extra>",
    }
    if _BATCH_CI_LOW in runs and _BATCH_CI_HIGH in runs:
        low = runs[_BATCH_CI_LOW].to_numpy(dtype=float)
        high = runs[_BATCH_CI_HIGH].to_numpy(dtype=float)
        batch_trace["error_y"] = {"type": "data", "array": _rounded(high - batch), "arrayminus": _rounded(batch - low),
                                  "visible": True, "thickness": 1, "width": 0, "color": "rgba(37,99,235,0.25)"}
    traces += [batch_trace, {
        "type": "scatter", "x": x, "y": _rounded(runs[_ROLLING_ACCURACY].to_numpy(dtype=float)),
        "mode": "lines", "name": ROLLING_NAME, "line": {"color": COLOURS[1], "width": 2},
        "hovertemplate": "%{x}<br>rolling accuracy (realized) %{y:.3f}<extra></extra>",
    }]
    if _CHAMPION_HOLDOUT in runs:
        traces.append({
            "type": "scatter", "x": x, "y": _rounded(runs[_CHAMPION_HOLDOUT].to_numpy(dtype=float)),
            "mode": "lines", "name": "champion holdout accuracy",
            "line": {"color": REFERENCE_COLOUR, "dash": "dash", "shape": "hv", "width": 1.5},
            "hovertemplate": "%{x}<br>champion holdout accuracy %{y:.3f}<extra></extra>",
        })
    traces += alert_traces(runs)
    changes = analysis.version_changes(runs).tail(MAX_VERSION_ANNOTATIONS)
    shapes, annotations = [], []
    for when, version in zip(_dates(changes), changes[registry.MODEL_VERSION_TAG], strict=True):
        shapes.append({"type": "line", "xref": "x", "yref": "paper", "x0": when, "x1": when, "y0": 0, "y1": 1,
                       "line": {"color": REFERENCE_COLOUR, "dash": "dot", "width": 1}})
        annotations.append({"x": when, "y": 1.0, "xref": "x", "yref": "paper", "yanchor": "bottom",
                            "text": f"model v{plot_text(version)}", "showarrow": False, "font": {"size": 11}})
    missing = None
    if not has_realized and not has_estimate:
        missing = "no batch has a realized or an estimated accuracy yet"
    elif not has_realized:
        missing = "no batch has labels yet: every accuracy shown is estimated"
    if missing:
        annotations.append({"x": 0.01, "y": 0.02, "xref": "paper", "yref": "paper", "xanchor": "left", "yanchor": "bottom",
                            "text": missing, "showarrow": False, "font": {"size": 12, "color": REFERENCE_COLOUR}})
    layout = _layout_dict(f"{plot_text(spec.name)}: accuracy over time", revision=spec.name, height=420)
    layout.update(
        shapes=shapes, annotations=annotations,
        yaxis={"title": {"text": "accuracy"}, "range": [-0.02, DRIFT_ALERT_Y + 0.05], "tickformat": ".0%",
               "tickvals": [0, 0.2, 0.4, 0.6, 0.8, 1.0]},
        xaxis={"title": {"text": "batch date"}, "type": "date", **_date_ticks(runs[registry.AS_OF_TAG])},
        hoverdistance=40,
    )
    return {"data": traces, "layout": layout}


def label_coverage_figure(runs: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """Each batch's rows with a known label (solid) and awaiting one (pale), as shares of
    the rows it scored, stacked to 100 %; the counts on hover. Runs that logged neither
    their labelled share nor their row counts are gaps. A plain figure dict (see
    :func:`accuracy_figure`)."""
    title = "label coverage per batch"
    if runs.empty:
        return empty_figure("no monitoring runs yet", title).to_plotly_json()
    coverage = analysis.label_coverage(runs)
    share = coverage["share"].to_numpy(dtype=float)
    if not np.isfinite(share).any():
        return empty_figure("no batch logged how many of its rows are labelled", title).to_plotly_json()
    x = _dates(runs)
    counts = _labelled_text(coverage)
    awaiting = []
    for scored, labelled in zip(coverage["scored"], coverage["labelled"], strict=True):
        awaiting.append("" if scored != scored or labelled != labelled else f"{int(scored - labelled):,} rows awaiting a label")
    traces = [
        {"type": "bar", "x": x, "y": _rounded(share), "name": "labelled", "marker": {"color": COLOURS[2]},
         "customdata": counts, "hovertemplate": "%{x}<br>labelled %{y:.0%}<br>%{customdata}<extra></extra>"},
        {"type": "bar", "x": x, "y": _rounded(1.0 - share), "name": "awaiting a label",
         "marker": {"color": "#d1d5db"}, "customdata": awaiting,
         "hovertemplate": "%{x}<br>awaiting a label %{y:.0%}<br>%{customdata}<extra></extra>"},
    ]
    layout = _layout_dict(f"{plot_text(spec.name)}: {title}", revision=spec.name, height=220)
    layout.update(
        barmode="stack", bargap=0.2, margin={"l": 60, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.35, "traceorder": "normal"},
        yaxis={"title": {"text": "share of rows"}, "range": [0, 1], "tickformat": ".0%", "tickvals": [0, 0.5, 1.0]},
        xaxis={"title": {"text": "batch date"}, "type": "date", **_date_ticks(runs[registry.AS_OF_TAG])},
    )
    return {"data": traces, "layout": layout}


DRIFT_ALERT_COLOUR = "#b45309"
DRIFT_ALERT_Y = 1.04
"""Drift alerts sit in a row above the accuracy (an accuracy of 1 stays below them), so a
batch with both alerts shows both markers."""


def alert_traces(runs: pd.DataFrame) -> list[dict[str, Any]]:
    """Markers of the batches with an accuracy alert (a red cross on the batch's accuracy)
    and with a drift alert (an amber triangle in a row above the chart), each with its
    messages on hover. The Overview lists the same messages under the chart."""
    kinds = analysis.alert_kinds(runs)
    messages = runs[_ALERTS] if _ALERTS in runs else pd.Series(None, index=runs.index, dtype=object)
    traces = []
    for kind, colour, symbol in (("accuracy", ALERT_COLOUR, "x"), ("drift", DRIFT_ALERT_COLOUR, "triangle-down")):
        alerted = runs[kinds[kind]]
        if alerted.empty:
            continue
        dates = _dates(alerted)
        if kind == "accuracy":
            # On the accuracy the alert was judged on: the estimate while labels are missing.
            estimate = alerted[_ESTIMATED] if _ESTIMATED in alerted else pd.Series(np.nan, index=alerted.index)
            on_estimate = analysis.accuracy_bases(alerted).eq(analysis.ESTIMATED)
            y = alerted[_BATCH_ACCURACY].where(~on_estimate, estimate)
            y = y.fillna(estimate).fillna(alerted[_ROLLING_ACCURACY]).fillna(0.0)
            y_values = _rounded(y.to_numpy(dtype=float))
        else:
            y_values = [DRIFT_ALERT_Y] * len(alerted)
        hover = []
        for day, run_id in zip(dates, alerted.index, strict=True):
            mine = [m for m in analysis.alert_messages(messages.get(run_id)) if analysis.message_kind(m) == kind]
            hover.append(f"{day}<br>" + ("<br>".join(plot_text(m) for m in mine) or f"{kind} alert"))
        traces.append({
            "type": "scatter", "x": dates, "y": y_values, "mode": "markers", "name": f"{kind} alert",
            "marker": {"symbol": symbol, "size": 12, "color": colour, "line": {"width": 1, "color": colour}},
            "hovertext": hover, "hoverinfo": "text", "cliponaxis": False,
        })
    return traces


def _class_traces(
    values: pd.DataFrame, x: list[str], spec: DatasetSpec, what: str, style: dict[str, Any], mode: str = "lines+markers"
) -> list[dict[str, Any]]:
    """One line per class of ``values`` (runs x classes), in the class's colour."""
    traces = []
    for cls in spec.classes:
        if cls not in values or values[cls].isna().all():
            continue
        name = plot_text(analysis.class_label(cls, spec))
        traces.append({
            "type": "scatter", "x": x, "y": _rounded(values[cls].to_numpy(dtype=float)), "mode": mode,
            "name": f"{name} {what}", "legendgroup": name, "connectgaps": False,
            "line": {"color": class_colour(spec, cls), "width": 2, **style}, "marker": {"size": 4},
            "hovertemplate": f"%{{x}}<br>{name} {what} %{{y:.3f}}<extra></extra>",
        })
    return traces


def class_metrics_figure(
    runs: pd.DataFrame, precision: pd.DataFrame, recall: pd.DataFrame, spec: DatasetSpec, window: str,
    min_rows: int,
) -> dict[str, Any]:
    """Precision (solid) and recall (dashed) of each class over batch dates, one colour a
    class. A plain figure dict (see :func:`accuracy_figure`).

    Args:
        runs: Monitoring runs (for their dates).
        precision: Per run (rows, like ``runs``) and class (columns): the precision.
        recall: The same for recall.
        spec: The dataset (class names and colours).
        window: Which rows the figures are over (``rolling window``), for the title.
        min_rows: The labelled rows a run needs before it logs them (said when none did).
    """
    title = f"precision and recall per class ({plot_text(window)})"
    if runs.empty:
        return empty_figure("no monitoring runs yet", title).to_plotly_json()
    x = _dates(runs)
    traces = (_class_traces(precision, x, spec, "precision", {"dash": "solid"})
              + _class_traces(recall, x, spec, "recall", {"dash": "dash"}))
    if not traces:
        return empty_figure(f"no batch had per-class figures: a run logs them from {min_rows} labelled rows "
                            f"in the {window}", title).to_plotly_json()
    return _share_over_time(traces, title, "precision / recall", runs, spec)


def class_share_figure(
    runs: pd.DataFrame, predicted: pd.DataFrame, training: pd.DataFrame, spec: DatasetSpec
) -> dict[str, Any]:
    """Each class's share of a batch's predictions over batch dates (solid), against its
    share of the model's training rows (dashed steps, in the same colour). A plain figure
    dict (see :func:`accuracy_figure`)."""
    title = "predicted class shares against training"
    if runs.empty:
        return empty_figure("no monitoring runs yet", title).to_plotly_json()
    x = _dates(runs)
    traces = (_class_traces(predicted, x, spec, "predicted", {"dash": "solid"})
              + _class_traces(training, x, spec, "in training", {"dash": "dash", "shape": "hv", "width": 1.5}, "lines"))
    if not traces:
        return empty_figure("no batch logged its class shares", title).to_plotly_json()
    return _share_over_time(traces, title, "share of rows", runs, spec)


def _share_over_time(traces: list[Any], title: str, y_title: str, runs: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """A figure dict of shares (0-100 %) over batch dates, one hover box per date."""
    layout = _layout_dict(title, revision=spec.name, height=360)
    layout.update(
        yaxis={"title": {"text": y_title}, "range": [-0.02, 1.02], "tickformat": ".0%"},
        xaxis={"title": {"text": "batch date"}, "type": "date", **_date_ticks(runs[registry.AS_OF_TAG])},
        hovermode="x unified",
    )
    return {"data": traces, "layout": layout}


QUALITY_PANELS = (
    ("rows", "rows", "rows per batch", "bar", None),
    ("missing_share", "missing", "share of feature values missing", "lines+markers", "missing_detail"),
    ("out_of_range_share", "out of range", "share of numeric values outside the training range", "lines+markers",
     "out_of_range_detail"),
    ("unseen_categories", "unseen", "categories the training rows never had", "bar", "unseen_detail"),
)
"""The data-quality panels, top to bottom: column, axis title, what it is, how drawn, the
column naming the features behind it."""


def data_quality_figure(runs: pd.DataFrame, quality: pd.DataFrame, spec: DatasetSpec) -> dict[str, Any]:
    """Data quality over batch dates, in four panels sharing the date axis: rows per batch,
    missing share, share outside the training range, unseen categories (hover names the
    features). A plain figure dict (see :func:`accuracy_figure`).

    Args:
        runs: Monitoring runs (their dates).
        quality: :func:`monitoring_app.analysis.data_quality` (runs without predictions
            are gaps).
        spec: The dataset.
    """
    title = "data quality per batch"
    if runs.empty:
        return empty_figure("no monitoring runs yet", title).to_plotly_json()
    shown = quality.reindex(runs.index)
    x = _dates(runs)
    gap = 0.06
    height = (1 - gap * (len(QUALITY_PANELS) - 1)) / len(QUALITY_PANELS)
    traces: list[dict[str, Any]] = []
    layout = _layout_dict(f"{plot_text(spec.name)}: {title}", revision=spec.name, height=560)
    layout.update(showlegend=False, hovermode="x unified",
                  xaxis={"title": {"text": "batch date"}, "type": "date", "anchor": f"y{len(QUALITY_PANELS)}",
                         **_date_ticks(runs[registry.AS_OF_TAG])})
    for i, (column, axis_title, about, kind, detail) in enumerate(QUALITY_PANELS):
        axis = "y" if i == 0 else f"y{i + 1}"
        values = shown[column].to_numpy(dtype=float)
        is_share = column.endswith("_share")
        trace: dict[str, Any] = {
            "type": "bar" if kind == "bar" else "scatter", "x": x, "y": _rounded(values), "yaxis": axis, "xaxis": "x",
            "name": about, "marker": {"color": QUALITY_COLOURS[i]},
            "hovertemplate": f"{about}: %{{y:{'.1%' if is_share else ',.0f'}}}"
            + ("%{customdata}" if detail else "") + "<extra></extra>",
        }
        if kind != "bar":
            trace.update(mode=kind, line={"color": QUALITY_COLOURS[i], "width": 1.5}, marker={"size": 4, "color": QUALITY_COLOURS[i]})
        if detail:
            trace["customdata"] = [f" ({plot_text(t)})" if isinstance(t, str) and t else "" for t in shown[detail].tolist()]
        traces.append(trace)
        top = 1 - i * (height + gap)
        finite = values[np.isfinite(values)]
        peak = float(finite.max()) if len(finite) else 0.0
        axis_range = [0, max(peak * 1.15, 0.05)] if is_share else [0, max(peak * 1.15, 1)]
        layout["yaxis" if i == 0 else f"yaxis{i + 1}"] = {
            "domain": [max(0.0, top - height), top], "anchor": "x", "title": {"text": axis_title},
            "range": axis_range, "tickformat": ".0%" if is_share else ",d", "nticks": 4,
            # Counts are whole: a short count axis gets one tick per unit, not 0, 0.5 (shown "1"), 1.
            **({"dtick": 1} if not is_share and axis_range[1] <= 5 else {}),
        }
    return {"data": traces, "layout": layout}


# --- Confusion matrices ---------------------------------------------------------------------


def confusion_figure(table: dict[str, Any] | None, spec: DatasetSpec, title: str) -> go.Figure:
    """A confusion matrix (``{labels, matrix}``, rows actual, columns predicted) as a
    heatmap with the counts written in the cells."""
    if not table or not table.get("matrix"):
        return empty_figure("not computed for this run (no labelled rows)", title)
    labels = [plot_text(analysis.class_label(v, spec)) for v in table["labels"]]
    matrix = np.asarray(table["matrix"], dtype=int)
    total = int(matrix.sum())
    figure = go.Figure(
        go.Heatmap(
            z=matrix, x=labels, y=labels, colorscale="Blues", showscale=False,
            text=matrix.astype(str), texttemplate="%{text}", textfont={"size": 14},
            hovertemplate="actual %{y}<br>predicted %{x}<br>%{z} rows<extra></extra>",
        ),
        layout=_base(f"{plot_text(title)} ({total} labelled rows)", height=360),
    )
    figure.update_xaxes(title="predicted", side="bottom", type="category")
    figure.update_yaxes(title="actual", autorange="reversed", type="category")
    figure.update_layout(margin={"l": 90, "r": 20, "t": 50, "b": 60})
    return figure


# --- Drift ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriftStat:
    """A per-feature drift figure a monitoring run logs as ``<prefix><feature>``."""

    label: str
    prefix: str
    axis: str
    log: bool = False


DRIFT_STATS = {
    "effect": DriftStat("effect size", registry.DRIFT_EFFECT_PREFIX, "effect size (higher: more drift)"),
    "padj": DriftStat("adjusted p-value", registry.DRIFT_PADJ_PREFIX, "adjusted p-value (lower: more drift)", log=True),
    "psi": DriftStat("population stability index", registry.DRIFT_PSI_PREFIX, "PSI (higher: more drift)"),
}
DEFAULT_DRIFT_STAT = "effect"
FEATURE_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000")
"""Okabe and Ito's colour-blind-safe qualitative palette (without its yellow, too pale on
white); features beyond its length get the same colours with another dash."""
FEATURE_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
THRESHOLD_COLOUR = "#374151"
P_FLOOR = 1e-12
"""Adjusted p-values below this are drawn at it (the hover says the value): one p-value of
0 would otherwise stretch the log axis over hundreds of decades."""
PSI_LARGE_SHIFT = 0.2


def feature_style(index: int) -> dict[str, Any]:
    """The line of the ``index``-th feature: a palette colour, and a new dash each time the
    palette comes round again."""
    return {"color": FEATURE_COLOURS[index % len(FEATURE_COLOURS)],
            "dash": FEATURE_DASHES[(index // len(FEATURE_COLOURS)) % len(FEATURE_DASHES)]}


def drift_metric(stat: str, feature: str) -> str:
    """The metric a monitoring run logs ``stat`` of ``feature`` under."""
    return f"{DRIFT_STATS[stat].prefix}{metric_key(feature)}"


def p_value_text(value: float) -> str:
    """A p-value as people write it: ``0.05``, ``0.001``, ``1e-6``, ``3.2e-5``."""
    if value != value:
        return "n/a"
    if value == 0:
        return "0"
    if value >= 1e-3:
        return f"{value:.3g}"
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def log_ticks(lowest: float) -> tuple[list[float], list[str]]:
    """Tick values and labels of a log axis from 1 down to ``lowest``: one per decade
    (fewer when there are many), written like :func:`p_value_text`, not in plotly's SI
    notation (``100n``)."""
    decades = max(1, math.ceil(-math.log10(lowest)))
    step = max(1, math.ceil(decades / 12))
    values = [10.0 ** -k for k in range(0, decades + 1, step)]
    return values, [p_value_text(v) for v in values]


def _threshold_shape(level: float, text: str, log: bool, above: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    # On a log axis plotly places shapes in data units but annotations in log10 units.
    shape = {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": level, "y1": level,
             "line": {"color": THRESHOLD_COLOUR, "dash": "dash", "width": 1.5}}
    note = {"text": text, "xref": "paper", "x": 1, "xanchor": "right", "y": float(np.log10(level)) if log else level,
            "yref": "y",
            "yanchor": "bottom" if above else "top", "showarrow": False, "bgcolor": "rgba(255,255,255,0.85)",
            "font": {"size": 11, "color": THRESHOLD_COLOUR}}
    return shape, note


def drift_history_figure(
    runs: pd.DataFrame,
    spec: DatasetSpec,
    stat: str,
    drifted: pd.DataFrame | None = None,
    threshold: pd.Series | None = None,
) -> dict[str, Any]:
    """One drift figure per feature over batch dates: the effect size, the adjusted
    p-value (log axis) or the PSI (see :data:`DRIFT_STATS`). A plain figure dict (see
    :func:`accuracy_figure`).

    Args:
        runs: Monitoring runs (:meth:`SiteData.monitoring_runs`) with the
            ``metrics.<prefix><feature>`` columns of ``stat``.
        spec: The dataset (its features, in order).
        stat: A key of :data:`DRIFT_STATS`.
        drifted: Per run (rows, like ``runs``) and feature (columns): whether the feature
            drifted by the run's rule; those points get a marker.
        threshold: Per run, the rule's threshold for ``stat`` (minimum effect or p-value),
            drawn as a line (a step line when it changed over time); none for PSI, which
            is not part of the rule (a line at 0.2, a large shift, instead).
    """
    info = DRIFT_STATS[stat]
    title = f"{plot_text(spec.name)}: {info.label} per feature"
    if runs.empty:
        return empty_figure("no monitoring runs yet", title).to_plotly_json()
    columns = {f: registry.metric_column(drift_metric(stat, f)) for f in spec.feature_names}
    columns = {f: c for f, c in columns.items() if c in runs}
    if not columns or runs[list(columns.values())].isna().all().all():
        return empty_figure(f"no batch logged the {info.label} of its features: drift was not computed "
                            "(too few rows), or the runs were logged before it was", title).to_plotly_json()
    x = _dates(runs)
    traces: list[dict[str, Any]] = []
    marked_x: list[str] = []
    marked_y: list[float | None] = []
    marked_text: list[str] = []
    lowest = 1.0
    for i, feature in enumerate(spec.feature_names):
        if feature not in columns:
            continue
        values = runs[columns[feature]].to_numpy(dtype=float)
        name = plot_text(feature)
        trace: dict[str, Any] = {
            "type": "scatter", "x": x, "mode": "lines+markers", "name": name, "legendgroup": name,
            "marker": {"size": 4}, "line": {"width": 1.5, **feature_style(i)},
        }
        if info.log:
            shown = np.clip(values, P_FLOOR, None)
            lowest = min(lowest, float(np.nanmin(shown)) if np.isfinite(shown).any() else 1.0)
            trace["y"] = [None if v != v else float(f"{v:.4g}") for v in shown.tolist()]
            trace["customdata"] = [p_value_text(v) for v in values.tolist()]
            trace["hovertemplate"] = f"{name}<br>%{{x}}<br>{info.label} %{{customdata}}<extra></extra>"
        else:
            trace["y"] = _rounded(values)
            trace["hovertemplate"] = f"{name}<br>%{{x}}<br>{info.label} %{{y:.3g}}<extra></extra>"
        traces.append(trace)
        if drifted is not None and feature in drifted:
            flags = drifted[feature].reindex(runs.index).fillna(False).to_numpy(dtype=bool)
            for day, value, flag in zip(x, trace["y"], flags, strict=True):
                if flag and value is not None:
                    marked_x.append(day)
                    marked_y.append(value)
                    marked_text.append(f"{name} drifted on {day}")
    if marked_x:
        traces.append({
            "type": "scatter", "x": marked_x, "y": marked_y, "mode": "markers", "name": "drifted (the rule was met)",
            "marker": {"symbol": "diamond-open", "size": 12, "color": ALERT_COLOUR, "line": {"width": 2}},
            "hovertext": marked_text, "hoverinfo": "text",
        })
    layout = _layout_dict(title, revision=(spec.name, stat), height=440)
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    levels = threshold.reindex(runs.index).astype(float) if threshold is not None else pd.Series(dtype=float)
    known = levels.dropna()
    if stat == "psi":
        shape, note = _threshold_shape(PSI_LARGE_SHIFT, "0.2: a large shift (PSI is not part of the rule)", False, True)
        shapes.append(shape)
        annotations.append(note)
    elif not known.empty and known.nunique() == 1:
        level = float(known.iloc[0])
        if info.log:
            lowest = min(lowest, level)
            text = f"rule: adjusted p < {p_value_text(level)}"
        else:
            text = f"rule: effect >= {level:g}"
        shape, note = _threshold_shape(level, text, info.log, not info.log)
        shapes.append(shape)
        annotations.append(note)
    elif not known.empty:  # the rule changed over time: its level per batch
        if info.log:
            lowest = min(lowest, float(known.min()))
        traces.append({
            "type": "scatter", "x": x, "y": [None if v != v else v for v in levels.tolist()], "mode": "lines",
            "name": "the rule's threshold", "line": {"color": THRESHOLD_COLOUR, "dash": "dash", "shape": "hv", "width": 1.5},
            "connectgaps": True, "hovertemplate": "%{x}<br>threshold %{y:.3g}<extra></extra>",
        })
    if info.log:
        tickvals, ticktext = log_ticks(max(lowest, P_FLOOR))
        layout["yaxis"] = {"type": "log", "title": {"text": info.axis}, "tickmode": "array", "tickvals": tickvals,
                           "ticktext": ticktext, "range": [min(math.log10(max(lowest, P_FLOOR)), -1.0) - 0.3, 0.15]}
    else:
        layout["yaxis"] = {"title": {"text": info.axis}, "rangemode": "tozero"}
    layout["shapes"] = shapes
    layout["annotations"] = annotations
    layout["xaxis"] = {"title": {"text": "batch date"}, "type": "date", **_date_ticks(runs[registry.AS_OF_TAG])}
    return {"data": traces, "layout": layout}


def distribution_figure(
    reference: pd.Series, current: pd.Series, feature: FeatureSpec, reference_label: str, current_label: str
) -> go.Figure:
    """One feature's distribution in a window (a batch, the recent or the rolling drift
    window) against the training rows, as shares of each side's rows (a histogram over the
    same bins, or bars per category; missing values as their own bar)."""
    title = f"{plot_text(feature.name)}: {plot_text(current_label)} against {plot_text(reference_label)}"
    if reference.empty and current.empty:
        return empty_figure("no rows to compare", title)
    figure = go.Figure(layout=_base(title, height=380))
    figure.update_layout(barmode="group", bargap=0.1)
    discrete = discrete_values(pd.concat([reference, current]), feature)
    if discrete is not None:
        both = pd.concat([reference, current])
        labels = [*map(str, discrete), *(["<missing>"] if both.isna().any() else [])]
        for series, name, colour in ((reference, reference_label, COLOURS[0]), (current, current_label, COLOURS[1])):
            values = series.astype("Int64").astype(str).where(series.notna(), "<missing>")
            share = values.value_counts().reindex(labels, fill_value=0) / max(len(series), 1)
            figure.add_trace(go.Bar(x=labels, y=share.to_numpy(), name=f"{plot_text(name)} ({len(series)} rows)",
                                    marker={"color": colour}, hovertemplate="%{x}: %{y:.1%}<extra></extra>"))
        figure.update_xaxes(title=plot_text(feature.name), type="category")
    elif feature.is_numeric:
        both = pd.concat([reference, current]).dropna().astype(float)
        if both.empty:
            return empty_figure("every value is missing", title)
        edges = np.histogram_bin_edges(both, bins=min(HISTOGRAM_BINS, max(5, both.nunique())))
        centres = (edges[:-1] + edges[1:]) / 2
        for series, name, colour in ((reference, reference_label, COLOURS[0]), (current, current_label, COLOURS[1])):
            values = series.dropna().astype(float)
            counts, _ = np.histogram(values, bins=edges)
            share = counts / max(len(series), 1)
            figure.add_trace(go.Bar(
                x=centres, y=share, width=np.diff(edges) * 0.45, name=f"{plot_text(name)} ({len(series)} rows)",
                marker={"color": colour}, hovertemplate="%{x:.3g}: %{y:.1%}<extra></extra>",
            ))
        figure.update_xaxes(title=plot_text(feature.name))
        missing = [series.isna().mean() if len(series) else 0.0 for series in (reference, current)]
        if any(m > 0 for m in missing):
            figure.add_annotation(
                text=f"missing: {missing[0]:.1%} of {plot_text(reference_label)}, {missing[1]:.1%} of {plot_text(current_label)}",
                showarrow=False, x=1, y=1.02, xref="paper", yref="paper", xanchor="right", yanchor="bottom",
            )
    else:
        both = pd.concat([reference, current])
        categories = list(feature.categories or sorted(both.dropna().astype(str).unique()))
        labels = [*categories, *(["<missing>"] if both.isna().any() else [])]
        for series, name, colour in ((reference, reference_label, COLOURS[0]), (current, current_label, COLOURS[1])):
            values = series.astype(object).where(series.notna(), "<missing>").astype(str)
            share = values.value_counts().reindex(labels, fill_value=0) / max(len(series), 1)
            figure.add_trace(go.Bar(
                x=[plot_text(v) for v in labels], y=share.to_numpy(), name=f"{plot_text(name)} ({len(series)} rows)",
                marker={"color": colour}, hovertemplate="%{x}: %{y:.1%}<extra></extra>",
            ))
        figure.update_xaxes(title=plot_text(feature.name), type="category")
    # The whole of the tallest bar, whatever the shares (a batch of 10 rows has bars of 10 %
    # steps): an explicit range, with room above it.
    peak = max((float(np.nanmax(np.asarray(t.y, dtype=float))) for t in figure.data if t.y is not None and len(t.y)),
               default=0.0)
    figure.update_yaxes(title="share of rows", tickformat=".0%", range=[0, min(1.0, peak) * 1.1 + 0.01])
    return figure


# --- Models ---------------------------------------------------------------------------------


def tuning_figure(trials: pd.DataFrame, title: str) -> go.Figure:
    """Mean CV accuracy of each trial and the best so far (the search's progress)."""
    scored = trials.dropna(subset=[registry.CV_ACCURACY_METRIC])
    if scored.empty:
        return empty_figure("no trials recorded for this training run", title)
    figure = go.Figure(layout=_base(title, height=360))
    figure.add_trace(go.Scatter(
        x=scored[registry.TRIAL_NUMBER_TAG], y=scored[registry.CV_ACCURACY_METRIC], mode="markers", name="trial",
        marker={"size": 7, "color": COLOURS[0]}, customdata=scored["state"],
        hovertemplate="trial %{x}<br>mean CV accuracy %{y:.4f}<br>%{customdata}<extra></extra>",
    ))
    figure.add_trace(go.Scatter(
        x=scored[registry.TRIAL_NUMBER_TAG], y=scored[registry.CV_ACCURACY_METRIC].cummax(), mode="lines", name="best so far",
        line={"color": COLOURS[1], "shape": "hv", "width": 2},
        hovertemplate="after trial %{x}: best %{y:.4f}<extra></extra>",
    ))
    figure.update_xaxes(title="trial", dtick=max(1, math.ceil(len(scored) / 15)))
    figure.update_yaxes(title="mean CV accuracy")
    return figure


# --- Data -----------------------------------------------------------------------------------


def class_distribution_figure(rows: pd.DataFrame, feature: FeatureSpec, spec: DatasetSpec) -> go.Figure:
    """A feature's distribution per class, the rows of each origin (``origin_label``:
    real, synthetic, live) side by side; rows without a label are in no class."""
    title = f"{plot_text(feature.name)} by {plot_text(spec.label)}"
    if rows.empty:
        return empty_figure("no rows", title)
    origins = [label for label in map(analysis.origin_label, analysis.ORIGIN_ORDER) if (rows["origin_label"] == label).any()]
    from plotly.subplots import make_subplots

    figure = make_subplots(rows=1, cols=len(origins), subplot_titles=[f"{o} rows" for o in origins], shared_yaxes=True,
                           figure=go.Figure(layout=_base(title, height=380)))
    figure.update_layout(barmode="group")
    discrete = discrete_values(rows[feature.name], feature)
    histogram = feature.is_numeric and discrete is None
    for col, origin in enumerate(origins, start=1):
        part = rows[rows["origin_label"] == origin]
        for cls in spec.classes:
            values = part.loc[part[spec.label] == cls, feature.name]
            name = plot_text(analysis.class_label(cls, spec))
            common = {"name": name, "legendgroup": name, "showlegend": col == 1, "marker": {"color": class_colour(spec, cls)}}
            if histogram:
                figure.add_trace(go.Histogram(x=values.dropna().astype(float), histnorm="probability", opacity=0.6,
                                              nbinsx=HISTOGRAM_BINS, **common), row=1, col=col)
            else:
                if discrete is not None:
                    labels = [str(v) for v in discrete]
                    shown = values.astype("Int64").astype(str).where(values.notna(), "<missing>")
                else:
                    labels = list(feature.categories or sorted(rows[feature.name].dropna().astype(str).unique()))
                    shown = values.astype(object).where(values.notna(), "<missing>").astype(str)
                if rows[feature.name].isna().any():
                    labels.append("<missing>")
                share = shown.value_counts().reindex(labels, fill_value=0) / max(len(values), 1)
                figure.add_trace(go.Bar(x=[plot_text(v) for v in labels], y=share.to_numpy(), **common), row=1, col=col)
        figure.update_xaxes(title_text=plot_text(feature.name), row=1, col=col,
                            type=None if histogram else "category")
    if histogram:
        figure.update_layout(barmode="overlay")
    figure.update_yaxes(title_text="share of the class's rows", tickformat=".0%", row=1, col=1)
    return figure


def correlation_figure(matrix: pd.DataFrame, title: str) -> go.Figure:
    """Correlations of (encoded) features with each class: a diverging heatmap with values."""
    if matrix.empty:
        return empty_figure("no rows", title)
    z = matrix.to_numpy(dtype=float)
    text = np.where(np.isnan(z), "", np.vectorize(lambda v: f"{v:+.2f}")(np.nan_to_num(z)))
    figure = go.Figure(
        go.Heatmap(
            z=z, x=[plot_text(c) for c in matrix.columns], y=[plot_text(i) for i in matrix.index],
            colorscale="RdBu", zmid=0, zmin=-1, zmax=1, text=text, texttemplate="%{text}",
            hovertemplate="%{y} and %{x}: %{z:.3f}<extra></extra>", colorbar={"title": "r"},
        ),
        layout=_base(title, height=max(320, 28 * len(matrix) + 120)),
    )
    figure.update_yaxes(autorange="reversed", type="category")
    figure.update_xaxes(type="category", side="top")
    figure.update_layout(margin={"l": 160, "r": 20, "t": 90, "b": 20})
    return figure


# --- Predict --------------------------------------------------------------------------------


def probability_figure(probabilities: Sequence[float], spec: DatasetSpec) -> go.Figure:
    """The champion's probability for each class, as horizontal bars."""
    names = [plot_text(analysis.class_label(c, spec)) for c in spec.classes]
    figure = go.Figure(
        go.Bar(
            x=list(probabilities), y=names, orientation="h", text=[f"{p:.1%}" for p in probabilities],
            textposition="auto", marker={"color": [class_colour(spec, c) for c in spec.classes]},
            hovertemplate="%{y}: %{x:.3f}<extra></extra>",
        ),
        layout=_base("class probabilities", height=80 + 40 * len(names)),
    )
    figure.update_xaxes(range=[0, 1], tickformat=".0%")
    figure.update_yaxes(autorange="reversed", type="category")
    return figure
