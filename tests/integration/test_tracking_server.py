"""The whole pipeline against an MLflow tracking server on PostgreSQL, over HTTP.

One PostgreSQL cluster (session fixture ``postgres_cluster``) and one ``sml
tracking-server`` (this module) on free ports of 127.0.0.1; ``sml features``, ``train``,
``daily`` and ``infer`` run as subprocesses with ``MLFLOW_TRACKING_URI=http://...``.
The login's password is a marker that must never show: not in any output, the server's
log, run params or tags, registry tags, stored artifacts nor process command lines.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from mlflow import MlflowClient

from serverless_ml.datasets import get_dataset
from serverless_ml.settings import resolve_settings
from serverless_ml.testing import stop_process_group
from serverless_ml.training.model import as_model_input

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_START_TIMEOUT_S = 240
BATCH_DATES = ("2024-02-01", "2024-02-02")


@dataclass(frozen=True)
class TrackingServer:
    """A running ``sml tracking-server``: its URL, its log, and what it stores into."""

    url: str
    process: subprocess.Popen
    log_path: Path
    backend_uri: str
    artifacts_dir: Path
    password: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _wait_until_healthy(server: TrackingServer) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"sml tracking-server exited with {server.process.returncode}:\n{server.log()[-3000:]}", pytrace=False)
        try:
            with urllib.request.urlopen(f"{server.url}/health", timeout=2):  # noqa: S310 - localhost
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"sml tracking-server did not answer within {SERVER_START_TIMEOUT_S} s:\n{server.log()[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def tracking_server(postgres_cluster, free_port, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:  # noqa: ANN001
    """``sml tracking-server`` on its own database of the session's cluster; stopped at the end."""
    folder = tmp_path_factory.mktemp("tracking_server")
    backend_uri = postgres_cluster.create_database("mlflow_server")
    port = free_port()
    log_path = folder / "server.log"
    env = {**os.environ, "SML_TRACKING_DB_URI": backend_uri}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "serverless_ml.cli", "tracking-server", "--port", str(port),
             "--artifacts-destination", str(folder / "artifacts")],
            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = TrackingServer(
        url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, backend_uri=backend_uri,
        artifacts_dir=folder / "artifacts", password=postgres_cluster.password,
    )
    try:
        _wait_until_healthy(server)
        yield server
    finally:
        stop_process_group(process)


@dataclass
class PipelineRun:
    """What the pipeline's commands printed, in order, and where its store is."""

    outputs: dict[str, tuple[int, str, str]]
    store_dir: Path
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def pipeline(tracking_server: TrackingServer, postgres_cluster, cli_process, data_dir: Path,  # noqa: ANN001
             tmp_path_factory: pytest.TempPathFactory) -> PipelineRun:
    """features -> train (Optuna study on PostgreSQL too) -> daily -> infer, twice a day's
    batch, every command a subprocess talking HTTP to the server."""
    folder = tmp_path_factory.mktemp("pipeline")
    store_dir = folder / "store"
    optuna_uri = postgres_cluster.create_database("optuna_pipeline")
    # The study's URL (with the password) in the environment, off the command line.
    env = {"MLFLOW_TRACKING_URI": tracking_server.url, "SML_OPTUNA_STORAGE": optuna_uri}
    steps: list[tuple[str, list[str]]] = [
        ("features", ["features", "--dataset", "titanic"]),
        ("train", ["train", "--dataset", "titanic", "--trials", "3", "--folds", "3", "--quiet"]),
    ]
    for day in BATCH_DATES:
        steps += [
            (f"daily {day}", ["daily", "--dataset", "titanic", "--date", day, "--rows", "40"]),
            (f"infer {day}", ["infer", "--dataset", "titanic", "--as-of", day]),
        ]
    outputs: dict[str, tuple[int, str, str]] = {}
    seconds: dict[str, float] = {}
    for name, args in steps:
        started = time.perf_counter()
        result = cli_process(args, cwd=folder, store_dir=store_dir, data_dir=data_dir, env=env)
        seconds[name] = time.perf_counter() - started
        outputs[name] = tuple(result)
        assert result.returncode == 0, f"sml {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return PipelineRun(outputs=outputs, store_dir=store_dir, seconds=seconds)


def _client(server: TrackingServer) -> MlflowClient:
    return MlflowClient(tracking_uri=server.url)


def _all_runs(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, max_results=1000)


# --- the server ---------------------------------------------------------------------------


def test_server_prints_where_things_live_with_the_password_masked(tracking_server: TrackingServer) -> None:
    log = tracking_server.log()
    assert f"MLflow tracking server on {tracking_server.url}" in log
    assert "backend store: postgresql://sml:***@127.0.0.1:" in log
    assert str(tracking_server.artifacts_dir) in log
    assert tracking_server.password not in log


def test_the_password_is_on_no_command_line(tracking_server: TrackingServer) -> None:
    """The URI reaches mlflow in its environment, which only the owner can read."""
    group = tracking_server.process.pid
    command_lines = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getpgid(int(proc.name)) != group:
                continue
            command_lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    assert any("mlflow server" in line for line in command_lines), command_lines
    assert any("uvicorn" in line for line in command_lines), command_lines
    assert all(tracking_server.password not in line for line in command_lines)


def test_runs_and_registry_live_in_postgresql(tracking_server: TrackingServer, pipeline: PipelineRun) -> None:
    engine = sqlalchemy.create_engine(tracking_server.backend_uri)
    try:
        with engine.connect() as db:
            runs = db.execute(sqlalchemy.text("SELECT count(*) FROM runs")).scalar_one()
            versions = db.execute(sqlalchemy.text("SELECT count(*) FROM model_versions")).scalar_one()
    finally:
        engine.dispose()
    assert runs == len(_all_runs(_client(tracking_server)))
    assert versions == 1


def test_artifacts_go_through_the_server_into_its_destination(tracking_server: TrackingServer, pipeline: PipelineRun) -> None:
    client = _client(tracking_server)
    training = client.get_experiment_by_name("titanic-training")
    assert training.artifact_location.startswith("mlflow-artifacts:")
    stored = {p.name for p in tracking_server.artifacts_dir.rglob("*") if p.is_file()}
    assert {"keys.parquet", "confusion_matrix.json", "MLmodel"} <= stored


# --- the pipeline over HTTP ---------------------------------------------------------------


def test_every_command_reports_what_it_did(pipeline: PipelineRun) -> None:
    out = {name: stdout for name, (_, stdout, _) in pipeline.outputs.items()}
    assert "891 inserted" in out["features"]
    assert "registered version 1 as challenger; promoted to champion" in out["train"]
    for day in BATCH_DATES:
        assert "40 inserted" in out[f"daily {day}"]
        assert f"scored 40 rows up to {day} with champion version 1" in out[f"infer {day}"]
    assert not any("View run" in stdout for stdout in out.values())


def test_the_champion_alias_resolves_and_predicts_over_http(
    tracking_server: TrackingServer, pipeline: PipelineRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    client = _client(tracking_server)
    champion = client.get_model_version_by_alias("titanic", "champion")
    assert champion.version == "1"
    assert client.get_model_version_by_alias("titanic", "challenger").version == "1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.url)
    model = mlflow.pyfunc.load_model("models:/titanic@champion")
    from serverless_ml.feature_store.local import LocalFeatureStore

    spec = get_dataset("titanic")
    rows = LocalFeatureStore(pipeline.store_dir).get_feature_group("titanic", 1).read().head(20)
    assert set(model.predict(as_model_input(rows, spec))["prediction"]) <= {"died", "survived"}  # the pyfunc flavor


def test_training_logged_a_parent_and_nested_trials(tracking_server: TrackingServer, pipeline: PipelineRun) -> None:
    client = _client(tracking_server)
    experiment = client.get_experiment_by_name("titanic-training")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(int(r.data.tags["trial_number"]) for r in trials) == [0, 1, 2]
    assert parents[0].data.params["optuna_storage"].startswith("postgresql://sml:***@127.0.0.1:")


def test_one_monitoring_run_per_batch_over_http(tracking_server: TrackingServer, pipeline: PipelineRun) -> None:
    client = _client(tracking_server)
    experiment = client.get_experiment_by_name("titanic-monitoring")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert [r.data.tags.get("as_of") for r in runs] == list(BATCH_DATES)
    for run in runs:
        assert 0 <= run.data.metrics["batch_accuracy"] <= 1
        assert run.data.metrics["rows_scored"] == 40
    artifacts = {a.path for a in client.list_artifacts(runs[-1].info.run_id)}
    assert artifacts, "the monitoring run's artifacts are listed through the server"


def test_a_run_s_slice_plan_is_read_through_the_server(tracking_server: TrackingServer, pipeline: PipelineRun) -> None:
    from serverless_ml.inference.slices import SliceTable
    from serverless_ml.pipelines.labels import slice_plan

    client = _client(tracking_server)
    experiment = client.get_experiment_by_name("titanic-monitoring")
    run = client.search_runs([experiment.experiment_id])[0]
    assert not run.info.artifact_uri.startswith(("/", "file:"))  # the server's store, not a local path
    with tempfile.TemporaryDirectory() as tmp:
        table = SliceTable.from_json(json.loads(Path(client.download_artifacts(run.info.run_id, "slices.json", tmp)).read_text()))
    assert table is not None and slice_plan(client, run.info) == table.plan
    training = client.search_runs([client.get_experiment_by_name("titanic-training").experiment_id])[0]
    assert slice_plan(client, training.info) is None


def test_site_data_access_over_http(tracking_server: TrackingServer, pipeline: PipelineRun) -> None:
    """What the monitoring site reads (champion, monitoring runs, trials, training keys,
    predictions), read the site's way (``monitoring_app.data_access.SiteData``) from the
    tracking server."""
    from monitoring_app.data_access import SiteData
    from monitoring_app.run_readers import RestRunReader

    spec = get_dataset("titanic")
    site = SiteData(resolve_settings(store_dir=pipeline.store_dir, tracking_uri=tracking_server.url), ttl_s=0)
    try:
        assert tracking_server.password not in site.tracking_label
        site.check_tracking()
        assert isinstance(site.reader, RestRunReader)  # an http URI is read over REST, not SQL
        champion = site.champion(spec)
        assert champion is not None and champion.version == 1
        assert champion.holdout_accuracy is not None
        version, model = site.champion_model(spec)
        assert version.version == 1 and hasattr(model, "predict")
        runs = site.monitoring_runs(spec, metrics=("batch_accuracy",))
        assert len(runs) == len(BATCH_DATES)
        assert [d.date() for d in runs["as_of"]] == [dt.date.fromisoformat(d) for d in BATCH_DATES]
        assert runs["metrics.batch_accuracy"].between(0, 1).all()
        trials = site.trials(spec, champion.training_run_id)
        assert list(trials["trial_number"]) == [0, 1, 2]
        keys = site.training_keys(spec, champion.training_run_id)
        assert keys is not None and len(keys) > 0
        assert len(site.predictions(spec)) == 40 * len(BATCH_DATES)
    finally:
        site.close()


# --- secrets ---------------------------------------------------------------------------


def test_the_password_never_appears(tracking_server: TrackingServer, pipeline: PipelineRun) -> None:
    marker = tracking_server.password
    for name, (_, stdout, stderr) in pipeline.outputs.items():
        assert marker not in stdout and marker not in stderr, name
    assert marker not in tracking_server.log()
    client = _client(tracking_server)
    runs = _all_runs(client)
    assert runs
    for run in runs:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert marker not in value, (run.info.run_name, key)
    for version in client.search_model_versions("name='titanic'"):
        assert all(marker not in value for value in version.tags.values())
    for path in tracking_server.artifacts_dir.rglob("*"):
        if path.is_file():
            assert marker.encode() not in path.read_bytes(), path


def test_tracking_server_refuses_bad_backends_in_one_line(
    postgres_cluster, cli_process, data_dir: Path, tmp_path: Path  # noqa: ANN001
) -> None:
    cases = {
        "": "no backend store: pass --backend-store-uri or set SML_TRACKING_DB_URI",
        "file:///tmp/mlruns": "is not a database URI",
        postgres_cluster.uri("postgres").replace(postgres_cluster.password, "wrong-pw"):
            "cannot connect to the backend store postgresql://sml:***@127.0.0.1:",
    }
    for uri, expected in cases.items():
        result = cli_process(["tracking-server", "--port", "9"], cwd=tmp_path, store_dir=None, data_dir=data_dir,
                             env={"SML_TRACKING_DB_URI": uri})
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0
        assert len(lines) == 1 and lines[0].startswith("error:") and expected in lines[0], result.stderr
        assert "wrong-pw" not in result.stderr + result.stdout
        assert postgres_cluster.password not in result.stderr + result.stdout


# --- make tracking-server -------------------------------------------------------------


def test_make_tracking_server_starts_a_local_postgresql_and_the_server(free_port, data_dir: Path) -> None:  # noqa: ANN001
    """The documented command, on free ports and a temporary DEMO_HOME: it creates the
    cluster (a generated password), starts it, and serves MLflow on it."""
    home = Path(tempfile.mkdtemp(prefix="sml-make-tracking-"))
    home.chmod(0o755)  # as root, PostgreSQL runs as the postgres user, who must reach home/postgres
    pg_port, port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SML_TRACKING_DB_URI", "SML_PG_PASSWORD", "MAKEFLAGS")}
    env.update({"SML_PG_PORT": str(pg_port), "SML_TRACKING_SERVER_PORT": str(port)})
    log_path = home / "make.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["make", "-C", str(REPO_ROOT), "--no-print-directory", "-o", ".venv/.installed", "tracking-server",
             f"DEMO_HOME={home}", f"BIN={Path(sys.executable).parent}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = TrackingServer(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path, backend_uri="",
                            artifacts_dir=home / "mlartifacts", password="")
    try:
        _wait_until_healthy(server)
        password = (home / "postgres" / "password").read_text().strip()
        assert len(password) >= 32
        log = server.log()
        assert f"backend store: postgresql://sml:***@127.0.0.1:{pg_port}/mlflow" in log
        assert f"artifacts: {home / 'mlartifacts'}" in log
        assert password not in log
        assert [e.name for e in _client(server).search_experiments()] == ["Default"]
    finally:
        stop_process_group(process)
        subprocess.run([str(REPO_ROOT / "scripts" / "local-postgres.sh"), "stop", str(home / "postgres")],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(home, ignore_errors=True)
