"""Holdout evaluation: plain functions from labels and predictions to numbers and tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def metric_key(value: Any) -> str:
    """A class value as it may appear in an MLflow metric name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(value))


def class_metric_keys(classes: Sequence[Any], class_names: Sequence[str] | None = None) -> list[str]:
    """The name each class has in per-class metric names (``test_f1_<key>``,
    ``batch_recall_<key>``, ``predicted_share_<key>``): its name (a spec's
    ``class_names``, else the class value) with every character MLflow does not allow in
    a metric name made ``_`` (:func:`metric_key`). The one place writers and readers of
    those metrics get the names from.

    Keys are unique: a name that is empty once cleaned takes the class value's key, and a
    key an earlier class already has gets the class value appended (``a_b-1``), then a
    counter (``a_b-1-2``), so no class's metrics overwrite another's.
    """
    labels = list(classes)
    names = list(class_names) if class_names is not None else [str(label) for label in labels]
    if len(names) != len(labels):
        raise ValueError(f"{len(names)} class names for {len(labels)} classes")
    keys: list[str] = []
    for label, name in zip(labels, names, strict=True):
        key = metric_key(name) or metric_key(label) or "class"
        if key in keys:
            key = f"{key}-{metric_key(label)}"
        keys.append(numbered(key, keys))
    return keys


def numbered(base: str, taken: Sequence[str], separator: str = "-") -> str:
    """``base``, or ``base`` with the first counter from 2 (``a_b-2``) that no name in
    ``taken`` has."""
    candidate, counter = base, 1
    while candidate in taken:
        counter += 1
        candidate = f"{base}{separator}{counter}"
    return candidate


def confusion_counts(y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any]) -> np.ndarray:
    """Counts of (actual, predicted) pairs over ``classes``; pairs outside them are ignored.

    Plain numpy: monitoring computes this for every daily batch, where scikit-learn's
    input validation would cost more than the arithmetic.
    """
    lookup = pd.Index(list(classes))
    return confusion_from_codes(class_codes(y_true, lookup), class_codes(y_pred, lookup), len(lookup))


def class_codes(values: Sequence[Any], lookup: pd.Index) -> np.ndarray:
    """Position of each value in ``lookup`` (the class list); -1 for a missing or unknown one."""
    return lookup.get_indexer(pd.Index(values))


def confusion_from_codes(
    actual: np.ndarray, predicted: np.ndarray, n_classes: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Confusion counts (rows actual) from class codes, over the rows ``mask`` selects;
    rows with a code of -1 on either side are ignored."""
    keep = (actual >= 0) & (predicted >= 0)
    if mask is not None:
        keep &= mask
    flat = actual[keep] * n_classes + predicted[keep]
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def positive_index(classes: Sequence[Any], positive_class: Any) -> int | None:
    """Where the positive class sits in ``classes`` (binary), or ``None`` (multiclass).

    Raises:
        ValueError: A binary problem without a positive class among ``classes``, or a
            multiclass problem with one: no caller may fall back on a class's position.
    """
    labels = list(classes)
    if len(labels) != 2:
        if positive_class is not None:
            raise ValueError(f"positive_class applies to two classes, not {len(labels)} ({positive_class!r} given)")
        return None
    if positive_class is None or positive_class not in labels:
        raise ValueError(f"binary metrics need positive_class, one of {labels}; got {positive_class!r}")
    return labels.index(positive_class)


def metrics_from_confusion(
    matrix: np.ndarray, classes: Sequence[Any], prefix: str, *, positive_class: Any = None,
    class_keys: Sequence[str] | None = None,
) -> dict[str, float]:
    """Accuracy, precision, recall and F1 (binary: of ``positive_class``; multiclass: macro
    averages) and per-class precision/recall/F1/support, from a confusion matrix.
    A ratio with an empty denominator is not a figure and is left out (not 0, as
    scikit-learn's ``zero_division=0`` would have it: a class the model never predicts
    would show a precision of 0, "every such prediction wrong"): precision of a class
    never predicted, recall of a class with no row, F1 (``2 TP / (2 TP + FP + FN)``) of a
    class neither present nor predicted. A macro average is over the classes that have
    the figure (left out when none has). :func:`undefined_figures` says which are out.

    Args:
        matrix: Counts, rows actual and columns predicted, both in ``classes`` order.
        classes: The class of each row and column.
        prefix: Put before every metric name (``test_``, ``batch_``).
        positive_class: Binary problems: the class precision, recall and F1 are about
            (the spec's ``positive_class``), required; multiclass problems: ``None``.
        class_keys: Each class's name in the per-class metric names
            (:func:`class_metric_keys`); default: the class values'.
    """
    labels = list(classes)
    keys = list(class_keys) if class_keys is not None else class_metric_keys(labels)
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} class keys for {len(labels)} classes")
    positive = positive_index(labels, positive_class)
    counts = np.asarray(matrix, dtype=float)
    true_positive = np.diag(counts)
    predicted = counts.sum(axis=0)
    support = counts.sum(axis=1)
    f1_denominator = 2 * true_positive + (predicted - true_positive) + (support - true_positive)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, np.nan)
        recall = np.where(support > 0, true_positive / support, np.nan)
        f1 = np.where(f1_denominator > 0, 2 * true_positive / f1_denominator, np.nan)
    total = counts.sum()
    metrics = {f"{prefix}accuracy": float(true_positive.sum() / total) if total else float("nan")}

    def put(name: str, value: float) -> None:
        if not np.isnan(value):
            metrics[name] = float(value)

    for stem, values in (("precision", precision), ("recall", recall), ("f1", f1)):
        if positive is not None:
            put(f"{prefix}{stem}", values[positive])
        elif not np.isnan(values).all():
            put(f"{prefix}{stem}", float(np.nanmean(values)))
    for i, key in enumerate(keys):
        put(f"{prefix}precision_{key}", precision[i])
        put(f"{prefix}recall_{key}", recall[i])
        put(f"{prefix}f1_{key}", f1[i])
        metrics[f"{prefix}support_{key}"] = float(support[i])
    return metrics


def undefined_figures(matrix: np.ndarray, classes: Sequence[Any], class_names: Sequence[str] | None = None) -> str:
    """Which per-class figures :func:`metrics_from_confusion` leaves out of ``matrix``, in
    words ("" when none): precision of the classes never predicted, recall of the classes
    with no row."""
    counts = np.asarray(matrix, dtype=float)
    names = list(class_names) if class_names is not None else [str(c) for c in classes]
    parts = []
    never = [names[i] for i in np.flatnonzero(counts.sum(axis=0) == 0)]
    if never:
        parts.append(f"precision of {', '.join(repr(n) for n in never)} (predicted for no row)")
    absent = [names[i] for i in np.flatnonzero(counts.sum(axis=1) == 0)]
    if absent:
        parts.append(f"recall of {', '.join(repr(n) for n in absent)} (no row of that class)")
    return "; ".join(parts)


def classification_metrics(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    proba: np.ndarray | None,
    classes: Sequence[Any],
    prefix: str,
    *,
    positive_class: Any = None,
    proba_classes: Sequence[Any] | None = None,
    class_keys: Sequence[str] | None = None,
) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and ROC AUC, plus per-class precision/recall/F1.

    Binary problems report ``positive_class``'s precision/recall/F1 and ROC AUC;
    multiclass problems report macro averages and one-vs-rest macro ROC AUC. ROC AUC is
    left out when a class is absent from ``y_true`` or has no probability column.

    Args:
        y_true, y_pred: Actual and predicted classes.
        proba: Class probabilities, one column per entry of ``proba_classes``; ``None``
            for no ROC AUC.
        classes: The classes, in the order of the per-class metrics (the spec's).
        prefix: Put before every metric name.
        positive_class: As for :func:`metrics_from_confusion`.
        proba_classes: The class of each column of ``proba`` (a fitted model's
            ``classes_``, which need be neither sorted nor in ``classes`` order);
            required with ``proba``.
        class_keys: As for :func:`metrics_from_confusion`.
    """
    from sklearn.metrics import roc_auc_score

    labels = list(classes)
    metrics = metrics_from_confusion(confusion_counts(y_true, y_pred, labels), labels, prefix,
                                     positive_class=positive_class, class_keys=class_keys)
    if proba is None:
        return metrics
    if proba_classes is None:
        raise ValueError("proba needs proba_classes: the class of each of its columns (the model's classes_)")
    columns = list(proba_classes)
    scores = np.asarray(proba, dtype=float)
    if scores.ndim != 2 or scores.shape[1] != len(columns):
        raise ValueError(f"proba has shape {scores.shape}, expected one column per class of {columns}")
    truth = np.asarray(y_true)
    if set(columns) != set(labels) or not set(labels) <= set(truth.tolist()):
        return metrics
    if positive_class is not None:
        metrics[f"{prefix}roc_auc"] = float(roc_auc_score(truth == positive_class, scores[:, columns.index(positive_class)]))
    else:
        # scikit-learn wants the labels sorted and the columns in the same order; the macro
        # mean of the one-vs-rest AUCs does not depend on the order.
        order = sorted(range(len(columns)), key=columns.__getitem__)
        metrics[f"{prefix}roc_auc"] = float(roc_auc_score(
            truth, scores[:, order], multi_class="ovr", average="macro", labels=[columns[i] for i in order]
        ))
    return metrics


def confusion_table(y_true: Sequence[Any], y_pred: Sequence[Any], classes: Sequence[Any]) -> dict[str, Any]:
    """The confusion matrix as a JSON table: rows are actual classes, columns predicted."""
    return table_from_matrix(confusion_counts(y_true, y_pred, classes), classes)


def table_from_matrix(matrix: np.ndarray, classes: Sequence[Any]) -> dict[str, Any]:
    """A confusion matrix (rows actual) as the JSON table :func:`confusion_table` gives."""
    labels = list(classes)
    return {
        "labels": [_plain(label) for label in labels],
        "matrix": matrix.astype(int).tolist(),
        "rows": "actual",
        "columns": "predicted",
    }


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def baseline_accuracy(y_train: pd.Series, y_eval: pd.Series) -> float:
    """Accuracy of always predicting the training set's majority class."""
    from sklearn.dummy import DummyClassifier

    dummy = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(y_train), 1)), y_train)
    return float(dummy.score(np.zeros((len(y_eval), 1)), y_eval))


def confusion_figure(table: dict[str, Any], title: str, class_names: Sequence[str] | None = None) -> Any:
    """A matplotlib heatmap of a confusion table, with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.array(table["matrix"])
    names = list(class_names) if class_names else [str(v) for v in table["labels"]]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(names), 1.2 + 1.0 * len(names)))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    high = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color="white" if matrix[i, j] > high / 2 else "black")
    fig.tight_layout()
    return fig


def importance_figure(importances: dict[str, float], title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1))
    ax.barh(names, [importances[n] for n in names], color="#4c78a8")
    ax.set_xlabel("importance (summed over encoded columns)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
