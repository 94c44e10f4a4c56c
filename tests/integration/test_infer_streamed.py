"""``sml infer`` on a batch of many chunks (the path a batch of millions of rows takes:
read in batches, scored chunk by chunk in a pipeline of threads, predictions staged and
committed once) gives what the one-chunk path gives on the same rows, in one commit."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from serverless_ml import registry
from serverless_ml.datasets import get_dataset
from serverless_ml.pipelines import infer as infer_module
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.infer import InferOptions, infer
from worlds import copy_world, noon_of, trained_template  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
START = dt.date(2024, 3, 1)
QUIET = InferOptions(figures=False)


def _day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def test_a_batch_of_many_chunks_gives_the_figures_and_predictions_of_one_chunk(
    trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    found = {}
    for label, chunk_rows in (("one chunk", infer_module.CHUNK_ROWS), ("chunks of 7 rows", 7)):
        folder = tmp_path / label.replace(" ", "_")
        folder.mkdir()
        store, settings = copy_world(trained_template, folder, monkeypatch)
        for i in range(3):
            add_daily_rows(SPEC, store, _day(i), n=20, seed=i)
        infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(0)), noon_of(_day(0)))  # the history
        target = store.get_feature_group("titanic_predictions", 1)
        version = target.data_version()
        with monkeypatch.context() as patch:
            patch.setattr(infer_module, "CHUNK_ROWS", chunk_rows)
            report = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(2)), noon_of(_day(2)))
        run = MlflowClient().get_run(report.run_id)
        assert run.info.status == "FINISHED"
        assert target.data_version() == (version or 0) + 1  # the batch landed in one commit
        staged = sorted(p.name for p in target.table_path.glob("staged-*.parquet"))
        assert bool(staged) == (chunk_rows == 7)  # the many-chunk batch was staged, nothing else left
        predictions = target.read()
        found[label] = (report, run, predictions[predictions["run_id"] == report.run_id].drop(columns="run_id"))

    (one, one_run, one_rows), (many, many_run, many_rows) = found.values()
    assert one.rows_scored == many.rows_scored == 40
    assert one.metrics[registry.DRIFT_ROWS_METRIC] > 0 and one_run.data.tags[registry.DRIFT_BASIS_TAG] != "none"
    assert set(many.metrics) == set(one.metrics)
    for name, value in one.metrics.items():
        assert many.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert many.alerts == one.alerts and many.notes == one.notes
    pd.testing.assert_frame_equal(many_rows.reset_index(drop=True), one_rows.reset_index(drop=True))
    digests = [r.inputs.dataset_inputs[0].dataset.digest for r in (one_run, many_run)]
    assert digests[0] == digests[1]
    tags = (registry.DRIFT_BASIS_TAG, registry.DRIFT_WINDOW_TAG, registry.DRIFT_WINDOW_ROLLING_TAG, registry.LATEST_KEY_TAG,
            registry.ACCURACY_BASIS_TAG)
    assert {t: many_run.data.tags.get(t) for t in tags} == {t: one_run.data.tags.get(t) for t in tags}
