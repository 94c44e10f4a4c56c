"""Notifications from the real jobs to a real local HTTP receiver: a batch's alert (through
`sml infer`, the scheduler's infer job and `infer()`), sent once per batch, delivered later
when the receiver was down; the alias moves of `sml train`; credentials in the receiver's
URL never in the output, the logs or the tracking store."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from receivers import hook_receiver
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.notify import Receiver
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.schedule import ScheduleOptions, pipeline_jobs
from serverless_ml.registry import monitoring_experiment, notified_tag
from serverless_ml.tracking import configure_tracking
from worlds import noon_of, trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
DAY = dt.date(2024, 3, 1)
PASSWORD = "pw-NOTIFY-7f3a9"
TOKEN = "tok-NOTIFY-c41e2"


def _drifted_day(store, day: dt.date = DAY) -> None:  # noqa: ANN001
    add_daily_rows(SPEC, store, day, n=60, seed=0, drift=parse_drift("age+30,fare*4", SPEC))


def _batch_runs(client: MlflowClient) -> list:  # noqa: ANN401
    experiment = client.get_experiment_by_name(monitoring_experiment("titanic"))
    return client.search_runs([experiment.experiment_id])


def test_a_batch_alert_is_sent_once_and_a_missed_one_by_the_next_job(world, free_port) -> None:  # noqa: ANN001
    """The scheduler's infer job sends the drift alert with the batch's fields; running the
    job again for the same slot sends nothing; a receiver that was down gets the alert
    from the next job that runs (and only once)."""
    store, settings = world
    _drifted_day(store)
    tracker = configure_tracking(settings)
    down_port = free_port()
    down = Receiver(f"http://127.0.0.1:{down_port}/hook")
    with hook_receiver() as up:
        receiver = Receiver(up.url)
        options = ScheduleOptions(notify=(receiver, down))
        jobs = {job.name: job for job in pipeline_jobs(["titanic"], settings, options, lambda: noon_of(DAY), tracker)}
        slot = dt.datetime.combine(DAY, dt.time(0, 15), tzinfo=dt.timezone.utc)
        jobs["infer"].action(slot)
        [payload] = up.payloads()
        [run] = _batch_runs(tracker.client)
        assert payload["dataset"] == "titanic"
        assert payload["kind"] == "drift_alert"
        assert payload["message"] == run.data.tags["alerts"]
        assert payload["message"].startswith("drift alert:") and "age" in payload["message"]
        assert payload["batch_date"] == DAY.isoformat()
        # A SQLite store has no UI address: ids, no links.
        assert payload["run"] == {"id": run.info.run_id, "url": None}
        assert payload["model"] == {"name": "titanic", "version": "1", "url": None}
        fired = dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.timezone.utc).replace(microsecond=0)
        assert payload["time"] == fired.isoformat()
        assert run.data.tags[notified_tag("drift_alert")] == up.url

        jobs["infer"].action(slot)  # the same slot again: nothing new to score
        report = infer(SPEC, store, settings, InferOptions(as_of=DAY, figures=False, notify=(receiver,)),
                       noon_of(DAY) + dt.timedelta(hours=1), tracker)
        assert report.run_id is None
        assert len(up.requests) == 1, "the batch's alert was sent again"

        with hook_receiver(port=down_port) as back:  # the receiver that was down is up again
            for _ in range(2):
                infer(SPEC, store, settings, InferOptions(as_of=DAY, figures=False, notify=(receiver, down)),
                      noon_of(DAY) + dt.timedelta(hours=2), tracker)
        assert [(p["run"]["id"], p["time"]) for p in back.payloads()] == [(run.info.run_id, fired.isoformat())]
        assert len(up.requests) == 1
    tags = tracker.client.get_run(run.info.run_id).data.tags
    assert tags[notified_tag("drift_alert")] == f"{up.url} | {down.url}"


def test_sml_infer_notifies_masks_credentials_and_survives_a_receiver_that_is_down(world, run_cli, free_port) -> None:  # noqa: ANN001
    """Through the real command: the receiver gets the alert (user and password as basic
    auth, the token in its query); a second receiver that refuses connections is one line
    on stderr and the job exits 0; the password and token are nowhere in the output, the
    tracking database or the run's files."""
    store, settings = world
    _drifted_day(store)
    with hook_receiver(statuses=[500]) as up:
        secret_url = up.url_with(f"bob:{PASSWORD}", query=f"token={TOKEN}&channel=ml")
        down_url = f"http://carol:{PASSWORD}@127.0.0.1:{free_port()}/down?token={TOKEN}"
        code, out, err = run_cli("infer", "--dataset", "titanic", "--as-of", DAY.isoformat(), "--no-figures",
                                 "--fail-on-alert", store_dir=store.root,
                                 env={"SML_NOTIFY_URL": f"{secret_url} {down_url}"})
    assert code == 3, err  # --fail-on-alert: the alert's own exit code, after the notifications
    assert f"  note: drift alert of {DAY.isoformat()} sent to http://bob:***@127.0.0.1:{up.port}/hook?token=***&channel=ml" in out
    assert len(up.requests) == 2, "a 500 is tried again"
    request = up.requests[-1]
    assert request.path == f"/hook?token={TOKEN}&channel=ml"
    assert request.headers["Authorization"].startswith("Basic ")
    assert request.json()["kind"] == "drift_alert"
    failures = [line for line in err.splitlines() if "notification not delivered" in line]
    assert len(failures) == 1, err
    assert "http://carol:***@127.0.0.1:" in failures[0] and "token=***" in failures[0]
    assert "Connection refused" in failures[0]
    for text in (out, err):
        assert PASSWORD not in text and TOKEN not in text
    stored = Path(settings.tracking_uri.removeprefix("sqlite:///"))
    with sqlite3.connect(stored) as db:
        values = [v for (v,) in db.execute("SELECT value FROM tags UNION ALL SELECT value FROM params")]
    assert any("bob:***@" in v for v in values), "the delivery is recorded, masked"
    assert not any(PASSWORD in (v or "") or TOKEN in (v or "") for v in values)
    for path in stored.parent.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert PASSWORD.encode() not in data and TOKEN.encode() not in data, path


def test_sml_train_notifies_each_alias_move(world, run_cli) -> None:  # noqa: ANN001
    store, settings = world
    with hook_receiver() as up:
        code, _out, err = run_cli("train", "--dataset", "titanic", "--trials", "2", "--seed", "3", "--folds", "3",
                                 "--promote", "always", "--notify", up.url, store_dir=store.root)
    assert code == 0, err
    payloads = up.payloads()
    assert [(p["kind"], p["alias"], p["model"]["version"]) for p in payloads] == [
        ("alias_move", "challenger", "2"), ("alias_move", "champion", "2")]
    client = MlflowClient(settings.tracking_uri)
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "2"
    run_id = client.get_model_version("titanic", "2").tags["training_run_id"]
    assert {p["run"]["id"] for p in payloads} == {run_id}
    assert all(p["dataset"] == "titanic" and p["model"]["name"] == "titanic" for p in payloads)
    assert "registered version 2 as challenger; promoted to champion" in payloads[0]["message"]
    assert payloads[1]["message"] == "titanic: version 2 promoted to champion (forced by --promote always)"




def _register_shuffled_model(store) -> int:  # noqa: ANN001
    """A forest fitted on shuffled labels (as tests/integration/test_shadow_challenger.py
    builds it), registered as a new version without aliases; returns its number."""
    import mlflow
    import numpy as np

    from serverless_ml.feature_store.base import BACKFILL_ORIGIN, ORIGIN_COLUMN
    from serverless_ml.pipelines.train import log_and_register
    from serverless_ml.training.model import as_model_input, build_pipeline

    rows = store.get_feature_group("titanic", 1).read()
    rows = rows[rows[ORIGIN_COLUMN] == BACKFILL_ORIGIN]
    x = as_model_input(rows, SPEC)
    labels = np.random.default_rng(3).permutation(rows[SPEC.label].to_numpy())
    model = build_pipeline(SPEC, {"n_estimators": 20, "max_depth": 4}, seed=3).fit(x, labels)
    version = int(log_and_register(model, x, "titanic"))
    mlflow.set_tracking_uri(None)
    return version


def test_a_live_promotion_is_an_alias_move_and_a_refusal_is_not(world) -> None:  # noqa: ANN001
    """`infer --promote live` moving @champion to the better challenger sends the move,
    linked to the monitoring run whose paired evidence moved it; a decision not to
    promote sends nothing."""
    from serverless_ml.pipelines.notifications import notify_live_promotion

    store, settings = world
    tracker = configure_tracking(settings)
    worse = _register_shuffled_model(store)
    tracker.client.set_registered_model_alias("titanic", "champion", str(worse))
    tracker.client.set_registered_model_alias("titanic", "challenger", "1")
    add_daily_rows(SPEC, store, DAY, n=300, seed=0)
    with hook_receiver() as up:
        receiver = Receiver(up.url)
        report = infer(SPEC, store, settings, InferOptions(as_of=DAY, figures=False, promote="live", notify=(receiver,)),
                       noon_of(DAY), tracker)
        assert report.promotion is not None and report.promotion.startswith("promoted:")
        assert "alias move of @champion to version 1 sent" in report.notes
        assert notify_live_promotion("titanic", "not promoted: version 1 stays @champion (p = 0.4)", 2,
                                     report.run_id, (receiver,), tracker) is None
    moves = [p for p in up.payloads() if p["kind"] == "alias_move"]
    assert [(p["alias"], p["model"]["version"], p["run"]["id"]) for p in moves] == [("champion", "1", report.run_id)]
    assert moves[0]["message"] == f"titanic: live promotion {report.promotion}"
    assert str(tracker.client.get_model_version_by_alias("titanic", "champion").version) == "1"
