"""A contract has one home: each name that jobs write and the site (or another job) reads
is a constant of ``serverless_ml/registry.py``, and no other module of the library, the
site, the entry points or the benchmarks spells it.

The scan reads every string literal of those modules (f-string parts included,
docstrings and comments not): a literal equal to a contract name, or MLflow's column and
filter forms of it (``metrics.<name>``, ``tags.<name>``, ``params.<name>``,
``tags.`<name>``` in a search filter), fails; so does an artifact path inside a longer literal. Tests may
spell the names: they check what a user of MLflow sees, so a renamed name fails them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from serverless_ml import defaults, registry

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_FILE = "serverless_ml/registry.py"

MLPROJECT_PARAMETERS = {name for parameters in defaults.ENTRY_POINT_DEFAULTS.values() for name in parameters}
"""MLproject parameter names: another contract (MLproject and entry points), owned by
defaults.py. ``as_of``, ``drift_share``, ``drift_p_value`` and ``drift_min_effect`` are
both a parameter and a run's tag, metric or param."""
MLPROJECT_FILES = {"serverless_ml/defaults.py", "serverless_ml/pipelines/main.py"}
"""The files that spell MLproject parameters (main.py builds each step's parameters)."""

HOMONYMS: dict[tuple[str, str], str] = {
    ("monitoring_app/components.py", registry.ALERT_TAG): "the HTML role of an error notice",
    ("monitoring_app/pages/predict.py", registry.ALERT_TAG): "the HTML role of a field error",
    ("monitoring_app/pages/predictions.py", registry.ALERT_TAG): "the HTML role of a filter error",
    ("monitoring_app/pages/overview.py", registry.ALERTS_TAG): "the CSS class of the alerts list",
    ("bench/drift.py", registry.ALERTS_TAG): "a field of bench/results/drift.json",
    ("bench/drift.py", registry.HOLDOUT_ACCURACY_TAG): "a field of bench/results/drift.json",
    ("bench/reference_drift.py", registry.MESSAGE_SEPARATOR): "joins a failed reference job's stderr lines",
    ("serverless_ml/datasets/spec.py", registry.POSITIVE_CLASS_PARAM): "a key of a dataset spec (and its attribute)",
    ("serverless_ml/inference/scoring.py", registry.MODEL_VERSION_TAG):
        "scoring.MODEL_VERSION_COLUMN, a column of the predictions feature group (stored data, not a run's tag)",
    ("serverless_ml/pipelines/simulate.py", registry.SIMULATED_TAG): "the verb of the history-conflict message",
    ("serverless_ml/tracking.py", registry.DATA_VERSION_TAG):
        "a field of a logged dataset input's source description (tracking is below the registry; nothing reads it back)",
}
"""The same text meaning something else, by file: each with what it is."""


def contract_names() -> dict[str, str]:
    """The registry's public string constants: name -> value."""
    return {name: value for name, value in vars(registry).items()
            if name.isupper() and not name.startswith("_") and isinstance(value, str)}


def scanned_files() -> list[Path]:
    files = [*ROOT.glob("serverless_ml/**/*.py"), *ROOT.glob("monitoring_app/**/*.py"),
             *ROOT.glob("entrypoints/*.py"), *ROOT.glob("bench/*.py")]
    return sorted(f for f in files if f.relative_to(ROOT).as_posix() != REGISTRY_FILE)


def string_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal of ``source`` but its docstrings (a string
    that is a statement of its own), f-string parts included."""
    tree = ast.parse(source)
    docs = {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs]


def spells(text: str, value: str) -> bool:
    """Whether a literal ``text`` spells the contract name ``value``."""
    forms = (f"metrics.{value}", f"tags.{value}", f"params.{value}")
    if text == value or text in forms or any(f"{kind}.`{value}`" in text for kind in ("metrics", "tags", "params")):
        return True
    return "/" in value and value in text  # an artifact path inside a URI or a longer path


def allowed(path: str, value: str) -> bool:
    return (path in MLPROJECT_FILES and value in MLPROJECT_PARAMETERS) or (path, value) in HOMONYMS


def test_the_registry_defines_the_contract_names() -> None:
    names = contract_names()
    # The names issue 20 lists, so that the scan below cannot pass on an empty registry.
    for value in ("champion", "challenger", "holdout_accuracy", "training_run_id", "promoted_at",
                  "val_accuracy_mean", "as_of", "training/keys.parquet", "sml.training_fingerprint"):
        assert value in names.values(), value
    assert len(set(names.values())) == len(names), "two constants spell the same name"


def test_the_training_runs_names_are_registry_constants() -> None:
    """What a training run logs that the site's Models page or a later job reads: the scan
    below covers a name only while it is a constant of the registry."""
    names = set(contract_names().values())
    for value in ("test_", "test_accuracy", "test_precision", "test_recall", "test_f1", "test_roc_auc",
                  "baseline_test_accuracy", "val_accuracy_std", "trials_completed", "study_name", "best_trial_value",
                  "worker_run_ids", "search_space.json", "evaluation/"):
        assert value in names, value
    assert registry.evaluation_artifact("confusion_matrix", "png") == "evaluation/confusion_matrix.png"


@pytest.mark.parametrize(("classes", "positive"), [(["no", "yes"], "yes"), (["a", "b", "c"], None)])
def test_the_holdout_metrics_the_site_reads_are_logged(classes: list[str], positive: str | None) -> None:
    """The holdout metric names the Models page reads are among those training logs:
    :func:`evaluation.classification_metrics` under :data:`registry.HOLDOUT_METRIC_PREFIX`."""
    from serverless_ml.training import evaluation

    y_true = [*classes, *classes]
    y_pred = [*classes, *reversed(classes)]
    proba = np.eye(len(classes))[[classes.index(c) for c in y_pred]] * 0.8 + 0.2 / len(classes)
    logged = evaluation.classification_metrics(y_true, y_pred, proba, classes, registry.HOLDOUT_METRIC_PREFIX,
                                               positive_class=positive, proba_classes=classes)
    for name in (registry.HOLDOUT_ACCURACY_METRIC, registry.HOLDOUT_PRECISION_METRIC, registry.HOLDOUT_RECALL_METRIC,
                 registry.HOLDOUT_F1_METRIC, registry.HOLDOUT_ROC_AUC_METRIC):
        assert name in logged, (name, sorted(logged))


def test_the_scan_finds_a_planted_literal() -> None:
    source = (
        '"""A docstring may say holdout_accuracy."""\n'
        'x = {"holdout_accuracy": 1}\n'
        'y = runs["tags.as_of"]\n'
        'z = f"runs:/{run_id}/training/keys.parquet"\n'
        'w = f"tags.`{0}`".format(1) + "tags.`sml.role` = \'tune\'"\n'
    )
    found = {(line, value) for line, text in string_literals(source) for value in contract_names().values()
             if spells(text, value)}
    assert found == {(2, "holdout_accuracy"), (3, "as_of"), (4, "training/keys.parquet"), (5, "sml.role")}


def test_no_other_module_spells_a_contract_name() -> None:
    names = contract_names()
    files = scanned_files()
    assert len(files) > 50  # the library, the site, the entry points and the benchmarks
    offences = []
    for file in files:
        path = file.relative_to(ROOT).as_posix()
        for line, text in string_literals(file.read_text(encoding="utf-8")):
            offences += [f"{path}:{line}: {text!r} spells registry.{name}" for name, value in names.items()
                         if spells(text, value) and not allowed(path, value)]
    assert not offences, "\n".join(offences)


def test_every_exemption_is_still_needed() -> None:
    """An exemption whose literal went away is removed, so the list stays honest."""
    for (path, value), why in HOMONYMS.items():
        texts = [text for _, text in string_literals((ROOT / path).read_text(encoding="utf-8"))]
        assert any(spells(text, value) for text in texts), f"{path} no longer spells {value!r} ({why})"
