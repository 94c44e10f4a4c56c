"""Every page of the monitoring site in Chromium, for Iris and Titanic: it loads, shows its
content and logs no console error; the predictor answers valid input with a class and
invalid input with a message; dataset strings are shown as text, never as HTML."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import pytest

from monitoring_app import create_app, ids

pytestmark = pytest.mark.browser

# page path -> (file name, what must be on it once it has loaded, plots it draws)
PAGES = {
    "/": ("overview", "Latest prediction", 4),
    "/confusion": ("confusion", "since promotion", 3),
    "/slices": ("slices", "A slice's realized accuracy needs", 0),
    "/predictions": ("predictions", "Type in a column's filter cell", 0),
    "/drift": ("drift", "per feature", 2),
    "/models": ("models", "Holdout metrics", 1),
    "/data": ("data", "Correlation with the label", 2),
    "/predict": ("predict", "The champion, version", 0),
}


@pytest.fixture(scope="module")
def site(site_world: Any, serve: Any) -> str:
    """The site over the session's world, with the spec-only dataset, served on a free port."""
    app = create_app(site_world.settings, datasets=[site_world.shapes_spec], refresh_s=3600,
                     mlflow_ui_url="http://127.0.0.1:5000")
    return serve(app)


@pytest.mark.parametrize("dataset", ["titanic", "iris"])
@pytest.mark.parametrize("path", list(PAGES))
def test_every_page_loads_without_console_errors(page: Any, site: str, settle: Any, screenshot: Any, path: str, dataset: str) -> None:
    tab, problems = page
    name, expected, plots = PAGES[path]
    tab.goto(f"{site}{path}?dataset={dataset}")
    settle(tab)
    tab.get_by_text(expected).first.wait_for()
    # Graphs are drawn after Dash's callbacks, once plotly.js has loaded: wait for them.
    tab.wait_for_function(
        "n => [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length >= n",
        arg=plots,
    )
    assert tab.locator(".notice-error").count() == 0, tab.locator(".notice-error").all_inner_texts()
    assert tab.locator(".dataset-picker").inner_text().strip().startswith(dataset)
    if path == "/predictions":
        tab.locator(f"#{ids.PREDICTIONS_COUNT}").wait_for()  # the first page came back from the server
        tab.locator(".dash-spreadsheet tbody tr").nth(5).wait_for()
    screenshot(tab, f"{dataset}-{name}", docs=dataset == "titanic")
    assert problems.all() == []


def test_the_overview_marks_alerts_and_the_retrain(page: Any, site: str, settle: Any, world_dates: dict[str, Any]) -> None:
    tab, problems = page
    tab.goto(f"{site}/?dataset=titanic")
    settle(tab)
    tab.locator(".js-plotly-plot .legend").first.wait_for()
    rows = world_dates["titanic_days"] * world_dates["titanic_rows"]
    assert f"{rows:,}" in tab.locator(f"#{ids.HEADLINE_ROWS}").inner_text()
    assert "version 2" in tab.locator(f"#{ids.HEADLINE_CHAMPION}").inner_text()
    assert "model v2" in tab.locator(".js-plotly-plot").first.text_content()
    legend = tab.locator(".js-plotly-plot .legend").first.text_content()
    assert "drift alert" in legend and "champion holdout accuracy" in legend
    # The drift alert's message is on the page, not only in a hover box.
    drift_day = world_dates["day"](world_dates["drift_day"]).isoformat()
    alerts = tab.locator(f"#{ids.OVERVIEW_ALERTS}")
    drift_item = alerts.locator("li", has_text=drift_day).filter(has=tab.locator(".alert-kind-drift"))
    assert drift_item.count() == 1 and {"age", "fare"} <= set(re.findall(r"[a-z_]+", drift_item.inner_text()))
    assert drift_item.is_visible()
    # Days since retrain in batch dates: version 2 scored from the retrain day to the last day.
    retrain = world_dates["day"](world_dates["retrain_day"])
    days = world_dates["titanic_days"] - 1 - world_dates["retrain_day"]
    assert tab.locator(f"#{ids.HEADLINE_RETRAIN}").inner_text().split("\n")[:3] == [
        "DAYS SINCE RETRAIN", str(days), f"in batch dates: v2 has scored since {retrain.isoformat()}"]
    assert tab.locator(f"#{ids.OVERVIEW_LATEST} img").count() == 2  # predicted and actual, drawn by the site
    assert problems.all() == []


def test_the_overview_shows_per_class_figures_and_data_quality(page: Any, site: str, settle: Any, screenshot: Any) -> None:
    tab, problems = page
    tab.goto(f"{site}/?dataset=titanic")
    settle(tab)
    for graph in (ids.OVERVIEW_CLASS_METRICS, ids.OVERVIEW_CLASS_SHARES, ids.OVERVIEW_QUALITY):
        tab.locator(f"#{graph} .main-svg").first.wait_for()
    per_class = tab.locator(f"#{ids.OVERVIEW_CLASS_METRICS} .legend").text_content()
    assert all(f"{c} {m}" in per_class for c in ("died", "survived") for m in ("precision", "recall"))
    shares = tab.locator(f"#{ids.OVERVIEW_CLASS_SHARES} .legend").text_content()
    assert all(f"{c} {m}" in shares for c in ("died", "survived") for m in ("predicted", "in training"))
    quality = tab.locator(f"#{ids.OVERVIEW_QUALITY}")
    titles = quality.locator(".g-ytitle, [class^='g-y'][class$='title']").all_text_contents()
    assert titles == ["rows", "missing", "out of range", "unseen"], titles
    # Six batches of 30 rows: one bar each in the rows panel.
    assert quality.locator(".barlayer .point").count() >= 6
    screenshot(tab, "titanic-overview-full")
    assert problems.all() == []


def test_the_overview_shows_an_estimate_in_a_band_while_labels_are_missing(
    page: Any, site: str, settle: Any, screenshot: Any, world_dates: dict[str, Any]
) -> None:
    tab, problems = page
    tab.goto(f"{site}/?dataset=iris")
    settle(tab)
    graph = tab.locator(f"#{ids.OVERVIEW_GRAPH}")
    graph.locator(".legend").wait_for()
    legend = graph.locator(".legend").text_content()
    for name in ("estimated accuracy (95 % band)", "estimated (no labels yet)", "batch accuracy (realized)",
                 "rolling accuracy (realized)"):
        assert name in legend, legend
    # The band is drawn: a filled shape with an area, under the points.
    box = graph.locator(".scatterlayer .fills path").first.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 1
    # The latest batch (live rows, no label yet) is estimated, and the headline says so.
    card = tab.locator(f"#{ids.HEADLINE_ACCURACY}").inner_text()
    rows = world_dates["iris_rows"]
    assert card.startswith("LATEST BATCH ACCURACY, ESTIMATED\n≈ 0.") and f"no labels yet (0 of {rows} rows labelled)" in card
    # The six cards sit in one row (the accuracy card's text wraps instead of widening it).
    tops = tab.locator(f"#{ids.OVERVIEW_HEADLINE} .card").evaluate_all("cards => cards.map(c => c.offsetTop)")
    assert len(tops) == 6 and len(set(tops)) == 1, tops
    labels = tab.locator(f"#{ids.OVERVIEW_LABELS}")
    labels.locator(".legend").wait_for()
    assert "labelled" in labels.locator(".legend").text_content()
    assert labels.locator(".barlayer .point").count() >= world_dates["iris_days"]  # a bar per labelled batch at least
    screenshot(tab, "iris-overview-estimated")
    assert problems.all() == []


def test_the_predictions_table_shows_and_filters_the_rows_awaiting_a_label(
    page: Any, site: str, settle: Any, screenshot: Any, world_dates: dict[str, Any]
) -> None:
    tab, problems = page
    tab.goto(f"{site}/predictions?dataset=iris")
    settle(tab)
    rows, days = world_dates["iris_rows"], world_dates["iris_days"]
    count = tab.locator(f"#{ids.PREDICTIONS_COUNT}")
    count.wait_for()
    assert count.inner_text() == f"{rows * days} of {rows * days} predictions · {rows} awaiting a label"
    actual = tab.locator(".dash-spreadsheet tbody td[data-dash-column='actual']")
    actual.first.wait_for()
    assert actual.first.inner_text() == "awaiting label"  # the newest rows are the live ones
    tab.get_by_role("button", name="Show rows awaiting a label").click()
    count.filter(has_text=re.compile(rf"^{rows} of ")).wait_for()
    assert set(actual.all_inner_texts()) == {"awaiting label"} and actual.count() == rows
    # The table's own filter cell shows the filter, so it can be seen and cleared.
    cell = tab.locator("th.dash-filter[data-dash-column='actual'] input[type='text']")
    assert "awaiting label" in cell.input_value()
    screenshot(tab, "iris-predictions-awaiting")
    cell.fill("")
    cell.press("Enter")
    count.filter(has_text=re.compile(rf"^{rows * days} of ")).wait_for()
    assert problems.all() == []


def test_the_time_window_drives_the_cards(page: Any, site: str, settle: Any, world_dates: dict[str, Any]) -> None:
    tab, problems = page
    tab.goto(f"{site}/?dataset=titanic")
    settle(tab)
    rows = tab.locator(f"#{ids.HEADLINE_ROWS}")
    assert rows.locator(".card-label").inner_text().lower() == "rows scored"
    tab.get_by_text("30 days", exact=True).click()
    tab.locator(f"#{ids.HEADLINE_ROWS}", has_text="last 30 days").wait_for()
    assert f"in {world_dates['titanic_days']} batches" in rows.inner_text()  # all six are within 30 days
    assert "last 30 days" in tab.locator(f"#{ids.HEADLINE_ALERTS}").inner_text().lower()
    tab.get_by_text("all", exact=True).click()
    tab.wait_for_function("id => !document.getElementById(id).textContent.includes('last 30 days')", arg=ids.HEADLINE_ROWS)
    assert problems.all() == []


def test_the_navigation_highlights_the_page_shown(page: Any, site: str, settle: Any) -> None:
    tab, problems = page
    tab.goto(f"{site}/drift?dataset=titanic")
    settle(tab)
    active = tab.locator(".nav-link-active")
    active.first.wait_for()
    assert active.all_inner_texts() == ["Drift"]
    tab.get_by_role("link", name="Models").click()
    tab.wait_for_url(re.compile(r"/models\?dataset=titanic$"))
    tab.locator(".nav-link-active", has_text="Models").wait_for()
    assert active.all_inner_texts() == ["Models"]
    background = tab.locator(".nav-link-active").evaluate("e => getComputedStyle(e).backgroundColor")
    other = tab.get_by_role("link", name="Drift").evaluate("e => getComputedStyle(e).backgroundColor")
    assert background != other  # the mark is visible, not just a class name
    assert problems.all() == []


def test_the_filtered_predictions_download_as_csv(page: Any, site: str, settle: Any, tmp_path: Any) -> None:
    tab, problems = page
    tab.goto(f"{site}/predictions?dataset=titanic")
    settle(tab)
    count = tab.locator(f"#{ids.PREDICTIONS_COUNT}")
    count.wait_for()
    total = int(count.inner_text().split(" of ")[1].split()[0].replace(",", ""))
    prediction_filter = tab.locator("th.dash-filter[data-dash-column='prediction'] input[type='text']")
    prediction_filter.fill("survived")
    prediction_filter.press("Enter")
    tab.locator(f"#{ids.PREDICTIONS_COUNT}", has_text=re.compile(r"^\d[\d,]* of ")).wait_for()
    tab.wait_for_function(
        "([id, total]) => { const t = document.getElementById(id).textContent; return !t.startsWith(total + ' of '); }",
        arg=[ids.PREDICTIONS_COUNT, f"{total:,}"],
    )
    kept = int(count.inner_text().split(" of ")[0].replace(",", ""))
    assert 0 < kept < total
    with tab.expect_download() as info:
        tab.get_by_role("button", name="Download CSV").click()
    download = info.value
    assert download.suggested_filename == "titanic-predictions.csv"
    path = tmp_path / "predictions.csv"
    download.save_as(path)
    table = pd.read_csv(path)
    assert len(table) == kept and set(table["prediction"]) == {"survived"}
    assert list(table.columns) == ["key", "event_time", "prediction", "probability", "actual", "correct", "model_version"]
    assert problems.all() == []


def test_the_predictor_answers_valid_input_and_explains_invalid_input(page: Any, site: str, settle: Any, screenshot: Any) -> None:
    tab, problems = page
    tab.goto(f"{site}/predict?dataset=titanic")
    settle(tab)
    tab.get_by_role("button", name="Predict").click()
    answer = tab.locator(f"#{ids.PREDICT_ANSWER}")
    answer.wait_for()
    assert re.search(r"The champion \(version 2\) says\s+(died|survived)\s+with probability \d+\.\d%", answer.inner_text())
    tab.locator(f"#{ids.PREDICT_PROBABILITIES} .main-svg").first.wait_for()  # the probabilities, drawn
    screenshot(tab, "titanic-predict-answer", docs=True)

    age = tab.locator(".field", has_text="age").locator("input")
    age.fill("150")
    fare = tab.locator(".field", has_text="fare").locator("input")
    fare.fill("")
    tab.get_by_role("button", name="Predict").click()
    tab.get_by_text("150 is outside the allowed range (0 to 100)").wait_for()
    assert "required: enter a number (0 to 1000)" in tab.locator(".field", has_text="fare").inner_text()
    assert "2 value(s) outside the schema" in tab.locator(".result").inner_text()
    assert tab.locator(f"#{ids.PREDICT_ANSWER}").count() == 0
    screenshot(tab, "titanic-predict-invalid")
    assert problems.all() == []


def test_a_spec_only_dataset_gets_a_form_and_an_answer_with_its_strings_as_text(
    page: Any, site: str, settle: Any, world_dates: dict[str, Any]
) -> None:
    tab, problems = page
    tab.goto(f"{site}/predict?dataset=shapes")
    settle(tab)
    assert tab.locator(".field").count() == 3
    colour = tab.locator(".field", has_text="colour")
    assert any(value in colour.inner_text() for value in world_dates["shapes_colours"])  # as typed, not as HTML
    colour.locator(".dash-dropdown").click()
    for value in world_dates["shapes_colours"]:
        tab.get_by_role("option", name=value, exact=True).wait_for()
    tab.get_by_role("option", name="blue & green", exact=True).click()
    tab.get_by_role("button", name="Predict").click()
    tab.locator(f"#{ids.PREDICT_ANSWER}").wait_for()
    assert re.search(r"says\s+(triangle|square)", tab.locator(f"#{ids.PREDICT_ANSWER}").inner_text())
    assert tab.evaluate("() => window.__pwned") is None  # the <img onerror> category never ran
    assert tab.locator("main b, main img[src='x']").count() == 0
    tab.goto(f"{site}/data?dataset=shapes")
    settle(tab)
    assert "Shapes <i>drawn</i> by hand & measured" in tab.locator("main").inner_text()
    assert tab.locator("main i").count() == 0
    assert tab.evaluate("() => window.__pwned") is None
    assert problems.all() == []


def test_the_drift_page_explains_the_drift_alert_of_a_chosen_batch(
    page: Any, site: str, settle: Any, screenshot: Any, world_dates: dict[str, Any]
) -> None:
    tab, problems = page
    tab.goto(f"{site}/drift?dataset=titanic")
    settle(tab)
    drift_day = world_dates["day"](world_dates["drift_day"]).isoformat()
    tab.locator(f"#{ids.DRIFT_RUN}").click()
    tab.get_by_role("option", name=f"{drift_day} ⚠ drift", exact=True).click()
    tab.locator(f"#{ids.DRIFT_ALERT}", has_text=f"recent days {drift_day}").wait_for()
    table = tab.locator(f"#{ids.DRIFT_TABLE}")
    drifted = table.locator("tbody tr.drifted")
    assert {drifted.nth(i).locator("td").first.inner_text() for i in range(drifted.count())} >= {"age", "fare"}
    assert table.locator("tbody tr").first.locator("td").last.inner_text() == "yes"
    assert f"recent {drift_day} (1 day, {world_dates['titanic_rows']} rows)" in drifted.first.inner_text()
    assert table.locator("thead").inner_text().split("\t")[:5] == ["Feature", "Window", "Test", "Statistic", "Effect size"]
    history = tab.locator(f"#{ids.DRIFT_HISTORY_GRAPH}")
    history.locator(".legend").wait_for()
    assert "drifted (the rule was met)" in history.locator(".legend").text_content()
    assert "rule: effect >= 0.1" in history.text_content()
    screenshot(tab, "titanic-drift-alert")
    tab.get_by_text("adjusted p-value", exact=True).click()
    tab.get_by_text("titanic: adjusted p-value per feature").wait_for()
    ticks = history.locator(".ytick text").all_text_contents()
    assert ticks[:4] == ["1", "0.1", "0.01", "0.001"]
    assert all(re.fullmatch(r"1|0\.0*1|1e-\d+", t) for t in ticks), ticks  # not plotly's SI "100n"
    # The rule's threshold is drawn (a dashed line across the plot, at 0.001).
    assert history.locator(".shapelayer path").count() >= 1
    screenshot(tab, "titanic-drift-adjusted-p")
    assert problems.all() == []


TALLEST_BAR = """id => {
    const plot = document.querySelector('#' + id + ' .js-plotly-plot') || document.getElementById(id);
    const tallest = Math.max(...plot._fullData.flatMap(t => Array.from(t.y || [])));
    return [tallest, plot._fullLayout.yaxis.range[1], plot._fullLayout.title.text];
}"""


def test_the_drift_distribution_compares_the_window_chosen(
    page: Any, site: str, settle: Any, screenshot: Any, world_dates: dict[str, Any]
) -> None:
    tab, problems = page
    drift_day = world_dates["day"](world_dates["drift_day"]).isoformat()
    tab.goto(f"{site}/drift?dataset=titanic&feature=fare")
    settle(tab)
    tab.locator(f"#{ids.DRIFT_RUN}").click()
    tab.get_by_role("option", name=f"{drift_day} ⚠ drift", exact=True).click()
    graph = tab.locator(f"#{ids.DRIFT_DISTRIBUTION_GRAPH}")
    graph.locator(".gtitle", has_text=f"recent window {drift_day}").wait_for()  # judged on its recent window
    seen = {}
    for label, expected in (("the batch", f"fare: batch {drift_day}"), ("the rolling window", "fare: rolling window"),
                            ("the recent window", f"fare: recent window {drift_day}")):
        tab.get_by_text(label, exact=True).click()
        graph.locator(".gtitle", has_text=expected).wait_for()
        tallest, top, title = tab.evaluate(TALLEST_BAR, ids.DRIFT_DISTRIBUTION_GRAPH)
        assert 0 < tallest < top, (label, tallest, top)  # the tallest bar is drawn whole
        seen[label] = title
    assert "rolling window 2024-03-01.." in seen["the rolling window"]  # older days than the recent window
    screenshot(tab, "titanic-drift-rolling-window")
    assert problems.all() == []


def test_choosing_a_dataset_keeps_the_page_and_puts_the_dataset_in_the_url(page: Any, site: str, settle: Any) -> None:
    tab, problems = page
    tab.goto(f"{site}/drift?dataset=titanic")
    settle(tab)
    tab.locator(".dataset-picker").click()
    tab.get_by_role("option", name="iris", exact=True).click()
    tab.wait_for_url(re.compile(r"/drift\?dataset=iris$"))
    settle(tab)
    tab.get_by_text("iris: effect size per feature").wait_for()
    tab.get_by_role("link", name="Models").click()
    tab.wait_for_url(re.compile(r"/models\?dataset=iris$"))
    settle(tab)
    assert "iris" in tab.locator(".dataset-picker").inner_text()
    assert problems.all() == []


def test_an_unknown_dataset_in_the_url_is_a_message(page: Any, site: str, settle: Any) -> None:
    tab, problems = page
    tab.goto(f"{site}/?dataset=%3Cimg%20src%3Dx%20onerror%3Dwindow.__pwned%3D1%3E")
    settle(tab)
    tab.get_by_text("unknown dataset '<img src=x onerror=window.__pwned=1>'").wait_for()
    assert tab.evaluate("() => window.__pwned") is None
    assert problems.all() == []


def test_the_data_page_calls_live_rows_live_and_leaves_rows_without_a_label_out_of_correlations(
    page: Any, site: str, settle: Any, world_dates: dict[str, Any]
) -> None:
    tab, problems = page
    tab.goto(f"{site}/data?dataset=iris")
    settle(tab)
    headers = tab.locator(f"#{ids.DATA_SUMMARY} th").all_inner_texts()
    # The iris world has backfilled, synthetic (simulated days) and live rows, each told apart.
    assert headers[3:6] == ["missing (real)", "missing (synthetic)", "missing (live)"], headers
    live_rows = world_dates["iris_rows"]
    assert f"{live_rows:,} live" in tab.get_by_text("rows in feature group").inner_text()
    # Its live rows have no label yet: no correlation is drawn from them.
    tab.get_by_label("live rows").check()
    tab.locator(f"#{ids.DATA_CORRELATION}").get_by_text("no labelled live rows yet").wait_for()
    tab.get_by_label("all rows").check()
    graph = tab.locator(f"#{ids.DATA_CORRELATION} .gtitle")
    graph.filter(has_text=f"{live_rows:,} without a label yet left out").wait_for()
    assert problems.all() == []
