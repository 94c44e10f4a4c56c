"""Live rows: ``sml ingest`` adds a file of real new rows to the dataset's feature group.

Reads: a CSV or Parquet file of raw rows (path or http(s) URL), the group's stored rows of
the same keys. Writes: the new rows to the feature group ``<dataset>`` with
``origin=live`` (one commit), or nothing; a temporary Parquet copy of the validated rows
(deleted at the end).

Every row is validated as a backfill's is (:func:`build_feature_rows`), except that its
label may be unknown yet: the label column absent or a row's label missing stores a null
label, for ``sml labels`` to attach later. Each row's event time is the spec's
``event_time_column`` of the file when the spec declares one, else ``--date`` (midnight
UTC), else the time of the ingest.

Ingest is idempotent by key. A row whose key is stored with the same feature values is
left as stored (its event time, label and origin too: a label is attached by ``sml
labels``, not here), so the same file twice writes nothing the second time. A row whose
key is stored with other feature values is refused, and nothing is written: the features
of a row that may have been scored are history (its prediction, drift statistics and
monitoring run were computed from them). The whole file is validated and compared before
anything is written.

On the local store the file is read and written in parts of :data:`CHUNK_ROWS` rows
(:func:`ingest_file`), so memory does not grow with it: the parts are validated as one file
(the same first error, with the file's row and line, as when it is read whole) and spooled
to a temporary Parquet file; only the stored rows of keys the file shares are read and
compared; the new rows are streamed from the spool into one Delta commit under the
group's lock. Measured by ``python -m bench ingest``. The Hopsworks backend reads the file
whole (:func:`ingest_rows`): its SDK reads and writes whole frames.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from serverless_ml.datasets.groups import existing_feature_group
from serverless_ml.datasets.sources import CHUNK_ROWS, Source, load_rows, open_rows
from serverless_ml.datasets.spec import EVENT_TIME_COLUMN, DatasetSpec
from serverless_ml.datasets.validation import KeyLedger, build_feature_rows, describe_row, iter_feature_rows, unread_columns
from serverless_ml.dates import check_date, check_not_future
from serverless_ml.errors import DataValidationError, SmlError
from serverless_ml.faults import crash_point
from serverless_ml.feature_store.base import (
    LIVE_ORIGIN,
    FeatureGroup,
    FeatureStore,
    RowsChangedError,
    arrow_schema,
    classify_rows,
    conform,
    is_missing,
    row_hashes,
    same_value,
)
from serverless_ml.feature_store.local import LocalFeatureGroup, LocalFeatureStore

INSERT_ATTEMPTS = 3
"""Compare-and-insert rounds before giving up when other writers keep adding the same
keys meanwhile (each round re-reads what they wrote)."""


class StoredFeaturesChanged(DataValidationError):
    """A row of the file has a stored key with other feature values; nothing was written."""


@dataclass(frozen=True)
class IngestReport:
    """What ``sml ingest`` wrote.

    Attributes:
        group: The feature group.
        rows: Rows in the file.
        inserted: Rows added (new keys).
        unchanged: Rows whose key was stored with the same features (left as stored).
        labelled: Inserted rows that came with a label (the rest await one).
        stored_labels: Unchanged rows of the file that carried a label (not applied).
        data_version: The table version after the ingest.
        retimed: Unchanged rows whose event time, given by the file's column or
            ``--date``, differs from the stored one (kept as stored).
    """

    group: str
    rows: int
    inserted: int
    unchanged: int
    labelled: int
    stored_labels: int
    data_version: int | None
    retimed: int = 0
    ignored: tuple[str, ...] = ()
    """The file's columns that nothing reads (not the spec's)."""

    @property
    def unlabelled(self) -> int:
        return self.inserted - self.labelled

    def summary(self) -> str:
        line = (
            f"{self.group}: {self.rows} rows in, {self.inserted} inserted ({self.labelled} labelled, "
            f"{self.unlabelled} awaiting a label), {self.unchanged} unchanged; "
        )
        line += f"table version {self.data_version}" if self.inserted else f"nothing written, table version {self.data_version}"
        if self.stored_labels:
            line += (
                f"\n  {self.stored_labels} of the unchanged rows carried a label: ingest leaves stored rows as they are; "
                "attach labels with `sml labels`"
            )
        if self.retimed:
            line += (
                f"\n  {self.retimed} of the unchanged rows have another event time than the stored one: ingest leaves "
                "stored rows as they are (a row's event time, like its features, is history)"
            )
        if self.ignored:
            shown = ", ".join(repr(c) for c in self.ignored[:10]) + (", ..." if len(self.ignored) > 10 else "")
            line += f"\n  note: column(s) {shown} not read: not in the spec (key, features, label, event time)"
        return line


def check_event_time_options(spec: DatasetSpec, day: dt.date | None) -> None:
    """``--date`` is for files without event times: a spec that names the file's column
    of event times takes them from there.

    Raises:
        SmlError: both are given, or ``day`` is outside the supported dates or in the future.
    """
    if day is None:
        return
    if spec.event_time_column is not None:
        raise SmlError(
            f"--date {day.isoformat()}: dataset '{spec.name}' takes each row's event time from its column "
            f"'{spec.event_time_column}' (the spec's event_time_column); leave --date out"
        )
    check_date(day, "--date")
    check_not_future(day, "--date", "the rows' event time")


def keyed_spec(spec: DatasetSpec) -> DatasetSpec:
    """The spec that live rows are read with: a dataset whose backfill numbers its rows
    (no key column) takes live rows' keys from a column named like the stored key
    (``iris_id``, ``row_id``): numbering a file's rows 1..N again would give every file
    the keys of the first one."""
    if spec.primary_key_source is not None:
        return spec
    key, transform = spec.primary_key, spec.transform

    def with_key_column(raw: pd.DataFrame) -> pd.DataFrame:
        return transform(raw).assign(**{key: raw[key]})

    return dataclasses.replace(
        spec, primary_key_source=key, transform=with_key_column, raw_columns=(key, *spec.raw_columns),
    )


def read_live_rows(
    spec: DatasetSpec, source: Source, day: dt.date | None = None, now: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The file's rows validated and in the feature group's layout, ``origin=live``: the
    label optional, the event time from the spec's column, else ``day``, else ``now``.

    Raises:
        SmlError: ``day`` with a spec that names an event-time column, or a bad ``day``.
        DataValidationError: the first bad value (column, row, value).
    """
    check_event_time_options(spec, day)
    if spec.event_time_column is not None:
        event_time = None
    elif day is not None:
        event_time = pd.Timestamp(day, tz="UTC")
    else:
        event_time = now if now is not None else pd.Timestamp.now(tz="UTC")
    return build_feature_rows(
        source, keyed_spec(spec), LIVE_ORIGIN, event_time, label_required=False, event_time_column=spec.event_time_column,
    )


@dataclass(frozen=True)
class IngestPlan:
    """How the file's rows compare with the stored ones, by key and features.

    Attributes:
        is_new: Rows whose key is not stored (aligned with the file's rows).
        stored_labels: Rows whose key is stored (same features) that carry a label.
        retimed: Rows whose key is stored (same features) with another event time.
    """

    is_new: np.ndarray
    stored_labels: int
    retimed: int = 0


def _value_text(value: Any) -> str:
    if is_missing(value):
        return "missing"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def plan_ingest(group: FeatureGroup, rows: pd.DataFrame, spec: DatasetSpec, source: Source) -> IngestPlan:
    """Compare the rows with the stored ones (nothing is written).

    Raises:
        StoredFeaturesChanged: a row's key is stored with other feature values; the
            message names the row, the key and the first feature that differs, stored and
            new value.
    """
    comparison = group.compare(rows)
    key = spec.primary_key
    labels = rows[spec.label]
    stored_labels = int((~comparison.is_new & labels.notna().to_numpy()).sum())
    if not comparison.is_changed.any():
        return IngestPlan(comparison.is_new, stored_labels)
    # The rows whose stored version differs in some column: in features, or only in event
    # time, label or origin (which ingest leaves as stored).
    incoming = conform(rows, group.features, group.primary_key, group.label).to_pandas()[comparison.is_changed]
    columns = [key, *spec.feature_names]
    _, differs = classify_rows(incoming[columns].reset_index(drop=True), comparison.changed[columns], [key])
    if differs.any():
        position = int(np.flatnonzero(comparison.is_changed)[np.flatnonzero(differs)[0]])
        new = incoming.loc[position]
        stored = comparison.changed.loc[comparison.changed[key] == new[key]].iloc[0]
        feature = next(f for f in spec.features if not same_value(stored[f.name], new[f.name]))
        raise StoredFeaturesChanged(
            f"{source.location}: {describe_row(source, position)}: {key} {_value_text(new[key])} is stored with "
            f"{feature.display_column} {_value_text(stored[feature.name])}, this file has {_value_text(new[feature.name])}; "
            "the features of a stored row are history (a scored row's prediction was made from them), "
            f"so ingest changes none: nothing written ({int(differs.sum())} row(s) of the file differ so)"
        )
    stored_times = comparison.changed.set_index(key)[EVENT_TIME_COLUMN]
    retimed = int((pd.to_datetime(incoming[EVENT_TIME_COLUMN], utc=True).to_numpy()
                   != pd.to_datetime(stored_times.reindex(incoming[key].to_numpy()), utc=True).to_numpy()).sum())
    return IngestPlan(comparison.is_new, stored_labels, retimed)


def ingest_rows(
    spec: DatasetSpec, store: FeatureStore, source: Source, day: dt.date | None = None, now: pd.Timestamp | None = None,
) -> IngestReport:
    """Validate the file's rows and add those with new keys as ``live`` rows.

    Writes: the feature group ``<dataset>`` (one commit), or nothing when every key is
    stored already. Running it again on the same file writes nothing.

    Raises:
        NotFoundError: the feature group holds no rows yet (``sml features`` first).
        DataValidationError: a bad value, or (:class:`StoredFeaturesChanged`) a stored
            key with other features; nothing is written.
    """
    check_event_time_options(spec, day)
    group = existing_feature_group(spec, store)
    rows = read_live_rows(spec, source, day, now)
    given = times_given(spec, day)
    ignored = unread_columns(spec, list(source.frame.columns), spec.event_time_column)
    for _ in range(INSERT_ATTEMPTS):
        plan = plan_ingest(group, rows, spec, source)
        new_rows = rows[plan.is_new].reset_index(drop=True)
        labelled = int(new_rows[spec.label].notna().sum())
        retimed = plan.retimed if given else 0
        if new_rows.empty:
            version = group.data_version()
            return IngestReport(group.name, len(rows), 0, len(rows), 0, plan.stored_labels, version, retimed, ignored)
        crash_point("ingest.before_insert")
        try:
            # Only new keys: a stored row is never rewritten. Should another writer store
            # one of these keys meanwhile, with other values, the store refuses the whole
            # frame and the comparison is made again.
            result = group.insert(new_rows, wait=True, on_change="refuse")
        except RowsChangedError:
            continue
        crash_point("ingest.after_insert")
        return IngestReport(
            group.name, len(rows), result.inserted, len(rows) - result.inserted, labelled, plan.stored_labels, result.version,
            retimed, ignored,
        )
    raise SmlError(
        f"feature group '{group.label}': other writers kept adding rows of these keys while ingest compared them "
        f"({INSERT_ATTEMPTS} attempts); nothing was written by this run, run it again"
    )


def times_given(spec: DatasetSpec, day: dt.date | None) -> bool:
    """Whether the rows' event times are the user's (the file's column, or ``--date``), not
    the time of the ingest (which a re-run of the same file gives anew)."""
    return spec.event_time_column is not None or day is not None


def live_event_time(spec: DatasetSpec, day: dt.date | None, now: pd.Timestamp | None) -> pd.Timestamp | None:
    """Every row's event time: ``None`` when the spec names the file's column of them,
    else ``day`` (midnight UTC), else ``now`` (default the time of the call)."""
    if spec.event_time_column is not None:
        return None
    if day is not None:
        return pd.Timestamp(day, tz="UTC")
    return now if now is not None else pd.Timestamp.now(tz="UTC")


def ingest_file(
    spec: DatasetSpec, store: FeatureStore, source: str, day: dt.date | None = None, now: pd.Timestamp | None = None,
    cache_dir: Path | None = None, chunk_rows: int = CHUNK_ROWS,
) -> tuple[str, IngestReport]:
    """``sml ingest``: :func:`ingest_rows` on the file (or URL) ``source``, read and
    written in parts of ``chunk_rows`` rows on the local store, so that memory does not
    grow with the file (see :func:`ingest_parts`). Another backend reads the file whole
    and goes through :func:`ingest_rows` (its reads and writes hold whole frames anyway).

    Returns:
        The location that names the rows (the URL without its password) and the report.

    Raises:
        as :func:`ingest_rows`, and the problems of the file (:func:`open_rows`).
    """
    check_event_time_options(spec, day)
    if not isinstance(store, LocalFeatureStore):
        rows = load_rows(source, spec.name, cache_dir)
        return rows.location, ingest_rows(spec, store, rows, day, now)
    columns: list[Any] = []

    def noted(all_parts: Iterable[Source]) -> Iterator[Source]:
        for part in all_parts:
            if not columns:
                columns.extend(part.frame.columns)
            yield part

    with open_rows(source, spec.name, cache_dir, chunk_rows) as (location, parts):
        report = ingest_parts(spec, store, location, noted(parts), live_event_time(spec, day, now), chunk_rows)
        report = dataclasses.replace(report, ignored=unread_columns(spec, columns, spec.event_time_column))
        return location, report if times_given(spec, day) else dataclasses.replace(report, retimed=0)


SPOOL_PREFIX = "sml-ingest-"
"""The temporary folder of an ingest's spool: ``<tmp>/sml-ingest-<pid>-<random>``."""


def _remove_stale_spools() -> None:
    """Delete the spools of ingests that were killed (SIGKILL skips the cleanup): those
    whose process is gone. A live process's spool, or another user's, is left alone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{SPOOL_PREFIX}*-*"):
        pid = folder.name[len(SPOOL_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue  # alive (another user's process), or not ours to judge


@dataclass(frozen=True)
class _Spool:
    """A file's validated rows, spooled to a Parquet file in the group's schema."""

    path: Path
    rows: int
    labelled: int
    keys: np.ndarray  # the file's keys as KeyLedger.values gives them, sorted
    is_file: bool


def _spool_rows(
    spec: DatasetSpec, store: FeatureStore, parts: Iterable[Source], event_time: pd.Timestamp | None, path: Path,
) -> _Spool:
    """Validate every part (as one file: :func:`iter_feature_rows`) and write its rows to
    ``path``; nothing is written to the store."""
    features = spec.store_schema()
    schema = arrow_schema(features)
    keyed = keyed_spec(spec)
    rows = labelled = 0
    is_file = True
    ledger = KeyLedger()

    def seen(all_parts: Iterable[Source]) -> Iterator[Source]:
        nonlocal is_file
        for part in all_parts:
            is_file = part.is_file
            yield part

    with pq.ParquetWriter(path, schema) as writer:
        for frame in iter_feature_rows(
            seen(parts), keyed, LIVE_ORIGIN, event_time, label_required=False, event_time_column=spec.event_time_column,
            before_refusing=lambda: existing_feature_group(spec, store), keys_seen=ledger,
        ):
            writer.write_table(conform(frame, features, [spec.primary_key], spec.name))
            rows += len(frame)
            labelled += int(frame[spec.label].notna().sum())
    return _Spool(path, rows, labelled, ledger.release_keys(), is_file)


def _spool_batches(spool: _Spool, batch_rows: int) -> Iterator[tuple[int, pa.RecordBatch]]:
    """The spooled rows in file order, with each batch's first file position."""
    offset = 0
    with pq.ParquetFile(spool.path) as parquet:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            yield offset, batch
            offset += batch.num_rows


def _members(values: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``sorted_keys`` (sorted, unique): a binary search each,
    so a batch costs the same against ten keys or ten million."""
    if not len(sorted_keys):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, values), len(sorted_keys) - 1)
    return np.asarray(sorted_keys[at] == values, dtype=bool)


def _stored_keys_of(group: FeatureGroup, spool: _Spool, key_type: str) -> np.ndarray:
    """The stored keys that are keys of the file, sorted (a scan of the key column)."""
    key = group.primary_key[0]
    found = []
    for batch in group.read_batches(columns=[key]):
        values = batch.column(0).to_numpy(zero_copy_only=False)
        hits = _members(KeyLedger.values(pd.Series(values), key_type), spool.keys)
        if hits.any():
            found.append(values[hits])
    if not found:
        return np.empty(0, dtype=np.int64 if key_type == "bigint" else object)
    keys = np.concatenate(found)
    del found
    keys.sort()  # stored keys are unique
    return keys


_CANONICAL_TYPES = {pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype(), pa.bool_(): pd.BooleanDtype()}
"""Arrow types as pandas reads them for hashing: one form whether or not a batch holds a
null (by default a bigint column is ``int64``, or ``float64`` beside a null)."""


def _feature_hashes(table: pa.Table, columns: list[str]) -> np.ndarray:
    """A 64-bit hash of each row's ``columns`` (as :func:`classify_rows` compares rows)."""
    frame = table.select(columns).to_pandas(types_mapper=_CANONICAL_TYPES.get)
    return row_hashes(frame, columns).to_numpy()


def _compare_stored(
    group: FeatureGroup, spec: DatasetSpec, spool: _Spool, stored_keys: np.ndarray, location: str, batch_rows: int,
) -> tuple[int, int]:
    """Compare the file's rows of stored keys with the stored rows by a hash of their
    features (as :func:`plan_ingest` does): one pass over the stored rows (each shared
    key's hash and event time kept, 16 bytes a key), then one over the spool.

    Returns:
        How many of them carry a label (which ingest does not apply), and how many have
        another event time than the stored one (kept as stored).

    Raises:
        StoredFeaturesChanged: as :func:`plan_ingest`.
    """
    key = spec.primary_key
    features = list(spec.feature_names)
    stored_hashes = np.zeros(len(stored_keys), dtype=np.uint64)
    stored_times = np.zeros(len(stored_keys), dtype=np.int64)
    for batch in group.read_batches(columns=[key, EVENT_TIME_COLUMN, *features]):
        mask = _members(batch.column(0).to_numpy(zero_copy_only=False), stored_keys)
        if mask.any():
            rows = pa.Table.from_batches([batch]).filter(pa.array(mask))
            where = np.searchsorted(stored_keys, rows.column(key).to_numpy())
            stored_hashes[where] = _feature_hashes(rows, features)
            stored_times[where] = _micros(rows.column(EVENT_TIME_COLUMN))
    stored_labels = differing = retimed = 0
    first: int | None = None
    for offset, batch in _spool_batches(spool, batch_rows):
        mask = _members(batch.column(key).to_numpy(zero_copy_only=False), stored_keys)
        if not mask.any():
            continue
        rows = pa.Table.from_batches([batch]).filter(pa.array(mask))
        stored_labels += rows.num_rows - rows.column(spec.label).null_count
        where = np.searchsorted(stored_keys, rows.column(key).to_numpy())
        differs = stored_hashes[where] != _feature_hashes(rows, features)
        differing += int(differs.sum())
        retimed += int((stored_times[where] != _micros(rows.column(EVENT_TIME_COLUMN))).sum())
        if first is None and differs.any():
            first = offset + int(np.flatnonzero(mask)[np.flatnonzero(differs)[0]])
    if first is None:
        return stored_labels, retimed
    new = _spool_row(spool, first, batch_rows)
    old = pa.Table.from_batches(list(group.read_batches(where=group[key] == new[key]))).to_pandas().iloc[0]
    feature = next(f for f in spec.features if not same_value(old[f.name], new[f.name]))
    row = describe_row(Source(pd.DataFrame(), location, spool.is_file), first)
    raise StoredFeaturesChanged(
        f"{location}: {row}: {key} {_value_text(new[key])} is stored with "
        f"{feature.display_column} {_value_text(old[feature.name])}, this file has {_value_text(new[feature.name])}; "
        "the features of a stored row are history (a scored row's prediction was made from them), "
        f"so ingest changes none: nothing written ({differing} row(s) of the file differ so)"
    )


def _micros(times: pa.ChunkedArray) -> np.ndarray:
    """UTC event times as microseconds since the epoch (how they are stored)."""
    return np.asarray(times.to_numpy(zero_copy_only=False).astype("datetime64[us]").astype(np.int64))


def _spool_row(spool: _Spool, position: int, batch_rows: int) -> pd.Series:
    """The spooled row at file position ``position``."""
    for offset, batch in _spool_batches(spool, batch_rows):
        if position < offset + batch.num_rows:
            return pa.Table.from_batches([batch.slice(position - offset, 1)]).to_pandas().iloc[0]
    raise IndexError(position)


def ingest_parts(
    spec: DatasetSpec, store: FeatureStore, location: str, parts: Iterable[Source], event_time: pd.Timestamp | None,
    chunk_rows: int = CHUNK_ROWS,
) -> IngestReport:
    """:func:`ingest_rows` for a local store, on a file read in parts, in bounded memory.

    Pass 1 validates the parts as one file (the same first error, with the file's row
    and line) and spools the rows to a temporary Parquet file; then the stored keys that
    are keys of the file are found by a scan of the key column, and only those rows are
    compared; pass 2 streams the rows of new keys from the spool into the group in one
    Delta commit, under the group's lock, after checking there that no other writer has
    stored one of their keys meanwhile (else it compares again). Memory holds a part,
    the file's keys (16 bytes a row) and the stored keys the file shares.

    Raises:
        as :func:`ingest_rows`.
    """
    key_type = spec.primary_key_type
    _remove_stale_spools()
    with tempfile.TemporaryDirectory(prefix=f"{SPOOL_PREFIX}{os.getpid()}-") as tmp:
        spool = _spool_rows(spec, store, parts, event_time, Path(tmp) / "rows.parquet")
        group = existing_feature_group(spec, store)
        if not isinstance(group, LocalFeatureGroup):
            raise TypeError("ingest_parts writes a local feature group")
        schema = arrow_schema(group.features)
        for _ in range(INSERT_ATTEMPTS):
            stored_keys = _stored_keys_of(group, spool, key_type)
            stored_labels, retimed = (_compare_stored(group, spec, spool, stored_keys, location, chunk_rows)
                                      if len(stored_keys) else (0, 0))
            new = spool.rows - sum(
                int(_members(batch.column(spec.primary_key).to_numpy(zero_copy_only=False), stored_keys).sum())
                for _, batch in _spool_batches(spool, chunk_rows)
            ) if len(stored_keys) else spool.rows
            if new == 0:
                return IngestReport(group.name, spool.rows, 0, spool.rows, 0, stored_labels, group.data_version(), retimed)
            crash_point("ingest.before_insert")

            def new_rows(known: np.ndarray = stored_keys) -> Iterator[pa.RecordBatch]:
                for _, batch in _spool_batches(spool, chunk_rows):
                    if len(known):
                        keys = batch.column(spec.primary_key).to_numpy(zero_copy_only=False)
                        batch = batch.filter(pa.array(~_members(keys, known)))
                    if batch.num_rows:
                        yield batch.cast(schema)

            def none_stored_since(known: np.ndarray = stored_keys) -> bool:
                return bool(_members(_stored_keys_of(group, spool, key_type), known).all())

            result = group.append_if(pa.RecordBatchReader.from_batches(schema, new_rows()), none_stored_since)
            if result is None:
                continue
            crash_point("ingest.after_insert")
            return IngestReport(
                group.name, spool.rows, result.inserted, spool.rows - result.inserted, spool.labelled - stored_labels,
                stored_labels, result.version, retimed,
            )
    raise SmlError(
        f"feature group '{group.label}': other writers kept adding rows of these keys while ingest compared them "
        f"({INSERT_ATTEMPTS} attempts); nothing was written by this run, run it again"
    )
