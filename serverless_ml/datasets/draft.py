"""Draft a dataset spec from a CSV: ``sml spec draft data.csv --label y``.

:func:`draft_spec` reads the CSV the way the pipelines do (every field as text,
:func:`serverless_ml.datasets.sources.read_csv_file`) and returns the text of a complete,
commented YAML spec that :func:`serverless_ml.datasets.spec.load_spec_file` loads unedited
and whose feature schema the same CSV passes. Every guess is a comment in the text:

* **types**: ``bigint`` when every present value is a whole number written as one
  (``3``, not ``3.0``), ``double`` for other numbers, else ``string``; numbers written
  with a leading zero (``02134``, a zip code) stay text, exactly as written.
* **missing**: ``nullable: true`` when a field is missing (the empty field; in a number
  column also ``NA``, ``NaN``, ``null``, ...: :data:`serverless_ml.datasets.spec.NUMERIC_MISSING`).
* **ranges**: the seen range widened by :data:`RANGE_MARGIN` of its width on each side,
  rounded outward, and not below 0 when no value is negative (nor above 0 when none is
  positive): live and synthetic rows a little outside the seen range still pass.
* **categories** for text with at most :data:`MAX_CATEGORIES` values, each seen twice on
  average; other text is left out (high cardinality), as are constant columns, a copy of
  the label and id-like columns. A column with a value seen only once gets no list: live
  rows will hold values the file does not (:func:`_open_categories`), and a list would
  refuse their batches.
* **names**: lower snake case (Hopsworks stores feature names in lower case), read with
  ``source_column`` from a CSV column of another name.
* **key**: ``--key``, else a column of unique, never-missing whole numbers or texts, named
  like an id (``id``, ``*_id``, ``PassengerId``, ``key``), or whole numbers increasing down
  the file, or codes holding a digit (``C-1001``); else rows are numbered
  (``primary_key: null``).
* **event time**: the first column left out whose every value is an ISO date or date-time
  (``2024-03-01``, ``2024-03-01T09:30:00Z``) is offered, commented out, as
  ``event_time_column`` (from which ``sml ingest`` would read each live row's event time;
  a date column is not always when the row happened: a signup date is not).
* **label**: integer classes when every label is an integer written plainly (``0``,
  ``-1``; sorted numerically), else text classes as written (sorted); for two classes
  ``positive_class`` is the one named like a positive (``1``, ``yes``, ``true``,
  ``positive``), else the rarer one.

Pure: reads the CSV, returns text; writes nothing.
"""

from __future__ import annotations

import difflib
import math
import textwrap
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from serverless_ml import defaults
from serverless_ml.datasets.spec import (
    DEFAULT_BACKFILL_EVENT_TIME,
    DEFAULT_JITTER,
    EVENT_TIME_COLUMN,
    IDENTIFIER,
    MAX_DATASET_NAME_LENGTH,
    MAX_PRODUCT_FEATURES,
    NUMERIC_MISSING,
    PREDICTIONS_SUFFIX,
    dataset_name_problem,
)
from serverless_ml.errors import DataValidationError, NotFoundError, SpecError
from serverless_ml.feature_store.base import ORIGIN_COLUMN

RANGE_MARGIN = 1.0
"""Each numeric range is the seen one widened by this share of its width on both sides:
synthetic drift (``age+15``) is clipped to the range, and live rows outside the seen
values must still pass validation. 10 % refused whole files of rows from the very
distribution the draft was made from (found by a user trial: 13 of 200 batches of 200
rows of a normal feature, 27 of 200 with a heavy-tailed one); measured on 1,000 seen
rows and batches of 200, the width on each side refuses none of 1,000 normal or
exponential batches and 1.7 % of lognormal ones, and still catches a value typed 10 times
too large."""

MAX_CATEGORIES = 50
"""Text with more distinct values than this (or fewer than two rows per value on
average) is left out: one-hot encoding it gives the forest a column per value."""

ROWS_NUMBERED_KEY = "row_id"
"""The key a spec without ``primary_key`` gets (rows numbered 1..N)."""

_ID_NAME = re.compile(r"(?:^|_)(?:id|key|uuid|guid)$")
_LEADING_ZERO = re.compile(r"[+-]?0\d")
_PLAIN_INTEGER = re.compile(r"-?(?:0|[1-9]\d*)")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
                   r"|\d{1,2}[/.]\d{1,2}[/.]\d{2,4}")
_POSITIVE_WORDS = frozenset({"1", "yes", "y", "true", "t", "positive", "pos"})
"""Classes (any case) taken as the positive one of a binary label."""
_TRANSLITERATION = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
                                  "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "TH"})
_INT64_MAX = 2**63 - 1


def snake_case(column: str) -> str:
    """A stored column name for a CSV column: lower snake case ASCII (accents dropped,
    ``PassengerId`` -> ``passenger_id``, ``Body mass (g)`` -> ``body_mass_g``); ``""``
    when nothing of it is ASCII. A leading digit is kept (the caller prefixes it)."""
    text = unicodedata.normalize("NFKD", column.translate(_TRANSLITERATION))
    text = text.encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    text = re.sub(r"(?<=[A-Z])(?=[A-Z][a-z])", "_", text)
    return re.sub(r"[^0-9a-z]+", "_", text.lower()).strip("_")


def _stored_name(column: str, position: int) -> str:
    name = snake_case(column) or f"column_{position + 1}"
    return f"col_{name}" if name[0].isdigit() else name


def _quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar that loads as exactly this string (``Yes``,
    ``01``, ``null``, ``1.0``, control characters and non-ASCII included)."""
    return yaml.safe_dump(text, default_style='"', allow_unicode=True, width=math.inf).rstrip("\n")


def _key(name: str) -> str:
    """A mapping key: plain when YAML reads it back as the same string (``age``), quoted
    otherwise (``on``, ``no``, ``null`` would load as a boolean or nothing)."""
    try:
        plain = yaml.safe_load(name) == name
    except yaml.YAMLError:
        plain = False
    return name if plain and IDENTIFIER.fullmatch(name) else _quoted(name)


def _shown(text: str, limit: int = 40) -> str:
    """A CSV value or column name inside a comment: one line, shortened."""
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _number_text(value: float) -> str:
    return f"{value:g}" if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class Draft:
    """A drafted spec.

    Attributes:
        text: The YAML document (warnings included as comments).
        warnings: Each warning in one line, as in the text (the CLI repeats them on stderr).
    """

    text: str
    warnings: tuple[str, ...]


@dataclass
class _Column:
    """What the draft learned about one CSV column."""

    column: str
    position: int
    name: str = ""
    values: pd.Series = field(default_factory=lambda: pd.Series(dtype=object))
    type: str = "string"
    present: pd.Series = field(default_factory=lambda: pd.Series(dtype=bool))
    numbers: pd.Series | None = None
    distinct: list[str] = field(default_factory=list)
    note: str = ""
    excluded: str = ""
    open_categories: bool = False
    """A text feature drafted without a ``categories`` list (:func:`_open_categories`)."""

    @property
    def missing(self) -> int:
        return int((~self.present).sum())


def _read(csv_path: Path) -> pd.DataFrame:
    from serverless_ml.datasets.sources import read_csv_file

    if csv_path.exists() and not csv_path.is_file() and not csv_path.is_dir():
        raise DataValidationError(f"source {csv_path} is not a regular file, expected a CSV file")
    try:
        return read_csv_file(csv_path)
    except PermissionError:
        raise DataValidationError(f"source file {csv_path} cannot be read (permission denied)") from None


def _numbers(texts: pd.Series) -> pd.Series | None:
    """``texts`` as numbers when every one is a finite number (pandas' number grammar, as
    validation reads them), else ``None``."""
    numbers = pd.to_numeric(texts, errors="coerce")
    if numbers.isna().any():
        return None
    as_float = numbers.astype(float)
    if not as_float.map(math.isfinite).all():
        return None
    return numbers


def _profile(raw: pd.DataFrame, column: str, position: int) -> _Column:
    values = raw[column]
    info = _Column(column, position, name=_stored_name(column, position), values=values)
    numeric_present = ~values.isin(NUMERIC_MISSING)
    numbers = _numbers(values[numeric_present]) if numeric_present.any() else None
    leading_zero = values[numeric_present].str.strip().str.match(_LEADING_ZERO) if numbers is not None else None
    if numbers is not None and leading_zero is not None and leading_zero.any():
        example = values[numeric_present][leading_zero].iloc[0]
        info.note = (f"looks numeric but is written with leading zeros ({_shown(example)}): kept as text, "
                     "exactly as written")
        numbers = None
    if numbers is not None:
        whole = pd.api.types.is_signed_integer_dtype(numbers.dtype)
        info.type = "bigint" if whole else "double"
        info.present = numeric_present
        info.numbers = numbers.astype("int64" if whole else float)
        # One text per number: 0, 0.0 and -0.0 are one value (a column of them is constant).
        texts = pd.DataFrame({"text": values[numeric_present].str.strip().to_numpy(),
                              "number": info.numbers.astype(float).to_numpy() + 0.0})
        info.distinct = sorted(texts.drop_duplicates("number")["text"])
        return info
    info.type = "string"
    info.present = values != ""
    stripped = values[info.present].str.strip()
    info.distinct = sorted(set(stripped))
    if not info.note and info.present.any():
        parsed = pd.to_numeric(stripped, errors="coerce")
        share = float(parsed.notna().mean())
        if 0.5 <= share < 1:
            odd = sorted(set(stripped[parsed.isna()]))
            if len(odd) <= 3:
                info.note = (f"text that looks numeric: {share:.0%} of its values are numbers, the others "
                             f"{', '.join(map(_shown, odd))}; drafted as text. If those mean 'missing', declare it "
                             f"type double with missing_values: [\"\", {', '.join(_quoted(v) for v in odd)}] and "
                             "nullable: true")
            else:
                info.note = (f"text that looks numeric: {share:.0%} of its values are numbers, the others "
                             f"{len(odd)} texts such as {_shown(odd[0])}; drafted as text")
    return info


def _is_id_name(column: str) -> bool:
    return bool(_ID_NAME.search(snake_case(column))) or column.strip().lower() in ("id", "key")


def _key_type(info: _Column) -> str | None:
    """``bigint``/``string`` when the column can be a key (unique, never missing), else ``None``."""
    values = info.values
    if (values == "").any():
        return None
    if info.type == "bigint" and bool(info.present.all()) and info.numbers is not None:
        # (a column read as bigint already holds int64 values only)
        return "bigint" if info.numbers.is_unique else None
    if info.type == "string" and values.is_unique:
        return "string"
    return None


def _looks_like_key(info: _Column) -> bool:
    key_type = _key_type(info)
    if key_type is None:
        return False
    if _is_id_name(info.column):
        return True
    if key_type == "bigint" and info.numbers is not None and len(info.numbers) > 1:
        return bool(info.numbers.is_monotonic_increasing)
    # A text id: unique codes without spaces that hold a digit (``C-1001``, a UUID), not dates.
    return bool(info.values.str.fullmatch(r"[A-Za-z0-9_.:#/-]*\d[A-Za-z0-9_.:#/-]*").all()) and not _is_dates(info)


def _is_dates(info: _Column) -> bool:
    """Whether every present value of a text column is written as a date (``2023-01-05``,
    ``05/01/2023``), with or without a time."""
    present = info.values[info.present].str.strip()
    return info.type == "string" and not present.empty and bool(present.str.fullmatch(_DATE).all())


_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?")


def _is_event_times(info: _Column) -> bool:
    """Whether every value of the column is an ISO date or date-time ``sml ingest`` reads
    as an event time (none missing)."""
    values = info.values.str.strip()
    if info.missing or values.empty or not bool(values.str.fullmatch(_ISO_TIME).all()):
        return False
    return bool(pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce").notna().all())


def _label_classes(info: _Column) -> tuple[str, list[Any], pd.Series]:
    """The label's type, its classes in order, and which rows have a label."""
    values = info.values
    present_numeric = ~values.isin(NUMERIC_MISSING)
    texts = values[present_numeric].str.strip()
    if present_numeric.any() and texts.str.fullmatch(_PLAIN_INTEGER.pattern).all() \
            and texts.map(lambda t: abs(int(t)) <= _INT64_MAX).all():
        return "bigint", sorted({int(t) for t in texts}), present_numeric
    present = values != ""
    return "string", sorted(set(values[present].str.strip())), present


def _positive_class(classes: list[Any], counts: dict[Any, int]) -> tuple[Any, str]:
    def positive_looking(value: Any) -> bool:
        return str(value).strip().lower() in _POSITIVE_WORDS

    named = [c for c in classes if positive_looking(c)]
    if len(named) == 1:
        return named[0], "named like a positive class (1, yes, true, positive, in any case)"
    first, second = classes
    if counts[first] < counts[second]:
        return first, "the rarer class (no class is named like a positive one)"
    if counts[second] < counts[first]:
        return second, "the rarer class (no class is named like a positive one)"
    return second, "the second class (the classes are equally common and neither is named like a positive one)"


def rows_needed_per_class(folds: int, holdout: float) -> int:
    """Rows a class needs for ``sml train`` to put it in the holdout and in every CV fold
    (the rule of :func:`serverless_ml.pipelines.train.check_training_rows`; a unit test
    keeps the two equal)."""
    from serverless_ml.datasets.split import rows_needed_per_class as needed  # the rule has one home

    return needed(folds, holdout)


def _same_as_label(info: _Column, label: pd.Series, labelled: pd.Series) -> str:
    """Why ``info`` is a copy of the label (``""`` when it is not): the same texts, or a
    one-to-one recoding of them on every labelled row."""
    feature = info.values[labelled].str.strip()
    target = label[labelled].str.strip()
    if feature.empty or (feature == "").any():
        return ""
    if (feature == target).all():
        return "identical to the label"
    if feature.nunique() == target.nunique() and feature.nunique() > 1:
        pairs = pd.DataFrame({"f": feature.to_numpy(), "t": target.to_numpy()}).drop_duplicates()
        if len(pairs) == feature.nunique():
            return "a one-to-one recoding of the label (each value goes with one class)"
    return ""


def _bounds(low: float, high: float, whole: bool) -> tuple[str, str]:
    """The seen ``[low, high]`` widened by :data:`RANGE_MARGIN` of its width on each side,
    rounded outward to the margin's order of magnitude, kept >= 0 (<= 0) when every seen
    value is; as YAML numbers."""
    span = high - low
    margin = RANGE_MARGIN * span if span > 0 else RANGE_MARGIN * max(abs(high), 1.0)
    if not math.isfinite(margin) or margin <= 0:
        return _number_text(low), _number_text(high)
    step = 10.0 ** math.floor(math.log10(margin))
    decimals = max(0, -int(math.floor(math.log10(step))))
    lo = math.floor((low - margin) / step) * step
    hi = math.ceil((high + margin) / step) * step
    if low >= 0:
        lo = max(lo, 0.0)
    if high <= 0:
        hi = min(hi, 0.0)
    if whole:
        return str(int(math.floor(lo))), str(int(math.ceil(hi)))

    def text(bound: float) -> str:
        written = f"{bound + 0.0:.{decimals}f}"
        return written.rstrip("0").rstrip(".") if "." in written else written

    # Formatting rounds to the nearest; a bound must never cut a seen value off.
    while float(text(lo)) > low:
        lo -= step
    while float(text(hi)) < high:
        hi += step
    return text(lo), text(hi)


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _dataset_name(csv_path: Path, name: str | None) -> str:
    """``--name``, checked; else the file's name in snake case, never a built-in
    dataset's (``titanic.csv`` -> ``titanic_csv``: the two would share a feature group
    and a registered model)."""
    from serverless_ml.datasets import BUILTIN

    if name is not None:
        problem = dataset_name_problem(name)
        if problem:
            raise SpecError(f"--name: {problem}")
        if name in BUILTIN:
            raise SpecError(f"--name {name!r} is a built-in dataset's; choose another (the two would share "
                            "a feature group and a registered model)")
        return name
    derived = snake_case(csv_path.stem) or "dataset"
    if not derived[0].isalpha():
        derived = f"data_{derived}"
    derived = derived[:MAX_DATASET_NAME_LENGTH].rstrip("_")
    if derived.endswith(PREDICTIONS_SUFFIX):
        derived = derived[: MAX_DATASET_NAME_LENGTH - len("_data")] + "_data"
    if derived in BUILTIN:
        derived = f"{derived}_csv"
    if dataset_name_problem(derived):
        raise SpecError(f"cannot derive a dataset name from {csv_path.name!r}; give one with --name")
    return derived


def _column_problem(raw: pd.DataFrame, column: str, option: str, csv_path: Path) -> str | None:
    from serverless_ml.datasets.sources import other_delimiter_hint

    if column in raw.columns:
        return None
    columns = [str(c) for c in raw.columns]
    lower = {c.lower(): c for c in columns}
    close = [lower[c] for c in difflib.get_close_matches(column.lower(), list(lower), n=1, cutoff=0.6)]
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    delimiter = other_delimiter_hint(columns, csv_path)
    if delimiter is not None:
        hint = f" ({delimiter})"
    shown = ", ".join(map(repr, columns[:12])) + (", ..." if len(columns) > 12 else "")
    return f"{option} {column!r}: {csv_path} has no such column{hint}; its columns are {shown}"


def _column_ref(column: str, name: str, extra: str = "") -> str:
    """``label:``/``primary_key:`` value: the bare name, or a mapping with ``source_column``."""
    if name == column and not extra:
        return _key(name)
    parts = [f"column: {_key(name)}", *([extra] if extra else [])]
    if name != column:
        parts.append(f"source_column: {_quoted(column)}")
    return "{" + ", ".join(parts) + "}"


def _open_categories(info: _Column) -> str:
    """Why a text feature's categories are left open ("" to list them): values seen once.
    The share of rows whose value no row of the file has is estimated by Good-Turing as
    the share of rows holding a value seen once (``n1 / n``); a closed list would refuse
    every batch holding one, and with a value seen once in 2,500 rows about one batch of
    300 rows in nine does. Left open, any text is taken, the model reads an unseen value
    as no known category, and the site counts it among the values training never had."""
    present = info.values[info.present.to_numpy(dtype=bool)].str.strip()  # as stored (and as its categories list them)
    counts = present.value_counts()
    once = int((counts == 1).sum())
    if not once:
        return ""
    shown = ", ".join(_shown(v) for v in counts[counts == 1].index[:3]) + (", ..." if once > 3 else "")
    return (f"{once} of its {len(counts)} values seen once in {len(present)} rows ({shown}): live rows will likely hold "
            f"values this file does not (about {once / len(present):.2%} of rows, Good-Turing), so its categories are "
            "left open (any text is taken; the site shows the values training never had); list them as categories "
            "to refuse others")


def _feature_line(info: _Column, bounds: tuple[str, str] | None) -> str:
    parts = [f"type: {info.type}"]
    if info.name != info.column:
        parts.append(f"source_column: {_quoted(info.column)}")
    if bounds is not None:
        parts += [f"min: {bounds[0]}", f"max: {bounds[1]}"]
    if info.type == "string" and not info.excluded and info.distinct and not info.open_categories:
        parts.append(f"categories: [{', '.join(_quoted(v) for v in info.distinct)}]")
    if info.missing:
        parts.append("nullable: true")
    return f"{_key(info.name)}: {{{', '.join(parts)}}}"


def _describe(info: _Column) -> str:
    rows = len(info.values)
    missing = f"; missing in {info.missing} of {rows} rows" if info.missing else ""
    if info.numbers is not None and len(info.numbers):
        kind = "whole numbers" if info.type == "bigint" else "numbers"
        return (f"{_shown(info.column)}: {kind} from {_number_text(float(info.numbers.min()))} to "
                f"{_number_text(float(info.numbers.max()))}{missing}")
    open_note = "; categories left open (a value seen once: see the warnings)" if info.open_categories else ""
    return f"{_shown(info.column)}: text, {len(info.distinct)} distinct values{missing}{open_note}"


def _printable(text: str) -> str:
    """``text`` with every character that is not printable escaped (``\\n``, ``\\x85``): YAML
    ends a comment at any of its line breaks, which include NEL and U+2028."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _comment_lines(text: str, indent: str = "") -> list[str]:
    """``text`` as wrapped comment lines."""
    return [f"{indent}# {line}" for line in textwrap.wrap(_printable(text), width=96 - len(indent), break_on_hyphens=False)]


def draft_spec(
    csv_path: str | Path,
    label: str,
    name: str | None = None,
    key: str | None = None,
    spec_dir: str | Path | None = None,
    folds: int = defaults.TRAIN_FOLDS,
    holdout: float = defaults.TRAIN_HOLDOUT,
) -> Draft:
    """Draft a dataset spec for ``csv_path``.

    Args:
        csv_path: The CSV (UTF-8, a header, at least one row).
        label: The CSV column holding the class.
        name: Dataset name [default: the file's name in snake case].
        key: The CSV column holding a unique key [default: detected, see the module docstring].
        spec_dir: Folder the spec will be written to: ``source.path`` is then relative to
            it when the CSV is inside it; otherwise, and for ``None``, the CSV's absolute
            path (a text on stdout may be saved anywhere).
        folds, holdout: ``sml train``'s settings, for the rare-class warning.

    Returns:
        The YAML text, and the warnings it holds as comments.

    Raises:
        SmlError: a missing or unreadable CSV, an unknown label or key column, a label
            with fewer than two classes, a key that is not unique; nothing is returned.
    """
    csv_path = Path(csv_path).expanduser()
    dataset = _dataset_name(csv_path, name)
    raw = _read(csv_path)
    for option, column in (("--label", label), ("--key", key)):
        problem = column is not None and _column_problem(raw, column, option, csv_path)
        if problem:
            raise NotFoundError(problem)
    if key is not None and key == label:
        raise SpecError(f"--key {key!r} is the label column; a key identifies rows and cannot be the class")
    rows = len(raw)
    columns = [_profile(raw, str(c), i) for i, c in enumerate(raw.columns)]
    by_column = {c.column: c for c in columns}
    warnings: list[str] = []

    # Label.
    label_info = by_column[label]
    label_type, classes, labelled = _label_classes(label_info)
    if len(classes) < 2:
        found = f"1 class ({classes[0]!r})" if classes else "no label value"
        raise DataValidationError(f"--label {label!r}: {csv_path} has {found} in that column; "
                                  "a classifier needs at least two classes")
    unlabelled = int((~labelled).sum())
    if unlabelled:
        first = int((~labelled).to_numpy().nonzero()[0][0])
        warnings.append(f"label {_shown(label)} is missing in {unlabelled} of {rows} rows (first: row {first + 1}, "
                        f"line {first + 2}): `sml features` refuses a row without a label; remove those rows")
    label_texts = label_info.values[labelled].str.strip()
    parsed = label_texts.map(int) if label_type == "bigint" else label_texts
    seen = parsed.value_counts()
    counts = {c: int(seen.get(c, 0)) for c in classes}
    needed = rows_needed_per_class(folds, holdout)
    rare = [c for c in classes if counts[c] < needed]
    if rare:
        shown = ", ".join(f"{c!r} ({counts[c]} row{'' if counts[c] == 1 else 's'})" for c in rare[:5]) + (", ..." if len(rare) > 5 else "")
        given = " and ".join(([f"--folds {folds}"] if folds else []) + ([f"--holdout {holdout:g}"] if holdout else []))
        warnings.append(f"rare classes: {shown}; `sml train` needs at least {needed} rows per class"
                        f"{' with ' + given if given else ''} (each class in the holdout and in every fold): "
                        f"{'use fewer --folds, ' if folds else ''}merge or drop rare classes, or add rows")
    if len(classes) > MAX_CATEGORIES:
        warnings.append(f"label {_shown(label)} has {len(classes)} classes: is it a number to predict rather than a class?")

    # Key.
    key_info: _Column | None = None
    key_type = "bigint"
    key_reason = ""
    if key is not None:
        key_info = by_column[key]
        found_type = _key_type(key_info)
        if found_type is None:
            values = key_info.values
            if (values == "").any():
                first = int((values == "").to_numpy().nonzero()[0][0])
                raise DataValidationError(f"--key {key!r}: {csv_path} row {first + 1} (line {first + 2}) has no key; "
                                          "a key must be on every row")
            duplicated = values[values.duplicated()].iloc[0]
            positions = (values == duplicated).to_numpy().nonzero()[0][:2]
            raise DataValidationError(f"--key {key!r}: {csv_path} has {_shown(duplicated)} in rows {positions[0] + 1} and "
                                      f"{positions[1] + 1} (lines {positions[0] + 2} and {positions[1] + 2}); a key must be unique")
        key_type, key_reason = found_type, "given with --key"
    else:
        candidates = [c for c in columns if c.column != label and _looks_like_key(c)]
        candidates.sort(key=lambda c: (not _is_id_name(c.column), c.position))
        if candidates:
            key_info = candidates[0]
            candidate_type = _key_type(key_info)
            assert candidate_type is not None, "a candidate has a key type (_looks_like_key)"
            key_type = candidate_type
            why = "named like an id" if _is_id_name(key_info.column) else (
                "increasing down the file" if key_type == "bigint" else "codes holding digits")
            key_reason = f"detected: unique, never missing, {why}"
            for other in candidates[1:]:
                other.excluded = "looks like another id (unique on every row): not a feature"

    # Names: the key and label first, then the features in file order; all distinct and
    # none of the store's own columns.
    taken = {EVENT_TIME_COLUMN, ORIGIN_COLUMN}
    if key_info is None:
        taken.add(ROWS_NUMBERED_KEY)
    else:
        key_info.name = _unique_name(key_info.name, taken)
    label_info.name = _unique_name(label_info.name, taken)

    # Features.
    features = [c for c in columns if c is not key_info and c is not label_info]
    for info in features:
        if info.excluded:
            continue
        if len(info.distinct) <= 1:
            value = f" ({_shown(info.distinct[0])})" if info.distinct else ""
            missing = f" and {info.missing} missing" if info.missing and info.distinct else ""
            info.excluded = (f"constant: one value{value}{missing} in {rows} rows" if info.distinct
                             else f"empty: no value in {rows} rows")
            continue
        copy = _same_as_label(info, label_info.values, labelled)
        if copy:
            info.excluded = f"{copy}: a model would learn nothing else (label leakage)"
            continue
        if info.type == "string":
            present = int(info.present.sum())
            if len(info.distinct) > MAX_CATEGORIES or len(info.distinct) * 2 > present:
                info.excluded = (f"high-cardinality text: {len(info.distinct)} distinct values in {present} rows "
                                 f"(at most {MAX_CATEGORIES}, each seen twice on average, become categories)")
                if _is_dates(info):
                    info.excluded = (f"dates, {len(info.distinct)} distinct values in {present} rows: a spec has no date "
                                     "type; add a number derived from them to the CSV (days since a fixed date, "
                                     "the month) and draft again")
                continue
            reason = _open_categories(info)
            if reason:
                info.open_categories = True
                info.note = f"{info.note}; {reason}" if info.note else reason
        elif _is_id_name(info.column) and _key_type(info) == "bigint":
            info.excluded = "looks like another id (unique whole numbers on every row): not a feature"
            continue
    kept = [c for c in features if not c.excluded]
    if not kept:
        raise DataValidationError(f"{csv_path}: no column is left as a feature (every column other than the label "
                                  "and key is constant, an id, a copy of the label or high-cardinality text)")
    for info in features:
        info.name = _unique_name(info.name, taken) if not info.excluded else info.name
        if info.note:
            warnings.append(f"column {_shown(info.column)}: {info.note}")
        if info.excluded:
            warnings.append(f"column {_shown(info.column)} left out: {info.excluded}")

    times = [info for info in features if info.excluded and _is_event_times(info)]
    event_time = times[0] if times else None
    if len(times) > 1:
        warnings.append(f"columns {', '.join(_shown(t.column) for t in times)} all hold ISO dates: event_time_column "
                        f"is the first, {_shown(times[0].column)}; name another if it is the rows' event time")

    positive = _positive_class(classes, counts) if len(classes) == 2 else None
    numeric = [c for c in kept if c.type != "string"]
    if spec_dir is None:
        source_path = str(csv_path.resolve())
        source_note = "absolute: works wherever this text is saved (--output FILE writes it relative to FILE)"
    else:
        folder, target = Path(spec_dir).resolve(), csv_path.resolve()
        if target.is_relative_to(folder):
            source_path, source_note = target.relative_to(folder).as_posix(), "relative to this file's folder"
        else:
            source_path, source_note = str(target), "absolute: the CSV is not in this file's folder"
    text = _render(
        dataset=dataset, csv_path=csv_path, rows=rows, n_columns=len(columns), source_path=source_path,
        source_note=source_note, label_info=label_info, label_type=label_type, classes=classes, counts=counts,
        positive=positive, key_info=key_info, key_type=key_type, key_reason=key_reason, features=features,
        numeric=numeric, warnings=warnings, event_time=event_time,
    )
    return Draft(text, tuple(warnings))


def _render(
    *, dataset: str, csv_path: Path, rows: int, n_columns: int, source_path: str, source_note: str, label_info: _Column,
    label_type: str, classes: list[Any], counts: dict[Any, int], positive: tuple[Any, str] | None,
    key_info: _Column | None, key_type: str, key_reason: str, features: list[_Column], numeric: list[_Column],
    warnings: list[str], event_time: _Column | None = None,
) -> str:
    def value(item: Any) -> str:
        return str(item) if label_type == "bigint" else _quoted(item)

    out: list[str] = []
    out += _comment_lines(f"Dataset spec drafted by `sml spec draft` from {_shown(csv_path.name, 80)} ({rows} rows, "
                          f"{n_columns} columns).")
    out += _comment_lines("Every choice is a guess from the data, explained in a comment: review it, then "
                          "`sml features --dataset <this file>`. The keys are described in README.md, 'Spec reference'.")
    if warnings:
        out.append("#")
        out.append("# Warnings:")
        for warning in warnings:
            wrapped = _comment_lines(warning, "  ")
            out.append("#   - " + wrapped[0][4:])
            out += ["#     " + line[4:] for line in wrapped[1:]]
    out.append("")
    out.append(f"name: {dataset}")
    out.append("version: 1  # the feature group's version: a new one whenever a feature, a type or the key changes")
    out.append(f"description: {_quoted(f'Drafted from {csv_path.name}')}")
    out.append(f"source: {{path: {_quoted(source_path)}}}  # {source_note}")
    out.append("")
    out.append(f"label: {_column_ref(label_info.column, label_info.name)}")
    shares = ", ".join(f"{c if label_type == 'bigint' else _shown(c)}: {counts[c]}" for c in classes[:MAX_CATEGORIES])
    kind = "integers, in numeric order" if label_type == "bigint" else "text as written, in sorted order"
    out += _comment_lines(f"classes: {kind}; rows per class: {shares}{', ...' if len(classes) > MAX_CATEGORIES else ''}")
    out.append(f"classes: [{', '.join(value(c) for c in classes)}]")
    if positive is not None:
        out += _comment_lines(f"positive_class: what precision, recall, F1 and ROC AUC are about; {positive[1]}")
        out.append(f"positive_class: {value(positive[0])}")
    if key_info is None:
        out.append(f"primary_key: null  # no column looks like a unique id: rows are numbered 1..N as {ROWS_NUMBERED_KEY}")
    else:
        ref = _column_ref(key_info.column, key_info.name, f"type: {key_type}")
        out.append(f"primary_key: {ref}  # {key_reason}")
    out.append(f"backfill_event_time: {_quoted(DEFAULT_BACKFILL_EVENT_TIME)}  # event time of the CSV's rows (a fixed date)")
    if event_time is not None:
        out += _comment_lines(f"{_shown(event_time.column)} holds an ISO date in every row. If it is when each row "
                              "happened, uncomment the next line: `sml ingest` then reads each live row's event time "
                              "from it (else --date, else the time of the ingest).")
        out.append(f"# event_time_column: {_quoted(event_time.column)}")
    out.append("")
    margin = f"{RANGE_MARGIN:.0%}"
    out += _comment_lines(f"Numeric ranges: the seen range widened by {margin} of its width on each side, rounded "
                          "outward, not below 0 when no value is negative; categories: every text value seen, unless "
                          "one was seen only once (then any text is taken: see the column's note).")
    out.append("features:")
    for info in features:
        if info.excluded:
            continue
        bounds = None
        if info.numbers is not None and len(info.numbers):
            bounds = _bounds(float(info.numbers.min()), float(info.numbers.max()), info.type == "bigint")
        out.append(f"  # {_printable(_describe(info))}")
        out.append(f"  {_feature_line(info, bounds)}")
    excluded = [info for info in features if info.excluded]
    if excluded:
        out.append("  # Left out (see the warnings; uncomment a line to use the column):")
        for info in excluded:
            out.append(f"  # {_feature_line(info, None)}")
    out.append("")
    if 2 <= len(numeric) <= MAX_PRODUCT_FEATURES:
        why = (f"true also gives the model the pairwise products of the {len(numeric)} numeric features "
               "(an area such as length x width), computed inside the model pipeline")
    else:
        why = (f"true needs 2 to {MAX_PRODUCT_FEATURES} numeric features (this draft has {len(numeric)}); "
               "it adds their pairwise products inside the model pipeline")
    out += _comment_lines(f"numeric_products: {why}.")
    out.append("numeric_products: false")
    out += _comment_lines("synthetic.jitter: noise added to each double feature of the daily synthetic rows, as a "
                          "fraction of the class's local spread (0: resampled real rows only).")
    out.append(f"synthetic: {{jitter: {DEFAULT_JITTER}}}")
    return "\n".join(out) + "\n"
