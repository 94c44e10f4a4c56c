"""Side-by-side benchmarks: ours against a reference, in one process, printed as ratios.

Benchmarks are not tests. Each module in :data:`BENCHMARKS` times our code and a
reference doing the same work on the same input in the same run, alternating their
order over a few repetitions, and prints the medians, the ratio and whether it meets
the goal. Results are also written as JSON to ``bench/results/<name>.json``
(gitignored).

Run them with ``make bench`` (all) or ``python -m bench NAME [options]`` (one).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

BENCHMARKS = ("backfill", "train", "inference", "ingest", "simulate", "site", "tracking_server", "drift", "estimate", "startup", "serve", "live_promotion")
"""Benchmark modules, run in this order by ``python -m bench``."""

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where each benchmark writes ``<name>.json``."""

REPO_ROOT = Path(__file__).resolve().parents[1]


def timed_run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """Run ``command`` once: its wall-clock seconds, its CPU seconds (the child's user +
    system time) and the completed process (text stdout and stderr)."""
    import resource
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json``, print where, and return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{name}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"  results: {out}")
    return out


def resolve_data_dir() -> Path:
    """The folder with the course's CSVs: ``$SML_DATA_DIR`` (``make bench`` sets it), else
    ``../shared/data`` next to the checkout."""
    path = Path(os.environ.get("SML_DATA_DIR") or REPO_ROOT.parent / "shared" / "data")
    if not (path / "titanic.csv").is_file():
        raise SystemExit(f"error: the benchmarks read titanic.csv from SML_DATA_DIR ({path} has none)")
    return path
