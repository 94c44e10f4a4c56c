"""The embedded scheduler behind ``sml schedule``: the daily loop, unattended.

Three jobs per dataset, each on its own cron schedule (UTC): ``daily`` (synthetic rows for
the day), ``infer`` (batch inference up to the end of the day) and ``retrain`` (tuning on
real and synthetic rows, promoted by the usual rule). One process, no extra service.

- A job never runs twice at once: each takes a non-blocking lock under the store
  (``flock``, released by the kernel if its holder dies), and a busy job is skipped.
- A failing job is logged with its error; the schedule goes on.
- The last slot each job ran for is kept in ``<store>/_schedule/<dataset>.json``; with
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
from typing import Any

from serverless_ml.cron import Cron
from serverless_ml.locks import LockBusy, job_lock

log = logging.getLogger("serverless_ml.schedule")

JOBS = ("daily", "infer", "retrain")
STATE_DIR = "_schedule"
ALIVE_KEY = "_alive"
MAX_SLEEP_S = 60.0
ALIVE_EVERY = dt.timedelta(hours=1)


class Shutdown(BaseException):
    """Raised in the main thread by SIGINT/SIGTERM (a BaseException, so job code that
    catches Exception does not swallow it)."""


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
    store_dir: Path
    clock: Callable[[], dt.datetime]
    sleep: Callable[[float], None]
    outcomes: list[Outcome] = field(default_factory=list)

    def _state_path(self, dataset: str) -> Path:
        return self.store_dir / STATE_DIR / f"{dataset}.json"

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

    def last_slot(self, job: Job) -> dt.datetime | None:
        value = self._load_state(job.dataset).get(job.name)
        return dt.datetime.fromisoformat(value) if value else None

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
            with job_lock(self.store_dir, f"schedule-{job.name}-{job.dataset}", wait=False):
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
    crons: dict[str, str],
    rows: int,
    seed: int,
    retrain_trials: int,
    clock: Callable[[], dt.datetime],
) -> list[Job]:
    """The real jobs: ``sml daily``, ``sml infer`` and ``sml train`` for each dataset."""
    from serverless_ml.datasets import get_dataset
    from serverless_ml.feature_store import open_feature_store
    from serverless_ml.pipelines.features import add_daily_rows
    from serverless_ml.pipelines.infer import InferOptions, infer
    from serverless_ml.pipelines.train import TrainOptions, train

    store = open_feature_store(settings)
    jobs = []
    for name in datasets:
        spec = get_dataset(name)

        def daily(slot: dt.datetime, spec: Any = spec) -> str:
            return add_daily_rows(spec, store, slot.date(), rows, seed).summary()

        def batch(slot: dt.datetime, spec: Any = spec) -> str:
            report = infer(spec, store, settings, InferOptions(as_of=slot.date(), figures=False), clock())
            return report.summary().splitlines()[0]

        def retrain(slot: dt.datetime, spec: Any = spec) -> str:
            report = train(spec, store, settings, TrainOptions(trials=retrain_trials, seed=seed, include_synthetic=True, quiet=True))
            return report.outcome()

        jobs += [
            Job("daily", name, Cron.parse(crons["daily"]), daily),
            Job("infer", name, Cron.parse(crons["infer"]), batch),
            Job("retrain", name, Cron.parse(crons["retrain"]), retrain, collapse_missed=True),
        ]
    return jobs
