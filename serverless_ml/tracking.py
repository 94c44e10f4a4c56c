"""The one place that talks to MLflow: tracking set-up, experiment names, trial logging.

Nothing happens on import: :func:`configure_tracking` sets the tracking URI for the
process (``MLFLOW_TRACKING_URI`` wins over the default SQLite database).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna

from serverless_ml.errors import SmlError
from serverless_ml.settings import Settings

PARENT_RUN_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"
RUN_NAME_TAG = "mlflow.runName"
MAX_PARAM_LENGTH = 6000


def training_experiment(dataset: str) -> str:
    return f"{dataset}-training"


def monitoring_experiment(dataset: str) -> str:
    return f"{dataset}-monitoring"


def model_name(dataset: str) -> str:
    """The registered model name of a dataset's model."""
    return dataset


_USER_PASSWORD = re.compile(r"(^|/|\s)([^/@:\s]*):([^@\s/]*)@")


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (safe for logs, params and tags)."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<unparsable uri>"
    if parts.password is None:
        # A malformed URL (``postgresql//user:pw@host``) has no parsed password but may
        # still hold one.
        return _USER_PASSWORD.sub(r"\1\2:***@", uri)
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def configure_tracking(settings: Settings) -> str:
    """Point MLflow at the settings' tracking URI; create the SQLite folder if needed."""
    import mlflow

    # Download progress bars would interleave with the commands' own output.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Against a tracking server MLflow prints a "View run ... at: URL" line per run ended
    # (one per trial) to stdout, between the commands' own lines.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = settings.tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    check_tracking_reachable(uri)
    mlflow.set_tracking_uri(uri)
    return uri


def check_tracking_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer.

    MLflow's own client retries for minutes before it gives up.
    """
    if not uri.startswith(("http://", "https://")):
        return
    parts = urllib.parse.urlsplit(uri)
    # Credentials in the URI are not part of the host name: send them as basic auth.
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    url = urllib.parse.urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health"
    request = urllib.request.Request(url)
    if parts.username is not None:
        import base64

        token = base64.b64encode(f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 (http(s) only)
            return
    except urllib.error.HTTPError as exc:
        if exc.code < 500:
            return
        reason: Any = f"HTTP {exc.code}"
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
    raise SmlError(f"MLflow tracking server {redact_uri(uri)} cannot be reached ({reason})")


def default_optuna_storage(tracking_uri: str, settings_home: Path) -> str:
    """SQLite next to the tracking database (or in the project home for a server)."""
    if tracking_uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(tracking_uri.removeprefix('sqlite:///')).parent / 'optuna.db'}"
    return f"sqlite:///{settings_home.resolve() / 'optuna.db'}"


@contextlib.contextmanager
def job_run(experiment_id: str, run_name: str) -> Iterator[Any]:
    """Start a job's own run in ``experiment_id``, ended FAILED if the job raises.

    Under ``mlflow run`` the project run's id is in ``MLFLOW_RUN_ID`` and MLflow's fluent
    API would log into that run (whose entry-point params clash with the job's). The job
    keeps its own run in its own experiment instead, and the two are linked by tags.
    """
    import mlflow

    project_run_id = os.environ.pop("MLFLOW_RUN_ID", None)
    try:
        with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
            if project_run_id:
                mlflow.set_tag("sml.project_run_id", project_run_id)
                mlflow.MlflowClient().set_tag(project_run_id, "sml.job_run_id", run.info.run_id)
            yield run
    finally:
        if project_run_id is not None:
            os.environ["MLFLOW_RUN_ID"] = project_run_id


def get_or_create_experiment(name: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise SmlError(f"MLflow experiment '{name}' is deleted; restore it or delete it permanently")
        return experiment.experiment_id
    from mlflow.exceptions import MlflowException

    try:
        return mlflow.create_experiment(name)
    except MlflowException:
        # Workers started together (on several machines) race to create it: one wins.
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:MAX_PARAM_LENGTH]


class TrialLogger:
    """An Optuna callback that logs each finished trial as a nested MLflow run.

    One ``log_batch`` call per trial carries its params, per-fold scores and summary
    metrics (MLflow's own Optuna storage and per-metric calls are an order of magnitude
    slower). Works from any process: it needs only the tracking URI and run ids.
    """

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, dataset: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.dataset = dataset

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        name = f"{self.dataset}-trial-{trial.number:03d}"
        run = self.client.create_run(
            self.experiment_id,
            start_time=int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else now,
            tags={
                PARENT_RUN_TAG: self.parent_run_id,
                RUN_NAME_TAG: name,
                "trial_number": str(trial.number),
                "trial_state": trial.state.name,
                "study_name": study.study_name,
                "dataset": self.dataset,
            },
            run_name=name,
        )
        val = list(trial.user_attrs.get("val_scores", []))
        train = list(trial.user_attrs.get("train_scores", []))
        metrics = [Metric("val_accuracy", v, now, step) for step, v in enumerate(val)]
        metrics += [Metric("train_accuracy", v, now, step) for step, v in enumerate(train)]
        if val:
            mean = sum(val) / len(val)
            std = (sum((v - mean) ** 2 for v in val) / len(val)) ** 0.5
            metrics += [Metric("val_accuracy_mean", mean, now, 0), Metric("val_accuracy_std", std, now, 0),
                        Metric("folds_completed", float(len(val)), now, 0)]
        if train:
            metrics.append(Metric("train_accuracy_mean", sum(train) / len(train), now, 0))
        if trial.duration is not None:
            metrics.append(Metric("duration_s", trial.duration.total_seconds(), now, 0))
        params = [Param(k, _param_value(v)) for k, v in trial.params.items()]
        self.client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[RunTag("pruned", str(trial.state.name == "PRUNED").lower())])
        status = "FINISHED" if trial.state.name in ("COMPLETE", "PRUNED") else "FAILED"
        end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else now
        self.client.set_terminated(run.info.run_id, status=status, end_time=end)


def log_params_batch(run_id: str, params: Mapping[str, Any]) -> None:
    """Log many params in one call."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    MlflowClient().log_batch(run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])


def log_metrics_batch(run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """Log many metrics in one call."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])


def log_figure(figure: Any, artifact_file: str, run_id: str | None = None) -> None:
    """Log a matplotlib figure to ``run_id`` (default: the active run) and free it."""
    import matplotlib.pyplot as plt
    import mlflow

    try:
        if run_id is None:
            mlflow.log_figure(figure, artifact_file)
        else:
            mlflow.MlflowClient().log_figure(run_id, figure, artifact_file)
    finally:
        plt.close(figure)
