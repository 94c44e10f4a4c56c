"""Accuracy per slice on real runs (issue 18, item 6): ``sml infer`` logs the slice table
(``slices.json``), the worst slice's tag and metric, with edges from the champion's
training rows and figures equal to a direct pandas computation on the predictions and
the store's rows; late labels (``sml labels``) recompute the table's realized part.

The world: Titanic trained once per session (``tests/worlds.py``), copied per test.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from serverless_ml import registry
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import Source
from serverless_ml.datasets.synthetic import generate_rows
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, LIVE_ORIGIN, ORIGIN_COLUMN
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.inference import slices
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.labels import LabelOptions, attach_labels
from slice_direct import assert_matches_direct
from worlds import noon_of, trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
DAY = dt.date(2024, 3, 1)
ROWS = 150


def slice_table_of(client: MlflowClient, run_id: str) -> slices.SliceTable:
    with tempfile.TemporaryDirectory() as tmp:
        payload = json.loads(Path(client.download_artifacts(run_id, registry.SLICES_ARTIFACT, tmp)).read_text())
    table = slices.SliceTable.from_json(payload)
    assert table is not None
    return table


def training_rows(store: LocalFeatureStore, client: MlflowClient) -> pd.DataFrame:
    """The champion's training rows (its training run's keys, train split)."""
    version = client.get_model_version_by_alias("titanic", "champion")
    keys = registry.version_training_keys(version, SPEC.primary_key, client)
    assert keys is not None
    rows = store.get_feature_group("titanic", 1).read()
    return rows[rows[SPEC.primary_key].isin(keys.train)]


def batch_rows(store: LocalFeatureStore, run_id: str) -> pd.DataFrame:
    """The run's predictions next to their feature rows, as the direct computation reads them."""
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    batch = predictions[predictions["run_id"] == run_id].reset_index(drop=True)
    features = store.get_feature_group("titanic", 1).read().set_index(SPEC.primary_key)
    values = features.loc[batch[SPEC.primary_key], SPEC.feature_names].reset_index(drop=True)
    return pd.concat([values, batch[["actual", "prediction", "probability"]]], axis=1)


def assert_run_shows_its_table(store: LocalFeatureStore, client: MlflowClient, run_id: str) -> slices.SliceTable:
    run = client.get_run(run_id)
    table = slice_table_of(client, run_id)
    # The bins were cut at the champion's training rows, the same plan a direct call gives.
    assert table.plan == slices.plan_slices(SPEC, training_rows(store, client))
    # The estimates map each probability as the run's estimate did (its logged a and b).
    metrics = run.data.metrics
    rows = batch_rows(store, run_id)
    if metrics[registry.ESTIMATE_RECALIBRATION_ROWS_METRIC] > 0:
        a, b = metrics[registry.ESTIMATE_RECALIBRATION_A_METRIC], metrics[registry.ESTIMATE_RECALIBRATION_B_METRIC]
        p = rows["probability"].to_numpy(dtype=float).clip(1e-6, 1 - 1e-6)
        rows = rows.assign(probability=1 / (1 + np.exp(-(a + b * np.log(p / (1 - p))))))
    assert_matches_direct(table.plan, table, rows)
    worst = table.worst
    assert worst is not None
    assert run.data.tags[registry.WORST_SLICE_TAG] == worst.name
    assert run.data.tags[registry.WORST_SLICE_BASIS_TAG] == worst.basis
    assert run.data.metrics[registry.WORST_SLICE_ACCURACY_METRIC] == pytest.approx(worst.accuracy, rel=1e-12)
    return table


def test_sml_infer_logs_the_slice_table_and_names_the_worst_slice(world: Any, run_cli: Any) -> None:
    store, settings = world
    add_daily_rows(SPEC, store, DAY, n=ROWS, seed=3)
    code, out, err = run_cli("infer", "--dataset", "titanic", "--as-of", DAY.isoformat(), "--no-figures",
                             store_dir=store.root, env={"MLFLOW_TRACKING_URI": settings.tracking_uri})
    assert code == 0, err
    assert f"scored {ROWS} rows" in out
    client = MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(registry.monitoring_experiment("titanic"))
    (run,) = client.search_runs([experiment.experiment_id])
    table = assert_run_shows_its_table(store, client, run.info.run_id)
    # Labelled synthetic rows: realized where a slice has enough of them, "not computed"
    # (no number) where it has not.
    assert table.worst is not None and table.worst.basis == slices.REALIZED
    small = [s for s in table.slices if s.rows < table.plan.min_rows]
    assert small and all(s.realized is None and s.estimated is None for s in small)
    assert sum(s.rows for s in table.slices if s.feature == "sex") == ROWS


def test_late_labels_recompute_the_realized_slice_figures(world: Any) -> None:
    store, settings = world
    # A labelled day first: the live batch's estimates, its slices' too, are recalibrated on it.
    add_daily_rows(SPEC, store, DAY - dt.timedelta(days=1), n=ROWS, seed=5)
    infer(SPEC, store, settings, InferOptions(as_of=DAY - dt.timedelta(days=1), figures=False),
          noon_of(DAY - dt.timedelta(days=1)))
    group = store.get_feature_group("titanic", 1)
    stored = group.read()
    rows = generate_rows(stored[stored[ORIGIN_COLUMN] == BACKFILL_ORIGIN], SPEC, DAY, ROWS, 11)
    truth = rows[[SPEC.primary_key, SPEC.label]].copy()
    rows[SPEC.label] = pd.array([pd.NA] * len(rows), dtype="Int64")
    rows[ORIGIN_COLUMN] = LIVE_ORIGIN
    group.insert(rows, wait=True)
    report = infer(SPEC, store, settings, InferOptions(as_of=DAY, figures=False), noon_of(DAY))
    mlflow.set_tracking_uri(None)
    assert report.run_id is not None
    client = MlflowClient(settings.tracking_uri)
    assert client.get_run(report.run_id).data.metrics[registry.ESTIMATE_RECALIBRATION_ROWS_METRIC] == ROWS
    before = assert_run_shows_its_table(store, client, report.run_id)
    assert all(s.realized is None and s.labelled == 0 for s in before.slices)
    assert before.worst is not None and before.worst.basis == slices.ESTIMATED

    labels = pd.DataFrame({"PassengerId": truth[SPEC.primary_key].astype(str), "Survived": truth[SPEC.label].astype(str)},
                          dtype=object)
    attach_labels(SPEC, store, settings, Source(labels, "labels.csv", True), LabelOptions(),
                  dt.datetime(2024, 3, 5, tzinfo=dt.timezone.utc))
    mlflow.set_tracking_uri(None)
    after = assert_run_shows_its_table(store, client, report.run_id)
    assert after.worst is not None and after.worst.basis == slices.REALIZED
    assert sum(s.labelled for s in after.slices if s.feature == "sex") == ROWS
    # The estimated part is the one the probabilities gave when the batch was scored.
    def estimates(table: slices.SliceTable) -> list[float]:
        return [-1.0 if s.estimated is None else s.estimated for s in table.slices]

    assert estimates(after) == pytest.approx(estimates(before), rel=1e-12)
    assert any(s.estimated is not None for s in after.slices)


def test_a_spec_naming_an_unknown_slice_feature_is_refused_in_one_line(run_cli: Any, tmp_path: Path) -> None:
    spec = tmp_path / "gauges.yaml"
    spec.write_text("name: gauges\nlabel: state\nclasses: [ok, worn]\nfeatures:\n  pressure: {type: double}\n"
                    "slices: [pressure, temperature]\n")
    code, out, err = run_cli("features", "--dataset", str(spec), "--source", str(tmp_path / "none.csv"))
    assert code != 0 and out == ""
    assert err.strip().splitlines() == [
        f"error: {spec}: slices: unknown feature(s) 'temperature' (features: pressure)"], err
    assert not (tmp_path / "store").exists() and not list(tmp_path.glob("*.db"))
