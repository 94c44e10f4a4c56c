"""The site refreshes itself: a monitoring run logged while the page is open shows up after
the refresh interval, without a reload or a restart."""

from __future__ import annotations

import time
from typing import Any

import mlflow
import pytest

from monitoring_app import create_app, ids
from serverless_ml.datasets import get_dataset
from serverless_ml.feature_store.local import LocalFeatureStore

pytestmark = pytest.mark.browser

REFRESH_S = 2.0


def test_a_new_monitoring_run_appears_after_the_refresh_interval(
    page: Any, own_site_world: Any, serve: Any, settle: Any, screenshot: Any, world_dates: dict[str, Any],
) -> None:
    tab, problems = page
    world = own_site_world
    url = serve(create_app(world.settings, refresh_s=REFRESH_S, cache_ttl_s=REFRESH_S / 2))
    days, rows = world_dates["iris_days"], world_dates["iris_rows"]
    tab.goto(f"{url}/?dataset=iris")
    settle(tab)
    headline = tab.locator(f"#{ids.HEADLINE_ROWS}")
    assert f"in {days} batches" in headline.inner_text()
    assert world_dates["day"](days - 1).isoformat() in tab.locator(f"#{ids.HEADLINE_LATEST}").inner_text()
    time.sleep(REFRESH_S * 1.5)  # a few refreshes with nothing new: the page stays as it is
    assert f"in {days} batches" in headline.inner_text()

    logged = time.monotonic()
    world_dates["score_day"](get_dataset("iris"), LocalFeatureStore(world.folder / "store"), world.settings, days, rows)
    mlflow.set_tracking_uri(None)
    new_day = world_dates["day"](days).isoformat()
    tab.locator(f"#{ids.HEADLINE_LATEST}", has_text=new_day).wait_for(timeout=30_000)
    waited = time.monotonic() - logged
    assert f"in {days + 1} batches" in headline.inner_text()
    assert f"{(days + 1) * rows:,}" in headline.inner_text()
    tab.wait_for_function("day => document.querySelector('.js-plotly-plot').textContent.includes(day)", arg=new_day)
    screenshot(tab, "iris-overview-after-refresh")
    assert waited < REFRESH_S * 2 + 10  # one or two refresh intervals, plus a slow machine's page update
    assert problems.all() == []
