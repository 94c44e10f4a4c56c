"""Imports run only downward: no module of a lower layer imports one of a higher layer,
and no modules import each other in a cycle. Every import counts, those inside functions
too (a lazy import upward is still an upward dependency)."""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("serverless_ml", "monitoring_app")

# Lowest first. A module may import modules of its own layer or of lower ones. A name is a
# module or a package (then it covers every module under it).
LAYERS: tuple[tuple[str, ...], ...] = (
    # No project imports: errors, every default, secrets' removal, crash points, progress.
    ("serverless_ml.errors", "serverless_ml.defaults", "serverless_ml.redaction", "serverless_ml.faults",
     "serverless_ml.progress", "serverless_ml.sqlite_exit", "serverless_ml.testing", "serverless_ml"),
    # Dates, cron, locks, where things live, machine faults.
    ("serverless_ml.dates", "serverless_ml.cron", "serverless_ml.locks", "serverless_ml.settings",
     "serverless_ml.system_faults"),
    # The two stores: MLflow set-up and the feature store interface and backends.
    ("serverless_ml.tracking", "serverless_ml.feature_store"),
    # Dataset specs, sources, validation, the dataset's feature group.
    ("serverless_ml.datasets",),
    # The jobs/site contract, and the tracking server (runs mlflow server).
    ("serverless_ml.registry", "serverless_ml.tracking_server"),
    # Training core and trial logging.
    ("serverless_ml.training", "serverless_ml.trial_logging"),
    # Monitoring maths and scoring.
    ("serverless_ml.inference",),
    # Serving: the rows a served model accepts, the pyfunc flavor, `sml serve`.
    ("serverless_ml.serving",),
    # The jobs (a job may run another as a step).
    ("serverless_ml.pipelines",),
    # The site.
    ("monitoring_app",),
    # The shells: the `sml` CLI (it starts the site), then `make demo`.
    ("serverless_ml.cli",),
    ("serverless_ml.demo",),
)


def project_modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from pkg import mod`` is an import of
    ``pkg.mod``; ``from pkg import name`` of ``pkg``)."""

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join([*base, node.module] if node.module else base)
                else:
                    module = node.module or ""
                targets = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in modules else module
                           for alias in node.names]
            else:
                continue
            for target in targets:
                found = resolve(target)
                if found is not None and found != name:
                    graph[name].add(found)
    return graph


def layer_of(module: str) -> int:
    best, depth = None, -1
    for position, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and prefix.count(".") > depth:
                best, depth = position, prefix.count(".")
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(project_modules())


def test_every_module_has_a_layer() -> None:
    for module in project_modules():
        layer_of(module)


def test_imports_run_only_downward(graph: dict[str, set[str]]) -> None:
    upward = sorted(f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
                    for a, targets in graph.items() for b in targets if layer_of(b) > layer_of(a))
    assert not upward, "\n".join(upward)


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    assert not cycles(graph)


def test_the_checks_see_a_planted_upward_import_and_cycle(tmp_path: Path) -> None:
    """The scanner finds imports in functions and relative ones, so the checks above cannot
    pass on a graph it failed to read."""
    modules = project_modules()
    graph = import_graph(modules)
    assert "serverless_ml.registry" in graph["serverless_ml.pipelines.infer"]
    assert "monitoring_app.app" in graph["serverless_ml.cli"]  # imported inside a function
    planted = dict(graph)
    planted["serverless_ml.errors"] = {"serverless_ml.cli"}
    assert layer_of("serverless_ml.cli") > layer_of("serverless_ml.errors")
    assert cycles(planted), "errors -> cli -> errors is a cycle"
