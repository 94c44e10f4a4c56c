"""Tuning workers on several machines: `sml train --workers-only` processes add trials to one
Optuna study on PostgreSQL at the same time, then one `sml train --trials 0` refits the
study's best trial and registers it once.

The study lives in its own database of the session's PostgreSQL cluster; tracking is a
temporary SQLite database shared by the processes (the tracking-server test covers
HTTP). The workers here are processes on one machine: to the study they are no
different from processes on several.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import backfill

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRIALS_PER_WORKER = 4
STUDY = "shared-titanic"


@pytest.fixture
def titanic_store(store_dir: Path, data_dir: Path) -> Path:
    spec = get_dataset("titanic")
    backfill(spec, LocalFeatureStore(store_dir), load_source(spec, None, data_dir))
    return store_dir


def _train(cli_process, tmp_path: Path, store_dir: Path, data_dir: Path, tracking_uri: str, *args: str,  # noqa: ANN001, ANN202
           storage: str | None = None):
    """``sml train``; ``storage`` goes in SML_OPTUNA_STORAGE (off the command line)."""
    env = {"MLFLOW_TRACKING_URI": tracking_uri, **({"SML_OPTUNA_STORAGE": storage} if storage else {})}
    return cli_process(
        ["train", "--dataset", "titanic", "--folds", "3", "--quiet", *args],
        cwd=tmp_path, store_dir=store_dir, data_dir=data_dir, env=env,
    )


def test_two_workers_share_one_postgresql_study_and_one_refit_registers_once(
    postgres_cluster, cli_process, titanic_store: Path, data_dir: Path, tracking_uri: str, tmp_path: Path  # noqa: ANN001
) -> None:
    storage = postgres_cluster.create_database("optuna_shared")
    worker_args = [
        ["--study-name", STUDY, "--workers-only", "--trials", str(TRIALS_PER_WORKER), "--worker-id", "1"],
        # No --worker-id: a random sampler seed (the same seed would suggest the same points).
        ["--study-name", STUDY, "--workers-only", "--trials", str(TRIALS_PER_WORKER)],
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(
            lambda args: _train(cli_process, tmp_path, titanic_store, data_dir, tracking_uri, *args, storage=storage),
            worker_args,
        ))
    for result in results:
        assert result.returncode == 0, result.stderr
        assert f"this worker added {TRIALS_PER_WORKER} trials" in result.stdout
        assert "nothing registered" in result.stdout

    study = optuna.load_study(study_name=STUDY, storage=storage)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 2 * TRIALS_PER_WORKER
    assert sorted(t.number for t in trials) == list(range(2 * TRIALS_PER_WORKER))
    assert len({tuple(sorted(map(str, t.params.items()))) for t in trials}) == len(trials), "a point was tried twice"
    by_worker: dict[str, list[int]] = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker_run_id"], []).append(trial.number)
    assert sorted(map(len, by_worker.values())) == [TRIALS_PER_WORKER, TRIALS_PER_WORKER]

    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.search_registered_models() == []
    experiment = client.get_experiment_by_name("titanic-training")
    runs = client.search_runs([experiment.experiment_id])
    workers = [r for r in runs if r.data.tags.get("sml.role") == "worker"]
    assert {r.info.run_id for r in workers} == set(by_worker)
    seeds = {r.data.params["sampler_seed"] for r in workers}
    assert len(seeds) == 2
    for worker in workers:
        assert worker.data.tags["study_name"] == STUDY
        assert worker.data.params["optuna_storage"].startswith("postgresql://sml:***@")
        nested = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == worker.info.run_id]
        assert sorted(int(r.data.tags["trial_number"]) for r in nested) == sorted(by_worker[worker.info.run_id])

    refit = _train(cli_process, tmp_path, titanic_store, data_dir, tracking_uri,
                   "--study-name", STUDY, "--trials", "0", storage=storage)
    assert refit.returncode == 0, refit.stderr
    assert f"study {STUDY}: 0 trials this run, {2 * TRIALS_PER_WORKER} in the study" in refit.stdout
    assert "registered version 1 as challenger; promoted to champion" in refit.stdout
    versions = client.search_model_versions("name='titanic'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("titanic", "champion").version) == "1"
    run = client.get_run(versions[0].tags["training_run_id"])
    assert run.data.tags["sml.role"] == "refit"
    assert run.data.tags["best_trial_number"] == str(study.best_trial.number)
    assert set(run.data.tags["worker_run_ids"].split(",")) == set(by_worker)
    assert len(optuna.load_study(study_name=STUDY, storage=storage).get_trials(deepcopy=False)) == len(trials)

    marker = postgres_cluster.password
    for result in [*results, refit]:
        assert marker not in result.stdout and marker not in result.stderr
    for logged in client.search_runs([experiment.experiment_id]):
        assert all(marker not in value for value in {**logged.data.params, **logged.data.tags}.values())


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("refit_missing_study", "study 'never-tuned' does not exist in postgresql://sml:***@"),
        ("workers_only_without_study_name", "--workers-only needs --study-name"),
        ("workers_only_with_zero_trials", "--trials must be >= 1 with --workers-only"),
        ("worker_on_other_rows", "was tuned on other training rows or settings (rows_sha256, seed differ)"),
    ],
)
def test_bad_shared_study_use_fails_in_one_line(
    case: str, expected: str, postgres_cluster, cli_process, titanic_store: Path, data_dir: Path,  # noqa: ANN001
    tracking_uri: str, tmp_path: Path,
) -> None:
    storage = postgres_cluster.create_database("optuna_bad_input")
    args = {
        "refit_missing_study": ["--storage", storage, "--study-name", "never-tuned", "--trials", "0"],
        "workers_only_without_study_name": ["--storage", storage, "--workers-only", "--trials", "2"],
        "workers_only_with_zero_trials": ["--storage", storage, "--study-name", "x", "--workers-only", "--trials", "0"],
        "worker_on_other_rows": ["--storage", storage, "--study-name", "pinned", "--workers-only", "--trials", "1",
                                 "--seed", "43"],
    }[case]
    if case == "worker_on_other_rows":
        first = _train(cli_process, tmp_path, titanic_store, data_dir, tracking_uri,
                       "--storage", storage, "--study-name", "pinned", "--workers-only", "--trials", "1")
        assert first.returncode == 0, first.stderr
    result = _train(cli_process, tmp_path, titanic_store, data_dir, tracking_uri, *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0]
    assert postgres_cluster.password not in result.stderr
    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.search_registered_models() == []
    if case == "worker_on_other_rows":
        return  # the first worker's run is there; the refused one added none
    experiments = [e.experiment_id for e in client.search_experiments() if e.name != "Default"]
    assert (client.search_runs(experiments) if experiments else []) == []
