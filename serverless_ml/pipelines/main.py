"""The ``main`` entry point: the whole loop for one dataset as MLflow project runs.

features -> train -> simulate (a short history up to yesterday, optionally with a drift
episode) -> daily (today's rows) -> batch_inference (today's batch), each step an
``mlflow.run`` of this project's own entry point with ``env_manager="local"``, nested
under the ``main`` run (MLflow tags each step's run with the parent's id). Each step's
own training or monitoring runs are linked to its project run by the ``sml.job_run_id`` tag.

Logs: the ``main`` run (``<dataset>-main``) and one project run per step, named
``<dataset>-<step>-<date>``, in the experiment ``<dataset>-pipeline`` (under ``mlflow run
-e main`` the steps join the experiment of that project run instead). Reads, for its
summary: the registry's champion and the monitoring runs of the days it covered.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serverless_ml import defaults, registry
from serverless_ml.errors import SmlError
from serverless_ml.progress import ProgressCallback

if TYPE_CHECKING:
    from mlflow import MlflowClient


@dataclass(frozen=True)
class MainOptions:
    """``dataset`` is what the steps are given (a built-in's name or a spec file's absolute
    path: the steps run in the project's folder, not the caller's); ``name`` is the
    dataset's name (the spec's ``name``), which names the runs, experiments and model.
    Defaults are in :mod:`serverless_ml.defaults`; the simulate step's options are checked by
    :class:`~serverless_ml.pipelines.simulate.SimulateOptions` (``sml main`` builds one
    before any step runs)."""

    dataset: str = defaults.DATASET
    trials: int = defaults.TRAIN_TRIALS
    days: int = defaults.SIMULATE_DAYS
    drift: str = ""
    drift_from: int = 0
    drift_days: int = 0
    store_dir: str = ""
    name: str = ""
    label_delay: int = defaults.SIMULATE_LABEL_DELAY
    label_share: float = defaults.SIMULATE_LABEL_SHARE

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise SmlError(f"--trials must be >= 1, got {self.trials}")

    @property
    def dataset_name(self) -> str:
        return self.name or self.dataset


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
            "label_delay": str(options.label_delay), "label_share": str(options.label_share),
            # Run again on a later day, the drift episode falls on other dates: the days
            # simulated before keep their rows, predictions and runs (history).
            "keep_existing": "true",
        }),
        # Today's rows, then the batch that scores them: the last monitoring run is today's.
        ("daily", {**common, "date": today.isoformat()}),
        ("batch_inference", {**common, "as_of": today.isoformat()}),
    ]


def step_run_name(dataset: str, entry_point: str, today: dt.date) -> str:
    """``<dataset>-<step>-<date>``: a step's project run, as the MLflow UI lists it."""
    return f"{dataset}-{entry_point}-{today.isoformat()}"


@dataclass(frozen=True)
class StepRun:
    entry_point: str
    run_id: str
    seconds: float


@dataclass
class MainReport:
    """What ``main`` ran: its run, its experiment and each step's project run."""

    run_id: str
    experiment_id: str
    steps: list[StepRun] = field(default_factory=list)
    seconds: float = 0.0


def run_main(options: MainOptions, today: dt.date, progress: ProgressCallback | None = None) -> MainReport:
    """Run every step (tracking configured); ``progress(done, total, entry_point)`` is
    called as each step starts, and ``progress(total, total, "finished")`` at the end."""
    import mlflow
    from mlflow.exceptions import ExecutionException

    from serverless_ml import tracking

    project = find_project_dir()
    # env_manager="local" runs each step with the `python` first on PATH: make it this
    # interpreter's, so the steps run where `sml main` runs (as from an activated venv).
    interpreter_bin = str(Path(sys.executable).parent)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != interpreter_bin:
        os.environ["PATH"] = os.pathsep.join([interpreter_bin, os.environ.get("PATH", "")])
    plan = steps(options, today)
    started = time.monotonic()
    # Inside `mlflow run . -e main` the main run is that project run (MLFLOW_RUN_ID), in
    # the experiment its caller chose; otherwise it is a new run in the dataset's own.
    inside_project_run = bool(os.environ.get("MLFLOW_RUN_ID"))
    experiment_id = None if inside_project_run else tracking.get_or_create_experiment(registry.pipeline_experiment(options.dataset_name))
    with mlflow.start_run(run_name=f"{options.dataset_name}-main", experiment_id=experiment_id) as parent:
        mlflow.set_tag("dataset", options.dataset_name)
        report = MainReport(parent.info.run_id, parent.info.experiment_id)
        for number, (entry_point, parameters) in enumerate(plan):
            if progress is not None:
                progress(number, len(plan), entry_point)
            step_started = time.monotonic()
            step_started_ms = int(time.time() * 1000)
            try:
                submitted = mlflow.projects.run(
                    str(project), entry_point=entry_point, parameters=parameters, env_manager="local",
                    experiment_id=parent.info.experiment_id, run_name=step_run_name(options.dataset_name, entry_point, today),
                )
            except ExecutionException as exc:
                message = f"step '{entry_point}' failed: {str(exc).splitlines()[0]}"
                why = _step_error(parent.info.experiment_id, parent.info.run_id, step_started_ms)
                # The main run says which step failed and why (the step's run has the reason too).
                tracking.record_project_run_error(message + (f" ({why})" if why else ""), parent.info.run_id)
                raise SmlError(message) from None
            report.steps.append(StepRun(entry_point, submitted.run_id, time.monotonic() - step_started))
        report.seconds = time.monotonic() - started
        if progress is not None:
            progress(len(plan), len(plan), "finished")
    return report


def _step_error(experiment_id: str, parent_run_id: str, since_ms: int) -> str:
    """The ``sml.error`` tag of the step run of ``parent_run_id`` that failed last (started
    at ``since_ms`` or later), or ``""``."""
    import mlflow

    from serverless_ml import tracking

    try:
        runs = mlflow.MlflowClient().search_runs(
            [experiment_id],
            filter_string=f"tags.`{tracking.PARENT_RUN_TAG}` = '{parent_run_id}' and attributes.status = 'FAILED' "
                          f"and attributes.start_time >= {since_ms}",
            order_by=["attributes.start_time DESC"], max_results=1)
    except Exception:  # noqa: BLE001 - the store may be what failed
        return ""
    return runs[0].data.tags.get(tracking.ERROR_TAG, "") if runs else ""


@dataclass
class MainSummary:
    """The state ``main`` leaves, read back from MLflow: what to tell the user at the end."""

    dataset: str
    report: MainReport
    experiment: str
    first_day: dt.date
    today: dt.date
    champion_version: str | None = None
    holdout_accuracy: float | None = None
    batches: int = 0
    rows_scored: int = 0
    alert_days: list[str] = field(default_factory=list)
    latest_alert: str = ""
    look: list[tuple[str, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        steps = ", ".join(f"{s.entry_point} {s.seconds:.0f} s" for s in self.report.steps)
        champion = (f"version {self.champion_version}, holdout accuracy "
                    f"{'n/a' if self.holdout_accuracy is None else f'{self.holdout_accuracy:.3f}'}"
                    if self.champion_version else "none")
        out = [
            f"{self.dataset}: main finished in {self.report.seconds:.0f} s: run {self.dataset}-main "
            f"({self.report.run_id}) in experiment {self.experiment}",
            f"  steps:     {steps}",
            f"  champion:  {champion}",
            f"  batches:   {self.batches} monitoring run(s) from {self.first_day} to {self.today}, "
            f"{self.rows_scored} rows scored",
        ]
        if self.alert_days:
            shown = ", ".join(self.alert_days[-5:])
            more = "the last 5 " if len(self.alert_days) > 5 else ""
            out.append(f"  alerts:    {len(self.alert_days)} batch(es), {more}on {shown}")
            if self.latest_alert:
                out.append(f"             latest: {self.latest_alert}")
        else:
            out.append("  alerts:    none")
        width = max(len(what) for what, _ in self.look)
        out.append("  look at it:")
        out += [f"    {what.ljust(width)}  {how}" for what, how in self.look]
        return out


def summarize(options: MainOptions, report: MainReport, today: dt.date, look: list[tuple[str, str]],
              client: MlflowClient) -> MainSummary:
    """Read back, through ``client`` (the process's :class:`~serverless_ml.tracking.Tracking`
    client), the champion and the monitoring runs of the days ``main`` covered (the
    simulated days and today: other jobs' runs of those days count too, as the site
    shows them); ``look`` is :func:`where_to_look`'s."""
    experiment = client.get_experiment(report.experiment_id).name
    first_day = today - dt.timedelta(days=options.days)
    summary = MainSummary(options.dataset_name, report, experiment, first_day, today)
    champion = registry.alias_version(registry.model_name(options.dataset_name), registry.CHAMPION, client)
    if champion is not None:
        summary.champion_version = str(champion.version)
        summary.holdout_accuracy = registry.holdout_accuracy(champion)
    monitoring = client.get_experiment_by_name(registry.monitoring_experiment(options.dataset_name))
    if monitoring is not None:
        # A simulated day's run starts at its scoring time (the next day, 00:15 UTC).
        since_ms = int(dt.datetime.combine(first_day, dt.time(), dt.timezone.utc).timestamp() * 1000)
        runs = _all_runs(client, monitoring.experiment_id,
                         f"attributes.status = 'FINISHED' and attributes.start_time >= {since_ms}")
        dated = sorted((run.data.tags.get(registry.AS_OF_TAG, ""), run) for run in runs
                       if run.data.tags.get(registry.AS_OF_TAG))
        summary.batches = len(dated)
        summary.rows_scored = int(sum(run.data.metrics.get(registry.ROWS_SCORED_METRIC, 0) for _, run in dated))
        alerted = [(day, run) for day, run in dated if run.data.tags.get(registry.ALERT_TAG) == "true"]
        summary.alert_days = [day for day, _ in alerted]
        if alerted:
            latest_alerts = alerted[-1][1].data.tags.get(registry.ALERTS_TAG, "")
            summary.latest_alert = latest_alerts.split(registry.MESSAGE_SEPARATOR)[0][:160]
    summary.look = look
    return summary


def _all_runs(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=filter_string, max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def where_to_look(tracking_uri: str, store_dir: str | None = None, spec_file: str | None = None) -> list[tuple[str, str]]:
    """The commands that show what ``main`` made: the monitoring site and the MLflow UI
    (a tracking server is its own UI). No password is shown. Call it before
    :func:`run_main`, which puts this interpreter's ``bin`` first on ``PATH``: ``mlflow``
    is named by its path unless the caller's ``PATH`` finds this one."""
    import shlex
    import shutil

    from serverless_ml.redaction import redact_uri

    site = ("sml dashboard" + (f" --store-dir {shlex.quote(store_dir)}" if store_dir else "")
            + (f" --dataset {shlex.quote(spec_file)}" if spec_file else ""))
    if tracking_uri.startswith(("http://", "https://")):
        return [("monitoring site", site), ("MLflow UI", redact_uri(tracking_uri))]
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    found = shutil.which("mlflow")
    program = "mlflow" if found and Path(found).resolve() == mlflow_bin.resolve() else str(mlflow_bin)
    return [("monitoring site", site),
            ("MLflow UI", f"{program} ui --backend-store-uri {shlex.quote(redact_uri(tracking_uri))} --port 5000")]
