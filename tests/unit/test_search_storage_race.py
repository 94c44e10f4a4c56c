"""`open_study`'s retry when another worker wins the race to create Optuna's tables on a
fresh PostgreSQL database (seen in CI: `relation "studies" already exists`, a
ProgrammingError, not the unique violation the retry caught)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
import sqlalchemy.exc

from serverless_ml.errors import SmlError
from serverless_ml.training import search


class _Orig(Exception):
    pass


def _failing_then(errors: list[BaseException], calls: list[int]) -> Any:
    real = optuna.create_study

    def create_study(**kwargs: Any) -> optuna.Study:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        return real(**kwargs)

    return create_study


@pytest.mark.parametrize("error", [
    sqlalchemy.exc.ProgrammingError("CREATE TABLE studies", {}, _Orig('relation "studies" already exists')),
    sqlalchemy.exc.IntegrityError("INSERT INTO version_info", {}, _Orig("duplicate key value violates unique constraint")),
])
def test_a_lost_table_creation_race_is_retried(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, error: Exception) -> None:
    calls: list[int] = []
    monkeypatch.setattr(search.time, "sleep", lambda _s: None)
    monkeypatch.setattr(optuna, "create_study", _failing_then([error], calls))
    study = search.open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "s", seed=0)
    assert study.study_name == "s" and len(calls) == 2


def test_another_programming_error_is_one_line_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    calls: list[int] = []
    error = sqlalchemy.exc.ProgrammingError("SELECT", {}, _Orig("permission denied for table studies"))
    monkeypatch.setattr(optuna, "create_study", _failing_then([error], calls))
    with pytest.raises(SmlError, match=r"cannot open Optuna storage .*permission denied for table studies"):
        search.open_study(f"sqlite:///{tmp_path / 'optuna.db'}", "s", seed=0)
    assert len(calls) == 1
