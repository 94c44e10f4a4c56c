"""The default forests are queued once per study, even when workers open a new shared study
at the same time (`search.open_study`): two `sml train --workers-only` processes each found
no default trial in the new study and each queued them (look, then insert), so the points
were tried twice. The races are replayed here in one process, without timing luck: the
second worker opens the study from inside the first one's insert of a default trial."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from serverless_ml.training import search

pytestmark = pytest.mark.unit

STUDY = "shared"
SPACE = search.derive_search_space(712, 12, 2)


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def _points(study: optuna.Study) -> list[dict[str, Any]]:
    """Each trial's point: its params, or the params it is queued with."""
    return [t.system_attrs.get("fixed_params", t.params) for t in study.get_trials(deepcopy=False)]


def _defaults_queued(study: optuna.Study) -> tuple[int, int]:
    points = _points(study)
    return points.count(search.DEFAULT_FOREST), points.count(search.DEFAULT_EXTRA_TREES)


def _run(study: optuna.Study, n_trials: int) -> None:
    study.optimize(lambda t: float(len(search.suggest_params(t, SPACE))), n_trials=n_trials)


def _searched_elsewhere(storage: str, trials: int) -> optuna.Study:
    """A study made outside sml (no default trials), with ``trials`` random trials."""
    study = optuna.create_study(storage=storage, study_name=STUDY, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=1))
    _run(study, trials)
    return study


def test_the_creator_queues_the_defaults_as_the_first_trials(storage: str) -> None:
    study = search.open_study(storage, STUDY, seed=0)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [optuna.trial.TrialState.WAITING] * 2
    assert _points(study) == [search.DEFAULT_FOREST, search.DEFAULT_EXTRA_TREES]
    assert search.started_trials(study) == 0
    search.open_study(storage, STUDY, seed=1)  # loaded: they are there
    _run(study, 3)
    assert [t.params for t in study.trials[:2]] == [search.DEFAULT_FOREST, search.DEFAULT_EXTRA_TREES]
    assert _defaults_queued(study) == (1, 1) and search.started_trials(study) == 3


@pytest.mark.parametrize("before_insert", [0, 1], ids=["before-the-first-default", "between-the-two-defaults"])
def test_a_worker_opening_the_study_while_its_creator_queues_the_defaults_queues_none(
    monkeypatch: pytest.MonkeyPatch, storage: str, before_insert: int
) -> None:
    """Worker B opens the new study while worker A, which created it, is about to insert its
    first (or second) default trial; then both search. Each default is tried once."""
    monkeypatch.setattr(search, "DEFAULT_TRIALS_WAIT_S", 0.0)  # B stops waiting at once: A is blocked here
    real = optuna.storages.RDBStorage._create_new_trial  # noqa: SLF001 - the insert (Optuna's cache calls it)
    state: dict[str, Any] = {"creator": None, "inserts": 0, "other": None}

    def create_new_trial(self: Any, study_id: int, template_trial: Any = None) -> Any:
        if state["creator"] is None:
            state["creator"] = self  # worker A's storage: its first insert is the first default
        if self is state["creator"]:
            if state["inserts"] == before_insert and state["other"] is None:
                state["other"] = search.open_study(storage, STUDY, seed=2)  # worker B
            state["inserts"] += 1
        return real(self, study_id, template_trial)

    monkeypatch.setattr(optuna.storages.RDBStorage, "_create_new_trial", create_new_trial)
    first = search.open_study(storage, STUDY, seed=1)  # worker A creates the study
    second = state["other"]
    assert second is not None, "worker B did not open the study: the test did not test anything"
    assert _defaults_queued(first) == (1, 1)
    _run(first, 2)
    _run(second, 2)
    points = [tuple(sorted(map(str, p.items()))) for p in _points(first)]
    assert len(points) == 4 and len(set(points)) == 4, "a point was tried twice"
    assert _defaults_queued(first) == (1, 1)


def test_a_loaded_study_searched_without_the_defaults_gets_them_once(storage: str) -> None:
    """A study made without the default trials (outside sml, or its creator stopped before
    queueing them) and searched since: the next process to open it queues them, once."""
    _searched_elsewhere(storage, trials=2)
    first = search.open_study(storage, STUDY, seed=1)
    assert _defaults_queued(first) == (1, 1)
    second = search.open_study(storage, STUDY, seed=2)
    assert _defaults_queued(second) == (1, 1)
    _run(second, 2)
    assert [t.params for t in second.trials[2:]] == [search.DEFAULT_FOREST, search.DEFAULT_EXTRA_TREES]


def test_a_loader_queues_nothing_into_a_study_without_trials(monkeypatch: pytest.MonkeyPatch, storage: str) -> None:
    """Its creator may be about to queue them: two loaders would both queue them too."""
    monkeypatch.setattr(search, "DEFAULT_TRIALS_WAIT_S", 0.0)
    _searched_elsewhere(storage, trials=0)
    assert search.open_study(storage, STUDY, seed=1).get_trials(deepcopy=False) == []


def test_a_loader_waits_for_the_defaults_its_creator_queues(monkeypatch: pytest.MonkeyPatch, storage: str) -> None:
    """The creator queues the defaults while the loader waits (here: at the loader's first pause)."""
    creator = _searched_elsewhere(storage, trials=0)
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        if not pauses:
            search.enqueue_default_forest(creator)
        pauses.append(seconds)

    monkeypatch.setattr(search.time, "sleep", pause)
    loaded = search.open_study(storage, STUDY, seed=1)
    assert len(pauses) == 1
    assert _points(loaded) == [search.DEFAULT_FOREST, search.DEFAULT_EXTRA_TREES]


def test_a_loader_leaves_a_study_whose_creator_queued_one_default(monkeypatch: pytest.MonkeyPatch, storage: str) -> None:
    """Its creator queued the first default and stopped (or is slow): the second is not
    queued by a loader, which could race the creator."""
    monkeypatch.setattr(search, "DEFAULT_TRIALS_WAIT_S", 0.0)
    creator = _searched_elsewhere(storage, trials=0)
    creator.enqueue_trial(dict(search.DEFAULT_FOREST))
    assert _defaults_queued(search.open_study(storage, STUDY, seed=1)) == (1, 0)  # waiting: the creator is at it
    _run(creator, 2)
    assert _defaults_queued(search.open_study(storage, STUDY, seed=1)) == (1, 0)  # searched since: it stopped
