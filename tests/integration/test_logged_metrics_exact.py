"""Every classification metric the project logs or shows, through a real ``train``, two
days of ``infer`` and the site's Models page, equals scikit-learn's own computation, on
small spec-defined datasets whose classes are listed unsorted: the training run's holdout
metrics and ``positive_class`` param, the monitoring runs' batch and rolling metrics, and
the holdout metrics the Models page shows. (The pure versions, with more label kinds, are
in ``tests/unit/test_metrics_exact.py``.)

The reference side: the champion loaded from the registry, re-scoring the holdout rows the
training run logged (``training/keys.parquet``); the predictions table for the batches.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any, NamedTuple

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from sklearn.metrics import accuracy_score, auc, precision_recall_fscore_support, roc_auc_score, roc_curve

from monitoring_app import create_app, ids
from monitoring_app.pages import models
from monitoring_app.site import current_site
from serverless_ml.datasets import DatasetSpec, load_spec_file
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.settings import resolve_settings
from serverless_ml.registry import monitoring_experiment
from serverless_ml.training.evaluation import class_metric_keys
from serverless_ml.training.model import as_model_input

pytestmark = pytest.mark.integration

START = dt.date(2024, 3, 1)
DAYS = 2
ROWS_PER_DAY = 40


class Dataset(NamedTuple):
    classes: list[Any]
    positive_class: Any  # None: not in the spec file
    expected_positive: Any  # what the metrics must be about (None: multiclass)
    class_names: list[str] | None = None  # per-class metrics are named by these when set


DATASETS = {
    # Sorted, benign comes first: the model's probability column 1 is malignant.
    "strings, default positive": Dataset(["malignant", "benign"], None, "benign"),
    "integers, first class positive": Dataset([1, 0], 1, 1, ["sick", "healthy"]),
    "7 integers": Dataset([6, 2, 0, 5, 1, 4, 3], None, None),
}


def _spec_file(folder: Path, dataset: Dataset) -> Path:
    """A CSV of two noisy features that separate the classes only partly (ROC AUC well
    inside (0.5, 1)), and its spec file."""
    rng = np.random.default_rng(5)
    n = 300 if len(dataset.classes) == 2 else 420
    codes = rng.integers(0, len(dataset.classes), n)
    pd.DataFrame({
        "x1": (rng.normal(size=n) + codes * 1.2).round(4),
        "x2": (rng.normal(size=n) + np.cos(codes * 2.0)).round(4),
        "kind": np.asarray(dataset.classes, dtype=object)[codes],
    }).to_csv(folder / "exact.csv", index=False)
    spec: dict[str, Any] = {
        "name": "exact", "source": {"path": "exact.csv"}, "label": "kind", "classes": dataset.classes,
        "features": {"x1": {"type": "double", "min": -100, "max": 100}, "x2": {"type": "double", "min": -100, "max": 100}},
    }
    if dataset.positive_class is not None:
        spec["positive_class"] = dataset.positive_class
    if dataset.class_names is not None:
        spec["class_names"] = dataset.class_names
    path = folder / "exact.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _reference(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[Any], positive: Any,
    proba: np.ndarray | None = None, proba_classes: list[Any] | None = None, class_names: list[str] | None = None,
) -> dict[str, float]:
    """scikit-learn's numbers, named as the project logs them (without the prefix; a class
    by its name when ``class_names`` are given)."""
    out = {"accuracy": accuracy_score(y_true, y_pred)}
    if positive is not None:
        average: dict[str, Any] = {"average": "binary", "pos_label": positive}
    else:
        average = {"average": "macro", "labels": classes}
    out["precision"], out["recall"], out["f1"], _ = precision_recall_fscore_support(y_true, y_pred, zero_division=0, **average)
    each = precision_recall_fscore_support(y_true, y_pred, labels=classes, zero_division=0)
    for i, key in enumerate(class_metric_keys(classes, class_names)):
        for name, values in zip(("precision", "recall", "f1", "support"), each, strict=True):
            out[f"{name}_{key}"] = float(values[i])
    if proba is not None and proba_classes is not None:
        if positive is not None:
            fpr, tpr, _ = roc_curve(y_true, proba[:, proba_classes.index(positive)], pos_label=positive)
            out["roc_auc"] = auc(fpr, tpr)
        else:
            out["roc_auc"] = roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=proba_classes)
    return out


def _assert_logged(logged: dict[str, float], expected: dict[str, float], prefix: str) -> None:
    for name, value in expected.items():
        assert f"{prefix}{name}" in logged, f"{prefix}{name} was not logged"
        assert logged[f"{prefix}{name}"] == pytest.approx(value, abs=1e-9), f"{prefix}{name}"


def _models_page_metrics(settings: Any, spec: DatasetSpec, version: int) -> dict[str, str]:
    """The Models page's holdout-metrics table for ``version``: label -> shown value."""
    app = create_app(settings, [spec], cache_ttl_s=0.0)
    try:
        with app.server.test_request_context():
            detail = models.show_version(version, {"dataset": spec.name})
    finally:
        with app.server.app_context():
            current_site().data.close()
    table = _find(detail, ids.MODELS_METRICS_TABLE)
    assert table is not None, f"no holdout metrics table in {detail!r}"[:500]
    body = table.children[1]
    return {row.children[0].children: row.children[1].children for row in body.children}


def _find(component: Any, component_id: str) -> Any:
    if isinstance(component, (list, tuple)):
        return next((hit for hit in (_find(c, component_id) for c in component) if hit is not None), None)
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    return None if children is None or isinstance(children, str) else _find(children, component_id)


@pytest.mark.parametrize("case", list(DATASETS))
def test_logged_and_shown_metrics_equal_scikit_learn(
    case: str, tmp_path: Path, tracking_uri: str, data_dir: Path
) -> None:
    dataset = DATASETS[case]
    spec = load_spec_file(_spec_file(tmp_path, dataset))
    assert spec.positive_class == dataset.expected_positive
    classes, positive = list(spec.classes), spec.positive_class
    store = LocalFeatureStore(tmp_path / "store")
    backfill(spec, store, load_source(spec, None, data_dir))
    settings = resolve_settings(store_dir=store.root, tracking_uri=tracking_uri)
    report = train(spec, store, settings, TrainOptions(trials=2, seed=1, folds=3, quiet=True))

    # The training run: re-score its holdout rows with the registered champion.
    run = MlflowClient().get_run(report.run_id)
    keys = pd.read_parquet(mlflow.artifacts.download_artifacts(f"runs:/{report.run_id}/training/keys.parquet"))
    rows = store.get_feature_group(spec.name, spec.version).read().set_index(spec.primary_key)
    holdout = rows.loc[keys.loc[keys["split"] == "holdout", spec.primary_key]].reset_index()
    model = mlflow.sklearn.load_model(f"models:/{spec.name}@champion")
    x_hold, y_hold = as_model_input(holdout, spec), holdout[spec.label].to_numpy()
    proba_classes = list(model.classes_)
    assert proba_classes == sorted(classes) != classes, "the spec's order and predict_proba's must differ"
    names = list(spec.class_names) if spec.class_names else None
    assert names == dataset.class_names
    expected = _reference(y_hold, model.predict(x_hold), classes, positive, model.predict_proba(x_hold), proba_classes,
                          names)
    assert 0.6 < expected["roc_auc"] < 0.995, "an inverted or swapped score column must show"
    _assert_logged(run.data.metrics, expected, "test_")
    if positive is None:
        assert "positive_class" not in run.data.params
    else:
        assert run.data.params["positive_class"] == str(positive)

    # What the Models page shows for that version.
    shown = _models_page_metrics(settings, spec, int(report.model_version))
    about = f" (positive class: {positive})" if positive is not None else " (macro mean)"
    for label, name in (("accuracy", "accuracy"), (f"precision{about}", "precision"), (f"recall{about}", "recall"),
                        (f"F1{about}", "f1")):
        assert float(shown[label]) == pytest.approx(expected[name], abs=5e-5), label
    roc_label = f"ROC AUC{about}" if positive is not None else "ROC AUC (one-vs-rest macro mean)"
    assert float(shown[roc_label]) == pytest.approx(expected["roc_auc"], abs=5e-5)

    # Two days of batch inference: the batch's and the rolling window's metrics.
    for i in range(DAYS):
        day = START + dt.timedelta(days=i)
        add_daily_rows(spec, store, day, n=ROWS_PER_DAY, seed=0)
        noon = dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc)
        infer(spec, store, settings, InferOptions(as_of=day, figures=False), noon)
    mlflow.set_tracking_uri(None)
    runs = mlflow.search_runs(experiment_names=[monitoring_experiment(spec.name)], order_by=["tags.as_of ASC"])
    assert len(runs) == DAYS
    predictions = store.get_feature_group(spec.predictions_group, 1).read()
    for number, (_, monitoring_run) in enumerate(runs.iterrows(), start=1):
        logged = MlflowClient().get_run(monitoring_run["run_id"]).data.metrics
        batch = predictions[predictions["run_id"] == monitoring_run["run_id"]]
        assert len(batch) == ROWS_PER_DAY
        rolling = predictions[predictions["run_id"].isin(runs["run_id"].iloc[:number])]
        for prefix, scored in (("batch_", batch), ("rolling_", rolling)):
            expected = _reference(scored["actual"].to_numpy(), scored["prediction"].to_numpy(), classes, positive,
                                  class_names=names)
            _assert_logged(logged, expected, prefix)
