"""The Predict page's form, generated from the dataset spec, and its validation (pure).

Inputs outside the schema (a number out of range, a category not in the list, a missing
required value) come back as one message per field; nothing raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, ORIGIN_COLUMN
from serverless_ml.serving import schema
from serverless_ml.serving.schema import MAX_TEXT_LENGTH, range_text

__all__ = ["MAX_TEXT_LENGTH", "MISSING", "FormResult", "category_options", "class_probabilities", "default_values",
           "model_input", "range_text", "validate_form"]

MISSING = "__missing__"
"""The dropdown value that stands for a missing category (nullable features only)."""


@dataclass
class FormResult:
    """A validated form: the model's input row, or one message per field at fault."""

    row: dict[str, Any] | None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _number(feature: FeatureSpec, raw: Any) -> tuple[Any, str | None]:
    return schema.check_number(feature, raw)


def _category(feature: FeatureSpec, raw: Any) -> tuple[Any, str | None]:
    return schema.check_category(feature, raw, MISSING)


def validate_form(spec: DatasetSpec, values: Mapping[str, Any]) -> FormResult:
    """Check every feature's value against the spec's schema.

    Args:
        spec: The dataset.
        values: Feature name -> the form's raw value (``None`` or ``""`` when empty;
            :data:`MISSING` for the "missing" choice of a nullable category).
    """
    row: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for feature in spec.features:
        raw = values.get(feature.name)
        value, error = _number(feature, raw) if feature.is_numeric else _category(feature, raw)
        if error:
            errors[feature.name] = error
        else:
            row[feature.name] = value
    return FormResult(None if errors else row, errors)


def model_input(spec: DatasetSpec, row: Mapping[str, Any]) -> pd.DataFrame:
    """One validated row as the model's input frame (spec column order and types)."""
    return schema.model_frame(spec.features, [row])


def class_probabilities(model: Any, spec: DatasetSpec, frame: pd.DataFrame) -> list[float]:
    """The model's probability of each of the spec's classes (spec order)."""
    return [float(p) for p in schema.class_probabilities(model, spec.classes, frame)[0]]


def default_values(spec: DatasetSpec, rows: pd.DataFrame | None) -> dict[str, Any]:
    """Starting values of the form: the median or most common value among real rows when
    there are any, else the middle of the range and the first category."""
    real = None
    if rows is not None and not rows.empty:
        real = rows[rows[ORIGIN_COLUMN] == BACKFILL_ORIGIN] if ORIGIN_COLUMN in rows else rows
        if real.empty:
            real = rows
    out: dict[str, Any] = {}
    for feature in spec.features:
        column = real[feature.name].dropna() if real is not None and feature.name in real else pd.Series(dtype=object)
        if feature.is_numeric:
            if not column.empty:
                value = float(column.astype(float).median())
            elif feature.min is not None and feature.max is not None:
                value = (feature.min + feature.max) / 2
            else:
                value = feature.min if feature.min is not None else (feature.max if feature.max is not None else 0.0)
            out[feature.name] = int(round(value)) if feature.type == "bigint" else round(value, 3)
        else:
            if not column.empty:
                out[feature.name] = str(column.astype(str).mode().iloc[0])
            elif feature.categories:
                out[feature.name] = feature.categories[0]
            else:
                out[feature.name] = None
    return out


def category_options(feature: FeatureSpec) -> Sequence[dict[str, str]]:
    """Dropdown options of a categorical feature (plus "missing" when it is nullable)."""
    options = [{"label": c, "value": c} for c in feature.categories or ()]
    if feature.nullable:
        options.append({"label": "(missing)", "value": MISSING})
    return options
