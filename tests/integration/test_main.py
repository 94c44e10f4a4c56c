"""The demo (`make demo`'s batch part): the `main` job for Iris and Titanic at once, from a
shell whose PATH does not hold the project's virtualenv, on a tracking database that does
not exist yet. Every step is a nested MLflow project run that succeeds, and the last one
scores today's batch."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration

DAYS = 3


def test_demo_runs_main_for_both_datasets_with_every_step_nested(tmp_path: Path, data_dir: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    # A fresh database: the two datasets' jobs must not race to create its tables.
    tracking_uri = f"sqlite:///{tmp_path / 'demo' / 'mlflow.db'}"
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "SML_DATA_DIR": str(data_dir),
           "SML_STORE_DIR": str(tmp_path / "demo" / "feature_store"), "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run(
        [sys.executable, "-m", "serverless_ml.demo", "--no-site", "--trials", "2", "--days", str(DAYS)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    assert "batch part finished" in proc.stdout
    # Each dataset's output is prefixed, so the interleaved lines stay readable.
    assert "[iris] " in proc.stdout and "[titanic] " in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert "nothing new to score" not in proc.stdout
    # --no-site: no site is started, so no site URL is printed.
    assert "http://" not in proc.stdout + proc.stderr, proc.stdout

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    for dataset in ("iris", "titanic"):
        parent = [r for r in runs if r.data.tags.get("mlflow.runName") == f"{dataset}-main"]
        assert len(parent) == 1 and parent[0].info.status == "FINISHED", dataset
        steps = {r.data.tags.get("mlflow.project.entryPoint"): r for r in runs
                 if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id}
        assert set(steps) == {"features", "train", "simulate", "daily", "batch_inference"}, dataset
        assert {r.info.status for r in steps.values()} == {"FINISHED"}, dataset
        batches = [r for r in runs if r.data.tags.get("dataset") == dataset and "as_of" in r.data.tags]
        # The simulated days up to yesterday, then today's batch: the daily step's rows.
        today = dt.datetime.now(dt.timezone.utc).date()
        dates = sorted(r.data.tags["as_of"] for r in batches)
        assert dates == [(today - dt.timedelta(days=n)).isoformat() for n in range(DAYS, -1, -1)], dataset
        assert {r.info.status for r in batches} == {"FINISHED"}, dataset
        todays = next(r for r in batches if r.data.tags["as_of"] == today.isoformat())
        assert todays.data.metrics["rows_scored"] == 10, dataset
        assert todays.data.tags["sml.project_run_id"] == steps["batch_inference"].info.run_id, dataset
        assert int(client.get_model_version_by_alias(dataset, "champion").version) == 1


def test_demo_reports_a_failed_dataset_in_one_line(tmp_path: Path, data_dir: Path) -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "SML_DATA_DIR": str(data_dir),
           "SML_STORE_DIR": str(tmp_path / "feature_store"), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "serverless_ml.demo", "--no-site", "--datasets", "wine", "--trials", "2", "--days", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1] == "error: the main job failed for wine (exit 2)"
    assert "[wine] error: unknown dataset 'wine'" in proc.stdout


def test_a_failed_step_leaves_its_reason_on_its_run_and_on_the_main_run(tmp_path: Path, data_dir: Path) -> None:
    """A source with a label outside the spec's classes passes main's up-front checks and
    fails in the features step: both FAILED runs carry the step's ``error:`` line."""
    (tmp_path / "mine.csv").write_text("id,x,kind\n" + "".join(f"{i},{i / 10},{'abc'[i % 3]}\n" for i in range(30)))
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nsource: {path: mine.csv}\nlabel: kind\nprimary_key: id\nclasses: [a, b]\n"
        "features:\n  x: {type: double}\n")
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "SML_DATA_DIR": str(data_dir),
           "SML_STORE_DIR": str(tmp_path / "feature_store"), "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_RUN_ID", None)
    sml = str(Path(sys.executable).parent / "sml")
    proc = subprocess.run([sml, "main", "--dataset", "mine.yaml", "--trials", "1", "--days", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]
    step_error = next(line for line in errors if "'c'" in line)
    assert "Traceback" not in proc.stderr

    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (main,) = [r for r in runs if r.data.tags.get("mlflow.runName") == "mine-main"]
    (features,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == main.info.run_id]
    assert main.info.status == features.info.status == "FAILED"
    assert features.data.tags["mlflow.project.entryPoint"] == "features"
    assert features.data.tags["sml.error"] == step_error.removeprefix("error: ")
    assert main.data.tags["sml.error"].startswith("step 'features' failed: ")
    assert main.data.tags["sml.error"].endswith(f"({features.data.tags['sml.error']})")
