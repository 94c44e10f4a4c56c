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
from worlds import copy_world, noon_of, trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
START = dt.date(2024, 3, 1)
QUIET = InferOptions(figures=False)


def _day(i: int) -> dt.date:
    return START + dt.timedelta(days=i)


def _three_days(template: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:  # type: ignore[type-arg]
    """A copy of the trained world in ``folder`` with 20 rows on each of 3 days, the first
    day scored (the history): its store, settings and predictions group."""
    folder.mkdir()
    store, settings = copy_world(template, folder, monkeypatch)
    for i in range(3):
        add_daily_rows(SPEC, store, _day(i), n=20, seed=i)
    infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(0)), noon_of(_day(0)))
    return store, settings, store.get_feature_group("titanic_predictions", 1)


def _score_day_two(store, settings, chunk_rows: int, monkeypatch: pytest.MonkeyPatch) -> tuple:  # noqa: ANN001  # type: ignore[type-arg]
    """``sml infer`` of day 2 in chunks of ``chunk_rows``: its report and finished run."""
    with monkeypatch.context() as patch:
        patch.setattr(infer_module, "CHUNK_ROWS", chunk_rows)
        report = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(2)), noon_of(_day(2)))
    run = MlflowClient().get_run(report.run_id)
    assert run.info.status == "FINISHED"
    return report, run


def test_a_batch_of_many_chunks_gives_the_figures_and_predictions_of_one_chunk(
    trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    found = {}
    for label, chunk_rows in (("one chunk", infer_module.CHUNK_ROWS), ("chunks of 7 rows", 7)):
        store, settings, target = _three_days(trained_template, tmp_path / label.replace(" ", "_"), monkeypatch)
        version = target.data_version()
        report, run = _score_day_two(store, settings, chunk_rows, monkeypatch)
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
    those of a batch that scores all of them (but ``served_rows``), and the served rows'
    predictions stay as served, now naming the run (in one commit for one chunk; a
    staged batch names them in a second)."""
    found = {}
    for label in ("scored", "served"):
        store, settings, target = _three_days(trained_template, tmp_path / label, monkeypatch)
        served_keys: list[int] = []
        if label == "served":
            day2 = store.get_feature_group("titanic", 1).read()
            day2 = day2[day2["event_time"].dt.date == _day(2)]
            served_keys = sorted(day2[SPEC.primary_key].tolist())[:15]
            record_served(SPEC, store, settings.state_dir, served_keys, pd.Timestamp(noon_of(_day(2))) - pd.Timedelta(hours=1), 1)
        before = target.data_version()
        report, run = _score_day_two(store, settings, chunk_rows, monkeypatch)
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


def test_labels_recompute_a_served_only_run_against_what_it_had_seen(world) -> None:  # noqa: ANN001, F811
    """A row answered before a batch was scored but recorded after it (its flush waited
    for the job's lock) is taken in by the next batch, served rows only, whose latest
    ``scored_at`` (a request's time) is then earlier than the first batch's: ``sml
    labels`` still recomputes its windows over what it had seen when it was logged (its
    ``scored_at`` tag), so figures the labels do not change stay as they were."""
    from serverless_ml.datasets.sources import Source
    from serverless_ml.pipelines.labels import LabelOptions, attach_labels

    store, settings = world
    add_daily_rows(SPEC, store, _day(0), n=20, seed=0)
    first = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(0)), noon_of(_day(0)))
    add_daily_rows(SPEC, store, _day(1), n=10, seed=1)
    rows = store.get_feature_group("titanic", 1).read()
    day1 = rows[rows["event_time"].dt.date == _day(1)]
    keys = sorted(day1[SPEC.primary_key])
    record_served(SPEC, store, settings.state_dir, keys, pd.Timestamp(noon_of(_day(0))) - pd.Timedelta(minutes=5), 1)
    second = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(1)), noon_of(_day(1)))
    assert (first.rows_scored, second.rows_scored, second.rows_served) == (20, 10, 10)
    client = MlflowClient(settings.tracking_uri)
    logged = client.get_run(second.run_id).data
    assert logged.tags[registry.SCORED_AT_TAG] == pd.Timestamp(noon_of(_day(1))).isoformat()
    assert logged.metrics[registry.ROLLING_ROWS_METRIC] == 30  # the first batch's rows and its own

    # One of its labels corrected: the batch's accuracy moves, its windows keep their rows.
    truth = day1.set_index(SPEC.primary_key).loc[keys, SPEC.label].astype(int)
    truth.iloc[0] = 1 - truth.iloc[0]
    labels = pd.DataFrame({"PassengerId": [str(k) for k in keys], "Survived": [str(v) for v in truth]}, dtype=object)
    attach_labels(SPEC, store, settings, Source(labels, "labels.csv", True), LabelOptions(overwrite=True),
                  dt.datetime.combine(_day(3), dt.time(12), tzinfo=dt.timezone.utc))
    after = client.get_run(second.run_id).data.metrics
    assert after[registry.ROLLING_ROWS_METRIC] == 30 and after[registry.CUMULATIVE_ROWS_METRIC] == 30
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    batch = predictions[predictions["run_id"] == second.run_id]
    assert len(batch) == 10
    assert after[registry.BATCH_ACCURACY_METRIC] == pytest.approx(float((batch["prediction"] == batch["actual"]).mean()))
    assert after[registry.ROLLING_ACCURACY_METRIC] == pytest.approx(float((predictions["prediction"] == predictions["actual"]).mean()))


def test_replacing_a_day_hands_its_runs_served_rows_to_the_next_batch(world) -> None:  # noqa: ANN001, F811
    """``sml daily --replace`` deletes the run that scored the day's rows and its
    predictions, but the served rows that run took in are answers given, not the day's
    rows: they lose the run and the next batch takes them in again, as served."""
    from worlds import insert_live_rows

    store, settings = world
    add_daily_rows(SPEC, store, _day(0), n=10, seed=0)
    before = set(store.get_feature_group("titanic", 1).read()[SPEC.primary_key])
    insert_live_rows(SPEC, store, _day(0), 6)
    live = sorted(set(store.get_feature_group("titanic", 1).read()[SPEC.primary_key]) - before)
    assert len(live) == 6
    at = pd.Timestamp(noon_of(_day(0))) - pd.Timedelta(hours=3)
    record_served(SPEC, store, settings.state_dir, live, at, 1)
    target = store.get_feature_group("titanic_predictions", 1)
    served = target.read().set_index(SPEC.primary_key).loc[live]
    first = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(0)), noon_of(_day(0)))
    assert (first.rows_scored, first.rows_served) == (16, 6)

    replaced = add_daily_rows(SPEC, store, _day(0), n=5, seed=0, replace=True, settings=settings)
    assert replaced.replaced is not None and replaced.replaced.runs == [first.run_id]
    assert replaced.replaced.rows == 10  # the day's predictions; not the served ones
    left = target.read()
    assert sorted(left[SPEC.primary_key]) == live and left["run_id"].isna().all()
    second = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(0)), noon_of(_day(0)) + pd.Timedelta(hours=1))
    assert (second.rows_scored, second.rows_served) == (11, 6)
    after = target.read().set_index(SPEC.primary_key).loc[live]
    assert (after["run_id"] == second.run_id).all()
    for column in ("prediction", "probability", "scored_at", "model_version"):
        assert after[column].tolist() == served[column].tolist(), column


def test_labels_of_rows_not_scored_yet_are_stored_and_said_to_wait(world) -> None:  # noqa: ANN001, F811
    """Labels can come before the batch that scores their rows: stored, noted, and counted
    by that batch (found by a new-user trial: the job said only "0 of N runs updated")."""
    from serverless_ml.datasets.sources import Source
    from serverless_ml.pipelines.labels import LabelOptions, attach_labels
    from worlds import insert_live_rows

    store, settings = world
    add_daily_rows(SPEC, store, _day(0), n=10, seed=0)
    infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(0)), noon_of(_day(0)))
    before = set(store.get_feature_group("titanic", 1).read()[SPEC.primary_key])
    insert_live_rows(SPEC, store, _day(1), 6)
    live = sorted(set(store.get_feature_group("titanic", 1).read()[SPEC.primary_key]) - before)
    labels = pd.DataFrame({"PassengerId": [str(k) for k in live[:4]], "Survived": ["1", "0", "1", "0"]}, dtype=object)
    report = attach_labels(SPEC, store, settings, Source(labels, "labels.csv", True), LabelOptions(),
                           dt.datetime.combine(_day(1), dt.time(18), tzinfo=dt.timezone.utc))
    assert report.labels_set == 4
    assert "4 of the labels written are for rows no model has scored yet" in report.summary()
    second = infer(SPEC, store, settings, dataclasses.replace(QUIET, as_of=_day(1)), noon_of(_day(2)))
    assert second.rows_scored == 6 and second.metrics[registry.ROWS_LABELLED_METRIC] == 4
