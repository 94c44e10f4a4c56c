"""The monitoring site's pure parts: figures, page computations, the predict form, the
predictions table's query language, class icons, and the CLI's defaults."""

from __future__ import annotations

import base64
import datetime as dt
import io
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from click.testing import CliRunner
from dash import html

from monitoring_app import analysis, figures, forms, icons, table_query
from monitoring_app.app import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REFRESH_S
from monitoring_app.app import highlight_nav
from monitoring_app.data_access import ModelVersion, class_metric, class_metric_keys, class_metric_names
from monitoring_app.run_readers import assemble_runs, read_only_sql_url, runs_frame, sqlite_path
from monitoring_app.pages import drift as drift_page
from monitoring_app.pages import overview as overview_page
from serverless_ml.cli import cli
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.spec import parse_spec
from dash_text import text_of

pytestmark = pytest.mark.unit

TITANIC = get_dataset("titanic")
IRIS = get_dataset("iris")
ODD = parse_spec(
    {
        "name": "odd",
        "label": "kind",
        "classes": ["<b>bold</b>", "plain & simple"],
        "features": {
            "size": {"type": "double", "min": 0, "max": 10},
            "count": {"type": "bigint", "min": 1, "max": 5, "nullable": True},
            "colour": {"type": "string", "categories": ["<script>alert(1)</script>", "blue"], "nullable": True},
            "note": {"type": "string"},
        },
    },
    "odd.yaml",
)


def as_dict(figure: go.Figure | dict) -> dict:
    """A figure as plain lists (plotly encodes numpy arrays as base64 typed arrays)."""
    return _decode(figure if isinstance(figure, dict) else figure.to_plotly_json())


def _decode(value: object) -> object:
    if isinstance(value, dict) and set(value) >= {"dtype", "bdata"}:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if shape:
            array = array.reshape([int(n) for n in str(shape).split(",")])
        return array.tolist()
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_decode(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def monitoring_frame(days: int = 6, alert_on: tuple[int, ...] = (3,), version_from: dict[int, str] | None = None) -> pd.DataFrame:
    """A frame shaped like SiteData.monitoring_runs."""
    version_from = version_from or {0: "1", 4: "2"}
    dates = pd.date_range("2024-03-01", periods=days, freq="D")
    versions, current = [], "1"
    for i in range(days):
        current = version_from.get(i, current)
        versions.append(current)
    frame = pd.DataFrame({
        "run_name": [f"batch-{i}" for i in range(days)],
        "start_time": np.arange(days) * 1000,
        "as_of": dates,
        "as_of_text": dates.strftime("%Y-%m-%d"),
        "tags.as_of": dates.strftime("%Y-%m-%d"),
        "metrics.rows_scored": 10.0,
        "metrics.rows_labelled": 10.0,
        "metrics.batch_accuracy": np.linspace(0.9, 0.6, days),
        "metrics.batch_accuracy_ci_low": np.linspace(0.8, 0.5, days),
        "metrics.batch_accuracy_ci_high": np.linspace(0.95, 0.7, days),
        "metrics.rolling_accuracy": np.linspace(0.88, 0.7, days),
        "metrics.champion_holdout_accuracy": 0.83,
        "metrics.latest_probability": 0.75,
        "tags.model_version": versions,
        "tags.alert": ["true" if i in alert_on else "false" for i in range(days)],
        "tags.alerts": ["accuracy alert: <b>low</b> | drift alert: age" if i in alert_on else "" for i in range(days)],
        "tags.latest_key": [str(100 + i) for i in range(days)],
        "tags.latest_prediction": "1",
        "tags.latest_actual": "0",
    }, index=pd.Index([f"run{i}" for i in range(days)], name="run_id"))
    return frame


# --- figures ------------------------------------------------------------------------------------


def test_accuracy_figure_draws_batches_rolling_reference_alerts_and_version_changes() -> None:
    runs = monitoring_frame()
    figure = figures.accuracy_figure(runs, TITANIC)
    names = [trace["name"] for trace in figure["data"]]
    # Runs without an estimate (logged before estimates): no estimate trace, no band.
    assert names == ["batch accuracy (realized)", "rolling accuracy (realized)", "champion holdout accuracy",
                     "accuracy alert", "drift alert"]
    batch = figure["data"][0]
    assert batch["x"] == list(runs["as_of_text"]) and batch["y"][0] == pytest.approx(0.9)
    assert batch["error_y"]["array"][0] == pytest.approx(0.05) and batch["error_y"]["arrayminus"][0] == pytest.approx(0.1)
    accuracy, drift = figure["data"][3], figure["data"][4]
    assert accuracy["x"] == drift["x"] == ["2024-03-04"]
    assert accuracy["y"] == [pytest.approx(runs["metrics.batch_accuracy"].iloc[3], abs=1e-4)]  # on the batch's accuracy
    assert drift["y"] == [figures.DRIFT_ALERT_Y] and figure["layout"]["yaxis"]["range"][1] > figures.DRIFT_ALERT_Y
    assert (accuracy["marker"]["symbol"], drift["marker"]["symbol"]) == ("x", "triangle-down")
    assert accuracy["marker"]["color"] != drift["marker"]["color"]
    assert "&lt;b&gt;low&lt;/b&gt;" in accuracy["hovertext"][0] and "<b>low</b>" not in accuracy["hovertext"][0]
    assert "drift alert" not in accuracy["hovertext"][0] and "drift alert: age" in drift["hovertext"][0]
    assert [a["text"] for a in figure["layout"]["annotations"]] == ["model v2"]
    assert figure["layout"]["shapes"][0]["x0"] == "2024-03-05"
    json.dumps(figure)  # plain JSON, as dcc.Graph receives it
    go.Figure(figure)  # and a valid plotly figure


def test_accuracy_figure_draws_the_estimate_as_a_band_and_marks_batches_without_labels() -> None:
    runs = monitoring_frame(days=6, alert_on=(5,))
    runs["tags.alerts"] = ["", "", "", "", "", "accuracy alert (estimated: 10 rows have no label yet): low"]
    # Days 0-1 logged before estimates; 2-3 labelled with an estimate; 4-5 await their labels.
    runs["metrics.estimated_accuracy"] = [np.nan, np.nan, 0.8, 0.7, 0.65, 0.5]
    runs["metrics.estimated_accuracy_ci_low"] = [np.nan, np.nan, 0.7, 0.6, 0.55, 0.4]
    runs["metrics.estimated_accuracy_ci_high"] = [np.nan, np.nan, 0.9, 0.8, 0.75, 0.6]
    runs.loc[["run4", "run5"], ["metrics.batch_accuracy", "metrics.batch_accuracy_ci_low", "metrics.batch_accuracy_ci_high"]] = np.nan
    runs.loc[["run4", "run5"], "metrics.rows_labelled"] = 0.0
    runs["metrics.labelled_share"] = [np.nan, np.nan, 1.0, 1.0, 0.0, 0.0]
    figure = figures.accuracy_figure(runs, TITANIC)
    traces = {t["name"]: t for t in figure["data"]}
    assert list(traces)[:3] == ["estimated 95 % interval", "estimated accuracy (95 % band)", "estimated (no labels yet)"]
    band = traces["estimated 95 % interval"]
    assert band["fill"] == "toself" and band["showlegend"] is False
    # One closed shape over days 2-5: highs forwards, lows backwards; days 0-1 are left out.
    assert band["x"] == ["2024-03-03", "2024-03-04", "2024-03-05", "2024-03-06"] * 1 + [
        "2024-03-06", "2024-03-05", "2024-03-04", "2024-03-03"]
    assert band["y"] == pytest.approx([0.9, 0.8, 0.75, 0.6, 0.4, 0.55, 0.6, 0.7])
    line = traces["estimated accuracy (95 % band)"]
    assert line["y"][:2] == [None, None] and line["y"][2:] == pytest.approx([0.8, 0.7, 0.65, 0.5])
    assert "95 % interval 0.400-0.600" in line["customdata"][5] and "0 of 10 rows labelled" in line["customdata"][5]
    awaiting = traces["estimated (no labels yet)"]
    assert awaiting["x"] == ["2024-03-05", "2024-03-06"] and awaiting["y"] == pytest.approx([0.65, 0.5])
    realized = traces["batch accuracy (realized)"]
    assert realized["x"] == list(runs["as_of_text"]) and realized["y"][4:] == [None, None]
    assert realized["customdata"][0] == "10 of 10 rows labelled"
    # The estimated alert sits on the estimate it was judged on.
    assert traces["accuracy alert"]["y"] == [pytest.approx(0.5)]
    assert not [a for a in figure["layout"]["annotations"] if "no batch" in a["text"]]
    json.dumps(figure)
    go.Figure(figure)


def test_accuracy_figure_says_when_no_batch_has_labels_or_an_estimate() -> None:
    runs = monitoring_frame(days=3)
    runs["metrics.batch_accuracy"] = np.nan
    runs["metrics.rows_labelled"] = 0.0
    notes = [a["text"] for a in figures.accuracy_figure(runs, TITANIC)["layout"]["annotations"]]
    assert "no batch has a realized or an estimated accuracy yet" in notes
    runs["metrics.estimated_accuracy"] = 0.7
    lone = runs.assign(**{"metrics.estimated_accuracy_ci_low": [np.nan, 0.6, np.nan],
                          "metrics.estimated_accuracy_ci_high": [np.nan, 0.8, np.nan]})
    figure = figures.accuracy_figure(lone, TITANIC)
    assert "no batch has labels yet: every accuracy shown is estimated" in [a["text"] for a in figure["layout"]["annotations"]]
    band = figure["data"][0]
    assert band["x"] == ["2024-03-01 16:00", "2024-03-02 08:00", "2024-03-02 08:00", "2024-03-01 16:00"]  # a lone batch: a box
    assert band["y"] == pytest.approx([0.8, 0.8, 0.6, 0.6])


def test_label_coverage_per_batch_from_the_share_or_the_counts() -> None:
    runs = monitoring_frame(days=4)
    runs["metrics.rows_labelled"] = [10.0, 4.0, 0.0, np.nan]
    runs["metrics.labelled_share"] = [np.nan, 0.4, 0.0, np.nan]  # the first run predates the share
    runs.loc["run3", "metrics.rows_scored"] = np.nan
    coverage = analysis.label_coverage(runs)
    assert coverage["share"].tolist()[:3] == [1.0, 0.4, 0.0] and np.isnan(coverage["share"].iloc[3])
    figure = figures.label_coverage_figure(runs, TITANIC)
    labelled, awaiting = figure["data"]
    assert labelled["y"] == [1.0, 0.4, 0.0, None] and awaiting["y"] == [0.0, 0.6, 1.0, None]
    assert labelled["customdata"][1] == "4 of 10 rows labelled" and awaiting["customdata"][2] == "10 rows awaiting a label"
    assert figure["layout"]["barmode"] == "stack"
    nothing = runs.drop(columns=["metrics.rows_labelled", "metrics.labelled_share"])
    assert "no batch logged" in figures.label_coverage_figure(nothing, TITANIC)["layout"]["annotations"][0]["text"]


def test_the_latest_accuracy_says_whether_it_is_realized_or_estimated() -> None:
    runs = monitoring_frame(days=3)
    realized = analysis.latest_accuracy(runs)
    assert realized is not None and (realized.basis, realized.value, realized.rows_labelled) == ("realized", 0.6, 10)
    runs["metrics.estimated_accuracy"] = [0.9, 0.8, 0.7]
    runs["metrics.estimated_accuracy_ci_low"] = 0.5
    runs["metrics.estimated_accuracy_ci_high"] = 0.95
    runs["metrics.labelled_share"] = 1.0
    assert analysis.latest_accuracy(runs).basis == "realized"  # every row labelled: the labels win
    runs.loc["run2", ["metrics.labelled_share", "metrics.rows_labelled"]] = [0.4, 4.0]
    partly = analysis.latest_accuracy(runs)  # some labels: the estimate, with what the labels say so far
    assert (partly.basis, partly.value, partly.low, partly.high, partly.realized) == ("estimated", 0.7, 0.5, 0.95, 0.6)
    runs.loc["run2", ["metrics.labelled_share", "metrics.rows_labelled", "metrics.batch_accuracy"]] = [0.0, 0.0, np.nan]
    none_yet = analysis.latest_accuracy(runs)
    assert (none_yet.basis, none_yet.value, none_yet.realized, none_yet.rows_labelled) == ("estimated", 0.7, None, 0)
    runs.loc["run2", "metrics.estimated_accuracy"] = np.nan
    assert analysis.latest_accuracy(runs).basis == "none"
    assert analysis.headline(runs, None).latest_accuracy == analysis.latest_accuracy(runs)


def test_the_accuracy_card_names_its_basis() -> None:
    def shown(basis: str, value: float | None, labelled: int, realized: float | None) -> str:
        accuracy = analysis.BatchAccuracy("2024-03-03", basis, value, 0.5, 0.9, 30, labelled, realized)
        return text_of(overview_page.accuracy_card(accuracy))

    assert shown("realized", 0.8, 30, 0.8) == (
        "latest batch accuracy, realized 0.800 30 of 30 rows labelled; 95 % interval 0.500-0.900")
    assert shown("estimated", 0.7, 12, 0.75) == (
        "latest batch accuracy, estimated ≈ 0.700 12 of 30 rows labelled (realized 0.750 on those); "
        "from the champion's probabilities, 95 % interval 0.500-0.900")
    assert shown("estimated", 0.7, 0, None) == (
        "latest batch accuracy, estimated ≈ 0.700 no labels yet (0 of 30 rows labelled); "
        "from the champion's probabilities, 95 % interval 0.500-0.900")
    assert shown("none", None, 0, None) == "latest batch accuracy - no labels and no estimate for this batch"


def test_accuracy_figure_of_no_runs_says_so() -> None:
    figure = figures.accuracy_figure(monitoring_frame().iloc[0:0], TITANIC)
    assert "no monitoring runs yet" in figure["layout"]["annotations"][0]["text"]


def drift_frame(days: int = 6) -> pd.DataFrame:
    """Monitoring runs with every per-feature drift metric; age drifts on the last day."""
    runs = monitoring_frame(days)
    for i, feature in enumerate(TITANIC.feature_names):
        runs[f"metrics.drift_effect_{feature}"] = 0.01 * i
        runs[f"metrics.drift_padj_{feature}"] = 0.5
        runs[f"metrics.drift_p_{feature}"] = 0.2
        runs[f"metrics.drift_psi_{feature}"] = 0.02 * i
    last = runs.index[-1]
    runs.loc[last, ["metrics.drift_effect_age", "metrics.drift_padj_age", "metrics.drift_p_age"]] = [0.8, 0.0, 0.0]
    return runs


def rule_params(runs: pd.DataFrame, p_value: str = "0.001", min_effect: str | None = "0.1") -> pd.DataFrame:
    params = pd.DataFrame({"params.drift_p_value": p_value}, index=runs.index)
    if min_effect is not None:
        params["params.drift_min_effect"] = min_effect
    return params


def test_drift_history_draws_effect_sizes_with_the_rules_minimum_and_marks_drifted_points() -> None:
    runs = drift_frame()
    rule = drift_page.rule_frame(runs.index, rule_params(runs))
    flags = drift_page.drifted_flags(runs, TITANIC, rule)
    assert flags.to_numpy().sum() == 1 and flags.loc[runs.index[-1], "age"]
    figure = figures.drift_history_figure(runs, TITANIC, "effect", flags, rule["min_effect"])
    names = [t["name"] for t in figure["data"]]
    assert names == [*TITANIC.feature_names, "drifted (the rule was met)"]
    assert figure["layout"]["title"]["text"] == "titanic: effect size per feature"
    assert figure["layout"]["shapes"][0]["y0"] == 0.1 and figure["layout"]["annotations"][0]["text"] == "rule: effect >= 0.1"
    marked = figure["data"][-1]
    assert marked["x"] == ["2024-03-06"] and marked["y"] == [0.8] and marked["hovertext"] == ["age drifted on 2024-03-06"]
    json.dumps(figure)
    go.Figure(figure)


def test_drift_history_of_adjusted_p_values_has_a_log_axis_with_readable_ticks() -> None:
    runs = drift_frame()
    rule = drift_page.rule_frame(runs.index, rule_params(runs))
    figure = figures.drift_history_figure(runs, TITANIC, "padj", drift_page.drifted_flags(runs, TITANIC, rule),
                                          rule["p_threshold"])
    axis = figure["layout"]["yaxis"]
    assert axis["type"] == "log" and axis["tickmode"] == "array"
    assert axis["ticktext"][:5] == ["1", "0.1", "0.01", "0.001", "1e-4"] and axis["ticktext"][-1] == "1e-12"
    assert not any(re.search(r"[a-zµ]$", t) for t in axis["ticktext"])  # not plotly's SI "100n"
    assert axis["tickvals"] == [10.0 ** -k for k in range(0, 13)]
    assert figures.log_ticks(1e-30)[1][:3] == ["1", "0.001", "1e-6"]  # many decades: fewer ticks
    # On a log axis plotly places shapes in data units, annotations in log10 units.
    assert figure["layout"]["shapes"][0]["y0"] == 0.001 and figure["layout"]["annotations"][0]["y"] == pytest.approx(-3)
    assert figure["layout"]["annotations"][0]["text"] == "rule: adjusted p < 0.001"
    age = next(t for t in figure["data"] if t["name"] == "age")
    assert age["y"][-1] == figures.P_FLOOR and age["customdata"][-1] == "0"  # a p-value of 0 stays on the axis
    go.Figure(figure)
    assert figures.log_ticks(1e-6) == ([1.0, 0.1, 0.01, 0.001, 1e-4, 1e-5, 1e-6], ["1", "0.1", "0.01", "0.001", "1e-4", "1e-5", "1e-6"])
    assert [figures.p_value_text(v) for v in (0.5, 0.0123, 0.001, 6.27e-4, 7.84e-5, 0.0, float("nan"))] == [
        "0.5", "0.0123", "0.001", "6.27e-4", "7.84e-5", "0", "n/a"]


def test_drift_history_of_psi_keeps_its_reference_line_and_a_changed_rule_is_a_step_line() -> None:
    runs = drift_frame()
    psi = figures.drift_history_figure(runs, TITANIC, "psi")
    assert psi["layout"]["shapes"][0]["y0"] == 0.2 and "not part of the rule" in psi["layout"]["annotations"][0]["text"]
    params = rule_params(runs)
    params.loc[runs.index[3:], "params.drift_min_effect"] = "0.2"
    rule = drift_page.rule_frame(runs.index, params)
    changed = figures.drift_history_figure(runs, TITANIC, "effect", None, rule["min_effect"])
    step = changed["data"][-1]
    assert step["name"] == "the rule's threshold" and step["y"] == [0.1] * 3 + [0.2] * 3 and step["line"]["shape"] == "hv"
    assert changed["layout"]["shapes"] == []
    not_computed = figures.drift_history_figure(monitoring_frame(), TITANIC, "effect")
    assert "no batch logged the effect size" in not_computed["layout"]["annotations"][0]["text"]


def test_many_features_get_distinct_colour_blind_safe_lines() -> None:
    styles = [(s["color"], s["dash"]) for s in map(figures.feature_style, range(20))]
    assert len(set(styles)) == 20
    assert [c for c, _ in styles[:7]] == list(figures.FEATURE_COLOURS) and styles[7] == (figures.FEATURE_COLOURS[0], "dash")
    figure = figures.drift_history_figure(drift_frame(), TITANIC, "effect")
    assert len({(t["line"]["color"], t["line"]["dash"]) for t in figure["data"]}) == len(TITANIC.feature_names)


def test_old_runs_are_judged_by_their_own_rule() -> None:
    runs = drift_frame()
    old = runs.index[0]
    for feature in TITANIC.feature_names:
        runs.loc[old, [f"metrics.drift_effect_{feature}", f"metrics.drift_padj_{feature}"]] = np.nan
    runs.loc[old, "metrics.drift_p_fare"] = 1e-4
    params = rule_params(runs)
    params.loc[old, "params.drift_min_effect"] = None
    flags = drift_page.drifted_flags(runs, TITANIC, drift_page.rule_frame(runs.index, params))
    assert flags.loc[old, "fare"] and flags.loc[old].sum() == 1  # raw p below the threshold, the rule then


DRIFT_REPORT = {
    "basis": "window", "window": "2024-03-06..2024-03-08", "rows": 36.0, "rolling_window": "2024-03-01..2024-03-08",
    "rolling_rows": 96.0, "p_threshold": 0.001, "min_effect": 0.1,
    "features": [
        {"feature": "sepal_length", "test": "mwu+ks", "statistic": 0.161, "p_value": 0.852, "p_adjusted": 1.0,
         "effect": 0.283, "effect_name": "wasserstein_std", "psi": 0.793, "drifted": False, "window": "recent"},
        {"feature": "sepal_width", "test": "mwu+ks+missing", "statistic": 0.2, "p_value": 0.01, "p_adjusted": 0.03,
         "effect": 0.4, "effect_name": "missing_share", "psi": 0.5, "drifted": False, "window": "rolling"},
        {"feature": "petal_length", "test": "mwu+ks", "statistic": 0.431, "p_value": 7.84e-05, "p_adjusted": 6.27e-04,
         "effect": 1.048, "effect_name": "wasserstein_std", "psi": 5.263, "drifted": True, "window": "recent"},
    ],
}


def test_the_drift_table_puts_drifted_features_first_with_their_window() -> None:
    run = {"tags.drift_window": "2024-03-06..2024-03-08", "metrics.drift_effect_petal_width": 0.05,
           "metrics.drift_padj_petal_width": 0.9, "metrics.drift_p_petal_width": 0.8, "metrics.drift_psi_petal_width": 0.1}
    rows = drift_page.feature_rows(IRIS, DRIFT_REPORT, run, 0.001, 0.1)
    assert [r.feature for r in rows] == ["petal_length", "sepal_width", "petal_width", "sepal_length"]
    top = rows[0]
    assert (top.p_value, top.p_adjusted, top.effect, top.psi, top.drifted) == (7.84e-05, 6.27e-04, 1.048, 5.263, True)
    assert top.window == "recent 2024-03-06..2024-03-08 (3 days, 36 rows)"
    assert rows[1].window == "rolling 2024-03-01..2024-03-08 (8 days, 96 rows)"
    assert rows[2].test is None and rows[2].drifted is False  # from the run's metrics: drift.json lacks it
    table = drift_page.drift_table(rows)
    body = table.children[1].children
    assert body[0].className == "drifted" and body[0].style and not body[1].className
    assert [text_of(c) for c in body[0].children] == [
        "petal_length", "recent 2024-03-06..2024-03-08 (3 days, 36 rows)", "Mann-Whitney U + Kolmogorov-Smirnov",
        "0.431", "1.048 Wasserstein distance / reference std", "7.84e-5", "6.27e-4", "5.263", "yes"]
    assert "Fisher (missing share)" in text_of(body[1]) and "change of missing share" in text_of(body[1])
    assert text_of(body[2].children[2]) == "n/a" and text_of(body[2].children[-1]) == "no"


def test_an_old_drift_report_shows_what_it_has() -> None:
    report = {"basis": "rolling_window", "features": [
        {"feature": "petal_length", "test": "ks", "p_value": 1e-5, "psi": 0.4, "drifted": True},
        {"feature": "sepal_length", "test": "ks", "p_value": 0.3, "psi": 0.01, "drifted": False},
    ]}
    rows = drift_page.feature_rows(IRIS, report, {"metrics.drift_rows": 41.0}, 0.001, None)
    assert [r.feature for r in rows] == ["petal_length", "sepal_length"]
    assert rows[0].window == "the rolling window (41 rows)" and rows[0].effect is None and rows[0].p_adjusted is None
    cells = [text_of(c) for c in drift_page.drift_table(rows).children[1].children[0].children]
    assert cells == ["petal_length", "the rolling window (41 rows)", "Kolmogorov-Smirnov", "n/a", "n/a", "1e-5", "n/a",
                     "0.400", "yes"]
    assert drift_page.feature_rows(IRIS, None, {}) == []  # drift not computed


def test_the_drift_table_reads_a_feature_as_the_job_writes_it() -> None:
    """The job writes each feature's ``vars(FeatureDrift)`` into drift.json: the page reads
    every field back by the dataclass's names (a renamed field fails here)."""
    from dataclasses import fields

    from serverless_ml.inference.drift import FeatureDrift

    written = FeatureDrift(feature="petal_length", test="mwu+ks", statistic=0.4, p_value=1e-4, p_adjusted=2e-4,
                           effect=1.2, effect_name="wasserstein_std", psi=3.5, drifted=True, window="rolling")
    assert {f.name for f in fields(drift_page.LoggedDrift)} == {f.name for f in fields(FeatureDrift)}
    assert drift_page.LoggedDrift.of(vars(written)) == drift_page.LoggedDrift(**vars(written))
    row = drift_page.feature_rows(IRIS, {"features": [vars(written)]}, {})[0]
    assert (row.feature, row.test, row.statistic, row.p_value, row.p_adjusted, row.effect, row.effect_name, row.psi,
            row.drifted) == ("petal_length", "mwu+ks", 0.4, 1e-4, 2e-4, 1.2, "wasserstein_std", 3.5, True)
    assert row.window.startswith("rolling")


def test_the_drift_summary_and_picker_say_why_as_text() -> None:
    run = {"tags.as_of": "2024-03-08", "tags.model_version": "1",
           "tags.alerts": "accuracy alert: low | drift alert: 1 feature(s) drifted (<b>x</b> (recent))",
           "tags.not_computed": "batch per-class metrics not computed: 12 labelled rows < 20"}
    rows = drift_page.feature_rows(ODD, {"features": [{"feature": "<img src=x onerror=alert(1)>", "drifted": True}]}, run)
    parts = drift_page.run_summary(run, rows, 0.001, 0.1)
    alert = parts[0]
    assert alert.children[0].children == "drift alert: 1 feature(s) drifted (<b>x</b> (recent))"  # text, not HTML
    assert "accuracy alert" not in text_of(parts) and "per-class" not in text_of(parts)
    assert "adjusted p-value (Benjamini-Hochberg over every feature and window, the recent window weighted 3:1) is below 0.001" in text_of(parts)
    cell = drift_page.drift_table(rows).children[1].children[0].children[0]
    assert isinstance(cell, html.Td) and cell.children == "<img src=x onerror=alert(1)>"
    skipped = drift_page.run_summary(
        {"tags.not_computed": "x | drift not computed: 12 rows in the last 30 days, fewer than 30"}, [], 0.001, 0.1)
    assert text_of(skipped[0]) == "drift not computed: 12 rows in the last 30 days, fewer than 30"
    runs = monitoring_frame(3).assign(**{"tags.alert_drift": ["false", "true", "true"]})
    runs.loc["run2", "tags.as_of"] = "2024-03-02"
    labels = [o["label"] for o in drift_page.run_options(runs)]
    assert labels == ["2024-03-02 ⚠ drift (batch-2)", "2024-03-02 ⚠ drift (batch-1)", "2024-03-01"]


def test_confusion_figure_writes_counts_and_class_names() -> None:
    table = {"labels": [0, 1], "matrix": [[5, 1], [2, 3]], "rows": "actual", "columns": "predicted"}
    figure = as_dict(figures.confusion_figure(table, TITANIC, "latest batch"))
    heatmap = figure["data"][0]
    assert list(heatmap["x"]) == ["died", "survived"]
    assert np.asarray(heatmap["text"]).tolist() == [["5", "1"], ["2", "3"]]
    assert "(11 labelled rows)" in figure["layout"]["title"]["text"]  # a user trial read it as the batch's rows
    assert "not computed" in as_dict(figures.confusion_figure(None, TITANIC, "x"))["layout"]["annotations"][0]["text"]


def test_user_strings_are_escaped_in_figures() -> None:
    table = {"labels": ["<b>bold</b>", "plain & simple"], "matrix": [[1, 0], [0, 1]]}
    heatmap = as_dict(figures.confusion_figure(table, ODD, "x"))["data"][0]
    assert list(heatmap["x"]) == ["&lt;b&gt;bold&lt;/b&gt;", "plain &amp; simple"]
    rows = pd.DataFrame({"colour": ["<script>alert(1)</script>", "blue", None], "kind": ["<b>bold</b>"] * 3})
    bars = as_dict(figures.distribution_figure(rows["colour"], rows["colour"], ODD.feature("colour"), "<i>a</i>", "b"))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in list(bars["data"][0]["x"])
    assert "<i>" not in bars["layout"]["title"]["text"]


def test_distribution_figure_bins_numbers_and_bars_categories_and_small_integers() -> None:
    reference = pd.Series([1.0, 2.0, 3.0, np.nan] * 10)
    current = pd.Series([3.0, 4.0, 5.0] * 5)
    numeric = as_dict(figures.distribution_figure(reference, current, TITANIC.feature("age"), "training rows", "batch"))
    assert [t["type"] for t in numeric["data"]] == ["bar", "bar"]
    assert sum(numeric["data"][0]["y"]) == pytest.approx(0.75)  # a quarter of the reference is missing
    assert "missing: 25.0%" in numeric["layout"]["annotations"][0]["text"]
    pclass = as_dict(figures.distribution_figure(pd.Series([1, 2, 3, 3]), pd.Series([3, 3]), TITANIC.feature("pclass"), "a", "b"))
    assert list(pclass["data"][0]["x"]) == ["1", "2", "3"] and list(pclass["data"][1]["y"]) == [0, 0, 1]
    sex = as_dict(figures.distribution_figure(pd.Series(["male", "female"]), pd.Series(["male"]), TITANIC.feature("sex"), "a", "b"))
    assert list(sex["data"][0]["x"]) == ["male", "female"]


@pytest.mark.parametrize("current", [
    pd.Series([3.0] * 9 + [4.0]),  # a 10-row batch: 90 % in one bin
    pd.Series([1.0, 2.0] * 5),  # 10 % steps
    pd.Series([7.0] * 4),  # every row in one bin: 100 %
])
def test_the_distribution_chart_shows_its_tallest_bar_whole(current: pd.Series) -> None:
    references = {"age": pd.Series(np.linspace(0, 10, 200)), "pclass": pd.Series([1, 2, 3, 4, 5, 6, 7] * 30)}
    for feature, reference in references.items():
        values = current.astype(int) if feature == "pclass" else current
        figure = as_dict(figures.distribution_figure(reference, values, TITANIC.feature(feature), "training", "batch"))
        tallest = max(max(t["y"]) for t in figure["data"])
        low, high = figure["layout"]["yaxis"]["range"]
        assert low == 0 and tallest < high <= 1.2, (feature, tallest, high)


def test_the_csv_export_keeps_rows_as_shown_and_defuses_formulas() -> None:
    frame = pd.DataFrame({"key": ["=HYPERLINK(\"http://x\")", "-1", "@sum", "plain, with comma"],
                          "prediction": ["died", "+cmd", "survived", "died"], "probability": [0.9, -0.5, 0.25, 1.0],
                          "actual": ["", "died", "survived", "died"]})
    text = table_query.to_csv(frame)
    assert text.splitlines()[0] == "key,prediction,probability,actual" and text.endswith("\n")
    back = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    assert back["key"].tolist() == ["'=HYPERLINK(\"http://x\")", "-1", "'@sum", "plain, with comma"]
    assert back["prediction"].tolist() == ["died", "'+cmd", "survived", "died"]
    assert back["probability"].tolist() == ["0.9", "-0.5", "0.25", "1.0"]  # numbers stay numbers
    assert frame["key"].iloc[0] == "=HYPERLINK(\"http://x\")"  # the table itself is not changed


def test_the_navigation_marks_the_page_shown() -> None:
    names = ["overview", "confusion", "slices", "predictions", "drift", "models", "data", "predict"]
    for path, active in (("/", "overview"), ("/drift", "drift"), ("/drift/", "drift"), ("/predict", "predict"),
                         (None, "overview")):
        classes = dict(zip(names, highlight_nav(path), strict=True))
        assert classes.pop(active) == "nav-link nav-link-active", path
        assert set(classes.values()) == {"nav-link"}, path
    assert set(highlight_nav("/nowhere")) == {"nav-link"}


def test_tuning_figure_shows_each_trial_and_the_best_so_far() -> None:
    trials = pd.DataFrame({"trial_number": [0, 1, 2, 3], "state": ["COMPLETE"] * 4,
                           "val_accuracy_mean": [0.7, 0.8, 0.75, 0.85], "run_id": list("abcd")})
    figure = as_dict(figures.tuning_figure(trials, "t"))
    assert list(figure["data"][0]["y"]) == [0.7, 0.8, 0.75, 0.85]
    assert list(figure["data"][1]["y"]) == [0.7, 0.8, 0.8, 0.85]
    assert "no trials" in as_dict(figures.tuning_figure(trials.iloc[0:0], "t"))["layout"]["annotations"][0]["text"]


def test_class_distribution_tells_real_and_synthetic_rows_apart() -> None:
    rows = pd.DataFrame({"age": [20.0, 30.0, 40.0, 50.0], "survived": [0, 1, 0, 1],
                         "origin_label": ["real", "real", "synthetic", "synthetic"]})
    figure = as_dict(figures.class_distribution_figure(rows, TITANIC.feature("age"), TITANIC))
    assert [a["text"] for a in figure["layout"]["annotations"]] == ["real rows", "synthetic rows"]
    assert len(figure["data"]) == 4 and {t["name"] for t in figure["data"]} == {"died", "survived"}
    # Live rows are a panel of their own, not "synthetic"; those without a label yet are in no class.
    live = pd.concat([rows, pd.DataFrame({"age": [60.0, 70.0, 80.0], "survived": pd.array([1, None, None], dtype="Int64"),
                                          "origin_label": ["live"] * 3})], ignore_index=True)
    figure = as_dict(figures.class_distribution_figure(live, TITANIC.feature("age"), TITANIC))
    assert [a["text"] for a in figure["layout"]["annotations"]] == ["real rows", "synthetic rows", "live rows"]
    assert [list(t["x"]) for t in figure["data"][4:]] == [[], [60.0]]


def test_correlation_and_probability_figures() -> None:
    matrix = pd.DataFrame({"died": [0.5, np.nan], "survived": [-0.5, np.nan]}, index=["sex=male", "age"])
    heatmap = as_dict(figures.correlation_figure(matrix, "c"))["data"][0]
    assert np.asarray(heatmap["text"]).tolist() == [["+0.50", "-0.50"], ["", ""]]
    bars = as_dict(figures.probability_figure([0.2, 0.8], TITANIC))["data"][0]
    assert list(bars["y"]) == ["died", "survived"] and list(bars["text"]) == ["20.0%", "80.0%"]


# --- page computations ---------------------------------------------------------------------------


def champion_version(version: int) -> ModelVersion:
    # Registered "now" (wall clock): days since retrain must not depend on it.
    return ModelVersion("titanic", version, ("champion",), dt.datetime(2031, 1, 1, tzinfo=dt.timezone.utc), "r",
                        {"holdout_accuracy": "0.8324"})


def test_headline_counts_rows_batches_alerts_and_days_since_retrain_in_batch_dates() -> None:
    runs = monitoring_frame(alert_on=(3, 5))  # version 1 from 2024-03-01, version 2 from 2024-03-05
    numbers = analysis.headline(runs, champion_version(2))
    assert (numbers.rows_scored, numbers.batches, numbers.latest_batch) == (60, 6, "2024-03-06")
    assert (numbers.champion_version, numbers.champion_holdout) == (2, 0.8324)
    assert (numbers.days_since_retrain, numbers.champion_since) == (1, "2024-03-05")  # 03-05 to 03-06
    assert numbers.alerts_latest and numbers.alert_batches == 2
    assert (numbers.accuracy_alert_batches, numbers.drift_alert_batches) == (2, 2)
    # A champion promoted after the latest batch has scored nothing yet; v1 came back on 03-04.
    assert (analysis.headline(runs, champion_version(3)).days_since_retrain,
            analysis.headline(runs, champion_version(3)).champion_since) == (0, None)
    back = monitoring_frame(version_from={0: "1", 2: "2", 4: "1"})
    assert analysis.headline(back, champion_version(1)).champion_since == "2024-03-05"
    empty = analysis.headline(runs.iloc[0:0], None)
    assert (empty.rows_scored, empty.champion_version, empty.days_since_retrain) == (0, None, None)


def test_the_headline_counts_follow_the_time_window() -> None:
    runs = monitoring_frame(days=100, alert_on=(10, 80, 95), version_from={0: "1", 90: "2"})
    runs["tags.alerts"] = ["drift alert: age" if i == 95 else ("accuracy alert: x" if i in (10, 80) else "")
                           for i in range(100)]
    last30 = analysis.headline(runs, champion_version(2), 30)
    assert (last30.batches, last30.rows_scored, last30.window_days) == (30, 300, 30)
    assert (last30.alert_batches, last30.accuracy_alert_batches, last30.drift_alert_batches) == (2, 1, 1)
    assert last30.latest_batch == "2024-06-08" and last30.days_since_retrain == 9  # the whole history's
    every = analysis.headline(runs, champion_version(2), None)
    assert (every.batches, every.rows_scored, every.alert_batches) == (100, 1000, 3)


def test_alerts_are_told_apart_by_their_tags_or_their_messages() -> None:
    runs = monitoring_frame(days=5, alert_on=(1, 2, 3, 4))
    runs["tags.alerts"] = [None, "accuracy alert: <b>low</b> | drift alert: age", "drift alert: fare", None, None]
    runs["tags.alert_accuracy"] = [None, None, None, "true", "false"]
    runs["tags.alert_drift"] = [None, None, None, "false", "true"]
    kinds = analysis.alert_kinds(runs)
    assert kinds.to_dict("list") == {"accuracy": [False, True, False, True, False],
                                     "drift": [False, True, True, False, True]}
    items = analysis.alert_list(runs)
    assert [(i.as_of, i.kind) for i in items] == [
        ("2024-03-05", "drift"), ("2024-03-04", "accuracy"), ("2024-03-03", "drift"), ("2024-03-02", "accuracy"),
        ("2024-03-02", "drift")]
    assert items[0].message == "drift alert (the run wrote no message)" and items[3].message == "accuracy alert: <b>low</b>"
    assert len(analysis.alert_list(runs, limit=2)) == 2
    old = monitoring_frame(days=2, alert_on=(1,)).drop(columns=["tags.alerts"])  # alert messages not read
    assert analysis.alert_kinds(old).loc["run1"].to_dict() == {"accuracy": True, "drift": False}


# --- per-class metrics (both metric-name forms) -------------------------------------------------


def test_per_class_metrics_are_read_under_class_names_and_under_class_codes() -> None:
    assert class_metric_names(TITANIC, "rolling_recall") == {0: ("rolling_recall_died", "rolling_recall_0"),
                                                            1: ("rolling_recall_survived", "rolling_recall_1")}
    assert class_metric_names(IRIS, "predicted_share")["Setosa"] == ("predicted_share_Setosa",)  # no separate names
    assert class_metric_keys(TITANIC, "a", "b") == ("a_died", "a_0", "a_survived", "a_1", "b_died", "b_0", "b_survived", "b_1")
    runs = monitoring_frame(days=3)
    runs["metrics.rolling_recall_0"] = [0.5, 0.6, np.nan]  # runs logged with class codes
    runs["metrics.rolling_recall_1"] = [0.7, np.nan, np.nan]
    runs["metrics.rolling_recall_died"] = [np.nan, np.nan, 0.9]  # and with class names
    runs["metrics.rolling_recall_survived"] = [np.nan, 0.8, 0.4]
    recall = class_metric(runs, TITANIC, "rolling_recall")
    assert list(recall.columns) == [0, 1] and list(recall.index) == list(runs.index)
    assert recall[0].tolist() == [0.5, 0.6, 0.9] and recall[1].tolist() == [0.7, 0.8, 0.4]
    assert class_metric(runs, TITANIC, "rolling_precision").isna().all().all()  # logged by neither name


def test_class_figures_draw_each_class_in_its_colour_against_training() -> None:
    runs = monitoring_frame(days=4)
    precision = pd.DataFrame({0: [np.nan, 0.8, 0.7, 0.75], 1: [np.nan, 0.6, 0.65, 0.5]}, index=runs.index)
    recall = pd.DataFrame({0: [np.nan, 0.9, 0.85, 0.8], 1: [np.nan, 0.4, 0.45, 0.42]}, index=runs.index)
    figure = figures.class_metrics_figure(runs, precision, recall, TITANIC, "rolling window", 20)
    assert [t["name"] for t in figure["data"]] == ["died precision", "survived precision", "died recall", "survived recall"]
    assert figure["data"][0]["y"] == [None, 0.8, 0.7, 0.75] and figure["data"][3]["y"] == [None, 0.4, 0.45, 0.42]
    assert [t["line"]["dash"] for t in figure["data"]] == ["solid", "solid", "dash", "dash"]
    assert figure["data"][0]["line"]["color"] == figure["data"][2]["line"]["color"] != figure["data"][1]["line"]["color"]
    assert figure["layout"]["title"]["text"] == "precision and recall per class (rolling window)"
    go.Figure(figure)
    none = figures.class_metrics_figure(runs, precision * np.nan, recall * np.nan, TITANIC, "rolling window", 20)
    assert "from 20 labelled rows in the rolling window" in none["layout"]["annotations"][0]["text"]
    predicted = pd.DataFrame({0: [0.6, 0.7, 0.5, 0.9], 1: [0.4, 0.3, 0.5, 0.1]}, index=runs.index)
    training = pd.DataFrame({0: 0.62, 1: 0.38}, index=runs.index)
    shares = figures.class_share_figure(runs, predicted, training, TITANIC)
    assert [t["name"] for t in shares["data"]] == ["died predicted", "survived predicted", "died in training",
                                                    "survived in training"]
    assert shares["data"][3]["y"] == [0.38] * 4 and shares["data"][3]["line"]["dash"] == "dash"
    assert shares["data"][1]["line"]["color"] == shares["data"][3]["line"]["color"]
    go.Figure(shares)
    odd = figures.class_share_figure(runs, pd.DataFrame({"<b>bold</b>": 0.5}, index=runs.index),
                                     pd.DataFrame(index=runs.index), ODD)
    assert odd["data"][0]["name"] == "&lt;b&gt;bold&lt;/b&gt; predicted"


# --- data quality -----------------------------------------------------------------------------------


def quality_world() -> tuple[pd.DataFrame, pd.DataFrame, dict[str, analysis.Profile], analysis.Profile]:
    """Titanic-shaped rows: training rows 1-4; batch a (keys 5-6, model 1), batch b (keys
    7-9, model 2, trained on rows 1-2 only)."""
    rows = pd.DataFrame({
        "passenger_id": list(range(1, 10)),
        "pclass": [1, 2, 3, 3, 1, 3, 2, 2, 1],
        "sex": ["male", "female", "male", "female", "male", "female", "female", "male", "male"],
        "age": [20.0, 30.0, 40.0, 50.0, 60.0, np.nan, 35.0, 10.0, np.nan],
        "sibsp": 0, "parch": 0,
        "fare": [10.0, 20.0, 30.0, 40.0, 15.0, 100.0, 25.0, 12.0, 18.0],
        "embarked": ["S", "C", "S", "S", "Q", "S", "S", "C", None],
        "title": ["Mr", "Mrs", "Mr", "Miss", "Mr", "Mrs", "Miss", "Master", "Mr"],
        "family_size": 1,
    })
    predictions = pd.DataFrame({"passenger_id": [5, 6, 7, 8, 9], "model_version": [1, 1, 2, 2, 2],
                                "run_id": ["a", "a", "b", "b", "b"]})
    profiles = {"1": analysis.reference_profile(rows.iloc[0:4], TITANIC),
                "2": analysis.reference_profile(rows.iloc[0:2], TITANIC)}
    return rows, predictions, profiles, analysis.reference_profile(rows.iloc[0:4], TITANIC)


def test_data_quality_per_batch_against_the_training_rows_of_its_model() -> None:
    rows, predictions, profiles, default = quality_world()
    quality = analysis.data_quality(predictions, rows, TITANIC, profiles, default)
    assert list(quality.columns) == list(analysis.QUALITY_COLUMNS) and list(quality.index) == ["a", "b"]
    assert quality["rows"].tolist() == [2, 3]
    # a: 1 of 2 x 9 values missing (age of 6); b: age of 9 and embarked of 9, of 3 x 9.
    assert quality["missing_share"].tolist() == pytest.approx([1 / 18, 2 / 27])
    assert quality.at["a", "missing_detail"] == "age 50%" and quality.at["b", "missing_detail"] == "age 33%, embarked 33%"
    # a, against rows 1-4: age 60 (> 50) and fare 100 (> 40), of 11 numeric values present (6 features x 2, age of 6 missing).
    # b, against rows 1-2: pclass 1 of 9 is in [1, 2]; age 35 (> 30) and 10 (< 20); fare 25 (> 20), 12 and 18 in [10, 20].
    assert quality["out_of_range_share"].tolist() == pytest.approx([2 / 11, 3 / 17])
    assert quality.at["a", "out_of_range_detail"] == "age 1, fare 1" and quality.at["b", "out_of_range_detail"] == "age 2, fare 1"
    # a: embarked Q is new to rows 1-4. b: rows 1-2 had neither Miss nor Master.
    assert quality["unseen_categories"].tolist() == [1, 2]
    assert quality.at["a", "unseen_detail"] == "embarked=Q" and quality.at["b", "unseen_detail"] == "title=Master, title=Miss"
    # A model without a profile of its own is compared with the default (rows 1-4).
    fallback = analysis.data_quality(predictions, rows, TITANIC, {}, default)
    assert fallback.at["b", "unseen_categories"] == 1 and fallback.at["b", "unseen_detail"] == "title=Master"
    empty = analysis.data_quality(predictions.iloc[0:0], rows, TITANIC, profiles, default)
    assert empty.empty and list(empty.columns) == list(analysis.QUALITY_COLUMNS)


def test_the_data_quality_figure_has_four_panels_on_one_date_axis() -> None:
    rows, predictions, profiles, default = quality_world()
    runs = monitoring_frame(days=3).rename(index={"run0": "a", "run1": "b", "run2": "c"})  # c: no predictions
    quality = analysis.data_quality(predictions, rows, TITANIC, profiles, default)
    figure = figures.data_quality_figure(runs, quality, TITANIC)
    assert [t["yaxis"] for t in figure["data"]] == ["y", "y2", "y3", "y4"] and {t["xaxis"] for t in figure["data"]} == {"x"}
    assert [figure["layout"][a]["title"]["text"] for a in ("yaxis", "yaxis2", "yaxis3", "yaxis4")] == [
        "rows", "missing", "out of range", "unseen"]
    domains = [figure["layout"][a]["domain"] for a in ("yaxis", "yaxis2", "yaxis3", "yaxis4")]
    assert all(low < high for low, high in domains) and all(a[0] > b[1] for a, b in itertools.pairwise(domains))  # stacked
    assert figure["data"][0]["y"] == [2, 3, None] and figure["data"][3]["y"] == [1, 2, None]
    assert figure["data"][1]["y"] == [pytest.approx(1 / 18, abs=1e-4), pytest.approx(2 / 27, abs=1e-4), None]
    assert figure["data"][3]["customdata"][1] == " (title=Master, title=Miss)"
    assert figure["layout"]["yaxis2"]["tickformat"] == ".0%" and figure["layout"]["yaxis2"]["range"][1] >= 2 / 27
    assert figure["layout"]["yaxis4"]["dtick"] == 1  # whole counts: no tick at 0.5
    go.Figure(figure)
    json.dumps(figure)


def test_latest_prediction_reads_the_latest_runs_tags_as_classes() -> None:
    latest = analysis.latest_prediction(monitoring_frame(), TITANIC)
    assert latest is not None
    assert (latest.key, latest.prediction, latest.actual, latest.correct) == ("105", 1, 0, False)
    assert latest.probability == 0.75
    runs = monitoring_frame()
    runs["tags.latest_actual"] = "None"
    assert analysis.latest_prediction(runs, TITANIC).correct is None


def test_windows_and_version_changes() -> None:
    runs = monitoring_frame(days=100, version_from={0: "1", 40: "2", 90: "3"})
    assert len(analysis.within_window(runs, 30)) == 30
    assert len(analysis.within_window(runs, None)) == 100
    changes = analysis.version_changes(runs)
    assert list(changes["model_version"]) == ["2", "3"]


def test_feature_summary_and_correlations_from_the_feature_group() -> None:
    rows = pd.DataFrame({
        "age": [10.0, np.nan, 30.0, 40.0], "sex": ["male", "female", "male", None], "pclass": [1, 2, 3, 1],
        "fare": [1.0, 2.0, 3.0, 4.0], "embarked": ["S", None, "C", "Q"], "sibsp": [0, 1, 0, 1], "parch": [0, 0, 1, 1],
        "title": ["Mr", "Mrs", "Mr", "Miss"], "family_size": [1, 2, 2, 3], "survived": [0, 1, 0, 1],
        "origin": ["backfill", "backfill", "synthetic", "synthetic"],
    })
    summary = analysis.feature_summary(rows, TITANIC).set_index("feature")
    assert summary.loc["age", "missing (real)"] == "1 (50.0%)"
    assert summary.loc["age", "missing (synthetic)"] == "0 (0.0%)"
    assert summary.loc["sex", "schema"] == "one of male, female; required"
    correlations = analysis.label_correlations(rows, TITANIC)
    assert correlations.loc["sex=female", "survived"] > 0 and correlations.loc["sex=female", "died"] < 0
    assert "sex=<missing>" in correlations.index
    assert len(analysis.select_origin(rows, "real")) == 2 and len(analysis.select_origin(rows, "synthetic")) == 2
    assert list(summary.columns) == ["type", "schema", "missing (real)", "missing (synthetic)", "values", "description"]


def test_live_rows_are_summarised_as_live_and_rows_without_a_label_do_not_count_in_correlations() -> None:
    labelled = pd.DataFrame({
        "age": [10.0, 20.0, 30.0, 40.0], "sex": ["male", "female", "male", "female"], "pclass": [1, 2, 3, 1],
        "fare": [1.0, 2.0, 3.0, 4.0], "embarked": ["S", "C", "C", "Q"], "sibsp": [0, 1, 0, 1], "parch": [0, 0, 1, 1],
        "title": ["Mr", "Mrs", "Mr", "Miss"], "family_size": [1, 2, 2, 3], "survived": [0, 1, 0, 1],
        "origin": ["backfill"] * 4,
    })
    # Live rows: one missing age; the two without a label yet are all male (they would
    # pull sex=male towards "died" if a missing label counted as "not survived").
    live = labelled.assign(age=[np.nan, 21.0, 31.0, 41.0], sex=["female", "female", "male", "male"],
                           survived=[1, 0, None, None], origin="live")
    rows = pd.concat([labelled, live], ignore_index=True)
    summary = analysis.feature_summary(rows, TITANIC).set_index("feature")
    assert list(summary.columns) == ["type", "schema", "missing (real)", "missing (live)", "values", "description"]
    assert summary.loc["age", "missing (live)"] == "1 (25.0%)" and summary.loc["age", "missing (real)"] == "0 (0.0%)"
    assert len(analysis.select_origin(rows, "live")) == 4 and analysis.select_origin(rows, "synthetic").empty
    assert len(analysis.select_origin(rows, "all")) == 8
    got = analysis.label_correlations(rows, TITANIC)
    want = analysis.label_correlations(rows[rows["survived"].notna()], TITANIC)
    pd.testing.assert_frame_equal(got, want)
    assert got.loc["sex=female", "survived"] == pytest.approx(
        np.corrcoef(np.array([0, 1, 0, 1, 1, 1]), np.array([0, 1, 0, 1, 1, 0]))[0, 1])


# --- the predict form ------------------------------------------------------------------------------


VALID = {"pclass": 3, "sex": "male", "age": 22.0, "fare": 7.25, "embarked": "S", "sibsp": 1, "parch": 0,
         "title": "Mr", "family_size": 2}


def test_a_valid_form_gives_the_model_input_in_schema_order_and_types() -> None:
    result = forms.validate_form(TITANIC, VALID)
    assert result.ok and result.row is not None
    frame = forms.model_input(TITANIC, result.row)
    assert list(frame.columns) == TITANIC.feature_names
    assert frame["pclass"].dtype == np.int64 and frame["age"].dtype == np.float64


@pytest.mark.parametrize(
    ("feature", "value", "message"),
    [
        ("pclass", 4, "4 is outside the allowed range (1 to 3)"),
        ("pclass", 2.5, "2.5 is not a whole number"),
        ("pclass", None, "required: enter a number (1 to 3)"),
        ("fare", "abc", "'abc' is not a number"),
        ("fare", float("inf"), "enter a finite number"),
        ("age", -1, "outside the allowed range (0 to 100)"),
        ("sex", "robot", "'robot' is not one of male, female"),
        ("sex", None, "required: choose one of male, female"),
        ("title", forms.MISSING, "required"),
    ],
)
def test_values_outside_the_schema_get_a_message_not_an_exception(feature: str, value: object, message: str) -> None:
    result = forms.validate_form(TITANIC, {**VALID, feature: value})
    assert not result.ok and result.row is None
    assert message in result.errors[feature]
    assert set(result.errors) == {feature}


def test_nullable_features_may_be_left_empty() -> None:
    result = forms.validate_form(TITANIC, {**VALID, "age": None, "embarked": forms.MISSING})
    assert result.ok and result.row is not None
    frame = forms.model_input(TITANIC, result.row)
    assert np.isnan(frame.loc[0, "age"]) and frame.loc[0, "embarked"] is None


def test_a_spec_only_dataset_gets_its_form_from_the_spec() -> None:
    defaults = forms.default_values(ODD, None)
    assert defaults == {"size": 5.0, "count": 3, "colour": "<script>alert(1)</script>", "note": None}
    options = forms.category_options(ODD.feature("colour"))
    assert options[-1] == {"label": "(missing)", "value": forms.MISSING}
    result = forms.validate_form(ODD, {"size": 1.5, "count": None, "colour": "blue", "note": "anything"})
    assert result.ok and result.row == {"size": 1.5, "count": None, "colour": "blue", "note": "anything"}
    assert "required" in forms.validate_form(ODD, {"size": 1, "count": 1, "colour": "blue", "note": ""}).errors["note"]


def test_default_values_come_from_real_rows() -> None:
    rows = pd.DataFrame({name: [1.0, 2.0, 9.0] for name in IRIS.feature_names} | {"origin": ["backfill", "backfill", "synthetic"]})
    assert forms.default_values(IRIS, rows)["sepal_length"] == 1.5


# --- the predictions table -----------------------------------------------------------------------


def test_filters_sort_and_pages_on_the_server() -> None:
    frame = pd.DataFrame({
        "key": ["1", "2", "3", "4"], "event_time": ["2024-03-01 00:00", "2024-03-02 00:00", "2024-03-02 00:00", "2024-03-03 00:00"],
        "prediction": ["died", "survived", "died", "survived"], "probability": [0.9, 0.6, 0.55, 0.99],
        "actual": ["died", "died", "", "survived"], "correct": ["yes", "no", "", "yes"], "model_version": [1, 1, 2, 2],
    })
    columns, numeric = list(frame.columns), table_query.NUMERIC_COLUMNS
    terms = table_query.parse_filter('{probability} s> 0.58 && {prediction} contains "surv"', columns, numeric)
    assert list(table_query.apply_filter(frame, terms)["key"]) == ["2", "4"]
    assert list(table_query.apply_filter(frame, table_query.parse_filter("{correct} = no", columns, numeric))["key"]) == ["2"]
    assert list(table_query.apply_filter(frame, table_query.parse_filter("{actual} is blank", columns, numeric))["key"]) == ["3"]
    assert list(table_query.apply_filter(frame, table_query.parse_filter("{model_version} = 2", columns, numeric))["key"]) == ["3", "4"]
    assert list(table_query.apply_filter(frame, table_query.parse_filter("{event_time} datestartswith 2024-03-02", columns, numeric))["key"]) == ["2", "3"]
    ordered = table_query.apply_sort(frame, [{"column_id": "model_version", "direction": "desc"},
                                            {"column_id": "probability", "direction": "asc"}])
    assert list(ordered["key"]) == ["3", "4", "2", "1"]
    page, pages = table_query.page_of(frame, 1, 3)
    assert list(page["key"]) == ["4"] and pages == 2
    assert table_query.page_of(frame, 9, 3)[0]["key"].tolist() == ["4"]  # past the end: the last page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("{nope} = 1", "unknown column 'nope'"),
        ("{probability} > high", "'high' is not a number"),
        ("{a} = 1 || {b} = 2", "only filters joined with &&"),
        ("probability > 1", "cannot read the filter"),
    ],
)
def test_bad_filters_are_refused_with_a_message(query: str, message: str) -> None:
    with pytest.raises(table_query.FilterError, match=re.escape(message)):
        table_query.parse_filter(query, ["probability", "a", "b"], ["probability"])


def test_display_predictions_shows_class_names_newest_first() -> None:
    predictions = pd.DataFrame({
        "passenger_id": [7, 8], "model_version": [1, 1],
        "event_time": pd.to_datetime(["2024-03-01", "2024-03-02"], utc=True),
        "prediction": [1, 0], "probability": [0.81234, 0.7], "actual": pd.array([0, pd.NA], dtype="Int64"),
        "correct": pd.array([False, pd.NA], dtype="boolean"),
    })
    shown = table_query.display_predictions(predictions, TITANIC)
    assert shown.to_dict("records") == [
        {"key": "8", "event_time": "2024-03-02 00:00", "prediction": "died", "probability": 0.7,
         "actual": "awaiting label", "correct": "", "model_version": 1},
        {"key": "7", "event_time": "2024-03-01 00:00", "prediction": "survived", "probability": 0.8123,
         "actual": "died", "correct": "no", "model_version": 1},
    ]
    assert table_query.awaiting_count(shown) == 1
    terms = table_query.parse_filter(table_query.AWAITING_FILTER, list(shown.columns))
    assert table_query.apply_filter(shown, terms)["key"].tolist() == ["8"]


# --- icons, runs frames, URLs, CLI ----------------------------------------------------------------


def test_every_class_has_its_own_icon_drawn_locally() -> None:
    for spec in (IRIS, TITANIC, ODD):
        svgs = [icons.class_icon_svg(spec, c) for c in spec.classes]
        assert len(set(svgs)) == len(svgs)
        for svg in svgs:
            assert svg.startswith("<svg") and "href" not in svg and "http://www.w3.org/2000/svg" in svg
            assert "https://" not in svg
    odd = icons.class_icon_svg(ODD, "<b>bold</b>")
    assert "<b>" not in odd and "&lt;b&gt;" in odd
    uri = icons.class_icon_uri(IRIS, "Setosa")
    assert base64.b64decode(uri.split(",", 1)[1]).decode().startswith("<svg")
    assert "unknown class" in icons.class_icon_svg(IRIS, "Rosa")


def test_runs_frames_have_one_row_per_run_and_prefixed_columns() -> None:
    runs = pd.DataFrame([("a", "n", "FINISHED", 1, 2), ("b", "m", "FINISHED", 3, 4)],
                        columns=["run_id", "run_name", "status", "start_time", "end_time"])
    metrics = pd.DataFrame([("a", "acc", 0.5)], columns=["run_id", "key", "value"])
    tags = pd.DataFrame([("b", "as_of", "2024-01-01")], columns=["run_id", "key", "value"])
    frame = runs_frame(runs, metrics, tags, ["acc", "other"], ["as_of"])
    assert list(frame.columns) == ["run_name", "status", "start_time", "end_time", "metrics.acc", "metrics.other", "tags.as_of"]
    assert frame.loc["a", "metrics.acc"] == 0.5 and np.isnan(frame.loc["b", "metrics.acc"])
    assert frame.loc["a", "tags.as_of"] is None and frame.loc["b", "tags.as_of"] == "2024-01-01"
    empty = assemble_runs(runs.iloc[0:0], pd.DataFrame(), pd.DataFrame(), ["acc"], ["as_of"])
    assert empty.empty and "metrics.acc" in empty


def test_the_site_opens_sqlite_read_only() -> None:
    assert sqlite_path("sqlite:////tmp/x/mlflow.db") is not None
    assert read_only_sql_url("sqlite:////tmp/x/mlflow.db") == "sqlite:///file:/tmp/x/mlflow.db?mode=ro&uri=true"
    assert read_only_sql_url("postgresql://u:p@h/db") == "postgresql://u:p@h/db"


def test_the_dashboard_command_states_the_sites_defaults() -> None:
    text = CliRunner().invoke(cli, ["dashboard", "--help"]).output
    flat = " ".join(text.split())
    assert f"default: {DEFAULT_HOST}" in flat
    assert f"default: {DEFAULT_PORT}" in flat
    assert f"default: {DEFAULT_REFRESH_S:g}" in flat
    assert DEFAULT_HOST == "127.0.0.1"  # safe default: this machine only


def test_sml_dashboard_serves_on_this_machine_only_with_debug_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dash

    calls: list[dict] = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dash.Dash, "run", lambda self, **kwargs: calls.append({"app": self, **kwargs}))
    # The default port may be taken on this machine (a demo site): the check that it is
    # free has its own tests in the bad-input catalogue.
    import serverless_ml.cli as cli_module

    checked: list[tuple[str, int]] = []
    monkeypatch.setattr(cli_module, "check_can_listen", lambda host, port: checked.append((host, port)))
    spec = tmp_path / "odd.yaml"
    spec.write_text("name: odd\nlabel: kind\nclasses: [a, b]\nfeatures:\n  size: {type: double}\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["dashboard", "--dataset", str(spec), "--refresh", "5"])
    assert result.exit_code == 0, result.output
    (call,) = calls
    assert (call["host"], call["port"], call["debug"]) == (DEFAULT_HOST, DEFAULT_PORT, False)
    assert checked == [(DEFAULT_HOST, DEFAULT_PORT)]
    site = call["app"].server.config["SML_SITE"]
    assert list(site.datasets) == ["iris", "titanic", "odd"] and site.refresh_s == 5
    assert f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/" in result.output
    assert list(tmp_path.iterdir()) == [spec]  # starting the site created no database or store


def test_json_depth_counts_brackets_outside_strings_only() -> None:
    import json

    from monitoring_app.hardening import json_depth

    cases = {
        json.dumps({"a": [1, {"b": "[[[[{{"}]}): 3,
        json.dumps({"x": 'a\\"[b', "y": "\\"}): 1,
        json.dumps([[[[]]]]): 4,
        json.dumps("plain [text"): 0,
    }
    for text, depth in cases.items():
        assert json_depth(text.encode()) == depth, text
    assert json_depth(b"[" * 100_000) == 100_000  # no recursion, however deep


def test_an_integer_beyond_float_gets_the_fields_message() -> None:
    from monitoring_app.forms import validate_form
    from serverless_ml.datasets import get_dataset

    spec = get_dataset("iris")
    values = {f.name: 1.0 for f in spec.features}
    values[spec.features[0].name] = 10**400
    result = validate_form(spec, values)
    assert not result.ok and "enter a finite number" in result.errors[spec.features[0].name]
