"""Tracking server: the same pipeline against a local SQLite tracking database and against
an MLflow tracking server on PostgreSQL.

The pipeline is ``sml features``, ``sml train`` (``--trials``, 3 folds), ``sml daily``
(40 rows) and ``sml infer``, each a subprocess, on the Titanic CSV from ``$SML_DATA_DIR``
(or the course's shared folder):

* ``local``: ``MLFLOW_TRACKING_URI=sqlite:///<tmp>/mlflow.db``, the Optuna study in SQLite
  next to it (the defaults);
* ``server``: ``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`` of ``sml tracking-server``
  on a PostgreSQL database, artifacts proxied by the server, and the Optuna study in
  another database of the same PostgreSQL cluster (what several machines would share).

Every repetition starts both from nothing (new store, new tracking database, no
champion; for the server a new database and a fresh server, whose start-up is reported
but not counted), and the order alternates. PostgreSQL runs from
``scripts/local-postgres.sh`` on a temporary folder and a free port. Prints per-step
medians, the totals and the ratio server/local; writes ``bench/results/tracking_server.json``.

    python -m bench tracking_server [--repeats 2] [--trials 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import resolve_data_dir, write_results
from serverless_ml.testing import stop_process_group

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL_POSTGRES = REPO_ROOT / "scripts" / "local-postgres.sh"
DEFAULT_REPEATS = 2
DEFAULT_TRIALS = 5
DATE = "2024-02-01"
STEPS = ("features", "train", "daily", "infer")
SERVER_START_TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _commands(trials: int, storage: str | None) -> list[tuple[str, list[str]]]:
    train = ["train", "--dataset", "titanic", "--trials", str(trials), "--folds", "3", "--quiet"]
    if storage:
        train += ["--storage", storage]
    return [
        ("features", ["features", "--dataset", "titanic"]),
        ("train", train),
        ("daily", ["daily", "--dataset", "titanic", "--date", DATE, "--rows", "40"]),
        ("infer", ["infer", "--dataset", "titanic", "--as-of", DATE]),
    ]


def run_pipeline(folder: Path, tracking_uri: str, trials: int, storage: str | None) -> dict[str, dict[str, float]]:
    """The four commands in ``folder``; wall and CPU seconds of each."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "SML_STORE_DIR": str(folder / "store"),
           "SML_DATA_DIR": str(resolve_data_dir())}
    times: dict[str, dict[str, float]] = {}
    for name, args in _commands(trials, storage):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "serverless_ml.cli", *args], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=900)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"error: sml {' '.join(args[:1])} failed against {tracking_uri.split('@')[-1]}:\n{proc.stderr}")
        times[name] = {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}
    return times


class Postgres:
    """A temporary cluster through scripts/local-postgres.sh."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="sml-bench-postgres-"))
        self.port = _free_port()
        self.password = secrets.token_hex(16)

    def _script(self, *args: str) -> None:
        env = {**os.environ, "SML_PG_PASSWORD": self.password}
        proc = subprocess.run([str(LOCAL_POSTGRES), *args], env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise SystemExit(f"error: scripts/local-postgres.sh {args[0]} failed:\n{proc.stdout}{proc.stderr}")

    def start(self) -> None:
        self._script("start", str(self.folder), str(self.port), "postgres")

    def database(self, name: str) -> str:
        self._script("start", str(self.folder), str(self.port), name)
        return f"postgresql://sml:{self.password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        if (self.folder / "data" / "PG_VERSION").exists():
            self._script("stop", str(self.folder))
        shutil.rmtree(self.folder, ignore_errors=True)


def start_server(backend_uri: str, folder: Path) -> tuple[subprocess.Popen, str, float]:
    """``sml tracking-server`` on ``backend_uri``; returns it, its URL and its start-up time."""
    port = _free_port()
    env = {**os.environ, "SML_TRACKING_DB_URI": backend_uri}
    log = (folder / "server.log").open("w")
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "serverless_ml.cli", "tracking-server", "--port", str(port),
         "--artifacts-destination", str(folder / "artifacts")],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - started < SERVER_START_TIMEOUT_S:
        if process.poll() is not None:
            raise SystemExit(f"error: sml tracking-server exited:\n{(folder / 'server.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):  # noqa: S310 - localhost
                return process, url, time.perf_counter() - started
        except OSError:
            time.sleep(0.25)
    stop_process_group(process)
    raise SystemExit(f"error: sml tracking-server did not answer within {SERVER_START_TIMEOUT_S} s")


def run(repeats: int = DEFAULT_REPEATS, trials: int = DEFAULT_TRIALS) -> dict[str, Any]:
    """Both pipelines ``repeats`` times, alternating which goes first."""
    timings: dict[str, list[dict[str, dict[str, float]]]] = {"local": [], "server": []}
    startups: list[float] = []
    postgres = Postgres()
    try:
        postgres.start()
        for rep in range(repeats):

            def local() -> None:
                with tempfile.TemporaryDirectory(prefix="sml-bench-local-") as tmp:
                    timings["local"].append(run_pipeline(Path(tmp), f"sqlite:///{Path(tmp) / 'mlflow.db'}", trials, None))

            def server(rep: int = rep) -> None:
                backend = postgres.database(f"mlflow_{rep}")
                storage = postgres.database(f"optuna_{rep}")
                with tempfile.TemporaryDirectory(prefix="sml-bench-server-") as tmp:
                    process, url, startup = start_server(backend, Path(tmp))
                    startups.append(startup)
                    try:
                        timings["server"].append(run_pipeline(Path(tmp), url, trials, storage))
                    finally:
                        stop_process_group(process)

            for side in (local, server) if rep % 2 == 0 else (server, local):
                side()
    finally:
        postgres.stop()

    def median(side: str, step: str, kind: str) -> float:
        return statistics.median(rep[step][kind] for rep in timings[side])

    medians = {side: {step: {kind: median(side, step, kind) for kind in ("wall_s", "cpu_s")} for step in STEPS}
               for side in timings}
    totals = {side: {kind: statistics.median(sum(rep[s][kind] for s in STEPS) for rep in timings[side])
                     for kind in ("wall_s", "cpu_s")} for side in timings}
    return {
        "benchmark": "tracking_server",
        "repeats": repeats,
        "trials": trials,
        "timings": timings,
        "median": medians,
        "total_median": totals,
        "ratio_server_to_local": {kind: totals["server"][kind] / totals["local"][kind] for kind in ("wall_s", "cpu_s")},
        "server_startup_s": startups,
        "versions": {"python": platform.python_version(), "mlflow": _version("mlflow"), "optuna": _version("optuna")},
        "machine": {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)), "load_avg": os.getloadavg()},
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


def report(results: dict[str, Any]) -> str:
    """The results as a small table."""
    med, tot, ratio = results["median"], results["total_median"], results["ratio_server_to_local"]
    lines = [
        f"tracking_server: features, train ({results['trials']} trials), daily, infer; "
        f"median of {results['repeats']} (order alternated)",
        f"  {'step':<10}{'local s':>10}{'server s':>10}{'ratio':>8}   (wall; CPU of the commands in brackets)",
    ]
    for step in STEPS:
        local, server = med["local"][step], med["server"][step]
        lines.append(f"  {step:<10}{local['wall_s']:>10.1f}{server['wall_s']:>10.1f}{server['wall_s'] / local['wall_s']:>7.2f}x"
                     f"   [{local['cpu_s']:.1f} / {server['cpu_s']:.1f} CPU s]")
    lines.append(f"  {'total':<10}{tot['local']['wall_s']:>10.1f}{tot['server']['wall_s']:>10.1f}{ratio['wall_s']:>7.2f}x"
                 f"   [{tot['local']['cpu_s']:.1f} / {tot['server']['cpu_s']:.1f} CPU s, {ratio['cpu_s']:.2f}x]")
    startups = ", ".join(f"{s:.0f}" for s in results["server_startup_s"])
    lines.append(f"  server start-up (not counted above): {startups} s; load average {results['machine']['load_avg'][0]:.1f} "
                 f"on {results['machine']['cpus']} CPUs")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench tracking_server", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="repetitions; medians are reported (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS, help="Optuna trials of the train step (default: %(default)s)")
    args = parser.parse_args(argv)
    results = run(args.repeats, args.trials)
    print(report(results))
    write_results("tracking_server", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
