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
- ``retrain_on_alert`` closes the loop: a batch whose infer job raises an alert is
  followed by a retrain (:class:`RetrainOnAlert`), unless one (on an alert or on the
  retrain schedule) ran within the cooldown; the new version becomes ``@challenger``
  only, and the infer jobs run with ``--promote live``, so it becomes champion when the
  paired test on the next live batches says it is better.

The clock and the sleep are parameters, so tests drive it with a fake clock.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serverless_ml import defaults
from serverless_ml.cron import Cron
from serverless_ml.errors import SmlError
from serverless_ml.files import atomic_write_text
from serverless_ml.locks import LockBusy, job_lock

if TYPE_CHECKING:
    from serverless_ml.notify import Receiver
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
    notify: tuple[Receiver, ...] = ()
    """Where the infer jobs' alerts and the retrains' alias moves are sent (``--notify``)."""
    promote: str = defaults.INFER_PROMOTE
    """The infer jobs' ``--promote`` (``live`` whatever it says with ``retrain_on_alert``)."""
    retrain_on_alert: bool = False
    retrain_cooldown_h: float = defaults.SCHEDULE_RETRAIN_COOLDOWN_H

    def __post_init__(self) -> None:
        from serverless_ml.datasets.synthetic import check_rows_and_seed  # pandas: not at import

        check_rows_and_seed(self.rows, self.seed)
        if self.retrain_trials < 1:
            raise SmlError(f"--retrain-trials must be >= 1, got {self.retrain_trials}")
        if self.promote not in defaults.INFER_PROMOTE_MODES:
            raise SmlError(f"--promote must be one of {', '.join(defaults.INFER_PROMOTE_MODES)}, got {self.promote!r}")
        if not 0 <= self.retrain_cooldown_h <= 24 * 366:  # also refuses nan
            raise SmlError(f"--retrain-cooldown must be 0..{24 * 366} hours, got {self.retrain_cooldown_h}")
        for job, expression in self.crons.items():
            try:
                Cron.parse(expression)
            except SmlError as exc:
                raise SmlError(f"--{job}-cron: {exc}") from None

    @property
    def infer_promote(self) -> str:
        """What the infer jobs promote with: ``live`` when retraining on alerts (the
        retrained version is only a challenger until the live rule promotes it)."""
        return "live" if self.retrain_on_alert else self.promote

    @property
    def crons(self) -> dict[str, str]:
        """Job name -> its cron expression (UTC)."""
        return {"daily": self.daily_cron, "infer": self.infer_cron, "retrain": self.retrain_cron}


def _state_path(state_dir: Path, dataset: str) -> Path:
    return state_dir / STATE_DIR / f"{dataset}.json"


def load_state(state_dir: Path, dataset: str) -> dict[str, str]:
    """The schedule's record of a dataset: each job's last slot, when it was last alive,
    when a retrain on an alert last ran."""
    path = _state_path(state_dir, dataset)
    return json.loads(path.read_text()) if path.exists() else {}


def save_state(state_dir: Path, dataset: str, key: str, moment: dt.datetime) -> None:
    """Record ``moment`` under ``key`` (:func:`atomic_write_text`)."""
    state = load_state(state_dir, dataset)
    state[key] = moment.isoformat()
    atomic_write_text(_state_path(state_dir, dataset), json.dumps(state, indent=2, sort_keys=True))


ALERT_RETRAIN_KEY = "retrain_on_alert"
"""The state key of the last retrain an alert started (the scheduled one is ``retrain``)."""


@dataclass
class RetrainOnAlert:
    """``--retrain-on-alert``: after a batch whose infer job raised an alert, retrain
    (``retrain``: registers a challenger, returns one line) unless a retrain, on an alert
    or on the retrain schedule, ran within ``cooldown`` of ``clock()``. Takes the retrain
    job's lock (a retrain already running is not started twice)."""

    state_dir: Path
    dataset: str
    cooldown: dt.timedelta
    retrain: Callable[[], str]
    clock: Callable[[], dt.datetime]

    def last_retrain(self) -> dt.datetime | None:
        state = load_state(self.state_dir, self.dataset)
        known = [dt.datetime.fromisoformat(state[k]) for k in ("retrain", ALERT_RETRAIN_KEY) if k in state]
        return max(known) if known else None

    def after_batch(self, alerts: list[str]) -> str | None:
        """What the batch's alerts led to (``None``: no alert)."""
        if not alerts:
            return None
        now = self.clock()
        last = self.last_retrain()
        if last is not None and now - last < self.cooldown:
            return (f"retrain on alert skipped: the last retrain ran at {last.isoformat()} "
                    f"(cooldown {self.cooldown.total_seconds() / 3600:g} h)")
        try:
            with job_lock(self.state_dir, f"schedule-retrain-{self.dataset}", wait=False):
                outcome = self.retrain()
                save_state(self.state_dir, self.dataset, ALERT_RETRAIN_KEY, now)
        except LockBusy:
            return "retrain on alert skipped: a retrain is running"
        return f"retrained on alert: {outcome}"


def infer_then_retrain(
    run_infer: Callable[[dt.datetime], tuple[str, list[str]]], retrainer: RetrainOnAlert | None,
) -> Callable[[dt.datetime], str]:
    """The infer job's action: ``run_infer`` (its line and alerts), then, with
    ``retrainer``, a retrain when the batch raised an alert (a retrain that fails fails
    the job's slot, logged; the batch itself was scored and logged before)."""

    def action(slot: dt.datetime) -> str:
        line, alerts = run_infer(slot)
        followed = retrainer.after_batch(alerts) if retrainer is not None else None
        return f"{line}; {followed}" if followed else line

    return action


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

    def _load_state(self, dataset: str) -> dict[str, str]:
        return load_state(self.state_dir, dataset)

    def _save_slot(self, job: Job, slot: dt.datetime) -> None:
        self._save(job.dataset, job.name, slot)

    def _save_alive(self, now: dt.datetime) -> None:
        """Up to when the scheduler was running: what a later catch-up starts from."""
        for dataset in {job.dataset for job in self.jobs}:
            self._save(dataset, ALIVE_KEY, now)

    def _save(self, dataset: str, key: str, moment: dt.datetime) -> None:
        save_state(self.state_dir, dataset, key, moment)

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

        def batch(slot: dt.datetime, spec: Any = spec) -> tuple[str, list[str]]:
            # The server was probed when the scheduler started; a job hours later probes it
            # again, so an outage is one line within seconds, not minutes of MLflow's retries.
            check_tracking_reachable(tracker.uri)
            report = infer(spec, store, settings, InferOptions(as_of=slot.date(), figures=False, notify=options.notify,
                                                               promote=options.infer_promote),
                           clock(), tracker)
            line = report.summary().splitlines()[0]
            return line + (f"; live promotion: {report.promotion}" if report.promotion else ""), list(report.alerts)

        def challenger(spec: Any = spec) -> str:
            check_tracking_reachable(tracker.uri)
            report = train(spec, store, settings, TrainOptions(trials=options.retrain_trials, seed=options.seed,
                                                               include_synthetic=True, quiet=True, notify=options.notify,
                                                               promote="never"), tracker)
            return report.outcome()

        retrainer = (RetrainOnAlert(settings.state_dir, spec.name, dt.timedelta(hours=options.retrain_cooldown_h), challenger,
                                    clock) if options.retrain_on_alert else None)

        def retrain(slot: dt.datetime, spec: Any = spec) -> str:
            check_tracking_reachable(tracker.uri)
            report = train(spec, store, settings, TrainOptions(trials=options.retrain_trials, seed=options.seed, include_synthetic=True, quiet=True,
                                                                notify=options.notify),
                           tracker)
            return report.outcome()

        # Locks and the last slots are kept under the dataset's name, not the argument (a
        # spec file's path has slashes, and two spellings of one spec are one dataset).
        jobs += [
            Job("daily", spec.name, Cron.parse(options.daily_cron), daily),
            Job("infer", spec.name, Cron.parse(options.infer_cron), infer_then_retrain(batch, retrainer)),
            Job("retrain", spec.name, Cron.parse(options.retrain_cron), retrain, collapse_missed=True),
        ]
    return jobs
