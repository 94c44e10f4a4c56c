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
from served import record_served
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


@pytest.mark.parametrize("chunk_rows", [infer_module.CHUNK_ROWS, 7], ids=["one chunk", "chunks of 7 rows"])
def test_served_rows_taken_in_by_a_batch_give_the_figures_of_scoring_them(
    trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_rows: int  # noqa: F811
) -> None:
    """The same day's rows, 15 of them served before the batch: the run's figures equal
    those of a batch that scores all of them (but ``rows_served``), and the served rows'
    predictions stay as served, now naming the run (in one commit for one chunk; a
    staged batch names them in a second)."""
    found = {}
    for label in ("scored", "served"):
        folder = tmp_path / label
        folder.mkdir()
        store, settings = copy_world(trained_template, folder, monkeypatch)
        for i in range(3):
            add_daily_rows(SPEC, store, _day(i), n=20, seed=i)
        infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(0)), noon_of(_day(0)))  # the history
        target = store.get_feature_group("titanic_predictions", 1)
        served_keys: list[int] = []
        if label == "served":
            day2 = store.get_feature_group("titanic", 1).read()
            day2 = day2[day2["event_time"].dt.date == _day(2)]
            served_keys = sorted(day2[SPEC.primary_key].tolist())[:15]
            record_served(SPEC, store, settings.state_dir, served_keys, pd.Timestamp(noon_of(_day(2))) - pd.Timedelta(hours=1), 1)
        before = target.data_version()
        with monkeypatch.context() as patch:
            patch.setattr(infer_module, "CHUNK_ROWS", chunk_rows)
            report = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(2)), noon_of(_day(2)))
        run = MlflowClient().get_run(report.run_id)
        assert run.info.status == "FINISHED"
        staged_with_served = chunk_rows == 7 and label == "served"
        assert target.data_version() == before + (2 if staged_with_served else 1)
        predictions = target.read()
        found[label] = (report, run, predictions, served_keys)

    (scored, scored_run, scored_rows, _), (served, served_run, served_rows, keys) = found.values()
    assert scored.rows_scored == served.rows_scored == 40 and (scored.rows_served, served.rows_served) == (0, 15)
    assert served.metrics.pop(registry.ROWS_SERVED_METRIC) == 15 and scored.metrics.pop(registry.ROWS_SERVED_METRIC) == 0
    assert set(served.metrics) == set(scored.metrics)
    for name, value in scored.metrics.items():
        assert served.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
    assert served.alerts == scored.alerts and served.notes == scored.notes
    digests = [r.inputs.dataset_inputs[0].dataset.digest for r in (scored_run, served_run)]
    assert digests[0] == digests[1]
    batch = [frame[frame["run_id"] == run.info.run_id].drop(columns=["run_id", "scored_at"]).sort_values(SPEC.primary_key)
             .reset_index(drop=True) for frame, run in ((scored_rows, scored_run), (served_rows, served_run))]
    pd.testing.assert_frame_equal(batch[1], batch[0], check_exact=False, rtol=1e-12)
    taken = served_rows.set_index(SPEC.primary_key).loc[keys]
    assert (taken["scored_at"] == pd.Timestamp(noon_of(_day(2))) - pd.Timedelta(hours=1)).all()  # the request's time
    assert taken["actual"].notna().all()  # the stored rows' labels
