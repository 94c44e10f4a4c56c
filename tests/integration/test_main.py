"""The `main` job (what `make demo` runs per dataset), from a shell whose PATH does not
hold the project's virtualenv: every step is a nested MLflow project run that succeeds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = pytest.mark.integration


def test_main_runs_every_step_nested_under_one_run(tmp_path: Path, tracking_uri: str, data_dir: Path) -> None:
    venv_bin = str(Path(sys.executable).parent)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "SML_DATA_DIR": str(data_dir),
           "SML_STORE_DIR": str(tmp_path / "store"), "PYTHONWARNINGS": "ignore"}
    env.pop("MLFLOW_RUN_ID", None)
    proc = subprocess.run(
        [sys.executable, "-m", "serverless_ml.cli", "main", "--dataset", "iris", "--trials", "2", "--days", "3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parent = [r for r in runs if r.data.tags.get("mlflow.runName") == "iris-main"]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    steps = {r.data.tags.get("mlflow.project.entryPoint"): r for r in runs
             if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id}
    assert set(steps) == {"features", "train", "simulate", "batch_inference"}
    assert {r.info.status for r in steps.values()} == {"FINISHED"}
    assert len([r for r in runs if r.data.tags.get("dataset") == "iris" and "as_of" in r.data.tags]) == 3
