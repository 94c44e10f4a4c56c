"""The champion served over REST by MLflow's own server (its pyfunc flavor) gives batch
inference's answers, as class names and probabilities, and refuses a row outside the spec."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from serverless_ml.datasets import get_dataset
from serverless_ml.pipelines.features import add_daily_rows
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.training.model import as_model_input
from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
START_TIMEOUT_S = 120


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request_body(rows) -> bytes:  # noqa: ANN001
    """The documented JSON format: ``dataframe_split`` with raw feature columns; missing
    values are ``null``."""
    frame = as_model_input(rows, SPEC)
    data = [[None if isinstance(v, float) and np.isnan(v) else v for v in row] for row in frame.astype(object).values.tolist()]
    return json.dumps({"dataframe_split": {"columns": list(frame.columns), "data": data}}).encode()


def test_rest_serving_matches_batch_predictions(world, tmp_path: Path) -> None:  # noqa: ANN001
    store, settings = world
    day = dt.date(2024, 4, 1)
    add_daily_rows(SPEC, store, day, n=25, seed=3)
    infer(SPEC, store, settings, InferOptions(as_of=day, figures=False), dt.datetime(2024, 4, 2, tzinfo=dt.timezone.utc))
    predictions = store.get_feature_group("titanic_predictions", 1).read()
    rows = store.get_feature_group("titanic", 1).read().set_index("passenger_id").loc[predictions["passenger_id"]].reset_index()
    # Served with the same missing values batch inference saw (a missing age is null).
    assert rows["age"].isna().any()

    port = _free_port()
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/titanic@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # As from an activated virtualenv: MLflow starts `uvicorn` from PATH.
        env={**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri,
             "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "mlflow models serve did not start"
                time.sleep(0.5)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=request_body(rows),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.loads(response.read())["predictions"]
        # The pyfunc flavor refuses a row outside the spec, naming the field and the values.
        bad = json.loads(request_body(rows.head(2)))
        bad["dataframe_split"]["data"][1][bad["dataframe_split"]["columns"].index("sex")] = "alien"
        refused = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(bad).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(refused, timeout=30)
        error = json.loads(caught.value.read())
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    # Class names and probabilities, as batch inference wrote them for the same rows.
    names = {0: "died", 1: "survived"}
    assert [row["prediction"] for row in served] == [names[p] for p in predictions["prediction"]]
    np.testing.assert_allclose([row["probability_survived"] for row in served], predictions["proba_1"], rtol=0, atol=1e-12)
    np.testing.assert_allclose([row["probability"] for row in served], predictions["probability"], rtol=0, atol=1e-12)
    assert caught.value.code == 400
    assert error["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "rows[1]: field 'sex'" in error["message"] and "'male', 'female'" in error["message"]
