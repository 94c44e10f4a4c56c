"""Integration fixtures: isolate MLflow's process-wide state between tests."""

from __future__ import annotations

from collections.abc import Iterator

import mlflow
import pytest


@pytest.fixture(autouse=True)
def _fresh_mlflow_state() -> Iterator[None]:
    """Commands call ``mlflow.set_tracking_uri``; forget it so each test's
    ``MLFLOW_TRACKING_URI`` applies, and leave no active run behind."""
    mlflow.set_tracking_uri(None)
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run(status="KILLED")
    mlflow.set_tracking_uri(None)
