"""The embedded feature store: one Delta Lake table per feature group, no server.

Layout under the store directory::

    <name>_<version>/          the Delta table (time travel by Delta version)
    <name>_<version>.json      the group's metadata: primary key, event time, schema
    .<name>_<version>.lock     a lock file: one writer per group at a time
    _feature_views/<name>_<version>.json

Writes go through ``deltalake`` (the ``hops-deltalake`` build that ``hopsworks[python]``
installs). An insert is an upsert by primary key that writes only rows that are new or
changed, so re-inserting the same rows leaves the table at the same version. Each write is
one Delta commit: readers (in any process) see the previous or the next version, never a
partial batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

from serverless_ml.errors import NotFoundError, SchemaMismatchError, SmlError
from serverless_ml.feature_store.base import (
    ARROW_TYPES,
    Feature,
    FeatureGroup,
    FeatureStore,
    FeatureView,
    Filter,
    InsertResult,
    Logic,
    Query,
    to_utc,
)

_VIEWS_DIR = "_feature_views"


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
        if feature.type == "timestamp":
            values = pd.to_datetime(series, utc=True)
            arrays.append(pa.array(values, type=ARROW_TYPES["timestamp"], from_pandas=True))
            continue
        try:
            arrays.append(pa.array(series, type=ARROW_TYPES[feature.type], from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaMismatchError(
                f"feature group '{group}': column '{feature.name}' cannot be stored as "
                f"{feature.type}: {str(exc).splitlines()[0]}"
            ) from None
    schema = pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in features])
    table = pa.Table.from_arrays(arrays, schema=schema)
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


def _row_hashes(df: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    return pd.util.hash_pandas_object(df[list(columns)], index=False)


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Leave no half-written temporary file behind.
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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

    def __init__(
        self,
        store: LocalFeatureStore,
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
    def table_path(self) -> Path:
        return self._store.root / f"{self.name}_{self.version}"

    @property
    def metadata_path(self) -> Path:
        return self._store.root / f"{self.name}_{self.version}.json"

    def __repr__(self) -> str:
        return f"LocalFeatureGroup({self.name!r}, version={self.version}, path={str(self.table_path)!r})"

    def exists(self) -> bool:
        # Look before asking deltalake: its check creates the table directory (and fails
        # on a path below a file), which a read-only question must not do.
        if not (self.table_path / "_delta_log").is_dir():
            return False
        return DeltaTable.is_deltatable(str(self.table_path))

    def data_version(self) -> int | None:
        if not self.exists():
            return None
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
    def _write_lock(self) -> Iterator[None]:
        try:
            self._store.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SmlError(f"cannot create feature store directory {self._store.root}: {exc.strerror}") from None
        lock_path = self._store.root / f".{self.name}_{self.version}.lock"
        with open(lock_path, "a") as fh:
            # flock is released by the kernel if the holder dies, so a crash never
            # leaves the group locked.
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def insert(self, df: pd.DataFrame, wait: bool = True) -> InsertResult:
        if not self.features:
            self.features = infer_features(df)
        table = conform(df, self.features, self.primary_key, f"{self.name}_{self.version}")
        with self._write_lock():
            if not self.exists():
                _atomic_write_json(self.metadata_path, self._metadata())
                write_deltalake(
                    str(self.table_path),
                    table,
                    mode="error",
                    name=self.name,
                    description=self.description or None,
                )
                return InsertResult(table.num_rows, 0, 0, 0)
            return self._upsert(table)

    def _upsert(self, table: pa.Table) -> InsertResult:
        delta = DeltaTable(str(self.table_path))
        stored_names = [field.name for field in delta.schema().fields]
        if stored_names != table.schema.names:
            raise SchemaMismatchError(
                f"feature group '{self.name}_{self.version}': stored columns {stored_names} "
                f"differ from {table.schema.names}"
            )
        incoming = table.to_pandas()
        existing = delta.to_pyarrow_table().cast(table.schema).to_pandas()
        values = [c for c in incoming.columns if c not in self.primary_key]
        incoming_keys = incoming[self.primary_key].assign(_hash=_row_hashes(incoming, values).to_numpy())
        existing_keys = existing[self.primary_key].assign(_old=_row_hashes(existing, values).to_numpy())
        joined = incoming_keys.merge(existing_keys, on=self.primary_key, how="left", indicator=True)
        is_new = (joined["_merge"] == "left_only").to_numpy()
        is_changed = (~is_new) & (joined["_hash"] != joined["_old"]).to_numpy()
        inserted, updated = int(is_new.sum()), int(is_changed.sum())
        unchanged = len(incoming) - inserted - updated
        if inserted + updated == 0:
            return InsertResult(0, 0, unchanged, delta.version())
        if updated == 0:
            write_deltalake(delta, table.filter(pa.array(is_new)), mode="append")
        else:
            changes = table.filter(pa.array(is_new | is_changed))
            predicate = " AND ".join(f't."{k}" = s."{k}"' for k in self.primary_key)
            (
                delta.merge(changes, predicate=predicate, source_alias="s", target_alias="t")
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute()
            )
        return InsertResult(inserted, updated, unchanged, DeltaTable(str(self.table_path)).version())

    def read(self, version: int | None = None) -> pd.DataFrame:
        if not self.exists():
            raise NotFoundError(
                f"feature group '{self.name}' version {self.version} does not exist in {self._store.root}"
            )
        try:
            delta = DeltaTable(str(self.table_path), version=version)
        except Exception as exc:  # deltalake raises a generic error for a missing version
            latest = self.data_version()
            raise NotFoundError(
                f"feature group '{self.name}' version {self.version} has no data version {version} "
                f"(latest is {latest})"
            ) from exc
        schema = pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in self.features])
        df = delta.to_pyarrow_table().cast(schema).to_pandas()
        return df.sort_values(self.primary_key, kind="stable").reset_index(drop=True)


class LocalFeatureStore(FeatureStore):
    """Feature groups as Delta tables in ``root`` (created on the first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
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
        meta = json.loads(path.read_text())
        features = [Feature(f["name"], f["type"], f.get("description", "")) for f in meta["features"]]
        return LocalFeatureGroup(
            self, name, version, meta["primary_key"], meta["event_time"], meta["description"], features
        )

    def get_or_create_feature_group(
        self,
        name: str,
        version: int,
        primary_key: Sequence[str],
        event_time: str | None = None,
        description: str = "",
        features: Sequence[Feature] | None = None,
    ) -> LocalFeatureGroup:
        found = self._load_group(name, version)
        if found is None:
            return LocalFeatureGroup(self, name, version, primary_key, event_time, description, features)
        if found.primary_key != list(primary_key) or found.event_time != event_time:
            raise SchemaMismatchError(
                f"feature group '{name}' version {version} exists with primary key "
                f"{found.primary_key} and event time {found.event_time!r}; create a new version"
            )
        if features is not None:
            stored = [(f.name, f.type) for f in found.features]
            wanted = [(f.name, f.type) for f in features]
            if stored != wanted:
                raise SchemaMismatchError(
                    f"feature group '{name}' version {version} exists with schema {stored}, "
                    f"not {wanted}; create a new version"
                )
        return found

    def get_feature_group(self, name: str, version: int) -> LocalFeatureGroup:
        found = self._load_group(name, version)
        if found is None or not found.exists():
            raise NotFoundError(
                f"feature group '{name}' version {version} does not exist in {self.root}"
            )
        return found

    def get_or_create_feature_view(
        self,
        name: str,
        version: int,
        query: Query,
        labels: Sequence[str] = (),
        description: str = "",
    ) -> FeatureView:
        for label in labels:
            query.feature_group.get_feature(label)
        payload = {
            "name": name,
            "version": version,
            "description": description,
            "feature_group": {"name": query.feature_group.name, "version": query.feature_group.version},
            "features": query.features,
            "filters": _filter_to_dict(query.filters),
            "labels": list(labels),
        }
        path = self.root / _VIEWS_DIR / f"{name}_{version}.json"
        if path.exists():
            stored = json.loads(path.read_text())
            if {k: stored.get(k) for k in payload if k != "description"} != {
                k: v for k, v in payload.items() if k != "description"
            }:
                raise SchemaMismatchError(
                    f"feature view '{name}' version {version} exists with a different query or labels; "
                    "create a new version"
                )
        else:
            _atomic_write_json(path, payload)
        return FeatureView(name, version, query, list(labels))

    def get_feature_view(self, name: str, version: int) -> FeatureView:
        path = self.root / _VIEWS_DIR / f"{name}_{version}.json"
        if not path.exists():
            raise NotFoundError(f"feature view '{name}' version {version} does not exist in {self.root}")
        stored = json.loads(path.read_text())
        group = self.get_feature_group(stored["feature_group"]["name"], stored["feature_group"]["version"])
        query = Query(group, stored["features"], _filter_from_dict(stored["filters"]))
        return FeatureView(name, version, query, stored["labels"])
