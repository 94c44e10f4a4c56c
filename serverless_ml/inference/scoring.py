"""Scoring: choose the rows a model has not seen, predict them in chunks, and shape the
predictions for the ``<dataset>_predictions`` feature group."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.feature_store.base import ORIGIN_COLUMN, Feature, FeatureGroup, FeatureStore
from serverless_ml.training.evaluation import metric_key


CHUNK_ROWS = 100_000
MODEL_VERSION_COLUMN = "model_version"
"""The column of the predictions feature group naming the registered version that scored a
row (part of its primary key). The same text as :data:`serverless_ml.registry.MODEL_VERSION_TAG`
but a feature group's schema, not a run's tag: renaming the tag must not rename stored columns."""


def probability_column(value: Any) -> str:
    return f"proba_{metric_key(value).lower()}"


def predictions_schema(spec: DatasetSpec) -> list[Feature]:
    """Columns of ``<dataset>_predictions``: one row per (key, model version)."""
    key_type = spec.primary_key_type
    return [
        Feature(spec.primary_key, key_type),
        Feature(MODEL_VERSION_COLUMN, "bigint"),
        Feature(EVENT_TIME_COLUMN, "timestamp"),
        Feature("prediction", spec.label_type),
        Feature("probability", "double", "probability of the predicted class"),
        *[Feature(probability_column(c), "double", f"probability of class {c}") for c in spec.classes],
        Feature("actual", spec.label_type, "the row's label when known"),
        Feature("correct", "boolean"),
        Feature(ORIGIN_COLUMN, "string", "origin of the scored feature row"),
        Feature("scored_at", "timestamp"),
        Feature("run_id", "string", "the monitoring run that logged this batch"),
    ]


def predictions_group(spec: DatasetSpec, store: FeatureStore) -> FeatureGroup:
    """The feature group ``<dataset>_predictions`` (created on its first insert): the
    jobs that score (``sml infer``, ``sml simulate``) and un-score (``--replace``) open it here."""
    return store.get_or_create_feature_group(
        name=spec.predictions_group,
        version=spec.predictions_version,
        primary_key=[spec.primary_key, MODEL_VERSION_COLUMN],
        event_time=EVENT_TIME_COLUMN,
        description=f"predictions of the {spec.name} champion, next to the actual labels",
        features=predictions_schema(spec),
    )


def select_new_rows(
    features: pd.DataFrame,
    spec: DatasetSpec,
    scored_keys: Iterable[Any],
    training_keys: Iterable[Any],
    as_of_end: pd.Timestamp,
) -> pd.DataFrame:
    """Rows with event time before ``as_of_end`` that no model has scored yet and that were
    not in the champion's training data."""
    key = spec.primary_key
    mask = features[EVENT_TIME_COLUMN] < as_of_end
    excluded = set(scored_keys) | set(training_keys)
    if excluded:
        mask &= ~features[key].isin(excluded)
    return features[mask].reset_index(drop=True)


def score_rows(
    model: Any,
    rows: pd.DataFrame,
    spec: DatasetSpec,
    model_version: int,
    scored_at: pd.Timestamp,
    run_id: str,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Predict class and class probabilities for ``rows`` (feature group layout) in chunks.

    The prediction and the actual label always come from the same row.
    """
    from serverless_ml.training.model import as_model_input

    classes = list(model.classes_)
    missing = [c for c in spec.classes if c not in classes]
    if missing:
        raise ValueError(f"the model does not know class(es) {missing}")
    order = [classes.index(c) for c in spec.classes]
    labels = pd.Index(list(spec.classes))
    label_values = np.asarray(spec.classes, dtype=np.int64 if spec.label_type == "bigint" else object)
    parts = []
    for start in range(0, len(rows), chunk_rows):
        chunk = rows.iloc[start : start + chunk_rows]
        proba = model.predict_proba(as_model_input(chunk, spec))[:, order]
        best = proba.argmax(axis=1)
        out = pd.DataFrame({
            spec.primary_key: chunk[spec.primary_key].to_numpy(),
            MODEL_VERSION_COLUMN: np.int64(model_version),
            # .array keeps the timezone-aware dtype (to_numpy would box every timestamp).
            EVENT_TIME_COLUMN: chunk[EVENT_TIME_COLUMN].array,
            "prediction": label_values[best],
            "probability": proba[np.arange(len(best)), best],
        })
        for i, cls in enumerate(spec.classes):
            out[probability_column(cls)] = proba[:, i]
        actual = chunk[spec.label]
        # Prediction and actual come from the same row; class indices compare fast.
        actual_index = labels.get_indexer(actual)
        correct = pd.array(best == actual_index, dtype="boolean")
        correct[actual.isna().to_numpy()] = pd.NA
        out["actual"] = actual.array
        out["correct"] = correct
        out[ORIGIN_COLUMN] = chunk[ORIGIN_COLUMN].to_numpy()
        out["scored_at"] = scored_at
        out["run_id"] = run_id
        parts.append(out)
    result = pd.concat(parts, ignore_index=True)
    if spec.label_type == "bigint":
        result["actual"] = result["actual"].astype("Int64") if result["actual"].isna().any() else result["actual"].astype("int64")
    result[EVENT_TIME_COLUMN] = result[EVENT_TIME_COLUMN].astype("datetime64[us, UTC]")
    result["scored_at"] = pd.to_datetime(result["scored_at"], utc=True).astype("datetime64[us, UTC]")
    return result
