"""A trained world shared by the inference, simulation and reliability tests: Titanic backfilled into a
store and a tracking database holding a champion (version 1), built once per session and
copied per test, so tests are independent and fast.

Test modules import the fixtures: ``from worlds import trained_template, world``.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import mlflow
import pytest

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import backfill
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.settings import Settings, resolve_settings

TITANIC = get_dataset("titanic")


def copy_database(source: Path, target: Path) -> None:
    """Copy an SQLite database (a tracking database) through SQLite's backup API.

    The commands open SQLite databases in write-ahead-log mode (``tracking.use_sqlite_wal``);
    while a connection is open, the last commits may live only in ``<db>-wal``, which a
    plain file copy would miss.
    """
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory, mlflow_template_db: Path, data_dir: Path) -> Path:
    """A folder with ``store/`` (Titanic backfilled) and ``mlflow.db`` (a champion, v1)."""
    folder = tmp_path_factory.mktemp("trained")
    shutil.copyfile(mlflow_template_db, folder / "mlflow.db")
    store = LocalFeatureStore(folder / "store")
    backfill(TITANIC, store, load_source(TITANIC, None, data_dir))
    settings = resolve_settings(store_dir=store.root, tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MLFLOW_TRACKING_URI", settings.tracking_uri)
        train(TITANIC, store, settings, TrainOptions(trials=2, seed=1, folds=3, quiet=True))
    mlflow.set_tracking_uri(None)
    return folder


def copy_world(template: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalFeatureStore, Settings]:
    """A copy of ``template``'s store and tracking database in ``folder``, made current
    (``MLFLOW_TRACKING_URI``)."""
    shutil.copytree(template / "store", folder / "store")
    copy_database(template / "mlflow.db", folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(None)
    store = LocalFeatureStore(folder / "store")
    return store, resolve_settings(store_dir=store.root, tracking_uri=uri)


@pytest.fixture
def world(trained_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalFeatureStore, Settings]:
    """This test's copy of the trained store and tracking database."""
    monkeypatch.chdir(tmp_path)
    return copy_world(trained_template, tmp_path, monkeypatch)
