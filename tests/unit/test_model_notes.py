"""``sml train``'s notes on what the holdout says a model cannot do (found by a new-user
trial: on 88/12 classes the champion never predicted the positive class, and the summary
said only "promoted")."""

from __future__ import annotations

import pytest

from serverless_ml.datasets import get_dataset
from serverless_ml.pipelines.train import model_notes

pytestmark = pytest.mark.unit


def test_a_class_never_predicted_and_a_baseline_model_are_noted() -> None:
    spec = get_dataset("titanic")  # classes 0 (died) and 1 (survived, the positive class)
    metrics = {"test_accuracy": 0.62, "test_support_died": 110, "test_recall_died": 1.0,
               "test_support_survived": 68, "test_recall_survived": 0.0}
    notes = model_notes(spec, metrics, baseline=0.62)
    assert notes == [
        "the model predicts 'survived' (the positive class) for none of the 68 holdout rows of that class (recall 0): "
        "the search maximises accuracy, which on imbalanced classes the majority can win",
        "holdout accuracy 0.6200 is no better than always predicting the majority class (0.6200)",
    ]


def test_a_model_that_predicts_every_class_above_the_baseline_has_no_note() -> None:
    spec = get_dataset("iris")
    metrics = {"test_accuracy": 0.95, **{f"test_support_{k}": 10 for k in ("Setosa", "Versicolor", "Virginica")},
               **{f"test_recall_{k}": 0.9 for k in ("Setosa", "Versicolor", "Virginica")}}
    assert model_notes(spec, metrics, baseline=0.34) == []
    # A class absent from the holdout (support 0) is not one the model failed on.
    metrics["test_support_Setosa"], metrics["test_recall_Setosa"] = 0, 0.0
    assert model_notes(spec, metrics, baseline=0.34) == []


def test_the_holdout_figures_left_out_are_named_for_the_run_tag() -> None:
    from serverless_ml.pipelines.train import holdout_undefined

    spec = get_dataset("iris")
    confusion = {"matrix": [[10, 0, 0], [3, 0, 7], [0, 0, 9]]}  # Versicolor predicted for no row
    assert holdout_undefined(spec, confusion) == "holdout figures not computed: precision of 'Versicolor' (predicted for no row)"
    assert holdout_undefined(spec, {"matrix": [[10, 0, 0], [0, 9, 1], [0, 0, 9]]}) == ""
