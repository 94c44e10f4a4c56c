"""Names and digests the project writes to MLflow, as pure functions: per-class metric
names (class names, MLflow's allowed characters, no two classes on one name), row
digests of logged datasets, the logged model behind a registry version, and the status
of a trial's run."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from serverless_ml import tracking
from serverless_ml.datasets import get_dataset
from serverless_ml.training import evaluation
from serverless_ml.trial_logging import run_status

# MLflow's own rule for metric names (mlflow.utils.validation, not on Windows).
MLFLOW_METRIC_NAME = re.compile(r"^[/\w.\- :]*$")


def test_per_class_metric_names_use_class_names_and_stay_valid_and_unique() -> None:
    titanic = get_dataset("titanic")
    assert evaluation.class_metric_keys(titanic.classes, titanic.class_names) == ["died", "survived"]
    iris = get_dataset("iris")
    assert evaluation.class_metric_keys(iris.classes, iris.class_names) == ["Setosa", "Versicolor", "Virginica"]
    # Without names, the class values, as before.
    assert evaluation.class_metric_keys([0, 1]) == ["0", "1"]

    classes = [0, 1, 2, 3, 4, 5]
    names = ["high risk", "high/risk", "", "müde", "high_risk", "a:b"]
    keys = evaluation.class_metric_keys(classes, names)
    assert keys == ["high_risk", "high_risk-1", "2", "müde", "high_risk-4", "a_b"]
    assert len(set(keys)) == len(keys)
    assert all(MLFLOW_METRIC_NAME.match(f"test_f1_{key}") for key in keys)
    assert evaluation.class_metric_keys([1, 2, 3], ["a", "a", "a-2"]) == ["a", "a-2", "a-2-3"]
    # A clash that survives the value suffix gets a counter.
    assert evaluation.class_metric_keys(["v", "w", "x"], ["a", "a-x", "a"]) == ["a", "a-x", "a-x-2"]
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        evaluation.class_metric_keys([1, 2, 3], ["a", "b"])


def test_metrics_from_a_confusion_matrix_are_named_by_the_keys_given() -> None:
    matrix = np.array([[3, 1], [2, 4]])
    metrics = evaluation.metrics_from_confusion(matrix, [0, 1], "batch_", positive_class=1,
                                                class_keys=["died", "survived"])
    assert metrics["batch_recall_survived"] == pytest.approx(4 / 6)
    assert metrics["batch_support_died"] == 4
    assert not any(name.endswith(("_0", "_1")) for name in metrics)


def test_a_row_digest_changes_with_any_value_row_or_column_and_only_then() -> None:
    frame = pd.DataFrame({"key": [1, 2, 3], "age": [22.0, np.nan, 35.0], "port": ["S", "C", None]})
    digest = tracking.rows_digest(frame)
    assert len(digest) == tracking.DIGEST_LENGTH and digest == tracking.rows_digest(frame.copy())
    changed = frame.copy()
    changed.loc[1, "age"] = 0.0
    others = [changed, frame.iloc[::-1].reset_index(drop=True), frame.head(2),
              frame.rename(columns={"age": "age_years"}), frame.assign(port=["S", "C", "Q"])]
    assert len({digest, *map(tracking.rows_digest, others)}) == 1 + len(others)
    # The index is not part of the rows.
    assert tracking.rows_digest(frame.set_index(pd.Index([7, 8, 9]))) == digest


def test_the_logged_model_of_a_registry_version() -> None:
    assert tracking.logged_model_id(SimpleNamespace(model_id="m-abc", source="models:/m-other")) == "m-abc"
    assert tracking.logged_model_id(SimpleNamespace(model_id=None, source="models:/m-0123")) == "m-0123"
    for source in ("runs:/0123/model", "models:/titanic/3", "models:/titanic@champion", "", None):
        assert tracking.logged_model_id(SimpleNamespace(model_id=None, source=source)) is None, source


def test_a_trial_run_ends_finished_killed_or_failed_by_its_optuna_state() -> None:
    assert [run_status(s) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")] == [
        "FINISHED", "KILLED", "FAILED", "FAILED", "FAILED"]
