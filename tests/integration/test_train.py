"""Training against a real Delta store and a real (temporary) MLflow tracking database."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.errors import SmlError
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines import train as train_module
from serverless_ml.pipelines.features import backfill
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.settings import resolve_settings
from serverless_ml.registry import training_experiment
from serverless_ml.training import search
from serverless_ml.training.model import as_model_input

pytestmark = pytest.mark.integration

FAST = TrainOptions(trials=3, seed=7, folds=3, quiet=True)


@pytest.fixture
def titanic_store(tmp_path: Path, data_dir: Path) -> LocalFeatureStore:
    store = LocalFeatureStore(tmp_path / "store")
    spec = get_dataset("titanic")
    backfill(spec, store, load_source(spec, None, data_dir))
    return store


def _settings(store: LocalFeatureStore, uri: str):  # noqa: ANN202
    return resolve_settings(store_dir=store.root, tracking_uri=uri)


def _runs(experiment: str) -> pd.DataFrame:
    return mlflow.search_runs(experiment_names=[experiment], output_format="pandas")


def test_registered_champion_loads_and_predicts_from_raw_rows(titanic_store: LocalFeatureStore, tracking_uri: str) -> None:
    spec = get_dataset("titanic")
    report = train(spec, titanic_store, _settings(titanic_store, tracking_uri), FAST)
    assert report.decision.promote and report.model_version == "1"
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("titanic", "challenger").version) == "1"

    model = mlflow.pyfunc.load_model("models:/titanic@champion")
    rows = titanic_store.get_feature_group("titanic", 1).read().head(25)
    # The pyfunc flavor answers class names (serverless_ml/serving/flavor.py); the sklearn
    # flavor is the Pipeline, answering class values.
    predicted = model.predict(as_model_input(rows, spec))["prediction"]
    assert set(predicted) <= {"died", "survived"}
    assert (predicted.map({"died": 0, "survived": 1}).to_numpy() == rows["survived"].to_numpy()).mean() > 0.6
    values = mlflow.sklearn.load_model("models:/titanic@champion").predict(as_model_input(rows, spec))
    assert set(np.unique(values)) <= {0, 1}
    assert (values == predicted.map({"died": 0, "survived": 1}).to_numpy()).all()
    signature_inputs = [c.name for c in model.metadata.get_input_schema().inputs]
    assert signature_inputs == spec.feature_names


def test_the_models_own_examples_are_json(titanic_store: LocalFeatureStore, tracking_uri: str) -> None:
    """Found by a user trial: a missing age in the first training rows was written as a bare
    NaN in the model's example files, and a server refused the model's own example."""
    from serverless_ml.pipelines.train import log_and_register
    from serverless_ml.training.model import build_pipeline

    spec = get_dataset("titanic")
    rows = titanic_store.get_feature_group("titanic", 1).read()
    rows = rows.iloc[np.argsort(rows["age"].notna().to_numpy(), kind="stable")]  # missing ages first
    x = as_model_input(rows, spec)
    assert x["age"].head(5).isna().all()
    mlflow.set_tracking_uri(tracking_uri)
    model = build_pipeline(spec, {"n_estimators": 5}, seed=0).fit(x, rows[spec.label])
    version = log_and_register(model, x, "titanic", spec=spec)

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    folder = Path(mlflow.artifacts.download_artifacts(f"models:/titanic/{version}"))
    for name in ("input_example.json", "serving_input_example.json"):
        example = json.loads((folder / name).read_text(), parse_constant=no_constants)
        assert example
    mlflow.set_tracking_uri(None)


def test_every_trial_is_a_nested_run_and_the_parent_has_the_evaluation(
    titanic_store: LocalFeatureStore, tracking_uri: str
) -> None:
    spec = get_dataset("titanic")
    report = train(spec, titanic_store, _settings(titanic_store, tracking_uri), FAST)
    runs = _runs(training_experiment("titanic"))
    parent = runs[runs["run_id"] == report.run_id].iloc[0]
    children = runs[runs["tags.mlflow.parentRunId"] == report.run_id]
    assert len(children) == 3
    assert set(children["status"]) == {"FINISHED"}
    assert sorted(children["tags.trial_number"].astype(int)) == [0, 1, 2]
    assert children["tags.mlflow.runName"].str.startswith("titanic-trial-").all()
    assert children["params.n_estimators"].notna().all()
    client = MlflowClient()
    for run_id in children["run_id"]:
        folds = client.get_metric_history(run_id, "val_accuracy")
        assert 1 <= len(folds) <= 3
    assert parent["status"] == "FINISHED"
    assert parent["tags.best_trial_number"] == str(report.best_trial)
    for key in ("test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc",
                "val_accuracy_mean", "val_accuracy_std", "baseline_test_accuracy", "test_precision_survived"):
        assert not np.isnan(parent[f"metrics.{key}"]), key
    assert parent["metrics.test_accuracy"] > parent["metrics.baseline_test_accuracy"]
    assert parent["params.data_version"] == "0"
    assert parent["params.rows_total"] == "891"
    assert parent["params.numeric_products"] == "false"
    assert "n_estimators" in parent["params.search_space"]
    artifacts = {a.path for a in client.list_artifacts(report.run_id)} | {
        a.path for folder in ("evaluation", "training") for a in client.list_artifacts(report.run_id, folder)
    }
    for path in ("evaluation/confusion_matrix.json", "evaluation/confusion_matrix.png",
                 "evaluation/feature_importances.json", "training/keys.parquet", "search_space.json"):
        assert path in artifacts
    table = mlflow.artifacts.load_dict(f"runs:/{report.run_id}/evaluation/confusion_matrix.json")
    assert np.asarray(table["matrix"]).sum() == report.rows["holdout"]
    keys = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{report.run_id}/training/keys.parquet"))
    assert len(keys) == 891 and keys["passenger_id"].is_unique
    # The champion's probabilities are calibrated, and how well is measured on the holdout.
    assert parent["params.calibration_method"] == "sigmoid"  # 891 rows: fewer than ISOTONIC_MIN_ROWS
    reliability = mlflow.artifacts.load_dict(f"runs:/{report.run_id}/evaluation/reliability_diagram.json")
    assert "evaluation/reliability_diagram.png" in artifacts
    assert sum(b["rows"] for b in reliability["bins"]) == report.rows["holdout"]
    assert parent["metrics.test_ece"] == pytest.approx(reliability["ece"])
    assert parent["metrics.test_brier"] == pytest.approx(reliability["brier"])
    assert 0 <= parent["metrics.test_ece"] < 0.2 and 0 < parent["metrics.test_brier"] < 0.5


def test_promotion_never_keeps_the_champion_and_always_forces_it(
    titanic_store: LocalFeatureStore, tracking_uri: str
) -> None:
    spec = get_dataset("titanic")
    settings = _settings(titanic_store, tracking_uri)
    train(spec, titanic_store, settings, dataclasses.replace(FAST, trials=2))
    second = train(spec, titanic_store, settings, dataclasses.replace(FAST, trials=2, seed=8, promote="never"))
    client = MlflowClient()
    assert not second.decision.promote
    assert second.champion_accuracy is not None  # the champion was re-scored on this holdout
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("titanic", "challenger").version) == "2"
    third = train(spec, titanic_store, settings, dataclasses.replace(FAST, trials=2, seed=9, promote="always"))
    assert third.decision.promote
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "3"
    run = client.get_run(third.run_id)
    assert run.data.tags["promotion_decision"] == "promoted"
    assert "champion_test_accuracy" in run.data.metrics


def test_if_better_compares_with_the_champion_rescored_on_the_same_rows(
    titanic_store: LocalFeatureStore, tracking_uri: str, tmp_path: Path
) -> None:
    spec = get_dataset("titanic")
    settings = _settings(titanic_store, tracking_uri)
    train(spec, titanic_store, settings, dataclasses.replace(FAST, trials=2))
    # Same seed and data in a fresh study, under a time budget that does not bind: the same
    # pipeline, so the same holdout accuracy; a tie keeps the champion.
    second = train(spec, titanic_store, settings, dataclasses.replace(
        FAST, trials=2, timeout=600.0, storage=f"sqlite:///{tmp_path / 'other-study.db'}"))
    assert not second.kept
    assert second.champion_accuracy == pytest.approx(second.holdout_metrics["test_accuracy"])
    assert not second.decision.promote and "a tie keeps the champion" in second.decision.reason
    client = MlflowClient()
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("titanic", "challenger").version) == "2"


def test_the_champion_is_compared_only_on_holdout_rows_it_did_not_train_on(
    titanic_store: LocalFeatureStore, tracking_uri: str
) -> None:
    """Another seed draws another holdout, part of which the champion trained on: both
    models are scored on the rest only (the champion would be flattered by rows it learned)."""
    spec = get_dataset("titanic")
    settings = _settings(titanic_store, tracking_uri)
    first = train(spec, titanic_store, settings, dataclasses.replace(FAST, trials=1))
    second = train(spec, titanic_store, settings, dataclasses.replace(FAST, trials=1, seed=8))
    # One trial ran; the default forests still queued behind it are not trials yet.
    assert (first.trials_this_run, first.trials_total) == (1, 1)
    client = MlflowClient()

    def keys(run_id: str) -> pd.DataFrame:
        return pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/training/keys.parquet"))

    seen = set(keys(first.run_id).query("split == 'train'")[spec.primary_key])
    holdout = keys(second.run_id).query("split == 'holdout'")[spec.primary_key]
    unseen = [k for k in holdout if k not in seen]
    assert 0 < len(unseen) < len(holdout)  # the new holdout overlaps the champion's training rows
    rows = titanic_store.get_feature_group(spec.name, spec.version).read().set_index(spec.primary_key).loc[unseen]
    x, y = as_model_input(rows.reset_index(), spec), rows[spec.label]
    champion = mlflow.sklearn.load_model("models:/titanic/1")
    challenger = mlflow.sklearn.load_model("models:/titanic/2")
    metrics = client.get_run(second.run_id).data.metrics
    assert metrics["champion_comparison_rows"] == len(unseen)
    assert metrics["champion_test_accuracy"] == pytest.approx(champion.score(x, y))
    assert metrics["challenger_comparison_accuracy"] == pytest.approx(challenger.score(x, y))
    assert f"on {len(unseen)} holdout rows the champion did not train on" in second.decision.reason
    assert second.decision.promote == (challenger.score(x, y) > champion.score(x, y))  # a tie keeps the champion


def test_a_resumed_study_continues_its_trial_count(titanic_store: LocalFeatureStore, tracking_uri: str) -> None:
    spec = get_dataset("titanic")
    # A state folder that does not exist yet: the default study database's folder is made.
    state = titanic_store.root.parent / "state" / "not-yet"
    settings = resolve_settings(store_dir=titanic_store.root, tracking_uri=tracking_uri, state_dir=state)
    options = dataclasses.replace(FAST, trials=2, study_name="resume-me")
    first = train(spec, titanic_store, settings, options)
    assert (state / "optuna.db").is_file()
    # Other --trials (the same ones would give the champion back: see test_promotion_rerun.py).
    second = train(spec, titanic_store, settings, dataclasses.replace(options, trials=3))
    assert (first.trials_total, second.trials_total, second.trials_this_run) == (2, 5, 3)
    runs = _runs(training_experiment("titanic"))
    numbers = runs[runs["tags.mlflow.parentRunId"] == second.run_id]["tags.trial_number"].astype(int)
    assert sorted(numbers) == [2, 3, 4]


def test_two_worker_processes_share_one_sqlite_study_with_distinct_trials(
    titanic_store: LocalFeatureStore, tracking_uri: str, tmp_path: Path
) -> None:
    spec = get_dataset("titanic")
    storage = f"sqlite:///{tmp_path / 'shared-study.db'}"
    options = dataclasses.replace(FAST, trials=6, workers=2, storage=storage, study_name="shared")
    report = train(spec, titanic_store, _settings(titanic_store, tracking_uri), options)
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials(deepcopy=False)
    # Each process stops once the study holds the cap; both may finish one in flight.
    assert 6 <= len(trials) <= 7
    assert len({t.number for t in trials}) == len(trials)
    assert len({tuple(sorted(map(str, t.params.items()))) for t in trials}) == len(trials)
    assert {t.state for t in trials} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    children = _runs(training_experiment("titanic"))
    children = children[children["tags.mlflow.parentRunId"] == report.run_id]
    assert len(children) == len(trials)
    assert [v.version for v in MlflowClient().search_model_versions("name='titanic'")] == [1]
    assert report.model_version == "1"


def test_same_seed_and_data_give_the_same_best_trial(titanic_store: LocalFeatureStore, tracking_uri: str, tmp_path: Path) -> None:
    spec = get_dataset("titanic")
    settings = _settings(titanic_store, tracking_uri)
    reports = [
        train(spec, titanic_store, settings,
              # --promote always: the second would otherwise give the first version back.
              dataclasses.replace(FAST, trials=4, storage=f"sqlite:///{tmp_path / f'study{i}.db'}", promote="always"))
        for i in range(2)
    ]
    assert reports[0].best_params == reports[1].best_params
    assert reports[0].cv_mean == reports[1].cv_mean
    assert reports[0].holdout_metrics["test_accuracy"] == reports[1].holdout_metrics["test_accuracy"]


def test_a_failure_inside_the_run_ends_it_failed_and_registers_nothing(
    titanic_store: LocalFeatureStore, tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("artifact store is full")

    monkeypatch.setattr(train_module, "log_and_register", broken)
    with pytest.raises(RuntimeError, match="artifact store is full"):
        train(get_dataset("titanic"), titanic_store, _settings(titanic_store, tracking_uri), FAST)
    runs = _runs(training_experiment("titanic"))
    assert "RUNNING" not in set(runs["status"])
    parents = runs[runs["tags.mlflow.parentRunId"].isna()] if "tags.mlflow.parentRunId" in runs else runs
    assert list(parents["status"]) == ["FAILED"]
    assert MlflowClient().search_registered_models() == []
    assert mlflow.active_run() is None


# --- bad input through the CLI: one line, non-zero exit, no run, nothing registered ---------


def _spec_dataset(tmp_path: Path, rows: pd.DataFrame, classes: list[str]) -> Path:
    rows.to_csv(tmp_path / "tiny.csv", index=False)
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\nsource: {path: tiny.csv}\nlabel: kind\n"
        f"classes: [{', '.join(classes)}]\n"
        "features:\n  x: {type: double, min: -100, max: 100}\n"
    )
    return spec


def _tiny(n: int, labels: list[str]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"x": rng.normal(size=n).round(3), "kind": [labels[i % len(labels)] for i in range(n)]})


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("too_few_rows", "training rows; need at least 20"),
        ("single_class", "single class"),
        ("class_missing_from_data", "class 'c' has 0 rows; need at least 4 for --folds 3"),
        ("unknown_dataset", "unknown dataset 'nope'"),
        ("bad_storage", "cannot open Optuna storage"),
        ("no_features_yet", "run `sml features --dataset titanic` first"),
        ("bad_trials", "--trials must be >= 1"),
    ],
)
def test_bad_training_input_fails_cleanly(
    case: str, expected: str, run_cli, tmp_path: Path, store_dir: Path, data_dir: Path, tracking_uri: str  # noqa: ANN001
) -> None:
    dataset = "titanic"
    extra: list[str] = []
    if case == "too_few_rows":
        dataset = str(_spec_dataset(tmp_path, _tiny(12, ["a", "b"]), ["a", "b"]))
    elif case == "single_class":
        dataset = str(_spec_dataset(tmp_path, _tiny(60, ["a"]), ["a", "b"]))
    elif case == "class_missing_from_data":
        dataset = str(_spec_dataset(tmp_path, _tiny(60, ["a", "b"]), ["a", "b", "c"]))
    elif case == "unknown_dataset":
        dataset = "nope"
    elif case == "bad_storage":
        extra = ["--storage", f"sqlite:///{tmp_path / 'missing-dir' / 'x' / 'optuna.db'}"]
    elif case == "bad_trials":
        extra = ["--trials", "0"]
    if case not in ("unknown_dataset", "no_features_yet"):
        spec = get_dataset(dataset)
        backfill(spec, LocalFeatureStore(store_dir), load_source(spec, None, data_dir))
    code, _out, err = run_cli(
        "train", "--dataset", dataset, "--trials", "2", "--folds", "3", "--quiet", *extra,
        env={"MLFLOW_TRACKING_URI": tracking_uri},
    )
    assert code != 0
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert expected in lines[0]
    assert "Traceback" not in err
    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.search_registered_models() == []
    experiments = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([e.experiment_id for e in experiments]) if experiments else []
    assert runs == []


def test_unopenable_storage_is_refused_before_any_run(titanic_store: LocalFeatureStore, tracking_uri: str) -> None:
    with pytest.raises(SmlError, match="cannot open Optuna storage"):
        train(get_dataset("titanic"), titanic_store, _settings(titanic_store, tracking_uri),
              dataclasses.replace(FAST, storage="postgresql://user:secret@127.0.0.1:9/nowhere"))
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_a_killed_training_job_leaves_no_run_running_after_the_next_one(
    titanic_store: LocalFeatureStore, tracking_uri: str, tmp_path: Path
) -> None:
    """SIGKILL ``sml train`` once its trials are being logged: its parent run stays RUNNING
    (and a trial's, if its logging helper dies mid-trial). The next training job on this
    machine ends them FAILED, tagged ``recovered``; a RUNNING run of a live process (a worker still at work) and one from
    another machine (a shared study) are left alone."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    from serverless_ml.tracking import HOST_TAG, PID_TAG

    env = {**os.environ, "SML_STORE_DIR": str(titanic_store.root), "MLFLOW_TRACKING_URI": tracking_uri}
    proc = subprocess.Popen(
        [sys.executable, "-m", "serverless_ml.cli", "train", "--dataset", "titanic", "--trials", "200", "--folds", "3",
         "--seed", str(FAST.seed), "--quiet"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    client = MlflowClient(tracking_uri=tracking_uri)
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            experiment = client.get_experiment_by_name(training_experiment("titanic"))
            # The parent and at least two trials logged, and a trial at work in the study
            # (under load the job may sit between two trials, waiting for its logging helper).
            if experiment is not None and len(client.search_runs([experiment.experiment_id])) >= 3 and _running_trials(tmp_path, tracking_uri):
                break
            assert proc.poll() is None, "the training job ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("the training job logged no trials within 180 s")
    finally:
        helpers = _children(proc.pid)  # the trial-logging helper (and multiprocessing's tracker)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    experiment_id = client.get_experiment_by_name(training_experiment("titanic")).experiment_id
    # The job's trial-logging helper outlives it briefly (it logs the trials it already
    # received, creating runs meanwhile): wait until it is gone.
    assert helpers, "the training job had no helper process"
    deadline = time.monotonic() + 120
    while any(_pid_alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, "a process of the killed job outlived it by 120 s"
        time.sleep(0.2)
    killed = [r.info.run_id for r in client.search_runs([experiment_id], "attributes.status = 'RUNNING'")]
    assert killed, "the killed job left no RUNNING run: the test did not test anything"
    live = client.create_run(experiment_id, tags={HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}).info.run_id
    remote = client.create_run(experiment_id, tags={HOST_TAG: "another-machine", PID_TAG: "1"}).info.run_id
    # Its Optuna trial stayed RUNNING too (issue 16); a live process's and another machine's are left alone.
    study = _the_study(tmp_path, tracking_uri)
    killed_trials = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))]
    assert killed_trials, "the killed job left no RUNNING trial: the test did not test anything"
    live_trial = study.ask()
    search.stamp_owner(live_trial)
    remote_trial = study.ask()
    remote_trial.set_user_attr(HOST_TAG, "another-machine")
    remote_trial.set_user_attr(PID_TAG, "1")

    train(get_dataset("titanic"), titanic_store, _settings(titanic_store, tracking_uri),
          dataclasses.replace(FAST, trials=1, promote="never"))

    for run_id in killed:
        run = client.get_run(run_id)
        assert run.info.status == "FAILED" and "recovered" in run.data.tags, run_id
    assert client.get_run(live).info.status == "RUNNING"
    assert client.get_run(remote).info.status == "RUNNING"
    assert len(client.search_runs([experiment_id], "attributes.status = 'RUNNING'")) == 2
    trials = {t.number: t for t in _the_study(tmp_path, tracking_uri).get_trials()}
    for number in killed_trials:
        assert trials[number].state == optuna.trial.TrialState.FAIL and "recovered" in trials[number].user_attrs, number
    assert trials[live_trial.number].state == optuna.trial.TrialState.RUNNING
    assert trials[remote_trial.number].state == optuna.trial.TrialState.RUNNING


def _running_trials(tmp_path: Path, tracking_uri: str) -> list[int]:
    """The numbers of the RUNNING trials of the one study (none while it does not exist)."""
    from serverless_ml.settings import resolve_settings

    storage = resolve_settings(store_dir=tmp_path / "store", tracking_uri=tracking_uri).optuna_storage
    try:
        summaries = optuna.get_all_study_summaries(storage)
    except Exception:  # noqa: BLE001 - the storage is being created by the job
        return []
    if len(summaries) != 1:
        return []
    study = optuna.load_study(study_name=summaries[0].study_name, storage=storage)
    return [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]


def _the_study(tmp_path: Path, tracking_uri: str) -> optuna.Study:
    """The one Optuna study in the default storage next to the tracking database."""
    from serverless_ml.settings import resolve_settings

    storage = resolve_settings(store_dir=tmp_path / "store", tracking_uri=tracking_uri).optuna_storage
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def _children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (Linux /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def _pid_alive(pid: int) -> bool:
    """A running process (a zombie, killed but not reaped yet, is not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_trial_logging_errors_surface_when_the_search_ends(tracking_uri: str) -> None:
    """Trials are logged by a helper process: an MLflow error there is not lost, the
    logger's ``close`` (which the training job calls after the search) raises it as one
    line, once, and the helper has exited."""
    from serverless_ml.trial_logging import TrialLogger

    logger = TrialLogger(tracking_uri, "987654321", "no-such-parent", "titanic")  # no such experiment
    process = logger._process
    study = optuna.create_study(direction="maximize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2, callbacks=[logger])
    with pytest.raises(SmlError, match=r"^logging the trials to MLflow failed: MlflowException: .*987654321") as raised:
        logger.close()
    assert "\n" not in str(raised.value)
    assert not process.is_alive() and process.exitcode == 0
    logger.close()  # reported once; closing again is quiet


def test_trial_logging_raises_at_the_next_trial_once_the_helper_failed(tracking_uri: str) -> None:
    """A search whose trials cannot be logged stops at the next trial instead of running
    on unrecorded; closing afterwards does not report the error twice."""
    import time

    from serverless_ml.trial_logging import TrialLogger

    logger = TrialLogger(tracking_uri, "987654321", "no-such-parent", "titanic")
    study = optuna.create_study(direction="maximize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        if trial.number > 0:  # give the helper time to fail on trial 0
            deadline = time.monotonic() + 60
            while not logger._errors.poll() and time.monotonic() < deadline:
                time.sleep(0.05)
        return trial.suggest_float("x", 0, 1)

    with pytest.raises(SmlError, match="logging the trials to MLflow failed"):
        study.optimize(objective, n_trials=50, callbacks=[logger])
    assert len(study.trials) == 2
    logger.close()


def test_trial_logging_helper_logs_what_it_received_and_exits_when_the_job_is_killed(
    tracking_uri: str, tmp_path: Path
) -> None:
    """SIGKILL the tuning process right after it handed trials over: the helper still
    logs them (finished, nested under the parent) and then exits on its own."""
    import signal
    import subprocess
    import sys
    import time

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.create_experiment("killed-logger")
    parent = client.create_run(experiment_id).info.run_id
    script = tmp_path / "job.py"
    script.write_text(
        "import os, signal, sys, optuna\n"
        "from serverless_ml.trial_logging import TrialLogger\n"
        "if __name__ == '__main__':\n"
        f"    logger = TrialLogger({tracking_uri!r}, {experiment_id!r}, {parent!r}, 'titanic')\n"
        "    print(logger._process.pid, flush=True)\n"
        "    optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "    study = optuna.create_study(direction='maximize')\n"
        "    study.optimize(lambda t: t.suggest_float('x', 0, 1), n_trials=3, callbacks=[logger])\n"
        "    logger._records.close(); logger._records.join_thread()  # handed over\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    helper = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not _pid_alive(helper):
            break
        time.sleep(0.1)
    else:
        pytest.fail("the trial-logging helper outlived its killed job by 60 s")
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert sorted(r.data.tags["trial_number"] for r in runs) == ["0", "1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_labelled_live_rows_are_real_rows_and_unlabelled_ones_are_never_trained_on(
    titanic_store: LocalFeatureStore, tracking_uri: str
) -> None:
    spec = get_dataset("titanic")
    group = titanic_store.get_feature_group("titanic", 1)
    live = group.read().head(40).copy()
    live["passenger_id"] += 10_000
    live["origin"] = "live"
    live["survived"] = pd.array([*live["survived"].head(25), *[pd.NA] * 15], dtype="Int64")  # 15 await their label
    group.insert(live, wait=True)
    report = train(spec, titanic_store, _settings(titanic_store, tracking_uri), FAST)
    assert report.rows["total"] == 891 + 25
    keys = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{report.run_id}/training/keys.parquet"))
    trained = set(keys["passenger_id"])
    assert set(live["passenger_id"].head(25)) <= trained
    assert not set(live["passenger_id"].tail(15)) & trained
