"""The feature-store interface shared by every backend.

The calls mirror the hopsworks 5.2.1 SDK one to one so that the Hopsworks backend is a
thin mapping: ``get_or_create_feature_group(name, version, primary_key, event_time, ...)``,
``FeatureGroup.insert(df, wait=True)`` (an upsert by primary key), ``FeatureGroup.read()``,
``FeatureGroup.delete(keys)`` (the SDK's ``remove_rows``),
``get_or_create_feature_view(name, version, query, labels)`` and
``FeatureView.get_batch_data(start_time, end_time)``.

What an insert does with a stored row whose values it would change is the caller's
choice and is decided here, for every backend: ``on_change="update"`` (the upsert) or
``on_change="refuse"`` (:class:`RowsChangedError` before anything is written), so a job
that must not rewrite history cannot do so by accident. :meth:`FeatureGroup.compare`
answers the same question without writing, for a job that checks all its writes first.

Filters are built like Hopsworks filters: ``fg.get_feature("origin") == "backfill"``.
"""

from __future__ import annotations

import abc
import contextlib
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa

from serverless_ml.errors import SchemaMismatchError, SmlError

ORIGIN_COLUMN = "origin"
"""Every feature row records where it came from (see :data:`ORIGINS`)."""

BACKFILL_ORIGIN = "backfill"
"""A real row, loaded by ``sml features`` (the only origin drift references and training
use by default)."""
SYNTHETIC_ORIGIN = "synthetic"
"""A generated row (``sml daily``, ``sml simulate``)."""
LIVE_ORIGIN = "live"
"""A row that arrived from production."""
ORIGINS = (BACKFILL_ORIGIN, SYNTHETIC_ORIGIN, LIVE_ORIGIN)

# Hopsworks offline type names are the canonical type names of the interface.
ARROW_TYPES: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "double": pa.float64(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def to_utc(moment: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A timezone-aware UTC timestamp; naive values are taken to be UTC."""
    ts = pd.Timestamp(moment)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def is_missing(value: Any) -> bool:
    """Whether one stored or incoming value is missing: ``None``, ``pd.NA``, ``NaT`` or NaN
    (a text is never missing, whatever it says)."""
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def same_value(a: Any, b: Any) -> bool:
    """Whether two values of a row are the same: both missing, or both present and equal."""
    a_missing, b_missing = is_missing(a), is_missing(b)
    return (a_missing and b_missing) or (not a_missing and not b_missing and a == b)


@dataclass(frozen=True, eq=False)
class Feature:
    """A typed column of a feature group (hsfs ``Feature``: name and type)."""

    name: str
    type: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in ARROW_TYPES:
            raise SchemaMismatchError(
                f"feature '{self.name}': unknown type '{self.type}' "
                f"(expected one of {', '.join(ARROW_TYPES)})"
            )

    # Comparisons build filters, as in hsfs. Dataclass equality is not needed for features.
    def __eq__(self, value: object) -> Filter:  # type: ignore[override]
        return Filter(self.name, "==", value)

    def __ne__(self, value: object) -> Filter:  # type: ignore[override]
        return Filter(self.name, "!=", value)

    def __lt__(self, value: object) -> Filter:
        return Filter(self.name, "<", value)

    def __le__(self, value: object) -> Filter:
        return Filter(self.name, "<=", value)

    def __gt__(self, value: object) -> Filter:
        return Filter(self.name, ">", value)

    def __ge__(self, value: object) -> Filter:
        return Filter(self.name, ">=", value)

    def isin(self, values: Iterable[Any]) -> Filter:
        return Filter(self.name, "isin", tuple(values))

    __hash__ = object.__hash__


COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
"""The comparison operators of a :class:`Filter` (``isin`` aside), by symbol: applied to a
pandas column here and to an hsfs feature by the Hopsworks backend."""

_OPS: dict[str, Callable[[pd.Series, Any], pd.Series]] = {**COMPARISONS, "isin": lambda s, v: s.isin(v)}


@dataclass(frozen=True)
class Filter:
    """A predicate on one feature; combine with ``&`` and ``|``."""

    feature: str
    op: str
    value: Any

    def mask(self, df: pd.DataFrame) -> pd.Series:
        return _OPS[self.op](df[self.feature], self.value).fillna(False).astype(bool)

    def features(self) -> set[str]:
        return {self.feature}

    def __and__(self, other: Filter | Logic) -> Logic:
        return Logic("&", self, other)

    def __or__(self, other: Filter | Logic) -> Logic:
        return Logic("|", self, other)


@dataclass(frozen=True)
class Logic:
    """Two filters joined by ``&`` or ``|``."""

    op: str
    left: Filter | Logic
    right: Filter | Logic

    def mask(self, df: pd.DataFrame) -> pd.Series:
        left, right = self.left.mask(df), self.right.mask(df)
        return left & right if self.op == "&" else left | right

    def features(self) -> set[str]:
        return self.left.features() | self.right.features()

    def __and__(self, other: Filter | Logic) -> Logic:
        return Logic("&", self, other)

    def __or__(self, other: Filter | Logic) -> Logic:
        return Logic("|", self, other)


@dataclass(frozen=True)
class InsertResult:
    """What an upsert changed: rows new to the group, rows whose values changed, and the
    table version after the write (unchanged when nothing was written)."""

    inserted: int
    updated: int
    unchanged: int
    version: int | None

    @property
    def written(self) -> int:
        return self.inserted + self.updated


@dataclass(frozen=True)
class DeleteResult:
    """What a delete removed, and the table version after it (unchanged when nothing was
    deleted)."""

    deleted: int
    version: int | None


ON_CHANGE = ("update", "refuse")
"""What :meth:`FeatureGroup.insert` does with an incoming row whose key is stored with
other values: overwrite it (an upsert), or refuse the whole frame."""


@dataclass(frozen=True)
class RowComparison:
    """How a frame compares with a group's stored rows, by primary key.

    Attributes:
        is_new: Incoming rows whose key is not stored (aligned with the frame's rows).
        is_changed: Incoming rows whose key is stored with other values.
        changed: The stored rows those would change, as stored (every column), in key
            order.
    """

    is_new: np.ndarray
    is_changed: np.ndarray
    changed: pd.DataFrame

    @property
    def inserted(self) -> int:
        return int(self.is_new.sum())

    @property
    def updated(self) -> int:
        return int(self.is_changed.sum())

    @property
    def unchanged(self) -> int:
        return len(self.is_new) - self.inserted - self.updated


class RowsChangedError(SmlError):
    """``insert(..., on_change="refuse")`` met stored rows it would change; nothing was
    written. ``changed`` holds those rows as stored (every column), in key order."""

    def __init__(self, group: str, primary_key: Sequence[str], event_time: str | None, changed: pd.DataFrame) -> None:
        self.group = group
        self.changed = changed
        first = changed.iloc[0]
        key = ", ".join(f"{k} {first[k]}" for k in primary_key)
        when = f" (event time {to_utc(first[event_time]).isoformat()})" if event_time else ""
        super().__init__(
            f"feature group '{group}': {len(changed)} stored row(s) would change, the first {key}{when}; "
            "nothing was written"
        )


def arrow_schema(features: Sequence[Feature]) -> pa.Schema:
    """The Arrow schema of a group's features, in their order."""
    return pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in features])


def infer_features(df: pd.DataFrame) -> list[Feature]:
    """Feature types for a frame whose group was created without a schema."""
    features = []
    for name, dtype in df.dtypes.items():
        if pd.api.types.is_bool_dtype(dtype):
            type_ = "boolean"
        elif pd.api.types.is_integer_dtype(dtype):
            type_ = "bigint"
        elif pd.api.types.is_float_dtype(dtype):
            type_ = "double"
        elif pd.api.types.is_datetime64_any_dtype(dtype):
            type_ = "timestamp"
        else:
            type_ = "string"
        features.append(Feature(str(name), type_))
    return features


def arrow_column(series: pd.Series, feature: Feature, failure: str) -> pa.Array:
    """``series`` as an Arrow array of ``feature``'s type (timestamps in UTC).

    Raises:
        SchemaMismatchError: a value does not fit the type; the message is ``failure``
            followed by Arrow's reason.
    """
    if feature.type == "timestamp":
        series = pd.to_datetime(series, utc=True)
    try:
        return pa.array(series, type=ARROW_TYPES[feature.type], from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SchemaMismatchError(f"{failure}: {str(exc).splitlines()[0]}") from None


def _kind_ok(series: pd.Series, type_: str) -> bool:
    """Whether a column's dtype can be stored losslessly as ``type_``."""
    dtype = series.dtype
    is_bool = pd.api.types.is_bool_dtype(dtype)
    if type_ in ("bigint", "double"):
        if is_bool:
            return False
        if pd.api.types.is_numeric_dtype(dtype):
            return True
        # An object column is numeric only if it is entirely missing.
        return bool(series.isna().all())
    if type_ == "string":
        return not (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype))
    if type_ == "boolean":
        return is_bool or bool(series.isna().all())
    if type_ == "timestamp":
        return pd.api.types.is_datetime64_any_dtype(dtype)
    return False


def conform(
    df: pd.DataFrame, features: Sequence[Feature], primary_key: Sequence[str], group: str
) -> pa.Table:
    """Check ``df`` against the group's schema and convert it to an Arrow table.

    Every backend calls this before it writes anything, so a bad frame is refused the
    same way everywhere and nothing is sent.

    Raises:
        SchemaMismatchError: missing, extra or mistyped columns, or null or duplicated
            primary keys. The message names the group and the column or key at fault.
    """
    expected = [f.name for f in features]
    missing = [c for c in expected if c not in df.columns]
    extra = [str(c) for c in df.columns if c not in set(expected)]
    if missing:
        raise SchemaMismatchError(f"feature group '{group}': missing column(s) {', '.join(map(repr, missing))}")
    if extra:
        raise SchemaMismatchError(f"feature group '{group}': unexpected column(s) {', '.join(map(repr, extra))}")
    if df.columns.duplicated().any():
        raise SchemaMismatchError(f"feature group '{group}': duplicated column names")
    arrays = []
    for feature in features:
        series = df[feature.name]
        if not _kind_ok(series, feature.type):
            raise SchemaMismatchError(
                f"feature group '{group}': column '{feature.name}' has type {series.dtype}, "
                f"expected {feature.type}"
            )
        arrays.append(arrow_column(
            series, feature, f"feature group '{group}': column '{feature.name}' cannot be stored as {feature.type}"
        ))
    table = pa.Table.from_arrays(arrays, schema=arrow_schema(features))
    keys = df[list(primary_key)]
    null_keys = keys.isna().any(axis=1)
    if null_keys.any():
        row = int(null_keys.to_numpy().nonzero()[0][0])
        raise SchemaMismatchError(f"feature group '{group}': primary key is missing in row {row + 1}")
    duplicated = keys.duplicated()
    if duplicated.any():
        row = int(duplicated.to_numpy().nonzero()[0][0])
        value = ", ".join(str(v) for v in keys.iloc[row].tolist())
        raise SchemaMismatchError(
            f"feature group '{group}': duplicate primary key {value} (row {row + 1})"
        )
    return table


def row_hashes(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """A 64-bit hash of each row's ``columns``: equal values hash equal, ``-0.0`` and
    ``0.0`` too (they are one number, as :func:`same_value` says; their bits differ)."""
    frame = df[list(columns)]
    floats = [c for c in frame.columns if pd.api.types.is_float_dtype(frame[c])]
    if floats:
        frame = frame.copy(deep=False)
        for column in floats:
            frame[column] = frame[column] + 0.0  # -0.0 + 0.0 is 0.0; a missing value stays missing
    return pd.util.hash_pandas_object(frame, index=False)


def _aligned_dtypes(incoming: pd.DataFrame, existing: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two frames with each of ``columns`` in one dtype, so equal values hash equal.

    Arrow gives one column type two pandas forms: a ``bigint`` column is ``int64`` without
    a missing value and ``float64`` with one, a boolean ``bool`` or ``object``. Ten new
    rows without a gap compared with stored rows that have one would otherwise all look
    changed. Such a column is compared as nullable integers (``Int64``: exact, a float
    form holds whole numbers only), else as nullable floats.
    """
    incoming, existing = incoming.copy(deep=False), existing.copy(deep=False)
    for column in columns:
        if incoming[column].dtype == existing[column].dtype:
            continue
        for target in ("Int64", "Float64"):
            try:
                incoming[column], existing[column] = incoming[column].astype(target), existing[column].astype(target)
                break
            except (TypeError, ValueError):
                continue
    return incoming, existing


def classify_rows(
    incoming: pd.DataFrame, existing: pd.DataFrame, primary_key: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Which incoming rows are new (key not stored) and which change a stored row.

    Both frames must have the same columns, read from Arrow tables of the same schema (a
    column's pandas dtype may differ with its missing values: :func:`_aligned_dtypes`);
    missing values compare equal to themselves.

    Returns:
        ``(is_new, is_changed)``: boolean arrays aligned with ``incoming``'s rows.
    """
    keys = list(primary_key)
    values = [c for c in incoming.columns if c not in keys]
    incoming, existing = _aligned_dtypes(incoming, existing, values)
    incoming_keys = incoming[keys].assign(_hash=row_hashes(incoming, values).to_numpy())
    existing_keys = existing[keys].assign(_old=row_hashes(existing, values).to_numpy())
    joined = incoming_keys.merge(existing_keys, on=keys, how="left", indicator=True)
    is_new = (joined["_merge"] == "left_only").to_numpy()
    is_changed = (~is_new) & (joined["_hash"] != joined["_old"]).to_numpy()
    return is_new, is_changed


@dataclass(frozen=True)
class Capabilities:
    """What a backend guarantees beyond the common contract, stated so that tests and
    callers check it instead of assuming it.

    Attributes:
        time_travel: ``read(version=N)`` returns an older version of the data. Without
            it only the latest version can be read (an older one raises SmlError).
        sequential_versions: data versions count writes from 0 (0, 1, 2, ...). Without
            it versions are only increasing numbers (Hopsworks commit times, in ms).
        atomic_upsert_counts: the inserted/updated/unchanged counts of an insert are
            exact even when other processes write the same group at the same time.
    """

    time_travel: bool = True
    sequential_versions: bool = True
    atomic_upsert_counts: bool = True


class FeatureGroup(abc.ABC):
    """A versioned table of features keyed by a primary key, with an event-time column.

    ``features`` is empty when the group was asked for without a schema and has not been
    written yet: the first insert infers it from its frame.
    """

    def __init__(
        self,
        store: FeatureStore,
        name: str,
        version: int,
        primary_key: Sequence[str],
        event_time: str | None,
        description: str,
        features: Sequence[Feature] | None,
    ) -> None:
        self._store = store
        self.name = name
        self.version = version
        self.primary_key = list(primary_key)
        self.event_time = event_time
        self.description = description
        self.features = list(features or [])

    @property
    def label(self) -> str:
        """``<name>_<version>``, as messages name the group."""
        return f"{self.name}_{self.version}"

    def insert(self, df: pd.DataFrame, wait: bool = True, on_change: str = "update") -> InsertResult:
        """Upsert ``df`` by primary key. Rows identical to stored ones are not rewritten.

        Args:
            df: Rows with exactly the group's columns.
            wait: Return once the write is done (the SDK's ``wait``).
            on_change: ``"update"`` overwrites a stored row whose values differ (the
                upsert); ``"refuse"`` raises :class:`RowsChangedError` instead, before
                anything is written (new rows and identical rows are fine).

        Raises:
            SchemaMismatchError: a column is missing, extra or of the wrong type, or a
                primary key is null or duplicated; nothing is written.
            RowsChangedError: ``on_change="refuse"`` and a stored row would change;
                nothing is written.
        """
        if on_change not in ON_CHANGE:
            raise ValueError(f"on_change must be one of {ON_CHANGE}, got {on_change!r}")
        table = self._conform(df)
        with self._writing():
            if not self.exists():
                self._create(table, wait)
                return InsertResult(table.num_rows, 0, 0, self.data_version())
            comparison = self._compare(table)
            if on_change == "refuse" and comparison.updated:
                raise RowsChangedError(self.label, self.primary_key, self.event_time, comparison.changed)
            if comparison.inserted + comparison.updated == 0:
                return InsertResult(0, 0, comparison.unchanged, self.data_version())
            self._write_changes(table, comparison, wait)
            return InsertResult(comparison.inserted, comparison.updated, comparison.unchanged, self.data_version())

    def read_batches(
        self, columns: Sequence[str] | None = None, where: Filter | Logic | None = None, version: int | None = None,
        batch_rows: int = 100_000,
    ) -> Iterator[pa.RecordBatch]:
        """The rows satisfying ``where``, with ``columns`` (default all), as Arrow record
        batches of the group's types, at most ``batch_rows`` rows each, in no particular
        order: a job that must not hold the whole group reads it this way. This default
        slices :meth:`read`; a backend that can scan its storage streams it."""
        df = self.read(version=version)
        if where is not None:
            df = df[where.mask(df)]
        names = list(columns) if columns is not None else [f.name for f in self.features]
        schema = arrow_schema([self.get_feature(name) for name in names])
        yield from pa.Table.from_pandas(df[names], schema=schema, preserve_index=False).to_batches(max_chunksize=batch_rows)

    def append_new(self, batches: pa.RecordBatchReader, wait: bool = True) -> InsertResult:
        """Add rows whose keys are not stored, read from ``batches`` (the group's columns
        and types), in one commit: for a job whose rows are new by construction (it
        selected them by key under its own lock), so they are not compared with the stored
        rows. This default inserts them as one frame (compared as usual); a backend that
        can append a stream does so without holding them."""
        return self.insert(batches.read_all().to_pandas(), wait=wait)

    def stage_new(self) -> StagedRows:
        """A writer of rows whose keys are not stored (as :meth:`append_new`), for rows that
        arrive chunk by chunk and must land together later: they are written as they come,
        invisible until :meth:`StagedRows.commit` adds them in one commit; discarded when
        the writer is closed without it. This default holds them in memory until then; a
        backend that can write data files before committing them does so."""
        return StagedRows(self)

    def compare(self, df: pd.DataFrame) -> RowComparison:
        """How ``df`` compares with the stored rows, without writing anything: what
        :meth:`insert` would insert, update or leave, and the stored rows it would change.

        Raises:
            SchemaMismatchError: as :meth:`insert`.
        """
        return self._compare(self._conform(df))

    def delete(self, keys: pd.DataFrame, wait: bool = True) -> DeleteResult:
        """Delete the stored rows with these primary keys (the SDK's ``remove_rows``).

        Columns of ``keys`` other than the primary key are ignored, keys that are not
        stored are skipped, and deleting nothing writes nothing.

        Raises:
            SchemaMismatchError: a primary-key column is missing, null or of the wrong
                type; nothing is deleted.
        """
        wanted = self._conform_keys(keys)
        if wanted.empty or not self.exists():  # (groups are never dropped: no lock needed)
            return DeleteResult(0, self.data_version())
        with self._writing():
            stored = self._stored_rows(wanted)
            doomed = stored.merge(wanted, on=self.primary_key, how="inner")
            if doomed.empty:
                return DeleteResult(0, self.data_version())
            self._delete_rows(doomed.reset_index(drop=True), wait)
            return DeleteResult(len(doomed), self.data_version())

    def _conform(self, df: pd.DataFrame) -> pa.Table:
        """``df`` checked against the schema (inferred from it for a group created
        without one) as an Arrow table."""
        if not self.features:
            self.features = infer_features(df)
        self._check_feature_names()
        return conform(df, self.features, self.primary_key, self.label)

    def _conform_keys(self, keys: pd.DataFrame) -> pd.DataFrame:
        """The distinct primary keys of ``keys``, typed as stored."""
        missing = [k for k in self.primary_key if k not in keys.columns]
        if missing:
            raise SchemaMismatchError(f"feature group '{self.label}': keys lack column(s) {', '.join(map(repr, missing))}")
        by_name = {f.name: f for f in self.features}
        columns = {}
        for name in self.primary_key:
            if keys[name].isna().any():
                raise SchemaMismatchError(f"feature group '{self.label}': a key to delete has no '{name}'")
            feature = by_name.get(name)
            if feature is None:
                columns[name] = keys[name].to_numpy()
                continue
            failure = f"feature group '{self.label}': keys to delete in column '{name}' are not {feature.type}"
            columns[name] = arrow_column(keys[name].reset_index(drop=True), feature, failure).to_pandas()
        return pd.DataFrame(columns).drop_duplicates().reset_index(drop=True)

    def _compare(self, table: pa.Table) -> RowComparison:
        if not self.exists():
            n = table.num_rows
            return RowComparison(np.ones(n, dtype=bool), np.zeros(n, dtype=bool), pd.DataFrame(columns=table.schema.names))
        incoming = table.to_pandas()
        stored = self._stored_rows(incoming)
        self._check_stored_rows(stored)
        is_new, is_changed = classify_rows(incoming, stored, self.primary_key)
        changed_keys = incoming.loc[is_changed, self.primary_key]
        changed = stored.merge(changed_keys, on=self.primary_key, how="inner")
        changed = changed.sort_values(self.primary_key, kind="stable").reset_index(drop=True)
        return RowComparison(is_new, is_changed, changed)

    # What a backend provides to the methods above.

    def _check_feature_names(self) -> None:  # noqa: B027 - optional hook: no-op unless a backend has limits
        """Refuse feature names the backend would change (checked before any write)."""

    def _check_stored_rows(self, stored: pd.DataFrame) -> None:  # noqa: B027 - optional hook, as above
        """Refuse stored rows that cannot be compared by key (checked before any write)."""

    @abc.abstractmethod
    def _writing(self) -> contextlib.AbstractContextManager[None]:
        """Held while a write compares and writes: the backend's writer lock, if any."""

    @abc.abstractmethod
    def _stored_rows(self, incoming: pd.DataFrame) -> pd.DataFrame:
        """The stored rows that may share a key with ``incoming`` (more is fine), with
        every column, comparable with ``table.to_pandas()`` of a conformed frame."""

    @abc.abstractmethod
    def _create(self, table: pa.Table, wait: bool) -> None:
        """Create the group with its first rows."""

    @abc.abstractmethod
    def _write_changes(self, table: pa.Table, comparison: RowComparison, wait: bool) -> None:
        """Write the new and changed rows of ``table`` (one commit)."""

    @abc.abstractmethod
    def _delete_rows(self, stored: pd.DataFrame, wait: bool) -> None:
        """Delete these stored rows (as :meth:`_stored_rows` returned them; one commit)."""

    @abc.abstractmethod
    def read(self, version: int | None = None) -> pd.DataFrame:
        """The whole group, at its latest version or at ``version`` (time travel)."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the group has been created (by a first insert)."""

    @abc.abstractmethod
    def data_version(self) -> int | None:
        """The version of the group's data now (``None`` before the first insert)."""

    def get_feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"feature group '{self.name}' has no feature '{name}'")

    def __getitem__(self, name: str) -> Feature:
        return self.get_feature(name)

    def select_all(self) -> Query:
        return Query(self, [f.name for f in self.features])

    def select(self, features: Sequence[str]) -> Query:
        for name in features:
            self.get_feature(name)
        return Query(self, list(features))

    def select_except(self, features: Sequence[str]) -> Query:
        return Query(self, [f.name for f in self.features if f.name not in set(features)])


class StagedRows:
    """Rows staged for one commit to a group (:meth:`FeatureGroup.stage_new`); a context
    manager that discards what was not committed. This default holds the batches."""

    def __init__(self, group: FeatureGroup) -> None:
        self.group = group
        self.schema = arrow_schema(group.features)
        self._tables: list[pa.Table] = []

    def write(self, table: pa.Table) -> None:
        """Stage ``table`` (the group's columns and types)."""
        self._tables.append(table)

    def commit(self, wait: bool = True) -> InsertResult:
        """Add every staged row in one commit."""
        batches = [batch for table in self._tables for batch in table.to_batches()]
        self._tables = []
        return self.group.append_new(pa.RecordBatchReader.from_batches(self.schema, batches), wait=wait)

    def discard(self) -> None:
        """Drop what was staged and not committed."""
        self._tables = []

    def __enter__(self) -> StagedRows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


@dataclass
class Query:
    """A selection of features from one feature group, optionally filtered."""

    feature_group: FeatureGroup
    features: list[str]
    filters: Filter | Logic | None = None

    def filter(self, condition: Filter | Logic) -> Query:
        combined = condition if self.filters is None else self.filters & condition
        return Query(self.feature_group, list(self.features), combined)

    def read(self, version: int | None = None) -> pd.DataFrame:
        df = self.feature_group.read(version=version)
        if self.filters is not None:
            df = df[self.filters.mask(df)]
        return df[self.features].reset_index(drop=True)


@dataclass
class FeatureView:
    """Features and labels selected from a feature group, handed out for training and
    batch scoring."""

    name: str
    version: int
    query: Query
    labels: list[str] = field(default_factory=list)

    def _frame(
        self,
        start_time: datetime | None,
        end_time: datetime | None,
        extra_filter: Filter | Logic | None,
        keep: Sequence[str],
        version: int | None = None,
    ) -> pd.DataFrame:
        fg = self.query.feature_group
        df = fg.read(version=version)
        condition = self.query.filters
        if extra_filter is not None:
            condition = extra_filter if condition is None else condition & extra_filter
        if condition is not None:
            df = df[condition.mask(df)]
        if fg.event_time and start_time is not None:
            df = df[df[fg.event_time] >= to_utc(start_time)]
        if fg.event_time and end_time is not None:
            df = df[df[fg.event_time] < to_utc(end_time)]
        return self._select(df, keep)

    def _select(self, df: pd.DataFrame, keep: Sequence[str]) -> pd.DataFrame:
        """The requested key/time columns first, then the query's features."""
        columns = list(dict.fromkeys([*keep, *self.query.features]))
        return df[columns].reset_index(drop=True)

    def _extras(self, primary_key: bool, event_time: bool) -> list[str]:
        fg = self.query.feature_group
        extras: list[str] = []
        if primary_key:
            extras += fg.primary_key
        if event_time and fg.event_time:
            extras.append(fg.event_time)
        return extras

    def training_data(
        self,
        extra_filter: Filter | Logic | None = None,
        primary_key: bool = False,
        event_time: bool = False,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        version: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Features and labels, as ``(X, y)`` like hsfs ``FeatureView.training_data``.

        ``version`` pins the feature group's data version (the local store's time travel).
        """
        df = self._frame(start_time, end_time, extra_filter, self._extras(primary_key, event_time), version)
        x = df.drop(columns=[c for c in self.labels if c in df.columns])
        return x, df[self.labels]

    def get_batch_data(
        self,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        primary_key: bool = False,
        event_time: bool = False,
        extra_filter: Filter | Logic | None = None,
    ) -> pd.DataFrame:
        """Features (no labels) of rows whose event time is in ``[start_time, end_time)``."""
        df = self._frame(start_time, end_time, extra_filter, self._extras(primary_key, event_time))
        return df.drop(columns=[c for c in self.labels if c in df.columns])


def schema_differences(stored: Sequence[tuple[str, str]], wanted: Sequence[tuple[str, str]]) -> str:
    """The columns in which two schemas (``(name, type)`` pairs) differ, in one line:
    ``added w (double); removed z (double); type changed x: double -> string`` (or the
    order, when only that differs)."""
    old, new = dict(stored), dict(wanted)
    parts = []
    added = [f"{n} ({t})" for n, t in new.items() if n not in old]
    removed = [f"{n} ({t})" for n, t in old.items() if n not in new]
    changed = [f"{n}: {old[n]} -> {t}" for n, t in new.items() if n in old and old[n] != t]
    for what, names in (("added", added), ("removed", removed), ("type changed", changed)):
        if names:
            parts.append(f"{what} {', '.join(names)}")
    return "; ".join(parts) or f"column order {[n for n, _ in stored]} stored, {[n for n, _ in wanted]} asked for"


class SchemaChangedError(SchemaMismatchError):
    """A stored feature group has another key, event time or columns than asked for: its
    rows cannot take the new ones, a new version of the group is needed."""

    def __init__(self, name: str, version: int, differences: str) -> None:
        self.group, self.version, self.differences = name, version, differences
        super().__init__(
            f"feature group '{name}' version {version} is stored with another schema ({differences}); "
            f"a new version ({version + 1}) is needed"
        )


class ViewChangedError(SchemaMismatchError):
    """A stored feature view version selects other features, filters or labels than asked
    for (every backend words it the same): a new version of the view is needed."""

    def __init__(self, name: str, version: int, differ: Sequence[str]) -> None:
        self.view, self.version, self.differ = name, version, list(differ)
        super().__init__(
            f"feature view '{name}' version {version} is stored with other {', '.join(differ)} "
            f"than asked for; a new version ({version + 1}) is needed"
        )


class FeatureStore(abc.ABC):
    """Creates and finds feature groups and feature views.

    The checks every backend makes are here; a backend opens its groups and views
    (:meth:`_open_group`, :meth:`_open_view`).
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    keeps_schema_order: ClassVar[bool] = True
    """Whether a stored group lists its primary key and features in the order they were
    declared. A backend that does not (Hopsworks) compares them as sets, and hands out a
    stored group in the order the caller declares."""

    def get_or_create_feature_group(
        self,
        name: str,
        version: int,
        primary_key: Sequence[str],
        event_time: str | None = None,
        description: str = "",
        features: Sequence[Feature] | None = None,
    ) -> FeatureGroup:
        """The group ``name``/``version``; created (empty) on its first insert.

        Raises:
            SchemaChangedError: the group exists with another primary key, event time or
                schema (``features``, when given); a new version is needed.
        """
        found, stored = self._open_group(name, version, primary_key, event_time, description, features)
        if not stored:
            return found
        same_key = (
            found.primary_key == list(primary_key) if self.keeps_schema_order
            else set(found.primary_key) == set(primary_key)
        )
        if not same_key or found.event_time != event_time:
            differences = []
            if not same_key:
                differences.append(f"primary key {found.primary_key} stored, {list(primary_key)} asked for")
            if found.event_time != event_time:
                differences.append(f"event time {found.event_time!r} stored, {event_time!r} asked for")
            raise SchemaChangedError(name, version, "; ".join(differences))
        if features is not None:
            stored_schema = [(f.name, f.type) for f in found.features]
            wanted = [(f.name, f.type) for f in features]
            same_schema = stored_schema == wanted if self.keeps_schema_order else set(stored_schema) == set(wanted)
            if not same_schema:
                raise SchemaChangedError(name, version, schema_differences(stored_schema, wanted))
            if not self.keeps_schema_order:
                found.features, found.primary_key = list(features), list(primary_key)
        return found

    @abc.abstractmethod
    def _open_group(
        self, name: str, version: int, primary_key: Sequence[str], event_time: str | None, description: str,
        features: Sequence[Feature] | None,
    ) -> tuple[FeatureGroup, bool]:
        """The stored group ``name``/``version`` and ``True``; or, when there is none, a
        new group as asked for and ``False`` (it is created by its first insert)."""

    @abc.abstractmethod
    def get_feature_group(self, name: str, version: int) -> FeatureGroup:
        """An existing group. Raises NotFoundError when it was never written."""

    def get_or_create_feature_view(
        self,
        name: str,
        version: int,
        query: Query,
        labels: Sequence[str] = (),
        description: str = "",
    ) -> FeatureView:
        """A feature view over ``query`` with ``labels`` as targets.

        Raises:
            KeyError: a label is not a feature of the query's group.
            SchemaMismatchError: the view exists with another query or labels.
        """
        self._check_view_query(name, query)
        for label in labels:
            query.feature_group.get_feature(label)
        return self._open_view(name, version, query, list(labels), description)

    def _check_view_query(self, name: str, query: Query) -> None:  # noqa: B027 - optional hook: no-op unless a backend has limits
        """Refuse a query the backend cannot make a view of (checked first)."""

    @abc.abstractmethod
    def _open_view(self, name: str, version: int, query: Query, labels: list[str], description: str) -> FeatureView:
        """The view ``name``/``version`` (created when new); its labels are checked."""
