"""What users see in the MLflow UI: ``mlflow ui`` on a copy of the test world's tracking
database shows the training experiment with its nested trial runs, the monitoring
experiment with one run per batch, and the registered model with its ``champion``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest

from serverless_ml.testing import stop_process_group

pytestmark = pytest.mark.browser

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_ui(site_world: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow ui`` (one worker, this machine only) on a copy of the world's database."""
    folder = tmp_path_factory.mktemp("mlflow_ui")
    world = site_world.copy_to(folder)
    port = free_port()
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (folder / "mlflow-ui.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", world.tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow ui exited with {process.returncode}: {(folder / 'mlflow-ui.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow ui did not answer within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.5)
        yield url
    finally:
        stop_process_group(process, timeout_s=15, kill_timeout_s=15)
        log.close()


def experiment_id(site_world: Any, name: str) -> str:
    return mlflow.MlflowClient(tracking_uri=site_world.tracking_uri).get_experiment_by_name(name).experiment_id


def test_the_experiments_list_shows_training_and_monitoring(page: Any, mlflow_ui: str, screenshot: Any) -> None:
    tab, _ = page
    tab.goto(f"{mlflow_ui}/#/experiments")
    for name in ("titanic-training", "titanic-monitoring", "iris-training", "iris-monitoring"):
        tab.get_by_role("link", name=name, exact=True).wait_for(timeout=60_000)
    screenshot(tab, "mlflow-ui-experiments")


def test_the_training_run_holds_its_trials_as_nested_runs(page: Any, mlflow_ui: str, site_world: Any, screenshot: Any) -> None:
    tab, _ = page
    tab.goto(f"{mlflow_ui}/#/experiments/{experiment_id(site_world, 'titanic-training')}/runs")
    parent = tab.locator("[role=gridcell]", has_text="titanic-tune-")
    parent.wait_for(timeout=60_000)
    assert tab.get_by_text("3 matching runs").count() == 1  # the search and its two trials
    assert tab.get_by_text("titanic-trial-000").count() == 0  # nested: folded under the search
    parent.locator("button").first.click()
    for trial in ("titanic-trial-000", "titanic-trial-001"):
        tab.get_by_text(trial, exact=True).wait_for()
    screenshot(tab, "mlflow-ui-training-runs")


def test_the_monitoring_experiment_has_one_run_per_batch(
    page: Any, mlflow_ui: str, site_world: Any, world_dates: dict[str, Any], screenshot: Any
) -> None:
    tab, _ = page
    tab.goto(f"{mlflow_ui}/#/experiments/{experiment_id(site_world, 'titanic-monitoring')}/runs")
    tab.get_by_text(f"{world_dates['titanic_days']} matching runs").wait_for(timeout=60_000)
    latest = world_dates["day"](world_dates["titanic_days"] - 1).isoformat()
    tab.get_by_text(f"titanic-batch-{latest}").wait_for()
    screenshot(tab, "mlflow-ui-monitoring-runs")


def test_the_registered_model_shows_its_champion(page: Any, mlflow_ui: str, screenshot: Any) -> None:
    tab, _ = page
    tab.goto(f"{mlflow_ui}/#/models/titanic")
    row = tab.locator("tr, [role=row]", has_text="Version 2")
    row.wait_for(timeout=60_000)
    assert "champion" in row.inner_text()
    assert "champion" not in tab.locator("tr, [role=row]", has_text="Version 1").inner_text()
    screenshot(tab, "mlflow-ui-registered-model")


def test_the_training_run_shows_its_datasets_and_chosen_hyperparameters(
    page: Any, mlflow_ui: str, site_world: Any, screenshot: Any
) -> None:
    """Lineage as the UI shows it: the rows the run trained and was tested on (feature
    view and digest), the best trial's hyper-parameters among the params, and per-class
    metrics by class name."""
    tab, _ = page
    client = mlflow.MlflowClient(tracking_uri=site_world.tracking_uri)
    version = client.get_model_version_by_alias("titanic", "champion")
    run = client.get_run(version.tags["training_run_id"])
    digests = [item.dataset.digest for item in run.inputs.dataset_inputs]
    assert len(digests) == 2
    tab.goto(f"{mlflow_ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}")
    tab.get_by_text("titanic_training").first.wait_for(timeout=60_000)
    body = tab.locator("body").inner_text()
    assert any(digest in body for digest in digests), "no dataset digest on the run page"
    # Names as whole cells of the params and metrics tables (the search_space param's JSON
    # also mentions the hyper-parameters, but never as a cell of its own).
    for name in ("n_estimators", "max_depth", "test_f1_survived", "test_f1_died"):
        assert tab.get_by_text(name, exact=True).count() >= 1, name
    screenshot(tab, "mlflow-ui-training-run-datasets")
