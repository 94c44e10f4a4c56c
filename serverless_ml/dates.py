"""The range of dates every command accepts, in one place.

Dates become pandas timestamps (nanoseconds: 1677-09-21 to 2262-04-11), synthetic keys
``YYYYMMDD...`` and the times of MLflow runs and metrics (``simulate`` dates each day's
run that day; MLflow takes no time before 1970-01-01); a job also looks a day past or a
window before the date it is given. :data:`MIN_DATE`..:data:`MAX_DATE` keeps every such step in range, so a far date
(``9999-12-31``, ``0001-01-01``) is refused in one line before anything is written
instead of overflowing half-way through a job.
"""

from __future__ import annotations

import datetime as dt

from serverless_ml.errors import SmlError

MIN_DATE = dt.date(1970, 1, 1)
MAX_DATE = dt.date(2261, 12, 31)
RANGE_TEXT = f"{MIN_DATE.isoformat()} to {MAX_DATE.isoformat()}"


def date_problem(day: dt.date, what: str) -> str | None:
    """Why ``day`` cannot be used (``what`` names the option or setting), or ``None``."""
    if isinstance(day, dt.datetime):
        day = day.date()
    if not MIN_DATE <= day <= MAX_DATE:
        return f"{what} {day.isoformat()} is outside the supported dates ({RANGE_TEXT})"
    return None


def check_date(day: dt.date, what: str) -> dt.date:
    """``day`` itself, or :class:`SmlError` when it is outside :data:`MIN_DATE`..:data:`MAX_DATE`."""
    problem = date_problem(day, what)
    if problem:
        raise SmlError(problem)
    return day


FUTURE_SLACK = dt.timedelta(days=1)
"""How far after now a time a user wrote (an event time, a label's ``labelled_at``) may be
before it is refused as in the future: a time without an offset is read as UTC, and a
user east of UTC may have written local time."""


def latest_time(now: dt.datetime | None = None) -> dt.datetime:
    """The latest time a user's row may carry: now (UTC) plus :data:`FUTURE_SLACK`."""
    return (now or dt.datetime.now(dt.timezone.utc)) + FUTURE_SLACK


def check_not_future(day: dt.date, what: str, meaning: str, now: dt.datetime | None = None) -> dt.date:
    """``day`` itself, or :class:`SmlError` when it is after today (UTC, with
    :data:`FUTURE_SLACK`): rows and batches are dated when they happen, and a future date
    is a typo (``meaning`` says what the date is, for the message)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    if day > latest_time(now).date():
        # The bound named is the one applied (found by a user trial: "cannot be after today"
        # was said of the day after tomorrow, while tomorrow was taken).
        raise SmlError(f"{what} {day.isoformat()} is in the future ({meaning} cannot be later than "
                       f"{latest_time(now).date().isoformat()}: today, {now.date().isoformat()} UTC, "
                       "and a day of slack for time zones)")
    return day
