"""The Slices page in Chromium (issue 18, item 6): a monitoring run's accuracy per slice,
with "not computed" cells for slices of too few rows and the worst slice highlighted, as
the run's ``slices.json`` and worst-slice tag say."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import pytest

from monitoring_app import create_app, ids
from serverless_ml import registry
from serverless_ml.datasets import get_dataset
from serverless_ml.feature_store.local import LocalFeatureStore

pytestmark = pytest.mark.browser

ROWS = 120


def test_the_slice_table_shows_not_computed_cells_and_highlights_the_worst_slice(
    page: Any, own_site_world: Any, serve: Any, settle: Any, screenshot: Any, world_dates: dict[str, Any],
) -> None:
    tab, problems = page
    world = own_site_world
    # A batch large enough for some slices to be computed (the world's batches are 30 rows).
    run_id = world_dates["score_day"](get_dataset("titanic"), LocalFeatureStore(world.folder / "store"), world.settings,
                                      world_dates["titanic_days"], ROWS)
    mlflow.set_tracking_uri(None)
    client = mlflow.MlflowClient(world.tracking_uri)
    tags = client.get_run(run_id).data.tags
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(client.download_artifacts(run_id, registry.SLICES_ARTIFACT, tmp)).read_text())
    url = serve(create_app(world.settings, refresh_s=3600))
    tab.goto(f"{url}/slices?dataset=titanic&run={run_id}")
    settle(tab)
    rendered = tab.locator(f"#{ids.SLICES_TABLE} tbody tr")
    rendered.first.wait_for()
    shown = [row.locator("td").all_inner_texts() for row in rendered.all()]
    assert len(shown) == len(table["slices"])
    # Slices below the minimum show "not computed", never a number; the others a number.
    minimum = table["plan"]["min_rows"]
    assert any(s["rows"] < minimum for s in table["slices"]), "a batch of 120 rows has small slices"
    for cells, item in zip(shown, table["slices"], strict=True):
        assert cells[:4] == [item["feature"], item["slice"], f"{item['rows']:,}", f"{item['labelled']:,}"], cells
        assert (cells[4] == "not computed") == (item["labelled"] < minimum), cells
        assert (cells[5] == "not computed") == (item["rows"] < minimum), cells
        if item["realized"] is not None:
            assert cells[4].startswith(f"{item['realized']:.3f} ("), cells
    # The worst slice (the run's tag) is the one row highlighted.
    worst = rendered.locator("xpath=self::*[contains(@class, 'slice-worst')]")
    assert worst.count() == 1
    assert f"{tags[registry.WORST_SLICE_TAG]}" == ": ".join(worst.locator("td").all_inner_texts()[:2])
    assert tab.locator(f"#{ids.SLICES_WORST}").inner_text().startswith(f"Worst slice: {tags[registry.WORST_SLICE_TAG]}, ")
    screenshot(tab, "titanic-slices", docs=True)
    # A world batch of 30 rows: every slice has fewer rows than the minimum but the one
    # holding them all, if any; the page says what its table says.
    experiment = client.get_experiment_by_name(registry.monitoring_experiment("titanic"))
    older = next(r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id != run_id)
    tab.goto(f"{url}/slices?dataset=titanic&run={older.info.run_id}")
    settle(tab)
    line = tab.locator(f"#{ids.SLICES_WORST}").inner_text()
    worst = older.data.tags.get(registry.WORST_SLICE_TAG)
    assert line.startswith(f"Worst slice: {worst}, ") if worst else line == "No worst slice: no slice has 30 rows."
    assert tab.locator(".notice-error").count() == 0
    assert problems.all() == []
