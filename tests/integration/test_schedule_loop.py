"""The loop that closes itself, with the scheduler's real jobs on a fake clock
(``sml schedule --retrain-on-alert``): a drifted batch raises an alert, a retrain follows
and registers a challenger (the champion stays), a second alert within the cooldown does
not retrain again, and the next batch is scored by the challenger in the shadow and judged
by the live rule (``--promote live``)."""

from __future__ import annotations

import datetime as dt

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from serverless_ml import registry
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.schedule import ScheduleOptions, pipeline_jobs
from serverless_ml.tracking import configure_tracking
from worlds import noon_of, trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
DAY = dt.date(2024, 3, 1)


def test_an_alert_retrains_a_challenger_that_the_next_batches_judge_live(world) -> None:  # noqa: ANN001
    store, settings = world
    now = [noon_of(DAY)]
    options = ScheduleOptions(retrain_on_alert=True, retrain_trials=1, retrain_cooldown_h=36)
    jobs = {job.name: job for job in pipeline_jobs(["titanic"], settings, options, lambda: now[0], configure_tracking(settings))}
    drift = parse_drift("age+30,fare*4", SPEC)

    add_daily_rows(SPEC, store, DAY, n=60, seed=0, drift=drift)
    first = jobs["infer"].action(noon_of(DAY))
    assert "retrained on alert: registered version 2 as challenger; not promoted" in first, first
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("titanic", registry.CHAMPION).version) == "1"
    assert str(client.get_model_version_by_alias("titanic", registry.CHALLENGER).version) == "2"

    day2 = DAY + dt.timedelta(days=1)
    now[0] = noon_of(day2)
    add_daily_rows(SPEC, store, day2, n=60, seed=1, drift=drift)
    second = jobs["infer"].action(noon_of(day2))
    assert "retrain on alert skipped: the last retrain ran at 2024-03-01T12:00:00+00:00 (cooldown 36 h)" in second
    assert "live promotion:" in second  # the challenger scored this batch, and the live rule judged it
    runs = mlflow.search_runs(experiment_names=[registry.monitoring_experiment("titanic")]).set_index("tags.as_of")
    judged = runs.loc[day2.isoformat()]
    assert judged[f"tags.{registry.CHALLENGER_VERSION_TAG}"] == "2"
    assert judged[f"tags.{registry.LIVE_PROMOTION_DECISION_TAG}"] in {"promoted", "not promoted"}
    assert judged[f"metrics.{registry.PAIRED_ROWS_METRIC}"] == 60
    assert pd.isna(runs.loc[DAY.isoformat(), f"tags.{registry.CHALLENGER_VERSION_TAG}"])  # no challenger yet then
