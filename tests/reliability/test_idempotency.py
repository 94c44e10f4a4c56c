"""Idempotency (issue 8, section 4): every command run twice with the same inputs leaves
the state of running it once.

**State** is: every file of the feature store, byte for byte (``tree_digest``), and each
feature group's rows (a content digest through the store API); every MLflow run with its
status, metrics, params and tags; the model registry's versions, their tags and the
aliases. Each command runs once in the test's process (through ``serverless_ml.cli.main``),
then again as a fresh ``sml`` subprocess, as a scheduler would re-run it.

- ``features`` (same source), ``daily`` (same date and seed): the second run writes nothing
  and says ``0 inserted, 0 updated, N unchanged``.
- ``ingest`` (same file of live rows, some without a label): the second run writes
  nothing and says ``0 inserted ... N unchanged; nothing written``, also without
  ``--date`` (a new event time is no reason to rewrite a row).
- ``infer`` (same as-of date): the second run scores nothing, logs no run and says so.
- ``labels`` (same file, over a batch scored while those labels were missing): the second
  run writes nothing to the store, the predictions or the monitoring run.
- ``simulate`` over the same days, with retraining: no new rows, no monitoring run, no
  retraining run or model version (it says the retrain was done by an earlier run).
- ``train`` on the rows, seed and search the champion was trained with: nothing is tuned,
  logged or registered; it says the champion was kept (``--promote always`` would
  register anew).
- ``main`` runs all four stages as ``mlflow run`` subprocesses (minutes); it runs under
  ``make soak`` only: the store and the monitoring runs stay as they were, and its train
  stage gives the champion back.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from pathlib import Path
from typing import Any

import mlflow
import pytest

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.sources import load_source
from serverless_ml.feature_store.local import LocalFeatureStore
from serverless_ml.pipelines.features import add_daily_rows, backfill
from snapshots import read_registry, read_runs, table_digests
from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

SOAK = os.environ.get("SML_SOAK", "") == "1"
SPEC = get_dataset("titanic")
DAY = dt.date(2024, 2, 1)
TABLES = ["titanic", "titanic_predictions"]


def state(folder: Path, tree_digest: Any) -> dict[str, Any]:
    """Everything a command can change in a world (see the module docstring)."""
    db = folder / "mlflow.db"
    return {
        "store files": tree_digest(folder / "store"),
        "rows": table_digests(folder / "store", TABLES),
        "runs": [dataclasses.astuple(run) for run in read_runs(db)],
        "registry": read_registry(db),
    }


def assert_same_state(first: dict[str, Any], second: dict[str, Any], command: str) -> None:
    for part in first:
        if first[part] == second[part]:
            continue
        if part == "store files":
            changed = sorted(k for k in set(first[part]) | set(second[part]) if first[part].get(k) != second[part].get(k))
            pytest.fail(f"running `sml {command}` twice changed store files: {changed[:10]}")
        if part == "runs":
            ids = {run[0] for run in first[part]}
            new = [run[:4] for run in second[part] if run[0] not in ids]
            pytest.fail(f"running `sml {command}` twice: new or changed MLflow runs {new or second[part]}")
        pytest.fail(f"running `sml {command}` twice changed the {part}: {first[part]} -> {second[part]}")


@dataclasses.dataclass
class Commands:
    """Run ``sml`` in this process or as a subprocess, in one folder (store in ``store/``,
    tracking database ``mlflow.db``)."""

    folder: Path
    data_dir: Path
    cli_process: Any
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    @property
    def env(self) -> dict[str, str]:
        return {"SML_STORE_DIR": str(self.folder / "store"), "SML_DATA_DIR": str(self.data_dir),
                "MLFLOW_TRACKING_URI": f"sqlite:///{self.folder / 'mlflow.db'}"}

    def in_process(self, *args: str) -> str:
        from serverless_ml import cli

        with self.monkeypatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            patch.chdir(self.folder)
            mlflow.set_tracking_uri(None)
            self.capsys.readouterr()
            try:
                cli.main(list(args))
            except SystemExit as exc:
                out, err = self.capsys.readouterr()
                pytest.fail(f"sml {' '.join(args)} exited {exc.code}:\n{out}{err}")
            finally:
                mlflow.set_tracking_uri(None)
            out, _ = self.capsys.readouterr()
        return out

    def subprocess(self, *args: str) -> str:
        result = self.cli_process(list(args), cwd=self.folder, store_dir=self.folder / "store", data_dir=self.data_dir,
                                  env={"MLFLOW_TRACKING_URI": self.env["MLFLOW_TRACKING_URI"]})
        assert result.returncode == 0, f"sml {' '.join(args)} failed:\n{result.stdout}{result.stderr}"
        return result.stdout


@pytest.fixture
def commands(tmp_path: Path, data_dir: Path, cli_process, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
             capsys: pytest.CaptureFixture[str]) -> Commands:
    return Commands(tmp_path, data_dir, cli_process, monkeypatch, capsys)


def twice(commands: Commands, tree_digest: Any, *args: str) -> tuple[str, str, dict[str, Any]]:
    """Run a command in process, record the state, run it again as a subprocess, and check
    that the state did not move. Returns both outputs and the state."""
    first_out = commands.in_process(*args)
    first = state(commands.folder, tree_digest)
    second_out = commands.subprocess(*args)
    assert_same_state(first, state(commands.folder, tree_digest), " ".join(args))
    return first_out, second_out, first


def test_features_twice(commands: Commands, tree_digest, reliability) -> None:  # noqa: ANN001
    first, second, _ = twice(commands, tree_digest, "features", "--dataset", "titanic")
    assert "891 inserted" in first
    assert "0 inserted, 0 updated, 891 unchanged; table version 0" in second
    reliability.add("idempotency", cases=1)


def test_daily_twice(commands: Commands, data_dir: Path, tree_digest, reliability) -> None:  # noqa: ANN001
    backfill(SPEC, LocalFeatureStore(commands.folder / "store"), load_source(SPEC, None, data_dir))
    args = ("daily", "--dataset", "titanic", "--date", DAY.isoformat(), "--rows", "25", "--seed", "7")
    first, second, _ = twice(commands, tree_digest, *args)
    assert "25 inserted" in first
    assert "0 inserted, 0 updated, 25 unchanged; table version 1" in second
    reliability.add("idempotency", cases=1)


def test_ingest_twice(commands: Commands, data_dir: Path, tree_digest, reliability) -> None:  # noqa: ANN001
    backfill(SPEC, LocalFeatureStore(commands.folder / "store"), load_source(SPEC, None, data_dir))
    lines = (data_dir / "titanic.csv").read_text(encoding="utf-8").splitlines()
    # Two stored passengers and three new ones (copies under new ids), one without a label.
    new = [f"{2000 + i}," + ("," + line.split(",", 2)[2] if i == 0 else line.split(",", 1)[1])
           for i, line in enumerate(lines[5:8])]
    (commands.folder / "live.csv").write_text("\n".join([lines[0], *lines[1:3], *new]) + "\n", encoding="utf-8")
    first, second, _ = twice(commands, tree_digest, "ingest", "--dataset", "titanic", "--source", "live.csv")
    assert "5 rows in, 3 inserted (2 labelled, 1 awaiting a label), 2 unchanged; table version 1" in first
    assert "5 rows in, 0 inserted (0 labelled, 0 awaiting a label), 5 unchanged; nothing written, table version 1" in second
    reliability.add("idempotency", cases=1)


def test_infer_twice(world, commands: Commands, tree_digest, reliability) -> None:  # noqa: ANN001
    store, _ = world
    add_daily_rows(SPEC, store, DAY, n=30, seed=1)
    first, second, once = twice(commands, tree_digest, "infer", "--dataset", "titanic", "--as-of", DAY.isoformat())
    assert "scored 30 rows" in first
    assert "nothing new to score up to 2024-02-01" in second and "no run logged" in second
    assert [run[2] for run in once["runs"] if run[1] == "titanic-monitoring"] == ["FINISHED"]
    reliability.add("idempotency", cases=1)


def test_labels_twice(world, commands: Commands, tree_digest, reliability) -> None:  # noqa: ANN001
    """A batch scored while 10 of its 30 labels were missing; the labels file brings them
    (the batch's run gets its realized figures the first time, nothing the second)."""
    from serverless_ml.pipelines.infer import InferOptions, infer

    store, settings = world
    add_daily_rows(SPEC, store, DAY, n=30, seed=1)
    group = store.get_feature_group("titanic", 1)
    rows = group.read()
    day = rows[rows["event_time"].dt.date == DAY].sort_values(SPEC.primary_key).head(10)
    unlabelled = day.assign(**{SPEC.label: None})
    group.insert(unlabelled)
    infer(SPEC, store, settings, InferOptions(as_of=DAY, figures=False), dt.datetime(2024, 2, 2, tzinfo=dt.timezone.utc))
    mlflow.set_tracking_uri(None)
    day[[SPEC.primary_key, SPEC.label]].rename(columns={SPEC.primary_key: "PassengerId", SPEC.label: "Survived"}).to_csv(
        commands.folder / "labels.csv", index=False)
    first, second, _ = twice(commands, tree_digest, "labels", "--dataset", "titanic", "--source", "labels.csv")
    assert "10 labels in, 10 set, 0 changed, 0 unchanged" in first and "monitoring runs: 1 of 1 updated" in first
    assert "10 labels in, 0 set, 0 changed, 10 unchanged" in second and "(no label written)" in second
    assert "predictions: 0 rows' actual label updated" in second and "monitoring runs: 0 of 1 updated" in second
    reliability.add("idempotency", cases=1)


def test_simulate_twice_over_the_same_days(world, commands: Commands, tree_digest, reliability) -> None:  # noqa: ANN001
    args = ("simulate", "--dataset", "titanic", "--days", "4", "--end-date", "2024-03-04", "--rows", "5",
            "--retrain-every", "2", "--retrain-trials", "1")
    first, second, once = twice(commands, tree_digest, *args)
    assert "20 synthetic rows added, 4 monitoring runs logged" in first
    assert "retrain: after 2024-03-02: version 2" in first
    assert "0 synthetic rows added, 0 monitoring runs logged" in second
    assert "retrain: after 2024-03-02: done by an earlier run of this simulation (version 2), not repeated" in second
    assert sorted(run[2] for run in once["runs"] if run[1] == "titanic-monitoring") == ["FINISHED"] * 4
    reliability.add("idempotency", cases=1)


def test_train_twice_on_unchanged_data_gives_the_champion_back(
    world, commands: Commands, tree_digest, reliability  # noqa: ANN001
) -> None:
    # The world's champion was trained with these settings on the same rows.
    args = ("train", "--dataset", "titanic", "--trials", "2", "--seed", "1", "--folds", "3", "-q")
    before = state(commands.folder, tree_digest)
    champion = before["registry"]["aliases"][("titanic", "champion")]
    first_out, second_out, once = twice(commands, tree_digest, *args)
    assert_same_state(before, once, " ".join(args))
    kept = (f"champion version {champion} was trained on the same data, seed and search: kept; "
            "use --promote always to register anew\n")
    assert first_out == kept and second_out == kept
    reliability.add("idempotency", cases=1)


def _test_main_twice(commands: Commands, tree_digest, reliability) -> None:  # noqa: ANN001
    args = ("main", "--dataset", "titanic", "--trials", "1", "--days", "2")
    commands.in_process(*args)
    once = state(commands.folder, tree_digest)
    commands.subprocess(*args)
    after = state(commands.folder, tree_digest)
    assert after["store files"] == once["store files"] and after["rows"] == once["rows"]
    monitoring = [run for run in once["runs"] if run[1] == "titanic-monitoring"]
    assert [run for run in after["runs"] if run[1] == "titanic-monitoring"] == monitoring
    assert not [run for run in after["runs"] if run[2] == "RUNNING"]
    reliability.add("idempotency", cases=1)


if SOAK:  # defined only under make soak (minutes of mlflow run subprocesses), never skipped
    test_main_twice = _test_main_twice
