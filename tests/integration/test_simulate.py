"""History simulation against a real store and tracking database (a trained world)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.errors import SmlError
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.simulate import SimulateOptions, segments, simulate
from serverless_ml.registry import monitoring_experiment
from worlds import copy_world, trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
END = dt.date(2024, 5, 31)


def _runs() -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[monitoring_experiment("titanic")])


def test_simulate_gives_one_dated_monitoring_run_per_day(world, monkeypatch) -> None:  # noqa: ANN001
    store, settings = world
    options = SimulateOptions(days=12, end_date=END, rows=5)
    # As under `mlflow run -e simulate`: its runs name the project run (found by a user trial: they did not).
    project = MlflowClient(settings.tracking_uri).create_run(
        MlflowClient(settings.tracking_uri).create_experiment("project")).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", project)
    report = simulate(SPEC, store, settings, options)
    monkeypatch.delenv("MLFLOW_RUN_ID")
    assert (report.days, report.runs, report.rows_added) == (12, 12, 60)
    runs = _runs()
    days = [(END - dt.timedelta(days=11 - i)).isoformat() for i in range(12)]
    assert sorted(runs["tags.as_of"]) == days
    assert set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.sml.project_run_id"]) == {project}
    # Each run is dated like the job that would have run on the day: the next day, 00:15 UTC.
    for _, run in runs.iterrows():
        expected = pd.Timestamp(run["tags.as_of"], tz="UTC") + pd.Timedelta(days=1, minutes=15)
        assert run["start_time"] == expected
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    assert len(predictions) == 60 and predictions["passenger_id"].is_unique
    for _, run in runs.iterrows():
        batch = predictions[predictions["run_id"] == run["run_id"]]
        assert len(batch) == 5
        assert (batch["event_time"].dt.date.astype(str) == run["tags.as_of"]).all()
        assert run["metrics.batch_accuracy"] == pytest.approx(float((batch["prediction"] == batch["actual"]).mean()))
    rows = store.get_feature_group("titanic", 1).read()
    assert (rows["origin"] == "synthetic").sum() == 60


def test_simulate_matches_day_by_day_inference(world, trained_template, tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """The segment shortcut gives the same numbers as running `sml infer` every day."""
    from serverless_ml.pipelines.features import add_daily_rows

    store, settings = world
    simulate(SPEC, store, settings, SimulateOptions(days=6, end_date=END, rows=8))
    simulated = _runs().set_index("tags.as_of").sort_index()
    store2, settings2 = copy_world(trained_template, tmp_path / "day_by_day", monkeypatch)
    for i in range(6):
        day = END - dt.timedelta(days=5 - i)
        add_daily_rows(SPEC, store2, day, n=8, seed=0)
        infer(SPEC, store2, settings2, InferOptions(as_of=day, figures=False),
              dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 15), tzinfo=dt.timezone.utc))
    daily = _runs().set_index("tags.as_of").sort_index()
    for column in ("metrics.batch_accuracy", "metrics.rolling_accuracy", "metrics.cumulative_accuracy",
                   "metrics.rows_scored", "metrics.predicted_share_survived"):
        assert simulated[column].tolist() == pytest.approx(daily[column].tolist()), column


def test_running_the_same_simulation_again_adds_nothing(world) -> None:  # noqa: ANN001
    store, settings = world
    options = SimulateOptions(days=5, end_date=END, rows=4)
    simulate(SPEC, store, settings, options)
    version = store.get_feature_group("titanic", 1).data_version()
    again = simulate(SPEC, store, settings, options)
    assert (again.rows_added, again.runs) == (0, 0)
    assert store.get_feature_group("titanic", 1).data_version() == version
    assert len(_runs()) == 5


def test_a_drift_episode_raises_alerts_only_from_its_first_day(world) -> None:  # noqa: ANN001
    store, settings = world
    options = SimulateOptions(
        days=10, end_date=END, rows=40, drift=parse_drift("age+30,fare*4", SPEC), drift_from=7, drift_days=2,
    )
    report = simulate(SPEC, store, settings, options)
    first_drift_day = options.day(7).isoformat()
    assert report.alert_days and min(report.alert_days) == first_drift_day
    runs = _runs().set_index("tags.as_of")
    before = runs[runs.index < first_drift_day]
    assert (before["tags.alert_drift"] == "false").all()
    assert runs.loc[first_drift_day, "tags.alert_drift"] == "true"
    rows = store.get_feature_group("titanic", 1).read()
    drifted = rows[rows["event_time"].dt.date.astype(str).isin([options.day(7).isoformat(), options.day(8).isoformat()])]
    normal = rows[rows["event_time"].dt.date.astype(str) == options.day(9).isoformat()]
    assert drifted["age"].mean() > normal["age"].mean() + 15


def test_retraining_every_k_days_registers_new_versions_between_segments(world) -> None:  # noqa: ANN001
    store, settings = world
    options = SimulateOptions(days=6, end_date=END, rows=10, retrain_every=3, retrain_trials=2)
    assert segments(options) == [(1, 3), (4, 6)]
    report = simulate(SPEC, store, settings, options)
    assert len(report.retrains) == 1
    versions = MlflowClient().search_model_versions("name='titanic'")
    assert len(versions) == 2
    runs = _runs().set_index("tags.as_of")
    # Each day is scored by the champion of its time: the retrain happened after day 3.
    champion = str(MlflowClient().get_model_version_by_alias("titanic", "champion").version)
    assert set(runs.loc[[options.day(i).isoformat() for i in (1, 2, 3)], "tags.model_version"]) == {"1"}
    assert set(runs.loc[[options.day(i).isoformat() for i in (4, 5, 6)], "tags.model_version"]) == {champion}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--days", "0"], "--days must be between 1 and"),
        (["--drift", "age+10"], "--drift needs --drift-from"),
        (["--drift", "age+10", "--drift-from", "40"], "--drift-from must be a day between 1 and 30"),
        (["--retrain-every", "-1"], "--retrain-every must be >= 1"),
        (["--end-date", "2024-02-30"], "--end-date '2024-02-30' is not a date"),
        (["--drift", "height+3", "--drift-from", "2"], "has no feature 'height'"),
        (["--label-share", "1.5"], "--label-share must be between 0 and 1, got 1.5"),
        (["--label-share", "nan"], "--label-share must be between 0 and 1, got nan"),
        (["--label-delay", "-2"], "--label-delay must be between 0 and 3660 days, got -2"),
    ],
)
def test_bad_simulate_options_fail_in_one_line_and_write_nothing(run_cli, world, args, expected, tree_digest) -> None:  # noqa: ANN001
    store, _ = world
    before = tree_digest(store.root)
    code, _, err = run_cli("simulate", "--dataset", "titanic", *args, store_dir=store.root,
                           env={"MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()})
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], err
    assert tree_digest(store.root) == before


def test_simulate_without_a_champion_says_to_train_first(run_cli, store_dir, tracking_uri, tree_digest) -> None:  # noqa: ANN001
    code, _, err = run_cli("features", "--dataset", "iris")
    assert code == 0, err
    before = tree_digest(store_dir)
    code, _, err = run_cli("simulate", "--dataset", "iris", "--days", "3", env={"MLFLOW_TRACKING_URI": tracking_uri})
    assert code == 2 and "run `sml train --dataset iris` first" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(store_dir) == before


def test_simulation_options_are_checked_before_anything_runs() -> None:
    with pytest.raises(SmlError, match="--drift-days must be >= 1"):
        dataclasses.replace(SimulateOptions(days=3, end_date=END), drift=parse_drift("age+1", SPEC), drift_from=1, drift_days=0)


def test_the_demos_drift_episode_raises_drift_alerts_and_clean_days_do_not(world) -> None:  # noqa: ANN001
    """The demo's episode (30 days of 10 rows, `age+20,fare*3` from day 20 for 5 days)
    shows drift alerts; the clean days before it none (issue 15: it raised none)."""
    from serverless_ml.demo import DRIFTS

    store, settings = world
    options = SimulateOptions(days=30, end_date=END, rows=10, drift=parse_drift(DRIFTS["titanic"], SPEC),
                              drift_from=20, drift_days=5)
    simulate(SPEC, store, settings, options)
    runs = _runs().set_index("tags.as_of").sort_index()
    day_of = {(options.day(i)).isoformat(): i for i in range(1, 31)}
    alert_days = sorted(day_of[d] for d in runs.index[runs["tags.alert_drift"] == "true"])
    assert alert_days, "the drift episode raised no drift alert"
    assert min(alert_days) in (20, 21, 22), alert_days
    assert all(day >= 20 for day in alert_days), f"drift alerts on clean days: {alert_days}"
    first = runs.loc[options.day(min(alert_days)).isoformat()]
    assert "age" in first["tags.alerts"] or "fare" in first["tags.alerts"]
    assert first["metrics.drift_effect_age"] >= 0.1 or first["metrics.drift_effect_fare"] >= 0.1


def test_late_labels_for_part_of_the_rows_give_estimates_first_and_realized_figures_later(world) -> None:  # noqa: ANN001
    store, settings = world
    options = SimulateOptions(days=8, end_date=END, rows=12, label_delay=3, label_share=0.6)
    report = simulate(SPEC, store, settings, options)
    assert report.runs == 8
    rows = store.get_feature_group("titanic", 1).read()
    rows = rows[rows["origin"] == "synthetic"]
    days = rows["event_time"].dt.date
    # The last 3 days' labels have not arrived by the end; before, about 60 % of the rows have one.
    recent = days > END - dt.timedelta(days=3)
    assert rows.loc[recent, "survived"].isna().all()
    older = rows[~recent.to_numpy()]
    share = older["survived"].notna().mean()
    assert 0.4 < share < 0.8 and older["survived"].isna().any()
    # Which rows: the seeded draw by key, the same in any frame.
    arrives = options.label_arrives(older, SPEC)
    assert (older["survived"].notna().to_numpy() == arrives.notna().to_numpy()).all()
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    labels = rows.set_index("passenger_id")["survived"]
    assert (predictions["actual"].isna().to_numpy() == labels.loc[predictions["passenger_id"]].isna().to_numpy()).all()
    runs = _runs()
    # Each day was scored before any of its labels arrived: judged on the estimate.
    assert set(runs["tags.accuracy_basis"]) == {"estimated"}
    assert runs["metrics.estimated_accuracy"].notna().all()
    for _, run in runs.iterrows():
        batch = predictions[predictions["run_id"] == run["run_id"]]
        known = batch[batch["actual"].notna()]
        assert run["metrics.labelled_share"] == pytest.approx(len(known) / len(batch))
        if known.empty:
            assert pd.isna(run["metrics.batch_accuracy"])  # not a zero
        else:
            assert run["metrics.batch_accuracy"] == pytest.approx(float((known["prediction"] == known["actual"]).mean()))
    # The summary says what happened to the labels.
    assert "labels: 60% of the rows, 3 day(s) after their day" in report.summary(SPEC, options)
    # The same simulation again writes nothing and changes no figure.
    again = simulate(SPEC, store, settings, options)
    assert again.rows_added == 0 and again.runs == 0
    # Two days later (as `sml main` does each day, keeping the days it simulated before), the
    # labels due by then arrive for the earlier days too, and their runs follow.
    later = dataclasses.replace(options, end_date=END + dt.timedelta(days=2), keep_existing=True)
    moved = simulate(SPEC, store, settings, later)
    assert moved.kept_days == 0 and moved.runs == 2 and moved.labels_arrived > 0
    rows = store.get_feature_group("titanic", 1).read()
    day = rows[(rows["origin"] == "synthetic") & (rows["event_time"].dt.date == END - dt.timedelta(days=1))]
    assert day["survived"].notna().any()  # due on END + 2
    runs = _runs().set_index("tags.as_of")
    assert runs.loc[(END - dt.timedelta(days=1)).isoformat(), "metrics.labelled_share"] > 0
    assert runs.loc[END.isoformat(), "metrics.labelled_share"] == 0  # due on END + 3
