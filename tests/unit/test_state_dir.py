"""Where the jobs keep their own state (locks, the scheduler's slots, Optuna studies):
by default exactly where earlier versions kept it, else in ``SML_STATE_DIR``."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from serverless_ml.cron import Cron
from serverless_ml.locks import job_lock
from serverless_ml.pipelines.schedule import Job, Scheduler
from serverless_ml.settings import ENV_STATE_DIR, resolve_settings

pytestmark = pytest.mark.unit

SLOT = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def _legacy_optuna_storage(tracking_uri: str, settings_home: Path) -> str:
    """The default Optuna storage as ``tracking.default_optuna_storage`` computed it before
    the state directory existed (called with the store's parent as the home)."""
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    return f"sqlite:///{settings_home.resolve() / 'optuna.db'}"


def _write_state(state_dir: Path) -> None:
    """Take a job lock and record one scheduler slot, as `sml infer` and `sml schedule` do."""
    with job_lock(state_dir, "infer-titanic"):
        pass
    scheduler = Scheduler([], state_dir, lambda: SLOT, lambda _s: None)
    scheduler.run_slot(Job("daily", "titanic", Cron.parse("0 0 * * *"), lambda _slot: "done"), SLOT)


def test_default_state_is_where_it_always_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "home" / "feature_store"
    settings = resolve_settings(store_dir=store)
    assert settings.state_dir == store.resolve()
    _write_state(settings.state_dir)
    assert (store / "_locks" / "infer-titanic.lock").is_file()
    assert json.loads((store / "_schedule" / "titanic.json").read_text())["daily"] == SLOT.isoformat()


@pytest.mark.parametrize("uri", [
    "sqlite:///mlflow.db",  # the default, relative to the working directory
    "sqlite:////data/ml/mlflow.db",
    "sqlite:///runs/mlflow.db?timeout=5",
    "http://tracking.example:5000",
    "postgresql://ml@db/mlflow",
])
def test_default_optuna_storage_is_unchanged(uri: str, tmp_path: Path) -> None:
    store = tmp_path / "home" / "feature_store"
    settings = resolve_settings(store_dir=store, tracking_uri=uri)
    assert settings.optuna_storage == _legacy_optuna_storage(uri, store.resolve().parent)
    if not uri.startswith("sqlite"):
        assert settings.optuna_storage == f"sqlite:///{tmp_path / 'home' / 'optuna.db'}"


def test_state_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_STATE_DIR, "state")  # relative: to the working directory
    store = tmp_path / "feature_store"
    settings = resolve_settings(store_dir=store, tracking_uri="sqlite:///mlflow.db")
    state = tmp_path / "state"
    assert settings.state_dir == state
    assert settings.optuna_storage == f"sqlite:///{state / 'optuna.db'}"
    _write_state(settings.state_dir)
    assert (state / "_locks" / "infer-titanic.lock").is_file()
    assert (state / "_schedule" / "titanic.json").is_file()
    assert not store.exists()  # nothing of the jobs' state lands in the store any more


def test_explicit_state_dir_wins_over_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "from-env"))
    settings = resolve_settings(store_dir=tmp_path / "store", state_dir=tmp_path / "given")
    assert settings.state_dir == tmp_path / "given"
    assert settings.optuna_dir == tmp_path / "given"


def test_an_empty_variable_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_STATE_DIR, "")
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri="http://tracking.example:5000")
    assert settings.state_dir == tmp_path / "store"
    assert settings.optuna_dir == tmp_path


def test_a_lock_in_the_state_dir_excludes_a_second_holder(tmp_path: Path) -> None:
    from serverless_ml.locks import LockBusy

    state = resolve_settings(store_dir=tmp_path / "store", state_dir=tmp_path / "state").state_dir
    with job_lock(state, "schedule-daily-titanic"), pytest.raises(LockBusy), job_lock(state, "schedule-daily-titanic", wait=False):
        pass
