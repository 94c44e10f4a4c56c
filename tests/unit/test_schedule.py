"""The scheduler with a fake clock: no sleeping, no real jobs."""

from __future__ import annotations

import dataclasses
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


def test_jobs_of_a_spec_file_given_by_path_are_kept_under_the_datasets_name(tmp_path: Path) -> None:
    """`sml schedule --dataset ./specs/tiny.yaml`: locks and the last slots live under the
    dataset's name (a path's slashes made the lock file's name a missing folder: a
    traceback), and a slot runs under its lock."""
    from serverless_ml.pipelines.schedule import ScheduleOptions, Scheduler, pipeline_jobs
    from serverless_ml.settings import resolve_settings
    from serverless_ml.tracking import Tracking

    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "tiny.csv").write_text("id,x,kind\n1,0.5,a\n2,1.5,b\n")
    (specs / "tiny.yaml").write_text("name: tiny\nsource: {path: tiny.csv}\nlabel: kind\nprimary_key: id\n"
                                     "classes: [a, b]\nfeatures:\n  x: {type: double}\n")
    settings = resolve_settings(store_dir=tmp_path / "store", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    now = dt.datetime(2024, 3, 1, 12, tzinfo=dt.timezone.utc)
    jobs = pipeline_jobs([str(specs / "tiny.yaml")], settings, ScheduleOptions(), lambda: now, Tracking(settings.tracking_uri))
    assert {job.dataset for job in jobs} == {"tiny"}
    ran: list[dt.datetime] = []
    job = dataclasses.replace(next(j for j in jobs if j.name == "daily"), action=lambda slot: ran.append(slot) or "ok")
    outcome = Scheduler([job], settings.state_dir, lambda: now, lambda _s: None).run_slot(job, now)
    assert outcome.status == "ok" and ran == [now]
    assert (settings.state_dir / "_locks").is_dir()


# --- --retrain-on-alert ---------------------------------------------------------------------------


def test_retrain_on_alert_retrains_after_an_alert_unless_a_retrain_ran_within_the_cooldown(tmp_path: Path) -> None:
    """Alerts on Jan 2nd, 3rd, 5th and 8th; a 36-hour cooldown; the weekly retrain on
    Sunday Jan 7th. Jan 2nd retrains; Jan 3rd is 24 h later (skipped); Jan 5th retrains;
    Jan 8th is under a day after the scheduled retrain of the 7th (skipped)."""
    from serverless_ml.pipelines.schedule import RetrainOnAlert, infer_then_retrain, load_state

    clock = FakeClock(T0)
    alert_days = {2, 3, 5, 8}
    retrains: list[dt.datetime] = []

    def run_infer(slot: dt.datetime) -> tuple[str, list[str]]:
        return f"scored {slot.date()}", (["accuracy dropped"] if slot.day in alert_days else [])

    def retrain_challenger() -> str:
        retrains.append(clock())
        return f"registered version {len(retrains) + 1} as challenger"

    retrainer = RetrainOnAlert(tmp_path, "titanic", dt.timedelta(hours=36), retrain_challenger, clock)
    scheduled: list[dt.datetime] = []
    jobs = [
        Job("infer", "titanic", Cron.parse("15 0 * * *"), infer_then_retrain(run_infer, retrainer)),
        Job("retrain", "titanic", Cron.parse("30 0 * * 0"), lambda slot: scheduled.append(slot) or "retrained",
            collapse_missed=True),
    ]
    scheduler = Scheduler(jobs, tmp_path, clock, clock.sleep)
    scheduler.run(until=dt.datetime(2024, 1, 9, 1, 0, tzinfo=UTC))

    assert [t.date().day for t in retrains] == [2, 5]
    assert scheduled == [dt.datetime(2024, 1, 7, 0, 30, tzinfo=UTC)]
    details = {o.slot.day: o.detail for o in scheduler.outcomes if o.job == "infer"}
    assert details[1] == "scored 2024-01-01" and details[4] == "scored 2024-01-04"  # no alert, no retrain
    assert details[2] == "scored 2024-01-02; retrained on alert: registered version 2 as challenger"
    assert details[3].startswith("scored 2024-01-03; retrain on alert skipped: the last retrain ran at 2024-01-02T00:15")
    assert details[5].endswith("retrained on alert: registered version 3 as challenger")
    assert "skipped: the last retrain ran at 2024-01-07T00:30" in details[8] and "(cooldown 36 h)" in details[8]
    assert load_state(tmp_path, "titanic")["retrain_on_alert"] == "2024-01-05T00:15:00+00:00"


def test_a_failing_retrain_on_alert_fails_the_slot_is_not_recorded_and_is_tried_on_the_next_alert(tmp_path: Path) -> None:
    from serverless_ml.pipelines.schedule import RetrainOnAlert, infer_then_retrain

    clock = FakeClock(T0)
    attempts: list[dt.datetime] = []

    def retrain_challenger() -> str:
        attempts.append(clock())
        if len(attempts) == 1:
            raise RuntimeError("tracking server down")
        return "registered version 2 as challenger"

    retrainer = RetrainOnAlert(tmp_path, "titanic", dt.timedelta(hours=48), retrain_challenger, clock)
    jobs = [Job("infer", "titanic", Cron.parse("15 0 * * *"), infer_then_retrain(lambda s: ("scored", ["drift"]), retrainer))]
    scheduler = Scheduler(jobs, tmp_path, clock, clock.sleep)
    scheduler.run(until=dt.datetime(2024, 1, 2, 1, 0, tzinfo=UTC))
    assert [(o.status, o.detail) for o in scheduler.outcomes] == [
        ("failed", "RuntimeError: tracking server down"), ("ok", "scored; retrained on alert: registered version 2 as challenger")]


def test_schedule_options_of_the_loop() -> None:
    from serverless_ml.pipelines.schedule import ScheduleOptions

    assert ScheduleOptions().infer_promote == "never"
    assert ScheduleOptions(retrain_on_alert=True).infer_promote == "live"
    assert ScheduleOptions(promote="live").infer_promote == "live"
    with pytest.raises(SmlError, match=r"--retrain-cooldown must be 0\.\.8784 hours, got -1"):
        ScheduleOptions(retrain_cooldown_h=-1)
    with pytest.raises(SmlError, match="--retrain-cooldown must be"):
        ScheduleOptions(retrain_cooldown_h=float("nan"))
    with pytest.raises(SmlError, match="--promote must be one of never, live"):
        ScheduleOptions(promote="always")
