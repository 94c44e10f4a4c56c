"""The Hopsworks backend: the same interface as the local store, through the hopsworks
5.2.1 SDK (its Python engine, no Spark).

Selected by ``--feature-store hopsworks`` or ``SML_FEATURE_STORE=hopsworks``. Logging in
needs ``HOPSWORKS_API_KEY`` and ``HOPSWORKS_PROJECT``; ``HOPSWORKS_HOST`` is optional (the
SDK's default is the Hopsworks serverless host). Names and versions are those of the
local store, so moving a project to Hopsworks means re-running the backfill.

How the interface maps onto the SDK:

- a feature group is an offline ``DELTA`` feature group with the same name, version,
  primary key and event time (``get_or_create_feature_group``); an insert is
  ``insert(df, operation="upsert", wait=True)``, which merges by primary key; a delete
  by key is ``remove_rows(rows)`` with the stored rows of those keys (the offline delete
  matches on key and event time);
- the data version is the group's latest commit id (``commit_details(limit=1)``), a
  time in milliseconds, not a count of writes;
- a feature view is a Hopsworks feature view over ``fg.select(...).filter(...)`` with
  the same labels; ``training_data`` and ``get_batch_data`` call the view's own methods,
  with our filters translated to hsfs filters.

What the backend adds, so that both backends keep the same contract:

- every frame is checked against the declared schema (:func:`base.conform`) before
  anything is sent, so a bad frame is refused with the same error and nothing is written;
- an insert first reads the stored rows with the incoming keys and sends only new or
  changed rows: a re-run writes nothing and leaves the version as it was, the
  inserted/updated/unchanged counts are real, and ``on_change="refuse"`` is checked
  before anything is sent (in the base class, as for the local store). There is no lock across processes, so two
  writers at the same moment may get approximate counts (the data is still an upsert);
- rows come back with the local store's dtypes (UTC timestamps, int64, ...), sorted by
  primary key.

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


@contextlib.contextmanager
def _sdk_errors(action: str) -> Iterator[None]:
    """Turn the SDK's expected failures (REST errors, feature-store errors, network
    errors) into one SmlError line naming what was being done."""
    import requests
    from hopsworks_common.client.exceptions import FeatureStoreException, RestAPIError

    try:
        yield
    except (RestAPIError, FeatureStoreException, requests.exceptions.RequestException) as exc:
        raise SmlError(f"Hopsworks: cannot {action}: {_describe(exc)}") from exc


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
        with contextlib.redirect_stdout(chatter):
            handle = login(host=host, project=project or None, api_key_value=key or None)
    except Exception as exc:  # noqa: BLE001 - whatever failed, one line without the key
        # ``from None``: the chained traceback (shown with --verbose) is not needed, and
        # nothing from the failed call can then carry the key into the output.
        raise SmlError(f"cannot log in to Hopsworks {where}: {_describe(exc, key)}") from None
    finally:
        for line in chatter.getvalue().splitlines():
            if line.strip():
                log.info("hopsworks: %s", _redact(line.strip(), key))
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


def _sdk_frame(table: pa.Table) -> pd.DataFrame:
    """Rows to send: nullable integer and boolean columns keep their type in pandas (a
    plain conversion would turn an integer column with a gap into floats)."""
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype()}.get)


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
        # The SDK creates a group lazily, on its first insert; only then has it an id.
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
        sdk_query = self._handle.select(list(query.features))
        if query.filters is not None:
            sdk_query = sdk_query.filter(self._to_sdk_filter(query.filters))
        return sdk_query

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
        sdk_query = self._handle.select_all()
        first = self.primary_key[0]
        values = incoming[first].drop_duplicates()
        if len(values) <= KEY_FILTER_MAX_KEYS:
            sdk_query = sdk_query.filter(self._to_sdk_filter(Filter(first, "isin", tuple(values.tolist()))))
        return self._read_query(sdk_query)[[f.name for f in self.features]]

    def _check_feature_names(self) -> None:
        _check_names(self.label, [f.name for f in self.features])

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        # No lock across processes (see the module docstring).
        return contextlib.nullcontext()

    def _create(self, table: pa.Table, wait: bool) -> None:
        self._send(table, wait)

    def _write_changes(self, table: pa.Table, comparison: RowComparison, wait: bool) -> None:
        self._send(table.filter(pa.array(comparison.is_new | comparison.is_changed)), wait)

    def _send(self, table: pa.Table, wait: bool) -> None:
        with _sdk_errors(f"insert into feature group '{self.name}' version {self.version}"):
            self._handle.insert(_sdk_frame(table), operation="upsert", wait=wait)

    def _delete_rows(self, stored: pd.DataFrame, wait: bool) -> None:
        # The stored rows themselves: an offline DELTA delete matches on the primary key
        # and the event time (and partition columns), so the keys alone would not do.
        # ``remove_rows`` has no ``wait``: the offline delete is done when it returns.
        rows = pa.Table.from_pandas(stored[[f.name for f in self.features]], schema=arrow_schema(self.features), preserve_index=False)
        with _sdk_errors(f"delete rows of feature group '{self.name}' version {self.version}"):
            self._handle.remove_rows(_sdk_frame(rows))

    def read(self, version: int | None = None) -> pd.DataFrame:
        if not self.exists():
            raise NotFoundError(
                f"feature group '{self.name}' version {self.version} does not exist in {self._store.name}"
            )
        if version is not None:
            self._require_latest(version)
        # ``select_all().read()`` rather than ``fg.read()``: inside a scheduled Hopsworks
        # job the latter silently narrows to the job's HOPS_START_TIME/HOPS_END_TIME.
        df = self._read_query(self._handle.select_all())
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
        return None if extra_filter is None else self._group()._to_sdk_filter(extra_filter)

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
        df = group._conform_read(pd.concat(parts, axis=1))
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
        df = group._conform_read(df)
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
        with _sdk_errors(f"get or create feature group '{name}' version {version}"):
            handle = self._handle.get_or_create_feature_group(
                name=name,
                version=version,
                description=description,
                primary_key=list(primary_key),
                event_time=event_time,
                features=sdk_features,
                online_enabled=False,
                time_travel_format="DELTA",
            )
        if handle.id is None:
            return HopsworksFeatureGroup(self, handle, name, version, primary_key, event_time, description, features), False
        return self._wrap(handle, name, version), True

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
        stored = (
            sorted(f.name for f in handle.query.features),
            sorted(handle.labels or []),
            _filter_signature(handle.query.filters),
        )
        wanted = (sorted(query.features), sorted(labels), _filter_signature(sdk_query.filters))
        if stored != wanted:
            raise SchemaMismatchError(
                f"feature view '{name}' version {version} exists with a different query or labels; create a new version"
            )
        return HopsworksFeatureView(name, version, query, labels, handle=handle)
