"""Two runs logging the same new dataset at once (the workers of a shared study) race on
the tracking store's unique key for datasets: the loser's call is retried and links the
dataset the winner wrote, instead of failing the worker."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from serverless_ml import tracking

SQLITE_RACE = "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest"


def _input() -> object:
    return tracking.dataset_input("demo_training", {"feature_group": "demo", "version": 1}, 10,
                                  [("x", "double", True)], "abc123", "training")


def _two_runs() -> tuple[str, str]:
    experiment = mlflow.create_experiment("race")
    client = MlflowClient()
    return (client.create_run(experiment).info.run_id, client.create_run(experiment).info.run_id)


def test_the_run_that_loses_the_race_on_a_new_dataset_links_the_winners(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    winner, loser = _two_runs()
    real = MlflowClient.log_inputs
    calls = []

    def racing(self: MlflowClient, run_id: str, datasets: object = None, models: object = None) -> None:
        calls.append(run_id)
        if run_id == loser and calls.count(loser) == 1:
            # The other worker commits the same dataset between this call's lookup and insert.
            real(self, winner, datasets=datasets, models=models)
            raise MlflowException(SQLITE_RACE)
        real(self, run_id, datasets=datasets, models=models)

    monkeypatch.setattr(MlflowClient, "log_inputs", racing)
    tracking.log_inputs(loser, [_input()])
    assert calls == [loser, loser]
    for run_id in (winner, loser):
        inputs = MlflowClient().get_run(run_id).inputs.dataset_inputs
        assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("demo_training", "abc123")]


def test_other_tracking_errors_are_not_retried(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, run_id = _two_runs()
    calls = []

    def failing(self: MlflowClient, run_id: str, datasets: object = None, models: object = None) -> None:
        calls.append(run_id)
        raise MlflowException("database is locked")

    monkeypatch.setattr(MlflowClient, "log_inputs", failing)
    with pytest.raises(MlflowException, match="locked"):
        tracking.log_inputs(run_id, [_input()])
    assert calls == [run_id]
