"""The one place the site reads data: MLflow (runs, artifacts, registry) and the feature store.

Every read goes through :class:`SiteData`, which keeps a short-lived cache: a value is
reused for ``ttl_s`` seconds; after that a cheap *signature* (for runs: how many there
are and when the last one started and ended; for a feature group: its data version) says
whether the value is still good, and only a changed signature reloads it. Artifacts and
model files never change once logged and are kept (up to a bound).

Runs are read narrowly: a page names the metrics and tags it shows, and only those are
asked for. On a database-backed tracking store (``sqlite:``, ``postgresql:``, ``mysql:``)
that is one SQL query per kind of value through MLflow's own table definitions (MLflow
is pinned; a test compares the result with ``mlflow.search_runs``). Asking the
tracking API for whole runs instead costs about 15 ms a run: a minute for ten years of
daily batches. Against an HTTP tracking server the REST API is the only way in; it is
used page by page (1,000 runs a call) and its signature looks only at the newest runs.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import datetime as dt
import json
import logging
import os
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from serverless_ml import tracking
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import NotFoundError, SmlError
from serverless_ml.feature_store import FeatureGroup, FeatureStore, open_feature_store
from serverless_ml.inference.scoring import predictions_version
from serverless_ml.settings import Settings
from serverless_ml.training.promotion import CHALLENGER, CHAMPION

log = logging.getLogger(__name__)

DEFAULT_CACHE_TTL_S = 5.0
MAX_IMMUTABLE_ENTRIES = 512
MAX_RUN_VALUES = 100_000
"""Finished runs whose detail values are kept (a few numbers and short strings each)."""
EXPERIMENT_TTL_S = 300.0
REST_PAGE_SIZE = 1000
DATABASE_PROBE_TIMEOUT_S = 2
DATABASE_PROBE_TTL_S = 30.0
"""A database tracking store that answered is not probed again for this long (a failed
read in between says so anyway)."""
RUN_COLUMNS = ("run_id", "run_name", "status", "start_time", "end_time")
FINISHED = "FINISHED"
_SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


class TrackingUnavailable(SmlError):
    """The tracking store cannot be read (server down, database unreachable)."""


def dataset_option(spec: DatasetSpec) -> str:
    """How a user names the dataset on the command line: its name, or its spec file."""
    return str(spec.spec_path) if spec.spec_path is not None else spec.name


# --- per-class metrics -------------------------------------------------------------------------
# A run logs a figure of each class as ``<stem>_<class>`` (``rolling_recall_survived``,
# ``predicted_share_Setosa``). Runs logged before class names were used in metric names
# wrote the class code instead (``rolling_recall_1``). Every per-class metric the site
# reads goes through these two functions, which know both forms.


def class_metric_names(spec: DatasetSpec, stem: str) -> dict[Any, tuple[str, ...]]:
    """Per class of ``spec`` (its values, in order): the metric names a run may have logged
    ``stem`` of that class under, the class name's form first, then the class code's
    (one name when the class has no separate name)."""
    from serverless_ml.training.evaluation import class_metric_keys as name_keys, metric_key

    out: dict[Any, tuple[str, ...]] = {}
    for cls, key in zip(spec.classes, name_keys(spec.classes, spec.class_names), strict=True):
        out[cls] = tuple(dict.fromkeys((f"{stem}_{key}", f"{stem}_{metric_key(cls)}")))
    return out


def class_metric_keys(spec: DatasetSpec, *stems: str) -> tuple[str, ...]:
    """Every metric name :func:`class_metric` may read for ``stems``: what a page asks the
    tracking store for."""
    return tuple(dict.fromkeys(n for stem in stems for names in class_metric_names(spec, stem).values() for n in names))


def class_metric(runs: pd.DataFrame, spec: DatasetSpec, stem: str) -> pd.DataFrame:
    """``stem`` of each class per run: one column per class (the spec's class values, in
    order), indexed like ``runs``. A run's value under the class name is taken where it
    logged one, else its value under the class code; NaN where it logged neither.

    Args:
        runs: Runs with ``metrics.<name>`` columns (from :func:`class_metric_keys`).
        spec: The dataset (its classes and class names).
        stem: The metric without its class (``rolling_precision``, ``predicted_share``).
    """
    columns = {}
    for cls, names in class_metric_names(spec, stem).items():
        value = pd.Series(float("nan"), index=runs.index)
        for name in names:
            if f"metrics.{name}" in runs:
                value = value.fillna(runs[f"metrics.{name}"].astype(float))
        columns[cls] = value
    return pd.DataFrame(columns, index=runs.index, columns=list(spec.classes))


def _is_sql_uri(uri: str) -> bool:
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0]
    return scheme in _SQL_SCHEMES


def sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (``None`` for other URIs or in-memory databases)."""
    if not uri.startswith("sqlite:///"):
        return None
    raw = uri.removeprefix("sqlite:///").split("?")[0]
    return None if raw in ("", ":memory:") else Path(raw)


def read_only_sql_url(uri: str) -> str:
    """The URL the site reads a database-backed store with: SQLite is opened read-only,
    so the site can never write (nor create) a tracking database."""
    path = sqlite_path(uri)
    if path is None:
        return uri
    return f"sqlite:///file:{urllib.parse.quote(str(path))}?mode=ro&uri=true"


def _prefixed(kind: str, keys: Sequence[str]) -> list[str]:
    return [f"{kind}.{k}" for k in keys]


def _empty_runs(metrics: Sequence[str], tags: Sequence[str]) -> pd.DataFrame:
    columns = [*RUN_COLUMNS[1:], *_prefixed("metrics", metrics), *_prefixed("tags", tags)]
    frame = pd.DataFrame(columns=columns, index=pd.Index([], name="run_id", dtype=object))
    for column in _prefixed("metrics", metrics):
        frame[column] = frame[column].astype(float)
    return frame


def assemble_runs(
    runs: pd.DataFrame, metrics: pd.DataFrame, tags: pd.DataFrame, metric_keys: Sequence[str], tag_keys: Sequence[str]
) -> pd.DataFrame:
    """Runs (``run_id, run_name, status, start_time, end_time``) joined with wide frames of
    metric and tag values indexed by run id: one row per run, ``metrics.<key>`` and
    ``tags.<key>`` columns (missing values NaN / None), indexed by run id."""
    if runs.empty:
        return _empty_runs(metric_keys, tag_keys)
    out = runs.set_index("run_id")
    out.index.name = "run_id"
    if metric_keys:
        wide = metrics.reindex(index=out.index, columns=list(metric_keys)).astype(float)
        wide.columns = _prefixed("metrics", metric_keys)
        out = out.join(wide)
    if tag_keys:
        wide = tags.reindex(index=out.index, columns=list(tag_keys)).astype(object)
        wide = wide.where(wide.notna(), None)
        wide.columns = _prefixed("tags", tag_keys)
        out = out.join(wide)
    return out


def runs_frame(
    runs: pd.DataFrame, metrics: pd.DataFrame, tags: pd.DataFrame, metric_keys: Sequence[str], tag_keys: Sequence[str]
) -> pd.DataFrame:
    """:func:`assemble_runs` from long frames of ``run_id, key, value`` metrics and tags."""

    def wide(long: pd.DataFrame) -> pd.DataFrame:
        return long.pivot(index="run_id", columns="key", values="value") if not long.empty else pd.DataFrame()

    return assemble_runs(runs, wide(metrics), wide(tags), metric_keys, tag_keys)


def _params_frame(wide: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Params of runs (a frame indexed by run id, one column per key) as ``params.<key>``
    columns of strings (``None`` where a run lacks one)."""
    frame = wide.reindex(columns=list(keys)).astype(object)
    frame = frame.where(frame.notna(), None)
    frame.columns = _prefixed("params", keys)
    frame.index = pd.Index([str(r) for r in frame.index], name="run_id", dtype=object)
    return frame


def _fetch(conn: Any, query: Any) -> list[tuple[Any, ...]]:
    """Rows of ``query`` as the database driver returns them: SQLAlchemy's row objects cost
    more than the query itself for thousands of rows."""
    return conn.execute(query).cursor.fetchall()


@dataclass(frozen=True)
class RunSelection:
    """Which runs of an experiment a :class:`RunReader` reads (see :meth:`RunReader.read`)."""

    experiment_id: str
    statuses: Sequence[str] | None
    parent_run_id: str | None
    since: tuple[int | None, int | None] | None
    run_ids: Sequence[str] | None


class RunReader(abc.ABC):
    """Reads runs of the tracking store: :class:`SqlRunReader` from its database,
    :class:`RestRunReader` through a tracking server."""

    kind: ClassVar[str]

    def read(
        self,
        experiment_id: str,
        metrics: Sequence[str],
        tags: Sequence[str],
        statuses: Sequence[str] | None = (FINISHED,),
        parent_run_id: str | None = None,
        since: tuple[int | None, int | None] | None = None,
        run_ids: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Runs with the named metrics and tags; ``since=(start, end)``: only the runs
        started or ended at or after those times (milliseconds); ``run_ids``: only these."""
        return self._read(RunSelection(experiment_id, statuses, parent_run_id, since, run_ids), metrics, tags)

    @abc.abstractmethod
    def _read(self, selection: RunSelection, metrics: Sequence[str], tags: Sequence[str]) -> pd.DataFrame:
        """:meth:`read` of the selected runs."""

    @abc.abstractmethod
    def read_params(self, experiment_id: str, keys: Sequence[str]) -> pd.DataFrame:
        """The named params (strings) of the experiment's finished runs: one row per run
        that has any of them, ``params.<key>`` columns, indexed by run id."""

    @abc.abstractmethod
    def signature(self, experiment_id: str) -> Hashable:
        """A cheap value that changes when runs of the experiment are added or finish."""

    def close(self) -> None:  # noqa: B027 - a no-op by default, not abstract: readers without connections keep it
        """Let go of connections (nothing to do unless the reader holds some)."""


class SqlRunReader(RunReader):
    """Narrow reads of runs straight from a database-backed MLflow store."""

    kind = "sql"

    def __init__(self, uri: str) -> None:
        import sqlalchemy

        path = sqlite_path(uri)
        if path is not None and not path.is_file():
            raise NotFoundError(f"no MLflow tracking database at {path} yet: run `sml train` first")
        self.engine = sqlalchemy.create_engine(read_only_sql_url(uri))

    @staticmethod
    def _tables() -> tuple[Any, Any, Any]:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun, SqlTag

        return SqlRun.__table__, SqlTag.__table__, SqlLatestMetric.__table__

    def _selected_runs(self, selection: RunSelection) -> Any:
        import sqlalchemy as sa

        runs, tags, _ = self._tables()
        query = sa.select(runs.c.run_uuid).where(
            runs.c.experiment_id == int(selection.experiment_id), runs.c.lifecycle_stage == "active"
        )
        if selection.statuses:
            query = query.where(runs.c.status.in_(list(selection.statuses)))
        if selection.parent_run_id is not None:
            children = sa.select(tags.c.run_uuid).where(
                tags.c.key == tracking.PARENT_RUN_TAG, tags.c.value == selection.parent_run_id
            )
            query = query.where(runs.c.run_uuid.in_(children))
        if selection.run_ids is not None:
            query = query.where(runs.c.run_uuid.in_(list(selection.run_ids)))
        if selection.since is not None:
            started, ended = selection.since
            changed = [runs.c.start_time >= (started or 0)]
            if ended is not None:
                changed.append(runs.c.end_time >= ended)
            query = query.where(sa.or_(*changed))
        return query

    @staticmethod
    def _pivot(conn: Any, table: Any, value: Any, keys: Sequence[str], selected: Any) -> pd.DataFrame:
        """One row per run, one column per key: the database does the pivot, so only as
        many rows as runs come back."""
        import sqlalchemy as sa

        columns = [sa.func.max(sa.case((table.c.key == key, value), else_=sa.null())) for key in keys]
        rows = _fetch(conn, (
            sa.select(table.c.run_uuid, *columns)
            .where(table.c.run_uuid.in_(selected), table.c.key.in_(list(keys)))
            .group_by(table.c.run_uuid)
        ))
        return pd.DataFrame.from_records(rows, columns=["run_id", *keys]).set_index("run_id")

    def _read(self, selection: RunSelection, metrics: Sequence[str], tags: Sequence[str]) -> pd.DataFrame:
        import sqlalchemy as sa

        runs_t, tags_t, metrics_t = self._tables()
        selected = self._selected_runs(selection)
        with self.engine.connect() as conn:
            runs = pd.DataFrame.from_records(
                _fetch(conn, sa.select(runs_t.c.run_uuid, runs_t.c.name, runs_t.c.status, runs_t.c.start_time,
                                       runs_t.c.end_time).where(runs_t.c.run_uuid.in_(selected))),
                columns=list(RUN_COLUMNS),
            )
            metric_wide = tag_wide = pd.DataFrame()
            if metrics and not runs.empty:
                value = sa.case((metrics_t.c.is_nan == sa.true(), sa.null()), else_=metrics_t.c.value)
                metric_wide = self._pivot(conn, metrics_t, value, metrics, selected)
            if tags and not runs.empty:
                tag_wide = self._pivot(conn, tags_t, tags_t.c.value, tags, selected)
        return assemble_runs(runs, metric_wide, tag_wide, metrics, tags)

    def read_values(self, run_ids: Sequence[str], metrics: Sequence[str], tags: Sequence[str]) -> pd.DataFrame:
        """The named metrics and tags of a few runs (two indexed queries), as wide frames
        ``metrics.<key>``/``tags.<key>`` indexed by run id."""
        import sqlalchemy as sa

        _, tags_t, metrics_t = self._tables()
        ids = list(run_ids)
        with self.engine.connect() as conn:
            metric_rows = _fetch(conn, sa.select(metrics_t.c.run_uuid, metrics_t.c.key, metrics_t.c.value, metrics_t.c.is_nan)
                                 .where(metrics_t.c.run_uuid.in_(ids), metrics_t.c.key.in_(list(metrics)))) if metrics else []
            tag_rows = _fetch(conn, sa.select(tags_t.c.run_uuid, tags_t.c.key, tags_t.c.value)
                              .where(tags_t.c.run_uuid.in_(ids), tags_t.c.key.in_(list(tags)))) if tags else []
        values: dict[str, dict[str, Any]] = {r: {} for r in ids}
        for run_id, key, value, is_nan in metric_rows:
            values[run_id][f"metrics.{key}"] = float("nan") if is_nan else value
        for run_id, key, value in tag_rows:
            values[run_id][f"tags.{key}"] = value
        columns = [*_prefixed("metrics", metrics), *_prefixed("tags", tags)]
        return pd.DataFrame.from_dict(values, orient="index").reindex(columns=columns)

    def read_params(self, experiment_id: str, keys: Sequence[str]) -> pd.DataFrame:
        from mlflow.store.tracking.dbmodels.models import SqlParam

        keys = list(dict.fromkeys(keys))
        if not keys:
            return _params_frame(pd.DataFrame(), keys)
        selected = self._selected_runs(RunSelection(experiment_id, (FINISHED,), None, None, None))
        with self.engine.connect() as conn:
            wide = self._pivot(conn, SqlParam.__table__, SqlParam.__table__.c.value, keys, selected)
        return _params_frame(wide, keys)

    def signature(self, experiment_id: str) -> Hashable:
        import sqlalchemy as sa

        runs, _, _ = self._tables()
        active = runs.c.lifecycle_stage == "active"
        query = sa.select(
            sa.func.sum(sa.case((active, 1), else_=0)),
            sa.func.max(sa.case((active, runs.c.start_time), else_=None)),
            sa.func.max(sa.case((active, runs.c.end_time), else_=None)),
            sa.func.sum(sa.case((active & (runs.c.status == FINISHED), 1), else_=0)),
            # Runs deleted (`--replace` deletes the runs of rewritten days): a change here
            # means rows went away, which the four figures above may not show.
            sa.func.sum(sa.case((active, 0), else_=1)),
        ).where(runs.c.experiment_id == int(experiment_id))
        with self.engine.connect() as conn:
            return tuple(0 if value is None and i in (0, 3, 4) else value for i, value in enumerate(conn.execute(query).one()))

    def close(self) -> None:
        self.engine.dispose()


class RestRunReader(RunReader):
    """Reads runs through the tracking API (an HTTP tracking server)."""

    kind = "rest"

    def __init__(self, client: Any) -> None:
        self.client = client

    @staticmethod
    def _filter(statuses: Sequence[str] | None, parent_run_id: str | None) -> str:
        clauses = []
        if statuses and len(statuses) == 1:
            clauses.append(f"attributes.status = '{statuses[0]}'")
        elif statuses:
            quoted = ", ".join(f"'{s}'" for s in statuses)
            clauses.append(f"attributes.status IN ({quoted})")
        if parent_run_id is not None:
            clauses.append(f"tags.`{tracking.PARENT_RUN_TAG}` = '{parent_run_id}'")
        return " AND ".join(clauses)

    def _read(self, selection: RunSelection, metrics: Sequence[str], tags: Sequence[str]) -> pd.DataFrame:
        experiment_id, statuses = selection.experiment_id, selection.statuses
        if selection.since is not None:
            raise ValueError("the REST reader reads whole experiments only")
        if selection.run_ids is not None:
            return self._read_ids(experiment_id, metrics, tags, statuses, list(selection.run_ids))
        pages, token = [], None
        while True:
            page = self.client.search_runs(
                [experiment_id], filter_string=self._filter(statuses, selection.parent_run_id),
                max_results=REST_PAGE_SIZE, page_token=token,
            )
            pages.append(self._frame(page, metrics, tags))
            token = page.token
            if not token:
                break
        return pd.concat(pages) if len(pages) > 1 else pages[0]

    def _read_ids(
        self, experiment_id: str, metrics: Sequence[str], tags: Sequence[str], statuses: Sequence[str] | None,
        run_ids: list[str],
    ) -> pd.DataFrame:
        frames = []
        for start in range(0, len(run_ids), 100):
            chunk = ", ".join(f"'{r}'" for r in run_ids[start : start + 100])
            clauses = [c for c in (self._filter(statuses, None), f"attributes.run_id IN ({chunk})") if c]
            page = self.client.search_runs([experiment_id], filter_string=" AND ".join(clauses), max_results=200)
            frames.append(self._frame(page, metrics, tags))
        return pd.concat(frames) if frames else _empty_runs(metrics, tags)

    @staticmethod
    def _frame(page: Sequence[Any], metrics: Sequence[str], tags: Sequence[str]) -> pd.DataFrame:
        wanted_metrics, wanted_tags = set(metrics), set(tags)
        runs, metric_rows, tag_rows = [], [], []
        for run in page:
            info = run.info
            runs.append((info.run_id, info.run_name, info.status, info.start_time, info.end_time))
            metric_rows += [(info.run_id, k, v) for k, v in run.data.metrics.items() if k in wanted_metrics]
            tag_rows += [(info.run_id, k, v) for k, v in run.data.tags.items() if k in wanted_tags]
        return runs_frame(
            pd.DataFrame(runs, columns=list(RUN_COLUMNS)),
            pd.DataFrame(metric_rows, columns=["run_id", "key", "value"]),
            pd.DataFrame(tag_rows, columns=["run_id", "key", "value"]),
            metrics, tags,
        )

    def read_params(self, experiment_id: str, keys: Sequence[str]) -> pd.DataFrame:
        wanted = list(dict.fromkeys(keys))
        values: dict[str, dict[str, str]] = {}
        token = None
        while wanted:
            page = self.client.search_runs([experiment_id], filter_string=self._filter((FINISHED,), None),
                                           max_results=REST_PAGE_SIZE, page_token=token)
            for run in page:
                found = {k: v for k, v in run.data.params.items() if k in wanted}
                if found:
                    values[run.info.run_id] = found
            token = page.token
            if not token:
                break
        wide = pd.DataFrame.from_dict(values, orient="index")
        return _params_frame(wide, wanted)

    def signature(self, experiment_id: str) -> Hashable:
        from mlflow.entities import ViewType

        newest = self.client.search_runs([experiment_id], max_results=5, order_by=["attributes.start_time DESC"])
        # Runs deleted by `--replace` are gone without a newer run to show it.
        deleted = self.client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY, max_results=5,
                                          order_by=["attributes.start_time DESC"])
        return (tuple((r.info.run_id, r.info.status, r.info.end_time) for r in newest),
                tuple(r.info.run_id for r in deleted))


@dataclass(frozen=True)
class ModelVersion:
    """A registered version as the site shows it."""

    name: str
    version: int
    aliases: tuple[str, ...]
    created: dt.datetime
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def training_run_id(self) -> str | None:
        return self.tags.get("training_run_id") or self.run_id

    @property
    def holdout_accuracy(self) -> float | None:
        value = self.tags.get("holdout_accuracy")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


@dataclass(frozen=True)
class RunDetails:
    """A single run's metrics, params and tags (training runs)."""

    run_id: str
    experiment_id: str
    name: str | None
    status: str
    start_time: int | None
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]


@dataclass
class _Entry:
    checked_at: float
    signature: Hashable
    value: Any


_ALWAYS_RELOAD = object()


class SiteData:
    """Cached reads of one tracking store and one feature store.

    Args:
        settings: Where MLflow and the feature store are.
        ttl_s: How long a value is reused before its signature is checked again.
        monotonic: The clock of the cache (tests pass a fake one).
    """

    def __init__(
        self,
        settings: Settings,
        ttl_s: float = DEFAULT_CACHE_TTL_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.tracking_uri = settings.tracking_uri
        self.ttl_s = ttl_s
        self._monotonic = monotonic
        self._entries: dict[Hashable, _Entry] = {}
        self._immutable: collections.OrderedDict[Hashable, Any] = collections.OrderedDict()
        self._run_values: dict[Hashable, tuple[Any, ...]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()
        self._client: Any = None
        self._reader: RunReader | None = None
        self._store: FeatureStore | None = None
        self.stats: collections.Counter[str] = collections.Counter()

    # --- plumbing -------------------------------------------------------------------------

    @property
    def tracking_label(self) -> str:
        """The tracking URI, safe to show (no password)."""
        return tracking.redact_uri(self.tracking_uri)

    def _lock_for(self, key: Hashable) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def cached(
        self, key: Hashable, load: Callable[[], Any], signature: Callable[[], Hashable] | None = None,
        ttl_s: float | None = None,
    ) -> Any:
        """``load()``'s value, reused for ``ttl_s`` (default: the cache's); after that reused
        again while ``signature()`` is unchanged (no signature: reloaded)."""
        with self._lock_for(key):
            now = self._monotonic()
            entry = self._entries.get(key)
            if entry is not None and now - entry.checked_at < (self.ttl_s if ttl_s is None else ttl_s):
                self.stats["hit"] += 1
                return entry.value
            current = signature() if signature is not None else _ALWAYS_RELOAD
            if entry is not None and current is not _ALWAYS_RELOAD and current == entry.signature:
                entry.checked_at = now
                self.stats["revalidated"] += 1
                return entry.value
            self.stats["load"] += 1
            value = load()
            self._entries[key] = _Entry(self._monotonic(), current, value)
            return value

    def immutable(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """A value that never changes once it exists (artifacts, model files)."""
        with self._lock_for(("immutable", key)):
            if key in self._immutable:
                self._immutable.move_to_end(key)
                return self._immutable[key]
            value = load()
            self._immutable[key] = value
            while len(self._immutable) > MAX_IMMUTABLE_ENTRIES:
                self._immutable.popitem(last=False)
            return value

    def clear(self) -> None:
        """Forget everything cached."""
        with self._guard:
            self._entries.clear()
            self._immutable.clear()
            self._run_values.clear()

    @contextlib.contextmanager
    def _tracking_errors(self) -> Iterator[None]:
        """Connection failures become one line naming the (redacted) tracking URI."""
        try:
            yield
        except SmlError:
            raise
        except Exception as exc:
            if _is_connection_error(exc):
                reason = tracking.first_line(exc, self.tracking_uri)[:200]
                raise TrackingUnavailable(f"the MLflow tracking store {self.tracking_label} cannot be read ({reason})") from None
            raise

    def check_tracking(self) -> None:
        """Fail in one line, within seconds, when the tracking store cannot be reached: an
        HTTP server that does not answer, a database server that refuses or does not
        answer, a SQLite file that is damaged (an answer is cached briefly). MLflow's own
        client would retry for minutes, and a page would time out."""
        if _is_sql_uri(self.tracking_uri):
            self._check_database()
            return
        if not self.tracking_uri.startswith(("http://", "https://")):
            return

        def probe() -> bool:
            # Without the user and password: urllib would take "user:password@host" for
            # the host name (the server's /health needs no login).
            parts = urllib.parse.urlsplit(self.tracking_uri)
            netloc = parts.hostname or ""
            if parts.port:
                netloc += f":{parts.port}"
            tracking.check_tracking_reachable(urllib.parse.urlunsplit(parts._replace(netloc=netloc)), timeout_s=2.0)
            return True

        try:
            self.cached(("reachable",), probe)
        except SmlError as exc:
            reason = str(exc).rsplit(" cannot be reached ", 1)[-1]
            raise TrackingUnavailable(f"MLflow tracking server {self.tracking_label} cannot be reached {reason}") from None

    def _check_database(self) -> None:
        uri = self.tracking_uri

        def probe() -> bool:
            path = sqlite_path(uri)
            if path is not None:
                if path.is_file():
                    tracking.check_sqlite_database(path, "MLflow tracking database")
                return True
            dialect = urllib.parse.urlsplit(uri).scheme.split("+")[0]
            tracking.probe_database(
                uri, {"connect_timeout": DATABASE_PROBE_TIMEOUT_S} if dialect in ("postgresql", "mysql") else {},
                invalid=f"MLflow tracking URI {self.tracking_label} is not usable",
                unreachable=f"MLflow tracking database {self.tracking_label} is unreachable",
            )
            return True

        try:
            self.cached(("reachable",), probe, ttl_s=max(self.ttl_s, DATABASE_PROBE_TTL_S))
        except SmlError as exc:
            if isinstance(exc, TrackingUnavailable) or sqlite_path(uri) is not None:
                raise  # a damaged SQLite file: its own message says what to do
            raise TrackingUnavailable(str(exc)) from None

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            path = sqlite_path(self.tracking_uri)
            if path is not None and not path.is_file():
                # MlflowClient would create (and migrate) an empty database here.
                raise NotFoundError(f"no MLflow tracking database at {path} yet: run `sml train` first")
            self.check_tracking()
            with self._tracking_errors():
                self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    @property
    def reader(self) -> RunReader:
        if self._reader is None:
            self.check_tracking()
            if _is_sql_uri(self.tracking_uri):
                with self._tracking_errors():
                    self._reader = SqlRunReader(self.tracking_uri)
            else:
                self._reader = RestRunReader(self.client)
        return self._reader

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = open_feature_store(self.settings)
        return self._store

    def warm_up(self) -> None:
        """Import MLflow and open the tracking store, so the first visitor does not wait
        for it. Problems are logged: the pages report them when they are visited."""
        try:
            self.check_tracking()
            _ = self.client, self.reader
        except Exception as exc:  # noqa: BLE001 - the site starts anyway
            log.warning("tracking store not ready at start-up: %s", tracking.first_line(exc, self.tracking_uri))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    # --- experiments and runs ------------------------------------------------------------

    def experiment_id(self, name: str) -> str | None:
        """The id of an active experiment, or ``None``."""
        self.check_tracking()

        def load() -> str | None:
            with self._tracking_errors():
                experiment = self.client.get_experiment_by_name(name)
            if experiment is None or experiment.lifecycle_stage != "active":
                return None
            return str(experiment.experiment_id)

        # Experiments are created once and not renamed: their ids are kept longer.
        return self.cached(("experiment", name), load, ttl_s=max(self.ttl_s, EXPERIMENT_TTL_S))

    def runs(
        self,
        experiment: str,
        metrics: Sequence[str] = (),
        tags: Sequence[str] = (),
        statuses: Sequence[str] | None = (FINISHED,),
        parent_run_id: str | None = None,
    ) -> pd.DataFrame | None:
        """Runs of ``experiment`` with only the named metrics and tags (``None`` when the
        experiment does not exist)."""
        experiment_id = self.experiment_id(experiment)
        if experiment_id is None:
            return None
        metrics, tags = tuple(dict.fromkeys(metrics)), tuple(dict.fromkeys(tags))
        reader = self.reader
        statuses = tuple(statuses or ())
        key = ("runs", experiment_id, metrics, tags, statuses, parent_run_id)

        def read(since: tuple[int | None, int | None] | None = None) -> pd.DataFrame:
            with self._tracking_errors():
                return reader.read(experiment_id, metrics, tags, statuses or None, parent_run_id, since)

        incremental = reader.kind == "sql" and statuses == (FINISHED,) and parent_run_id is None
        with self._lock_for(key):
            now = self._monotonic()
            entry = self._entries.get(key)
            if entry is not None and now - entry.checked_at < self.ttl_s:
                self.stats["runs_hit"] += 1
                return entry.value
            current = self.runs_signature(experiment)
            if entry is not None and current == entry.signature:
                entry.checked_at = now
                self.stats["runs_revalidated"] += 1
                return entry.value
            value = None
            if incremental and entry is not None and _grew(entry.signature, current):
                # Runs are written once: read only those started or ended since the cached
                # ones; anything else (a deleted or restored run) shows in the count.
                delta = read(since=(entry.signature[1], entry.signature[2]))
                merged = pd.concat([entry.value.drop(delta.index, errors="ignore"), delta])
                if len(merged) == current[3]:
                    value = merged
                    self.stats["runs_incremental"] += 1
            if value is None:
                value = read()
                self.stats["runs_read"] += 1
            self._entries[key] = _Entry(self._monotonic(), current, value)
            return value

    def run_values(
        self, experiment: str, run_ids: Sequence[str], metrics: Sequence[str] = (), tags: Sequence[str] = ()
    ) -> pd.DataFrame:
        """The named metrics and tags of a few finished runs (say, the latest one and those
        with an alert), in one query for those not read before: a finished run's values
        do not change, so each is kept once read."""
        experiment_id = self.experiment_id(experiment)
        metrics, tags = tuple(dict.fromkeys(metrics)), tuple(dict.fromkeys(tags))
        if experiment_id is None or not run_ids:
            return _empty_runs(metrics, tags)
        wanted = list(dict.fromkeys(str(r) for r in run_ids))
        known = {r: self._run_values.get((r, metrics, tags)) for r in wanted}
        missing = [r for r, row in known.items() if row is None]
        columns = [*_prefixed("metrics", metrics), *_prefixed("tags", tags)]
        if missing:
            self.stats["values_read"] += len(missing)
            reader = self.reader
            with self._tracking_errors():
                if isinstance(reader, SqlRunReader):
                    fresh = reader.read_values(missing, metrics, tags)
                else:
                    fresh = reader.read(experiment_id, metrics, tags, (FINISHED,), None, None, missing)
            with self._guard:
                if len(self._run_values) > MAX_RUN_VALUES:
                    self._run_values.clear()
                for run_id, values in zip(fresh.index, fresh[columns].itertuples(index=False, name=None), strict=True):
                    self._run_values[(str(run_id), metrics, tags)] = known[str(run_id)] = values
        found = {r: v for r, v in known.items() if v is not None}
        if not found:  # none of them is a finished run of the experiment (a forged id, say)
            return _empty_runs(metrics, tags)
        frame = pd.DataFrame.from_records(list(found.values()), columns=columns, index=list(found))
        frame.index.name = "run_id"
        for column in _prefixed("metrics", metrics):
            frame[column] = frame[column].astype(float)
        return frame

    def _runs_signature(self, experiment_id: str) -> Hashable:
        with self._tracking_errors():
            return self.reader.signature(experiment_id)

    def runs_signature(self, experiment: str) -> Hashable:
        """Changes whenever a run of ``experiment`` is added, finished or deleted."""
        experiment_id = self.experiment_id(experiment)
        if experiment_id is None:
            return None
        return self.cached(("signature", experiment_id), lambda: self._runs_signature(experiment_id))

    def run_params(self, experiment: str, keys: Sequence[str]) -> pd.DataFrame:
        """The named params of every finished run of ``experiment`` (say, the thresholds a
        monitoring run judged drift with): ``params.<key>`` columns of strings, indexed by
        run id; runs that logged none of them are left out. Read again only when the runs'
        signature changes (a run's params never change once logged)."""
        keys = tuple(dict.fromkeys(keys))
        experiment_id = self.experiment_id(experiment)
        if experiment_id is None or not keys:
            return _params_frame(pd.DataFrame(), keys)

        def load() -> pd.DataFrame:
            self.stats["params_read"] += 1
            with self._tracking_errors():
                return self.reader.read_params(experiment_id, keys)

        return self.cached(("params", experiment_id, keys), load, signature=lambda: self.runs_signature(experiment))

    def monitoring_runs(self, spec: DatasetSpec, metrics: Sequence[str] = (), tags: Sequence[str] = ()) -> pd.DataFrame:
        """Finished monitoring runs of the dataset, oldest batch first, with ``as_of`` (the
        batch date; runs without one are left out) and ``as_of_text`` (``YYYY-MM-DD``)
        columns besides the named metrics and tags.

        Raises:
            NotFoundError: there is no monitoring run yet.
        """
        frame = self.runs(tracking.monitoring_experiment(spec.name), metrics, ("as_of", *tags))
        if frame is None or frame.empty:
            raise NotFoundError(
                f"no monitoring runs for {spec.name} yet: run `sml infer --dataset {dataset_option(spec)}` "
                f"(after `sml features` and `sml train`)"
            )

        def ordered() -> tuple[pd.DataFrame, pd.DataFrame]:
            # Batch inference writes the date as YYYY-MM-DD; a run without a readable
            # batch date has no place on a time axis.
            dated = frame.assign(as_of=pd.to_datetime(frame["tags.as_of"], format="%Y-%m-%d", errors="coerce"))
            dated = dated[dated["as_of"].notna()].sort_values(["as_of", "start_time"], kind="stable")
            return frame, dated.assign(as_of_text=dated["tags.as_of"].astype(str))

        # Sorted once per version of the runs (the pair holds the frame: its id is not reused).
        _, dated = self.cached(("dated", spec.name, tuple(metrics), tuple(tags)), ordered, signature=lambda: id(frame))
        return dated

    def run_json(self, run_id: str, path: str) -> dict[str, Any] | None:
        """A JSON artifact of a run (``None`` when the run did not log it)."""

        def load() -> dict[str, Any] | None:
            with self._tracking_errors(), tempfile.TemporaryDirectory() as tmp:
                try:
                    local = self.client.download_artifacts(run_id, path, tmp)
                except Exception as exc:  # noqa: BLE001 - a missing artifact is an answer
                    if _is_connection_error(exc):
                        raise
                    return None
                return json.loads(Path(local).read_text(encoding="utf-8"))

        return self.immutable(("json", run_id, path), load)

    def run_details(self, run_id: str) -> RunDetails | None:
        """Metrics, params and tags of one run (``None`` when it does not exist)."""

        def load() -> RunDetails | None:
            from mlflow.exceptions import MlflowException

            with self._tracking_errors():
                try:
                    run = self.client.get_run(run_id)
                except MlflowException as exc:
                    if _is_connection_error(exc):
                        raise
                    return None
            return RunDetails(
                run_id=run.info.run_id, experiment_id=str(run.info.experiment_id), name=run.info.run_name,
                status=run.info.status, start_time=run.info.start_time, metrics=dict(run.data.metrics),
                params=dict(run.data.params), tags=dict(run.data.tags),
            )

        return self.cached(("run", run_id), load)

    def trials(self, spec: DatasetSpec, training_run_id: str) -> pd.DataFrame:
        """The nested trial runs of a training run: trial number, state, mean CV accuracy."""
        frame = self.runs(
            tracking.training_experiment(spec.name), metrics=("val_accuracy_mean",),
            tags=("trial_number", "trial_state"), statuses=None, parent_run_id=training_run_id,
        )
        if frame is None or frame.empty:
            return pd.DataFrame(columns=["trial_number", "state", "val_accuracy_mean", "run_id"])
        out = pd.DataFrame({
            "trial_number": pd.to_numeric(frame["tags.trial_number"], errors="coerce"),
            "state": frame["tags.trial_state"].fillna(frame["status"]),
            "val_accuracy_mean": frame["metrics.val_accuracy_mean"],
            "run_id": frame.index,
        })
        return out.dropna(subset=["trial_number"]).sort_values("trial_number").reset_index(drop=True)

    # --- the registry ----------------------------------------------------------------------

    def model_versions(self, spec: DatasetSpec) -> list[ModelVersion]:
        """Registered versions of the dataset's model, newest first (empty: none yet)."""
        self.check_tracking()
        name = tracking.model_name(spec.name)

        def load() -> list[ModelVersion]:
            from mlflow.exceptions import MlflowException

            with self._tracking_errors():
                try:
                    model = self.client.get_registered_model(name)
                except MlflowException as exc:
                    if _is_connection_error(exc):
                        raise
                    return []
                versions = self.client.search_model_versions(f"name='{name}'")
            aliases: dict[str, list[str]] = collections.defaultdict(list)
            for alias, version in (model.aliases or {}).items():
                aliases[str(version)].append(alias)
            out = [_model_version(name, v, aliases.get(str(v.version), [])) for v in versions]
            return sorted(out, key=lambda v: -v.version)

        return self.cached(("versions", name), load)

    def champion(self, spec: DatasetSpec) -> ModelVersion | None:
        """The version behind ``@champion`` (``None``: no champion yet), in one registry call."""
        self.check_tracking()
        name = tracking.model_name(spec.name)

        def load() -> ModelVersion | None:
            from mlflow.exceptions import MlflowException

            with self._tracking_errors():
                try:
                    version = self.client.get_model_version_by_alias(name, CHAMPION)
                except MlflowException as exc:
                    if _is_connection_error(exc):
                        raise
                    return None
            return _model_version(name, version, list(version.aliases or [CHAMPION]))

        return self.cached(("champion", name), load)

    def champion_model(self, spec: DatasetSpec) -> tuple[ModelVersion, Any]:
        """The champion version and its loaded scikit-learn pipeline.

        Raises:
            NotFoundError: the dataset has no champion yet.
        """
        champion = self.champion(spec)
        if champion is None:
            raise NotFoundError(
                f"model '{tracking.model_name(spec.name)}' has no champion yet: "
                f"run `sml train --dataset {dataset_option(spec)}` first"
            )

        def load() -> Any:
            import mlflow

            with self._tracking_errors():
                source = self.client.get_model_version_download_uri(champion.name, str(champion.version))
                local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=self.tracking_uri)
            return mlflow.sklearn.load_model(local)

        return champion, self.immutable(("model", champion.name, champion.version), load)

    # --- the feature store -----------------------------------------------------------------

    def _group(self, name: str, version: int) -> FeatureGroup:
        return self.store.get_feature_group(name, version)

    def _group_rows(self, name: str, version: int, missing: str) -> pd.DataFrame:
        def group() -> FeatureGroup:
            try:
                return self._group(name, version)
            except NotFoundError:
                raise NotFoundError(missing) from None

        def signature() -> Hashable:
            return group().data_version()

        return self.cached(("group", name, version), lambda: group().read(), signature)

    def feature_rows(self, spec: DatasetSpec) -> pd.DataFrame:
        """Every row of the dataset's feature group (raises NotFoundError before the backfill)."""
        return self._group_rows(
            spec.name, spec.version,
            f"no data yet for {spec.name}: run `sml features --dataset {dataset_option(spec)}` first",
        )

    def predictions(self, spec: DatasetSpec) -> pd.DataFrame:
        """Every prediction of the dataset's champions, next to the actual labels."""
        return self._group_rows(
            spec.predictions_group, predictions_version(spec),
            f"no predictions for {spec.name} yet: run `sml infer --dataset {dataset_option(spec)}` "
            "(after `sml features` and `sml train`)",
        )

    def training_keys(self, spec: DatasetSpec, training_run_id: str) -> pd.Series | None:
        """Keys of the rows a training run fitted on (``None`` when it logged none)."""

        def load() -> pd.Series | None:
            with self._tracking_errors(), tempfile.TemporaryDirectory() as tmp:
                try:
                    local = self.client.download_artifacts(training_run_id, tracking.TRAINING_KEYS_ARTIFACT, tmp)
                except Exception as exc:  # noqa: BLE001 - a model registered elsewhere has no keys
                    if _is_connection_error(exc):
                        raise
                    return None
                keys = pd.read_parquet(local)
            if spec.primary_key not in keys or "split" not in keys:
                return None
            return keys.loc[keys["split"] == "train", spec.primary_key].reset_index(drop=True)

        return self.immutable(("keys", training_run_id), load)


def _model_version(name: str, version: Any, aliases: Sequence[str]) -> ModelVersion:
    order = {CHAMPION: 0, CHALLENGER: 1}
    return ModelVersion(
        name=name, version=int(version.version),
        aliases=tuple(sorted(set(aliases), key=lambda a: (order.get(a, 9), a))),
        created=dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.timezone.utc),
        run_id=version.run_id, tags=dict(version.tags or {}),
    )


def _grew(before: Hashable, after: Hashable) -> bool:
    """Whether a SQL runs signature ``(count, max start, max end, finished, deleted)``
    only moved forward (runs added or finished, none deleted)."""
    if not (isinstance(before, tuple) and isinstance(after, tuple) and len(before) == len(after) == 5):
        return False
    return after[0] >= before[0] and after[3] >= before[3] and before[1] is not None and after[4] == before[4]


def _is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` says the store could not be reached (rather than a bad request)."""
    names = {type(e).__name__ for e in _chain(exc)}
    if names & {"OperationalError", "ConnectionError", "ConnectTimeout", "ReadTimeout", "MaxRetryError",
                "NewConnectionError", "InterfaceError", "TimeoutError", "ConnectionRefusedError"}:
        return True
    text = str(exc)
    return "API request to" in text and ("failed" in text or "Max retries" in text)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 10:
        yield current
        current = current.__cause__ or current.__context__
        seen += 1


def rest_client_timeouts() -> dict[str, str]:
    """MLflow's HTTP client retries for minutes before it gives up: the site would hang.
    These environment values (applied with ``setdefault``) make a failed call return in
    seconds, so a page can say the server is down."""
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def apply_rest_client_timeouts() -> None:
    for name, value in rest_client_timeouts().items():
        os.environ.setdefault(name, value)
