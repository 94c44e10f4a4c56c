"""Simulation: 365 days of history for one dataset, against the day-by-day loop.

Set-up (not timed): Titanic backfilled into a temporary store and a champion trained (few
trials) in a temporary, already migrated tracking database. Then, side by side:

* ``simulate``: ``sml simulate --days 365`` (in-process), the whole year;
* ``day_by_day``: the reference, ``sml daily`` then ``sml infer`` for each day, as a
  scheduler would run them, on a copy of the same world for ``--reference-days`` days,
  extrapolated per day to a year.

Goal (from the issue): 365 days in <= 60 s. Prints both, the per-day times and the ratio;
writes ``bench/results/simulate.json``.

    python -m bench simulate [--days 365] [--rows 10] [--reference-days 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import resolve_data_dir, write_results
from serverless_ml.testing import copy_database

GOAL_S = 60.0
END = dt.date(2025, 12, 31)


def _world(folder: Path, data_dir: Path, trials: int = 3) -> tuple[Any, Any]:
    import mlflow

    from serverless_ml.datasets import get_dataset
    from serverless_ml.datasets.sources import load_source
    from serverless_ml.feature_store.local import LocalFeatureStore
    from serverless_ml.pipelines.features import backfill
    from serverless_ml.pipelines.train import TrainOptions, train
    from serverless_ml.settings import resolve_settings

    spec = get_dataset("titanic")
    store = LocalFeatureStore(folder / "store")
    backfill(spec, store, load_source(spec, None, data_dir))
    settings = resolve_settings(store_dir=store.root, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    train(spec, store, settings, TrainOptions(trials=trials, seed=1, folds=3 if trials < 10 else 5, quiet=True))
    mlflow.set_tracking_uri(None)
    return store, settings


def _copy_world(template: Path, target: Path) -> None:
    """The store and the tracking database (through SQLite's backup API: the database is
    in WAL mode and may still have commits in its log)."""
    shutil.copytree(template / "store", target / "store")
    copy_database(template / "mlflow.db", target / "mlflow.db")


def _use(folder: Path) -> tuple[Any, Any]:
    import mlflow

    from serverless_ml.feature_store.local import LocalFeatureStore
    from serverless_ml.settings import resolve_settings

    store = LocalFeatureStore(folder / "store")
    settings = resolve_settings(store_dir=store.root, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    os.environ["MLFLOW_TRACKING_URI"] = settings.tracking_uri
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.MlflowClient().search_experiments()  # the engine is warm before timing
    return store, settings


def run(days: int, rows: int, reference_days: int, data_dir: Path) -> dict[str, Any]:
    from serverless_ml.datasets import get_dataset
    from serverless_ml.pipelines.features import add_daily_rows
    from serverless_ml.pipelines.infer import InferOptions, infer
    from serverless_ml.pipelines.simulate import SimulateOptions, simulate

    spec = get_dataset("titanic")
    with tempfile.TemporaryDirectory() as tmp:
        template = Path(tmp) / "template"
        template.mkdir()
        _world(template, data_dir)
        ours_dir, ref_dir = Path(tmp) / "ours", Path(tmp) / "reference"
        for target in (ours_dir, ref_dir):
            _copy_world(template, target)

        store, settings = _use(ours_dir)
        started = time.perf_counter()
        report = simulate(spec, store, settings, SimulateOptions(days=days, end_date=END, rows=rows))
        ours = time.perf_counter() - started
        assert report.runs == days, report

        store, settings = _use(ref_dir)
        first = END - dt.timedelta(days=reference_days - 1)
        started = time.perf_counter()
        for i in range(reference_days):
            day = first + dt.timedelta(days=i)
            add_daily_rows(spec, store, day, rows, 0)
            infer(spec, store, settings, InferOptions(as_of=day, figures=False),
                  dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0, 15), tzinfo=dt.timezone.utc))
        reference = time.perf_counter() - started
    per_day_ref = reference / reference_days
    return {
        "days": days,
        "rows_per_day": rows,
        "simulate_s": ours,
        "simulate_per_day_s": ours / days,
        "day_by_day_per_day_s": per_day_ref,
        "day_by_day_extrapolated_s": per_day_ref * days,
        "ratio_day_by_day_to_simulate": per_day_ref * days / ours,
        "goal_s": GOAL_S,
        "pass": ours <= GOAL_S if days == 365 else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpus": os.cpu_count(),
    }


def report(results: dict[str, Any]) -> str:
    verdict = {True: "PASS", False: "MISS", None: "(goal is for 365 days)"}[results["pass"]]
    return "\n".join([
        f"simulate {results['days']} days x {results['rows_per_day']} rows: {results['simulate_s']:.1f} s "
        f"({results['simulate_per_day_s'] * 1000:.0f} ms/day); goal <= {results['goal_s']:.0f} s: {verdict}",
        f"day-by-day daily+infer: {results['day_by_day_per_day_s'] * 1000:.0f} ms/day, "
        f"{results['day_by_day_extrapolated_s']:.0f} s for {results['days']} days "
        f"(x{results['ratio_day_by_day_to_simulate']:.1f} the simulation)",
        f"peak RSS {results['peak_rss_mib']:.0f} MiB",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench simulate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--rows", type=int, default=10)
    parser.add_argument("--reference-days", type=int, default=10)
    args = parser.parse_args(argv)
    results = run(args.days, args.rows, args.reference_days, resolve_data_dir())
    print(report(results))
    write_results("simulate", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
