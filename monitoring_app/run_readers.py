"""Readers of the tracking store's runs: narrow reads of the metrics and tags a page shows.

On a database-backed tracking store (``sqlite:``, ``postgresql:``, ``mysql:``)
:class:`SqlRunReader` reads with one SQL query per kind of value through MLflow's own
table definitions (MLflow is pinned; a test compares the result with
``mlflow.search_runs``). Asking the tracking API for whole runs instead costs about 15 ms
a run: a minute for ten years of daily batches. Against an HTTP tracking server the REST
API is the only way in: :class:`RestRunReader` reads page by page (1,000 runs a call) and
its signature looks only at the newest runs.

Every reader returns the same frame (:func:`assemble_runs`): one row per run, indexed by
run id, ``metrics.<key>`` and ``tags.<key>`` columns.
"""

from __future__ import annotations

import abc
import urllib.parse
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from serverless_ml import registry, tracking
from serverless_ml.errors import NotFoundError

REST_PAGE_SIZE = 1000
RUN_COLUMNS = ("run_id", "run_name", "status", "start_time", "end_time")
FINISHED = "FINISHED"
_SQL_SCHEMES = ("sqlite", *tracking.DATABASE_SCHEMES)


def is_sql_uri(uri: str) -> bool:
    """Whether ``uri`` names a database-backed tracking store (read by :class:`SqlRunReader`)."""
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


_COLUMN_OF = {"metrics": registry.metric_column, "tags": registry.tag_column, "params": registry.param_column}


def _prefixed(kind: str, keys: Sequence[str]) -> list[str]:
    """The runs frame's columns of ``keys`` (``kind``: metrics, tags or params)."""
    return [_COLUMN_OF[kind](k) for k in keys]


def empty_runs(metrics: Sequence[str], tags: Sequence[str]) -> pd.DataFrame:
    """A runs frame without runs: the columns a read of ``metrics`` and ``tags`` has."""
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
        return empty_runs(metric_keys, tag_keys)
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


def params_frame(wide: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
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

    def read_newer(
        self, selection: RunSelection, metrics: Sequence[str], tags: Sequence[str], frame: pd.DataFrame,
        before: Hashable, after: Hashable,
    ) -> pd.DataFrame | None:
        """``frame`` (the selected runs read when the :meth:`signature` was ``before``)
        brought up to the signature ``after`` by reading only the runs that changed since;
        ``None`` when that cannot be done (the caller reads every run again). By default
        it cannot."""
        return None

    def read_values(
        self, experiment_id: str, run_ids: Sequence[str], metrics: Sequence[str], tags: Sequence[str]
    ) -> pd.DataFrame:
        """The named metrics and tags of a few runs, as ``metrics.<key>``/``tags.<key>``
        columns indexed by run id (by default: of those that are finished runs of the
        experiment)."""
        return self.read(experiment_id, metrics, tags, (FINISHED,), None, None, run_ids)

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

    def read_newer(
        self, selection: RunSelection, metrics: Sequence[str], tags: Sequence[str], frame: pd.DataFrame,
        before: Hashable, after: Hashable,
    ) -> pd.DataFrame | None:
        """Finished runs of an experiment only: runs are written once, so only those
        started or ended since the runs of ``frame`` are read; anything else (a deleted or
        restored run) shows in the signature's counts, and then everything is read again."""
        if tuple(selection.statuses or ()) != (FINISHED,) or selection.parent_run_id is not None:
            return None
        # (the isinstance checks narrow the signatures' type: _grew checks their shape)
        if not (isinstance(before, tuple) and isinstance(after, tuple) and _grew(before, after)):
            return None
        delta = self.read(selection.experiment_id, metrics, tags, selection.statuses, None, since=(before[1], before[2]))
        merged = pd.concat([frame.drop(delta.index, errors="ignore"), delta])
        return merged if len(merged) == after[3] else None

    def read_values(
        self, experiment_id: str, run_ids: Sequence[str], metrics: Sequence[str], tags: Sequence[str]
    ) -> pd.DataFrame:
        """The named metrics and tags of a few runs (two indexed queries; the experiment is
        not looked at), as wide frames ``metrics.<key>``/``tags.<key>`` indexed by run id."""
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
            values[run_id][registry.metric_column(key)] = float("nan") if is_nan else value
        for run_id, key, value in tag_rows:
            values[run_id][registry.tag_column(key)] = value
        columns = [*_prefixed("metrics", metrics), *_prefixed("tags", tags)]
        return pd.DataFrame.from_dict(values, orient="index").reindex(columns=columns)

    def read_params(self, experiment_id: str, keys: Sequence[str]) -> pd.DataFrame:
        from mlflow.store.tracking.dbmodels.models import SqlParam

        keys = list(dict.fromkeys(keys))
        if not keys:
            return params_frame(pd.DataFrame(), keys)
        selected = self._selected_runs(RunSelection(experiment_id, (FINISHED,), None, None, None))
        with self.engine.connect() as conn:
            wide = self._pivot(conn, SqlParam.__table__, SqlParam.__table__.c.value, keys, selected)
        return params_frame(wide, keys)

    def signature(self, experiment_id: str) -> Hashable:
        """``(count, max start, max end, finished, deleted, relabelled, last relabelled)``:
        the last two count the runs ``sml labels`` updated (their
        :data:`registry.LABELS_UPDATED_AT_TAG`) and the newest such update, since late
        labels change a finished run's metrics without touching its times."""
        import sqlalchemy as sa

        runs, tags, _ = self._tables()
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
        relabelled = sa.select(sa.func.count(tags.c.value), sa.func.max(tags.c.value)).where(
            tags.c.key == registry.LABELS_UPDATED_AT_TAG,
            tags.c.run_uuid.in_(sa.select(runs.c.run_uuid).where(runs.c.experiment_id == int(experiment_id))),
        )
        with self.engine.connect() as conn:
            counts = tuple(0 if value is None and i in (0, 3, 4) else value for i, value in enumerate(conn.execute(query).one()))
            return counts + tuple(conn.execute(relabelled).one())

    def close(self) -> None:
        self.engine.dispose()


class RestRunReader(RunReader):
    """Reads runs through the tracking API (an HTTP tracking server)."""

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
        return pd.concat(frames) if frames else empty_runs(metrics, tags)

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
        return params_frame(wide, wanted)

    def signature(self, experiment_id: str) -> Hashable:
        from mlflow.entities import ViewType

        newest = self.client.search_runs([experiment_id], max_results=5, order_by=["attributes.start_time DESC"])
        # Runs deleted by `--replace` are gone without a newer run to show it.
        deleted = self.client.search_runs([experiment_id], run_view_type=ViewType.DELETED_ONLY, max_results=5,
                                          order_by=["attributes.start_time DESC"])
        # Late labels change older runs' metrics: the run `sml labels` updated last says so.
        stamp = f"tags.`{registry.LABELS_UPDATED_AT_TAG}`"
        relabelled = self.client.search_runs([experiment_id], filter_string=f"{stamp} LIKE '%'", max_results=1,
                                             order_by=[f"{stamp} DESC"])
        return (tuple((r.info.run_id, r.info.status, r.info.end_time) for r in newest),
                tuple(r.info.run_id for r in deleted),
                tuple((r.info.run_id, r.data.tags.get(registry.LABELS_UPDATED_AT_TAG)) for r in relabelled))



def _grew(before: Hashable, after: Hashable) -> bool:
    """Whether a SQL runs signature (:meth:`SqlRunReader.signature`) only moved forward:
    runs added or finished, none deleted, none relabelled (late labels change older runs:
    everything is read again)."""
    if not (isinstance(before, tuple) and isinstance(after, tuple) and len(before) == len(after) == 7):
        return False
    return (after[0] >= before[0] and after[3] >= before[3] and before[1] is not None and after[4] == before[4]
            and after[5:] == before[5:])
