"""What the long commands print, through the real CLI: a line per simulated day in a log,
a bar on a terminal, nothing under --quiet; an alert printed once; `sml main` with a line
per step, none of MLflow's noise, its runs named and kept in the dataset's experiment,
and a summary that says where to look."""

from __future__ import annotations

import datetime as dt
import os
import pty
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from mlflow import MlflowClient

from serverless_ml.datasets import get_dataset
from serverless_ml.datasets.synthetic import parse_drift
from serverless_ml.pipelines.features import add_daily_rows
from worlds import trained_template, world  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration

SPEC = get_dataset("titanic")
END = dt.date(2024, 5, 31)
MLFLOW_NOISE = ("INFO mlflow", "Created directory", "for downloading remote URIs", "=== Run", "=== Running command",
                "Registered model", "Successfully registered model", "Created version")


def _simulate(end: dt.date, days: int) -> list[str]:
    return ["simulate", "--dataset", "titanic", "--days", str(days), "--end-date", end.isoformat(), "--rows", "4",
            "--no-figures"]


def test_simulate_prints_a_line_per_day_in_a_log_and_nothing_under_quiet(world, run_cli) -> None:  # noqa: ANN001
    store, _ = world
    code, out, err = run_cli(*_simulate(END, 3), store_dir=store.root)
    assert code == 0, err
    days = [(END - dt.timedelta(days=2 - i)).isoformat() for i in range(3)]
    assert err.splitlines() == [
        f"titanic simulate: 0/3 days scored; rows of {days[0]}..{days[-1]} written",
        *(f"titanic simulate: {i}/3 {day}: 4 rows scored" for i, day in enumerate(days, start=1)),
    ]
    assert out.startswith("titanic: simulated 3 days")

    later = END + dt.timedelta(days=2)
    code, out, err = run_cli(*_simulate(later, 2), "-q", store_dir=store.root)
    assert (code, err) == (0, ""), err
    assert out.startswith("titanic: simulated 2 days")
    code, out, err = run_cli(*_simulate(later + dt.timedelta(days=2), 2), store_dir=store.root, env={"SML_QUIET": "1"})
    assert (code, err) == (0, ""), err


def test_train_prints_a_line_per_trial_in_a_log_and_nothing_under_quiet(world, run_cli) -> None:  # noqa: ANN001
    store, _ = world
    code, out, err = run_cli("train", "--dataset", "titanic", "--trials", "2", "--seed", "3", "--promote", "never",
                             store_dir=store.root)
    assert code == 0, err
    lines = [line for line in err.splitlines() if line.startswith("titanic train: ")]
    assert [line.split(" trial ")[0] for line in lines] == ["titanic train: 1/2", "titanic train: 2/2"], err
    assert all(" complete, CV accuracy 0." in line or " pruned" in line for line in lines), lines
    assert "best trial #" in out and not [line for line in err.splitlines() if "%|" in line]  # no Optuna bar
    code, out, err = run_cli("train", "--dataset", "titanic", "--trials", "1", "--seed", "4", "--promote", "never", "-q",
                             store_dir=store.root)
    assert code == 0, err
    assert "titanic train:" not in err and "best trial #" in out


def test_simulate_draws_one_bar_on_a_terminal(world, tmp_path: Path, data_dir: Path) -> None:  # noqa: ANN001
    """stderr on a pseudo-terminal: one bar redrawn in place, no line per day."""
    store, _ = world
    main_fd, terminal_fd = pty.openpty()
    env = {**os.environ, "SML_STORE_DIR": str(store.root), "SML_DATA_DIR": str(data_dir), "COLUMNS": "120"}
    proc = subprocess.Popen([sys.executable, "-m", "serverless_ml.cli", *_simulate(END, 3)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=terminal_fd, text=True)
    os.close(terminal_fd)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main_fd, 4096)
            except OSError:  # the terminal closed with the process
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=300)
    reader.join(timeout=10)
    os.close(main_fd)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, shown
    assert "\r" in shown and "titanic simulate  [" in shown and "3/3" in shown, shown
    assert "titanic simulate: 1/3" not in shown
    assert out.startswith("titanic: simulated 3 days")


def test_an_alert_is_printed_once_and_fail_on_alert_exits_3_after_the_summary(world, run_cli) -> None:  # noqa: ANN001
    store, _ = world
    day = END
    add_daily_rows(SPEC, store, day, n=60, seed=0, drift=parse_drift("age+30", SPEC))
    code, out, err = run_cli("infer", "--dataset", "titanic", "--as-of", day.isoformat(), "--no-figures",
                             "--fail-on-alert", store_dir=store.root)
    assert code == 3, err
    alert_lines = [line for line in out.splitlines() if line.startswith("ALERT ")]
    assert len(alert_lines) == 1 and alert_lines[0].startswith(f"ALERT titanic {day}: drift alert"), out
    message = alert_lines[0].split(": ", 1)[1]
    assert (out + err).count(message) == 1
    assert f"titanic: scored 60 rows up to {day}" in out
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: titanic {day}: 1 alert(s), listed above (--fail-on-alert; monitoring run ")
    assert not any(noise in out + err for noise in MLFLOW_NOISE)


def test_main_names_its_runs_keeps_them_with_the_dataset_and_ends_with_a_summary(
    run_cli, tmp_path: Path  # noqa: ANN001
) -> None:
    """A dataset the project was not built for, named as a new user would: a spec file by a
    relative path, a relative store and a relative SQLite database. The steps run in the
    project's folder, so every path reaches them absolute; runs, experiment, model and
    summary are named by the spec's name, not its path."""
    from bench.datasets import write_dataset

    write_dataset("wine", tmp_path / "data")
    days, name = 3, "wine"
    tracking_uri = f"sqlite:///{tmp_path / 'db' / 'mlflow.db'}"
    code, out, err = run_cli("main", "--dataset", "data/wine.yaml", "--trials", "2", "--days", str(days),
                             "--store-dir", "store", store_dir=None, env={"MLFLOW_TRACKING_URI": "sqlite:///db/mlflow.db"})
    assert code == 0, (out, err)
    assert (tmp_path / "store").is_dir() and (tmp_path / "db" / "mlflow.db").is_file()
    today = dt.datetime.now(dt.timezone.utc).date()
    entry_points = ["features", "train", "simulate", "daily", "batch_inference"]

    # A line per step (each step prints its own progress in between), and no MLflow noise.
    steps = [line for line in err.splitlines() if line.startswith("==> ")]
    assert steps == [f"==> {name} {i}/5: {step}" for i, step in enumerate(entry_points, start=1)]
    assert f"{name} simulate: {days}/{days} {today - dt.timedelta(days=1)}: 10 rows scored" in err
    assert not [line for line in (out + err).splitlines() if any(noise in line for noise in MLFLOW_NOISE)]
    assert "Traceback" not in err

    # The runs: the main run and one per step, named and in the dataset's experiment.
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(f"{name}-pipeline")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("mlflow.runName") == f"{name}-main"]
    assert parent.data.tags["dataset"] == name
    children = {r.data.tags["mlflow.project.entryPoint"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == set(entry_points)
    for step, run in children.items():
        assert run.info.run_name == f"{name}-{step}-{today.isoformat()}"
        assert run.info.status == "FINISHED"
        assert run.data.params["dataset"] == str((tmp_path / "data" / "wine.yaml").resolve())
    assert not client.search_runs(["0"]), "runs in the Default experiment"

    # The summary: one screen, what was made and where to look.
    summary = out[out.index(f"{name}: main finished in"):].splitlines()
    assert len(summary) <= 12, summary
    champion = client.get_model_version_by_alias(name, "champion")
    assert f"`sml train --dataset {(tmp_path / 'data' / 'wine.yaml').resolve()}`" in client.get_registered_model(name).description
    holdout = float(champion.tags["holdout_accuracy"])
    assert f"  champion:  version {champion.version}, holdout accuracy {holdout:.3f}" in summary
    batches = next(line for line in summary if line.startswith("  batches:"))
    assert batches.startswith(f"  batches:   {days + 1} monitoring run(s) from {today - dt.timedelta(days=days)} to {today}")
    assert any(line.startswith("  alerts:") for line in summary)
    spec_file = str((tmp_path / "data" / "wine.yaml").resolve())
    assert any("monitoring site" in line and "sml dashboard" in line and f"--dataset {spec_file}" in line for line in summary)
    database = tracking_uri.removeprefix("sqlite:///")
    assert any("MLflow UI" in line and f"ui --backend-store-uri sqlite:///{database}" in line for line in summary)
