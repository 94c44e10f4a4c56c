"""The embedded scheduler behind ``sml schedule``: the daily loop, unattended.

Three jobs per dataset, each on its own cron schedule (UTC): ``daily`` (synthetic rows for
the day), ``infer`` (batch inference up to the end of the day) and ``retrain`` (tuning on
real and synthetic rows, promoted by the usual rule). One process, no extra service.

- A job never runs twice at once: each takes a non-blocking lock in the state directory
  (``Settings.state_dir``, by default the store's folder; ``flock``, released by the
  kernel if its holder dies), and a busy job is skipped.
- A failing job is logged with its error; the schedule goes on.
- The last slot each job ran for is kept in ``<state_dir>/_schedule/<dataset>.json``; with
  ``catch_up`` the slots missed while the scheduler was down run first, in time order,
  exactly once each (several missed retrains collapse into one: retraining on the latest
  data covers them all).
- SIGINT/SIGTERM stop it cleanly: the running job is interrupted, its MLflow run ends as
  FAILED or KILLED (never left RUNNING), and the scheduler exits.

The clock and the sleep are parameters, so tests drive it with a fake clock.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serverless_ml import defaults
from serverless_ml.cron import Cron
from serverless_ml.errors import SmlError
from serverless_ml.locks import LockBusy, job_lock

if TYPE_CHECKING:
    from serverless_ml.tracking import Tracking

log = logging.getLogger("serverless_ml.schedule")

JOBS = defaults.SCHEDULE_JOBS
STATE_DIR = "_schedule"
ALIVE_KEY = "_alive"
MAX_SLEEP_S = 60.0
ALIVE_EVERY = dt.timedelta(hours=1)


class Shutdown(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM (a BaseException, so job code that
    catches Exception does not swallow it)."""


@dataclass(frozen=True)
class ScheduleOptions:
    """What ``sml schedule`` runs for each dataset (defaults in :mod:`serverless_ml.defaults`);
    an out-of-range value or a bad cron expression fails at construction, in one line."""

    daily_cron: str = defaults.SCHEDULE_DAILY_CRON
    infer_cron: str = defaults.SCHEDULE_INFER_CRON
    retrain_cron: str = defaults.SCHEDULE_RETRAIN_CRON
    rows: int = defaults.DAILY_ROWS
    seed: int = defaults.DAILY_SEED
    retrain_trials: int = defaults.SIMULATE_RETRAIN_TRIALS

    def __post_init__(self) -> None:
        from serverless_ml.datasets.synthetic import check_rows_and_seed  # pandas: not at import

        check_rows_and_seed(self.rows, self.seed)
        if self.retrain_trials < 1:
            raise SmlError(f"--retrain-trials must be >= 1, got {self.retrain_trials}")
        for job, expression in self.crons.items():
            try:
                Cron.parse(expression)
            except SmlError as exc:
                raise SmlError(f"--{job}-cron: {exc}") from None

    @property
    def crons(self) -> dict[str, str]:
        """Job name -> its cron expression (UTC)."""
        return {"daily": self.daily_cron, "infer": self.infer_cron, "retrain": self.retrain_cron}


@dataclass(frozen=True)
class Job:
    """One scheduled job of one dataset."""

    name: str
    dataset: str
    cron: Cron
    action: Callable[[dt.datetime], str]
    collapse_missed: bool = False


@dataclass
class Outcome:
    job: str
    dataset: str
    slot: dt.datetime
    status: str  # "ok", "failed", "skipped"
    detail: str = ""


@dataclass
class Scheduler:
    """Runs jobs at their cron slots. ``clock`` returns an aware UTC datetime."""

    jobs: list[Job]
    state_dir: Path
    clock: Callable[[], dt.datetime]
    sleep: Callable[[float], None]
    outcomes: list[Outcome] = field(default_factory=list)

    def _state_path(self, dataset: str) -> Path:
        return self.state_dir / STATE_DIR / f"{dataset}.json"

    def _load_state(self, dataset: str) -> dict[str, str]:
        path = self._state_path(dataset)
        return json.loads(path.read_text()) if path.exists() else {}

    def _save_slot(self, job: Job, slot: dt.datetime) -> None:
        self._save(job.dataset, job.name, slot)

    def _save_alive(self, now: dt.datetime) -> None:
        """Up to when the scheduler was running: what a later catch-up starts from."""
        for dataset in {job.dataset for job in self.jobs}:
            self._save(dataset, ALIVE_KEY, now)

    def _save(self, dataset: str, key: str, moment: dt.datetime) -> None:
        state = self._load_state(dataset)
        state[key] = moment.isoformat()
        path = self._state_path(dataset)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(state, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)

    def missed_slots(self, now: dt.datetime) -> list[tuple[dt.datetime, Job]]:
        """Slots after each job's last recorded slot and after the scheduler was last seen
        running, up to ``now``, in time order."""
        missed: list[tuple[dt.datetime, Job]] = []
        for job in self.jobs:
            state = self._load_state(job.dataset)
            known = [dt.datetime.fromisoformat(state[k]) for k in (job.name, ALIVE_KEY) if k in state]
            if not known:
                continue
            last = max(known)
            slots = job.cron.slots_between(last, now)
            if job.collapse_missed and slots:
                slots = slots[-1:]
            missed += [(slot, job) for slot in slots]
        return sorted(missed, key=lambda item: (item[0], JOBS.index(item[1].name)))

    def run_slot(self, job: Job, slot: dt.datetime) -> Outcome:
        """Run one job for one slot under its lock; record the slot unless it was skipped."""
        try:
            with job_lock(self.state_dir, f"schedule-{job.name}-{job.dataset}", wait=False):
                try:
                    detail = job.action(slot)
                    outcome = Outcome(job.name, job.dataset, slot, "ok", detail)
                except Shutdown:
                    raise
                except Exception as exc:  # noqa: BLE001 - a failing job must not stop the schedule
                    outcome = Outcome(job.name, job.dataset, slot, "failed", f"{type(exc).__name__}: {exc}")
                self._save_slot(job, slot)
        except LockBusy:
            outcome = Outcome(job.name, job.dataset, slot, "skipped", "already running")
        level = logging.WARNING if outcome.status != "ok" else logging.INFO
        log.log(level, "%s %s %s: %s %s", job.name, job.dataset, slot.isoformat(), outcome.status, outcome.detail)
        self.outcomes.append(outcome)
        return outcome

    def run(self, catch_up: bool = False, until: dt.datetime | None = None, run_now: tuple[str, ...] = ()) -> None:
        """Run until ``until`` (tests) or until a signal stops it."""
        start = self.clock()
        if catch_up:
            for slot, job in self.missed_slots(start):
                self.run_slot(job, slot)
        for job in self.jobs:
            if job.name in run_now:
                self.run_slot(job, start)
        upcoming = {id(job): job.cron.next_after(start) for job in self.jobs}
        self._save_alive(start)
        alive_saved = start
        while True:
            now = self.clock()
            if until is not None and now >= until:
                return
            due = sorted(
                ((upcoming[id(job)], job) for job in self.jobs if upcoming[id(job)] <= now),
                key=lambda item: (item[0], JOBS.index(item[1].name)),
            )
            for slot, job in due:
                self.run_slot(job, slot)
                upcoming[id(job)] = job.cron.next_after(slot)
            if due or now - alive_saved >= ALIVE_EVERY:
                # Precision does not matter: a slot that ran is recorded as its job's last
                # slot; this only bounds how far back a catch-up looks for other jobs.
                self._save_alive(now)
                alive_saved = now
            if due:
                continue
            wait = min(upcoming.values()) - self.clock()
            self.sleep(max(0.0, min(wait.total_seconds(), MAX_SLEEP_S)))


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`Shutdown` in the main thread, for the duration."""

    def handler(signum: int, frame: Any) -> None:
        raise Shutdown(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def pipeline_jobs(
    datasets: list[str],
    settings: Any,
    options: ScheduleOptions,
    clock: Callable[[], dt.datetime],
    tracker: Tracking,
) -> list[Job]:
    """The real jobs: ``sml daily``, ``sml infer`` and ``sml train`` for each dataset, all
    on ``tracker`` (the scheduler process's :class:`~serverless_ml.tracking.Tracking`,
    configured once, not again by every job it runs)."""
    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.features import add_daily_rows
    from serverless_ml.pipelines.infer import InferOptions, infer
    from serverless_ml.pipelines.train import TrainOptions, train
    from serverless_ml.tracking import check_tracking_reachable

    store = open_feature_store(settings)
    jobs = []
    for name in datasets:
        spec = get_dataset(name)

        def daily(slot: dt.datetime, spec: Any = spec) -> str:
            return add_daily_rows(spec, store, slot.date(), options.rows, options.seed).summary()

        def batch(slot: dt.datetime, spec: Any = spec) -> str:
            # The server was probed when the scheduler started; a job hours later probes it
            # again, so an outage is one line within seconds, not minutes of MLflow's retries.
            check_tracking_reachable(tracker.uri)
            report = infer(spec, store, settings, InferOptions(as_of=slot.date(), figures=False), clock(), tracker)
            return report.summary().splitlines()[0]

        def retrain(slot: dt.datetime, spec: Any = spec) -> str:
            check_tracking_reachable(tracker.uri)
            report = train(spec, store, settings, TrainOptions(trials=options.retrain_trials, seed=options.seed, include_synthetic=True, quiet=True),
                           tracker)
            return report.outcome()

        jobs += [
            Job("daily", name, Cron.parse(options.daily_cron), daily),
            Job("infer", name, Cron.parse(options.infer_cron), batch),
            Job("retrain", name, Cron.parse(options.retrain_cron), retrain, collapse_missed=True),
        ]
    return jobs
