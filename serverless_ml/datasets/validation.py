"""Validate raw rows against a dataset spec and turn them into feature rows.

Every check raises :class:`DataValidationError` with one line that names the column, the
row (and file line, for files) and the offending value, before anything is written.

A file's fields arrive as text (see :mod:`serverless_ml.datasets.sources`) and are typed
here, per the spec: a ``string`` column keeps each field's characters (trimmed of
surrounding spaces for features and labels; keys exactly), a ``bigint``/``double`` column
is parsed as numbers. A field is missing when its text is one of the column's missing
texts (:meth:`DatasetSpec.missing_for`: only the empty field for text, also ``NA``,
``NaN``, ``null``, ... for numbers, unless the spec lists its own). A Parquet file's
columns arrive typed (numbers, text, timestamps, nulls); the same checks apply, a null
being missing.

A backfill needs every row's label; live rows (``sml ingest``) may come without one
(``label_required=False``: the label column absent, or a row's field missing, stores a
null label), and may take each row's event time from a column of the file.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from serverless_ml.datasets.sources import Source, other_delimiter_hint
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec, FeatureSpec
from serverless_ml.dates import MAX_DATE, MIN_DATE, RANGE_TEXT, latest_time
from serverless_ml.errors import DataValidationError
from serverless_ml.feature_store.base import ORIGIN_COLUMN, to_utc


class RowError(DataValidationError):
    """A bad value of a row. ``rank`` orders the checks: the one-shot validation of a
    whole file reports the failure of its earliest check (at that check's first row), so
    of the errors the parts of a file read in parts (see :class:`KeyLedger`) raise, the
    file's is the one of lowest rank, the earliest part among equals."""

    def __init__(self, head: str, problem: str, rank: int, number: tuple[str, bool, str, str] | None = None) -> None:
        super().__init__(head + problem)
        self.head, self.problem, self.rank, self.number = head, problem, rank, number

    def as_in_whole_file(self, integers: dict[str, bool]) -> RowError:
        """This error as the whole file names it: a number shown is shown as the file's
        column was read, whole numbers (``2``) or floats (``2.0``), which depends on all of
        its values (``integers``: per column, whether every part read whole numbers)."""
        if self.number is None:
            return self
        column, part_integers, shown, other = self.number
        if integers.get(column, True) == part_integers:
            return self
        return RowError(self.head, self.problem.replace(shown, other, 1), self.rank)


class _Locator:
    """Names rows the way the user can find them (a part's rows as the file numbers
    them), and counts the checks made so far (an error's rank)."""

    def __init__(self, source: Source, integers: dict[str, bool] | None = None) -> None:
        self.location = source.location
        self.is_file = source.is_file
        self.offset = source.offset
        self.checks = 0
        self.integers = {} if integers is None else integers
        self._read: tuple[str, bool] = ("", True)
        self._shown: tuple[str, bool, str, str] | None = None

    def row(self, position: int) -> str:
        position += self.offset
        if self.is_file:
            return f"row {position + 1} (line {position + 2})"
        return f"row {position + 1}"

    def first(self, mask: pd.Series) -> int | None:
        """One check: the first row where ``mask`` holds (``None`` when none does)."""
        self.checks += 1
        hits = np.flatnonzero(mask.to_numpy(dtype=bool, na_value=False))
        return int(hits[0]) if len(hits) else None

    def numbers_read(self, column: str, numbers: pd.Series, present: pd.Series) -> None:
        """Record how a column's numbers were read (whole numbers, or floats), for
        :meth:`show_number` and for the parts of a file (see :meth:`RowError.as_in_whole_file`)."""
        integers = pd.api.types.is_signed_integer_dtype(numbers.dtype)
        self._read = (column, integers)
        if present.any():
            self.integers[column] = self.integers.get(column, True) and integers

    def show_number(self, values: pd.Series, numbers: pd.Series, position: int) -> str:
        """A value of the column read last (:meth:`numbers_read`) in a message: the number
        it was read as, else its text."""
        shown = _show_number(values, numbers, position)
        number = numbers.iloc[position]
        if not pd.isna(number):
            column, integers = self._read
            value = float(number)
            if integers:
                self._shown = (column, True, shown, _show(value))
            elif value.is_integer() and abs(value) < _INT64_LIMIT:
                self._shown = (column, False, shown, _show(int(value)))
        return shown

    def fail(self, column: str, position: int, problem: str) -> RowError:
        """``column`` is quoted already (see :attr:`FeatureSpec.display_column`)."""
        shown, self._shown = self._shown, None
        return RowError(f"{self.location}: column {column}, {self.row(position)}: ", problem, self.checks, shown)


class KeyLedger:
    """The keys of the parts of a file validated so far, with the file position where
    each was first seen: a file read in parts has its duplicate keys found across parts.

    Keys are int64 (a ``bigint`` key's value, a text key's 64-bit hash: two texts with the
    same hash, about 3 chances in a million for ten million keys, would be taken for a
    duplicate). They are kept in sorted runs, merged when one is no more than twice the
    next (as in a log-structured merge) up to :attr:`MAX_RUN` keys, so a part is checked
    against a few runs (nine for ten million keys), in O(log) per key. Memory is 16 bytes
    per row, and a merge holds two runs of at most :attr:`MAX_RUN` keys beside it
    (uncapped, the last merge of ten million keys would hold 320 MB beside the runs).
    """

    MAX_RUN = 1 << 21

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []  # (sorted keys, their first positions)

    @staticmethod
    def values(keys: pd.Series, key_type: str) -> np.ndarray:
        """Keys as the ledger holds them: a bigint key's number, a text key's hash."""
        if key_type == "bigint":
            return keys.astype("int64").to_numpy(dtype=np.int64)
        return pd.util.hash_array(keys.astype(str).to_numpy(dtype=object)).view(np.int64)

    def _earliest(self, sorted_keys: np.ndarray) -> np.ndarray:
        """Each key's first position in the runs, ``-1`` where it is not there."""
        earliest = np.full(len(sorted_keys), -1, dtype=np.int64)
        for keys, positions in self._runs:
            at = np.minimum(np.searchsorted(keys, sorted_keys, side="left"), len(keys) - 1)
            hit = keys[at] == sorted_keys
            earlier = np.where(hit, positions[at], -1)
            earliest = np.where((earlier >= 0) & ((earliest < 0) | (earlier < earliest)), earlier, earliest)
        return earliest

    def contains(self, values: np.ndarray) -> np.ndarray:
        """Which ``values`` are in the ledger."""
        order = np.argsort(values, kind="stable")
        found = np.empty(len(values), dtype=bool)
        found[order] = self._earliest(values[order]) >= 0
        return found

    def release_keys(self) -> np.ndarray:
        """Every key recorded, sorted (8 bytes a row), the ledger emptied: what is left to
        do with a file's keys once its parts are all validated."""
        keys = np.concatenate([keys for keys, _ in self._runs]) if self._runs else np.zeros(0, dtype=np.int64)
        self._runs = []
        keys.sort()
        return keys

    def add(self, values: np.ndarray, offset: int) -> tuple[int, int] | None:
        """Record a part's keys (its first row at file position ``offset``).

        Returns:
            The part's first row whose key came before (in an earlier part or earlier in
            this one) and that key's first file position; ``None`` without one.
        """
        n = len(values)
        order = np.argsort(values, kind="stable")
        keys = values[order]
        positions = np.arange(offset, offset + n, dtype=np.int64)[order]
        starts = np.r_[True, keys[1:] != keys[:-1]] if n else np.zeros(0, dtype=bool)
        group_first = positions[starts][np.cumsum(starts) - 1]
        earliest = self._earliest(keys)
        earliest = np.where(earliest >= 0, earliest, np.where(starts, -1, group_first))
        result = None
        repeated = np.flatnonzero(earliest >= 0)
        if len(repeated):
            in_part = order[repeated]
            i = int(np.argmin(in_part))
            result = (int(in_part[i]), int(earliest[repeated][i]))
        self._runs.append((keys, positions))
        while (len(self._runs) >= 2 and len(self._runs[-2][0]) <= 2 * len(self._runs[-1][0])
               and len(self._runs[-2][0]) + len(self._runs[-1][0]) <= self.MAX_RUN):
            newer = self._runs.pop()
            older = self._runs.pop()
            self._runs.append(_merge_runs(older, newer))
        return result


def _merge_runs(older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Two sorted runs as one, the older's entries first among equal keys (so a key's
    first entry keeps its first position)."""
    (a, a_pos), (b, b_pos) = older, newer
    at_a = np.arange(len(a)) + np.searchsorted(b, a, side="left")
    at_b = np.arange(len(b)) + np.searchsorted(a, b, side="right")
    keys = np.empty(len(a) + len(b), dtype=np.int64)
    positions = np.empty(len(a) + len(b), dtype=np.int64)
    keys[at_a], keys[at_b] = a, b
    positions[at_a], positions[at_b] = a_pos, b_pos
    return keys, positions


def describe_row(source: Source, position: int) -> str:
    """A row of ``source`` (0-based ``position``) as messages name it: ``row 3 (line 4)``
    for a file's row, ``row 3`` otherwise."""
    return _Locator(source).row(position)


def check_text_keys(keys: pd.Series, column: str, location: str) -> None:
    """A text key read from a typed file (Parquet) must be text there too: a number has lost
    how the key was written (``015051`` stored as the number 15051 would be another key,
    ``'15051'``), so it is refused rather than turned into text. A CSV's values are text.

    Raises:
        DataValidationError: the column holds numbers or booleans.
    """
    if pd.api.types.is_bool_dtype(keys) or pd.api.types.is_numeric_dtype(keys):
        kind = "true/false values" if pd.api.types.is_bool_dtype(keys) else "numbers"
        raise DataValidationError(
            f"{location}: column {column} holds {kind}, but the key is text: write the keys as text "
            f"(a number loses how the key was written: 015051 would become 15051, another key)"
        )


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


def check_columns(
    raw: pd.DataFrame, spec: DatasetSpec, where: str, *, label_required: bool = True, event_time_column: str | None = None,
) -> None:
    """The raw frame has every column the spec needs (the label's only when
    ``label_required``; ``event_time_column`` too, when given)."""
    needed = [c for c in spec.raw_columns if label_required or c != spec.raw_label]
    if event_time_column is not None and event_time_column not in needed:
        needed.append(event_time_column)
    missing = [c for c in needed if c not in raw.columns]
    if not label_required and spec.raw_label not in raw.columns:
        # An optional label under another spelling would be dropped without a word (found by
        # a user trial: "Risk level" for "Risk Level", 30 rows stored awaiting a label).
        alike = label_lookalike(spec.raw_label, [c for c in raw.columns if c not in spec.raw_columns])
        if alike is not None:
            raise DataValidationError(
                f"{where}: column {alike!r} is not the label column {spec.raw_label!r} (names are matched exactly): "
                f"rename it to {spec.raw_label!r} to store its labels, or leave it out to add the rows without labels")
    if not missing:
        return
    hint = missing_column_hint(missing, list(raw.columns), where)
    raise DataValidationError(
        f"{where}: missing column(s) {', '.join(map(repr, missing))}{hint}; expected {', '.join(needed)}"
    )


def _name_key(name: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKC", name).casefold() if ch.isalnum())


def _edits(a: str, b: str) -> int:
    """The optimal-string-alignment distance of ``a`` and ``b``: letters inserted, removed,
    replaced, or two neighbours swapped."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        row = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                row[j] = min(row[j], previous2[j - 2] + 1)
        previous2, previous = previous, row
    return previous[-1]


def label_lookalike(label: str, columns: list[Any]) -> str | None:
    """The column of ``columns`` that is the label column ``label`` spelled otherwise (case,
    spaces, punctuation, or a close typo: one letter added, dropped, replaced or two
    swapped, two from 8 letters on), or ``None``."""
    names = [str(c) for c in columns]
    keys = [_name_key(name) for name in names]
    target = _name_key(label)
    if target in keys:
        return names[keys.index(target)]
    allowed = 2 if len(target) >= 8 else 1 if len(target) >= 4 else 0
    for name, key in zip(names, keys, strict=True):
        if allowed and abs(len(key) - len(target)) <= allowed and _edits(key, target) <= allowed:
            return name
    folded = [n.casefold() for n in names]
    close = difflib.get_close_matches(label.casefold(), folded, n=1, cutoff=0.85)
    return names[folded.index(close[0])] if close else None


def unread_columns(spec: DatasetSpec, columns: list[Any], event_time_column: str | None = None) -> tuple[str, ...]:
    """The columns of a file of rows that nothing reads: not the spec's (key, features,
    label) nor its event-time column."""
    read = set(spec.raw_columns) | ({event_time_column} if event_time_column else set())
    return tuple(str(c) for c in columns if c not in read)


def missing_column_hint(missing: list[str], columns: list[Any], where: str) -> str:
    """`` (did you mean 'X'?; the file seems to be semicolon-separated ...)`` for missing
    columns of a file with ``columns``, or ``""`` when there is nothing to suggest."""
    hints = []
    for column in missing:
        # The file's name is the one to write in the spec (its `source_column`).
        close = difflib.get_close_matches(column, [str(c) for c in columns], n=1, cutoff=0.75)
        if close:
            hints.append(f"did you mean {close[0]!r}?" if len(missing) == 1
                         else f"for {column!r} did you mean {close[0]!r}?")
    delimiter = other_delimiter_hint(list(columns), where)
    if delimiter is not None:
        hints.append(delimiter)
    return f" ({'; '.join(hints)})" if hints else ""


def _coerce_label(raw: pd.DataFrame, spec: DatasetSpec, loc: _Locator, required: bool = True) -> pd.Series:
    """The labels, typed; with ``required`` off a missing one (or the column absent) is
    null (``<NA>`` in a ``bigint`` label, which then becomes ``Int64``), and a present one
    must still be one of the classes."""
    if not required and spec.raw_label not in raw.columns:
        if spec.label_type == "bigint":
            return pd.Series(pd.NA, index=raw.index, dtype="Int64")
        return pd.Series([None] * len(raw), index=raw.index, dtype=object)
    values = raw[spec.raw_label]
    column = f"'{spec.raw_label}'"
    missing = _missing(values, spec.missing_for(spec.label_type))
    if required and (i := loc.first(missing)) is not None:
        raise loc.fail(column, i, "label is missing")
    present = ~missing
    if spec.label_type == "bigint":
        numeric = _parse_numbers(values, present)
        loc.numbers_read(column, numeric, present)
        bad = present & (numeric.isna() | ~numeric.isin(spec.classes)).astype(bool)
        if (i := loc.first(bad)) is not None:
            raise loc.fail(column, i, f"label {loc.show_number(values, numeric, i)} is not one of {', '.join(map(str, spec.classes))}")
        return numeric.astype("int64") if present.all() else numeric.astype("Int64")
    text = values.where(present, "").astype(str).str.strip()
    bad = present & ~text.isin(spec.classes)
    if (i := loc.first(bad)) is not None:
        raise loc.fail(column, i, f"label {_show(values.iloc[i])} is not one of {', '.join(map(str, spec.classes))}"
                                  f"{_unicode_form_hint(text.iloc[i], spec.classes) or _class_hint(text.iloc[i], spec)}")
    return text.where(present, None).astype(object)


def _class_hint(value: str, spec: DatasetSpec) -> str:
    """When ``value`` is a class's display name (``class_names``), or a class in other
    letter case: a note naming the class to write (found by a user trial: a labels file
    written with the names the site shows was refused without a word why)."""
    names = [str(name) for name in spec.class_names or []]
    classes = [str(cls) for cls in spec.classes]
    for cls, name in zip(classes, names, strict=False):
        if value == name and value != cls:
            return f" ({_show(value)} is the display name of class {_show(cls)} in class_names: files give the classes)"
    cased = [cls for cls in classes if cls.casefold() == value.casefold()]
    if cased:
        return f" (classes are matched exactly, letter case too: {_show(cased[0])})"
    for cls, name in zip(classes, names, strict=False):
        if value.casefold() == name.casefold():
            return (f" ({_show(value)} is in other letter case the display name of class {_show(cls)} in class_names: "
                    "files give the classes)")
    return ""


def _unicode_form_hint(value: str, allowed: Sequence[Any]) -> str:
    """When ``value`` is one of ``allowed`` written in another Unicode form (``é`` as ``e``
    and a combining accent): a note saying so, since both look the same in the message."""
    import unicodedata

    same = [a for a in allowed if unicodedata.normalize("NFC", str(a)) == unicodedata.normalize("NFC", value)]
    if not same:
        return ""
    return (f" ({_show(value)} is {_show(same[0])} written with other Unicode characters, e.g. an accent as a "
            "separate character; values are compared exactly: write it as the spec does, e.g. in Unicode NFC form)")


# An ISO 8601 date, optionally with a time (``T`` or a space) and a UTC offset or ``Z``;
# pandas' ISO reader alone would also take ``now`` and ``today``.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ].*)?")
_FIRST_TIME = pd.Timestamp(MIN_DATE, tz="UTC")
_END_TIME = pd.Timestamp(MAX_DATE, tz="UTC") + pd.Timedelta(days=1)


def _iso_date_problem(value: Any) -> str:
    """Why a value that did not read as an event time is refused."""
    text = str(value).strip()
    try:
        when = dt.datetime.fromisoformat(text) if _ISO_DATE.fullmatch(text) else None
    except ValueError:
        when = None
    if when is not None:
        return f"event time {_show(value)} is outside the supported dates ({RANGE_TEXT})"
    return f"event time {_show(value)} is not an ISO date or date-time (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS[+HH:MM])"


def parse_event_times(values: pd.Series, column: str, loc: _Locator) -> pd.Series:
    """Each row's event time from a column of ISO dates or date-times (a Parquet file's
    timestamps and dates as they are), in UTC; a value without a UTC offset is UTC.

    Raises:
        DataValidationError: a value is missing, not an ISO date or date-time, outside
            the supported dates or finer than a microsecond (which would be cut).
    """
    shown = f"'{column}'"
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        times = values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")
        missing = times.isna()
        unreadable = pd.Series(False, index=values.index)
    else:
        is_text = values.map(lambda v: isinstance(v, str)).astype(bool)
        texts = values.where(is_text, "").astype(str).str.strip()
        missing = (values.isna() | (is_text & (texts == ""))).astype(bool)
        iso = is_text & texts.str.fullmatch(_ISO_DATE.pattern).fillna(False).astype(bool)
        times = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
        if iso.any():
            times[iso] = pd.to_datetime(texts[iso], format="ISO8601", utc=True, errors="coerce")
        moments = ~is_text & ~missing & values.map(lambda v: isinstance(v, (dt.date, pd.Timestamp))).astype(bool)
        if moments.any():
            times[moments] = pd.to_datetime(values[moments], utc=True, errors="coerce")
        unreadable = ~missing & times.isna()
    if (i := loc.first(missing)) is not None:
        raise loc.fail(shown, i, "event time is missing")
    if (i := loc.first(unreadable)) is not None:
        raise loc.fail(shown, i, _iso_date_problem(values.iloc[i]))
    outside = (times < _FIRST_TIME) | (times >= _END_TIME)
    if (i := loc.first(outside)) is not None:
        raise loc.fail(shown, i, f"event time {_show(values.iloc[i])} is outside the supported dates ({RANGE_TEXT})")
    now = dt.datetime.now(dt.timezone.utc)
    future = times > pd.Timestamp(latest_time(now))
    if (i := loc.first(future)) is not None:
        raise loc.fail(shown, i, f"event time {_show(values.iloc[i])} is in the future (a row cannot have happened "
                                 f"after now, {now.isoformat(timespec='seconds')})")
    finer = times.dt.nanosecond != 0
    if (i := loc.first(finer)) is not None:
        raise loc.fail(shown, i, f"event time {_show(values.iloc[i])} is finer than a microsecond, which is what is stored")
    return times.astype("datetime64[us, UTC]")


FLOAT32_MAX = float(np.finfo(np.float32).max)
"""scikit-learn's trees compare ``float32`` features: a larger number becomes infinity and
the forest refuses the whole input (``sml train`` and every later ``sml infer`` failed).
``serving.schema`` holds the same limit for served values (it imports nothing of the project)."""


def model_value_limit(numeric_products: bool) -> float:
    """The largest size a numeric feature may have: :data:`FLOAT32_MAX`, or its square root
    when the pipeline multiplies pairs of numeric features (``numeric_products``)."""
    return math.sqrt(FLOAT32_MAX) if numeric_products else FLOAT32_MAX


def _check_feature(values: pd.Series, feature: FeatureSpec, spec: DatasetSpec, loc: _Locator) -> pd.Series:
    column = feature.display_column
    present = ~_missing(values, spec.missing_for(feature.type, feature))
    if feature.is_numeric:
        numeric = _parse_numbers(values, present)
        loc.numbers_read(column, numeric, present)
        unparsable = present & numeric.isna()
        if (i := loc.first(unparsable)) is not None:
            what = "a finite number" if _is_infinite_text(values.iloc[i]) else "a number"
            raise loc.fail(column, i, f"{_show(values.iloc[i])} is not {what}")
        infinite = present & ~np.isfinite(numeric.fillna(0).to_numpy(dtype=float))
        if (i := loc.first(infinite)) is not None:
            raise loc.fail(column, i, f"{loc.show_number(values, numeric, i)} is not a finite number")
        if feature.type == "bigint":
            fractional = present & (numeric.fillna(0) % 1 != 0)
            if (i := loc.first(fractional)) is not None:
                raise loc.fail(column, i, f"{loc.show_number(values, numeric, i)} is not a whole number")
        low = -math.inf if feature.min is None else feature.min
        high = math.inf if feature.max is None else feature.max
        outside = present & ((numeric < low) | (numeric > high))
        if (i := loc.first(outside)) is not None:
            if feature.min is None:
                allowed = f"is above the allowed maximum {feature.max}"
            elif feature.max is None:
                allowed = f"is below the allowed minimum {feature.min}"
            else:
                allowed = f"is outside the allowed range [{feature.min}, {feature.max}]"
            raise loc.fail(column, i, f"{loc.show_number(values, numeric, i)} {allowed}")
        limit = model_value_limit(spec.numeric_products)
        beyond = present & (numeric.abs() > limit)
        if (i := loc.first(beyond)) is not None:
            products = " (with numeric_products a product of two values must fit too)" if spec.numeric_products else ""
            raise loc.fail(column, i, f"{loc.show_number(values, numeric, i)} is beyond what the model takes: its trees "
                                      f"compare 32-bit floats, so a value is at most {limit:.4g} in size{products}")
        if feature.type == "bigint":
            too_large = present & _too_large_for_int64(numeric)
            if (i := loc.first(too_large)) is not None:
                raise loc.fail(column, i, f"{_show_written(values.iloc[i])} is too large for a 64-bit integer")
        if feature.type == "bigint":
            checked = numeric.astype("Int64") if not present.all() else numeric.astype("int64")
        else:
            checked = numeric.astype("float64")
    else:
        checked = values.where(present, None).map(lambda v: v if v is None else str(v).strip()).astype(object)
        if feature.categories is not None:
            unknown = present & ~checked.isin(feature.categories)
            if (i := loc.first(unknown)) is not None:
                raise loc.fail(
                    column, i, f"{_show(values.iloc[i])} is not one of {', '.join(feature.categories)}"
                               f"{_unicode_form_hint(str(checked.iloc[i]), feature.categories)}"
                )
    if not feature.nullable and (i := loc.first(~present)) is not None:
        raise loc.fail(column, i, "value is missing and the feature is not nullable")
    return checked


def build_feature_rows(
    source: Source,
    spec: DatasetSpec,
    origin: str,
    event_time: str | pd.Timestamp | None,
    *,
    label_required: bool = True,
    event_time_column: str | None = None,
    keys_seen: KeyLedger | None = None,
    integers: dict[str, bool] | None = None,
) -> pd.DataFrame:
    """Validate ``source`` against ``spec`` and return rows in the feature group's layout.

    Args:
        source: Raw rows.
        spec: The dataset spec.
        origin: Provenance recorded on every row (``backfill``, ``synthetic``, ``live``).
        event_time: Event time given to every row; ``None`` with ``event_time_column``.
        label_required: Refuse a row without a label (a backfill). Off (live rows): the
            label column may be absent and a row's label missing; it is stored as null.
        event_time_column: The raw column holding each row's event time (see
            :func:`parse_event_times`), instead of ``event_time``.
        keys_seen: For a part of a file (``source.offset`` its first row): the keys of
            the parts before it, to which this part's are added; a key seen before is a
            duplicate, as within one part. The spec must name a key column.
        integers: For a part of a file: how its numeric columns were read so far (see
            :meth:`RowError.as_in_whole_file`), updated with this part's.

    Raises:
        DataValidationError: the first problem found, naming column, row and value (a
            :class:`RowError` for a value, ranked by its check).
    """
    if (event_time is None) == (event_time_column is None):
        raise ValueError("give either event_time or event_time_column")
    if keys_seen is not None and spec.primary_key_source is None:
        raise ValueError("a file read in parts needs a key column (numbered rows would restart in every part)")
    raw = source.frame
    loc = _Locator(source, integers)
    if raw.empty:
        raise DataValidationError(f"{source.location}: no data rows")
    check_columns(raw, spec, source.location, label_required=label_required, event_time_column=event_time_column)
    label = _coerce_label(raw, spec, loc, required=label_required)
    if spec.primary_key_source is not None:
        keys = raw[spec.primary_key_source]
        key_column = f"'{spec.primary_key_source}'"
        if spec.primary_key_type != "bigint":
            check_text_keys(keys, key_column, source.location)
        missing = _missing(keys, spec.missing_for(spec.primary_key_type))
        if (i := loc.first(missing)) is not None:
            raise loc.fail(key_column, i, "primary key is missing")
        shown = keys
        if spec.primary_key_type == "bigint":
            numeric = _parse_numbers(keys, ~missing)
            loc.numbers_read(key_column, numeric, ~missing)
            bad = numeric.isna() | (numeric.fillna(0) % 1 != 0)
            if (i := loc.first(bad)) is not None:
                raise loc.fail(key_column, i, f"primary key {loc.show_number(keys, numeric, i)} is not a whole number")
            too_large = _too_large_for_int64(numeric)
            if (i := loc.first(too_large)) is not None:
                raise loc.fail(key_column, i, f"primary key {_show_written(keys.iloc[i])} is too large for a 64-bit integer")
            # Compare keys as numbers so that "7" and "7.0" count as the same key.
            keys = shown = numeric
        if keys_seen is None:
            repeat = loc.first(keys.duplicated())
            seen = None if repeat is None else _first(keys == keys.iloc[repeat])
        else:
            loc.checks += 1  # the same check, across the parts of the file
            found = keys_seen.add(KeyLedger.values(keys, spec.primary_key_type), loc.offset)
            repeat, seen = (None, None) if found is None else (found[0], found[1] - loc.offset)
        if repeat is not None and seen is not None:
            shown_key = loc.show_number(keys, shown, repeat) if spec.primary_key_type == "bigint" else _show(shown.iloc[repeat])
            raise loc.fail(key_column, repeat, f"duplicate primary key {shown_key} (first seen in {loc.row(seen)})")
    rows = spec.transform(raw)
    out = pd.DataFrame(index=rows.index)
    key = rows[spec.primary_key]
    if spec.primary_key_type == "bigint":
        # Numbered rows (no key column) or a key column checked above.
        out[spec.primary_key] = key if spec.primary_key_source is None else _parse_numbers(key, key.notna())
        out[spec.primary_key] = out[spec.primary_key].astype("int64")
    else:
        out[spec.primary_key] = key.astype(str)
    if event_time_column is not None:
        out[EVENT_TIME_COLUMN] = parse_event_times(raw[event_time_column], event_time_column, loc)
    else:
        assert event_time is not None
        out[EVENT_TIME_COLUMN] = pd.Series(to_utc(event_time), index=out.index).astype("datetime64[us, UTC]")
    for feature in spec.features:
        out[feature.name] = _check_feature(rows[feature.name], feature, spec, loc)
    out[spec.label] = label
    out[ORIGIN_COLUMN] = origin
    return out[spec.store_columns].reset_index(drop=True)


def iter_feature_rows(
    parts: Iterable[Source],
    spec: DatasetSpec,
    origin: str,
    event_time: str | pd.Timestamp | None,
    *,
    label_required: bool = True,
    event_time_column: str | None = None,
    before_refusing: Callable[[], object] | None = None,
    keys_seen: KeyLedger | None = None,
) -> Iterator[pd.DataFrame]:
    """:func:`build_feature_rows` over a file read in parts (:func:`~serverless_ml.datasets.sources.open_rows`):
    each part's feature rows, and at the end the error the whole file read at once would
    give, if any.

    That error is the one of the earliest check that fails anywhere in the file, at its
    first row (see :class:`RowError`), so after a bad value every remaining part is still
    read and checked (a problem of the file itself, raised by ``parts``, comes first, as
    it does when the file is read whole); no rows are yielded after it. Duplicate keys are
    found across parts (:class:`KeyLedger`).

    Args:
        parts: The file's parts, in order.
        before_refusing: Called before a bad value is raised (a check that comes first
            when the file is read whole, such as the feature group's existence).
        keys_seen: Where the file's keys are recorded (default a ledger of its own).

    Raises:
        DataValidationError: as :func:`build_feature_rows`, with the row and line in the file.
    """
    ledger = keys_seen if keys_seen is not None else KeyLedger()
    integers: dict[str, bool] = {}
    held: DataValidationError | None = None
    held_rank = 0
    for part in parts:
        if held is not None and held_rank < 0:
            continue  # the file lacks a column: every part does; read on for problems of the file
        try:
            rows = build_feature_rows(part, spec, origin, event_time, label_required=label_required,
                                      event_time_column=event_time_column, keys_seen=ledger, integers=integers)
        except RowError as exc:
            if held is None or exc.rank < held_rank:
                held, held_rank = exc, exc.rank
            continue
        except DataValidationError as exc:  # the file's columns (every part has the same)
            if held is None:
                held, held_rank = exc, -1
            continue
        if held is None:
            yield rows
    if held is not None:
        if before_refusing is not None:
            before_refusing()
        raise held.as_in_whole_file(integers) if isinstance(held, RowError) else held
