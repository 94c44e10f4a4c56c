"""An in-memory stand-in for the hopsworks 5.2.1 SDK objects the Hopsworks backend calls.

No Hopsworks cluster can be reached from the tests, so the backend runs against these
objects instead. They hold pandas frames in memory and model the SDK's behaviour as its
source and documentation describe it, and they are strict about how they are called:

- **Every call is checked against the real SDK.** Each stand-in method binds its
  arguments to the signature of the method of the same name on the real class
  (``inspect.signature(hsfs.feature_group.FeatureGroup.insert).bind(...)``); an argument
  the installed SDK does not accept raises :class:`StandInSignatureError`. An SDK upgrade
  that renames or drops a parameter the backend passes therefore fails the tests.
- **Features and filters are the SDK's own objects** (``hsfs.feature.Feature``,
  ``hsfs.constructor.filter.Filter``/``Logic``), so the backend's filter translation
  builds what the real SDK would send, and the stand-in evaluates it the way the server
  would: the value as text (``Filter.to_dict`` sends ``str(value)``), typed by the feature.
- **Only what the backend uses exists**; a test checks that every public attribute of
  the stand-in classes exists on the real class too.

Behaviour modelled (hsfs 5.2.1, Python engine, offline ``DELTA`` feature groups; the
SDK file each point comes from is named):

- ``get_or_create_feature_group`` is lazy: the group is registered (gets an id) by its
  first ``insert``, which then writes the rows: two steps
  (``hsfs/core/feature_group_engine.py`` ``_insert``: ``_save_feature_group_metadata``,
  then the engine's ``_save_dataframe``). The registration prints "Feature Group created
  successfully, explore it at ...". If the write fails, the group stays registered with
  no data: ``commit_details`` is empty and a read fails. With a declared schema the
  registration itself also writes an empty table with delta-rs, whatever ``stream`` is
  (``_save_empty_table``); without one the SDK infers the schema from the frame through
  its Arrow types (an all-missing object column has none). ``delete()`` removes a group.
  ``get_feature_group``/``get_feature_view`` return ``None`` when missing.
- **The write path** (``hsfs/engine/python.py`` ``_save_dataframe``): a group created
  with ``stream=False`` (the SDK's default for ``DELTA``) is written directly with
  delta-rs; with :attr:`StandInService.direct_writes_fail` set (a client outside a
  cluster without datanode/namenode load balancers) that write raises the SDK's
  ``FeatureStoreException("Failed to write to delta table in external cluster ...")``
  (``hsfs/core/delta_engine.py`` ``_setup_delta_rs``), and so does ``remove_rows``,
  which deletes with delta-rs for every ``DELTA`` group. A ``stream=True`` group is
  written through Kafka and its materialization job: the rows land when the job has
  run, which ``insert(wait=True)`` waits for; with ``wait=False`` they land only when
  :meth:`StandInService.run_materialization_jobs` is called.
- ``insert(df, operation="upsert")`` merges on the primary key **and the event time**
  (``DeltaEngine._generate_merge_query``: "add event time to primary key for upserts"):
  a stored key that comes in with another event time is stored a second time. One
  commit per insert, even when no value changes. Column names are lower-cased and
  timezone-aware timestamps stored as naive UTC, as the SDK does before writing. A frame
  whose columns differ from the schema, or with null or repeated keys, is refused.
- ``remove_rows(delete_df)`` deletes the stored rows that match a row of ``delete_df``
  on the primary key and the event time (delta-rs ``merge`` with ``when_matched_delete``,
  the same predicate): one commit, counted in ``rowsDeleted``. A frame without those
  columns is refused.
- Commit ids are epoch milliseconds; ``commit_details`` lists the newest first.
- **Reads** return rows in no particular order, with the dtypes an Arrow Flight read
  gives pandas: ``bigint`` as int64, or float64 when the column has a gap; ``boolean``
  as bool, or object when it has a gap; timestamps naive (UTC) microseconds. Every read
  prints "Finished: Reading data from Hopsworks, ..." (``hopsworks_common/util.py``
  ``_run_with_loading_animation``).
- ``training_data``/``get_batch_data`` filter event time to ``[start_time, end_time)``
  (the SDK converts the bounds with ``util._convert_event_time_to_timestamp``), apply
  the view's filter and ``extra_filter``, and add the primary key and event time columns
  when asked: **under their fully qualified names** ``<project>_<group>_<version>_<col>``
  when the view's query does not select them (``hsfs/core/feature_view_engine.py``
  ``_get_primary_keys_from_query``/``_get_eventtimes_from_query``; built here with the
  SDK's own ``_generate_fully_qualified_feature_name``). ``training_data`` returns
  ``(X, y)`` and warns "Incremented version to ..." (``hsfs/feature_view.py``).
- **Failures**: :meth:`StandInService.fail_next` makes the next call of a method raise
  a given exception, for the types the SDK and its engines raise (``RestAPIError``,
  ``FeatureStoreException``, ``ValueError``, ``NotImplementedError``, ``KeyError``,
  delta-rs ``CommitFailedError``).

What it cannot show: how the real service behaves beyond this model (types it returns,
latency, errors). The README says how to run the same commands against a real project.
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

import hopsworks
from hopsworks_common import project as sdk_project
from hopsworks_common.client.exceptions import FeatureStoreException
from hsfs import feature_group as sdk_feature_group
from hsfs import feature_store as sdk_feature_store
from hsfs import feature_view as sdk_feature_view
from hopsworks_common.util import VersionWarning
from hsfs import util as sdk_util
from hsfs.constructor import query as sdk_query
from hsfs.constructor.filter import Filter as SdkFilter
from hsfs.constructor.filter import Logic as SdkLogic
from hsfs.feature import Feature as SdkFeature

# The real function, kept before any test replaces ``hopsworks.login`` with a stand-in.
REAL_LOGIN = hopsworks.login
FIRST_COMMIT_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
COMMIT_INTERVAL_MS = 1_000



def _as_sdk_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` as the SDK takes it in: column names auto-fixed as the SDK
    does, timezone-aware times made naive (UTC)."""
    df = frame.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df.columns = [sdk_util._autofix_feature_name(str(c)) for c in df.columns]
    for column in df.columns:
        if isinstance(df[column].dtype, pd.DatetimeTZDtype):
            df[column] = df[column].dt.tz_convert(None)
    return df

def _as_read(df: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """Rows as an Arrow Flight read hands them to pandas (``pa.Table.to_pandas()``): a
    ``bigint`` with a gap becomes float64, a ``boolean`` with a gap object, timestamps
    naive microseconds; and the "Finished: Reading data" line the SDK prints."""
    print("\rFinished: Reading data from Hopsworks, using Hopsworks Feature Query Service (0.12s) ")
    out = {}
    for column in df.columns:
        series = df[column].reset_index(drop=True)
        type_ = types.get(column, "string")
        gap = bool(series.isna().any())
        if type_ == "bigint":
            out[column] = series.astype("float64") if gap else series.astype("int64")
        elif type_ == "double":
            out[column] = series.astype("float64")
        elif type_ == "boolean":
            out[column] = series.astype(object).where(series.notna(), None) if gap else series.astype(bool)
        elif type_ == "timestamp":
            out[column] = pd.to_datetime(series).astype("datetime64[us]")
        else:
            out[column] = series.astype(object).where(series.notna(), None)
    return pd.DataFrame(out, columns=list(df.columns))


class StandInSignatureError(AssertionError):
    """The backend called an SDK method with arguments the real SDK does not accept."""


def _bind(real: Callable[..., Any], where: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """Bind a call to the real signature. A keyword that only a ``**kwargs`` catch-all
    would take is refused too: the SDK keeps those for deprecated spellings and rejects
    anything else at run time (``FeatureView._reject_unknown_kwargs``), or ignores it."""
    signature = inspect.signature(real)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as exc:
        raise StandInSignatureError(f"{where}() rejects this call: {exc}") from None
    for name, parameter in signature.parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD and bound.arguments.get(name):
            unknown = sorted(bound.arguments[name])
            raise StandInSignatureError(f"{where}() has no parameter {unknown[0]!r} (only a **{name} catch-all)")


def checked(real_class: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Check each call against ``real_class``'s method of the same name, then record it."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        name = method.__name__
        where = f"{real_class.__module__}.{real_class.__qualname__}.{name}"

        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            real = getattr(real_class, name, None)
            if real is None or not callable(real):
                raise StandInSignatureError(f"{where} does not exist in the installed SDK")
            _bind(real, where, (self, *args), kwargs)
            qualified = f"{real_class.__qualname__}.{name}"
            self._service.calls.append((qualified, args, kwargs))
            fault = self._service.faults.pop(qualified, None)
            if fault is not None:
                raise fault
            return method(self, *args, **kwargs)

        wrapper.real_class = real_class  # type: ignore[attr-defined]
        return wrapper

    return decorate


# Offline type of a pandas column, as hsfs infers it when a group has no declared schema.
def _infer_type(series: pd.Series) -> str:
    """As ``hsfs/engine/python.py`` ``_parse_schema_feature_group``: through the Arrow type
    of the column, so an all-missing object column (Arrow ``null``) has no type."""
    dtype = series.dtype
    if pd.api.types.is_object_dtype(dtype) and series.isna().all():
        raise FeatureStoreException(f"Feature '{series.name}': dtype 'null' not supported")
    if pd.api.types.is_bool_dtype(dtype):
        return "boolean"
    if pd.api.types.is_integer_dtype(dtype):
        return "bigint"
    if pd.api.types.is_float_dtype(dtype):
        return "double"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "timestamp"
    return "string"


def _typed(text: Any, type_: str) -> Any:
    """A filter value as the server types it: the text ``Filter.to_dict`` sends, read as
    the feature's offline type."""
    text = str(text)
    if type_ == "timestamp":
        moment = pd.Timestamp(text)
        return moment.tz_convert("UTC").tz_localize(None) if moment.tzinfo is not None else moment
    if type_ == "bigint":
        return int(text)
    if type_ == "double":
        return float(text)
    if type_ == "boolean":
        return text.lower() == "true"
    return text


_CONDITIONS: dict[str, Callable[[pd.Series, Any], pd.Series]] = {
    SdkFilter.EQ: lambda s, v: s == v,
    SdkFilter.NE: lambda s, v: s != v,
    SdkFilter.LT: lambda s, v: s < v,
    SdkFilter.LE: lambda s, v: s <= v,
    SdkFilter.GT: lambda s, v: s > v,
    SdkFilter.GE: lambda s, v: s >= v,
}


def evaluate(condition: SdkFilter | SdkLogic | None, df: pd.DataFrame, types: dict[str, str]) -> pd.Series:
    """Which rows an hsfs filter keeps, with SQL's rule that a comparison with NULL is false."""
    if condition is None:
        return pd.Series(True, index=df.index)
    if isinstance(condition, SdkLogic):
        left = evaluate(condition.get_left_filter_or_logic(), df, types)
        if condition.type == SdkLogic.SINGLE:
            return left
        right = evaluate(condition.get_right_filter_or_logic(), df, types)
        if condition.type == SdkLogic.AND:
            return left & right
        if condition.type == SdkLogic.OR:
            return left | right
        raise FeatureStoreException(f"unknown logic type {condition.type!r}")
    if not isinstance(condition, SdkFilter):
        raise FeatureStoreException(f"expected an hsfs Filter or Logic, got {type(condition).__name__}")
    name = condition.feature.name
    if name not in types:
        raise FeatureStoreException(f"filter on unknown feature '{name}'")
    column = df[name]
    if condition.condition == SdkFilter.IN:
        values = [_typed(v, types[name]) for v in json.loads(condition.value)]
        mask = column.isin(values)
    elif condition.condition in _CONDITIONS:
        mask = _CONDITIONS[condition.condition](column, _typed(condition.value, types[name]))
    else:
        raise FeatureStoreException(f"filter condition {condition.condition!r} is not modelled")
    return mask.astype("boolean").fillna(False).astype(bool) & column.notna()


def _window_mask(df: pd.DataFrame, event_time: str | None, start_time: Any, end_time: Any) -> pd.Series:
    mask = pd.Series(True, index=df.index)
    if start_time is None and end_time is None:
        return mask
    if event_time is None:
        raise FeatureStoreException("start_time/end_time need an event time column")
    millis = df[event_time].astype("datetime64[ms]").astype("int64")
    start = sdk_util._convert_event_time_to_timestamp(start_time)
    end = sdk_util._convert_event_time_to_timestamp(end_time)
    if start is not None:
        mask &= millis >= start
    if end is not None:
        mask &= millis < end
    return mask


class StandInService:
    """One in-memory Hopsworks: a project with one feature store, and a log of calls.

    Args:
        project: The project's name.
        seed: Seed of the row order that reads return.
    """

    def __init__(self, project: str = "sml_contract", seed: int = 0) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.logins: list[dict[str, Any]] = []
        self.direct_writes_fail = False
        """A client outside the cluster without its datanode/namenode load balancers:
        every delta-rs write (insert into a non-streaming group, ``remove_rows``) fails."""
        self.faults: dict[str, BaseException] = {}
        self.pending_jobs: list[tuple[StandInFeatureGroup, pd.DataFrame, str]] = []
        self.jobs_run = 0
        self.project = StandInProject(self, project)
        self.feature_store = StandInFeatureStore(self, f"{project}_featurestore", project)
        self._clock = FIRST_COMMIT_MS
        self._next_id = 1
        self._rng = np.random.default_rng(seed)

    def login(self, *args: Any, **kwargs: Any) -> StandInProject:
        """``hopsworks.login``, checked against the real function's signature."""
        _bind(REAL_LOGIN, "hopsworks.login", args, kwargs)
        self.logins.append(dict(kwargs))
        print(f"\nLogged in to project, explore it here https://stand-in/p/{self.project.name}")
        return self.project

    def fail_next(self, method: str, exc: BaseException) -> None:
        """Make the next call of ``method`` (``"FeatureGroup.insert"``, ...) raise ``exc``
        after its arguments were checked, as the SDK does when the service or an engine
        fails."""
        self.faults[method] = exc

    def run_materialization_jobs(self) -> None:
        """Run the materialization jobs of rows sent to streaming groups without waiting."""
        pending, self.pending_jobs = self.pending_jobs, []
        for group, df, operation in pending:
            group._merge(df, operation)
            self.jobs_run += 1

    def next_commit(self) -> int:
        self._clock += COMMIT_INTERVAL_MS
        return self._clock

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def shuffled(self, df: pd.DataFrame) -> pd.DataFrame:
        return df.iloc[self._rng.permutation(len(df))].reset_index(drop=True)

    def inserted_frames(self) -> list[pd.DataFrame]:
        """Every frame passed to ``FeatureGroup.insert``, in order."""
        return [args[0] if args else kwargs["features"] for name, args, kwargs in self.calls if name == "FeatureGroup.insert"]

    def snapshot(self) -> dict[tuple[str, int], tuple[tuple[int, ...], str]]:
        """Each saved group's commits and content: equal snapshots mean nothing was written."""
        return {
            key: (tuple(c[0] for c in fg._commits), pd.util.hash_pandas_object(fg._rows, index=False).to_numpy().tobytes().hex())
            for key, fg in self.feature_store._groups.items()
        }


class StandInProject:
    """``hopsworks_common.project.Project``."""

    def __init__(self, service: StandInService, name: str) -> None:
        self._service = service
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @checked(sdk_project.Project)
    def get_feature_store(self, name: str | None = None) -> StandInFeatureStore:
        return self._service.feature_store


class StandInFeatureStore:
    """``hsfs.feature_store.FeatureStore``: groups and views by (name, version)."""

    def __init__(self, service: StandInService, name: str, project_name: str) -> None:
        self._service = service
        self._name = name
        self._project_name = project_name
        self._groups: dict[tuple[str, int], StandInFeatureGroup] = {}
        self._views: dict[tuple[str, int], StandInFeatureView] = {}

    @property
    def name(self) -> str:
        return self._name

    @property
    def project_name(self) -> str:
        return self._project_name

    @checked(sdk_feature_store.FeatureStore)
    def get_or_create_feature_group(
        self,
        name: str,
        version: int,
        description: str | None = "",
        online_enabled: bool | None = False,
        time_travel_format: str | None = None,
        primary_key: list[str] | None = None,
        event_time: str | None = None,
        features: list[SdkFeature] | None = None,
        statistics_config: Any = None,
        stream: bool | None = False,
        **_: Any,
    ) -> StandInFeatureGroup:
        found = self._groups.get((name, version))
        if found is not None:
            return found  # like the SDK: the stored metadata, whatever was passed
        if not isinstance(version, int):
            raise FeatureStoreException(f"version must be an int, got {version!r}")
        if primary_key is not None and not isinstance(primary_key, list):
            raise FeatureStoreException(f"primary_key must be a list, got {type(primary_key).__name__}")
        if features is not None and not all(isinstance(f, SdkFeature) for f in features):
            raise FeatureStoreException("features must be hsfs.feature.Feature objects")
        # FeatureGroup.statistics_config: None means a default StatisticsConfig(), enabled.
        statistics = statistics_config if isinstance(statistics_config, bool) else True
        return StandInFeatureGroup(
            self._service, self, name, version, description or "", primary_key or [], event_time,
            list(features or []), time_travel_format or "DELTA", online_enabled=bool(online_enabled),
            stream=bool(stream), statistics_enabled=statistics,
        )

    @checked(sdk_feature_store.FeatureStore)
    def get_feature_group(self, name: str, version: int | None = None) -> StandInFeatureGroup | None:
        return self._groups.get((name, version or 1))

    @checked(sdk_feature_store.FeatureStore)
    def get_feature_view(self, name: str, version: int | None = None) -> StandInFeatureView | None:
        return self._views.get((name, version or 1))

    @checked(sdk_feature_store.FeatureStore)
    def get_or_create_feature_view(
        self,
        name: str,
        query: StandInQuery,
        version: int,
        description: str | None = "",
        labels: list[str] | None = None,
        **_: Any,
    ) -> StandInFeatureView:
        found = self._views.get((name, version))
        if found is not None:
            return found
        if not isinstance(query, StandInQuery):
            raise FeatureStoreException(f"query must be an hsfs Query, got {type(query).__name__}")
        if query._group.id is None:
            raise FeatureStoreException(f"feature group '{query._group.name}' is not saved")
        names = [f.name for f in query.features]
        for label in labels or []:
            if label not in names:
                raise FeatureStoreException(f"label '{label}' is not a feature of the query")
        view = StandInFeatureView(self._service, self, name, version, query, list(labels or []), description or "")
        self._views[(name, version)] = view
        return view


class StandInFeatureGroup:
    """``hsfs.feature_group.FeatureGroup`` (offline, time travel format ``DELTA``)."""

    def __init__(
        self,
        service: StandInService,
        store: StandInFeatureStore,
        name: str,
        version: int,
        description: str,
        primary_key: list[str],
        event_time: str | None,
        features: list[SdkFeature],
        time_travel_format: str,
        online_enabled: bool,
        stream: bool = False,
        statistics_enabled: bool = True,
    ) -> None:
        self._service = service
        self._store = store
        self._name = name
        self._version = version
        self._description = description
        self._primary_key = [k.lower() for k in primary_key]
        self._event_time = event_time
        self._features = features
        self._time_travel_format = time_travel_format
        self._online_enabled = online_enabled
        self._stream = stream
        self._statistics_enabled = statistics_enabled
        self._id: int | None = None
        self._written = False  # the Delta table exists (a write has succeeded)
        self._rows = pd.DataFrame()
        self._commits: list[tuple[int, int, int, int]] = []  # (commit id, rows inserted, updated, deleted)

    name = property(lambda self: self._name)
    version = property(lambda self: self._version)
    id = property(lambda self: self._id)
    description = property(lambda self: self._description)
    primary_key = property(lambda self: list(self._primary_key))
    event_time = property(lambda self: self._event_time)
    features = property(lambda self: list(self._features))
    time_travel_format = property(lambda self: self._time_travel_format)
    stream = property(lambda self: self._stream)
    statistics_config = property(lambda self: {"enabled": self._statistics_enabled})

    def _get_project_name(self) -> str:
        return sdk_util._strip_feature_store_suffix(self._store.name)

    def _types(self) -> dict[str, str]:
        return {f.name: f.type for f in self._features}

    def _require_saved(self) -> None:
        if self._id is None:
            raise FeatureStoreException(f"feature group '{self._name}' version {self._version} is not saved yet")

    def _require_table(self) -> None:
        self._require_saved()
        if not self._written:
            raise FeatureStoreException(
                f"Could not read data using Hopsworks Query Service: feature group '{self._name}' "
                f"version {self._version} has no table"
            )

    def _direct_write(self, what: str) -> None:
        if self._service.direct_writes_fail:
            raise FeatureStoreException(
                "Failed to write to delta table in external cluster. Make sure datanode load balancer has been "
                f"setup on the cluster. ({what})"
            )

    def _save(self, df: pd.DataFrame) -> None:
        """``_save_feature_group_metadata``: register the group; with a declared schema,
        then write an empty table with delta-rs (``_save_empty_table``, whatever
        ``stream`` is), which fails from outside the cluster without load balancers."""
        declared = bool(self._features)
        if not declared:
            self._features = [SdkFeature(name=str(c), type=_infer_type(df[c])) for c in df.columns]
        names = [f.name for f in self._features]
        for key in [*self._primary_key, *([self._event_time] if self._event_time else [])]:
            if key not in names:
                raise FeatureStoreException(f"primary key or event time '{key}' is not a feature")
        self._id = self._service.next_id()
        self._rows = pd.DataFrame({f.name: pd.Series(dtype=object) for f in self._features})
        self._store._groups[(self._name, self._version)] = self
        if declared:
            self._direct_write("empty table")
            self._written = True  # an empty table: reads work, there is no commit yet
        print(f"Feature Group created successfully, explore it at \nhttps://stand-in/p/fg/{self._id}")

    @checked(sdk_feature_group.FeatureGroup)
    def insert(
        self,
        features: pd.DataFrame,
        overwrite: bool = False,
        operation: str = "upsert",
        storage: str | None = None,
        write_options: dict[str, Any] | None = None,
        validation_options: dict[str, Any] | None = None,
        wait: bool = False,
        **_: Any,
    ) -> tuple[None, None]:
        if not isinstance(features, pd.DataFrame):
            raise FeatureStoreException(f"the stand-in takes pandas frames, got {type(features).__name__}")
        if operation not in ("insert", "upsert") or overwrite or storage not in (None, "offline"):
            raise FeatureStoreException(f"not modelled: operation={operation!r} overwrite={overwrite} storage={storage!r}")
        df = _as_sdk_frame(features)
        if self._id is None:
            self._save(df)  # registered first: a failing write below leaves it without data
        names = [f.name for f in self._features]
        if sorted(df.columns) != sorted(names):
            raise FeatureStoreException(f"dataframe columns {sorted(df.columns)} do not match the schema {sorted(names)}")
        keys = df[self._primary_key]
        if keys.isna().any().any() or keys.duplicated().any():
            raise FeatureStoreException("merge failed: null or repeated primary key in the source rows")
        df = df[names]
        if self._stream:
            self._service.pending_jobs.append((self, df, operation))
            if wait:
                self._service.run_materialization_jobs()
            return None, None
        self._direct_write("insert")
        self._merge(df, operation)
        return None, None

    def _merge(self, df: pd.DataFrame, operation: str) -> None:
        """delta-rs ``merge`` on primary key and event time, update all / insert all."""
        on = [*self._primary_key, *([self._event_time] if self._event_time else [])]
        if self._rows.empty:
            matched = np.zeros(len(df), dtype=bool)
            kept = self._rows
        else:
            stored_keys = pd.MultiIndex.from_frame(self._rows[on].astype(object))
            new_keys = pd.MultiIndex.from_frame(df[on].astype(object))
            matched = new_keys.isin(stored_keys)
            kept = self._rows[~stored_keys.isin(new_keys)]
        if operation == "insert":
            kept = self._rows
        frames = [f for f in (kept, df) if not f.empty]
        self._rows = pd.concat(frames, ignore_index=True) if frames else df
        self._written = True
        self._commits.append((self._service.next_commit(), int((~matched).sum()), int(matched.sum()), 0))

    @checked(sdk_feature_group.FeatureGroup)
    def remove_rows(
        self, delete_df: pd.DataFrame, write_options: dict[str, Any] | None = None, storage: str | None = None
    ) -> None:
        if not isinstance(delete_df, pd.DataFrame):
            raise FeatureStoreException(f"the stand-in takes pandas frames, got {type(delete_df).__name__}")
        if storage not in (None, "offline") or self._online_enabled:
            raise FeatureStoreException(f"not modelled: storage={storage!r} online_enabled={self._online_enabled}")
        self._require_table()
        self._direct_write("remove_rows")
        df = _as_sdk_frame(delete_df)
        on = [*self._primary_key, *([self._event_time] if self._event_time else [])]
        missing = [c for c in on if c not in df.columns]
        if missing:
            raise FeatureStoreException(f"merge failed: the rows to delete lack {missing}")
        if self._rows.empty:
            matched = np.zeros(0, dtype=bool)
        else:
            stored = pd.MultiIndex.from_frame(self._rows[on].astype(object))
            matched = stored.isin(pd.MultiIndex.from_frame(df[on].astype(object)))
        self._rows = self._rows[~matched].reset_index(drop=True)
        self._commits.append((self._service.next_commit(), 0, 0, int(matched.sum())))

    @checked(sdk_feature_group.FeatureGroup)
    def commit_details(self, wallclock_time: Any = None, limit: int | None = None) -> dict[int, dict[str, Any]]:
        if self._time_travel_format not in ("HUDI", "DELTA", "ICEBERG"):
            raise FeatureStoreException("commit_details can only be used on time travel enabled feature groups")
        self._require_saved()
        commits = sorted(self._commits, reverse=True)[: limit or None]
        return {
            commit: {
                "committedOn": sdk_util._get_hudi_datestr_from_timestamp(commit),
                "rowsUpdated": updated,
                "rowsInserted": inserted,
                "rowsDeleted": deleted,
            }
            for commit, inserted, updated, deleted in commits
        }

    @checked(sdk_feature_group.FeatureGroup)
    def delete(self, force: bool = False, delete_feature_views: bool = False) -> None:
        self._require_saved()
        views = [key for key, view in self._store._views.items() if view.query._group is self]
        if views and not delete_feature_views:
            raise FeatureStoreException(f"feature group '{self._name}' has feature views {views}")
        for key in views:
            del self._store._views[key]
        del self._store._groups[(self._name, self._version)]
        self._id = None

    @checked(sdk_feature_group.FeatureGroup)
    def get_feature(self, name: str) -> SdkFeature | None:
        for feature in self._features:
            if feature.name == name:
                return feature
        return None

    @checked(sdk_feature_group.FeatureGroup)
    def select_all(
        self,
        include_primary_key: bool = True,
        include_foreign_key: bool = True,
        include_partition_key: bool = True,
        include_event_time: bool = True,
    ) -> StandInQuery:
        self._require_saved()
        return StandInQuery(self._service, self, list(self._features))

    @checked(sdk_feature_group.FeatureGroup)
    def select(self, features: list[str | SdkFeature]) -> StandInQuery:
        self._require_saved()
        chosen = []
        for item in features:
            name = item.name if isinstance(item, SdkFeature) else item
            feature = self.get_feature(name)
            if feature is None:
                raise FeatureStoreException(f"feature '{name}' is not in feature group '{self._name}'")
            chosen.append(feature)
        return StandInQuery(self._service, self, chosen)


class StandInQuery:
    """``hsfs.constructor.query.Query`` over one feature group."""

    def __init__(self, service: StandInService, group: StandInFeatureGroup, features: list[SdkFeature]) -> None:
        self._service = service
        self._group = group
        self._features = features
        self._filter: SdkLogic | None = None

    features = property(lambda self: list(self._features))
    filters = property(lambda self: self._filter)
    featuregroups = property(lambda self: [self._group])

    @checked(sdk_query.Query)
    def filter(self, f: SdkFilter | SdkLogic) -> StandInQuery:
        # The SDK's own rule: the first filter is wrapped as a SINGLE logic, later ones
        # are AND-ed; the query is changed in place and returned.
        if self._filter is None:
            if isinstance(f, SdkFilter):
                self._filter = SdkLogic._Single(left_f=f)
            elif isinstance(f, SdkLogic):
                self._filter = f
            else:
                raise TypeError(f"Expected type `Filter` or `Logic`, got `{type(f)}`")
        else:
            self._filter = self._filter & f
        return self

    def _frame(self, extra: SdkFilter | SdkLogic | None = None) -> pd.DataFrame:
        rows = self._group._rows
        types = self._group._types()
        mask = evaluate(self._filter, rows, types) & evaluate(extra, rows, types)
        return rows[mask.to_numpy()]

    @checked(sdk_query.Query)
    def read(
        self,
        online: bool = False,
        dataframe_type: str = "default",
        read_options: dict[str, Any] | None = None,
        start_time: Any = None,
        end_time: Any = None,
    ) -> pd.DataFrame:
        if online or dataframe_type not in ("default", "pandas"):
            raise FeatureStoreException(f"not modelled: online={online} dataframe_type={dataframe_type!r}")
        self._group._require_table()
        df = self._frame()
        df = df[_window_mask(df, self._group.event_time, start_time, end_time).to_numpy()]
        return _as_read(self._service.shuffled(df[[f.name for f in self._features]]), self._group._types())


class StandInFeatureView:
    """``hsfs.feature_view.FeatureView`` over one feature group's query."""

    def __init__(
        self, service: StandInService, store: StandInFeatureStore, name: str, version: int, query: StandInQuery,
        labels: list[str], description: str,
    ) -> None:
        self._service = service
        self._store = store
        self._name = name
        self._version = version
        self._query = query
        self._labels = labels
        self._description = description
        self.training_dataset_versions = 0

    name = property(lambda self: self._name)
    version = property(lambda self: self._version)
    query = property(lambda self: self._query)
    labels = property(lambda self: list(self._labels))
    description = property(lambda self: self._description)

    def _rows(
        self, start_time: Any, end_time: Any, extra_filter: Any, primary_key: bool | None, event_time: bool | None, with_label: bool
    ) -> pd.DataFrame:
        group = self._query._group
        group._require_table()
        df = self._query._frame(extra_filter)
        df = df[_window_mask(df, group.event_time, start_time, end_time).to_numpy()]
        selected = [f.name for f in self._query.features]
        columns = [name for name in selected if with_label or name not in self._labels]
        # Keys and event time come last, so that callers cannot rely on column order, and
        # under their fully qualified names when the query does not select them.
        extra = [*(group.primary_key if primary_key else []), *([group.event_time] if event_time and group.event_time else [])]
        renames = {}
        for name in extra:
            if name not in selected and name not in columns:
                columns.append(name)
                renames[name] = sdk_util._generate_fully_qualified_feature_name(group, name)
        out = _as_read(self._service.shuffled(df[columns]), group._types())
        return out.rename(columns=renames)

    @checked(sdk_feature_view.FeatureView)
    def delete(self) -> None:
        del self._store._views[(self._name, self._version)]

    @checked(sdk_feature_view.FeatureView)
    def training_data(
        self,
        start_time: Any = None,
        end_time: Any = None,
        description: str | None = "",
        extra_filter: SdkFilter | SdkLogic | None = None,
        statistics_config: Any = None,
        read_options: dict[str, Any] | None = None,
        spine: Any = None,
        primary_key: bool = False,
        event_time: bool = False,
        training_helper_columns: bool = False,
        dataframe_type: str | None = "default",
        **_: Any,
    ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
        if dataframe_type not in ("default", "pandas"):
            raise FeatureStoreException(f"not modelled: dataframe_type={dataframe_type!r}")
        self.training_dataset_versions += 1  # each call records a training dataset version
        warnings.warn(f"Incremented version to `{self.training_dataset_versions}`.", VersionWarning, stacklevel=1)
        df = self._rows(start_time, end_time, extra_filter, primary_key, event_time, with_label=True)
        x = df.drop(columns=self._labels)
        return x, (df[self._labels] if self._labels else None)

    @checked(sdk_feature_view.FeatureView)
    def get_batch_data(
        self,
        start_time: Any = None,
        end_time: Any = None,
        read_options: dict[str, Any] | None = None,
        spine: Any = None,
        primary_key: bool | None = None,
        event_time: bool | None = None,
        inference_helper_columns: bool = False,
        dataframe_type: str = "default",
        transformed: bool | None = True,
        transformation_context: dict[str, Any] | None = None,
        logging_data: bool = False,
        extra_filter: SdkFilter | SdkLogic | None = None,
        **_: Any,
    ) -> pd.DataFrame:
        if dataframe_type not in ("default", "pandas"):
            raise FeatureStoreException(f"not modelled: dataframe_type={dataframe_type!r}")
        return self._rows(start_time, end_time, extra_filter, primary_key, event_time, with_label=False)


STAND_INS: dict[type, type] = {
    StandInProject: sdk_project.Project,
    StandInFeatureStore: sdk_feature_store.FeatureStore,
    StandInFeatureGroup: sdk_feature_group.FeatureGroup,
    StandInQuery: sdk_query.Query,
    StandInFeatureView: sdk_feature_view.FeatureView,
}
"""Each stand-in class and the real SDK class it stands in for."""
