"""What the site's pages read: MLflow (runs, artifacts, registry) and the feature store.

Every read goes through :class:`SiteData`, a thin facade over three parts:
:mod:`monitoring_app.tracking_access` opens the tracking store (a quick probe first, then
MLflow's client and a run reader) and turns its failures into one line;
:mod:`monitoring_app.run_readers` reads runs narrowly (a page names the metrics and tags it
shows, and only those are asked for); :mod:`monitoring_app.cache` keeps what was read: a
value is reused for ``ttl_s`` seconds, after that a cheap *signature* (for runs: how many
there are and when the last one started and ended; for a feature group: its data version)
says whether it is still good, and only a changed signature reloads it (for runs: only the
runs added since). Artifacts and model files never change once logged and are kept (up to
a bound).
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import tempfile
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from monitoring_app.cache import DEFAULT_CACHE_TTL_S, RUNS, SiteCache
from monitoring_app.run_readers import FINISHED, RunReader, RunSelection, empty_runs, params_frame
from monitoring_app.tracking_access import TrackingAccess, is_connection_error
from serverless_ml import registry
from serverless_ml.datasets.spec import DatasetSpec
from serverless_ml.errors import NotFoundError
from serverless_ml.feature_store import FeatureGroup, FeatureStore, open_feature_store
from serverless_ml.registry import CHALLENGER, CHAMPION
from serverless_ml.settings import Settings

EXPERIMENT_TTL_S = 300.0


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
        out[cls] = tuple(dict.fromkeys((registry.class_metric(stem, key), registry.class_metric(stem, metric_key(cls)))))
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
            if registry.metric_column(name) in runs:
                value = value.fillna(runs[registry.metric_column(name)].astype(float))
        columns[cls] = value
    return pd.DataFrame(columns, index=runs.index, columns=list(spec.classes))


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
        return registry.training_run_id(self)

    @property
    def holdout_accuracy(self) -> float | None:
        return registry.holdout_accuracy(self)


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


class SiteData:
    """What the pages read: runs, artifacts, the registry and the feature store, cached.

    A thin facade: :class:`~monitoring_app.tracking_access.TrackingAccess` opens the
    tracking store and its run reader, :class:`~monitoring_app.cache.SiteCache` keeps what
    was read, and each method here names what to read and how it is cached.

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
        self.cache = SiteCache(ttl_s, monotonic)
        self.connection = TrackingAccess(self.tracking_uri, self.cache)
        self._store: FeatureStore | None = None

    # --- plumbing -------------------------------------------------------------------------

    @property
    def stats(self) -> collections.Counter[str]:
        """How often the cache hit, revalidated, loaded and read incrementally (by kind)."""
        return self.cache.stats

    @property
    def tracking_label(self) -> str:
        """The tracking URI, safe to show (no password)."""
        return self.connection.label

    def cached(
        self, key: Hashable, load: Callable[[], Any], signature: Callable[[], Hashable] | None = None,
        ttl_s: float | None = None,
    ) -> Any:
        """A page's own derived value, cached like the site's reads (:meth:`SiteCache.cached`)."""
        return self.cache.cached(key, load, signature, ttl_s)

    def check_tracking(self) -> None:
        """Fail in one line, within seconds, when the tracking store cannot be reached
        (:meth:`TrackingAccess.check`)."""
        self.connection.check()

    @property
    def client(self) -> Any:
        """MLflow's client of the tracking store (opened on first use)."""
        return self.connection.client

    @property
    def reader(self) -> RunReader:
        """The tracking store's run reader (SQL or REST, opened on first use)."""
        return self.connection.reader

    @property
    def store(self) -> FeatureStore:
        """The feature store (opened on first use)."""
        if self._store is None:
            self._store = open_feature_store(self.settings)
        return self._store

    def warm_up(self) -> None:
        """Open the tracking store before the first visitor (:meth:`TrackingAccess.warm_up`)."""
        self.connection.warm_up()

    def close(self) -> None:
        """Let go of the tracking store's connections."""
        self.connection.close()

    # --- experiments and runs ------------------------------------------------------------

    def experiment_id(self, name: str) -> str | None:
        """The id of an active experiment, or ``None``."""
        self.check_tracking()

        def load() -> str | None:
            with self.connection.errors():
                experiment = self.client.get_experiment_by_name(name)
            if experiment is None or experiment.lifecycle_stage != "active":
                return None
            return str(experiment.experiment_id)

        # Experiments are created once and not renamed: their ids are kept longer.
        return self.cached(("experiment", name), load, ttl_s=max(self.cache.ttl_s, EXPERIMENT_TTL_S))

    def runs(
        self,
        experiment: str,
        metrics: Sequence[str] = (),
        tags: Sequence[str] = (),
        statuses: Sequence[str] | None = (FINISHED,),
        parent_run_id: str | None = None,
    ) -> pd.DataFrame | None:
        """Runs of ``experiment`` with only the named metrics and tags (``None`` when the
        experiment does not exist). Kept until the runs' signature changes; then, where the
        reader can, only the runs added or finished since are read."""
        experiment_id = self.experiment_id(experiment)
        if experiment_id is None:
            return None
        metrics, tags = tuple(dict.fromkeys(metrics)), tuple(dict.fromkeys(tags))
        reader = self.reader
        selection = RunSelection(experiment_id, tuple(statuses or ()) or None, parent_run_id, None, None)

        def load() -> pd.DataFrame:
            with self.connection.errors():
                return reader.read(experiment_id, metrics, tags, selection.statuses, parent_run_id)

        def update(frame: pd.DataFrame, before: Hashable, after: Hashable) -> pd.DataFrame | None:
            with self.connection.errors():
                return reader.read_newer(selection, metrics, tags, frame, before, after)

        return self.cache.cached(
            ("runs", experiment_id, metrics, tags, tuple(statuses or ()), parent_run_id), load,
            signature=lambda: self.runs_signature(experiment), update=update, counters=RUNS,
        )

    def run_values(
        self, experiment: str, run_ids: Sequence[str], metrics: Sequence[str] = (), tags: Sequence[str] = ()
    ) -> pd.DataFrame:
        """The named metrics and tags of a few finished runs (say, the latest one and those
        with an alert), in one query for those not read before: a finished run's values
        do not change, so each is kept once read."""
        experiment_id = self.experiment_id(experiment)
        metrics, tags = tuple(dict.fromkeys(metrics)), tuple(dict.fromkeys(tags))
        if experiment_id is None or not run_ids:
            return empty_runs(metrics, tags)
        wanted = list(dict.fromkeys(str(r) for r in run_ids))
        known = dict(zip(wanted, self.cache.kept((r, metrics, tags) for r in wanted), strict=True))
        missing = [r for r, row in known.items() if row is None]
        columns = [*map(registry.metric_column, metrics), *map(registry.tag_column, tags)]
        if missing:
            self.stats["values_read"] += len(missing)
            reader = self.reader
            with self.connection.errors():
                fresh = reader.read_values(experiment_id, missing, metrics, tags)
            rows = {str(r): v for r, v in zip(fresh.index, fresh[columns].itertuples(index=False, name=None), strict=True)}
            self.cache.keep(((r, metrics, tags), v) for r, v in rows.items())
            known.update(rows)
        found = {r: v for r, v in known.items() if v is not None}
        if not found:  # none of them is a finished run of the experiment (a forged id, say)
            return empty_runs(metrics, tags)
        frame = pd.DataFrame.from_records(list(found.values()), columns=columns, index=list(found))
        frame.index.name = "run_id"
        for column in columns[: len(metrics)]:
            frame[column] = frame[column].astype(float)
        return frame

    def runs_signature(self, experiment: str) -> Hashable:
        """Changes whenever a run of ``experiment`` is added, finished or deleted."""
        experiment_id = self.experiment_id(experiment)
        if experiment_id is None:
            return None

        def load() -> Hashable:
            with self.connection.errors():
                return self.reader.signature(experiment_id)

        return self.cached(("signature", experiment_id), load)

    def run_params(self, experiment: str, keys: Sequence[str]) -> pd.DataFrame:
        """The named params of every finished run of ``experiment`` (say, the thresholds a
        monitoring run judged drift with): ``params.<key>`` columns of strings, indexed by
        run id; runs that logged none of them are left out. Read again only when the runs'
        signature changes (a run's params never change once logged)."""
        keys = tuple(dict.fromkeys(keys))
        experiment_id = self.experiment_id(experiment)
        if experiment_id is None or not keys:
            return params_frame(pd.DataFrame(), keys)

        def load() -> pd.DataFrame:
            self.stats["params_read"] += 1
            with self.connection.errors():
                return self.reader.read_params(experiment_id, keys)

        return self.cached(("params", experiment_id, keys), load, signature=lambda: self.runs_signature(experiment))

    def monitoring_runs(self, spec: DatasetSpec, metrics: Sequence[str] = (), tags: Sequence[str] = ()) -> pd.DataFrame:
        """Finished monitoring runs of the dataset, oldest batch first, with ``as_of`` (the
        batch date; runs without one are left out) and ``as_of_text`` (``YYYY-MM-DD``)
        columns besides the named metrics and tags.

        Raises:
            NotFoundError: there is no monitoring run yet.
        """
        frame = self.runs(registry.monitoring_experiment(spec.name), metrics, (registry.AS_OF_TAG, *tags))
        if frame is None or frame.empty:
            raise NotFoundError(
                f"no monitoring runs for {spec.name} yet: run `sml infer --dataset {dataset_option(spec)}` "
                f"(after `sml features` and `sml train`)"
            )

        def ordered() -> tuple[pd.DataFrame, pd.DataFrame]:
            # Batch inference writes the date as YYYY-MM-DD; a run without a readable
            # batch date has no place on a time axis.
            text, parsed = registry.tag_column(registry.AS_OF_TAG), registry.AS_OF_TAG
            dated = frame.assign(**{parsed: pd.to_datetime(frame[text], format="%Y-%m-%d", errors="coerce")})
            dated = dated[dated[parsed].notna()].sort_values([parsed, "start_time"], kind="stable")
            return frame, dated.assign(as_of_text=dated[text].astype(str))

        # Sorted once per version of the runs (the pair holds the frame: its id is not reused).
        _, dated = self.cached(("dated", spec.name, tuple(metrics), tuple(tags)), ordered, signature=lambda: id(frame))
        return dated

    def run_json(self, run_id: str, path: str, version: str | None = None) -> dict[str, Any] | None:
        """A JSON artifact of a run (``None`` when the run did not log it), kept once read;
        ``version`` names the state of artifacts that are rewritten (the confusion tables
        ``sml labels`` redraws: the run's :data:`registry.LABELS_UPDATED_AT_TAG`)."""

        def load() -> dict[str, Any] | None:
            with self.connection.errors(), tempfile.TemporaryDirectory() as tmp:
                try:
                    local = self.client.download_artifacts(run_id, path, tmp)
                except Exception as exc:  # noqa: BLE001 - a missing artifact is an answer
                    if is_connection_error(exc):
                        raise
                    return None
                return json.loads(Path(local).read_text(encoding="utf-8"))

        return self.cache.immutable(("json", run_id, path, version), load)

    def run_details(self, run_id: str) -> RunDetails | None:
        """Metrics, params and tags of one run (``None`` when it does not exist)."""

        def load() -> RunDetails | None:
            from mlflow.exceptions import MlflowException

            with self.connection.errors():
                try:
                    run = self.client.get_run(run_id)
                except MlflowException as exc:
                    if is_connection_error(exc):
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
            registry.training_experiment(spec.name), metrics=(registry.CV_ACCURACY_METRIC,),
            tags=(registry.TRIAL_NUMBER_TAG, registry.TRIAL_STATE_TAG), statuses=None, parent_run_id=training_run_id,
        )
        if frame is None or frame.empty:
            return pd.DataFrame(columns=[registry.TRIAL_NUMBER_TAG, "state", registry.CV_ACCURACY_METRIC, "run_id"])
        out = pd.DataFrame({
            registry.TRIAL_NUMBER_TAG: pd.to_numeric(frame[registry.tag_column(registry.TRIAL_NUMBER_TAG)], errors="coerce"),
            "state": frame[registry.tag_column(registry.TRIAL_STATE_TAG)].fillna(frame["status"]),
            registry.CV_ACCURACY_METRIC: frame[registry.metric_column(registry.CV_ACCURACY_METRIC)],
            "run_id": frame.index,
        })
        return out.dropna(subset=[registry.TRIAL_NUMBER_TAG]).sort_values(registry.TRIAL_NUMBER_TAG).reset_index(drop=True)

    # --- the registry ----------------------------------------------------------------------

    def model_versions(self, spec: DatasetSpec) -> list[ModelVersion]:
        """Registered versions of the dataset's model, newest first (empty: none yet)."""
        self.check_tracking()
        name = registry.model_name(spec.name)

        def load() -> list[ModelVersion]:
            from mlflow.exceptions import MlflowException

            with self.connection.errors():
                try:
                    model = self.client.get_registered_model(name)
                except MlflowException as exc:
                    if is_connection_error(exc):
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
        name = registry.model_name(spec.name)

        def load() -> ModelVersion | None:
            with self.connection.errors():
                version = registry.alias_version(name, CHAMPION, self.client, reraise=is_connection_error)
            if version is None:
                return None
            return _model_version(name, version, list(version.aliases or [CHAMPION]))

        return self.cached((CHAMPION, name), load)

    def champion_model(self, spec: DatasetSpec) -> tuple[ModelVersion, Any]:
        """The champion version and its loaded scikit-learn pipeline.

        Raises:
            NotFoundError: the dataset has no champion yet.
        """
        champion = self.champion(spec)
        if champion is None:
            raise NotFoundError(
                f"model '{registry.model_name(spec.name)}' has no champion yet: "
                f"run `sml train --dataset {dataset_option(spec)}` first"
            )

        def load() -> Any:
            with self.connection.errors():
                return registry.load_version_model(champion.name, champion.version, tracking_uri=self.tracking_uri)

        return champion, self.cache.immutable(("model", champion.name, champion.version), load)

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
        """Every prediction of the dataset's champions, next to the actual labels (the
        served ones: a challenger's shadow predictions are not shown as served)."""
        from serverless_ml.inference.scoring import served_mask

        rows = self._group_rows(
            spec.predictions_group, spec.predictions_version,
            f"no predictions for {spec.name} yet: run `sml infer --dataset {dataset_option(spec)}` "
            "(after `sml features` and `sml train`)",
        )
        served = served_mask(rows["run_id"]) if "run_id" in rows.columns else None
        if served is None or served.all():
            return rows
        # Once per version of the group (pages key their own caches on the frame's id).
        _, kept = self.cached(("served", spec.predictions_group, spec.predictions_version),
                              lambda: (rows, rows[served].reset_index(drop=True)),
                              signature=lambda: id(rows))  # the cached pair holds the frame: its id is not reused
        return kept

    def training_keys(self, spec: DatasetSpec, training_run_id: str) -> pd.Series | None:
        """Keys of the rows a training run fitted on (``None`` when it logged none)."""

        def load() -> pd.Series | None:
            with self.connection.errors():
                keys = registry.read_training_keys(training_run_id, spec.primary_key, self.client,
                                                   reraise=is_connection_error)
            return keys.train if keys is not None else None

        return self.cache.immutable(("keys", training_run_id), load)


def _model_version(name: str, version: Any, aliases: Sequence[str]) -> ModelVersion:
    order = {CHAMPION: 0, CHALLENGER: 1}
    return ModelVersion(
        name=name, version=int(version.version),
        aliases=tuple(sorted(set(aliases), key=lambda a: (order.get(a, 9), a))),
        created=dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.timezone.utc),
        run_id=version.run_id, tags=dict(version.tags or {}),
    )
