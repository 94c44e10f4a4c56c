"""Backfill: a million Titanic-shaped rows into the local feature store vs. one Parquet file.

Times, in one process and alternating the order over ``--repeats`` repetitions:

* ``first_backfill``: ``get_or_create_feature_group`` on an empty
  :class:`~serverless_ml.feature_store.local.LocalFeatureStore` and ``fg.insert(df)``;
* ``re_backfill``: the same frame inserted again into the now-populated group, which
  must write nothing (the Delta table version is checked);
* ``parquet``: the reference, ``pq.write_table(pa.Table.from_pandas(df), path)``.

Prints the medians, the ratios to the reference against the goals (first backfill
<= 3x Parquet, re-backfill <= 10x Parquet) and the peak RSS; writes the same to
``bench/results/backfill.json``.

    python -m bench backfill [--rows 1000000] [--repeats 5] [--seed 0]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import os
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import deltalake
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench import write_results
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN
from serverless_ml.datasets.titanic import PORTS, SPEC, TITLES
from serverless_ml.feature_store.base import ORIGIN_COLUMN
from serverless_ml.feature_store.local import LocalFeatureGroup, LocalFeatureStore

GOALS = {"first_backfill": 3.0, "re_backfill": 10.0}
"""Largest acceptable ratio of each of our timings to the Parquet reference (from the issue)."""

DEFAULT_ROWS = 1_000_000
DEFAULT_REPEATS = 5
DEFAULT_SEED = 0
_AS_OF = pd.Timestamp("2024-01-01", tz="UTC")

T = TypeVar("T")


def make_frame(rows: int, seed: int) -> pd.DataFrame:
    """A synthetic Titanic-shaped frame in the feature group's layout and dtypes.

    Keys are unique and shuffled; event times spread over the year from 2024-01-01 UTC;
    about 20% of ages and 1% of ports are missing. Same ``rows`` and ``seed``, same frame.
    """
    rng = np.random.default_rng(seed)

    def pick(values: tuple[Any, ...], p: list[float] | None = None) -> np.ndarray:
        return np.asarray(values, dtype=object)[rng.choice(len(values), size=rows, p=p)]

    sibsp = rng.choice(np.arange(9, dtype=np.int64), size=rows, p=[0.68, 0.23, 0.04, 0.02, 0.02, 0.005, 0.003, 0.001, 0.001])
    parch = rng.choice(np.arange(7, dtype=np.int64), size=rows, p=[0.76, 0.13, 0.09, 0.005, 0.005, 0.005, 0.005])
    age = np.round(rng.uniform(0.42, 80.0, size=rows), 1)
    age[rng.random(rows) < 0.2] = np.nan
    embarked = pick(PORTS, [0.72, 0.19, 0.09])
    embarked[rng.random(rows) < 0.01] = None
    seconds = rng.integers(0, 365 * 24 * 3600, size=rows)
    columns = {
        SPEC.primary_key: rng.permutation(np.arange(1, rows + 1, dtype=np.int64)),
        EVENT_TIME_COLUMN: (_AS_OF + pd.to_timedelta(seconds, unit="s")).astype("datetime64[us, UTC]"),
        "pclass": rng.choice(np.array([1, 2, 3], dtype=np.int64), size=rows, p=[0.24, 0.21, 0.55]),
        "sex": pick(("male", "female"), [0.65, 0.35]),
        "age": age,
        "fare": np.round(np.clip(rng.gamma(1.2, 27.0, size=rows), 0.0, 1000.0), 4),
        "embarked": embarked,
        "sibsp": sibsp,
        "parch": parch,
        "title": pick(TITLES, [0.58, 0.14, 0.2, 0.05, 0.03]),
        "family_size": sibsp + parch + 1,
        SPEC.label: rng.integers(0, 2, size=rows, dtype=np.int64),
        ORIGIN_COLUMN: np.full(rows, "backfill", dtype=object),
    }
    frame = pd.DataFrame(columns)
    return frame[SPEC.store_columns]


def _timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _feature_group(root: Path) -> LocalFeatureGroup:
    """The group exactly as ``sml features`` opens it."""
    from serverless_ml.datasets.groups import feature_group_for

    group = feature_group_for(SPEC, LocalFeatureStore(root))
    assert isinstance(group, LocalFeatureGroup)
    return group


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (bytes on macOS; this bench targets Linux).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(rows: int = DEFAULT_ROWS, repeats: int = DEFAULT_REPEATS, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """Time the three writes ``repeats`` times, alternating ours and the reference first."""
    df = make_frame(rows, seed)
    rss_after_frame = _peak_rss_mib()
    timings: dict[str, list[float]] = {"first_backfill": [], "re_backfill": [], "parquet": []}
    sizes: dict[str, int] = {}

    for rep in range(repeats):
        with tempfile.TemporaryDirectory(prefix="sml-bench-backfill-") as tmp:
            root = Path(tmp)

            def ours(root: Path = root) -> None:
                seconds, result = _timed(lambda: _feature_group(root / "store").insert(df))
                assert result.inserted == rows and result.written == rows, result
                timings["first_backfill"].append(seconds)
                before = _feature_group(root / "store").data_version()
                seconds, result = _timed(lambda: _feature_group(root / "store").insert(df))
                after = _feature_group(root / "store").data_version()
                assert result.written == 0 and result.unchanged == rows, result
                assert after == before, f"re-backfill moved the table from version {before} to {after}"
                timings["re_backfill"].append(seconds)
                sizes["store_bytes"] = _tree_bytes(root / "store")

            def reference(root: Path = root) -> None:
                path = root / "reference.parquet"
                seconds, _ = _timed(lambda: pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path))
                timings["parquet"].append(seconds)
                sizes["parquet_bytes"] = path.stat().st_size

            for step in (ours, reference) if rep % 2 == 0 else (reference, ours):
                step()

    medians = {name: statistics.median(values) for name, values in timings.items()}
    ratios = {name: medians[name] / medians["parquet"] for name in GOALS}
    return {
        "benchmark": "backfill",
        "rows": rows,
        "repeats": repeats,
        "seed": seed,
        "timings_s": timings,
        "median_s": medians,
        "ratio_to_parquet": ratios,
        "goal_ratio": GOALS,
        "pass": {name: ratios[name] <= goal for name, goal in GOALS.items()},
        "bytes_on_disk": sizes,
        "peak_rss_mib": _peak_rss_mib(),
        "peak_rss_after_frame_mib": rss_after_frame,
        "versions": {
            "python": platform.python_version(),
            "pandas": pd.__version__,
            "pyarrow": pa.__version__,
            "deltalake": deltalake.__version__,
            "numpy": np.__version__,
        },
        "machine": {"platform": platform.platform(), "cpus": _cpus()},
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def report(results: dict[str, Any]) -> str:
    """The results as a small table."""
    med, ratios = results["median_s"], results["ratio_to_parquet"]
    lines = [
        f"backfill: {results['rows']:,} rows, median of {results['repeats']} (order alternated), seed {results['seed']}",
        f"  {'write':<16}{'median s':>10}{'min s':>9}{'ratio':>8}{'goal':>8}  result",
    ]
    for name in ("first_backfill", "re_backfill", "parquet"):
        best = min(results["timings_s"][name])
        if name in GOALS:
            verdict = "PASS" if results["pass"][name] else "MISS"
            tail = f"{ratios[name]:>7.2f}x{'<=' + format(GOALS[name], 'g') + 'x':>8}  {verdict}"
        else:
            tail = f"{'1.00x':>8}{'':>8}  reference"
        lines.append(f"  {name:<16}{med[name]:>10.3f}{best:>9.3f}{tail}")
    lines.append(
        f"  peak RSS {results['peak_rss_mib']:.0f} MiB (frame built: {results['peak_rss_after_frame_mib']:.0f} MiB)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench backfill", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the synthetic frame (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="repetitions; medians are reported (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="numpy RNG seed of the frame (default: %(default)s)")
    args = parser.parse_args(argv)
    results = run(args.rows, args.repeats, args.seed)
    print(report(results))
    write_results("backfill", results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
