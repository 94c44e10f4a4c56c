"""The ``main`` entry point: the whole loop for one dataset as MLflow project runs.

features -> train -> simulate (a short history, optionally with a drift episode) ->
batch_inference, each step an ``mlflow.run`` of this project's own entry point with
``env_manager="local"``, nested under the ``main`` run (MLflow tags each step's run with
the parent's id). Each step's own training or monitoring runs are linked to its project
run by the ``sml.job_run_id`` tag.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from serverless_ml.errors import SmlError


@dataclass(frozen=True)
class MainOptions:
    dataset: str
    trials: int
    days: int
    drift: str = ""
    drift_from: int = 0
    drift_days: int = 0
    store_dir: str = ""


def find_project_dir(start: Path | None = None) -> Path:
    """The folder holding this project's MLproject: the working directory or a parent,
    else the checkout the package was imported from."""
    candidates = [*(p for p in [(start or Path.cwd()).resolve(), *(start or Path.cwd()).resolve().parents])]
    candidates.append(Path(__file__).resolve().parents[2])
    for folder in candidates:
        if (folder / "MLproject").is_file() and (folder / "entrypoints").is_dir():
            return folder
    raise SmlError("no MLproject found: run `sml main` from the serverless-ml checkout")


def steps(options: MainOptions, today: dt.date) -> list[tuple[str, dict[str, str]]]:
    """The entry points ``main`` runs, with their parameters."""
    common = {"dataset": options.dataset, "store_dir": options.store_dir}
    yesterday = today - dt.timedelta(days=1)
    return [
        ("features", {**common}),
        ("train", {**common, "trials": str(options.trials)}),
        ("simulate", {
            **common, "days": str(options.days), "end_date": yesterday.isoformat(), "drift": options.drift,
            "drift_from": str(options.drift_from), "drift_days": str(options.drift_days),
            # Run again on a later day, the drift episode falls on other dates: the days
            # simulated before keep their rows, predictions and runs (history).
            "keep_existing": "true",
        }),
        ("batch_inference", {**common}),
    ]


def run_main(options: MainOptions, today: dt.date) -> list[tuple[str, str]]:
    """Run every step; return (entry point, project run id) pairs."""
    import mlflow
    from mlflow.exceptions import ExecutionException

    project = find_project_dir()
    # env_manager="local" runs each step with the `python` first on PATH: make it this
    # interpreter's, so the steps run where `sml main` runs (as from an activated venv).
    interpreter_bin = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != interpreter_bin:
        os.environ["PATH"] = os.pathsep.join([interpreter_bin, os.environ.get("PATH", "")])
    done = []
    with mlflow.start_run(run_name=f"{options.dataset}-main") as parent:
        mlflow.set_tag("dataset", options.dataset)
        for entry_point, parameters in steps(options, today):
            try:
                submitted = mlflow.run(
                    str(project), entry_point=entry_point, parameters=parameters, env_manager="local",
                    experiment_id=parent.info.experiment_id,
                )
            except ExecutionException as exc:
                raise SmlError(f"step '{entry_point}' failed: {str(exc).splitlines()[0]}") from None
            done.append((entry_point, submitted.run_id))
    return done
