"""The one range of dates every command accepts (serverless_ml/dates.py)."""

from __future__ import annotations

import datetime as dt

import pytest

from serverless_ml.cli import parse_date
from serverless_ml.dates import MAX_DATE, MIN_DATE, check_date
from serverless_ml.errors import SmlError


def test_the_edges_are_accepted_and_one_day_beyond_is_not() -> None:
    assert check_date(MIN_DATE, "--date") == MIN_DATE and check_date(MAX_DATE, "--date") == MAX_DATE
    for day in (MIN_DATE - dt.timedelta(days=1), MAX_DATE + dt.timedelta(days=1), dt.date.min, dt.date.max):
        with pytest.raises(SmlError, match=r"--date .* is outside the supported dates \(1970-01-01 to 2261-12-31\)"):
            check_date(day, "--date")


def test_the_range_keeps_every_step_of_a_job_in_range() -> None:
    import pandas as pd

    # A job looks a day past the date and a window before it; pandas' nanosecond
    # timestamps end on 2262-04-11.
    assert pd.Timestamp(MAX_DATE + dt.timedelta(days=1)) < pd.Timestamp.max
    assert pd.Timestamp(MIN_DATE - dt.timedelta(days=3650)) > pd.Timestamp.min
    assert int(f"{MAX_DATE:%Y%m%d}") * 10**10 < 2**63  # a synthetic bigint key (date * 10**8 + seed and row)


def test_parse_date_checks_the_range() -> None:
    assert parse_date("2261-12-31") == MAX_DATE
    with pytest.raises(SmlError, match="--as-of 9999-12-31 is outside"):
        parse_date("9999-12-31", "--as-of")


def test_a_date_after_today_is_refused_with_a_day_of_slack() -> None:
    from serverless_ml.dates import check_not_future

    now = dt.datetime(2026, 12, 7, 23, 30, tzinfo=dt.timezone.utc)
    assert check_not_future(dt.date(2026, 12, 8), "--as-of", "a batch's date", now) == dt.date(2026, 12, 8)  # time zones
    with pytest.raises(SmlError) as caught:
        check_not_future(dt.date(2026, 12, 9), "--as-of", "a batch's date", now)
    assert str(caught.value) == ("--as-of 2026-12-09 is in the future (a batch's date cannot be later than 2026-12-08: "
                                 "today, 2026-12-07 UTC, and a day of slack for time zones)")
