"""The scheduler with a fake clock: no sleeping, no real jobs."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serverless_ml.cron import Cron
from serverless_ml.errors import SmlError
from serverless_ml.pipelines.schedule import Job, Scheduler

pytestmark = pytest.mark.unit

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 1, 1, 0, 0, tzinfo=UTC)


class FakeClock:
    """Time that moves only when the scheduler sleeps (or a job takes time)."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> dt.datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += dt.timedelta(seconds=max(seconds, 1.0))


def _jobs(calls: list[tuple[str, str, dt.datetime]], fail: set[str] = frozenset()) -> list[Job]:
    def action(name: str):  # noqa: ANN202
        def run(slot: dt.datetime) -> str:
            calls.append((name, "titanic", slot))
            if name in fail:
                raise RuntimeError(f"{name} broke")
            return "done"

        return run

    return [
        Job("daily", "titanic", Cron.parse("5 0 * * *"), action("daily")),
        Job("infer", "titanic", Cron.parse("15 0 * * *"), action("infer")),
        Job("retrain", "titanic", Cron.parse("30 0 * * 0"), action("retrain"), collapse_missed=True),
    ]


def test_each_job_runs_once_per_slot(tmp_path: Path) -> None:
    calls: list = []
    clock = FakeClock(T0)
    scheduler = Scheduler(_jobs(calls), tmp_path, clock, clock.sleep)
    scheduler.run(until=dt.datetime(2024, 1, 8, 1, 0, tzinfo=UTC))
    daily = [slot for name, _, slot in calls if name == "daily"]
    infer = [slot for name, _, slot in calls if name == "infer"]
    retrain = [slot for name, _, slot in calls if name == "retrain"]
    assert daily == [dt.datetime(2024, 1, d, 0, 5, tzinfo=UTC) for d in range(1, 9)]
    assert infer == [dt.datetime(2024, 1, d, 0, 15, tzinfo=UTC) for d in range(1, 9)]
    assert retrain == [dt.datetime(2024, 1, 7, 0, 30, tzinfo=UTC)]  # the first Sunday
    assert [name for name, _, _ in calls[:3]] == ["daily", "infer", "daily"]
    assert max(clock.slept) <= 60.0  # wakes up regularly even if the clock jumps


def test_a_failing_job_is_logged_and_the_schedule_goes_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list = []
    clock = FakeClock(T0)
    scheduler = Scheduler(_jobs(calls, fail={"daily"}), tmp_path, clock, clock.sleep)
    with caplog.at_level("WARNING", logger="serverless_ml.schedule"):
        scheduler.run(until=dt.datetime(2024, 1, 3, 1, 0, tzinfo=UTC))
    statuses = [(o.job, o.status) for o in scheduler.outcomes]
    assert statuses.count(("daily", "failed")) == 3 and statuses.count(("infer", "ok")) == 3
    assert "daily broke" in caplog.text


def test_a_job_whose_lock_is_held_elsewhere_is_skipped(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from serverless_ml.locks import job_lock\n"
         "with job_lock(Path(sys.argv[1]), 'schedule-daily-titanic'):\n    print('held', flush=True); time.sleep(60)",
         str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        calls: list = []
        clock = FakeClock(T0)
        scheduler = Scheduler(_jobs(calls), tmp_path, clock, clock.sleep)
        scheduler.run(until=dt.datetime(2024, 1, 1, 1, 0, tzinfo=UTC))
        assert [(o.job, o.status) for o in scheduler.outcomes] == [("daily", "skipped"), ("infer", "ok")]
        assert [name for name, _, _ in calls] == ["infer"]
    finally:
        holder.kill()
        holder.wait()
    # The holder died: its lock died with it, and the job runs again.
    calls = []
    clock = FakeClock(dt.datetime(2024, 1, 2, 0, 0, tzinfo=UTC))
    Scheduler(_jobs(calls), tmp_path, clock, clock.sleep).run(until=dt.datetime(2024, 1, 2, 0, 10, tzinfo=UTC))
    assert [name for name, _, _ in calls] == ["daily"]


def test_catch_up_runs_the_missed_days_in_order_exactly_once(tmp_path: Path) -> None:
    calls: list = []
    clock = FakeClock(T0)
    Scheduler(_jobs(calls), tmp_path, clock, clock.sleep).run(until=dt.datetime(2024, 1, 1, 1, 0, tzinfo=UTC))
    assert len(calls) == 2
    # Down from Jan 1st 01:00 to Jan 16th 12:00: 15 days and two Sundays were missed.
    calls.clear()
    clock = FakeClock(dt.datetime(2024, 1, 16, 12, 0, tzinfo=UTC))
    scheduler = Scheduler(_jobs(calls), tmp_path, clock, clock.sleep)
    scheduler.run(catch_up=True, until=dt.datetime(2024, 1, 16, 12, 0, tzinfo=UTC))
    slots = [(name, slot) for name, _, slot in calls]
    assert [slot for _, slot in slots] == sorted(slot for _, slot in slots)
    assert [s.day for n, s in slots if n == "daily"] == list(range(2, 17))
    assert [s.day for n, s in slots if n == "infer"] == list(range(2, 17))
    assert [s.day for n, s in slots if n == "retrain"] == [14]  # Jan 7th and 14th collapse into one
    assert slots[0] == ("daily", dt.datetime(2024, 1, 2, 0, 5, tzinfo=UTC))
    # A second start catches up nothing: each slot ran exactly once.
    calls.clear()
    Scheduler(_jobs(calls), tmp_path, clock, clock.sleep).run(catch_up=True, until=clock.now)
    assert calls == []


def test_without_catch_up_missed_slots_are_not_run(tmp_path: Path) -> None:
    calls: list = []
    clock = FakeClock(T0)
    Scheduler(_jobs(calls), tmp_path, clock, clock.sleep).run(until=dt.datetime(2024, 1, 1, 1, 0, tzinfo=UTC))
    calls.clear()
    clock = FakeClock(dt.datetime(2024, 1, 5, 12, 0, tzinfo=UTC))
    Scheduler(_jobs(calls), tmp_path, clock, clock.sleep).run(until=dt.datetime(2024, 1, 6, 1, 0, tzinfo=UTC))
    assert [(n, s.day) for n, _, s in calls] == [("daily", 6), ("infer", 6)]


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("5 0 * * *", "2024-01-01T00:05", "2024-01-02T00:05"),
        ("*/20 * * * *", "2024-01-01T00:05", "2024-01-01T00:20"),
        ("0 9-17/4 * * 1-5", "2024-01-05T17:00", "2024-01-08T09:00"),  # Friday evening -> Monday
        ("30 0 * * 7", "2024-01-01T00:00", "2024-01-07T00:30"),  # 7 is Sunday too
        ("0 0 29 2 *", "2024-03-01T00:00", "2028-02-29T00:00"),
        ("0 0 1,15 * 0", "2024-01-02T00:00", "2024-01-07T00:00"),  # day of month OR day of week
    ],
)
def test_cron_next_slot(expression: str, after: str, expected: str) -> None:
    moment = dt.datetime.fromisoformat(after).replace(tzinfo=UTC)
    assert Cron.parse(expression).next_after(moment) == dt.datetime.fromisoformat(expected).replace(tzinfo=UTC)


@pytest.mark.parametrize("expression", ["5 0 * *", "61 0 * * *", "a b c d e", "5-1 * * * *", "*/0 * * * *"])
def test_bad_cron_expressions_are_refused(expression: str) -> None:
    with pytest.raises(SmlError, match="cron expression"):
        Cron.parse(expression)


def test_the_scheduler_does_not_sleep_in_real_time(tmp_path: Path) -> None:
    calls: list = []
    clock = FakeClock(T0)
    started = time.monotonic()
    Scheduler(_jobs(calls), tmp_path, clock, clock.sleep).run(until=dt.datetime(2024, 2, 1, tzinfo=UTC))
    assert len([c for c in calls if c[0] == "daily"]) == 31
    assert time.monotonic() - started < 30


def test_a_scheduled_job_probes_the_tracking_server_first(tmp_path: Path, free_port) -> None:  # noqa: ANN001
    """The scheduler configures tracking once; each infer or retrain job, hours later,
    checks the server again, so an outage is one line, not minutes of MLflow's retries,
    and nothing of the job runs."""
    from serverless_ml.pipelines.schedule import ScheduleOptions, pipeline_jobs
    from serverless_ml.settings import resolve_settings
    from serverless_ml.tracking import Tracking, TrackingServerUnreachable

    uri = f"http://127.0.0.1:{free_port()}"
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri=uri)
    now = dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)
    jobs = {job.name: job for job in pipeline_jobs(["iris"], settings, ScheduleOptions(), lambda: now, Tracking(uri))}
    for name in ("infer", "retrain"):
        started = time.monotonic()
        with pytest.raises(TrackingServerUnreachable, match=f"^MLflow tracking server {uri} cannot be reached"):
            jobs[name].action(now)
        assert time.monotonic() - started < 30  # not MLflow's minutes of retries
    assert not (tmp_path / "store" / "iris").exists()  # the job did not start
