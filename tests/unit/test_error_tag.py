"""The ``error:`` line of an MLproject entry point is kept on its FAILED project run as the
tag ``sml.error``, without secrets, and a store that cannot take it costs a bounded wait."""

from __future__ import annotations

import time

import mlflow
import pytest

from serverless_ml import cli, tracking


@pytest.fixture(autouse=True)
def _http_settings_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tag write sets MLflow's HTTP retries and timeout for the (ending) process: undone
    after each test, so later tests in this worker keep MLflow's defaults."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def _project_run(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> str:
    run = mlflow.MlflowClient(tracking_uri=tracking_uri).create_run("0")
    monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
    mlflow.set_tracking_uri(tracking_uri)
    return run.info.run_id


def test_the_error_line_is_tagged_on_the_project_run_without_secrets(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = _project_run(tracking_uri, monkeypatch)
    monkeypatch.setenv("HOPSWORKS_API_KEY", "key-marker-123456")
    cli._error_line("error: cannot open 'postgresql://sml:pw-marker@db/optuna' with key-marker-123456", True)
    assert capsys.readouterr().err.startswith("error: cannot open")
    tag = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags[tracking.ERROR_TAG]
    assert tag == "cannot open 'postgresql://sml:***@db/optuna' with ***"


def test_a_reason_already_there_stays_and_plain_sml_tags_nothing(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = _project_run(tracking_uri, monkeypatch)
    assert tracking.record_project_run_error("step 'train' failed: ... (the reason)")
    assert not tracking.record_project_run_error("step 'train' failed: ...")
    cli._error_line("error: another", False)  # `sml` itself, not an entry point: no tag
    tags = mlflow.MlflowClient(tracking_uri=tracking_uri).get_run(run_id).data.tags
    assert tags[tracking.ERROR_TAG] == "step 'train' failed: ... (the reason)"


def test_a_tracking_server_that_is_down_costs_a_bounded_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    started = time.monotonic()
    assert not tracking.record_project_run_error("the server is down", timeout_s=3)
    assert time.monotonic() - started < 10
