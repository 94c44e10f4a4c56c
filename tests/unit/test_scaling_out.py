"""The pure parts of scaling out: password redaction, the `mlflow server` invocation, and
sampler seeds of tuning workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from serverless_ml.errors import SmlError
from serverless_ml.pipelines.train import worker_sampler_seed
from serverless_ml.tracking import redact_uri
from serverless_ml.tracking_server import check_backend_store, resolve_artifacts_destination, server_command
from serverless_ml.training.search import storage_error

pytestmark = pytest.mark.unit

SECRET = "s3cr3t-Marker"


@pytest.mark.parametrize(
    "uri",
    [
        f"postgresql://sml:{SECRET}@db.internal:5432/mlflow",
        f"postgresql+psycopg2://sml:{SECRET}@127.0.0.1/optuna",
        f"postgresql//sml:{SECRET}@127.0.0.1:5432/x",  # malformed: no parsed password
        f"postgresql:/sml:{SECRET}@127.0.0.1/x",
        f"sml:{SECRET}@127.0.0.1/x",
        f"mysql://root:{SECRET}@localhost/mlflow?charset=utf8",
    ],
)
def test_redact_uri_hides_the_password(uri: str) -> None:
    redacted = redact_uri(uri)
    assert SECRET not in redacted
    assert "***" in redacted


@pytest.mark.parametrize(
    "uri", ["sqlite:///tmp/mlflow.db", "http://127.0.0.1:5000", "postgresql://sml@h/db", "s3://bucket/a/b", "mlflow-artifacts:/1"]
)
def test_redact_uri_leaves_uris_without_password_alone(uri: str) -> None:
    assert redact_uri(uri) == uri


def test_storage_errors_mask_a_password_the_driver_quotes() -> None:
    error = storage_error(f"postgresql://sml:{SECRET}@h/db", ValueError(f"cannot parse 'postgresql://sml:{SECRET}@h/db'"))
    assert SECRET not in str(error)


def test_the_server_gets_the_backend_uri_in_its_environment_not_its_argv(tmp_path: Path) -> None:
    uri = f"postgresql://sml:{SECRET}@127.0.0.1:5432/mlflow"
    command = server_command(uri, str(tmp_path), port=5001, workers=1, extra_args=["--allowed-hosts", "x:5001"],
                             base_env={"SML_TRACKING_DB_URI": uri, "PATH": "/usr/bin"})
    assert all(SECRET not in arg for arg in command.argv)
    assert command.argv[1:4] == ["-m", "mlflow", "server"]
    for flag in ("--serve-artifacts", "--artifacts-destination", "--host", "--port", "--workers", "--allowed-hosts"):
        assert flag in command.argv
    assert command.env["MLFLOW_BACKEND_STORE_URI"] == uri
    assert "SML_TRACKING_DB_URI" not in command.env
    assert command.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert SECRET not in command.summary
    assert "postgresql://sml:***@127.0.0.1:5432/mlflow" in command.summary
    assert command.url == "http://127.0.0.1:5001"


def test_the_job_runner_stays_on_when_asked_for(tmp_path: Path) -> None:
    command = server_command("sqlite:///x.db", str(tmp_path), base_env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})
    assert command.env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "true"


@pytest.mark.parametrize(("port", "workers"), [(0, 1), (70000, 1), (5000, 0)])
def test_bad_port_or_workers_are_refused(port: int, workers: int, tmp_path: Path) -> None:
    with pytest.raises(SmlError, match=r"--port|--workers"):
        server_command("sqlite:///x.db", str(tmp_path), port=port, workers=workers)


def test_artifacts_destination_local_folders_become_absolute_and_uris_stay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_artifacts_destination("s3://bucket/mlflow") == "s3://bucket/mlflow"
    local = resolve_artifacts_destination("artifacts")
    assert local == str(tmp_path / "artifacts") and Path(local).is_dir()
    assert resolve_artifacts_destination(f"file://{tmp_path / 'other'}") == str(tmp_path / "other")
    assert resolve_artifacts_destination(None) == str(tmp_path / "sml_data" / "mlartifacts")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [("", "no backend store"), ("file:///tmp/mlruns", "is not a database URI"), ("http://h:5000", "is not a database URI")],
)
def test_backend_store_must_be_a_database(uri: str, expected: str) -> None:
    with pytest.raises(SmlError, match=expected):
        check_backend_store(uri)


def test_an_unreachable_database_is_one_line_without_the_password() -> None:
    with pytest.raises(SmlError) as caught:
        check_backend_store(f"postgresql://sml:{SECRET}@127.0.0.1:9/mlflow")
    assert "cannot connect to the backend store postgresql://sml:***@127.0.0.1:9/mlflow" in str(caught.value)
    assert SECRET not in str(caught.value)


def test_worker_sampler_seeds_differ_between_workers_and_repeat_per_worker() -> None:
    seeds = {worker_sampler_seed(42, worker) for worker in range(50)}
    assert len(seeds) == 50
    assert worker_sampler_seed(42, 3) == worker_sampler_seed(42, 3)
    assert worker_sampler_seed(42, 3) != worker_sampler_seed(43, 3)
    assert worker_sampler_seed(42, None) != worker_sampler_seed(42, None)  # random without an id
    assert all(0 <= seed < 2**31 for seed in seeds)
