"""Training again on unchanged data gives the existing version back (issue 19, item 4):
no run, no registered version, one line saying so; ``--promote always`` registers anew.
(A tie on the holdout comparison: ``test_train.py``'s
``test_if_better_compares_with_the_champion_rescored_on_the_same_rows``.)"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from serverless_ml import cli
from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from serverless_ml.pipelines.train import TrainOptions, train
from serverless_ml.settings import resolve_settings
from serverless_ml.registry import training_experiment
from serverless_ml.registry import TRAINING_FINGERPRINT_TAG

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
OPTIONS = TrainOptions(trials=1, seed=7, folds=3, include_synthetic=True, quiet=True)
CLI_ARGS = ["train", "--dataset", "titanic", "--trials", "1", "--seed", "7", "--folds", "3", "--include-synthetic", "-q"]


@pytest.fixture
def store(tmp_path: Path, data_dir: Path) -> LocalFeatureStore:
    store = LocalFeatureStore(tmp_path / "store")
    backfill(SPEC, store, load_source(SPEC, None, data_dir))
    return store


def _versions() -> list[str]:
    return sorted(str(v.version) for v in MlflowClient().search_model_versions("name='titanic'"))


def _alias(alias: str) -> str:
    return str(MlflowClient().get_model_version_by_alias("titanic", alias).version)


def _parent_runs() -> list[str]:
    runs = mlflow.search_runs(experiment_names=[training_experiment("titanic")], output_format="list")
    return sorted(r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags)


def test_a_rerun_on_unchanged_data_gives_the_champion_back_and_new_rows_train_anew(
    store: LocalFeatureStore, tracking_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = resolve_settings(store_dir=store.root, tracking_uri=tracking_uri)
    first = train(SPEC, store, settings, OPTIONS)
    assert first.decision.promote and not first.kept and _versions() == ["1"]
    fingerprint = MlflowClient().get_run(first.run_id).data.tags[TRAINING_FINGERPRINT_TAG]
    assert MlflowClient().get_model_version("titanic", "1").tags[TRAINING_FINGERPRINT_TAG] == fingerprint
    runs = _parent_runs()

    # The same job through `sml train`: one line, exit 0, no run started, nothing registered.
    monkeypatch.setenv("SML_STORE_DIR", str(store.root))
    capsys.readouterr()
    cli.main(CLI_ARGS)
    out, err = capsys.readouterr()
    assert out == ("champion version 1 was trained on the same data, seed and search: kept; "
                   "use --promote always to register anew\n"), out + err
    assert _versions() == ["1"] and _parent_runs() == runs
    assert mlflow.search_runs(search_all_experiments=True, filter_string="attributes.status = 'RUNNING'").empty

    # New rows: trained, registered, compared.
    add_daily_rows(SPEC, store, dt.date(2024, 3, 1), n=20, seed=0)
    second = train(SPEC, store, settings, OPTIONS)
    assert not second.kept and second.model_version == "2" and _alias("challenger") == "2"
    assert second.champion_accuracy is not None  # compared with version 1

    # The same rows once more: the version trained on them is given back whichever alias it holds.
    again = train(SPEC, store, settings, OPTIONS)
    holder = "champion" if second.decision.promote else "challenger"
    assert again.kept and again.model_version == "2" and again.run_id == second.run_id
    assert again.summary() == (f"{holder} version 2 was trained on the same data, seed and search: kept; "
                               "use --promote always to register anew")
    assert again.holdout_metrics["test_accuracy"] == second.holdout_metrics["test_accuracy"]

    # --promote always registers and promotes the same training anew.
    forced = train(SPEC, store, settings, dataclasses.replace(OPTIONS, promote="always"))
    assert not forced.kept and forced.decision.promote and forced.model_version == "3"
    assert _versions() == ["1", "2", "3"] and _alias("champion") == "3"


def test_other_settings_on_the_same_data_train_anew(store: LocalFeatureStore, tracking_uri: str) -> None:
    """Seed and trials (like folds, holdout and the rest) are part of "the same training";
    --promote never on unchanged data registers nothing either (not even a challenger)."""
    settings = resolve_settings(store_dir=store.root, tracking_uri=tracking_uri)
    base = dataclasses.replace(OPTIONS, trials=1, include_synthetic=False, promote="never")
    train(SPEC, store, settings, base)
    assert train(SPEC, store, settings, base).kept
    assert train(SPEC, store, settings, dataclasses.replace(base, promote="if-better")).kept
    for changed in (dataclasses.replace(base, seed=8), dataclasses.replace(base, trials=2)):
        assert not train(SPEC, store, settings, changed).kept, changed
    assert _versions() == ["1", "2", "3"]
    with pytest.raises(mlflow.exceptions.MlflowException):
        MlflowClient().get_model_version_by_alias("titanic", "champion")
