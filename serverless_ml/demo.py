"""The demo behind ``make demo``: the whole story for Iris and Titanic.

For each dataset, the MLproject's ``main`` job (``sml main``): backfill the feature store,
tune and register a model, simulate the 30 days up to yesterday (a batch a day, with a
drift episode), add today's rows and score today's batch, every step an MLflow run. Then
it prints where to look (the feature store, the tracking database, the MLflow UI
command) and starts the monitoring site, which prints its URL (``--no-site``: stop
after the batch part). Reads the same settings as ``sml`` (``SML_STORE_DIR``,
``SML_DATA_DIR``, ``MLFLOW_TRACKING_URI``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from typing import IO, TYPE_CHECKING

from serverless_ml.settings import Settings, resolve_settings

if TYPE_CHECKING:
    from serverless_ml.tracking import Tracking

# A drift episode per dataset: what the site's Drift page and alerts show.
DRIFTS = {"iris": "petal_length+1.5,petal_width+0.6", "titanic": "age+20,fare*3"}


DEMO_LABEL_DELAY = 3
DEMO_LABEL_SHARE = 0.8
"""The demo's history: each day's labels arrive 3 days later, for 80 % of the rows (the
last days show estimated accuracy only; older days estimated and realized)."""


def main_command(dataset: str, trials: int, days: int) -> list[str]:
    """``sml main`` for one dataset, with its drift episode."""
    return [
        sys.executable, "-m", "serverless_ml.cli", "main", "--dataset", dataset, "--trials", str(trials),
        "--days", str(days), "--drift", DRIFTS.get(dataset, ""),
        "--drift-from", str(max(days * 2 // 3, 1)) if dataset in DRIFTS else "0",
        "--drift-days", str(max(days // 6, 1)) if dataset in DRIFTS else "0",
        # As in production: labels arrive days after the rows, for most of them only.
        "--label-delay", str(DEMO_LABEL_DELAY), "--label-share", str(DEMO_LABEL_SHARE),
    ]


def prepare_databases(settings: Settings, tracker: Tracking) -> None:
    """Create the tracking database's and the Optuna storage's tables once, before the
    datasets' jobs start together (two processes migrating one new SQLite file race)."""
    import optuna

    tracker.client.search_experiments()
    storage = settings.optuna_storage
    if storage.startswith("sqlite:///"):
        optuna.storages.RDBStorage(storage)


def _relay(prefix: str, stream: IO[str]) -> None:
    for line in stream:
        print(f"[{prefix}] {line}", end="", flush=True)


def run_demo(datasets: list[str], trials: int, days: int, settings: Settings, parallel: bool = True) -> float:
    """Run ``sml main`` for each dataset (at the same time: one dataset's jobs are mostly
    one process, and these machines have two cores); return the wall time in seconds."""
    from serverless_ml import tracking

    started = time.monotonic()
    prepare_databases(settings, tracking.configure_tracking(settings))
    for dataset in datasets:
        print(f"=== {dataset}: features -> train ({trials} trials) -> simulate {days} days up to yesterday "
              "-> today's rows -> score today's batch", flush=True)
    failed: list[str] = []

    def start(dataset: str) -> tuple[str, subprocess.Popen[str], threading.Thread]:
        proc = subprocess.Popen(
            main_command(dataset, trials, days), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        assert proc.stdout is not None
        relay = threading.Thread(target=_relay, args=(dataset, proc.stdout), daemon=True)
        relay.start()
        return dataset, proc, relay

    def finish(dataset: str, proc: subprocess.Popen[str], relay: threading.Thread) -> None:
        if proc.wait() != 0:
            failed.append(f"{dataset} (exit {proc.returncode})")
        relay.join()

    if parallel:
        for child in [start(dataset) for dataset in datasets]:
            finish(*child)
    else:
        for dataset in datasets:
            finish(*start(dataset))
            if failed:
                break
    if failed:
        raise SystemExit(f"error: the main job failed for {', '.join(failed)}")
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--datasets", default="iris,titanic")
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials of each training (default: %(default)s).")
    parser.add_argument("--days", type=int, default=30, help="Days simulated up to yesterday (default: %(default)s).")
    parser.add_argument("--port", type=int, default=8050, help="The monitoring site's port (default: %(default)s).")
    parser.add_argument("--no-site", action="store_true", help="Stop after the batch part (today's batch scored).")
    parser.add_argument("--sequential", action="store_true", help="One dataset after the other (default: together).")
    args = parser.parse_args(argv)
    settings = resolve_settings()
    elapsed = run_demo([d for d in args.datasets.split(",") if d], args.trials, args.days, settings, not args.sequential)
    print(f"\nbatch part finished in {elapsed:.0f} s")
    print(f"feature store:   {settings.store_dir}")
    print(f"MLflow tracking: {settings.tracking_uri}")
    print(f"MLflow UI:       .venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} --port 5000")
    if args.no_site:
        print(f"monitoring site: .venv/bin/sml dashboard --port {args.port}")
        return
    from serverless_ml.cli import cli

    if "dashboard" not in cli.commands:
        print("(the monitoring site is not part of this build yet)")
        return
    os.execv(sys.executable, [sys.executable, "-m", "serverless_ml.cli", "dashboard", "--port", str(args.port)])


if __name__ == "__main__":
    main()
