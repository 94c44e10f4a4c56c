"""The rows a served model accepts and the answer it gives (pure: NumPy and pandas only).

One set of rules for every way the champion answers a row: the site's Predict form
(``monitoring_app/forms.py``), the registered model's pyfunc flavor (:mod:`.flavor`:
``mlflow.pyfunc.load_model``, ``mlflow models serve``, ``spark_udf``) and ``sml serve``
(:mod:`.server`). A value is checked against its feature's schema in the spec: a number
must be finite and within ``min``/``max`` (whole for ``bigint``), a text one of the
``categories`` (when the spec lists them), and a value may be missing only where the
feature is ``nullable``.

The answer (:func:`answer_frame`) has one row per input row: ``prediction`` (the class
name the site shows: the spec's ``class_names``, else the class value), ``probability``
(of that class) and ``probability_<class name>`` for every class, in the spec's order.

This module imports nothing of the project, so the pyfunc flavor's loader needs only the
packed ``serverless_ml`` code, NumPy and pandas.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

MAX_TEXT_LENGTH = 1000
"""The longest text a categorical value may be in a request (a hardening bound; errors echo
40 characters of it). 200 refused a 300-character city that `sml ingest` had stored (found
by a user trial): a stored row must be servable as it is."""
PREDICTION_COLUMN = "prediction"
PROBABILITY_COLUMN = "probability"
CLASS_PROBABILITY_PREFIX = "probability_"
NUMERIC_TYPES = ("bigint", "double")


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""The largest number a forest takes (``validation.FLOAT32_MAX``, which rows are held to
when they are stored; this module imports nothing of the project)."""


class FieldRules(Protocol):
    """What the checks read of a feature (a :class:`serverless_ml.datasets.spec.FeatureSpec`
    or a :class:`Field`)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...
    @property
    def categories(self) -> tuple[str, ...] | None: ...
    @property
    def nullable(self) -> bool: ...
    @property
    def is_numeric(self) -> bool: ...


@dataclass(frozen=True)
class Field:
    """A feature's serving rules, as stored next to a logged model (:class:`ServingSchema`)."""

    name: str
    type: str
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    nullable: bool = False

    @property
    def is_numeric(self) -> bool:
        return self.type in NUMERIC_TYPES


@dataclass(frozen=True)
class ServingSchema:
    """What a served model needs of its dataset's spec: the features' rules, the classes
    and their names, the key column (``sml serve`` records rows by it)."""

    dataset: str
    fields: tuple[Field, ...]
    classes: tuple[Any, ...]
    class_names: tuple[str, ...]
    primary_key: str
    primary_key_type: str

    @classmethod
    def from_spec(cls, spec: Any) -> ServingSchema:
        """The schema of a :class:`~serverless_ml.datasets.spec.DatasetSpec`."""
        return cls(
            dataset=spec.name,
            fields=tuple(Field(f.name, f.type, f.min, f.max, f.categories, f.nullable) for f in spec.features),
            classes=tuple(spec.classes),
            class_names=tuple(spec.class_name(c) for c in spec.classes),
            primary_key=spec.primary_key,
            primary_key_type=spec.primary_key_type,
        )

    def to_json(self) -> str:
        return json.dumps({
            "dataset": self.dataset,
            "fields": [{"name": f.name, "type": f.type, "min": f.min, "max": f.max,
                        "categories": list(f.categories) if f.categories is not None else None,
                        "nullable": f.nullable} for f in self.fields],
            "classes": list(self.classes), "class_names": list(self.class_names),
            "primary_key": self.primary_key, "primary_key_type": self.primary_key_type,
        }, indent=1)

    @classmethod
    def from_json(cls, text: str) -> ServingSchema:
        data = json.loads(text)
        return cls(
            dataset=data["dataset"],
            fields=tuple(Field(f["name"], f["type"], f["min"], f["max"],
                               tuple(f["categories"]) if f["categories"] is not None else None, bool(f["nullable"]))
                         for f in data["fields"]),
            classes=tuple(data["classes"]), class_names=tuple(data["class_names"]),
            primary_key=data["primary_key"], primary_key_type=data["primary_key_type"],
        )

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.fields]

    def answer_columns(self) -> list[str]:
        """The columns of :func:`answer_frame`."""
        return [PREDICTION_COLUMN, PROBABILITY_COLUMN, *class_probability_columns(self.class_names)]


# --- one value ---------------------------------------------------------------------------------


def range_text(feature: FieldRules) -> str:
    """``1 to 3``, ``at least 0``, ``at most 10`` or ``any number``."""
    if feature.min is not None and feature.max is not None:
        return f"{feature.min:g} to {feature.max:g}"
    if feature.min is not None:
        return f"at least {feature.min:g}"
    if feature.max is not None:
        return f"at most {feature.max:g}"
    return "any number"


def allowed_text(feature: FieldRules) -> str:
    """The values a feature accepts, for an error: ``a whole number 1 to 3``, ``one of
    'female', 'male'``; ``, or null (missing)`` where it is nullable."""
    if feature.is_numeric:
        text = f"{'a whole number' if feature.type == 'bigint' else 'a number'} ({range_text(feature)})"
    elif feature.categories:
        text = "one of " + ", ".join(repr(c) for c in feature.categories)
    else:
        text = f"a text of at most {MAX_TEXT_LENGTH} characters"
    return text + (", or null (missing)" if feature.nullable else "")


def check_number(feature: FieldRules, raw: Any) -> tuple[Any, str | None]:
    """A numeric feature's value (``None`` when missing) and the message when it is refused."""
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
    if abs(value) > FLOAT32_MAX:  # the forest compares 32-bit floats
        return None, f"{value:g} is beyond what the model takes (at most {FLOAT32_MAX:.4g} in size)"
    if feature.type == "bigint":
        if not value.is_integer():
            return None, f"{value:g} is not a whole number ({range_text(feature)})"
        return int(value), None
    return value, None


def check_category(feature: FieldRules, raw: Any, missing_token: str | None = None) -> tuple[Any, str | None]:
    """A text feature's value (``None`` when missing; ``missing_token``: a value that also
    means missing, the form's dropdown choice) and the message when it is refused."""
    if raw is None or (missing_token is not None and raw == missing_token) or (isinstance(raw, str) and not raw.strip()):
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


def check_value(feature: FieldRules, raw: Any, missing_token: str | None = None) -> tuple[Any, str | None]:
    """:func:`check_number` or :func:`check_category`, by the feature's type."""
    return check_number(feature, raw) if feature.is_numeric else check_category(feature, raw, missing_token)


# --- rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """One refused value of a request: the row (its index in the request, from 0), the field, why, and what it accepts."""

    row: int
    field: str
    message: str
    allowed: str

    def describe(self) -> str:
        return f"rows[{self.row}]: field '{self.field}': {self.message}; allowed: {self.allowed}"

    def as_dict(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "message": self.message, "allowed": self.allowed}


def validate_records(
    features: Sequence[FieldRules], records: Sequence[Any], passthrough: Iterable[str] = (),
    max_errors: int = 20,
) -> tuple[list[dict[str, Any]], list[RowError]]:
    """Check every row (a mapping of feature name to raw value; a feature absent is
    missing) against the features' rules.

    Args:
        features: The features, in the spec's order.
        records: The rows.
        passthrough: Other names a row may carry (the key column): kept as they are,
            not checked here.
        max_errors: Stop collecting errors after this many.

    Returns:
        The rows with typed values (features and passthrough names only), and the errors
        (none when every row is valid).
    """
    names = {f.name for f in features}
    known = names | set(passthrough)
    rows: list[dict[str, Any]] = []
    errors: list[RowError] = []
    for position, record in enumerate(records):
        if len(errors) >= max_errors:
            break
        if not isinstance(record, Mapping):
            errors.append(RowError(position, "", f"a row must be an object of field values, not {type(record).__name__}",
                                   "an object with the fields " + ", ".join(f.name for f in features)))
            continue
        unknown = [str(k) for k in record if k not in known]
        if unknown:
            errors.append(RowError(position, unknown[0][:60], "is not a feature of this model",
                                   "the fields " + ", ".join(sorted(known))))
            continue
        row: dict[str, Any] = {name: record[name] for name in passthrough if name in record}
        for feature in features:
            value, error = check_value(feature, record.get(feature.name))
            if error:
                errors.append(RowError(position, feature.name, error, allowed_text(feature)))
            else:
                row[feature.name] = value
        rows.append(row)
    return rows, errors


def frame_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame's rows as mappings, pandas' missing values (NaN, NaT, ``pd.NA``) as
    ``None`` and NumPy scalars as Python ones (what :func:`validate_records` reads)."""
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in r.items()} for r in records]


def model_frame(features: Sequence[FieldRules], rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Validated rows as the model pipeline's input: the features in spec order; ``double``
    and nullable ``bigint`` features as floats (a missing value NaN), other ``bigint``
    features as ``int64``, text features as objects with ``None`` for missing (what
    ``serverless_ml.training.model.as_model_input`` makes of the store's rows)."""
    columns: dict[str, Any] = {}
    for feature in features:
        values = [row.get(feature.name) for row in rows]
        if feature.type == "double" or (feature.type == "bigint" and feature.nullable):
            columns[feature.name] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        elif feature.type == "bigint":
            columns[feature.name] = np.array(values, dtype=np.int64)
        else:
            columns[feature.name] = pd.Series(values, dtype=object).to_numpy()
    return pd.DataFrame(columns, columns=[f.name for f in features])


def class_probabilities(model: Any, classes: Sequence[Any], frame: pd.DataFrame) -> np.ndarray:
    """The model's probability of each of ``classes`` (columns in that order; a class the
    model never saw has probability 0), one row per row of ``frame``."""
    proba = np.asarray(model.predict_proba(frame), dtype=np.float64)
    known = list(model.classes_)
    out = np.zeros((len(frame), len(classes)), dtype=np.float64)
    for i, cls in enumerate(classes):
        if cls in known:
            out[:, i] = proba[:, known.index(cls)]
    return out


def class_probability_columns(class_names: Sequence[str]) -> list[str]:
    """``probability_<class name>`` for every class (``probability_survived``)."""
    return [f"{CLASS_PROBABILITY_PREFIX}{name}" for name in class_names]


def predicted_index(proba: np.ndarray) -> np.ndarray:
    """Each row's predicted class: the first most probable one (as the site picks it)."""
    return np.asarray(proba.argmax(axis=1)) if len(proba) else np.zeros(0, dtype=np.int64)


def answer_frame(class_names: Sequence[str], proba: np.ndarray) -> pd.DataFrame:
    """The served answer: ``prediction`` (class name), ``probability`` (of the predicted
    class) and ``probability_<class name>`` per class."""
    best = predicted_index(proba)
    names = np.asarray(list(class_names), dtype=object)
    out = pd.DataFrame({
        PREDICTION_COLUMN: names[best] if len(best) else np.array([], dtype=object),
        PROBABILITY_COLUMN: proba[np.arange(len(best)), best] if len(best) else np.array([], dtype=np.float64),
    })
    for i, column in enumerate(class_probability_columns(class_names)):
        out[column] = proba[:, i]
    return out
