"""The Predict page's form, generated from the dataset spec, and its validation (pure).

Inputs outside the schema (a number out of range, a category not in the list, a missing
required value) come back as one message per field; nothing raises.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec, FeatureSpec
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, ORIGIN_COLUMN
from serverless_ml.training.model import as_model_input

MISSING = "__missing__"
"""The dropdown value that stands for a missing category (nullable features only)."""
MAX_TEXT_LENGTH = 200


@dataclass
class FormResult:
    """A validated form: the model's input row, or one message per field at fault."""

    row: dict[str, Any] | None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def range_text(feature: FeatureSpec) -> str:
    """``1 to 3``, ``at least 0``, ``at most 10`` or ``any number``."""
    if feature.min is not None and feature.max is not None:
        return f"{feature.min:g} to {feature.max:g}"
    if feature.min is not None:
        return f"at least {feature.min:g}"
    if feature.max is not None:
        return f"at most {feature.max:g}"
    return "any number"


def _number(feature: FeatureSpec, raw: Any) -> tuple[Any, str | None]:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        if feature.nullable:
            return None, None
        return None, f"required: enter a number ({range_text(feature)})"
    if isinstance(raw, bool):
        return None, f"{raw!r} is not a number"
    try:
        value = float(raw)
    except OverflowError:  # an integer beyond float's range (JSON may hold 10**400)
        return None, f"enter a finite number ({range_text(feature)})"
    except (TypeError, ValueError):
        return None, f"'{str(raw)[:40]}' is not a number"
    if math.isnan(value) or math.isinf(value):
        return None, f"enter a finite number ({range_text(feature)})"
    if (feature.min is not None and value < feature.min) or (feature.max is not None and value > feature.max):
        return None, f"{value:g} is outside the allowed range ({range_text(feature)})"
    if feature.type == "bigint":
        if not value.is_integer():
            return None, f"{value:g} is not a whole number ({range_text(feature)})"
        return int(value), None
    return value, None


def _category(feature: FeatureSpec, raw: Any) -> tuple[Any, str | None]:
    if raw is None or raw == MISSING or (isinstance(raw, str) and not raw.strip()):
        if feature.nullable:
            return None, None
        choices = f"one of {', '.join(feature.categories)}" if feature.categories else "a value"
        return None, f"required: choose {choices}"
    text = str(raw)
    if len(text) > MAX_TEXT_LENGTH:
        return None, f"longer than {MAX_TEXT_LENGTH} characters"
    if feature.categories and text not in feature.categories:
        return None, f"'{text[:40]}' is not one of {', '.join(feature.categories)}"
    return text, None


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
    frame = pd.DataFrame([{name: row.get(name) for name in spec.feature_names}])
    for feature in spec.features:
        if feature.type == "double":
            frame[feature.name] = pd.to_numeric(frame[feature.name], errors="coerce").astype(np.float64)
        elif feature.type == "bigint":
            frame[feature.name] = frame[feature.name].astype(np.int64)
    return as_model_input(frame, spec)


def class_probabilities(model: Any, spec: DatasetSpec, frame: pd.DataFrame) -> list[float]:
    """The model's probability of each of the spec's classes (spec order)."""
    proba = model.predict_proba(frame)[0]
    known = list(model.classes_)
    return [float(proba[known.index(c)]) if c in known else 0.0 for c in spec.classes]


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
