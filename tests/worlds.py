"""Trained worlds shared by the tests, built once per session and copied per test, so tests
are independent and fast:

* ``trained_template``: Titanic backfilled into a store and a tracking database holding a
  champion (version 1) — the inference, simulation, serving and reliability tests;
* ``iris_monitored_template``: Iris trained the same way plus :data:`IRIS_DAYS` daily
  batches scored by batch inference — the site's data-access and callback tests.

Test modules import the fixtures: ``from worlds import trained_template, world``. They also
import ``copy_database`` (from ``serverless_ml.testing``) from here.
"""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from serverless_ml.datasets import DatasetSpec, get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.datasets.synthetic import generate_rows
from serverless_ml.feature_store.base import BACKFILL_ORIGIN, LIVE_ORIGIN, ORIGIN_COLUMN
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from serverless_ml.pipelines.infer import InferOptions, infer
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.settings import Settings, resolve_settings
from serverless_ml.testing import copy_database

TITANIC = get_dataset("titanic")
IRIS = get_dataset("iris")
IRIS_START = dt.date(2024, 3, 1)
IRIS_DAYS = 3
IRIS_ROWS = 12


def world_settings(folder: Path) -> tuple[LocalFeatureStore, Settings]:
    """The store and settings of a world folder (``store/`` and ``mlflow.db``)."""
    store = LocalFeatureStore(folder / "store")
    return store, resolve_settings(store_dir=store.root, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")


def build_trained_world(folder: Path, spec: DatasetSpec, mlflow_template_db: Path, data_dir: Path) -> tuple[LocalFeatureStore, Settings]:
    """Backfill ``spec`` into ``folder/store`` and train a champion (2 trials, seed 1, 3
    folds) into a copy of the migrated template database ``folder/mlflow.db``."""
    shutil.copyfile(mlflow_template_db, folder / "mlflow.db")
    store, settings = world_settings(folder)
    backfill(spec, store, load_source(spec, None, data_dir))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        train(spec, store, settings, TrainOptions(trials=2, seed=1, folds=3, quiet=True))
    mlflow.set_tracking_uri(None)
    return store, settings


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path, data_dir: Path) -> Path:
    """A folder with ``store/`` (Titanic backfilled) and ``mlflow.db`` (a champion, v1)."""
    folder = tmp_path_factory.mktemp("trained")
    build_trained_world(folder, TITANIC, mlflow_template_db, data_dir)
    return folder


def noon_of(day: dt.date) -> dt.datetime:
    """Noon (UTC) of ``day``: when the tests' batches are scored."""
    return dt.datetime.combine(day, dt.time(12), tzinfo=dt.timezone.utc)


def iris_day(i: int) -> dt.date:
    """Day ``i`` (0-based) of the Iris world's batches."""
    return IRIS_START + dt.timedelta(days=i)


def add_iris_batch(store: LocalFeatureStore, settings: Settings, i: int, rows: int = IRIS_ROWS) -> str:
    """Rows for day ``i`` and the batch-inference run (as of noon) that scores them; returns
    the run's id. The tracking URI must be current (``MLFLOW_TRACKING_URI``)."""
    add_daily_rows(IRIS, store, iris_day(i), n=rows, seed=0)
    noon = noon_of(iris_day(i))
    report = infer(IRIS, store, settings, InferOptions(as_of=iris_day(i), figures=False), noon)
    mlflow.set_tracking_uri(None)
    assert report.run_id is not None
    return report.run_id


def insert_live_rows(spec: DatasetSpec, store: LocalFeatureStore, day: dt.date, n: int, seed: int = 7) -> None:
    """``n`` live rows for ``day`` whose outcome is not known yet (label null), as
    ``sml ingest`` writes them: drawn like the synthetic rows of that day, origin ``live``."""
    group = store.get_feature_group(spec.name, spec.version)
    stored = group.read()
    rows = generate_rows(stored[stored[ORIGIN_COLUMN] == BACKFILL_ORIGIN], spec, day, n, seed)
    rows[spec.label] = pd.Series([None] * len(rows), index=rows.index, dtype="Int64" if spec.label_type == "bigint" else object)
    rows[ORIGIN_COLUMN] = LIVE_ORIGIN
    group.insert(rows, wait=True)


def add_iris_live_batch(store: LocalFeatureStore, settings: Settings, i: int, rows: int = IRIS_ROWS) -> str:
    """Like :func:`add_iris_batch`, with live rows whose labels have not arrived: the run
    has an estimated accuracy and no realized one. Returns the run's id."""
    insert_live_rows(IRIS, store, iris_day(i), rows)
    noon = noon_of(iris_day(i))
    report = infer(IRIS, store, settings, InferOptions(as_of=iris_day(i), figures=False), noon)
    mlflow.set_tracking_uri(None)
    assert report.run_id is not None
    return report.run_id


@pytest.fixture(scope="session")
def iris_monitored_template(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path, data_dir: Path) -> Path:
    """Iris backfilled and trained (champion v1) plus :data:`IRIS_DAYS` scored daily batches."""
    folder = tmp_path_factory.mktemp("iris_monitored")
    store, settings = build_trained_world(folder, IRIS, mlflow_template_db, data_dir)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        for i in range(IRIS_DAYS):
            add_iris_batch(store, settings, i)
    return folder


def copy_world(template: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalFeatureStore, Settings]:
    """A copy of ``template``'s store and tracking database in ``folder``, made current
    (``MLFLOW_TRACKING_URI``)."""
    shutil.copytree(template / "store", folder / "store")
    copy_database(template / "mlflow.db", folder / "mlflow.db")
    store, settings = world_settings(folder)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
    mlflow.set_tracking_uri(None)
    return store, settings


@pytest.fixture
def world(trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalFeatureStore, Settings]:
    """This test's copy of the trained store and tracking database."""
    monkeypatch.chdir(tmp_path)
    return copy_world(trained_template, tmp_path, monkeypatch)
