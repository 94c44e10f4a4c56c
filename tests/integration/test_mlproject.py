"""``mlflow run`` on the MLproject, as the README runs it: ``mlflow run . -e ENTRY ...``.

Each test gets its own tracking database (``tracking_uri`` from conftest) and feature
store, and reads the course's CSVs from ``data_dir``; nothing lands in the checkout (the
entry points that log artifacts run from a copy of the project, which must stay clean:
artifacts go next to the tracking database, whatever the working directory).

* ``--env-manager local`` runs the entry point with the ``python`` first on ``PATH``: the
  project's virtualenv here, whose ``bin`` the tests put first, as ``. .venv/bin/activate``
  would. These runs get a proxy that refuses connections, as the CLI tests do.
* ``--env-manager uv`` builds a virtualenv from conda.yaml with ``uv venv --python=3.11``
  and ``uv pip install``. uv reaches the package index directly (these runs keep the
  caller's network settings) and caches wheels in its own cache (``~/.cache/uv`` unless
  ``UV_CACHE_DIR`` says otherwise), so only the first build on a machine downloads.
  ``UV_PYTHON_DOWNLOADS=never`` turns any attempt to download a Python build into an
  immediate error: the local 3.11 must do. The environments go to a directory of this
  test session (``MLFLOW_ENV_ROOT``), not to ``~/.mlflow/envs``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LOCAL_RUN_TIMEOUT_S = 300
# A cold uv build downloads a few hundred MB of wheels; warm, it takes seconds.
UV_RUN_TIMEOUT_S = 1200
_PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
_NO_NETWORK_PROXY = "http://127.0.0.1:9"


def uv_bin() -> Path:
    """The uv executable of the ``test`` extra (mlflow finds it as ``uv`` on ``PATH``)."""
    from uv import find_uv_bin

    return Path(find_uv_bin())


def run_env(
    tmp_path: Path, tracking_uri: str, data_dir: Path, *, network: bool, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of an ``mlflow run``: this test's tracking DB, store, data and temp dir."""
    env = dict(os.environ)
    for name in ("SML_FEATURE_STORE", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "VIRTUAL_ENV"):
        env.pop(name, None)
    tmp = tmp_path / "tmp"  # MLflow leaves one empty temp directory behind per run
    tmp.mkdir(exist_ok=True)
    path = [str(VENV_BIN), str(uv_bin().parent), env.get("PATH", "")]
    env.update(
        PATH=os.pathsep.join(dict.fromkeys(path)),
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_DISABLE_TELEMETRY="true",
        SML_STORE_DIR=str(tmp_path / "store"),
        SML_DATA_DIR=str(data_dir),
        SML_CACHE_DIR=str(tmp_path / "cache"),
        TMPDIR=str(tmp),
        PYTHONWARNINGS="ignore",
    )
    if not network:
        for name in _PROXY_VARS:
            env[name] = _NO_NETWORK_PROXY
        env.pop("no_proxy", None)
        env.pop("NO_PROXY", None)
    env.update(extra or {})
    return env


def mlflow_run(
    entry_point: str, *params: str, env_manager: str, env: Mapping[str, str], timeout: float, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess[str]:
    """``mlflow run . -e ENTRY_POINT -P ... --env-manager ENV_MANAGER`` from the checkout
    (or ``cwd``, a copy of its project files)."""
    args = [str(VENV_BIN / "mlflow"), "run", ".", "-e", entry_point]
    for param in params:
        args += ["-P", param]
    args += ["--env-manager", env_manager]
    return subprocess.run(args, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=timeout)


def copy_project(target: Path) -> Path:
    """The files ``mlflow run .`` needs (MLproject, conda.yaml, entrypoints/), copied to
    ``target``: a checkout whose every file the test can list afterwards. (The library
    itself is imported from the virtualenv's install.)"""
    import shutil

    target.mkdir()
    for name in ("MLproject", "conda.yaml"):
        shutil.copy2(REPO_ROOT / name, target / name)
    shutil.copytree(REPO_ROOT / "entrypoints", target / "entrypoints", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def files_under(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if "__pycache__" not in path.parts}


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def project_runs(tracking_uri: str) -> list:
    """Every run in the tracking DB, oldest first."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiment_ids, order_by=["attributes.start_time ASC"])


def check_run(run, *, entry_point: str, status: str, env: str, params: Mapping[str, str]) -> None:
    assert run.info.status == status
    tags = run.data.tags
    assert tags["mlflow.project.entryPoint"] == entry_point
    assert tags["mlflow.project.backend"] == "local"
    if env != "local":  # MLflow tags the environment only when it builds one
        assert tags["mlflow.project.env"] == env
    for name, value in params.items():
        assert run.data.params[name] == value


def read_group(store: Path, name: str = "titanic", version: int = 1):
    """The feature group as the library reads it."""
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.settings import resolve_settings

    group = open_feature_store(resolve_settings(store_dir=store)).get_feature_group(name, version)
    return group.read()


# --- local ------------------------------------------------------------------------------


def test_local_features_then_daily(tmp_path: Path, tracking_uri: str, data_dir: Path) -> None:
    env = run_env(tmp_path, tracking_uri, data_dir, network=False)

    proc = mlflow_run("features", "dataset=titanic", env_manager="local", env=env, timeout=LOCAL_RUN_TIMEOUT_S)
    assert proc.returncode == 0, explain(proc)
    assert f"source: {data_dir / 'titanic.csv'}" in proc.stdout
    assert "titanic: 891 rows in, 891 inserted" in proc.stdout

    proc = mlflow_run(
        "daily", "dataset=titanic", "date=2024-02-01", env_manager="local", env=env, timeout=LOCAL_RUN_TIMEOUT_S
    )
    assert proc.returncode == 0, explain(proc)
    assert "2024-02-01: titanic: 10 rows in, 10 inserted" in proc.stdout

    features, daily = project_runs(tracking_uri)
    check_run(features, entry_point="features", status="FINISHED", env="local", params={"dataset": "titanic"})
    check_run(
        daily,
        entry_point="daily",
        status="FINISHED",
        env="local",
        params={"dataset": "titanic", "date": "2024-02-01", "rows": "10", "seed": "0"},
    )

    rows = read_group(tmp_path / "store")
    assert rows["origin"].value_counts().to_dict() == {"backfill": 891, "synthetic": 10}


def test_local_relative_spec_path_is_read_from_the_caller_s_directory(
    tmp_path: Path, tracking_uri: str, data_dir: Path
) -> None:
    """``mlflow run <project> -e features -P dataset=specs/mine.yaml`` from another
    directory: MLflow runs the entry point in the project directory, the spec is read from
    the directory the user ran it from."""
    caller = tmp_path / "caller"
    (caller / "specs").mkdir(parents=True)
    (caller / "specs" / "mine.csv").write_text("id,x,kind\n" + "".join(f"{i},{i / 10},{'ab'[i % 2]}\n" for i in range(30)))
    (caller / "specs" / "mine.yaml").write_text(
        "name: mine\nsource: {path: mine.csv}\nlabel: kind\nprimary_key: id\nclasses: [a, b]\n"
        "features:\n  x: {type: double}\n")
    assert not (REPO_ROOT / "specs" / "mine.yaml").exists()
    env = run_env(tmp_path, tracking_uri, data_dir, network=False)
    args = [str(VENV_BIN / "mlflow"), "run", str(REPO_ROOT), "-e", "features", "-P", "dataset=specs/mine.yaml",
            "--env-manager", "local"]
    proc = subprocess.run(args, cwd=caller, env=env, capture_output=True, text=True, timeout=LOCAL_RUN_TIMEOUT_S)
    assert proc.returncode == 0, explain(proc)
    assert f"source: {caller / 'specs' / 'mine.csv'}" in proc.stdout
    assert "mine: 30 rows in, 30 inserted" in proc.stdout
    (run,) = project_runs(tracking_uri)
    check_run(run, entry_point="features", status="FINISHED", env="local", params={"dataset": "specs/mine.yaml"})


def test_local_bad_int_parameter_fails_in_one_line(tmp_path: Path, tracking_uri: str, data_dir: Path) -> None:
    """MLflow passes ``rows=abc`` through unchecked; click refuses it, and the run FAILED."""
    env = run_env(tmp_path, tracking_uri, data_dir, network=False)

    proc = mlflow_run("daily", "rows=abc", env_manager="local", env=env, timeout=LOCAL_RUN_TIMEOUT_S)

    assert proc.returncode != 0, explain(proc)
    (line,) = error_lines(proc.stderr)
    assert "'--rows'" in line and "'abc' is not a valid integer" in line
    assert "Traceback" not in proc.stderr
    (run,) = project_runs(tracking_uri)
    check_run(run, entry_point="daily", status="FAILED", env="local", params={"rows": "abc"})
    # The FAILED run says why, as the terminal did (MLflow records the status only).
    assert run.data.tags["sml.error"] == line.removeprefix("error: ")
    assert not (tmp_path / "store").exists()


def test_entry_point_without_dependencies_says_what_to_do(tmp_path: Path) -> None:
    """``--env-manager local`` from outside the virtualenv: the interpreter lacks click.

    ``python -S`` (no site-packages) stands in for a bare interpreter.
    """
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "entrypoints.features", "--dataset", "titanic"],
        cwd=REPO_ROOT,
        env={**os.environ, "SML_STORE_DIR": str(tmp_path / "store")},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert proc.returncode == 1, explain(proc)
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ") and "lacks the module 'click'" in line
    assert ".venv/bin/activate" in line


# --- uv ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mlflow_env_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where ``mlflow run --env-manager uv`` builds environments in this session."""
    return tmp_path_factory.mktemp("mlflow-envs")


@pytest.mark.slow
def test_uv_builds_the_environment_once_and_runs_both_entry_points(
    tmp_path: Path, tracking_uri: str, data_dir: Path, mlflow_env_root: Path
) -> None:
    uv = uv_bin()
    env = run_env(
        tmp_path,
        tracking_uri,
        data_dir,
        network=True,
        extra={"MLFLOW_ENV_ROOT": str(mlflow_env_root), "UV_PYTHON_DOWNLOADS": "never"},
    )

    # 1. features: builds the environment from conda.yaml.
    proc = mlflow_run("features", "dataset=titanic", env_manager="uv", env=env, timeout=UV_RUN_TIMEOUT_S)
    assert proc.returncode == 0, explain(proc)
    assert "titanic: 891 rows in, 891 inserted" in proc.stdout
    (env_dir,) = mlflow_env_root.iterdir()
    cfg = dict(
        line.split(" = ", 1) for line in (env_dir / "pyvenv.cfg").read_text().splitlines() if " = " in line
    )
    assert cfg["version_info"].startswith("3.11."), cfg
    managed = subprocess.run([str(uv), "python", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    assert not Path(cfg["home"]).resolve().is_relative_to(Path(managed).resolve()), cfg  # a local Python
    site_packages = env_dir / "lib" / f"python{cfg['version_info'][:4]}" / "site-packages"
    assert (site_packages / "mlflow").is_dir() and (site_packages / "deltalake").is_dir()
    marker = env_dir / "built-by-this-test"
    marker.touch()

    # 2. daily: reuses it (MLflow keys environments on conda.yaml's content).
    proc = mlflow_run(
        "daily", "dataset=titanic", "date=2024-02-01", env_manager="uv", env=env, timeout=UV_RUN_TIMEOUT_S
    )
    assert proc.returncode == 0, explain(proc)
    assert "2024-02-01: titanic: 10 rows in, 10 inserted" in proc.stdout
    assert list(mlflow_env_root.iterdir()) == [env_dir] and marker.exists()

    # 3. A bad int parameter fails inside the uv environment too.
    proc = mlflow_run("daily", "rows=abc", env_manager="uv", env=env, timeout=UV_RUN_TIMEOUT_S)
    assert proc.returncode != 0, explain(proc)
    (line,) = error_lines(proc.stderr)
    assert "'abc' is not a valid integer" in line

    features, daily, bad = project_runs(tracking_uri)
    check_run(features, entry_point="features", status="FINISHED", env="uv", params={"dataset": "titanic"})
    check_run(daily, entry_point="daily", status="FINISHED", env="uv", params={"date": "2024-02-01"})
    check_run(bad, entry_point="daily", status="FAILED", env="uv", params={"rows": "abc"})

    rows = read_group(tmp_path / "store")
    assert rows["origin"].value_counts().to_dict() == {"backfill": 891, "synthetic": 10}


def test_train_and_batch_inference_entry_points_log_their_own_runs_linked_to_the_project_runs(
    tmp_path: Path, tracking_uri: str, data_dir: Path
) -> None:
    """The job's runs go to their own experiments (not into the project run, whose
    entry-point params would clash with the job's) and both are linked by tags. Run from
    a checkout with the tracking database elsewhere, the experiments keep their
    artifacts (the model, the evaluation, the batch's tables) next to the database, and
    the checkout gains no ``mlruns/`` or ``mlartifacts/``."""
    from mlflow import MlflowClient

    env = run_env(tmp_path, tracking_uri, data_dir, network=False)
    checkout = copy_project(tmp_path / "checkout")
    before = files_under(checkout)
    for entry_point, params in (
        ("features", ["dataset=iris"]),
        ("daily", ["dataset=iris", "date=2024-01-05", "rows=12"]),
        ("train", ["dataset=iris", "trials=2", "folds=3"]),
        ("batch_inference", ["dataset=iris", "as_of=2024-01-05"]),
    ):
        proc = mlflow_run(entry_point, *params, env_manager="local", env=env, timeout=LOCAL_RUN_TIMEOUT_S, cwd=checkout)
        assert proc.returncode == 0, explain(proc)
    assert files_under(checkout) == before
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = project_runs(tracking_uri)
    project = {r.data.tags["mlflow.project.entryPoint"]: r for r in runs if "mlflow.project.entryPoint" in r.data.tags}
    assert {r.info.status for r in project.values()} == {"FINISHED"}
    for entry_point, experiment in (("train", "iris-training"), ("batch_inference", "iris-monitoring")):
        job_run = client.get_run(project[entry_point].data.tags["sml.job_run_id"])
        assert job_run.info.status == "FINISHED"
        assert client.get_experiment(job_run.info.experiment_id).name == experiment
        assert job_run.data.tags["sml.project_run_id"] == project[entry_point].info.run_id
    assert client.get_model_version_by_alias("iris", "champion").version in (1, "1")
    monitoring = [r for r in runs if r.data.tags.get("as_of") == "2024-01-05"]
    assert len(monitoring) == 1 and monitoring[0].data.metrics["rows_scored"] == 12

    # The artifacts are next to the database (tmp_path/mlflow.db), one folder per experiment.
    database_dir = Path(tracking_uri.removeprefix("sqlite:///")).parent
    assert database_dir != checkout
    for experiment in ("iris-training", "iris-monitoring"):
        assert client.get_experiment_by_name(experiment).artifact_location == str(database_dir / "mlruns" / experiment)
    training = client.get_run(project["train"].data.tags["sml.job_run_id"])
    assert (database_dir / "mlruns" / "iris-training" / training.info.run_id / "artifacts" / "training" / "keys.parquet").is_file()
    model_files = {p.name for p in (database_dir / "mlruns" / "iris-training" / "models").rglob("*")}
    assert {"MLmodel", "model.skops"} <= model_files
    batch = database_dir / "mlruns" / "iris-monitoring" / monitoring[0].info.run_id / "artifacts"
    assert (batch / "drift.json").is_file() and (batch / "confusion" / "batch.json").is_file()
