"""Every Optuna trial as a nested MLflow run, logged from a helper process.

One ``log_batch`` call per trial carries its params, per-fold scores and summary metrics
(MLflow's own Optuna storage and per-metric calls are an order of magnitude slower).

Why a process: MLflow's client spends about 40 ms of Python per trial (three calls through
SQLAlchemy). On a thread of the tuning process that time holds the GIL the search needs,
and the search slowed by 5-12 %; a helper process uses a free core instead
(``python -m bench train``, section overhead). :class:`TrialLogger` starts it and is the
search's callback; tuning workers of the same job get a :class:`TrialSink` that feeds the
same helper. The helper starts when the logger is created, so its imports overlap the
first trial.

Failure modes: an MLflow error in the helper is raised in the tuning process at the next
trial or by :meth:`TrialLogger.close` (which the job calls after the search), as one line.
If the tuning process is killed, the helper logs the trials it has already received and
exits; a trial being logged when the helper itself is killed stays RUNNING, tagged with the
helper's pid, and the next training job on this machine ends it FAILED.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
import time
from typing import Any

from serverless_ml import registry
from serverless_ml.errors import SmlError

# How often the helper checks that the tuning process is alive while no trial arrives.
PARENT_CHECK_S = 0.5


def trial_record(study_name: str, trial: Any) -> dict[str, Any]:
    """What the helper needs of a finished ``optuna.trial.FrozenTrial``, as plain data."""
    return {
        registry.STUDY_NAME_TAG: study_name,
        "number": trial.number,
        "state": trial.state.name,
        "params": dict(trial.params),
        "val_scores": [float(v) for v in trial.user_attrs.get("val_scores", [])],
        "train_scores": [float(v) for v in trial.user_attrs.get("train_scores", [])],
        "start_ms": int(trial.datetime_start.timestamp() * 1000) if trial.datetime_start else None,
        "end_ms": int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None,
        "duration_s": trial.duration.total_seconds() if trial.duration is not None else None,
    }


def log_trial(client: Any, experiment_id: str, parent_run_id: str, dataset: str, record: dict[str, Any]) -> str:
    """Create, fill and end the nested run of one trial (three MLflow calls); its run id."""
    from mlflow.entities import Metric, Param, RunTag

    from serverless_ml.tracking import (
        PARENT_RUN_TAG,
        RUN_NAME_TAG,
        owner_tags,
        param_value,
    )

    now = int(time.time() * 1000)
    name = f"{dataset}-trial-{record['number']:03d}"
    run = client.create_run(
        experiment_id,
        start_time=record["start_ms"] or now,
        tags={
            PARENT_RUN_TAG: parent_run_id,
            RUN_NAME_TAG: name,
            registry.TRIAL_NUMBER_TAG: str(record["number"]),
            registry.TRIAL_STATE_TAG: record["state"],
            registry.STUDY_NAME_TAG: record[registry.STUDY_NAME_TAG],
            "dataset": dataset,
            **owner_tags(),
        },
        run_name=name,
    )
    val, train = record["val_scores"], record["train_scores"]
    metrics = [Metric("val_accuracy", v, now, step) for step, v in enumerate(val)]
    metrics += [Metric("train_accuracy", v, now, step) for step, v in enumerate(train)]
    if val:
        mean = sum(val) / len(val)
        std = (sum((v - mean) ** 2 for v in val) / len(val)) ** 0.5
        metrics += [Metric(registry.CV_ACCURACY_METRIC, mean, now, 0), Metric(registry.CV_ACCURACY_STD_METRIC, std, now, 0),
                    Metric("folds_completed", float(len(val)), now, 0)]
    if train:
        metrics.append(Metric("train_accuracy_mean", sum(train) / len(train), now, 0))
    if record["duration_s"] is not None:
        metrics.append(Metric("duration_s", record["duration_s"], now, 0))
    params = [Param(k, param_value(v)) for k, v in record["params"].items()]
    pruned = RunTag("pruned", str(record["state"] == "PRUNED").lower())
    client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=[pruned])
    client.set_terminated(run.info.run_id, status=run_status(record["state"]), end_time=record["end_ms"] or now)
    return run.info.run_id


TRIAL_RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED"}
"""The MLflow status a trial's run ends with, by Optuna state: a pruned trial (stopped by
the median pruner after a fold, not failed) ends KILLED, so the MLflow UI tells it from a
completed one at a glance (its tag ``trial_state`` says PRUNED); any other state FAILED."""


def run_status(state: str) -> str:
    """The MLflow run status of a trial in Optuna state ``state`` (:data:`TRIAL_RUN_STATUS`)."""
    return TRIAL_RUN_STATUS.get(state, "FAILED")


def _one_line(exc: BaseException, tracking_uri: str) -> str:
    """The error's type and first line, the tracking URI's password masked."""
    from serverless_ml.tracking import first_line

    return f"{type(exc).__name__}: {first_line(exc, tracking_uri)}"


def _serve(records: Any, errors: Any, tracking_uri: str, experiment_id: str, parent_run_id: str, dataset: str) -> None:
    """The helper process: log each record until the sentinel (``None``) or until the
    tuning process is gone. After the first error it reports it once and only drains the
    queue, so the tuning side never blocks on a full pipe."""
    failed = False
    try:
        from mlflow.tracking import MlflowClient

        from serverless_ml.redaction import install_log_scrubber, remember
        from serverless_ml.tracking import bound_database_retries, use_sqlite_wal

        # A spawned process: the bounds and the log scrubbing of the tuning process again.
        remember(tracking_uri)
        install_log_scrubber()
        # MLflow logs each database error with its traceback before raising it; the error
        # goes back to the tuning process, which says it in one line (found by a user
        # trial: 70 lines of it on a locked database). `--verbose` shows it.
        if not os.environ.get("SML_VERBOSE"):
            import logging

            logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        bound_database_retries(tracking_uri)
        use_sqlite_wal()
        client = MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:  # noqa: BLE001 - reported to the tuning process
        errors.send(_one_line(exc, tracking_uri))
        failed = True
    parent = multiprocessing.parent_process()
    while True:
        try:
            record = records.get(timeout=PARENT_CHECK_S)
        except queue.Empty:
            if parent is not None and not parent.is_alive():
                break
            continue
        if record is None:
            break
        if failed:
            continue
        try:
            log_trial(client, experiment_id, parent_run_id, dataset, record)
        except Exception as exc:  # noqa: BLE001 - reported to the tuning process
            errors.send(_one_line(exc, tracking_uri))
            failed = True
    errors.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is committed; skip the interpreter's teardown of MLflow's thousands of
    # modules (about 0.8 s the tuning process would wait for in close()).
    os._exit(0)


class TrialSink:
    """The callback of a tuning worker process: hands each finished trial to the job's
    helper (picklable only as an argument of a process the job starts)."""

    def __init__(self, records: Any) -> None:
        self.records = records

    def __call__(self, study: Any, trial: Any) -> None:
        self.records.put(trial_record(study.study_name, trial))

    def close(self) -> None:
        """Wait until this process's trials are in the pipe (before the process exits)."""
        self.records.close()
        self.records.join_thread()


class TrialLogger:
    """An Optuna callback that logs each finished trial as a nested MLflow run of
    ``parent_run_id``, from a helper process started now. Call :meth:`close` after the
    search: it waits until every trial is logged and raises the first logging error."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, dataset: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._records = context.Queue()
        self._errors, errors_out = context.Pipe(duplex=False)
        self._process: Any = context.Process(
            target=_serve,
            args=(self._records, errors_out, tracking_uri, experiment_id, parent_run_id, dataset),
            name="sml-trial-logger", daemon=True,
        )
        self._process.start()
        errors_out.close()
        self._error: str | None = None
        self._reported = False

    def sink(self) -> TrialSink:
        """A callback for a tuning worker process that logs through this logger's helper."""
        return TrialSink(self._records)

    def __call__(self, study: Any, trial: Any) -> None:
        self._collect_error()
        self._raise_once()
        if self._process is not None:
            self._records.put(trial_record(study.study_name, trial))

    def close(self) -> None:
        """Wait until every trial handed over is logged; raise the first logging error."""
        if self._process is not None:
            process, self._process = self._process, None
            self._records.put(None)
            process.join()
            self._collect_error()
            self._errors.close()
            self._records.close()
            self._records.join_thread()
            if process.exitcode != 0 and self._error is None:
                self._error = (f"the trial logging process exited with code {process.exitcode}; "
                               "trials after that point are in the Optuna study only")
        self._raise_once()

    def _collect_error(self) -> None:
        if self._error is None and not self._errors.closed and self._errors.poll():
            try:
                self._error = self._errors.recv()
            except EOFError:
                pass

    def _raise_once(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            raise SmlError(f"logging the trials to MLflow failed: {self._error}")
