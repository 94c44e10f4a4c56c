"""Every benchmark module imports (nothing runs on import): a module moved or renamed in
the library breaks `make bench` here, not in a benchmark run hours later."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MODULES = sorted(p.stem for p in BENCH.glob("*.py") if p.stem != "__main__")


def test_the_benchmarks_are_found() -> None:
    assert {"train", "drift", "inference", "datasets"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_each_benchmark_module_imports(name: str) -> None:
    importlib.import_module(f"bench.{name}")
