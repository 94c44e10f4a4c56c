"""Every logged classification metric equals scikit-learn's own computation, with the
classes listed unsorted (so the spec's order, the model's sorted ``classes_`` and the
positive class all differ), string and integer labels, 2 and 7 classes.

The reference side never goes through :mod:`serverless_ml.training.evaluation`:
``accuracy_score``, ``precision_recall_fscore_support`` with an explicit ``pos_label`` or
``labels``, ROC AUC from ``roc_curve(pos_label=...)`` (binary) and ``roc_auc_score`` over
the model's own ``classes_`` (multiclass). The holdout, monitoring and site versions of
the same checks, through a real ``train`` and ``infer``, are in
``tests/integration/test_logged_metrics_exact.py``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, auc, precision_recall_fscore_support, roc_auc_score, roc_curve

from monitoring_app.pages import models
from serverless_ml.datasets import get_dataset
from serverless_ml.training import evaluation

pytestmark = pytest.mark.unit


class Case(NamedTuple):
    """Classes in spec order and the positive class (``None``: the spec's default)."""

    classes: tuple[Any, ...]
    positive_class: Any = None


CASES = {
    # The example: sorted, benign comes first, so predict_proba's column 1 is
    # malignant while the spec's second class (the default positive one) is benign.
    "strings, default positive": Case(("malignant", "benign")),
    "strings, first class positive": Case(("malignant", "benign"), "malignant"),
    "integers, default positive": Case((1, 0)),
    "integers, first class positive": Case((0, 1), 0),
    "7 strings": Case(("sun", "mon", "tue", "wed", "thu", "fri", "sat")),
    "7 integers": Case((6, 2, 0, 5, 1, 4, 3)),
}


def _positive(case: Case) -> Any:
    if len(case.classes) != 2:
        return None
    return case.classes[1] if case.positive_class is None else case.positive_class


class Fitted(NamedTuple):
    model: RandomForestClassifier
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray


def _fit(classes: tuple[Any, ...], seed: int = 0) -> Fitted:
    """A real forest on overlapping classes (ROC AUC well inside (0.5, 1): a swapped column
    shows), scored on rows it did not see."""
    rng = np.random.default_rng(seed)
    n = 120 * len(classes)
    codes = rng.integers(0, len(classes), n)
    x = rng.normal(size=(n, 3)) + np.column_stack([codes * 1.2, np.cos(codes * 2.0), np.zeros(n)])
    dtype = np.int64 if isinstance(classes[0], int) else object
    y = np.asarray(classes, dtype=dtype)[codes]
    half = n // 2
    model = RandomForestClassifier(n_estimators=25, max_depth=4, random_state=seed).fit(x[:half], y[:half])
    assert list(model.classes_) == sorted(classes)
    return Fitted(model, y[half:], model.predict(x[half:]), model.predict_proba(x[half:]))


def _expected(fitted: Fitted, classes: tuple[Any, ...], positive: Any) -> dict[str, float]:
    """The metrics as scikit-learn computes them, named as the project logs them."""
    y_true, y_pred, labels = fitted.y_true, fitted.y_pred, list(classes)
    out = {"accuracy": accuracy_score(y_true, y_pred)}
    if positive is not None:
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average="binary", pos_label=positive, zero_division=0
        )
        column = list(fitted.model.classes_).index(positive)
        fpr, tpr, _ = roc_curve(y_true, fitted.proba[:, column], pos_label=positive)
        roc = auc(fpr, tpr)
    else:
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, average="macro", labels=labels, zero_division=0
        )
        roc = roc_auc_score(y_true, fitted.proba, multi_class="ovr", average="macro", labels=fitted.model.classes_)
    out.update(precision=precision, recall=recall, f1=f1, roc_auc=roc)
    each = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, label in enumerate(labels):
        key = evaluation.metric_key(label)
        for name, values in zip(("precision", "recall", "f1", "support"), each, strict=True):
            out[f"{name}_{key}"] = float(values[i])
    return out


def _check(ours: dict[str, float], expected: dict[str, float], prefix: str) -> None:
    for name, value in expected.items():
        assert ours[f"{prefix}{name}"] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("name", sorted(CASES))
def test_holdout_metrics_equal_scikit_learn(name: str) -> None:
    case = CASES[name]
    positive = _positive(case)
    fitted = _fit(case.classes)
    ours = evaluation.classification_metrics(
        fitted.y_true, fitted.y_pred, fitted.proba, case.classes, "test_",
        positive_class=positive, proba_classes=fitted.model.classes_,
    )
    expected = _expected(fitted, case.classes, positive)
    assert 0.55 < expected["roc_auc"] < 0.99, "a swapped or inverted score column must show"
    _check(ours, expected, "test_")


@pytest.mark.parametrize("name", sorted(CASES))
def test_probability_columns_are_read_by_class_not_by_position(name: str) -> None:
    """The same probabilities with their columns (and the class of each) shuffled give the
    same metrics: nothing assumes sorted columns, or columns in the spec's order."""
    case = CASES[name]
    positive = _positive(case)
    fitted = _fit(case.classes)
    columns = list(fitted.model.classes_)
    shuffled = np.random.default_rng(1).permutation(len(columns))
    if list(shuffled) == list(range(len(columns))):
        shuffled = shuffled[::-1]
    reference = evaluation.classification_metrics(
        fitted.y_true, fitted.y_pred, fitted.proba, case.classes, "", positive_class=positive, proba_classes=columns
    )
    again = evaluation.classification_metrics(
        fitted.y_true, fitted.y_pred, fitted.proba[:, shuffled], case.classes, "",
        positive_class=positive, proba_classes=[columns[i] for i in shuffled],
    )
    assert again == pytest.approx(reference, abs=1e-12)


@pytest.mark.parametrize("name", sorted(CASES))
def test_monitoring_metrics_from_a_confusion_matrix_equal_scikit_learn(name: str) -> None:
    """What batch inference logs (``batch_``/``rolling_``): counts, then ratios."""
    case = CASES[name]
    positive = _positive(case)
    fitted = _fit(case.classes, seed=2)
    matrix = evaluation.confusion_counts(fitted.y_true, fitted.y_pred, case.classes)
    ours = evaluation.metrics_from_confusion(matrix, case.classes, "batch_", positive_class=positive)
    expected = _expected(fitted, case.classes, positive)
    del expected["roc_auc"]
    _check(ours, expected, "batch_")


def test_the_spec_default_is_the_second_listed_class_for_two_classes_and_none_for_more() -> None:
    assert get_dataset("titanic").positive_class == 1
    assert get_dataset("iris").positive_class is None


def test_a_binary_metric_without_a_positive_class_is_refused() -> None:
    matrix = np.array([[3, 1], [2, 4]])
    with pytest.raises(ValueError, match="binary metrics need positive_class"):
        evaluation.metrics_from_confusion(matrix, ["a", "b"], "")
    with pytest.raises(ValueError, match="binary metrics need positive_class"):
        evaluation.metrics_from_confusion(matrix, ["a", "b"], "", positive_class="c")
    with pytest.raises(ValueError, match="applies to two classes, not 3"):
        evaluation.metrics_from_confusion(np.eye(3), ["a", "b", "c"], "", positive_class="a")
    with pytest.raises(ValueError, match="proba_classes"):
        evaluation.classification_metrics(["a", "b"], ["a", "b"], np.eye(2), ["a", "b"], "", positive_class="b")


def test_roc_auc_is_left_out_when_a_class_is_absent_from_the_labels() -> None:
    fitted = _fit(("x", "y", "z"))
    keep = fitted.y_true != "z"
    ours = evaluation.classification_metrics(
        fitted.y_true[keep], fitted.y_pred[keep], fitted.proba[keep], ("x", "y", "z"), "", proba_classes=fitted.model.classes_
    )
    assert "roc_auc" not in ours and "accuracy" in ours


def test_the_models_page_says_which_class_a_metric_is_about() -> None:
    titanic, iris = get_dataset("titanic"), get_dataset("iris")
    assert models.metric_label("test_precision", "precision", titanic, {"positive_class": "1"}) == "precision (positive class: 1)"
    assert models.metric_label("test_roc_auc", "ROC AUC", iris, {}) == "ROC AUC (one-vs-rest macro mean)"
    assert models.metric_label("test_f1", "F1", iris, {}) == "F1 (macro mean)"
    assert models.metric_label("test_accuracy", "accuracy", titanic, {"positive_class": "1"}) == "accuracy"
