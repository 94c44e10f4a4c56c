"""The embedded feature store: one Delta Lake table per feature group, no server.

Layout under the store directory::

    <name>_<version>/          the Delta table (time travel by Delta version)
    <name>_<version>.json      the group's metadata: primary key, event time, schema
    .<name>_<version>.lock     a lock file: one writer per group at a time
    _feature_views/<name>_<version>.json

Writes go through ``deltalake`` (the ``hops-deltalake`` build that ``hopsworks[python]``
installs). An insert is an upsert by primary key that writes only rows that are new or
changed, so re-inserting the same rows leaves the table at the same version; a delete by
key is a Delta MERGE that deletes the matched rows. Each write is one Delta commit, made
under the group's lock: readers (in any process) see the previous or the next version,
never a partial batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.exceptions import SchemaMismatchError as DeltaSchemaMismatchError

from serverless_ml.errors import NotFoundError, SchemaMismatchError, SmlError
from serverless_ml.faults import crash_point
from serverless_ml.files import atomic_write_text
from serverless_ml.system_faults import OS_FAULTS, os_fault, remember_place
from serverless_ml.feature_store.base import (
    COMPARISONS,
    Feature,
    FeatureGroup,
    FeatureStore,
    FeatureView,
    Filter,
    InsertResult,
    Logic,
    Query,
    RowComparison,
    StagedRows,
    ViewChangedError,
    arrow_schema,
    to_utc,
)

_VIEWS_DIR = "_feature_views"
_APPEND_PREFIX = "appended-"
"""Data files :meth:`LocalFeatureGroup.append_if` writes into a table's folder before its
commit names them (a killed append's are removed by the next one, under the lock)."""
_APPEND_FILE_ROWS = 1_000_000
"""Rows per data file :meth:`LocalFeatureGroup.append_if` writes."""


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True), before_replace="store.json.before_replace")


def logged_file_names(table_path: Path) -> set[str]:
    """The names of every data file any commit of the Delta table ever added (its JSON log
    entries and checkpoints): the files some version, not only the latest, may need.

    A file written for an append or a staged commit that no log entry names was left by a
    killed job and may go; a file the latest version no longer lists (an update rewrote
    its rows) is still an older version's and must stay (time travel reads it)."""
    import pyarrow.parquet as pq

    names: set[str] = set()
    log = table_path / "_delta_log"
    for entry in log.glob("*.json"):
        for line in entry.read_text(encoding="utf-8").splitlines():
            if '"add"' not in line:
                continue
            with contextlib.suppress(ValueError):
                added = json.loads(line).get("add")
                if isinstance(added, dict) and isinstance(added.get("path"), str):
                    names.add(Path(urllib.parse.unquote(added["path"])).name)
    for checkpoint in log.glob("*.checkpoint*.parquet"):
        with contextlib.suppress(Exception):
            for added in pq.read_table(checkpoint, columns=["add"]).column("add").to_pylist():
                if added and added.get("path"):
                    names.add(Path(urllib.parse.unquote(added["path"])).name)
    return names


def remove_unlogged_files(table_path: Path, prefix: str) -> None:
    """Remove the ``<prefix>*.parquet`` data files no commit ever added (a killed append's
    or staged commit's; call it holding the writer's lock)."""
    candidates = list(table_path.glob(f"{prefix}*.parquet"))
    if not candidates:
        return
    logged = logged_file_names(table_path)
    for stale in candidates:
        if stale.name not in logged:
            stale.unlink(missing_ok=True)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files that :func:`_atomic_write_json` left for ``path`` when its
    process was killed (SIGKILL skips the cleanup above). Only call it while holding the
    lock under which ``path`` is written, so no live writer's file is removed."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            leftover.unlink()


GROUP_METADATA_HINT = "restore it from a backup (it describes the Delta table next to it)"
VIEW_HINT = "delete it: `sml train` writes it again from the dataset's spec"


def _read_json(path: Path, what: str, hint: str) -> dict[str, Any]:
    """A metadata file of the store as a dict; a file that cannot be read, or is not the
    JSON object this store wrote, is one SmlError line naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SmlError(f"{what} {path} cannot be read: {OS_FAULTS.get(exc.errno or 0, exc.strerror)}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SmlError(f"{what} {path} is damaged (not JSON: {exc}): {hint}") from None
    if not isinstance(data, dict):
        raise SmlError(f"{what} {path} is damaged (not a JSON object): {hint}")
    return data


_DAMAGE_WORDS = re.compile(r"json|delta log|_delta_log|log segment|checkpoint|parquet|parse|invalid table version|not a delta table", re.IGNORECASE)
"""Words of a delta-rs error about a table's damaged files (its other errors are bugs)."""


def _unreadable_part(table_path: Path) -> Path | None:
    """The first data file of the table whose Parquet footer cannot be read, if any."""
    import pyarrow.parquet as pq

    for path in sorted(table_path.rglob("*.parquet")):
        try:
            pq.read_metadata(path)
        except (OSError, pa.ArrowException):
            return path
    return None


def _damaged_log_entry(table_path: Path) -> Path | None:
    """The first Delta log entry under ``table_path`` with a line that is not JSON."""
    for entry in sorted((table_path / "_delta_log").glob("*.json")):
        try:
            for line in entry.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    json.loads(line)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return entry
    return None


DELTA_ACTIONS = frozenset({"add", "remove", "metaData", "protocol", "commitInfo", "txn", "cdc", "domainMetadata",
                           "checkpointMetadata", "sidecar"})
"""The actions a Delta log entry's lines hold (one per line, as a JSON object's only key)."""
_CHECKED_ENTRIES: dict[tuple[str, int, int], bool] = {}
"""Log entries found sound, by (path, size, modification time): each is read once a process."""


def _hollow_log_entry(table_path: Path) -> tuple[Path, str] | None:
    """The first Delta log entry after the table's last checkpoint (the entries a reader
    replays) that JSON parsing alone lets through but that is damaged: empty, or with a
    line that is not a Delta action, and why. delta-rs takes an empty entry for a commit
    of nothing, so the rows that commit added vanish without an error (found by a user
    trial: a 0-byte entry of the predictions table, and the next `sml infer` scored and
    logged the same batch again)."""
    log = table_path / "_delta_log"
    first = 0
    try:
        first = int(json.loads((log / "_last_checkpoint").read_text(encoding="utf-8"))["version"]) + 1
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for entry in sorted(log.glob("*.json")):
        if not entry.stem.isdigit() or int(entry.stem) < first:
            continue
        try:
            stat = entry.stat()
        except OSError:
            continue  # gone meanwhile, or unreadable: the reader says so
        key = (str(entry), stat.st_size, stat.st_mtime_ns)
        if key in _CHECKED_ENTRIES:
            continue
        try:
            lines = [line for line in entry.read_text(encoding="utf-8").splitlines() if line.strip()]
            actions = [json.loads(line) for line in lines]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not JSON: the reader fails on it and _damaged_log_entry names it
        if not actions:
            return entry, "empty"
        for action in actions:
            if not isinstance(action, dict) or not action or not set(action) <= DELTA_ACTIONS:
                shown = json.dumps(action)[:80]
                return entry, f"a line that is not a Delta action: {shown}"
        _CHECKED_ENTRIES[key] = True
    return None


def _value_to_json(value: Any) -> Any:
    """A filter value as JSON: timestamps (and dates) as ``{"timestamp": ISO}``, numpy
    scalars as Python numbers."""
    if isinstance(value, (pd.Timestamp, dt.datetime, dt.date, np.datetime64)):
        return {"timestamp": to_utc(value).isoformat()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _value_from_json(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"timestamp"}:
        return pd.Timestamp(value["timestamp"])
    return value


def _filter_to_dict(condition: Filter | Logic | None) -> dict[str, Any] | None:
    if condition is None:
        return None
    if isinstance(condition, Filter):
        if condition.op == "isin":
            value: Any = [_value_to_json(v) for v in condition.value]
        else:
            value = _value_to_json(condition.value)
        return {"feature": condition.feature, "op": condition.op, "value": value}
    return {"op": condition.op, "left": _filter_to_dict(condition.left), "right": _filter_to_dict(condition.right)}


def _filter_from_dict(data: dict[str, Any] | None) -> Filter | Logic | None:
    if data is None:
        return None
    if "feature" in data:
        if data["op"] == "isin":
            value: Any = tuple(_value_from_json(v) for v in data["value"])
        else:
            value = _value_from_json(data["value"])
        return Filter(data["feature"], data["op"], value)
    left, right = _filter_from_dict(data["left"]), _filter_from_dict(data["right"])
    assert left is not None and right is not None
    return Logic(data["op"], left, right)


class LocalFeatureGroup(FeatureGroup):
    """A feature group stored as a Delta table under the store directory."""

    _store: LocalFeatureStore

    @property
    def table_path(self) -> Path:
        return self._store.root / self.label

    @property
    def metadata_path(self) -> Path:
        return self._store.root / f"{self.label}.json"

    def __repr__(self) -> str:
        return f"LocalFeatureGroup({self.name!r}, version={self.version}, path={str(self.table_path)!r})"

    @contextlib.contextmanager
    def _table_faults(self) -> Iterator[None]:
        """Turn what delta-rs and the OS raise for a table this process cannot write, or
        whose files are damaged or gone, into one SmlError line naming the file and what
        to do (other errors are bugs and keep their traceback). A log entry that is
        damaged yet parses (:func:`_hollow_log_entry`) is refused before any read or write."""
        hollow = _hollow_log_entry(self.table_path) if (self.table_path / "_delta_log").is_dir() else None
        if hollow is not None:
            raise SmlError(
                f"feature group '{self.label}': its Delta log entry {hollow[0]} is damaged ({hollow[1]}): "
                f"restore the folder {self.table_path} from a backup"
            )
        try:
            yield
        except SmlError:
            raise
        except FileNotFoundError as exc:  # delta-rs: "Object at location <file> not found"
            found = str(exc).split("Object at location ", 1)[-1].split(" not found", 1)[0]
            missing = found if found != str(exc) else (exc.filename or str(self.table_path))
            raise SmlError(
                f"feature group '{self.label}': {missing} of its Delta table is missing: "
                f"restore the folder {self.table_path} from a backup"
            ) from None
        except pa.ArrowInvalid as exc:
            if "parquet" not in str(exc).lower():
                raise
            named = re.search(r"source '([^']+)'", str(exc))
            # A scan (read_batches) does not name the file: look for it.
            part = self.table_path / named.group(1) if named else (_unreadable_part(self.table_path) or self.table_path)
            reason = str(exc).split("': ", 1)[-1].splitlines()[0][:120]
            raise SmlError(
                f"feature group '{self.label}': data file {part} of its Delta table is damaged "
                f"({reason}): restore the folder {self.table_path} from a backup"
            ) from None
        except Exception as exc:
            fault = os_fault(exc)
            if fault is not None:
                raise SmlError(f"feature store {self._store.root}: {fault[1] or self.table_path}: {OS_FAULTS[fault[0]]}") from None
            if isinstance(exc, DeltaError) and not isinstance(exc, (CommitFailedError, DeltaSchemaMismatchError)):
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                entry = _damaged_log_entry(self.table_path)
                if entry is None and not _DAMAGE_WORDS.search(reason):
                    raise  # not damage: a bug, with its traceback
                where = f"its Delta log entry {entry}" if entry else f"its Delta table {self.table_path}"
                raise SmlError(
                    f"feature group '{self.label}': {where} cannot be read ({reason[:200]}): "
                    f"restore the folder {self.table_path} from a backup"
                ) from None
            raise

    def _open_table(self, version: int | None = None) -> DeltaTable:
        """The group's Delta table, every data file of it checked to exist: delta-rs
        otherwise fails mid-read on a deleted file (and may abort the process)."""
        delta = DeltaTable(str(self.table_path), version=version)
        for uri in delta.file_uris():
            path = Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path)) if uri.startswith("file:") else Path(uri)
            if not path.is_file():
                raise SmlError(
                    f"feature group '{self.label}': data file {path} of its Delta table is missing: "
                    f"restore the folder {self.table_path} from a backup"
                )
        return delta

    def exists(self) -> bool:
        # Look before asking deltalake: its check creates the table directory (and fails
        # on a path below a file), which a read-only question must not do.
        if not (self.table_path / "_delta_log").is_dir():
            return False
        return DeltaTable.is_deltatable(str(self.table_path))

    def data_version(self) -> int | None:
        if not self.exists():
            return None
        with self._table_faults():
            return DeltaTable(str(self.table_path)).version()

    def _metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "primary_key": self.primary_key,
            "event_time": self.event_time,
            "description": self.description,
            "features": [{"name": f.name, "type": f.type, "description": f.description} for f in self.features],
        }

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        try:
            self._store.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SmlError(f"cannot create feature store directory {self._store.root}: {exc.strerror}") from None
        lock_path = self._store.root / f".{self.label}.lock"
        with self._table_faults(), open(lock_path, "a") as fh:
            # flock is released by the kernel if the holder dies, so a crash never
            # leaves the group locked.
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                crash_point("store.locked")
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _create(self, table: pa.Table, wait: bool) -> None:
        _remove_stale_temporaries(self.metadata_path)
        _atomic_write_json(self.metadata_path, self._metadata())
        crash_point("store.create.after_sidecar")
        write_deltalake(
            str(self.table_path),
            table,
            mode="error",
            name=self.name,
            description=self.description or None,
        )
        crash_point("store.after_commit")

    def _stored_rows(self, incoming: pd.DataFrame) -> pd.DataFrame:
        # The whole table: one writer holds the lock, and reading it is one Delta scan.
        with self._table_faults():
            delta = self._open_table()
            schema = arrow_schema(self.features)
            stored_names = [field.name for field in delta.schema().fields]
            if stored_names != schema.names:
                raise SchemaMismatchError(
                    f"feature group '{self.label}': stored columns {stored_names} differ from {schema.names}"
                )
            return delta.to_pyarrow_table().cast(schema).to_pandas()

    def _write_changes(self, table: pa.Table, comparison: RowComparison, wait: bool) -> None:
        crash_point("store.upsert.before_commit")
        delta = DeltaTable(str(self.table_path))
        if comparison.updated == 0:
            write_deltalake(delta, table.filter(pa.array(comparison.is_new)), mode="append")
        else:
            changes = table.filter(pa.array(comparison.is_new | comparison.is_changed))
            (
                delta.merge(changes, predicate=self._key_predicate(), source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        crash_point("store.after_commit")

    def _delete_rows(self, stored: pd.DataFrame, wait: bool) -> None:
        crash_point("store.delete.before_commit")
        schema = arrow_schema([self.get_feature(k) for k in self.primary_key])
        keys = pa.Table.from_pandas(stored[self.primary_key], schema=schema, preserve_index=False)
        delta = DeltaTable(str(self.table_path))
        # One MERGE that deletes the matched rows: one commit, whatever the number of keys
        # (a DELETE predicate would spell every key out).
        delta.merge(keys, predicate=self._key_predicate(), source_alias="s", target_alias="t").when_matched_delete().execute()
        crash_point("store.after_commit")

    def _key_predicate(self) -> str:
        # Quoted SQL identifiers ("" inside), so no key name can change the predicate.
        # Dataset specs only allow plain identifiers: delta-rs itself cannot merge on a
        # column whose name holds a backtick.
        quoted = ['"' + k.replace('"', '""') + '"' for k in self.primary_key]
        return " AND ".join(f"t.{q} = s.{q}" for q in quoted)

    def read(self, version: int | None = None) -> pd.DataFrame:
        if not self.exists():
            raise NotFoundError(
                f"feature group '{self.name}' version {self.version} does not exist in {self._store.root}"
            )
        latest = self.data_version()  # a damaged table fails here, in one line
        if version is not None and not 0 <= version <= (latest or 0):
            raise NotFoundError(
                f"feature group '{self.name}' version {self.version} has no data version {version} "
                f"(latest is {latest})"
            )
        with self._table_faults():
            delta = self._open_table(version)
            df = delta.to_pyarrow_table().cast(arrow_schema(self.features)).to_pandas()
        return df.sort_values(self.primary_key, kind="stable").reset_index(drop=True)

    def read_batches(
        self, columns: Sequence[str] | None = None, where: Filter | Logic | None = None, version: int | None = None,
        batch_rows: int = 100_000,
    ) -> Iterator[pa.RecordBatch]:
        """The Delta table's Parquet files read ``batch_rows`` rows at a time (only
        ``columns`` and the filter's columns decoded, ``where`` applied to each batch):
        memory holds a batch and a file's read buffers, however large the table or its
        row groups (a dataset scan decodes whole row groups, a million rows or more)."""
        import pyarrow.parquet as pq

        if not self.exists():
            raise NotFoundError(f"feature group '{self.name}' version {self.version} does not exist in {self._store.root}")
        schema = arrow_schema(self.features)
        names = list(columns) if columns is not None else schema.names
        wanted = pa.schema([schema.field(name) for name in names])
        read = names + sorted(where.features() - set(names)) if where is not None else names
        expression = None if where is None else _arrow_filter(where, schema)
        with self._table_faults():
            delta = self._open_table(version)
            paths = [Path(urllib.parse.unquote(urllib.parse.urlsplit(uri).path)) if uri.startswith("file:") else Path(uri)
                     for uri in delta.file_uris()]
        for path in paths:
            with self._table_faults():
                parquet = pq.ParquetFile(path, pre_buffer=False)
                # A file every row of which passes (its statistics say so) is not filtered:
                # filtering copies every column of a batch (a tenth of the read's time).
                filtered = expression is not None and not _every_row_passes(parquet.metadata, where, schema)
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=read):
                    table = pa.Table.from_batches([batch])
                    if filtered:
                        table = table.filter(expression)
                    if table.num_rows:
                        yield from table.select(names).cast(wanted).combine_chunks().to_batches()

    def append_new(self, batches: pa.RecordBatchReader, wait: bool = True) -> InsertResult:
        """One Delta commit streamed from ``batches`` (an append, or the table's creation),
        under the group's lock; the rows are not compared with the stored ones."""
        schema = arrow_schema(self.features)
        if batches.schema != schema:
            raise SchemaMismatchError(f"feature group '{self.label}': rows to append have columns {batches.schema.names} "
                                      f"of other types than {schema.names}")
        counted = [0]

        def counting() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                counted[0] += batch.num_rows
                yield batch

        reader = pa.RecordBatchReader.from_batches(schema, counting())
        with self._writing():
            if not self.exists():
                _remove_stale_temporaries(self.metadata_path)
                _atomic_write_json(self.metadata_path, self._metadata())
                crash_point("store.create.after_sidecar")
                write_deltalake(str(self.table_path), reader, mode="error", name=self.name,
                                description=self.description or None)
            else:
                crash_point("store.upsert.before_commit")
                write_deltalake(DeltaTable(str(self.table_path)), reader, mode="append")
            crash_point("store.after_commit")
            return InsertResult(counted[0], 0, 0, self.data_version())

    def append_if(self, batches: pa.RecordBatchReader, still_new: Callable[[], bool]) -> InsertResult | None:
        """Rows appended to the (existing) group in one Delta commit streamed from
        ``batches``, if ``still_new()`` says so under the group's lock: it may read the
        group (no other writer can change it meanwhile) to check that none of the rows'
        keys was stored since the caller compared them. ``None`` when it says no; nothing
        is written then. (``sml ingest``: its rows are compared first, without the lock.)"""
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction

        schema = arrow_schema(self.features)
        if batches.schema != schema:
            raise SchemaMismatchError(f"feature group '{self.label}': rows to append have columns {batches.schema.names} "
                                      f"of other types than {schema.names}")
        # The data files are written here with pyarrow, then committed: write_deltalake
        # reads a fast stream ahead of its writer and held ~100 bytes a row (measured:
        # +370 MB for 3 million rows, `python -m bench ingest`).
        written: list[tuple[str, int]] = []  # (file name, rows)
        with self._writing():
            if not still_new():
                return None
            delta = DeltaTable(str(self.table_path))
            remove_unlogged_files(self.table_path, _APPEND_PREFIX)  # a killed append's (under the lock)
            token, writer, rows = uuid.uuid4().hex, None, 0
            try:
                try:
                    for batch in batches:
                        if writer is None:
                            written.append((f"{_APPEND_PREFIX}{token}-{len(written):05d}.parquet", 0))
                            writer = pq.ParquetWriter(
                                self.table_path / written[-1][0], schema, compression="snappy",
                                use_dictionary=[f.name for f in schema if pa.types.is_string(f.type)],
                                write_statistics=[*self.primary_key, *([self.event_time] if self.event_time else [])],
                            )
                        writer.write_batch(batch)
                        rows += batch.num_rows
                        if rows >= _APPEND_FILE_ROWS:
                            writer.close()
                            written[-1], writer, rows = (written[-1][0], rows), None, 0
                finally:
                    if writer is not None:
                        writer.close()
                        written[-1] = (written[-1][0], rows)
                actions = []
                for name, count in written:
                    stat = (self.table_path / name).stat()
                    actions.append(AddAction(name, stat.st_size, {}, int(stat.st_mtime * 1000), True,
                                             json.dumps({"numRecords": count})))
                crash_point("store.upsert.before_commit")
                if actions:
                    delta.create_write_transaction(actions, mode="append", schema=schema)
            except Exception:
                self._remove_uncommitted(written, delta.version())
                raise
            crash_point("store.after_commit")
            return InsertResult(sum(count for _, count in written), 0, 0, self.data_version())

    def _remove_uncommitted(self, written: list[tuple[str, int]], version_before: int) -> None:
        """Delete the files of an append that failed before its commit (a full disk), rather
        than leave them for the next append to find (found by a user trial: a 0-byte one
        stayed). Only while the table is still at ``version_before``: files a commit names
        are never deleted."""
        try:
            if DeltaTable(str(self.table_path)).version() != version_before:
                return
        except Exception:  # noqa: BLE001 - cannot tell: leave them (the next append removes what no commit names)
            return
        for name, _count in written:
            try:
                (self.table_path / name).unlink(missing_ok=True)
            except OSError:
                pass

    def stage_new(self) -> StagedRows:
        """Parquet files written into the table's folder as the rows come (a reader sees
        only the files the Delta log names), then one commit naming them: the rows are
        encoded once, and the commit itself is a log entry."""
        return LocalStagedRows(self)


class LocalStagedRows(StagedRows):
    """:class:`StagedRows` of the local store: staged Parquet files in the Delta table's
    folder, named ``staged-<token>-<n>.parquet``; files a killed job left there (in no
    commit) are removed by the next one staged."""

    PREFIX = "staged-"
    FILE_ROWS = 1_000_000
    """Rows per staged file (then the next file starts)."""

    def __init__(self, group: LocalFeatureGroup) -> None:
        super().__init__(group)
        self.local = group
        self.folder = group.table_path
        self.token = uuid.uuid4().hex
        self.files: list[tuple[str, int]] = []  # (name, rows)
        self._writer: Any = None
        self._rows = 0
        with group._table_faults():
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_unlogged_files(self.folder, self.PREFIX)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.files[-1] = (self.files[-1][0], self._rows)
            self._writer, self._rows = None, 0

    def write(self, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if table.schema != self.schema:
            table = table.cast(self.schema)
        with self.local._table_faults():
            if self._writer is None:
                name = f"{self.PREFIX}{self.token}-{len(self.files):05d}.parquet"
                # Dictionaries for text and booleans only, statistics for the key and event
                # time only: encoding a million rows takes a third of the time of the
                # defaults, and files stay readable by any Parquet reader.
                dictionary = [f.name for f in self.schema if pa.types.is_string(f.type) or pa.types.is_boolean(f.type)]
                statistics = [*self.local.primary_key, *([self.local.event_time] if self.local.event_time else [])]
                self._writer = pq.ParquetWriter(self.folder / name, self.schema, compression="snappy",
                                                use_dictionary=dictionary, write_statistics=statistics)
                self.files.append((name, 0))
            self._writer.write_table(table)
            self._rows += table.num_rows
            if self._rows >= self.FILE_ROWS:
                self._close_file()

    def commit(self, wait: bool = True) -> InsertResult:
        from deltalake import Schema
        from deltalake.transaction import AddAction, create_table_with_add_actions

        self._close_file()
        group = self.local
        actions = []
        for name, rows in self.files:
            stat = (self.folder / name).stat()
            actions.append(AddAction(name, stat.st_size, {}, int(stat.st_mtime * 1000), True, json.dumps({"numRecords": rows})))
        with group._writing():
            if not group.exists():
                _remove_stale_temporaries(group.metadata_path)
                _atomic_write_json(group.metadata_path, group._metadata())
                crash_point("store.create.after_sidecar")
                create_table_with_add_actions(str(self.folder), Schema.from_arrow(self.schema), actions, mode="error",
                                              name=group.name, description=group.description or None)
            else:
                crash_point("store.upsert.before_commit")
                DeltaTable(str(self.folder)).create_write_transaction(actions, mode="append", schema=self.schema)
            crash_point("store.after_commit")
            rows, self.files = sum(rows for _, rows in self.files), []
            return InsertResult(rows, 0, 0, group.data_version())

    def discard(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
            self._writer = None
        for name, _ in self.files:
            with contextlib.suppress(OSError):
                (self.folder / name).unlink()
        self.files = []


def _every_row_passes(metadata: Any, condition: Filter | Logic | None, schema: pa.Schema) -> bool:
    """Whether a Parquet file's statistics prove that every one of its rows passes
    ``condition``. Only comparisons (not ``!=``, ``isin``) on integer and timestamp columns
    whose every row group has a minimum, a maximum and no missing value count (a float's
    statistics leave out NaN, a text's may be truncated); anything else: ``False``."""
    if condition is None:
        return True
    if isinstance(condition, Logic):
        left = _every_row_passes(metadata, condition.left, schema)
        right = _every_row_passes(metadata, condition.right, schema)
        return (left and right) if condition.op == "&" else (left or right)
    kind = schema.field(condition.feature).type
    if condition.op not in ("<", "<=", ">", ">=", "==") or not (pa.types.is_integer(kind) or pa.types.is_timestamp(kind)):
        return False
    paths = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    if condition.feature not in paths or not metadata.num_row_groups:
        return False
    index = paths.index(condition.feature)
    # The bound that decides: every row is below a limit when the largest is, above it
    # when the smallest is.
    compare = COMPARISONS[condition.op]
    try:
        value = to_utc(condition.value) if pa.types.is_timestamp(kind) else condition.value
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max or stats.null_count != 0:
                return False
            low, high = stats.min, stats.max
            if isinstance(low, float) or isinstance(high, float):
                return False
            passes = (compare(high, value) if condition.op in ("<", "<=") else
                      compare(low, value) if condition.op in (">", ">=") else low == high == value)
            if not bool(passes):
                return False
    except (TypeError, ValueError):
        return False
    return True


def _arrow_filter(condition: Filter | Logic, schema: pa.Schema) -> Any:
    """A filter of the interface as a ``pyarrow.dataset`` expression on ``schema``'s types."""
    import pyarrow.compute as pc

    if isinstance(condition, Logic):
        left, right = _arrow_filter(condition.left, schema), _arrow_filter(condition.right, schema)
        return left & right if condition.op == "&" else left | right
    kind = schema.field(condition.feature).type

    def scalar(value: Any) -> Any:
        return pa.scalar(to_utc(value) if pa.types.is_timestamp(kind) else value, type=kind)

    field = pc.field(condition.feature)
    if condition.op == "isin":
        values = [to_utc(v) for v in condition.value] if pa.types.is_timestamp(kind) else list(condition.value)
        return field.isin(pa.array(values, type=kind))
    return COMPARISONS[condition.op](field, scalar(condition.value))


class LocalFeatureStore(FeatureStore):
    """Feature groups as Delta tables in ``root`` (created on the first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        remember_place("feature store", self.root)
        if self.root.exists() and not self.root.is_dir():
            raise SmlError(f"feature store path {self.root} is a file, expected a directory")
        for parent in self.root.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise SmlError(f"feature store path {self.root} is below {parent}, which is a file")
                break

    def __repr__(self) -> str:
        return f"LocalFeatureStore({str(self.root)!r})"

    def _load_group(self, name: str, version: int) -> LocalFeatureGroup | None:
        path = self.root / f"{name}_{version}.json"
        if not path.exists():
            return None
        meta = _read_json(path, "feature group metadata", GROUP_METADATA_HINT)
        try:
            features = [Feature(f["name"], f["type"], f.get("description", "")) for f in meta["features"]]
            return LocalFeatureGroup(
                self, name, version, meta["primary_key"], meta["event_time"], meta["description"], features
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise SmlError(f"feature group metadata {path} is damaged (missing or wrong {exc}): {GROUP_METADATA_HINT}") from None

    def _open_group(
        self, name: str, version: int, primary_key: Sequence[str], event_time: str | None, description: str,
        features: Sequence[Feature] | None,
    ) -> tuple[LocalFeatureGroup, bool]:
        found = self._load_group(name, version)
        if found is None:
            return LocalFeatureGroup(self, name, version, primary_key, event_time, description, features), False
        return found, True

    def get_feature_group(self, name: str, version: int) -> LocalFeatureGroup:
        found = self._load_group(name, version)
        if found is None or not found.exists():
            raise NotFoundError(
                f"feature group '{name}' version {version} does not exist in {self.root}"
            )
        return found

    def _open_view(self, name: str, version: int, query: Query, labels: list[str], description: str) -> FeatureView:
        payload = {
            "name": name,
            "version": version,
            "description": description,
            "feature_group": {"name": query.feature_group.name, "version": query.feature_group.version},
            "features": query.features,
            "filters": _filter_to_dict(query.filters),
            "labels": labels,
        }
        path = self.root / _VIEWS_DIR / f"{name}_{version}.json"
        if path.exists():
            stored = _read_json(path, "feature view file", VIEW_HINT)
            differ = [k for k in payload if k != "description" and stored.get(k) != payload[k]]
            if differ:
                raise ViewChangedError(name, version, differ)
        else:
            _atomic_write_json(path, payload)
        return FeatureView(name, version, query, labels)

    def get_feature_view(self, name: str, version: int) -> FeatureView:
        path = self.root / _VIEWS_DIR / f"{name}_{version}.json"
        if not path.exists():
            raise NotFoundError(f"feature view '{name}' version {version} does not exist in {self.root}")
        stored = _read_json(path, "feature view file", VIEW_HINT)
        try:
            group_name, group_version = stored["feature_group"]["name"], stored["feature_group"]["version"]
            features, filters, labels = stored["features"], _filter_from_dict(stored["filters"]), stored["labels"]
        except (KeyError, TypeError, AttributeError, ValueError, AssertionError) as exc:
            raise SmlError(f"feature view file {path} is damaged (missing or wrong {exc}): {VIEW_HINT}") from None
        group = self.get_feature_group(group_name, group_version)
        return FeatureView(name, version, Query(group, features, filters), labels)
