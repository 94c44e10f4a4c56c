"""Past days are history (issue 15): `sml daily` and `sml simulate` refuse to change the
rows of a day that exists, and `--replace` rewrites them together with what scored them.

Against a trained Titanic world (a real Delta store and tracking database, copied per
test). The refusals go through the CLI (one line, exit 2, nothing written: the store's
bytes, its table versions and the tracking database's runs); the rest calls the pipelines.
"""

from __future__ import annotations

import datetime as dt
import re

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.synthetic import generate_rows, parse_drift
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.history import HistoryConflict
from serverless_ml.registry import REPLACED_TAG
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.simulate import SimulateOptions, simulate
from serverless_ml.registry import monitoring_experiment
from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
KEY = SPEC.primary_key
DAY = dt.date(2024, 2, 1)
END = dt.date(2024, 5, 31)


def all_runs() -> list:  # noqa: ANN401
    """Every monitoring run, deleted ones too."""
    experiment = mlflow.get_experiment_by_name(monitoring_experiment("titanic"))
    if experiment is None:
        return []
    return MlflowClient().search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=10_000)


def live_runs() -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[monitoring_experiment("titanic")])


def score_at(store, settings, day: dt.date) -> str:  # noqa: ANN001
    """`sml infer --as-of DAY` at the next day's 00:15; returns the run's id."""
    moment = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 15), tzinfo=dt.timezone.utc)
    report = infer(SPEC, store, settings, InferOptions(as_of=day, figures=False), moment)
    mlflow.set_tracking_uri(None)
    assert report.run_id is not None
    return report.run_id


def state(store, tree_digest) -> tuple:  # noqa: ANN001
    """What a refused job must leave as it was: the store's bytes (lock files aside), the
    table versions, and every monitoring run with its status and lifecycle."""
    files = {k: v for k, v in tree_digest(store.root).items() if not k.endswith(".lock") and not k.startswith("_locks")}
    versions = {name: store.get_feature_group(name, 1).data_version() for name in ("titanic", "titanic_predictions")}
    runs = sorted((r.info.run_id, r.info.status, r.info.lifecycle_stage) for r in all_runs())
    return files, versions, runs


def stored_day(store, day: dt.date) -> pd.DataFrame:  # noqa: ANN001
    rows = store.get_feature_group("titanic", 1).read()
    return rows[rows["event_time"].dt.date == day].reset_index(drop=True)


def generated(store, day: dt.date, n: int, seed: int, drift: str = "") -> pd.DataFrame:  # noqa: ANN001
    rows = store.get_feature_group("titanic", 1).read()
    real = rows[rows["origin"] == "backfill"]
    return generate_rows(real, SPEC, day, n, seed, parse_drift(drift, SPEC))


def champion_scores(store, keys: pd.Series) -> pd.DataFrame:  # noqa: ANN001
    """What the champion gives the stored rows with these keys: prediction and probability."""
    from serverless_ml.inference.scoring import score_rows

    model = mlflow.sklearn.load_model("models:/titanic@champion")
    version = int(MlflowClient().get_model_version_by_alias("titanic", "champion").version)
    rows = store.get_feature_group("titanic", 1).read()
    rows = rows[rows[KEY].isin(keys)]
    scored = score_rows(model, rows, SPEC, version, pd.Timestamp("2024-01-01", tz="UTC"), run_id="")
    return scored[[KEY, "prediction", "probability"]].sort_values(KEY).reset_index(drop=True)


# --- daily ---------------------------------------------------------------------------------


def test_daily_with_other_arguments_for_an_existing_day_is_refused_and_writes_nothing(
    world, run_cli, tree_digest  # noqa: ANN001
) -> None:
    store, settings = world
    add_daily_rows(SPEC, store, DAY, n=10, seed=0)
    score_at(store, settings, DAY)
    before = state(store, tree_digest)
    env = {"MLFLOW_TRACKING_URI": settings.tracking_uri}
    # 12 rows: the 10 stored ones change; 6 rows: 6 change and 4 are left over; a drift
    # changes the rows whose age is known.
    for args, differ in ((["--rows", "12"], "10"), (["--drift", "age+5"], r"\d+"), (["--rows", "6"], "10")):
        code, out, err = run_cli("daily", "--dataset", "titanic", "--date", DAY.isoformat(), "--rows", "10", *args,
                                 store_dir=store.root, env=env)
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1, (args, out, err)
        assert re.match(rf"error: titanic: {DAY} already has rows for --seed 0 that these arguments would change "
                        rf"\({differ} stored row\(s\) differ\); nothing was written\.", lines[0]), (args, err)
        assert "another --date or --seed, or --replace" in lines[0]
        assert state(store, tree_digest) == before, f"sml daily {args} wrote something"
    # The same arguments again: nothing written, as always; another seed: another history.
    again = add_daily_rows(SPEC, store, DAY, n=10, seed=0)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 10)
    assert state(store, tree_digest) == before
    assert add_daily_rows(SPEC, store, DAY, n=4, seed=1).inserted == 4


def test_daily_replace_rewrites_the_day_and_removes_the_runs_and_predictions_that_scored_it(
    world, run_cli  # noqa: ANN001
) -> None:
    store, settings = world
    add_daily_rows(SPEC, store, DAY, n=10, seed=0)
    add_daily_rows(SPEC, store, DAY, n=5, seed=1)  # the same day, another seed
    run_a = score_at(store, settings, DAY)  # scores both seeds' rows: 15
    next_day = DAY + dt.timedelta(days=1)
    add_daily_rows(SPEC, store, next_day, n=10, seed=0)
    run_b = score_at(store, settings, next_day)
    seed1 = stored_day(store, DAY)
    seed1 = seed1[~seed1[KEY].isin(generated(store, DAY, 10, 0)[KEY])].reset_index(drop=True)

    # Fewer rows: 6 rows rewritten and 4 left over, removed.
    code, out, err = run_cli("daily", "--dataset", "titanic", "--date", DAY.isoformat(), "--rows", "6", "--replace",
                             store_dir=store.root, env={"MLFLOW_TRACKING_URI": settings.tracking_uri})
    assert code == 0, err
    assert "6 rows in, 0 inserted, 6 updated, 0 unchanged" in out
    assert "replaced 10 stored row(s) of 1 day(s) (2024-02-01); removed 15 prediction(s) and 1 monitoring run(s)" in out

    day_rows = stored_day(store, DAY)
    expected = pd.concat([generated(store, DAY, 6, 0), seed1], ignore_index=True).sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(day_rows, expected, check_dtype=False)
    runs = {r.info.run_id: r for r in all_runs()}
    assert runs[run_a].info.lifecycle_stage == "deleted" and "sml daily --replace" in runs[run_a].data.tags[REPLACED_TAG]
    assert runs[run_b].info.lifecycle_stage == "active"
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    assert set(predictions["run_id"]) == {run_b}, "all of the deleted run's predictions went with it"

    # The next batch scores the day again: 6 new rows and the other seed's 5.
    run_c = score_at(store, settings, DAY)
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    rescored = predictions[predictions["run_id"] == run_c].sort_values(KEY).reset_index(drop=True)
    assert sorted(rescored[KEY]) == sorted(day_rows[KEY])
    pd.testing.assert_frame_equal(rescored[[KEY, "prediction", "probability"]], champion_scores(store, day_rows[KEY]),
                                  check_dtype=False)
    live = live_runs()
    assert sorted(live["tags.as_of"]) == [DAY.isoformat(), next_day.isoformat()], "one live run per day"
    # Replacing again with the same arguments changes nothing.
    again = add_daily_rows(SPEC, store, DAY, n=6, seed=0, replace=True, settings=settings)
    assert again.replaced is None and again.unchanged == 6
    assert len(live_runs()) == 2


# --- simulate ------------------------------------------------------------------------------


def test_simulate_over_existing_days_with_other_arguments_is_refused_and_writes_nothing(
    world, run_cli, tree_digest  # noqa: ANN001
) -> None:
    store, settings = world
    simulate(SPEC, store, settings, SimulateOptions(days=4, end_date=END, rows=5))
    mlflow.set_tracking_uri(None)
    before = state(store, tree_digest)
    # Two new days first, then the four that exist with 6 rows instead of 5.
    later = END + dt.timedelta(days=2)
    code, out, err = run_cli("simulate", "--dataset", "titanic", "--days", "6", "--end-date", later.isoformat(), "--rows", "6",
                             store_dir=store.root, env={"MLFLOW_TRACKING_URI": settings.tracking_uri})
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, (out, err)
    first = END - dt.timedelta(days=3)
    assert lines[0].startswith(f"error: titanic: 4 simulated days, the first {first}, already have rows for --seed 0 that "
                               "these arguments would change (20 stored row(s) differ); nothing was written."), err
    assert "other days (--end-date, --days) or another --seed, or --replace" in lines[0]
    assert state(store, tree_digest) == before
    # A drift episode over existing days is another history too; the same arguments are not.
    drifted = SimulateOptions(days=4, end_date=END, rows=5, drift=parse_drift("age+20", SPEC), drift_from=3)
    with pytest.raises(HistoryConflict, match=f"titanic: 2 simulated days, the first {END - dt.timedelta(days=1)},"):
        simulate(SPEC, store, settings, drifted)
    again = simulate(SPEC, store, settings, SimulateOptions(days=4, end_date=END, rows=5))
    mlflow.set_tracking_uri(None)
    assert (again.rows_added, again.runs, again.replaced) == (0, 0, None)
    assert state(store, tree_digest) == before


def test_simulate_replace_rewrites_and_rescores_the_days_with_one_live_run_each(world) -> None:  # noqa: ANN001
    store, settings = world
    first = simulate(SPEC, store, settings, SimulateOptions(days=4, end_date=END, rows=5))
    assert first.runs == 4
    untouched = {r["tags.as_of"]: r["run_id"] for _, r in live_runs().iterrows()}
    days = [END - dt.timedelta(days=i) for i in (2, 1, 0)]
    # The last three days again with 3 rows each: 3 rows changed and 2 left over per day.
    report = simulate(SPEC, store, settings, SimulateOptions(days=3, end_date=END, rows=3, replace=True))
    mlflow.set_tracking_uri(None)
    assert report.replaced is not None and report.replaced.days == days
    assert (report.replaced.rows, report.replaced.predictions, len(report.replaced.runs)) == (15, 15, 3)
    assert report.runs == 3 and report.rows_added == 0
    assert "replaced 15 stored row(s) of 3 day(s)" in report.summary(SPEC, SimulateOptions(days=3, end_date=END, rows=3))

    predictions = store.get_feature_group("titanic_predictions", 1).read()
    live = live_runs()
    assert sorted(live["tags.as_of"]) == sorted(untouched), "exactly one live run per day"
    assert set(live["status"]) == {"FINISHED"}
    assert live.set_index("tags.as_of").loc[(END - dt.timedelta(days=3)).isoformat(), "run_id"] == untouched[
        (END - dt.timedelta(days=3)).isoformat()], "a day not replaced keeps its run"
    deleted = [r for r in all_runs() if r.info.lifecycle_stage == "deleted"]
    assert sorted(r.info.run_id for r in deleted) == sorted(untouched[d.isoformat()] for d in days)
    assert all("sml simulate --replace" in r.data.tags[REPLACED_TAG] for r in deleted)
    for day in days:
        rows = stored_day(store, day)
        pd.testing.assert_frame_equal(rows, generated(store, day, 3, 0), check_dtype=False)
        run_id = live.set_index("tags.as_of").loc[day.isoformat(), "run_id"]
        batch = predictions[predictions["run_id"] == run_id].sort_values(KEY).reset_index(drop=True)
        assert sorted(batch[KEY]) == sorted(rows[KEY]), day
        pd.testing.assert_frame_equal(batch[[KEY, "prediction", "probability"]], champion_scores(store, rows[KEY]),
                                      check_dtype=False)
        assert live.set_index("tags.as_of").loc[day.isoformat(), "metrics.rows_scored"] == 3
    assert set(predictions["run_id"]) <= set(live["run_id"]), "no prediction points at a deleted run"
    # Done: the same command again finds nothing to replace and nothing to score.
    again = simulate(SPEC, store, settings, SimulateOptions(days=3, end_date=END, rows=3, replace=True))
    assert (again.replaced, again.runs, again.rows_added) == (None, 0, 0)


def test_a_simulated_run_starts_and_ends_at_its_batch_time(world) -> None:  # noqa: ANN001
    store, settings = world
    simulate(SPEC, store, settings, SimulateOptions(days=3, end_date=END, rows=4))
    runs = live_runs()
    assert len(runs) == 3
    for _, run in runs.iterrows():
        batch_time = pd.Timestamp(run["tags.as_of"], tz="UTC") + pd.Timedelta(days=1, minutes=15)
        assert run["start_time"] == batch_time and run["end_time"] == batch_time, run["tags.as_of"]


def test_simulate_keep_existing_keeps_those_days_and_simulates_the_others(world, tree_digest) -> None:  # noqa: ANN001
    """`sml main` run again a day later: the drift episode falls on other dates; the days
    simulated before keep their rows, predictions and runs, the new day is added."""
    store, settings = world
    simulate(SPEC, store, settings, SimulateOptions(days=4, end_date=END, rows=5, drift=parse_drift("age+20", SPEC), drift_from=3))
    mlflow.set_tracking_uri(None)
    runs_before = {r["tags.as_of"]: r["run_id"] for _, r in live_runs().iterrows()}
    kept_rows = {d: stored_day(store, END - dt.timedelta(days=d)) for d in range(4)}
    later = SimulateOptions(days=4, end_date=END + dt.timedelta(days=1), rows=5, drift=parse_drift("age+20", SPEC), drift_from=3,
                            keep_existing=True)
    report = simulate(SPEC, store, settings, later)
    mlflow.set_tracking_uri(None)
    assert report.kept_days >= 1 and report.replaced is None
    assert "kept as they are (--keep-existing)" in report.summary(SPEC, later)
    for d, rows in kept_rows.items():
        pd.testing.assert_frame_equal(stored_day(store, END - dt.timedelta(days=d)), rows)
    live = {r["tags.as_of"]: r["run_id"] for _, r in live_runs().iterrows()}
    assert {k: v for k, v in live.items() if k in runs_before} == runs_before, "the runs of kept days stay"
    assert (END + dt.timedelta(days=1)).isoformat() in live and report.runs == 1
    with pytest.raises(Exception, match="exclude each other"):
        simulate(SPEC, store, settings, SimulateOptions(days=4, end_date=END, rows=5, replace=True, keep_existing=True))
