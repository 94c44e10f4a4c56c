"""Five-field cron expressions (minute hour day-of-month month day-of-week), in UTC.

Supports ``*``, numbers, lists (``1,15``), ranges (``1-5``) and steps (``*/10``,
``0-30/5``); day of week 0-7 with 0 and 7 for Sunday. As in cron, when both day fields are
restricted a day matches if either does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from serverless_ml.errors import SmlError

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_MAX_STEPS = 100_000
_EPOCH = dt.datetime(2000, 1, 1)


def _parse_field(text: str, name: str, low: int, high: int, expression: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if body == "*":
                start, end = low, high
            elif "-" in body:
                first, last = body.split("-", 1)
                start, end = int(first), int(last)
            else:
                start = end = int(body)
                if step_text:
                    end = high
        except ValueError:
            raise SmlError(f"cron expression {expression!r}: {name} field {text!r} is not valid") from None
        if step < 1 or not (low <= start <= high and low <= end <= high) or start > end:
            raise SmlError(f"cron expression {expression!r}: {name} field {text!r} must lie within {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        parts = expression.split()
        if len(parts) != 5:
            raise SmlError(f"cron expression {expression!r} must have 5 fields: minute hour day-of-month month day-of-week")
        fields = [_parse_field(p, *spec, expression) for p, spec in zip(parts, _FIELDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in fields[4])
        cron = cls(expression, fields[0], fields[1], fields[2], fields[3], weekdays, parts[2] == "*", parts[4] == "*")
        cron.next_after(_EPOCH)  # raises at once for a date that does not exist (e.g. 30 February)
        return cron

    def matches(self, moment: dt.datetime) -> bool:
        return (
            moment.month in self.months
            and self._day_matches(moment)
            and moment.hour in self.hours
            and moment.minute in self.minutes
        )

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first matching minute strictly after ``moment``."""
        candidate = moment.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        for _ in range(_MAX_STEPS):
            if candidate.month not in self.months:
                candidate = (candidate.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(candidate):
                candidate = candidate.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif candidate.hour not in self.hours:
                candidate = candidate.replace(minute=0) + dt.timedelta(hours=1)
            elif candidate.minute not in self.minutes:
                candidate += dt.timedelta(minutes=1)
            else:
                return candidate
        raise SmlError(f"cron expression {self.expression!r} never fires")

    def _day_matches(self, moment: dt.datetime) -> bool:
        day_ok = moment.day in self.days
        weekday_ok = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return day_ok and weekday_ok
        return day_ok or weekday_ok

    def slots_between(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """Matching minutes in ``(start, end]``."""
        slots = []
        moment = self.next_after(start)
        while moment <= end:
            slots.append(moment)
            moment = self.next_after(moment)
        return slots
