"""A PostgreSQL database as the tracking URI, used directly (no tracking server), under
``mlflow run``: the experiments the project creates keep their artifacts in ``./mlruns``
of the folder the user ran ``mlflow run`` from, not in the project's folder where MLflow
runs the entry point (found by a user trial: the models landed in the checkout, which
``git clean -X`` empties while the database still points at them).

Part of the ``postgres_cluster`` unit (tests/conftest.py): one cluster per test run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 300


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if "__pycache__" not in p.parts}


def test_mlflow_run_on_a_postgresql_uri_keeps_artifacts_in_the_caller_s_folder(
    postgres_cluster, tmp_path: Path, data_dir: Path  # noqa: ANN001
) -> None:
    uri = postgres_cluster.create_database("tracking_direct")
    checkout, caller = tmp_path / "checkout", tmp_path / "caller"
    checkout.mkdir()
    caller.mkdir()
    for name in ("MLproject", "conda.yaml"):
        shutil.copy2(REPO_ROOT / name, checkout / name)
    shutil.copytree(REPO_ROOT / "entrypoints", checkout / "entrypoints", ignore=shutil.ignore_patterns("__pycache__"))
    before = _files(checkout)
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SML_")) and k != "VIRTUAL_ENV"}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", MLFLOW_TRACKING_URI=uri,
               MLFLOW_DISABLE_TELEMETRY="true", SML_STORE_DIR=str(tmp_path / "store"), SML_DATA_DIR=str(data_dir),
               SML_CACHE_DIR=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "tmp"), PYTHONWARNINGS="ignore")
    for entry_point, params in (("features", ["dataset=iris"]), ("train", ["dataset=iris", "trials=1", "folds=3"])):
        args = [str(VENV_BIN / "mlflow"), "run", str(checkout), "-e", entry_point, "--env-manager", "local"]
        for param in params:
            args += ["-P", param]
        proc = subprocess.run(args, cwd=caller, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert postgres_cluster.password not in proc.stdout + proc.stderr

    assert _files(checkout) == before
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("iris-training")
    assert experiment.artifact_location == str(caller / "mlruns" / "iris-training")
    version = client.get_model_version_by_alias("iris", "champion")
    run = client.get_run(version.run_id)
    assert (caller / "mlruns" / "iris-training" / run.info.run_id / "artifacts" / "training" / "keys.parquet").is_file()
    assert {"MLmodel", "model.skops"} <= {p.name for p in (caller / "mlruns" / "iris-training" / "models").rglob("*")}
