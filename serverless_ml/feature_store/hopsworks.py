"""The Hopsworks backend: the same interface as the local store, through the hopsworks
5.2.1 SDK (its Python engine, no Spark).

Selected by ``--feature-store hopsworks`` or ``SML_FEATURE_STORE=hopsworks``. Logging in
needs ``HOPSWORKS_API_KEY`` and ``HOPSWORKS_PROJECT``; ``HOPSWORKS_HOST`` is optional (the
SDK's default is the Hopsworks serverless host). Names and versions are those of the
local store, so moving a project to Hopsworks means re-running the backfill.

How the interface maps onto the SDK:

- a feature group is an offline ``DELTA`` feature group with the same name, version,
  primary key and event time (``get_or_create_feature_group``, statistics off: the
  project computes its own monitoring statistics in MLflow, and a server statistics job
  after every insert would only cost compute); an insert is
  ``insert(df, operation="upsert", wait=True)``; a delete by key is ``remove_rows(rows)``
  with the stored rows of those keys;
- the data version is the group's latest commit id (``commit_details(limit=1)``), a
  time in milliseconds, not a count of writes;
- a feature view is a Hopsworks feature view over ``fg.select(...).filter(...)`` with
  the same labels; ``training_data`` and ``get_batch_data`` call the view's own methods,
  with our filters translated to hsfs filters.

What the 5.2.1 SDK does that the backend has to answer for (each is modelled by the
contract suite's stand-in, ``tests/contract/hopsworks_standin.py``):

- **Fully qualified names.** A key or event-time column that a view's query does not
  select comes back named ``<project>_<group>_<version>_<column>``
  (``hsfs/core/feature_view_engine.py`` ``_get_primary_keys_from_query``); the view
  maps such columns back to their own names.
- **The offline upsert merges on primary key and event time**
  (``hsfs/core/delta_engine.py`` ``_generate_merge_query``), not on the key alone. An
  incoming row whose key is stored with another event time would become a second row
  for that key; the backend deletes the stored row first (``remove_rows``, one commit),
  then inserts (a second commit). If the insert then fails, the key is missing until the
  same frame is inserted again (it is then new). In this project an event time changes
  for a stored key when a backfill is re-run after the dataset's ``backfill_event_time``
  was edited; daily rows and predictions keep theirs. Deleting rows needs the direct
  write (see below). Stored rows with a repeated key (written by an older version of
  this backend, or by another client) are refused on insert with one line.
- **The write path.** From outside the cluster the SDK writes a ``DELTA`` group with
  delta-rs straight to HopsFS, which needs the cluster's datanode and namenode load
  balancers; without them it raises "Failed to write to delta table ..."
  (``delta_engine.py`` ``_setup_delta_rs``/``_get_delta_rs_location``). The backend
  tries the direct write first; when it fails that way on a group's first insert, it
  deletes the group the SDK had just registered (metadata, no data) and creates it again
  with ``stream=True``: rows then go through Kafka and the group's materialization job,
  which ``wait=True`` waits for. Such a group is registered without a declared schema,
  because with one the SDK writes an empty table with delta-rs at registration, streaming
  or not (``hsfs/core/feature_group_engine.py`` ``_save_empty_table``); it takes the
  types of the first frame, which the backend has checked against the declared schema.
  Later groups of the same store are created that way at once. A group created for
  direct writes cannot switch, and the SDK deletes rows with delta-rs whatever the group,
  so those fail with one line saying why.
- **Half-created groups.** The SDK registers a new group before writing its first rows,
  so a failed first insert leaves a group with an id and no data. Opening it for writing
  deletes it (nothing is lost: it holds no rows) and the insert creates it again;
  opening it for reading says it was never written.
- **Output.** The SDK prints ("Feature Group created successfully", "Finished: Reading
  data from Hopsworks ...") and warns ("Incremented version to ...") on every call;
  around each SDK call stdout and warnings go to this module's log at INFO, so a
  command's stdout carries only its own report.
- **Errors.** Every exception an SDK call may raise (``RestAPIError``,
  ``FeatureStoreException``, network errors, and the ``ValueError``,
  ``NotImplementedError``, ``KeyError``, ``OSError``, Arrow and delta-rs errors of its
  engines, such as a merge that conflicted with another writer) becomes one
  :class:`SmlError` line naming the step; ``--verbose`` shows the traceback.
- **Waiting.** ``wait`` only matters for the streaming path (it waits for the
  materialization job); a direct delta-rs write is done when ``insert`` returns. The
  streaming path always waits, because the counts and the data version an insert
  returns are read back from the group.

What the backend adds, so that both backends keep the same contract:

- every frame is checked against the declared schema (:func:`base.conform`) before
  anything is sent, so a bad frame is refused with the same error and nothing is written;
- an insert first reads the stored rows with the incoming keys and sends only new or
  changed rows: a re-run writes nothing and leaves the version as it was, the
  inserted/updated/unchanged counts are real, and ``on_change="refuse"`` is checked
  before anything is sent (in the base class, as for the local store). There is no lock
  across processes, so two writers at the same moment may get approximate counts (the
  data is still an upsert);
- rows come back with the local store's dtypes (UTC timestamps, int64, ...), sorted by
  primary key, whatever dtypes the SDK chose (it reads a bigint column with a gap as
  float64 and timestamps as naive microseconds).

What it cannot do (see :attr:`HopsworksFeatureStore.capabilities`): the SDK's Python
engine reads only the latest snapshot, so ``read(version=N)`` works only for the latest
version N and raises SmlError for an older one.

The API key is read from the environment when logging in and is kept nowhere else: not
in the store object, its repr, the logs or any MLflow run.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from serverless_ml.errors import NotFoundError, SchemaMismatchError, SmlError
from serverless_ml.feature_store.base import (
    COMPARISONS,
    Capabilities,
    Feature,
    FeatureGroup,
    FeatureStore,
    FeatureView,
    Filter,
    Logic,
    Query,
    RowComparison,
    ViewChangedError,
    arrow_column,
    arrow_schema,
    to_utc,
)

log = logging.getLogger(__name__)

ENV_API_KEY = "HOPSWORKS_API_KEY"
ENV_PROJECT = "HOPSWORKS_PROJECT"
ENV_HOST = "HOPSWORKS_HOST"
ENV_IN_CLUSTER = "REST_ENDPOINT"
"""Set by Hopsworks in its own jobs and notebooks, where the SDK logs in without a key."""

KEY_FILTER_MAX_KEYS = 1000
"""Above this many distinct keys, an insert reads the whole group to compare rows
instead of sending an ``IN`` filter with every key."""

MAX_MESSAGE_CHARS = 300


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _describe(exc: BaseException, secret: str = "") -> str:
    """One short line about an SDK failure (a RestAPIError's message spans lines)."""
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "status_code"):
        try:
            body = response.json()
        except Exception:  # noqa: BLE001 - any body that is not JSON
            body = {}
        body = body if isinstance(body, dict) else {"errorMsg": str(body)}
        detail = body.get("usrMsg") or body.get("errorMsg") or getattr(response, "reason", "")
        text = f"HTTP {response.status_code}: {detail}"
    else:
        lines = str(exc).strip().splitlines()
        text = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
    text = " ".join(_redact(text, secret).split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


DIRECT_WRITE_FAILURE = "Failed to write to delta table"
"""How the SDK's delta-rs path says it cannot reach HopsFS from outside the cluster
(``hsfs/core/delta_engine.py``, ``_setup_delta_rs`` and ``_get_delta_rs_location``)."""


_SDK_CALL = threading.RLock()
"""Held around each SDK call: ``sys.stdout`` and the warning filters are process-wide, so
two threads (the monitoring site's requests) redirecting them at once could leave stdout
pointing at a finished call's buffer. SDK calls of one process therefore run one at a time."""


NEEDS_LOAD_BALANCERS = (
    "needs the cluster's datanode and namenode load balancers; run this inside Hopsworks (a job), "
    "or ask the administrator to enable them"
)


class DirectWriteUnavailable(SmlError):
    """The SDK could not write the Delta table directly (no load balancers to HopsFS)."""


def _log_chatter(text: str, secret: str = "") -> None:
    """What the SDK printed, one log line per printed line (its progress animation
    rewrites a line with ``\\r``; only the final text of each is kept)."""
    for line in text.split("\n"):
        line = line.split("\r")[-1].strip()
        if line:
            log.info("hopsworks: %s", _redact(line, secret))


def _sdk_exceptions() -> tuple[type[BaseException], ...]:
    """What an SDK call may raise that is the service's or the environment's fault
    rather than this code's: REST and feature-store errors, network errors, and what its
    engines raise (``ValueError`` for a refused Hive fallback, ``NotImplementedError``,
    ``KeyError``, file-system ``OSError``, Arrow and delta-rs errors)."""
    import requests
    from hopsworks_common.client.exceptions import FeatureStoreException, RestAPIError

    found: list[type[BaseException]] = [
        RestAPIError, FeatureStoreException, requests.exceptions.RequestException,
        ValueError, NotImplementedError, KeyError, OSError, pa.ArrowException,
    ]
    try:
        from deltalake.exceptions import DeltaError

        found.append(DeltaError)
    except ImportError:  # pragma: no cover - hopsworks[python] installs deltalake
        pass
    return tuple(found)


def _hint(exc: BaseException) -> str:
    if type(exc).__name__ == "CommitFailedError":
        return " (another writer changed the feature group at the same time; run again)"
    return ""


@contextlib.contextmanager
def _sdk_errors(action: str) -> Iterator[None]:
    """Around one SDK call: what it prints and warns goes to the log, and whatever it
    raises (see :func:`_sdk_exceptions`) becomes one SmlError line naming ``action``.

    Raises:
        DirectWriteUnavailable: the SDK's direct Delta write cannot reach HopsFS.
        SmlError: any other SDK failure.
    """
    chatter = io.StringIO()
    caught: list[warnings.WarningMessage] = []
    try:
        with _SDK_CALL, contextlib.redirect_stdout(chatter), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
    except SmlError:
        raise
    except _sdk_exceptions() as exc:
        line = f"Hopsworks: cannot {action}: {_describe(exc)}"
        if DIRECT_WRITE_FAILURE in str(exc):
            raise DirectWriteUnavailable(line) from exc
        raise SmlError(line + _hint(exc)) from exc
    finally:
        _log_chatter(chatter.getvalue())
        for warning in caught:
            log.info("hopsworks: %s: %s", warning.category.__name__, " ".join(str(warning.message).split()))


def login_to_project(
    environ: Mapping[str, str] | None = None, login: Callable[..., Any] | None = None
) -> Any:
    """Log in to Hopsworks with the key, project and host from the environment.

    Args:
        environ: Where to read the variables (default ``os.environ``).
        login: The login function (default ``hopsworks.login``; tests pass a stand-in).

    Returns:
        The SDK's project handle.

    Raises:
        SmlError: ``HOPSWORKS_API_KEY`` or ``HOPSWORKS_PROJECT`` is not set (checked
            before the SDK is imported: its own login would prompt for them and wait),
            or the login failed.
    """
    env = os.environ if environ is None else environ
    in_cluster = ENV_IN_CLUSTER in env
    key = (env.get(ENV_API_KEY) or "").strip()
    project = (env.get(ENV_PROJECT) or "").strip()
    host = (env.get(ENV_HOST) or "").strip() or None
    if not in_cluster and not key:
        raise SmlError(
            f"--feature-store hopsworks needs an API key: set {ENV_API_KEY} "
            f"(create one in Hopsworks under Account settings > API keys) and {ENV_PROJECT}"
        )
    if not in_cluster and not project:
        raise SmlError(f"--feature-store hopsworks needs a project: set {ENV_PROJECT} to the project's name")
    if login is None:
        import hopsworks

        login = hopsworks.login
    where = f"project '{project or '(current)'}' at {host or 'the SDK default host'}"
    chatter = io.StringIO()
    try:
        # The SDK prints a welcome line; keep stdout for the commands' own reports.
        with _SDK_CALL, contextlib.redirect_stdout(chatter):
            handle = login(host=host, project=project or None, api_key_value=key or None)
    except Exception as exc:  # noqa: BLE001 - whatever failed, one line without the key
        # ``from None``: the chained traceback (shown with --verbose) is not needed, and
        # nothing from the failed call can then carry the key into the output.
        raise SmlError(f"cannot log in to Hopsworks {where}: {_describe(exc, key)}") from None
    finally:
        _log_chatter(chatter.getvalue(), key)
    if handle is None:
        raise SmlError(f"cannot log in to Hopsworks {where}: no project found")
    return handle


def open_hopsworks_feature_store(
    environ: Mapping[str, str] | None = None, login: Callable[..., Any] | None = None
) -> HopsworksFeatureStore:
    """Log in (see :func:`login_to_project`) and open the project's feature store."""
    project = login_to_project(environ, login)
    with _sdk_errors("open the project's feature store"):
        handle = project.get_feature_store()
    return HopsworksFeatureStore(handle)


def _check_names(group: str, names: Sequence[str]) -> None:
    """Hopsworks lower-cases feature names (and turns spaces into underscores); a name
    that would change is refused, so names are the same on both backends."""
    for name in names:
        if name != name.lower() or " " in name:
            raise SchemaMismatchError(
                f"feature group '{group}': Hopsworks stores feature names in lower case without spaces; "
                f"rename '{name}' to '{name.lower().replace(' ', '_')}'"
            )


def _sdk_value(value: Any, in_list: bool = False) -> Any:
    """A filter value as the SDK takes it: Python scalars; timestamps in an ``isin`` list
    as the SDK's own UTC ``%Y-%m-%d %H:%M:%S`` text (it JSON-encodes those lists)."""
    if isinstance(value, np.generic) and not isinstance(value, np.datetime64):
        return value.item()
    if isinstance(value, (pd.Timestamp, np.datetime64)) or (
        in_list and hasattr(value, "isoformat") and not isinstance(value, str)
    ):
        moment = to_utc(value)
        return moment.strftime("%Y-%m-%d %H:%M:%S") if in_list else moment
    return value


def _as_schema(df: pd.DataFrame, features: Sequence[Feature], group: str) -> pd.DataFrame:
    """A frame read from Hopsworks with the local store's dtypes (through Arrow, as the
    local store reads), whatever dtypes the SDK chose."""
    by_name = {f.name: f for f in features}
    arrays, returned = [], []
    for column in df.columns:
        feature = by_name.get(str(column))
        if feature is None:
            raise SchemaMismatchError(f"feature group '{group}': Hopsworks returned an unknown column '{column}'")
        failure = f"feature group '{group}': Hopsworks returned column '{column}' that is not {feature.type}"
        arrays.append(arrow_column(df[column], feature, failure))
        returned.append(feature)
    return pa.Table.from_arrays(arrays, schema=arrow_schema(returned)).to_pandas()


def _sdk_frame(table: pa.Table, typed_strings: bool = False) -> pd.DataFrame:
    """Rows to send: nullable integer and boolean columns keep their type in pandas (a
    plain conversion would turn an integer column with a gap into floats). With
    ``typed_strings``, text columns are pandas strings, so that a group whose schema the
    SDK infers from this frame gets ``string`` even for a column with no value (an
    object column of missing values has no type for it)."""
    mapping = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}
    if typed_strings:
        mapping[pa.string()] = pd.StringDtype()
    return table.to_pandas(types_mapper=mapping.get)


def _filter_signature(condition: Any) -> Any:
    """An hsfs filter tree as plain tuples (feature, condition, value as text), to tell
    whether an existing feature view has the query we ask for."""
    if condition is None:
        return None
    if hasattr(condition, "condition"):
        return (condition.feature.name, condition.condition, str(condition.value))
    left = _filter_signature(condition.get_left_filter_or_logic())
    if condition.type == "SINGLE":
        return left
    return (condition.type, left, _filter_signature(condition.get_right_filter_or_logic()))


class HopsworksFeatureGroup(FeatureGroup):
    """A feature group of a Hopsworks feature store, through an hsfs ``FeatureGroup``.

    Made as ``HopsworksFeatureGroup(store, handle, name, version, primary_key, event_time,
    description, features)``: the SDK's group, then the arguments of :class:`FeatureGroup`.
    """

    _store: HopsworksFeatureStore

    def __init__(self, store: HopsworksFeatureStore, handle: Any, *definition: Any) -> None:
        super().__init__(store, *definition)
        self._handle = handle

    def __repr__(self) -> str:
        return (
            f"HopsworksFeatureGroup({self.name!r}, version={self.version}, "
            f"feature_store={getattr(self._store._handle, 'name', '?')!r})"
        )

    def exists(self) -> bool:
        # The SDK creates a group lazily, on its first insert; only then has it an id. (A
        # group registered by a first insert that failed is dealt with when it is opened.)
        return self._handle.id is not None

    def _commits(self, limit: int | None) -> list[int]:
        with _sdk_errors(f"read the commits of feature group '{self.name}' version {self.version}"):
            details = self._handle.commit_details(limit=limit)
        return sorted((int(commit) for commit in details), reverse=True)

    def data_version(self) -> int | None:
        if not self.exists():
            return None
        commits = self._commits(limit=1)
        return commits[0] if commits else None

    def _require_latest(self, version: int, after_read: bool = False) -> None:
        """Reads see the latest snapshot only: refuse any other version, and notice a
        write that landed while reading."""
        latest = self.data_version()
        if version == latest:
            return
        if after_read:
            raise SmlError(
                f"feature group '{self.name}' version {self.version} changed while it was read "
                f"(data version {version}, now {latest}); run again"
            )
        if version not in self._commits(limit=None):
            raise NotFoundError(
                f"feature group '{self.name}' version {self.version} has no data version {version} "
                f"(latest is {latest})"
            )
        raise SmlError(
            f"feature group '{self.name}' version {self.version}: cannot read data version {version}; "
            f"the Hopsworks Python client reads only the latest version ({latest}), time travel needs its Spark engine"
        )

    def _to_sdk_filter(self, condition: Filter | Logic) -> Any:
        if isinstance(condition, Logic):
            left, right = self._to_sdk_filter(condition.left), self._to_sdk_filter(condition.right)
            return left & right if condition.op == "&" else left | right
        feature = self._handle.get_feature(condition.feature)
        if feature is None:
            raise SchemaMismatchError(f"feature group '{self.label}' has no feature '{condition.feature}'")
        if condition.op == "isin":
            return feature.isin([_sdk_value(v, in_list=True) for v in condition.value])
        return COMPARISONS[condition.op](feature, _sdk_value(condition.value))

    def _to_sdk_query(self, query: Query) -> Any:
        with _sdk_errors(f"select from feature group '{self.name}' version {self.version}"):
            sdk_query = self._handle.select(list(query.features))
            if query.filters is not None:
                sdk_query = sdk_query.filter(self._to_sdk_filter(query.filters))
        return sdk_query

    def _select_all(self) -> Any:
        with _sdk_errors(f"select from feature group '{self.name}' version {self.version}"):
            return self._handle.select_all()

    def _conform_read(self, df: pd.DataFrame) -> pd.DataFrame:
        """Our dtypes, rows sorted by primary key (Hopsworks returns them in any order)."""
        df = _as_schema(df.reset_index(drop=True), self.features, self.label)
        if all(k in df.columns for k in self.primary_key):
            df = df.sort_values(self.primary_key, kind="stable")
        return df.reset_index(drop=True)

    def _read_query(self, sdk_query: Any) -> pd.DataFrame:
        with _sdk_errors(f"read feature group '{self.name}' version {self.version}"):
            df = sdk_query.read(dataframe_type="pandas")
        return self._conform_read(df)

    def _stored_rows(self, incoming: pd.DataFrame) -> pd.DataFrame:
        """The stored rows that may share a key with ``incoming`` (all rows when there
        are many keys), as a frame comparable with it."""
        sdk_query = self._select_all()
        first = self.primary_key[0]
        values = incoming[first].drop_duplicates()
        if len(values) <= KEY_FILTER_MAX_KEYS:
            with _sdk_errors(f"select from feature group '{self.name}' version {self.version}"):
                sdk_query = sdk_query.filter(self._to_sdk_filter(Filter(first, "isin", tuple(values.tolist()))))
        return self._read_query(sdk_query)[[f.name for f in self.features]]

    def _check_stored_rows(self, stored: pd.DataFrame) -> None:
        """Rows compared by key need one stored row per key; the SDK's merge on key and
        event time can have left two (see the module docstring)."""
        repeated = stored.duplicated(self.primary_key, keep=False)
        if not repeated.any():
            return
        rows = stored[repeated].sort_values(self.primary_key, kind="stable")
        keys = len(rows.drop_duplicates(self.primary_key))
        key = ", ".join(f"{k} {rows.iloc[0][k]}" for k in self.primary_key)
        raise SmlError(
            f"feature group '{self.label}' holds {len(rows)} rows for {keys} key(s), the first {key} "
            "(Hopsworks merges on primary key and event time, and an earlier write changed an event time); "
            "delete those keys and insert their rows again"
        )

    def _check_feature_names(self) -> None:
        _check_names(self.label, [f.name for f in self.features])

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        # No lock across processes (see the module docstring).
        return contextlib.nullcontext()

    def _create(self, table: pa.Table, wait: bool) -> None:
        try:
            self._send(table, wait)
        except DirectWriteUnavailable:
            if self._handle.stream:
                raise
            # The SDK registered the group before its delta-rs write failed: remove that
            # empty registration and create the group again on the streaming path.
            log.warning(
                "feature group '%s' version %d: the direct Delta write cannot reach the cluster's storage "
                "from here (no datanode/namenode load balancers); writing through Kafka and the group's "
                "materialization job instead", self.name, self.version,
            )
            self._store._stream_new_groups = True
            self._handle = self._store._recreate(self._handle, self.name, self.version, self.primary_key,
                                                  self.event_time, self.description, self.features)
            self._send(table, wait)

    def _write_changes(self, table: pa.Table, comparison: RowComparison, wait: bool) -> None:
        moved = self._moved_rows(table, comparison)
        if not moved.empty:
            # The SDK merges on key and event time: a key whose event time changes would
            # otherwise be stored twice. Delete the old row first (a re-run inserts it
            # again should the insert below fail).
            self._delete_rows(moved, wait)
        try:
            self._send(table.filter(pa.array(comparison.is_new | comparison.is_changed)), wait)
        except DirectWriteUnavailable as exc:
            raise SmlError(
                f"{exc} (feature group '{self.name}' version {self.version} was created for direct Delta writes, "
                f"which {NEEDS_LOAD_BALANCERS})"
            ) from exc

    def _moved_rows(self, table: pa.Table, comparison: RowComparison) -> pd.DataFrame:
        """The stored rows whose key comes in with another event time."""
        if not self.event_time or not comparison.updated:
            return comparison.changed.iloc[0:0]
        incoming = table.filter(pa.array(comparison.is_changed)).select([*self.primary_key, self.event_time]).to_pandas()
        paired = comparison.changed.merge(incoming, on=self.primary_key, how="inner", suffixes=("", "__incoming"))
        moved = paired[self.event_time] != paired[f"{self.event_time}__incoming"]
        return paired.loc[moved, list(comparison.changed.columns)].reset_index(drop=True)

    def _send(self, table: pa.Table, wait: bool) -> None:
        with _sdk_errors(f"insert into feature group '{self.name}' version {self.version}"):
            # The streaming path always waits: the counts and data version an insert
            # returns are read back from the group once the job has written it.
            # A group registered without a declared schema (see ``_get_or_create``) takes
            # the types of this frame.
            inferred = self._handle.id is None and not self._handle.features
            self._handle.insert(
                _sdk_frame(table, typed_strings=inferred), operation="upsert", wait=wait or bool(self._handle.stream)
            )

    def _delete_rows(self, stored: pd.DataFrame, wait: bool) -> None:
        # The stored rows themselves: an offline DELTA delete matches on the primary key
        # and the event time (and partition columns), so the keys alone would not do.
        # ``remove_rows`` has no ``wait``: the offline delete is done when it returns.
        rows = pa.Table.from_pandas(stored[[f.name for f in self.features]], schema=arrow_schema(self.features), preserve_index=False)
        try:
            with _sdk_errors(f"delete rows of feature group '{self.name}' version {self.version}"):
                self._handle.remove_rows(_sdk_frame(rows))
        except DirectWriteUnavailable as exc:
            raise SmlError(f"{exc} (the SDK deletes rows with a direct Delta write, which {NEEDS_LOAD_BALANCERS})") from exc

    def read(self, version: int | None = None) -> pd.DataFrame:
        if not self.exists():
            raise NotFoundError(
                f"feature group '{self.name}' version {self.version} does not exist in {self._store.name}"
            )
        if version is not None:
            self._require_latest(version)
        # ``select_all().read()`` rather than ``fg.read()``: inside a scheduled Hopsworks
        # job the latter silently narrows to the job's HOPS_START_TIME/HOPS_END_TIME.
        df = self._read_query(self._select_all())
        if version is not None:
            self._require_latest(version, after_read=True)
        return df[[f.name for f in self.features]]


@dataclass
class HopsworksFeatureView(FeatureView):
    """A Hopsworks feature view; training and batch data come from the view itself."""

    handle: Any = field(default=None, repr=False, compare=False)

    def _group(self) -> HopsworksFeatureGroup:
        group = self.query.feature_group
        assert isinstance(group, HopsworksFeatureGroup)
        return group

    def _window(self, start_time: Any, end_time: Any) -> dict[str, Any]:
        if not self._group().event_time:
            return {}
        return {
            "start_time": None if start_time is None else to_utc(start_time).to_pydatetime(),
            "end_time": None if end_time is None else to_utc(end_time).to_pydatetime(),
        }

    def _sdk_extra_filter(self, extra_filter: Filter | Logic | None) -> Any:
        if extra_filter is None:
            return None
        group = self._group()
        with _sdk_errors(f"filter feature view '{self.name}' version {self.version}"):
            return group._to_sdk_filter(extra_filter)

    def _unqualified(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` with the key and event-time columns under their own names.

        The SDK returns a key or event time that the view's query does not select under
        its fully qualified name, ``<project>_<group>_<version>_<column>``
        (``hsfs/core/feature_view_engine.py``, ``_get_primary_keys_from_query`` and
        ``_get_eventtimes_from_query``); matched here by its ``_<group>_<version>_<column>``
        ending, so the project's name need not be known.
        """
        group = self._group()
        known = {f.name for f in group.features}
        renames = {}
        for column in [*group.primary_key, *([group.event_time] if group.event_time else [])]:
            if column in df.columns:
                continue
            ending = f"_{group.name}_{group.version}_{column}"
            found = [c for c in df.columns if str(c) not in known and str(c).endswith(ending)]
            if len(found) != 1:
                raise SmlError(
                    f"feature view '{self.name}' version {self.version}: Hopsworks returned no column for "
                    f"'{column}' (columns: {', '.join(map(str, df.columns))})"
                )
            renames[found[0]] = column
        return df.rename(columns=renames)

    def training_data(
        self,
        extra_filter: Filter | Logic | None = None,
        primary_key: bool = False,
        event_time: bool = False,
        start_time: Any = None,
        end_time: Any = None,
        version: int | None = None,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """See :meth:`FeatureView.training_data`; ``version`` must be the latest one."""
        group = self._group()
        if version is not None:
            group._require_latest(version)
        # Keys (and event time) always come back, so rows can be put in key order, and
        # are dropped below unless asked for or selected.
        with _sdk_errors(f"read training data of feature view '{self.name}' version {self.version}"):
            x, y = self.handle.training_data(
                **self._window(start_time, end_time),
                extra_filter=self._sdk_extra_filter(extra_filter),
                primary_key=True,
                event_time=bool(group.event_time),
                statistics_config=False,
                dataframe_type="pandas",
            )
        parts = [x.reset_index(drop=True)]
        if y is not None:
            parts.append(y.reset_index(drop=True))
        df = group._conform_read(self._unqualified(pd.concat(parts, axis=1)))
        if version is not None:
            group._require_latest(version, after_read=True)
        df = self._select(df, self._extras(primary_key, event_time))
        return df.drop(columns=[c for c in self.labels if c in df.columns]), df[self.labels]

    def get_batch_data(
        self,
        start_time: Any = None,
        end_time: Any = None,
        primary_key: bool = False,
        event_time: bool = False,
        extra_filter: Filter | Logic | None = None,
    ) -> pd.DataFrame:
        group = self._group()
        with _sdk_errors(f"read batch data of feature view '{self.name}' version {self.version}"):
            df = self.handle.get_batch_data(
                **self._window(start_time, end_time),
                extra_filter=self._sdk_extra_filter(extra_filter),
                primary_key=True,
                event_time=bool(group.event_time),
                dataframe_type="pandas",
            )
        df = group._conform_read(self._unqualified(df))
        columns = [
            c for c in dict.fromkeys([*self._extras(primary_key, event_time), *self.query.features])
            if c not in self.labels
        ]
        return df[columns].reset_index(drop=True)


class HopsworksFeatureStore(FeatureStore):
    """Feature groups and views of one Hopsworks project's feature store.

    Args:
        handle: The SDK's feature store (``project.get_feature_store()``); tests pass an
            in-memory stand-in. Use :func:`open_hopsworks_feature_store` to log in.
    """

    capabilities = Capabilities(time_travel=False, sequential_versions=False, atomic_upsert_counts=False)
    keeps_schema_order = False  # Hopsworks may list features (and keys) in another order

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._stream_new_groups = False
        """Create new groups on the streaming path (set once a direct write failed)."""

    @property
    def name(self) -> str:
        return f"Hopsworks feature store '{getattr(self._handle, 'name', '?')}'"

    def __repr__(self) -> str:
        return f"HopsworksFeatureStore({getattr(self._handle, 'name', '?')!r})"

    def _open_group(
        self, name: str, version: int, primary_key: Sequence[str], event_time: str | None, description: str,
        features: Sequence[Feature] | None,
    ) -> tuple[HopsworksFeatureGroup, bool]:
        from hsfs.feature import Feature as SdkFeature

        if features is not None:
            _check_names(f"{name}_{version}", [f.name for f in features])
        sdk_features = (
            None if features is None
            else [SdkFeature(name=f.name, type=f.type, description=f.description or None) for f in features]
        )
        handle = self._get_or_create(name, version, primary_key, event_time, description, sdk_features)
        if handle.id is not None and not self._has_data(handle, name, version):
            log.warning(
                "feature group '%s' version %d was registered by an earlier run whose first write failed and "
                "holds no data; deleting it so that this run creates it again", name, version,
            )
            handle = self._recreate(handle, name, version, primary_key, event_time, description, features)
        if handle.id is None:
            return HopsworksFeatureGroup(self, handle, name, version, primary_key, event_time, description, features), False
        return self._wrap(handle, name, version), True

    def _get_or_create(
        self, name: str, version: int, primary_key: Sequence[str], event_time: str | None, description: str,
        sdk_features: list[Any] | None,
    ) -> Any:
        if self._stream_new_groups:
            # With a declared schema the SDK writes an empty table with delta-rs when it
            # registers a group, streaming or not (``_save_empty_table``), which is what
            # fails from here: let it take the schema from the first frame instead (the
            # backend has checked that frame against the declared schema).
            sdk_features = None
        with _sdk_errors(f"get or create feature group '{name}' version {version}"):
            return self._handle.get_or_create_feature_group(
                name=name,
                version=version,
                description=description,
                primary_key=list(primary_key),
                event_time=event_time,
                features=sdk_features,
                online_enabled=False,
                time_travel_format="DELTA",
                statistics_config=False,
                stream=self._stream_new_groups,
            )

    def _has_data(self, handle: Any, name: str, version: int) -> bool:
        """Whether a registered group has had a write (an empty commit list means the
        SDK registered it and its first write failed)."""
        with _sdk_errors(f"read the commits of feature group '{name}' version {version}"):
            return bool(handle.commit_details(limit=1))

    def _recreate(
        self, handle: Any, name: str, version: int, primary_key: Sequence[str], event_time: str | None,
        description: str, features: Sequence[Feature] | None,
    ) -> Any:
        """Delete a registered group that holds no data, and get a new, unsaved one."""
        from hsfs.feature import Feature as SdkFeature

        if handle.id is not None:
            with _sdk_errors(f"delete the empty feature group '{name}' version {version}"):
                handle.delete()
        sdk_features = (
            None if not features
            else [SdkFeature(name=f.name, type=f.type, description=f.description or None) for f in features]
        )
        return self._get_or_create(name, version, primary_key, event_time, description, sdk_features)

    def _wrap(self, handle: Any, name: str, version: int) -> HopsworksFeatureGroup:
        features = [Feature(f.name, f.type, f.description or "") for f in handle.features]
        return HopsworksFeatureGroup(
            self, handle, name, version, list(handle.primary_key), handle.event_time, handle.description or "", features
        )

    def get_feature_group(self, name: str, version: int) -> HopsworksFeatureGroup:
        with _sdk_errors(f"get feature group '{name}' version {version}"):
            handle = self._handle.get_feature_group(name=name, version=version)
        if handle is None or handle.id is None:
            raise NotFoundError(f"feature group '{name}' version {version} does not exist in {self.name}")
        if not self._has_data(handle, name, version):
            raise NotFoundError(
                f"feature group '{name}' version {version} in {self.name} was registered but never written "
                "(a first insert failed); the next insert creates it again"
            )
        return self._wrap(handle, name, version)

    def _check_view_query(self, name: str, query: Query) -> None:
        group = query.feature_group
        if not isinstance(group, HopsworksFeatureGroup):
            raise SmlError(f"feature view '{name}': its query must select from a Hopsworks feature group, not {group!r}")

    def _open_view(
        self, name: str, version: int, query: Query, labels: list[str], description: str
    ) -> HopsworksFeatureView:
        group = query.feature_group
        assert isinstance(group, HopsworksFeatureGroup)  # _check_view_query
        if not group.exists():
            raise NotFoundError(
                f"feature view '{name}': feature group '{group.name}' version {group.version} has no data yet; insert first"
            )
        sdk_query = group._to_sdk_query(query)
        with _sdk_errors(f"get or create feature view '{name}' version {version}"):
            handle = self._handle.get_or_create_feature_view(
                name=name, query=sdk_query, version=version, description=description, labels=list(labels)
            )
        stored = {
            "features": sorted(f.name for f in handle.query.features),
            "filters": _filter_signature(handle.query.filters),
            "labels": sorted(handle.labels or []),
        }
        wanted = {"features": sorted(query.features), "filters": _filter_signature(sdk_query.filters), "labels": sorted(labels)}
        differ = [k for k in stored if stored[k] != wanted[k]]
        if differ:
            raise ViewChangedError(name, version, differ)
        return HopsworksFeatureView(name, version, query, labels, handle=handle)
