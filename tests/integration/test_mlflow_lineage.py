"""What a data scientist reads in the MLflow UI: where artifacts live, which data each run
used (dataset inputs), which model a monitoring run scored with, the chosen
hyper-parameters as params, per-class metrics by class name, pruned trials told apart,
and named, described models. Real SQLite tracking databases and Delta tables throughout.

The ``mlflow run`` side of "artifacts never land in the checkout" is in
``tests/integration/test_mlproject.py`` (the entry points run from a copy of the project).
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient

from serverless_ml import registry, tracking, trial_logging
from serverless_ml.datasets import get_dataset
from serverless_ml.feature_store.base import arrow_schema, conform
from serverless_ml.inference.scoring import RowsDigest
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.simulate import SimulateOptions, simulate
from serverless_ml.pipelines.train import TrainOptions, logged_model_name, train
from serverless_ml.settings import resolve_settings
from serverless_ml.training.model import as_model_input
from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
DAY = dt.date(2024, 3, 1)


def _inputs(run) -> dict[str, tuple]:  # noqa: ANN001
    """A run's dataset inputs by context: (dataset, source dict, input tags)."""
    out = {}
    for item in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in item.tags}
        out[tags[tracking.DATASET_CONTEXT_TAG]] = (item.dataset, json.loads(item.dataset.source), tags)
    return out


def _champion_training_run():  # noqa: ANN202
    client = MlflowClient()
    version = client.get_model_version_by_alias("titanic", "champion")
    return client, version, client.get_run(version.tags["training_run_id"])


# --- where artifacts live ----------------------------------------------------------------------


def test_experiments_and_the_default_one_keep_artifacts_next_to_the_sqlite_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new database and the experiments the project creates in it put their artifacts
    in ``<database folder>/mlruns``, not in the working directory (here the 'checkout')."""
    checkout, databases = tmp_path / "checkout", tmp_path / "elsewhere"
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"sqlite:///{databases / 'mlflow.db'}")
    tracking.configure_tracking(settings)
    experiment_id = tracking.get_or_create_experiment("titanic-training")
    client = MlflowClient()
    root = databases / "mlruns"
    assert client.get_experiment(experiment_id).artifact_location == str(root / "titanic-training")
    assert client.get_experiment("0").artifact_location == str(root / "0")
    run = client.create_run(experiment_id)
    (tmp_path / "note.txt").write_text("kept next to the database")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)
    assert (root / "titanic-training" / run.info.run_id / "artifacts" / "note.txt").read_text() == "kept next to the database"
    assert list(checkout.iterdir()) == []
    # Created once: the second call finds it, wherever it is called from.
    monkeypatch.chdir(tmp_path)
    assert tracking.get_or_create_experiment("titanic-training") == experiment_id


def test_a_relative_database_resolves_against_the_working_directory_and_a_server_keeps_its_own_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tracking.artifact_root("sqlite:///dbs/mlflow.db") == tmp_path / "dbs" / "mlruns"
    assert tracking.experiment_artifact_location("iris-monitoring", "sqlite:////srv/ml/mlflow.db?mode=rwc") == (
        "/srv/ml/mlruns/iris-monitoring")
    for uri in ("http://127.0.0.1:5000", "https://user:pw@mlflow.internal", "sqlite://", "file:///srv/mlruns"):
        assert tracking.experiment_artifact_location("iris-training", uri) is None, uri


def test_a_database_used_directly_keeps_artifacts_in_the_folder_the_user_ran_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``postgresql://`` (and MySQL, SQL Server): ``./mlruns`` of the working directory, or of
    the folder ``mlflow run`` was started from (``SML_CALLER_DIR``, set by the entry points:
    their own process runs in the project's folder)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tracking.CALLER_DIR_ENV, raising=False)
    for uri in ("postgresql://u:p@db/mlflow", "postgresql+psycopg2://db/mlflow", "mysql+pymysql://u@db/m", "mssql://db/m"):
        assert tracking.experiment_artifact_location("iris-training", uri) == str(tmp_path / "mlruns" / "iris-training"), uri
    monkeypatch.setenv(tracking.CALLER_DIR_ENV, str(tmp_path / "caller"))
    assert tracking.artifact_root("postgresql://u:p@db/mlflow") == tmp_path / "caller" / "mlruns"
    assert tracking.artifact_root("sqlite:////srv/ml/mlflow.db") == Path("/srv/ml/mlruns")


# --- the training run -----------------------------------------------------------------------------


def test_the_training_run_logs_its_rows_as_dataset_inputs_with_source_version_and_digest(world) -> None:  # noqa: ANN001
    store, _ = world
    _client, _version, run = _champion_training_run()
    inputs = _inputs(run)
    assert set(inputs) == {"training", "testing"}
    keys = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/training/keys.parquet"))
    data_version = int(run.data.params["data_version"])
    for context, split in (("training", "train"), ("testing", "holdout")):
        dataset, source, tags = inputs[context]
        assert dataset.name == "titanic_training" and dataset.source_type == "feature_group"
        assert tags["split"] == split and tags["rows"] == "real rows only"
        assert {k: source[k] for k in ("feature_store", "feature_group", "feature_group_version", "feature_view",
                                       "feature_view_version", "data_version")} == {
            "feature_store": "local", "feature_group": "titanic", "feature_group_version": 1,
            "feature_view": "titanic_training", "feature_view_version": 1, "data_version": data_version}
        assert source["data_version_is"] == "Delta table version"
        # The source is enough to read the same rows again: the Delta table at that version.
        table = DeltaTable(source["path"], version=source["data_version"]).to_pandas()
        stored = store.get_feature_group("titanic", 1).read(version=data_version)
        assert sorted(table[SPEC.primary_key]) == sorted(stored[SPEC.primary_key])
        split_keys = keys.loc[keys["split"] == split, SPEC.primary_key].reset_index(drop=True)
        rows = stored.set_index(SPEC.primary_key).loc[split_keys].reset_index()
        frame = pd.concat([split_keys, as_model_input(rows, SPEC), rows[SPEC.label]], axis=1)
        assert dataset.digest == tracking.rows_digest(frame)
        assert json.loads(dataset.profile)["num_rows"] == len(split_keys)
        schema = [c["name"] for c in json.loads(dataset.schema)["mlflow_colspec"]]
        assert schema == [SPEC.primary_key, *SPEC.feature_names, SPEC.label]
    assert inputs["training"][0].digest != inputs["testing"][0].digest
    assert int(run.data.params["rows_train"]) == json.loads(inputs["training"][0].profile)["num_rows"]


def test_the_training_run_has_the_chosen_hyperparameters_as_params_and_class_named_metrics(world) -> None:  # noqa: ANN001
    client, _version, run = _champion_training_run()
    best = run.data.tags["best_trial_number"]
    (trial,) = client.search_runs(
        [run.info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}' and tags.trial_number = '{best}'",
    )
    assert trial.data.params and all(run.data.params[k] == v for k, v in trial.data.params.items())
    metrics = run.data.metrics
    for stem in ("test_precision", "test_recall", "test_f1", "test_support"):
        assert {f"{stem}_died", f"{stem}_survived"} <= set(metrics), stem
        assert f"{stem}_0" not in metrics and f"{stem}_1" not in metrics, stem
    # The positive class is "survived": the headline numbers are its per-class ones.
    assert metrics["test_f1"] == metrics["test_f1_survived"]


def test_the_logged_model_is_named_and_the_registry_describes_model_and_version(world) -> None:  # noqa: ANN001
    client, version, run = _champion_training_run()
    logged = client.get_logged_model(tracking.logged_model_id(version))
    assert logged.name == logged_model_name("titanic") == "titanic-random-forest"
    assert logged.source_run_id == run.info.run_id
    assert logged.params["n_estimators"] == run.data.params["n_estimators"]
    described = client.get_registered_model("titanic").description
    assert "titanic" in described and "random forest" in described and "survived" in described
    text = client.get_model_version("titanic", version.version).description
    holdout = float(version.tags["holdout_accuracy"])
    assert f"Holdout accuracy {holdout:.4f} on {run.data.params['rows_holdout']} rows" in text
    assert f"feature group titanic v1, data version {run.data.params['data_version']}" in text
    assert f"Optuna trial #{run.data.tags['best_trial_number']}" in text and run.info.run_id in text


def test_a_description_a_user_wrote_stays_and_a_champion_logged_as_model_still_scores(world) -> None:  # noqa: ANN001
    """Existing registries: a version logged under the old name ``model`` loads through the
    registry (batch inference), and a retrain leaves the user's description alone."""
    store, settings = world
    client = MlflowClient()
    client.update_registered_model("titanic", description="Ours: do not touch.")
    pipeline = mlflow.sklearn.load_model("models:/titanic/1")
    rows = store.get_feature_group("titanic", 1).read()
    with mlflow.start_run(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer columns
        old = mlflow.sklearn.log_model(pipeline, name="model", registered_model_name="titanic",
                                       input_example=as_model_input(rows.head(3), SPEC),
                                       serialization_format="cloudpickle", pip_requirements=["scikit-learn"])
    client.set_registered_model_alias("titanic", "champion", old.registered_model_version)
    client.set_model_version_tag("titanic", old.registered_model_version, "training_run_id",
                                 client.get_model_version("titanic", "1").tags["training_run_id"])
    add_daily_rows(SPEC, store, DAY, n=6, seed=0)
    report = infer(SPEC, store, settings, InferOptions(as_of=DAY, figures=False), dt.datetime(2024, 3, 2, tzinfo=dt.timezone.utc))
    assert report.model_version == int(old.registered_model_version) and report.rows_scored == 6
    monitoring = client.get_run(report.run_id)
    assert [m.model_id for m in monitoring.inputs.model_inputs] == [old.model_id]
    assert client.get_logged_model(old.model_id).name == "model"

    retrained = train(SPEC, store, settings, TrainOptions(trials=1, seed=3, folds=3, quiet=True, promote="never"))
    assert client.get_registered_model("titanic").description == "Ours: do not touch."
    assert "Holdout accuracy" in client.get_model_version("titanic", retrained.model_version).description


# --- monitoring runs ------------------------------------------------------------------------------


def test_a_monitoring_run_logs_its_batch_and_names_the_model_version_it_scored(world) -> None:  # noqa: ANN001
    store, settings = world
    add_daily_rows(SPEC, store, DAY, n=30, seed=0)  # enough labelled rows for per-class metrics
    report = infer(SPEC, store, settings, InferOptions(as_of=DAY, figures=False), dt.datetime(2024, 3, 2, tzinfo=dt.timezone.utc))
    client = MlflowClient()
    run = client.get_run(report.run_id)
    champion = client.get_model_version_by_alias("titanic", "champion")
    assert run.data.tags["model_version"] == str(champion.version)
    assert run.data.tags["model_uri"] == f"models:/titanic/{champion.version}"
    assert [m.model_id for m in run.inputs.model_inputs] == [tracking.logged_model_id(champion)] != [None]
    (context,) = _inputs(run)
    dataset, source, tags = _inputs(run)[context]
    assert (context, dataset.name, tags["as_of"]) == ("inference", "titanic", DAY.isoformat())
    group = store.get_feature_group("titanic", 1)
    assert source["data_version"] == group.data_version() == int(run.data.tags["data_version"])
    scored = store.get_feature_group("titanic_predictions", 1).read()
    batch = group.read()
    batch = batch[batch[SPEC.primary_key].isin(scored.loc[scored["run_id"] == report.run_id, SPEC.primary_key])]
    frame = batch[SPEC.store_columns].sort_values(SPEC.primary_key).reset_index(drop=True)
    # The digest of the rows as stored, whatever their order (it is computed as they stream by).
    digest = RowsDigest(arrow_schema(SPEC.store_schema()))
    for part in conform(frame.sample(frac=1, random_state=0), SPEC.store_schema(), [SPEC.primary_key], "t").to_batches(7):
        digest.add(part)
    assert len(frame) == 30 and dataset.digest == digest.hexdigest(tracking.DIGEST_LENGTH)
    metrics = run.data.metrics
    assert {"batch_recall_died", "batch_recall_survived", "predicted_share_died", "training_share_survived"} <= set(metrics)
    assert not {"batch_recall_0", "predicted_share_1", "training_share_0"} & set(metrics)


def test_simulated_runs_log_each_day_as_an_input_and_last_no_longer_than_their_batch(world) -> None:  # noqa: ANN001
    store, settings = world
    simulate(SPEC, store, settings, SimulateOptions(days=2, end_date=DAY, rows=5))
    client = MlflowClient()
    champion = client.get_model_version_by_alias("titanic", "champion")
    found = mlflow.search_runs(experiment_names=[registry.monitoring_experiment("titanic")], output_format="list")
    runs = [client.get_run(run.info.run_id) for run in found]  # with their model inputs
    assert len(runs) == 2
    digests = set()
    for run in runs:
        dataset, source, tags = _inputs(run)["inference"]
        assert tags["as_of"] == run.data.tags["as_of"] and json.loads(dataset.profile)["num_rows"] == 5
        assert source["feature_group"] == "titanic"
        assert [m.model_id for m in run.inputs.model_inputs] == [tracking.logged_model_id(champion)]
        digests.add(dataset.digest)
        # A simulated day's run starts and ends at its batch's scoring time, not "now".
        assert run.info.end_time == run.info.start_time
    assert len(digests) == 2


# --- trials ---------------------------------------------------------------------------------------


def test_a_pruned_trial_ends_killed_and_says_so(tracking_uri: str) -> None:
    client = MlflowClient()
    experiment = client.create_experiment("trials")
    parent = client.create_run(experiment).info.run_id
    record = {"study_name": "s", "params": {"n_estimators": 20}, "val_scores": [0.7], "train_scores": [0.8],
              "start_ms": 1_700_000_000_000, "end_ms": 1_700_000_001_000, "duration_s": 1.0}
    statuses = {}
    for number, state in enumerate(("COMPLETE", "PRUNED", "FAIL")):
        run_id = trial_logging.log_trial(client, experiment, parent, "titanic", {**record, "number": number, "state": state})
        run = client.get_run(run_id)
        statuses[state] = (run.info.status, run.data.tags["trial_state"], run.data.tags["pruned"])
    assert statuses == {"COMPLETE": ("FINISHED", "COMPLETE", "false"), "PRUNED": ("KILLED", "PRUNED", "true"),
                        "FAIL": ("FAILED", "FAIL", "false")}
