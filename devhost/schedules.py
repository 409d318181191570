"""Timer-trigger schedules: NCRONTAB expressions (`{second} {minute} {hour} {day} {month}
{day-of-week}`, or five fields without seconds) and TimeSpan intervals (`hh:mm:ss`), in UTC.

Like NCrontab, a time matches when every field matches (a restricted day-of-month and
day-of-week must both match, unlike Unix cron's either/or).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_NAMES = {
    4: {n: i for i, n in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG",
                                    "SEP", "OCT", "NOV", "DEC"], start=1)},
    5: {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])},
}
_RANGES = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")
MAX_SEARCH = timedelta(days=366 * 5)


class ScheduleError(ValueError):
    """The schedule is neither a valid NCRONTAB expression nor a TimeSpan."""


def _value(token: str, field: int) -> int:
    upper = token.upper()
    if field in _NAMES and upper in _NAMES[field]:
        return _NAMES[field][upper]
    if not token.isdigit():
        raise ScheduleError(f"'{token}' is not a number")
    value = int(token)
    return 0 if field == 5 and value == 7 else value  # Sunday may be 7


def _field(text: str, field: int) -> frozenset[int]:
    low, high = _RANGES[field]
    values: set[int] = set()
    for part in text.split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step_text and (not step_text.isdigit() or step < 1):
            raise ScheduleError(f"bad step in '{part}'")
        if spec == "*":
            start, end = low, high
        elif "-" in spec:
            first, last = spec.split("-", 1)
            start, end = _value(first, field), _value(last, field)
        else:
            start = _value(spec, field)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise ScheduleError(f"'{part}' is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Schedule:
    text: str
    fields: tuple[frozenset[int], ...] | None = None
    interval: timedelta | None = None

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after `moment` (an aware UTC datetime)."""
        if self.interval is not None:
            return moment + self.interval
        seconds, minutes, hours, days, months, weekdays = self.fields
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = moment + MAX_SEARCH
        while candidate < limit:
            if candidate.month not in months:
                candidate = (candidate.replace(day=1, hour=0, minute=0, second=0)
                             + timedelta(days=32)).replace(day=1)
                continue
            if candidate.day not in days or (candidate.weekday() + 1) % 7 not in weekdays:
                candidate = candidate.replace(hour=0, minute=0, second=0) + timedelta(days=1)
                continue
            if candidate.hour not in hours:
                candidate = candidate.replace(minute=0, second=0) + timedelta(hours=1)
                continue
            if candidate.minute not in minutes:
                candidate = candidate.replace(second=0) + timedelta(minutes=1)
                continue
            if candidate.second not in seconds:
                candidate += timedelta(seconds=1)
                continue
            return candidate
        raise ScheduleError(f"schedule '{self.text}' never fires")


def parse_schedule(text: str) -> Schedule:
    text = (text or "").strip()
    span = _TIMESPAN.match(text)
    if span:
        days, hours, minutes, seconds = (int(g or 0) for g in span.groups())
        interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        if interval <= timedelta(0):
            raise ScheduleError(f"schedule '{text}' is a zero interval")
        return Schedule(text, interval=interval)
    parts = text.split()
    if len(parts) == 5:
        parts = ["0", *parts]
    if len(parts) != 6:
        raise ScheduleError(f"schedule '{text}' needs six NCRONTAB fields "
                            "({second} {minute} {hour} {day} {month} {day-of-week}) or hh:mm:ss")
    try:
        return Schedule(text, fields=tuple(_field(p, i) for i, p in enumerate(parts)))
    except ScheduleError as exc:
        raise ScheduleError(f"schedule '{text}': {exc}") from None
