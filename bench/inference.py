"""Batch inference end to end on a million new rows, against the bare ``pipeline.predict``.

Set-up (not timed): Titanic backfilled and a champion trained (default trials) in temporary
folders, then 1,000,000 new Titanic-shaped rows (``bench.backfill.make_frame``, keys
moved past the real ones) inserted into the feature group.

* ``end_to_end``: ``sml infer`` (in-process): read the group, select the new rows, predict
  in chunks, compute the monitoring statistics, log the run, upsert the predictions;
* ``bare_predict``: the reference, the champion pipeline's ``predict`` on the same rows
  already in memory.

Goal (from the issue): end to end at >= 50 % of bare-predict throughput, memory bounded.
Prints rows per second for both, the ratio and the peak RSS; writes
``bench/results/inference.json``.

    python -m bench inference [--rows 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import resolve_data_dir, write_results

GOAL_RATIO = 0.5
KEY_OFFSET = 10_000_000


def run(rows: int, data_dir: Path) -> dict[str, Any]:
    import mlflow

    from bench.backfill import make_frame
    from bench.simulate import _world
    from serverless_ml import defaults
    from serverless_ml.datasets import get_dataset
    from serverless_ml.pipelines.infer import InferOptions, infer, load_champion
    from serverless_ml.training.model import as_model_input

    spec = get_dataset("titanic")
    with tempfile.TemporaryDirectory() as tmp:
        # The champion `sml train` makes by default: its forests set the cost of predict.
        store, settings = _world(Path(tmp), data_dir, trials=defaults.TRAIN_TRIALS)
        mlflow.set_tracking_uri(settings.tracking_uri)
        frame = make_frame(rows, seed=0)
        frame[spec.primary_key] += KEY_OFFSET
        frame["origin"] = "live"
        group = store.get_feature_group("titanic", 1)
        group.insert(frame)
        champion = load_champion(spec, group, group.read(), mlflow.MlflowClient(tracking_uri=settings.tracking_uri))
        x = as_model_input(frame, spec)
        del frame

        started = time.perf_counter()
        champion.load_model().predict(x)
        bare = time.perf_counter() - started
        del x

        started = time.perf_counter()
        report = infer(spec, store, settings, InferOptions(figures=False), dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc))
        end_to_end = time.perf_counter() - started
        assert report.rows_scored == rows, report.rows_scored
    return {
        "rows": rows,
        "bare_predict_s": bare,
        "end_to_end_s": end_to_end,
        "bare_rows_per_s": rows / bare,
        "end_to_end_rows_per_s": rows / end_to_end,
        "ratio": bare / end_to_end,
        "goal_ratio": GOAL_RATIO,
        "pass": bare / end_to_end >= GOAL_RATIO,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpus": os.cpu_count(),
    }


def report(results: dict[str, Any]) -> str:
    return "\n".join([
        f"{results['rows']:,} rows: bare predict {results['bare_rows_per_s']:,.0f} rows/s ({results['bare_predict_s']:.1f} s), "
        f"end to end {results['end_to_end_rows_per_s']:,.0f} rows/s ({results['end_to_end_s']:.1f} s)",
        f"end-to-end throughput = {results['ratio']:.0%} of bare predict; goal >= {results['goal_ratio']:.0%}: "
        f"{'PASS' if results['pass'] else 'MISS'}; peak RSS {results['peak_rss_mib']:.0f} MiB",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    results = run(args.rows, resolve_data_dir())
    print(report(results))
    write_results("inference", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
