"""Validate raw rows against a dataset spec and turn them into feature rows.

Every check raises :class:`DataValidationError` with one line that names the column, the
row (and file line, for files) and the offending value, before anything is written.

A file's fields arrive as text (see :mod:`serverless_ml.datasets.sources`) and are typed
here, per the spec: a ``string`` column keeps each field's characters (trimmed of
surrounding spaces for features and labels; keys exactly), a ``bigint``/``double`` column
is parsed as numbers. A field is missing when its text is one of the column's missing
texts (:meth:`DatasetSpec.missing_for`: only the empty field for text, also ``NA``,
``NaN``, ``null``, ... for numbers, unless the spec lists its own).
"""

from __future__ import annotations

import difflib
import math
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml.datasets.sources import Source, other_delimiter_hint
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec, FeatureSpec
from serverless_ml.errors import DataValidationError
from serverless_ml.feature_store.base import ORIGIN_COLUMN, to_utc


class _Locator:
    """Names rows the way the user can find them."""

    def __init__(self, source: Source) -> None:
        self.location = source.location
        self.is_file = source.is_file

    def row(self, position: int) -> str:
        if self.is_file:
            return f"row {position + 1} (line {position + 2})"
        return f"row {position + 1}"

    def fail(self, column: str, position: int, problem: str) -> DataValidationError:
        """``column`` is quoted already (see :attr:`FeatureSpec.display_column`)."""
        return DataValidationError(f"{self.location}: column {column}, {self.row(position)}: {problem}")


def _show(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _first(mask: pd.Series) -> int:
    return int(np.flatnonzero(mask.to_numpy(dtype=bool, na_value=False))[0])


def _missing(values: pd.Series, texts: frozenset[str]) -> pd.Series:
    """Which values are missing: nulls (a frame not read from a file, a derived feature)
    and the texts that mean "missing" in the column, compared exactly."""
    missing = values.isna()
    if texts:
        missing = missing | values.isin(sorted(texts))
    return missing.astype(bool)


def _exact_float(text: Any, parsed: float) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return parsed


def _parse_numbers(values: pd.Series, present: pd.Series) -> pd.Series:
    """The present values as numbers: NaN (or ``<NA>``) where missing or not a number.

    Texts are read with pandas' number grammar, as its CSV reader did. Whole numbers stay
    exact (``Int64``, also beside missing values: a float would round 2**53 + 1); other
    numbers are re-read with Python's correctly rounded ``float``, since pandas' fast
    parser can miss the nearest double (by up to 1e-12 relative, measured on long and
    large-exponent decimals).
    """
    numbers = pd.to_numeric(values[present], errors="coerce")
    if pd.api.types.is_signed_integer_dtype(numbers.dtype):
        return numbers.astype("Int64").reindex(values.index)
    numbers = numbers.astype(float)
    texts = values[present]
    is_text = (texts.map(lambda v: isinstance(v, str)) & numbers.notna()).to_numpy(dtype=bool)
    if is_text.any():
        numbers[is_text] = [_exact_float(t, n) for t, n in zip(texts[is_text], numbers[is_text], strict=True)]
    return numbers.reindex(values.index)


def _show_number(values: pd.Series, numbers: pd.Series, position: int) -> str:
    """A value of a numeric column in a message: the number it was read as, else its text."""
    number = numbers.iloc[position]
    return _show(values.iloc[position]) if pd.isna(number) else _show(number)


def _show_written(value: Any) -> str:
    """A number too large to store, as written (its float reading would be rounded)."""
    text = str(value).strip()
    return text if len(text) <= 40 else text[:37] + "..."


# A bigint is stored as a signed 64-bit integer; larger magnitudes cannot be stored.
_INT64_LIMIT = float(2**63)


def _too_large_for_int64(numbers: pd.Series) -> pd.Series:
    """Which parsed values do not fit a signed 64-bit integer (pandas reads such values
    as uint64, float or text)."""
    if pd.api.types.is_signed_integer_dtype(numbers.dtype):
        return pd.Series(False, index=numbers.index)
    return numbers.astype(float).abs() >= _INT64_LIMIT


def _is_infinite_text(value: Any) -> bool:
    """Whether a value pandas could not parse is a number too large for a double (``1e400``)."""
    try:
        return math.isinf(float(str(value).strip()))
    except ValueError:
        return False


def check_columns(raw: pd.DataFrame, spec: DatasetSpec, where: str) -> None:
    """The raw frame has every column the spec needs."""
    missing = [c for c in spec.raw_columns if c not in raw.columns]
    if not missing:
        return
    hints = []
    for column in missing:
        # The file's name is the one to write in the spec (its `source_column`).
        close = difflib.get_close_matches(column, [str(c) for c in raw.columns], n=1, cutoff=0.75)
        if close:
            hints.append(f"did you mean {close[0]!r}?" if len(missing) == 1
                         else f"for {column!r} did you mean {close[0]!r}?")
    delimiter = other_delimiter_hint(list(raw.columns), where)
    if delimiter is not None:
        hints.append(delimiter)
    hint = f" ({'; '.join(hints)})" if hints else ""
    raise DataValidationError(
        f"{where}: missing column(s) {', '.join(map(repr, missing))}{hint}; expected {', '.join(spec.raw_columns)}"
    )


def _coerce_label(raw: pd.DataFrame, spec: DatasetSpec, loc: _Locator) -> pd.Series:
    values = raw[spec.raw_label]
    column = f"'{spec.raw_label}'"
    missing = _missing(values, spec.missing_for(spec.label_type))
    if missing.any():
        raise loc.fail(column, _first(missing), "label is missing")
    if spec.label_type == "bigint":
        numeric = _parse_numbers(values, ~missing)
        bad = numeric.isna() | ~numeric.isin(spec.classes)
        if bad.any():
            i = _first(bad)
            raise loc.fail(column, i, f"label {_show_number(values, numeric, i)} is not one of {', '.join(map(str, spec.classes))}")
        return numeric.astype("int64")
    text = values.astype(str).str.strip()
    bad = ~text.isin(spec.classes)
    if bad.any():
        i = _first(bad)
        raise loc.fail(column, i, f"label {_show(values.iloc[i])} is not one of {', '.join(map(str, spec.classes))}")
    return text.astype(object)


def _check_feature(values: pd.Series, feature: FeatureSpec, spec: DatasetSpec, loc: _Locator) -> pd.Series:
    column = feature.display_column
    present = ~_missing(values, spec.missing_for(feature.type, feature))
    if feature.is_numeric:
        numeric = _parse_numbers(values, present)
        unparsable = present & numeric.isna()
        if unparsable.any():
            i = _first(unparsable)
            what = "a finite number" if _is_infinite_text(values.iloc[i]) else "a number"
            raise loc.fail(column, i, f"{_show(values.iloc[i])} is not {what}")
        infinite = present & ~np.isfinite(numeric.fillna(0).to_numpy(dtype=float))
        if infinite.any():
            i = _first(infinite)
            raise loc.fail(column, i, f"{_show_number(values, numeric, i)} is not a finite number")
        if feature.type == "bigint":
            fractional = present & (numeric.fillna(0) % 1 != 0)
            if fractional.any():
                i = _first(fractional)
                raise loc.fail(column, i, f"{_show_number(values, numeric, i)} is not a whole number")
        low = -math.inf if feature.min is None else feature.min
        high = math.inf if feature.max is None else feature.max
        outside = present & ((numeric < low) | (numeric > high))
        if outside.any():
            i = _first(outside)
            if feature.min is None:
                allowed = f"is above the allowed maximum {feature.max}"
            elif feature.max is None:
                allowed = f"is below the allowed minimum {feature.min}"
            else:
                allowed = f"is outside the allowed range [{feature.min}, {feature.max}]"
            raise loc.fail(column, i, f"{_show_number(values, numeric, i)} {allowed}")
        if feature.type == "bigint":
            too_large = present & _too_large_for_int64(numeric)
            if too_large.any():
                i = _first(too_large)
                raise loc.fail(column, i, f"{_show_written(values.iloc[i])} is too large for a 64-bit integer")
        if feature.type == "bigint":
            checked = numeric.astype("Int64") if not present.all() else numeric.astype("int64")
        else:
            checked = numeric.astype("float64")
    else:
        checked = values.where(present, None).map(lambda v: v if v is None else str(v).strip()).astype(object)
        if feature.categories is not None:
            unknown = present & ~checked.isin(feature.categories)
            if unknown.any():
                i = _first(unknown)
                raise loc.fail(
                    column, i, f"{_show(values.iloc[i])} is not one of {', '.join(feature.categories)}"
                )
    if not feature.nullable and (~present).any():
        raise loc.fail(column, _first(~present), "value is missing and the feature is not nullable")
    return checked


def build_feature_rows(
    source: Source, spec: DatasetSpec, origin: str, event_time: str | pd.Timestamp
) -> pd.DataFrame:
    """Validate ``source`` against ``spec`` and return rows in the feature group's layout.

    Args:
        source: Raw rows.
        spec: The dataset spec.
        origin: Provenance recorded on every row (``backfill``, ``synthetic``, ``live``).
        event_time: Event time given to every row.

    Raises:
        DataValidationError: the first problem found, naming column, row and value.
    """
    raw = source.frame
    loc = _Locator(source)
    if raw.empty:
        raise DataValidationError(f"{source.location}: no data rows")
    check_columns(raw, spec, source.location)
    label = _coerce_label(raw, spec, loc)
    if spec.primary_key_source is not None:
        keys = raw[spec.primary_key_source]
        key_column = f"'{spec.primary_key_source}'"
        missing = _missing(keys, spec.missing_for(spec.primary_key_type))
        if missing.any():
            raise loc.fail(key_column, _first(missing), "primary key is missing")
        shown = keys
        if spec.primary_key_type == "bigint":
            numeric = _parse_numbers(keys, ~missing)
            bad = numeric.isna() | (numeric.fillna(0) % 1 != 0)
            if bad.any():
                i = _first(bad)
                raise loc.fail(key_column, i, f"primary key {_show_number(keys, numeric, i)} is not a whole number")
            too_large = _too_large_for_int64(numeric)
            if too_large.any():
                i = _first(too_large)
                raise loc.fail(key_column, i, f"primary key {_show_written(keys.iloc[i])} is too large for a 64-bit integer")
            # Compare keys as numbers so that "7" and "7.0" count as the same key.
            keys = shown = numeric
        duplicated = keys.duplicated()
        if duplicated.any():
            i = _first(duplicated)
            first = _first(keys == keys.iloc[i])
            raise loc.fail(key_column, i, f"duplicate primary key {_show(shown.iloc[i])} (first seen in {loc.row(first)})")
    rows = spec.transform(raw)
    out = pd.DataFrame(index=rows.index)
    key = rows[spec.primary_key]
    if spec.primary_key_type == "bigint":
        # Numbered rows (no key column) or a key column checked above.
        out[spec.primary_key] = key if spec.primary_key_source is None else _parse_numbers(key, key.notna())
        out[spec.primary_key] = out[spec.primary_key].astype("int64")
    else:
        out[spec.primary_key] = key.astype(str)
    out[EVENT_TIME_COLUMN] = pd.Series(to_utc(event_time), index=out.index).astype("datetime64[us, UTC]")
    for feature in spec.features:
        out[feature.name] = _check_feature(rows[feature.name], feature, spec, loc)
    out[spec.label] = label
    out[ORIGIN_COLUMN] = origin
    return out[spec.store_columns].reset_index(drop=True)
