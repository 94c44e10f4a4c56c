"""Side-by-side benchmarks: ours against a reference, in one process, printed as ratios.

Benchmarks are not tests. Each module in :data:`BENCHMARKS` times our code and a
reference doing the same work on the same input in the same run, alternating their
order over a few repetitions, and prints the medians, the ratio and whether it meets
the goal. Results are also written as JSON to ``bench/results/<name>.json``
(gitignored).

Run them with ``make bench`` (all) or ``python -m bench NAME [options]`` (one).
"""

from __future__ import annotations

from pathlib import Path

BENCHMARKS = ("backfill", "train", "inference", "simulate", "site", "tracking_server")
"""Benchmark modules, run in this order by ``python -m bench``."""

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where each benchmark writes ``<name>.json``."""
