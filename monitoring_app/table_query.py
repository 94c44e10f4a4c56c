"""Server-side filtering, sorting and paging of the Predictions table (pure).

The table sends Dash DataTable's ``filter_query`` (``{probability} > 0.8 && {correct} =
no``) and ``sort_by``; only the requested page goes back to the browser.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from serverless_ml.datasets.spec import DatasetSpec, EVENT_TIME_COLUMN
from serverless_ml.inference.scoring import MODEL_VERSION_COLUMN

PAGE_SIZE = 20
_OPERATORS = {
    "=": "eq", "eq": "eq", "s=": "eq", "!=": "ne", "ne": "ne", "s!=": "ne",
    "<": "lt", "lt": "lt", "s<": "lt", "<=": "le", "le": "le", "s<=": "le",
    ">": "gt", "gt": "gt", "s>": "gt", ">=": "ge", "ge": "ge", "s>=": "ge",
    "contains": "contains", "icontains": "contains", "scontains": "contains",
    "datestartswith": "startswith", "is blank": "blank", "is nil": "blank",
}
_TERM = re.compile(
    r"^\{(?P<column>[^}]+)\}\s*(?P<op>is blank|is nil|datestartswith|[si]?contains|s?(?:>=|<=|!=|=|>|<)|eq|ne|lt|le|gt|ge)\s*(?P<value>.*)$",
    re.IGNORECASE,
)


class FilterError(ValueError):
    """A filter expression the table cannot apply (shown to the user as it is)."""


@dataclass(frozen=True)
class Term:
    column: str
    op: str
    value: Any


def parse_filter(query: str | None, columns: Sequence[str], numeric: Sequence[str] = ()) -> list[Term]:
    """DataTable filter terms joined with ``&&``; values of numeric columns become numbers.

    Raises:
        FilterError: a term names an unknown column, uses an unknown operator, or gives a
            numeric column a value that is not a number.
    """
    if not query or not query.strip():
        return []
    if "||" in query:
        raise FilterError("only filters joined with && are supported")
    terms = []
    for part in query.split("&&"):
        part = part.strip()
        match = _TERM.match(part)
        if match is None:
            raise FilterError(f"cannot read the filter '{part[:60]}'")
        column, op = match["column"].strip(), _OPERATORS[match["op"].lower()]
        if column not in columns:
            raise FilterError(f"unknown column '{column[:40]}'")
        raw = match["value"].strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'`":
            raw = raw[1:-1]
        value: Any = raw
        if column in numeric and op not in ("contains", "startswith", "blank"):
            try:
                value = float(raw)
            except ValueError:
                raise FilterError(f"'{raw[:40]}' is not a number (column '{column}')") from None
            if math.isnan(value):
                raise FilterError(f"'{raw[:40]}' is not a number (column '{column}')")
        terms.append(Term(column, op, value))
    return terms


def apply_filter(frame: pd.DataFrame, terms: Sequence[Term]) -> pd.DataFrame:
    """Rows of ``frame`` matching every term."""
    mask = pd.Series(True, index=frame.index)
    for term in terms:
        column = frame[term.column]
        if term.op == "blank":
            mask &= column.isna() | (column.astype(str) == "")
            continue
        if term.op in ("contains", "startswith"):
            text = column.astype(str).str.lower()
            needle = str(term.value).lower()
            mask &= text.str.contains(needle, regex=False) if term.op == "contains" else text.str.startswith(needle)
            continue
        value = term.value
        if not isinstance(value, float):
            column = column.astype(str)
        ops = {"eq": column.eq, "ne": column.ne, "lt": column.lt, "le": column.le, "gt": column.gt, "ge": column.ge}
        mask &= ops[term.op](value).fillna(False).astype(bool)
    return frame[mask]


def apply_sort(frame: pd.DataFrame, sort_by: Sequence[dict[str, str]] | None) -> pd.DataFrame:
    """``frame`` sorted by the table's ``sort_by`` (missing values last)."""
    keys = [s for s in sort_by or () if s.get("column_id") in frame.columns]
    if not keys:
        return frame
    return frame.sort_values(
        [s["column_id"] for s in keys], ascending=[s.get("direction") != "desc" for s in keys],
        kind="stable", na_position="last",
    )


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet runs a cell that starts with one of these as a formula."""


def _spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=HYPERLINK(...)``), with a ``'``
    in front, so it opens as the text it is; numbers (``-1``) are kept as they are."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


def to_csv(frame: pd.DataFrame, text_columns: Sequence[str] = ("key", "prediction", "actual")) -> str:
    """The rows of ``frame`` as CSV text (a header of its column names, ``\n`` line ends),
    text cells a spreadsheet would run as a formula guarded with a leading ``'``."""
    out = frame.copy()
    for column in text_columns:
        if column in out:
            out[column] = out[column].map(_spreadsheet_safe)
    return out.to_csv(index=False, lineterminator="\n")


def page_of(frame: pd.DataFrame, page_current: int | None, page_size: int | None) -> tuple[pd.DataFrame, int]:
    """The requested page and the number of pages (at least 1)."""
    size = max(1, int(page_size or PAGE_SIZE))
    pages = max(1, math.ceil(len(frame) / size))
    current = min(max(0, int(page_current or 0)), pages - 1)
    return frame.iloc[current * size : (current + 1) * size], pages


AWAITING_LABEL = "awaiting label"
"""The ``actual`` cell of a row whose label is not known yet (a live row's outcome comes
later, with ``sml labels``)."""
AWAITING_FILTER = f'{{actual}} = "{AWAITING_LABEL}"'
"""The table filter keeping only the rows awaiting their label."""


def display_predictions(predictions: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """The predictions group as the table shows it, newest first: key, event time,
    prediction and actual as class names (actual :data:`AWAITING_LABEL` when the label is
    not known yet), probability, correct (yes/no, blank when the label is not known),
    model version."""
    names = {c: (spec.class_name(c) if spec.class_names else str(c)) for c in spec.classes}

    def label(series: pd.Series, missing: str = "") -> pd.Series:
        return series.map(lambda v: names.get(v, missing if v is None or pd.isna(v) else str(v))).astype(str)

    correct = predictions["correct"].astype("boolean")
    out = pd.DataFrame({
        "key": predictions[spec.primary_key].astype(str),
        "event_time": pd.to_datetime(predictions[EVENT_TIME_COLUMN], utc=True).dt.strftime("%Y-%m-%d %H:%M"),
        "prediction": label(predictions["prediction"]),
        "probability": predictions["probability"].astype(float).round(4),
        "actual": label(predictions["actual"], AWAITING_LABEL),
        "correct": correct.map({True: "yes", False: "no"}).astype(object).fillna(""),
        MODEL_VERSION_COLUMN: predictions[MODEL_VERSION_COLUMN].astype(int),
    })
    return out.iloc[::-1].sort_values("event_time", ascending=False, kind="stable").reset_index(drop=True)


def awaiting_count(frame: pd.DataFrame) -> int:
    """Rows of a :func:`display_predictions` frame whose label is not known yet."""
    return int(frame["actual"].eq(AWAITING_LABEL).sum()) if len(frame) else 0


TABLE_COLUMNS = ("key", "event_time", "prediction", "probability", "actual", "correct", MODEL_VERSION_COLUMN)
NUMERIC_COLUMNS = ("probability", MODEL_VERSION_COLUMN)
