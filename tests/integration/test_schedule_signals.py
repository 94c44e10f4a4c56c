"""`sml schedule` stopped by SIGTERM in the middle of a job leaves no MLflow run RUNNING."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import pytest
from mlflow import MlflowClient

from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

FAR_AWAY = "0 0 1 1 *"  # once a year: only --run-now runs during the test


def _running(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_job_stops_the_scheduler_cleanly(world, tmp_path, sig) -> None:  # noqa: ANN001
    store, settings = world
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri, "SML_STORE_DIR": str(store.root),
           "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        [sys.executable, "-m", "serverless_ml.cli", "schedule", "--dataset", "titanic", "--run-now", "retrain",
         "--retrain-trials", "500", "--daily-cron", FAR_AWAY, "--infer-cron", FAR_AWAY, "--retrain-cron", FAR_AWAY],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    try:
        deadline = time.monotonic() + 120
        # Wait until the retraining job is inside its MLflow run (some trials logged).
        while True:
            running = _running(client)
            if running and len(client.search_runs([running[0].info.experiment_id])) >= 3:
                break
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the retraining run never started"
            time.sleep(0.5)
        process.send_signal(sig)
        _out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert f"stopped by {sig.name}" in err
    assert "Traceback" not in err
    assert _running(client) == []
    tuning = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.mlflow.runName LIKE 'titanic-tune-%'", order_by=["attributes.start_time DESC"],
    )
    assert len(tuning) == 2  # the world's own training run, and the interrupted one
    assert tuning[0].info.status in ("FAILED", "KILLED")
    assert mlflow.active_run() is None
