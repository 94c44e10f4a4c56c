"""Serving latency: ``sml serve`` (validation, class names, recording on) against ``mlflow
models serve --env-manager local`` of the same registered model, in the same run.

Set-up (not timed): Titanic backfilled into a temporary store and a champion trained (3
trials) in a temporary tracking database; both servers started on free ports of
127.0.0.1 and warmed up. MLflow's server loads the model's pyfunc flavor, which validates
the rows and answers class names too (:mod:`serverless_ml.serving.flavor`), so both do
the same work but recording.

Timed: each request is a fresh HTTP connection from this process (as a client without
keep-alive), alternating between the two servers request by request so that they share
the machine's noise; ``--requests`` requests of 1 row and ``--requests / 3`` of 100 rows
(real Titanic rows) to each. ``sml serve`` gets ``POST /predict {"rows": [...]}`` and
records every row (flushes of 100 rows or 5 s, the defaults, happen during the timing);
MLflow gets ``POST /invocations`` with ``dataframe_split``. Also timed: ``sml serve``'s
``/invocations`` with MLflow's very body.

Goal (issue 18): p95 of ``sml serve`` <= 1.2x MLflow's at 1 row. Prints p50/p95 of each,
the ratios, the rows recorded (read back after SIGTERM), and writes
``bench/results/serve.json``.

    python -m bench serve [--requests 300]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import REPO_ROOT, resolve_data_dir, write_results

GOAL = 1.2
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(port: int, path: str, body: bytes) -> float:
    """One request on a new connection: seconds from connect to the whole answer."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
    finally:
        connection.close()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"error: {path} on port {port} answered {response.status}: {payload[:300]!r}")
    return elapsed


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path, name: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"error: {name} did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.3)


def _percentiles(values: list[float]) -> dict[str, float]:
    import numpy as np

    array = np.asarray(values) * 1000
    return {"p50_ms": float(np.percentile(array, 50)), "p95_ms": float(np.percentile(array, 95)), "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench serve", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="1-row requests to each server (100-row: a third).")
    args = parser.parse_args(argv)
    data_dir = resolve_data_dir()
    os.environ.setdefault("SML_DATA_DIR", str(data_dir))

    from bench.simulate import _world
    from serverless_ml.datasets import get_dataset
    from serverless_ml.serving.schema import frame_records

    spec = get_dataset("titanic")
    with tempfile.TemporaryDirectory(prefix="sml-bench-serve-") as tmp:
        folder = Path(tmp)
        print("serve: training a Titanic champion (3 trials; not timed) ...", flush=True)
        store, settings = _world(folder, data_dir)
        real = store.get_feature_group("titanic", 1).read()
        records = frame_records(real[spec.feature_names].sample(n=len(real), random_state=0))
        env = {**os.environ, "SML_STORE_DIR": str(store.root), "MLFLOW_TRACKING_URI": settings.tracking_uri,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        ours_port, mlflow_port = _free_port(), _free_port()
        ours_log, mlflow_log = folder / "sml-serve.log", folder / "mlflow-serve.log"
        with ours_log.open("wb") as out:
            ours = subprocess.Popen([sys.executable, "-m", "serverless_ml.cli", "serve", "--dataset", "titanic",
                                     "--port", str(ours_port)], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        with mlflow_log.open("wb") as out:
            reference = subprocess.Popen(
                [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", "models:/titanic@champion",
                 "--env-manager", "local", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
                cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(ours_port, ours, ours_log, "sml serve")
            _wait_ready(mlflow_port, reference, mlflow_log, "mlflow models serve")
            results: dict[str, Any] = {"requests": args.requests}
            served_rows = 0
            for size, count in ((1, args.requests), (100, max(10, args.requests // 3))):
                times: dict[str, list[float]] = {"sml serve /predict": [], "sml serve /invocations": [], "mlflow models serve": []}
                for i in range(count + 10):  # the first 10 are a warm-up
                    rows = [records[(i * size + j) % len(records)] for j in range(size)]
                    columns = spec.feature_names
                    split = json.dumps({"dataframe_split": {"columns": columns,
                                                            "data": [[r[c] for c in columns] for r in rows]}}).encode()
                    order = [("sml serve /predict", ours_port, "/predict", json.dumps({"rows": rows}).encode()),
                             ("mlflow models serve", mlflow_port, "/invocations", split),
                             ("sml serve /invocations", ours_port, "/invocations", split)]
                    if i % 2:
                        order.reverse()
                    for name, port, path, body in order:
                        elapsed = _post(port, path, body)
                        if i >= 10:
                            times[name].append(elapsed)
                    served_rows += 2 * size
                figures = {name: _percentiles(values) for name, values in times.items()}
                ratio = figures["sml serve /predict"]["p95_ms"] / figures["mlflow models serve"]["p95_ms"]
                ratio_inv = figures["sml serve /invocations"]["p95_ms"] / figures["mlflow models serve"]["p95_ms"]
                results[f"{size}_row"] = {**figures, "p95_ratio_predict": ratio, "p95_ratio_invocations": ratio_inv}
                print(f"\n{size}-row requests ({count} each, a new connection per request):")
                for name, value in figures.items():
                    print(f"  {name:24s} p50 {value['p50_ms']:7.2f} ms   p95 {value['p95_ms']:7.2f} ms")
                verdict = ("goal met" if ratio <= GOAL else "goal NOT met") if size == 1 else "no goal"
                print(f"  p95 ratio sml serve / mlflow: /predict {ratio:.2f}x, /invocations {ratio_inv:.2f}x "
                      f"(goal <= {GOAL}x at 1 row: {verdict})")
        finally:
            ours.send_signal(signal.SIGTERM)
            reference.send_signal(signal.SIGTERM)
            ours.wait(timeout=120)
            reference.wait(timeout=60)
        live = store.get_feature_group("titanic", 1).read()
        recorded = int((live["origin"] == "live").sum())
        results["rows_served"], results["rows_recorded"] = served_rows, recorded
        print(f"\nrecorded by sml serve: {recorded} live rows of {served_rows} served (read back after SIGTERM)")
        results["goal_met"] = results["1_row"]["p95_ratio_predict"] <= GOAL
        results["repo"] = str(REPO_ROOT)
        write_results("serve", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
