"""The site's data-access module against a real tracking database and feature store.

One Iris world is built per module (backfill, a two-trial training run, three days of
batch inference) in a template folder; each test reads a copy, so tests that add runs
or rows do not disturb the others.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from monitoring_app.data_access import SiteData
from monitoring_app.run_readers import RestRunReader, SqlRunReader
from monitoring_app.tracking_access import TrackingUnavailable
from serverless_ml.datasets import get_dataset
from serverless_ml.errors import NotFoundError
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.settings import Settings, resolve_settings
from serverless_ml.registry import monitoring_experiment, training_experiment
from worlds import IRIS_DAYS, IRIS_ROWS, IRIS_START, add_iris_batch, copy_world, iris_day, iris_monitored_template  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

SPEC = get_dataset("iris")
START = IRIS_START
DAYS = IRIS_DAYS
ROWS = IRIS_ROWS
MONITORING = monitoring_experiment("iris")


day = iris_day


def noon(when: dt.date) -> dt.datetime:
    return dt.datetime.combine(when, dt.time(12), tzinfo=dt.timezone.utc)


def add_batch(store: LocalFeatureStore, settings: Settings, i: int, rows: int = ROWS) -> str:
    """Rows for day ``i`` and the batch-inference run that scores them; returns its id."""
    return add_iris_batch(store, settings, i, rows)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(iris_monitored_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalFeatureStore, Settings]]:
    monkeypatch.chdir(tmp_path)
    yield copy_world(iris_monitored_template, tmp_path, monkeypatch)
    mlflow.set_tracking_uri(None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def data(world: tuple[LocalFeatureStore, Settings], clock: Clock) -> Iterator[SiteData]:
    site_data = SiteData(world[1], ttl_s=5.0, monotonic=clock)
    yield site_data
    site_data.close()


METRICS = ("batch_accuracy", "rolling_accuracy", "rows_scored", "drift_share", "no_such_metric")
TAGS = ("as_of", "model_version", "alert", "latest_key")


def test_runs_hold_exactly_the_asked_metrics_and_tags_with_mlflows_values(data: SiteData) -> None:
    frame = data.runs(MONITORING, METRICS, TAGS)
    assert frame is not None
    assert list(frame.columns) == ["run_name", "status", "start_time", "end_time",
                                   *(f"metrics.{m}" for m in METRICS), *(f"tags.{t}" for t in TAGS)]
    naive = mlflow.search_runs(experiment_names=[MONITORING]).set_index("run_id")
    assert sorted(frame.index) == sorted(naive.index)
    for metric in METRICS[:-1]:
        column = f"metrics.{metric}"
        np.testing.assert_allclose(frame.loc[naive.index, column].to_numpy(float), naive[column].to_numpy(float))
    assert frame["metrics.no_such_metric"].isna().all()
    for tag in TAGS:
        assert list(frame.loc[naive.index, f"tags.{tag}"]) == list(naive[f"tags.{tag}"])
    assert set(frame["status"]) == {"FINISHED"}


def test_the_rest_reader_reads_the_same_runs(data: SiteData, world: tuple[LocalFeatureStore, Settings]) -> None:
    experiment_id = data.experiment_id(MONITORING)
    rest = RestRunReader(MlflowClient(tracking_uri=world[1].tracking_uri)).read(experiment_id, METRICS, TAGS)
    sql = SqlRunReader(world[1].tracking_uri).read(experiment_id, METRICS, TAGS)
    pd.testing.assert_frame_equal(rest.sort_index(), sql.sort_index(), check_dtype=False)


def test_monitoring_runs_come_oldest_first_with_their_batch_date(data: SiteData) -> None:
    runs = data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",))
    assert list(runs["as_of_text"]) == [day(i).isoformat() for i in range(DAYS)]
    assert list(runs["as_of"]) == [pd.Timestamp(day(i)) for i in range(DAYS)]


def test_the_cache_reuses_revalidates_and_reads_only_new_runs(
    data: SiteData, world: tuple[LocalFeatureStore, Settings], clock: Clock
) -> None:
    store, settings = world
    first = data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",))
    assert data.stats["runs_read"] == 1
    assert data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",)) is first
    assert data.stats["runs_read"] == 1 and data.stats["runs_hit"] == 1

    clock.now += 10  # past the time-to-live, nothing new: the signature says so
    assert data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",)) is first
    assert data.stats["runs_revalidated"] == 1 and data.stats["runs_read"] == 1

    new_run = add_batch(store, settings, DAYS)
    assert new_run not in data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",)).index  # within the TTL
    clock.now += 10
    fresh = data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",))
    assert new_run in fresh.index and len(fresh) == DAYS + 1
    assert data.stats["runs_incremental"] == 1 and data.stats["runs_read"] == 1  # only the new run was read
    assert fresh.loc[new_run, "metrics.batch_accuracy"] == MlflowClient().get_run(new_run).data.metrics["batch_accuracy"]

    MlflowClient().delete_run(new_run)
    clock.now += 10
    after = data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",))
    assert new_run not in after.index and len(after) == DAYS  # a deletion shows in the count: read again
    assert data.stats["runs_read"] == 2


def relabel(run_id: str, accuracy: float, when: str) -> None:
    """What ``sml labels`` writes on a batch's own run when labels arrive: its realized
    figures and the time of the update, in one batch call (the run's times stay as they are)."""
    from mlflow.entities import Metric, RunTag

    run = MlflowClient().get_run(run_id)
    MlflowClient().log_batch(run_id, metrics=[Metric("batch_accuracy", accuracy, run.info.start_time, 1),
                                              Metric("labelled_share", 1.0, run.info.start_time, 1)],
                             tags=[RunTag("labels_updated_at", when)])


@pytest.mark.parametrize("reader", ["sql", "rest"])
def test_late_labels_on_an_older_run_are_read_again(
    data: SiteData, world: tuple[LocalFeatureStore, Settings], clock: Clock, reader: str
) -> None:
    if reader == "rest":
        data.connection._reader = RestRunReader(MlflowClient(tracking_uri=world[1].tracking_uri))
    wanted = ("batch_accuracy", "labelled_share")
    first = data.monitoring_runs(SPEC, wanted, ("alert",))
    oldest = str(first.index[0])
    before = data.runs_signature(MONITORING)
    relabel(oldest, 0.25, "2024-04-01T00:00:00+00:00")
    clock.now += 10
    assert data.runs_signature(MONITORING) != before  # no run was added or finished: the labels say it
    fresh = data.monitoring_runs(SPEC, wanted, ("alert",))
    assert fresh.loc[oldest, "metrics.batch_accuracy"] == 0.25 and len(fresh) == DAYS
    relabel(oldest, 0.5, "2024-04-02T00:00:00+00:00")  # a second round of labels for the same run
    clock.now += 10
    assert data.monitoring_runs(SPEC, wanted, ("alert",)).loc[oldest, "metrics.batch_accuracy"] == 0.5


def test_run_values_reads_only_the_runs_asked_for_and_keeps_them(data: SiteData) -> None:
    runs = data.monitoring_runs(SPEC, (), ())
    latest = str(runs.index[-1])
    values = data.run_values(MONITORING, [latest], ("latest_probability",), ("latest_key", "alerts"))
    run = MlflowClient().get_run(latest)
    assert values.loc[latest, "metrics.latest_probability"] == run.data.metrics["latest_probability"]
    assert values.loc[latest, "tags.latest_key"] == run.data.tags["latest_key"]
    assert data.stats["values_read"] == 1
    again = data.run_values(MONITORING, [latest], ("latest_probability",), ("latest_key", "alerts"))
    pd.testing.assert_frame_equal(values, again)
    assert data.stats["values_read"] == 1  # a finished run's values are read once


def test_run_params_of_every_run_with_the_rest_reader_agreeing(
    data: SiteData, world: tuple[LocalFeatureStore, Settings], clock: Clock
) -> None:
    keys = ("drift_p_value", "drift_min_effect", "no_such_param")
    params = data.run_params(MONITORING, keys)
    naive = mlflow.search_runs(experiment_names=[MONITORING]).set_index("run_id")
    assert sorted(params.index) == sorted(naive.index)
    assert list(params.columns) == [f"params.{k}" for k in keys]
    for key in keys[:2]:
        assert list(params.loc[naive.index, f"params.{key}"]) == list(naive[f"params.{key}"])
    assert params["params.no_such_param"].isna().all()
    experiment_id = data.experiment_id(MONITORING)
    rest = RestRunReader(MlflowClient(tracking_uri=world[1].tracking_uri)).read_params(experiment_id, keys)
    pd.testing.assert_frame_equal(rest.sort_index(), params.sort_index())
    clock.now += 10
    assert data.run_params(MONITORING, keys) is params and data.stats["params_read"] == 1  # no new run: kept
    new_run = add_batch(*world, DAYS)
    clock.now += 10
    assert new_run in data.run_params(MONITORING, keys).index and data.stats["params_read"] == 2


def test_no_monitoring_runs_yet_is_a_message_that_names_the_command(tmp_path: Path, mlflow_template_db: Path) -> None:
    shutil.copyfile(mlflow_template_db, tmp_path / "mlflow.db")
    data = SiteData(resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}"))
    with pytest.raises(NotFoundError, match=r"no monitoring runs for iris yet: run `sml infer --dataset iris`"):
        data.monitoring_runs(SPEC)
    with pytest.raises(NotFoundError, match=r"no data yet for iris: run `sml features --dataset iris` first"):
        data.feature_rows(SPEC)
    assert data.champion(SPEC) is None and data.model_versions(SPEC) == []
    with pytest.raises(NotFoundError, match=r"has no champion yet: run `sml train --dataset iris` first"):
        data.champion_model(SPEC)
    assert not (tmp_path / "store").exists()  # reading created nothing


def test_a_missing_tracking_database_is_not_created(tmp_path: Path) -> None:
    data = SiteData(resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"sqlite:///{tmp_path / 'none.db'}"))
    with pytest.raises(NotFoundError, match=r"no MLflow tracking database at .*none.db yet"):
        data.monitoring_runs(SPEC)
    assert not (tmp_path / "none.db").exists()


def test_a_tracking_server_that_is_down_is_one_line_within_seconds(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    data = SiteData(resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"http://user:s3cret@127.0.0.1:{port}"))
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match="cannot be reached") as raised:
        data.monitoring_runs(SPEC)
    assert time.monotonic() - started < 10
    assert "s3cret" not in str(raised.value) and "***" in str(raised.value)


def test_the_registry_the_model_and_the_training_run(data: SiteData) -> None:
    versions = data.model_versions(SPEC)
    assert [(v.version, v.aliases) for v in versions] == [(1, ("champion", "challenger"))]
    champion = data.champion(SPEC)
    assert champion is not None and champion.version == 1 and champion.holdout_accuracy is not None
    version, model = data.champion_model(SPEC)
    assert version.version == 1 and list(model.classes_) == list(SPEC.classes)
    assert data.champion_model(SPEC)[1] is model  # loaded once per version
    details = data.run_details(champion.training_run_id)
    assert details is not None and details.metrics["test_accuracy"] == pytest.approx(champion.holdout_accuracy, abs=1e-6)
    trials = data.trials(SPEC, details.run_id)
    assert list(trials["trial_number"]) == [0, 1]
    naive = mlflow.search_runs(experiment_names=[training_experiment("iris")],
                               filter_string=f"tags.`mlflow.parentRunId` = '{details.run_id}'")
    assert sorted(trials["val_accuracy_mean"]) == pytest.approx(sorted(naive["metrics.val_accuracy_mean"]))
    keys = data.training_keys(SPEC, details.run_id)
    assert keys is not None and len(keys) == int(details.params["rows_train"])


def test_artifacts_are_read_once_and_a_missing_one_is_none(data: SiteData) -> None:
    runs = data.monitoring_runs(SPEC, (), ())
    latest = str(runs.index[-1])
    table = data.run_json(latest, "confusion/batch.json")
    assert table == mlflow.artifacts.load_dict(f"runs:/{latest}/confusion/batch.json")
    assert sum(map(sum, table["matrix"])) == ROWS
    assert data.run_json(latest, "confusion/nothing.json") is None


def test_feature_rows_are_cached_until_the_group_changes(
    data: SiteData, world: tuple[LocalFeatureStore, Settings], clock: Clock
) -> None:
    store, _ = world
    rows = data.feature_rows(SPEC)
    assert len(rows) == 150 + DAYS * ROWS
    clock.now += 10
    assert data.feature_rows(SPEC) is rows  # same data version: not read again
    add_daily_rows(SPEC, store, day(DAYS), n=5, seed=0)
    clock.now += 10
    assert len(data.feature_rows(SPEC)) == len(rows) + 5
    predictions = data.predictions(SPEC)
    assert len(predictions) == DAYS * ROWS and set(predictions["origin"]) == {"synthetic"}


def test_reading_every_page_writes_nothing(world: tuple[LocalFeatureStore, Settings], tree_digest) -> None:  # noqa: ANN001
    _, settings = world
    before = {"db": tree_digest(Path(settings.tracking_uri.removeprefix("sqlite:///"))), "store": tree_digest(settings.store_dir)}
    data = SiteData(settings)
    data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",))
    data.run_values(MONITORING, list(data.monitoring_runs(SPEC).index), ("latest_probability",), ("alerts",))
    data.model_versions(SPEC)
    champion = data.champion(SPEC)
    data.champion_model(SPEC)
    data.trials(SPEC, champion.training_run_id)
    data.feature_rows(SPEC)
    data.predictions(SPEC)
    data.close()
    after = {"db": tree_digest(Path(settings.tracking_uri.removeprefix("sqlite:///"))), "store": tree_digest(settings.store_dir)}
    assert after == before


def test_a_replaced_run_is_noticed_although_count_and_times_stay_the_same(
    data: SiteData, clock: Clock
) -> None:
    """`simulate --replace` deletes a day's run and logs a new one at the same simulated
    time: the active runs' count, latest start and end are unchanged, the deletion is not."""
    first = data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",))
    client = MlflowClient()
    old_id = first.index[0]
    old = client.get_run(old_id)
    client.delete_run(old_id)
    new = client.create_run(old.info.experiment_id, start_time=old.info.start_time, tags={"as_of": old.data.tags["as_of"]})
    client.log_metric(new.info.run_id, "batch_accuracy", 0.123, timestamp=old.info.start_time)
    client.set_terminated(new.info.run_id, "FINISHED", end_time=old.info.end_time)
    clock.now += 10
    after = data.monitoring_runs(SPEC, ("batch_accuracy",), ("alert",))
    assert old_id not in after.index and new.info.run_id in after.index
    assert after.loc[new.info.run_id, "metrics.batch_accuracy"] == 0.123


def test_run_values_of_an_unknown_run_is_an_empty_frame(data: SiteData) -> None:
    """A forged run id (the Drift page's run picker) reads as no run, not a failure."""
    values = data.run_values(MONITORING, ["not-a-run"], ("batch_accuracy",), ("alert",))
    assert values.empty and "metrics.batch_accuracy" in values.columns
