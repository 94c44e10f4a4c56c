"""``sml serve``: a real server process on a free port, serving the trained Titanic world's
champion. Valid and invalid requests in both formats, what it records (live rows and
their predictions, written on SIGTERM), a late label for a served row reaching
monitoring, and a promotion served without a restart."""

from __future__ import annotations

import datetime as dt
import signal
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from serverless_ml import registry
from serverless_ml.datasets import get_dataset
from serverless_ml.serving import schema
from served import ROW, live_rows, predictions, start_server, wait_for
from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
KEY = SPEC.primary_key
PROBABILITIES = ["probability_died", "probability_survived"]
SECRET = "serve-marker-api-key-7f3a"


def expected(rows: list[dict]) -> np.ndarray:  # type: ignore[type-arg]
    """The champion Pipeline's probabilities, computed here."""
    pipeline = registry.load_version_model("titanic", 1)
    checked, errors = schema.validate_records(SPEC.features, rows)
    assert not errors
    return schema.class_probabilities(pipeline, SPEC.classes, schema.model_frame(SPEC.features, checked))


def test_requests_answers_refusals_and_rows_recorded_on_sigterm(world, tmp_path: Path) -> None:  # noqa: ANN001
    from serverless_ml.pipelines.features import add_daily_rows

    store, settings = world
    trained_rows = store.get_feature_group("titanic", 1).read().iloc[[0]]  # a row of the champion's training
    add_daily_rows(SPEC, store, dt.datetime.now(dt.timezone.utc).date(), n=4, seed=9)  # labelled rows since
    before = len(store.get_feature_group("titanic", 1).read())
    # Nothing is flushed by size or time during the test: SIGTERM writes it all.
    server = start_server(tmp_path, store, settings, "--flush-rows", "100000", "--flush-seconds", "3600",
                          env={"HOPSWORKS_API_KEY": SECRET})
    started = pd.Timestamp.now(tz="UTC")
    try:
        rows = [ROW, {**ROW, "sex": "female", "pclass": 1, "age": None, "fare": 71.28, "title": "Mrs"},
                {**ROW, KEY: 990001}]
        status, body = server.predict(rows)
        assert status == 200, body
        assert body["model_version"] == 1
        proba = expected([{k: v for k, v in r.items() if k != KEY} for r in rows])
        answers = body["predictions"]
        assert [a["prediction"] for a in answers] == [SPEC.class_name(SPEC.classes[i]) for i in proba.argmax(axis=1)]
        np.testing.assert_allclose([[a[c] for c in PROBABILITIES] for a in answers], proba, rtol=0, atol=1e-12)
        np.testing.assert_allclose([a["probability"] for a in answers], proba.max(axis=1), rtol=0, atol=1e-12)
        generated = [a[KEY] for a in answers[:2]]
        assert answers[2][KEY] == 990001
        assert all(isinstance(k, int) and 2**52 <= k < 2**53 for k in generated) and generated[0] != generated[1]

        # MLflow's formats, the same answers.
        columns = list(ROW)
        for payload in ({"dataframe_split": {"columns": columns, "data": [[ROW[c] for c in columns]]}},
                        {"dataframe_records": [ROW]}, {"inputs": [ROW]}, {"inputs": {c: [ROW[c]] for c in columns}},
                        {"instances": [ROW]}):
            status, body = server.request("POST", "/invocations", payload)
            assert status == 200, (payload, body)
            assert body["predictions"][0]["prediction"] == answers[0]["prediction"]
            assert body["predictions"][0]["probability_survived"] == pytest.approx(answers[0]["probability_survived"], abs=1e-12)

        # Refused rows: the row, the field and the allowed values.
        status, body = server.predict([ROW, {**ROW, "pclass": 7}, {**ROW, "sex": "alien", "fare": -3}])
        assert status == 422
        fields = {(e["row"], e["field"]): e for e in body["errors"]}
        assert set(fields) == {(1, "pclass"), (2, "sex"), (2, "fare")}
        assert "1 to 3" in fields[(1, "pclass")]["allowed"] and "whole number" in fields[(1, "pclass")]["allowed"]
        assert fields[(2, "sex")]["allowed"] == "one of 'male', 'female'"
        assert "rows[1]: field 'pclass'" in body["error"]
        status, body = server.predict([{**ROW, "sex": None}, {**ROW, "cabin": "C85"}, {**ROW, KEY: "x"}])
        assert status == 422 and {(e["row"], e["field"]) for e in body["errors"]} == {(0, "sex"), (1, "cabin"), (2, KEY)}
        status, body = server.predict([{**ROW, KEY: 5}, {**ROW, KEY: 5}])
        assert status == 422 and "twice" in body["errors"][0]["message"]
        status, body = server.request("POST", "/invocations", {"dataframe_records": [{**ROW, "embarked": "X"}]})
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE" and "field 'embarked'" in body["message"]
        assert body["errors"][0]["allowed"] == "one of " + ", ".join(repr(p) for p in SPEC.feature("embarked").categories) + \
            ", or null (missing)"
        # Bounded and well-formed requests only.
        assert server.predict([ROW] * 1001)[0] == 413
        assert server.request("POST", "/predict", raw=b"x" * (1024 * 1024 + 1))[0] == 413
        assert server.request("POST", "/predict", raw=b"{not json")[0] == 400
        assert server.request("POST", "/predict", {"rows": "all"})[0] == 400
        assert server.request("POST", "/predict", {"rows": []})[0] == 400
        assert server.request("GET", "/predict")[0] == 405
        assert server.request("GET", "/nothing")[0] == 404
        # Keys the store holds. Rows added since training: with the same features (left
        # as stored; its prediction is recorded with the stored row's event time, origin
        # and label), with other features (not recorded: the features of a stored row are
        # history). A row of the champion's training: answered, not recorded.
        stored_rows = store.get_feature_group("titanic", 1).read()
        held = stored_rows[stored_rows["origin"] == "synthetic"].iloc[[0, 1]]
        assert held["survived"].notna().all()
        same, other = schema.frame_records(held[[KEY, *SPEC.feature_names]])
        other["fare"] = 999.0
        trained = schema.frame_records(trained_rows[[KEY, *SPEC.feature_names]])[0]
        status, body = server.predict([same, other, trained])
        assert status == 200 and [p[KEY] for p in body["predictions"]] == [same[KEY], other[KEY], trained[KEY]]
    finally:
        code = server.stop(signal.SIGTERM)
    assert code in (0, 128 + signal.SIGTERM), server.output()
    log = server.output()
    assert "Traceback" not in log and settings.tracking_uri not in log and SECRET not in log

    # Every valid row served (3 + 5), and only those, recorded on SIGTERM.
    live = live_rows(store)
    assert len(live) == 8 and len(store.get_feature_group("titanic", 1).read()) == before + 8
    assert live["survived"].isna().all() and (live["origin"] == "live").all()
    assert (live["event_time"] >= started.floor("s")).all()
    assert set(generated) | {990001} <= set(live[KEY])
    stored = live.set_index(KEY).loc[generated[1]]
    assert stored["sex"] == "female" and pd.isna(stored["age"]) and stored["fare"] == 71.28
    served = predictions(store)
    assert sorted(served.loc[served["origin"] == "live", KEY]) == sorted(live[KEY])
    assert (served["model_version"] == 1).all() and served["run_id"].isna().all()
    assert served.loc[served["origin"] == "live", "actual"].isna().all()
    assert len(served) == 9 and same[KEY] in set(served[KEY]) and other[KEY] not in set(served[KEY])
    assert trained[KEY] not in set(served[KEY])  # a training row is not monitoring traffic
    again = served.set_index(KEY).loc[same[KEY]]
    stored_same = held.set_index(KEY).loc[same[KEY]]
    assert again["origin"] == "synthetic" and again["event_time"] == stored_same["event_time"]
    # Its label is known: copied at recording time (not counted as unlabelled).
    assert again["actual"] == stored_same["survived"] and bool(again["correct"]) == (again["prediction"] == stored_same["survived"])
    assert f"not recorded: their key is stored with other features (first: {other[KEY]})" in log
    assert store.get_feature_group("titanic", 1).read().set_index(KEY).loc[other[KEY], "fare"] != 999.0
    served = served[served["origin"] == "live"]
    first = served.set_index(KEY).loc[generated[0]]
    assert first["proba_1"] == pytest.approx(proba[0][1], abs=1e-12)
    assert first["scored_at"] == stored_event_time(live, generated[0])


def stored_event_time(live: pd.DataFrame, key: int) -> pd.Timestamp:
    return live.set_index(KEY).loc[key, "event_time"]


def test_a_row_served_again_counts_once_and_a_flush_waits_for_the_lock_so_long_only(world) -> None:  # noqa: ANN001
    import time

    from serverless_ml.locks import LockBusy, job_lock
    from serverless_ml.serving.recorder import ServedRow, largest_generated_key, write_rows

    store, settings = world
    at, proba = pd.Timestamp.now(tz="UTC"), np.array([0.3, 0.7])

    def served(key: int, version: int) -> ServedRow:
        return ServedRow(key, dict(ROW), version, proba, at)

    assert largest_generated_key(SPEC, store) is None  # no generated key stored yet
    first = write_rows(SPEC, store, settings.state_dir, [served(880001, 1), served(880002, 1), served(2**52 + 77, 1)])
    assert first.predictions_inserted == 3 and first.features_inserted == 3
    # Where key reservations restart when their file is lost.
    assert largest_generated_key(SPEC, store) == 2**52 + 77
    # Served again after a promotion (version 2), or again by version 1: one served
    # prediction per row, whatever the version, so rolling windows count it once.
    again = write_rows(SPEC, store, settings.state_dir, [served(880001, 2), served(880002, 1), served(880003, 2)])
    assert (again.predictions_inserted, again.features_inserted, again.already_served) == (1, 1, 2)
    table = predictions(store)
    assert sorted(table[KEY]) == [880001, 880002, 880003, 2**52 + 77]
    assert table.set_index(KEY)["model_version"].to_dict() == {880001: 1, 880002: 1, 880003: 2, 2**52 + 77: 1}
    # Served again with other features: not recorded either, and named as any key stored
    # with other features is (found by a user trial: it was dropped without a word).
    changed = ServedRow(880002, {**ROW, "fare": ROW["fare"] + 1}, 1, proba, at)
    third = write_rows(SPEC, store, settings.state_dir, [changed, served(880003, 1)])
    assert (third.predictions_inserted, third.features_inserted, third.already_served) == (0, 0, 2)
    assert third.not_recorded == [880002]
    assert predictions(store).equals(table)
    # sml infer (or sml labels) holds the lock: the flush gives up after its wait, writing nothing.
    with job_lock(settings.state_dir, f"infer-{SPEC.name}"):
        started = time.monotonic()
        with pytest.raises(LockBusy, match=r"more than 0\.5 s"):
            write_rows(SPEC, store, settings.state_dir, [served(880004, 1)], lock_wait_s=0.5)
        assert 0.5 <= time.monotonic() - started < 5
    assert 880004 not in set(live_rows(store)[KEY]) and 880004 not in set(predictions(store)[KEY])


def test_a_late_label_for_a_served_row_reaches_monitoring(world, tmp_path: Path, run_cli) -> None:  # noqa: ANN001
    from serverless_ml.pipelines.features import add_daily_rows
    from serverless_ml.pipelines.infer import InferOptions, infer

    store, settings = world
    server = start_server(tmp_path, store, settings, "--flush-rows", "2", "--flush-seconds", "0.5")
    try:
        status, body = server.predict([ROW, {**ROW, "sex": "female", "title": "Miss", "age": 4.0}])
        assert status == 200
        keys = [p[KEY] for p in body["predictions"]]
        wait_for(lambda: len(predictions(store)) == 2, what="the served rows' flush")
    finally:
        server.stop(signal.SIGTERM)
    served_before = predictions(store).set_index(KEY).loc[keys]
    # Batch inference afterwards: the served rows are not scored again; the batch takes
    # them in beside the day's 6 new rows, and its run names them.
    today = dt.datetime.now(dt.timezone.utc).date()
    add_daily_rows(SPEC, store, today, n=6, seed=5)
    report = infer(SPEC, store, settings, InferOptions(as_of=today, figures=False), dt.datetime.now(dt.timezone.utc))
    mlflow.set_tracking_uri(None)
    assert (report.rows_scored, report.rows_served) == (8, 2)
    assert "scored 6 rows and took in 2 served rows" in report.summary()
    scored = predictions(store)
    assert len(scored) == 8 and (scored["run_id"] == report.run_id).all()
    after_infer = scored.set_index(KEY).loc[keys]
    # What was served stays as served: version, prediction, probabilities, request time.
    for column in ["model_version", "prediction", "probability", "scored_at", *[c for c in scored if c.startswith("proba_")]]:
        assert after_infer[column].tolist() == served_before[column].tolist(), column
    client = mlflow.MlflowClient(settings.tracking_uri)
    metrics = client.get_run(report.run_id).data.metrics
    assert metrics["rows_scored"] == 8 and metrics["served_rows"] == 2
    assert metrics["rows_labelled"] == 6  # the day's rows came with labels; the served ones have none
    rolling_before = metrics["rolling_rows"]

    labels = tmp_path / "labels.csv"
    pd.DataFrame({"PassengerId": keys, "Survived": [0, 1]}).to_csv(labels, index=False)
    result = run_cli("labels", "--dataset", "titanic", "--source", str(labels), store_dir=store.root)
    assert result.returncode == 0, result.stderr
    assert "2 set" in result.stdout
    after = predictions(store).set_index(KEY)
    assert after.loc[keys, "actual"].tolist() == [0, 1]
    assert after.loc[keys, "correct"].tolist() == [p == a for p, a in zip(after.loc[keys, "prediction"], [0, 1], strict=True)]
    run = client.get_run(report.run_id)
    assert run.data.metrics["rolling_rows"] == rolling_before + 2
    # The served rows are the batch's: its realized accuracy now counts them.
    assert run.data.metrics["rows_labelled"] == 8
    assert run.data.metrics["batch_accuracy"] == pytest.approx(after["correct"].astype(bool).mean())
    assert "labels_updated_at" in run.data.tags


def test_served_traffic_alone_gets_its_own_monitoring_run(world, tmp_path: Path, run_cli) -> None:  # noqa: ANN001
    """A deployment whose only traffic is served rows: ``sml infer`` logs a run of them
    (realized on the 2 labels back, estimated for all), not scoring them again; the next
    ``sml infer`` has nothing new; the labels give that run its realized accuracy."""
    store, settings = world
    rows = [{**ROW, "age": float(age), "sex": sex} for age in (4, 19, 33, 48, 61) for sex in ("male", "female")]
    server = start_server(tmp_path, store, settings, "--flush-rows", "5", "--flush-seconds", "0.5")
    try:
        status, body = server.predict(rows)
        assert status == 200
        keys = [p[KEY] for p in body["predictions"]]
        wait_for(lambda: len(predictions(store)) == len(rows), what="the served rows' flush")
    finally:
        server.stop(signal.SIGTERM)
    served = predictions(store)
    assert served["run_id"].isna().all()
    truth = [i % 2 for i in range(len(keys))]
    labels = tmp_path / "labels.csv"
    # Two outcomes known before any batch: stored, and said to wait for the next run.
    pd.DataFrame({"PassengerId": keys[:2], "Survived": truth[:2]}).to_csv(labels, index=False)
    early = run_cli("labels", "--dataset", "titanic", "--source", str(labels), store_dir=store.root)
    assert early.returncode == 0, early.stderr
    assert "note: 2 of the updated predictions are served rows no batch holds yet" in early.stdout

    result = run_cli("infer", "--dataset", "titanic", store_dir=store.root)
    assert result.returncode == 0, result.stderr
    assert "scored 0 rows and took in 10 served rows (predicted when served), 10 in the batch" in result.stdout
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name("titanic-monitoring")
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = run.data.metrics
    assert metrics["rows_scored"] == 10 and metrics["served_rows"] == 10 and metrics["rows_labelled"] == 2
    predicted = served.set_index(KEY).loc[keys[:2], "prediction"].tolist()
    assert metrics["batch_accuracy"] == np.mean([p == t for p, t in zip(predicted, truth[:2], strict=True)])
    # The estimate is CBPE of the served probabilities (no label yet: no recalibration).
    assert metrics["estimated_accuracy"] == pytest.approx(served["probability"].mean())
    after = predictions(store).set_index(KEY).loc[keys]
    assert (after["run_id"] == run.info.run_id).all()
    assert after["prediction"].tolist() == served.set_index(KEY).loc[keys, "prediction"].tolist()

    again = run_cli("infer", "--dataset", "titanic", store_dir=store.root)
    assert again.returncode == 0, again.stderr
    assert "nothing new to score" in again.stdout
    assert len(client.search_runs([experiment.experiment_id])) == 1

    pd.DataFrame({"PassengerId": keys, "Survived": truth}).to_csv(labels, index=False)
    result = run_cli("labels", "--dataset", "titanic", "--source", str(labels), store_dir=store.root)
    assert result.returncode == 0, result.stderr
    metrics = client.get_run(run.info.run_id).data.metrics
    right = np.mean([p == t for p, t in zip(after["prediction"], truth, strict=True)])
    assert metrics["rows_labelled"] == 10
    assert metrics["batch_accuracy"] == pytest.approx(right)


def test_a_promotion_is_served_without_a_restart(world, tmp_path: Path) -> None:  # noqa: ANN001
    store, settings = world
    server = start_server(tmp_path, store, settings)
    try:
        assert server.predict([ROW])[1]["model_version"] == 1
        client = mlflow.MlflowClient(settings.tracking_uri)
        first = client.get_model_version("titanic", "1")
        second = client.create_model_version("titanic", first.source, first.run_id, model_id=first.model_id)
        client.set_registered_model_alias("titanic", registry.CHAMPION, second.version)
        wait_for(lambda: server.predict([ROW])[1]["model_version"] == int(second.version), timeout=40,
                 what="serving the promoted version")
        assert server.process.poll() is None
    finally:
        server.stop(signal.SIGTERM)
    versions = set(predictions(store)["model_version"])
    assert versions == {1, int(second.version)}, versions


README_MARKER = "<!-- tests/integration/test_serve.py runs this block -->"


def readme_gunicorn_command() -> tuple[dict[str, str], list[str]]:
    """The README block after the marker: the variables it exports and the gunicorn command."""
    from readme_blocks import gunicorn_block

    return gunicorn_block(README_MARKER)


def test_gunicorn_workers_serve_and_record_as_the_readme_says(world, tmp_path: Path) -> None:  # noqa: ANN001
    import os
    import subprocess
    import sys

    from served import Server, free_port

    store, settings = world
    exported, command = readme_gunicorn_command()
    assert set(exported) >= {"SML_SERVE_DATASET", "MLFLOW_TRACKING_URI", "SML_STORE_DIR"}
    assert command[-1] == "serverless_ml.serving.server:create_server()"
    assert "--preload" not in command  # the Delta Lake runtime does not survive gunicorn's fork
    bind = command.index("--bind") + 1
    assert command[bind].startswith("127.0.0.1:")
    port = free_port()
    command[bind] = f"127.0.0.1:{port}"
    command[0] = str(Path(sys.executable).parent / "gunicorn")
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "SML_SERVE_DATASET": exported["SML_SERVE_DATASET"], "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "SML_STORE_DIR": str(store.root)}
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    server = Server(process, port, log)
    try:
        def answering() -> bool:
            assert process.poll() is None, server.output()
            try:
                return server.request("GET", "/ping")[0] == 200
            except OSError:
                return False

        wait_for(answering, timeout=90, what="gunicorn's workers answering")
        keys = []
        for _ in range(12):  # spread over both workers
            status, body = server.predict([ROW, {**ROW, "age": 30.0}])
            assert status == 200 and body["model_version"] == 1
            keys += [p[KEY] for p in body["predictions"]]
        assert len(set(keys)) == len(keys)  # two workers, no key twice
        # The workers' recorder threads run (started with their first request): their rows
        # are written by time (5 s), before any SIGTERM.
        wait_for(lambda: sorted(predictions(store)[KEY]) == sorted(keys), timeout=40,
                 what="the workers' flush by time")
    finally:
        server.stop(signal.SIGTERM)
    assert "Traceback" not in server.output()
    assert sorted(live_rows(store)[KEY]) == sorted(keys)  # every worker wrote its rows on SIGTERM
    assert sorted(predictions(store)[KEY]) == sorted(keys)


def test_serve_refuses_what_it_cannot_serve_in_one_line(run_cli, tmp_path: Path) -> None:  # noqa: ANN001
    result = run_cli("serve", "--dataset", "titanic", "--port", "0")
    assert result.returncode != 0 and result.stderr.startswith("error: --port must be between 1 and 65535")
    result = run_cli("serve", "--dataset", "titanic", "--flush-seconds", "nan")
    assert result.returncode != 0 and "error: --flush-seconds" in result.stderr
    from served import free_port

    result = run_cli("serve", "--dataset", "titanic", "--port", str(free_port()))  # an empty store
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: feature group 'titanic' version 1 is empty; run `sml features --dataset titanic` first"]
