"""``sml serve`` as a real subprocess on a free port, for the serving tests
(tests/integration/test_serve.py, tests/reliability/test_serve_faults.py)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.settings import Settings

START_TIMEOUT_S = 90
ROW = {"pclass": 3, "sex": "male", "age": 22.0, "fare": 7.25, "embarked": "S", "sibsp": 1, "parch": 0,
       "title": "Mr", "family_size": 2}
"""A valid Titanic row (raw feature values)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def predict(self, rows: list[dict[str, Any]]) -> tuple[int, Any]:
        return self.request("POST", "/predict", {"rows": rows})

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send ``sig`` (SIGKILL: to the whole process group) and wait for the exit."""
        if sig == signal.SIGKILL:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def start_server(folder: Path, store: LocalFeatureStore, settings: Settings, *args: str,
                 env: Mapping[str, str] | None = None, dataset: str = "titanic") -> Server:
    """``sml serve --dataset titanic`` on a free port of 127.0.0.1, started and answering."""
    port = free_port()
    log = folder / f"serve-{port}.log"
    environment = {**os.environ, "SML_STORE_DIR": str(store.root), "MLFLOW_TRACKING_URI": settings.tracking_uri,
                   **(env or {})}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "serverless_ml.cli", "serve", "--dataset", dataset, "--port", str(port), *args],
            cwd=folder, env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    server = Server(process, port, log)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            status, _ = server.request("GET", "/ping")
            if status == 200:
                return server
        except OSError:
            pass
        if process.poll() is not None:
            raise AssertionError(f"sml serve exited {process.returncode}:\n{server.output()}")
        if time.monotonic() > deadline:
            server.stop(signal.SIGKILL)
            raise AssertionError(f"sml serve did not answer within {START_TIMEOUT_S} s:\n{server.output()}")
        time.sleep(0.2)


def wait_for(condition: Callable[[], bool], timeout: float = 30, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.2)


def live_rows(store: LocalFeatureStore, dataset: str = "titanic") -> pd.DataFrame:
    rows = store.get_feature_group(dataset, 1).read()
    return rows[rows["origin"] == "live"].reset_index(drop=True)


def predictions(store: LocalFeatureStore, dataset: str = "titanic") -> pd.DataFrame:
    from serverless_ml.errors import NotFoundError

    try:
        return store.get_feature_group(f"{dataset}_predictions", 1).read()
    except NotFoundError:
        return pd.DataFrame(columns=["passenger_id", "model_version", "run_id"])


def record_served(spec: Any, store: Any, state_dir: Path, keys: list[Any], at: pd.Timestamp, version: int,
                  tracking_uri: str | None = None) -> None:
    """Record stored rows of ``spec``'s feature group as ``sml serve`` records what it
    answers, without a server: the recorder's own write (``write_rows``) with version
    ``version``'s probabilities. Rows served with their stored features keep their event
    times and labels in their predictions."""
    from serverless_ml import registry
    from serverless_ml.serving.recorder import ServedRow, write_rows
    from serverless_ml.training.model import as_model_input

    rows = store.get_feature_group(spec.name, spec.version).read()
    rows = rows[rows[spec.primary_key].isin(keys)].reset_index(drop=True)
    pipeline = registry.load_version_model(spec.name, version, tracking_uri)
    order = [list(pipeline.classes_).index(c) for c in spec.classes]
    proba = pipeline.predict_proba(as_model_input(rows, spec))[:, order]
    served = [ServedRow(row[spec.primary_key], {f: row[f] for f in spec.feature_names}, version, proba[i], at)
              for i, row in rows.iterrows()]
    report = write_rows(spec, store, state_dir, served)
    assert report.predictions_inserted == len(keys) and report.features_inserted == 0, report
