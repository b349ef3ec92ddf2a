"""AWS schedule expressions (EventBridge Scheduler), evaluated in UTC.

- ``rate(VALUE UNIT)``: VALUE a whole number >= 1; UNIT ``minute``/``hour``/``day``
  when VALUE is 1, else ``minutes``/``hours``/``days`` (AWS refuses ``rate(1 minutes)``).
- ``cron(Minutes Hours Day-of-month Month Day-of-week Year)``: six fields; ``*``, lists
  ``,``, ranges ``-``, steps ``/``; months ``1-12`` or ``JAN-DEC``; weekdays ``1-7`` or
  ``SUN-SAT`` with 1 = Sunday (AWS, not Unix); exactly one of Day-of-month and
  Day-of-week is ``?``. ``L``, ``W`` and ``#`` are refused as not supported.

``parse`` raises ``ValueError`` naming the field and what is wrong. ``next_after`` is
strictly after its argument; naive datetimes are taken as UTC (the scheduler's clock).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MIN_YEAR, MAX_YEAR = 1970, 2199  # the Year field's range in AWS
MAX_RATE_VALUE = 1_000_000  # keeps the period far inside datetime's range

_UNITS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
_MONTHS = {name: i for i, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
_LONGEST = dict(enumerate((31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31), start=1))  # Feb: leap years
_WEEKDAYS = {name: i for i, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)}

# (name, low, high, names)
_FIELDS = (
    ("Minutes", 0, 59, {}),
    ("Hours", 0, 23, {}),
    ("Day-of-month", 1, 31, {}),
    ("Month", 1, 12, _MONTHS),
    ("Day-of-week", 1, 7, _WEEKDAYS),
    ("Year", MIN_YEAR, MAX_YEAR, {}),
)


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already."""
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class RateExpression:
    text: str
    value: int
    unit: str  # minute | hour | day
    period: timedelta

    def next_after(self, after: datetime, *, anchor: datetime | None = None) -> datetime:
        """``after + period``; with ``anchor``, the first ``anchor + k * period`` after
        ``after`` (k >= 1 when anchor >= after), so a schedule keeps its phase."""
        after = as_utc(after)
        if anchor is None:
            return after + self.period
        anchor = as_utc(anchor)
        if anchor > after:
            return anchor
        periods = (after - anchor) // self.period + 1
        return anchor + periods * self.period


@dataclass(frozen=True, repr=False)  # the expanded fields would make a 230-year repr
class CronExpression:
    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: tuple[int, ...] | None  # None: "?"
    months: tuple[int, ...]
    days_of_week: tuple[int, ...] | None  # None: "?"; 1 = Sunday
    years: tuple[int, ...]

    def __repr__(self) -> str:
        return f"CronExpression({self.text!r})"

    def next_after(self, after: datetime, *, anchor: datetime | None = None) -> datetime | None:
        """The first matching minute strictly after ``after``; None when there is none
        before the end of year 2199 (a Year field all in the past). ``anchor`` is unused."""
        start = as_utc(after).replace(second=0, microsecond=0) + timedelta(minutes=1)
        # walk down the fields; below the first field that moved past ``start``, every
        # value is allowed again, hence the "still on the start's prefix" flags
        for year in self.years:
            if year < start.year:
                continue
            on_year = year == start.year
            for month in self.months:
                if on_year and month < start.month:
                    continue
                on_month = on_year and month == start.month
                for day in self._days(year, month):
                    if on_month and day < start.day:
                        continue
                    on_day = on_month and day == start.day
                    for hour in self.hours:
                        if on_day and hour < start.hour:
                            continue
                        on_hour = on_day and hour == start.hour
                        for minute in self.minutes:
                            if on_hour and minute < start.minute:
                                continue
                            return datetime(year, month, day, hour, minute, tzinfo=UTC)
        return None

    def _days(self, year: int, month: int) -> list[int]:
        last = calendar.monthrange(year, month)[1]
        if self.days_of_month is not None:
            return [d for d in self.days_of_month if d <= last]
        # Python: Monday = 0 .. Sunday = 6; AWS: Sunday = 1 .. Saturday = 7
        first_aws = (calendar.weekday(year, month, 1) + 1) % 7 + 1
        return [d for d in range(1, last + 1) if (first_aws - 1 + d - 1) % 7 + 1 in self.days_of_week]


ScheduleExpression = RateExpression | CronExpression

_RATE = re.compile(r"rate\((.*)\)", re.DOTALL)
_CRON = re.compile(r"cron\((.*)\)", re.DOTALL)


def parse(expression: str) -> ScheduleExpression:
    """A rate or cron expression; ``ValueError`` saying what is wrong otherwise."""
    if not isinstance(expression, str):
        # ValueError, not TypeError: the Scheduler contract says a bad expression is a ValueError
        raise ValueError(f"a schedule expression is a string, not {type(expression).__name__}")  # noqa: TRY004
    if match := _RATE.fullmatch(expression):
        return _parse_rate(expression, match.group(1))
    if match := _CRON.fullmatch(expression):
        return _parse_cron(expression, match.group(1))
    raise ValueError(f"{expression!r} is not a schedule expression: expected 'rate(VALUE UNIT)' "
                     "or 'cron(Minutes Hours Day-of-month Month Day-of-week Year)'")


def _parse_rate(text: str, inner: str) -> RateExpression:
    parts = inner.split(" ")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"{text!r}: a rate is 'rate(VALUE UNIT)' with one space, e.g. 'rate(5 minutes)'")
    value_text, unit = parts
    if not re.fullmatch(r"[0-9]+", value_text):
        raise ValueError(f"{text!r}: the rate value {value_text!r} is not a whole number")
    value = int(value_text)
    if value < 1:
        raise ValueError(f"{text!r}: the rate value must be at least 1")
    if value > MAX_RATE_VALUE:
        raise ValueError(f"{text!r}: the rate value must be at most {MAX_RATE_VALUE}")
    singular = unit.removesuffix("s")
    if singular not in _UNITS:
        raise ValueError(f"{text!r}: unknown unit {unit!r}; use minute(s), hour(s) or day(s)")
    if value == 1 and unit != singular:
        raise ValueError(f"{text!r}: a rate of 1 takes the singular unit: 'rate(1 {singular})'")
    if value > 1 and unit == singular:
        raise ValueError(f"{text!r}: a rate above 1 takes the plural unit: 'rate({value} {singular}s)'")
    return RateExpression(text, value, singular, value * _UNITS[singular])


def _parse_cron(text: str, inner: str) -> CronExpression:
    fields = inner.split()
    if len(fields) != 6:
        raise ValueError(f"{text!r}: a cron expression has 6 fields (Minutes Hours Day-of-month Month "
                         f"Day-of-week Year), got {len(fields)}")
    dom_text, dow_text = fields[2], fields[4]
    if (dom_text == "?") == (dow_text == "?"):
        raise ValueError(f"{text!r}: exactly one of Day-of-month ({dom_text!r}) and Day-of-week "
                         f"({dow_text!r}) must be '?'")
    values = []
    for field_text, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        if field_text == "?" and name in ("Day-of-month", "Day-of-week"):
            values.append(None)  # no constraint: the other day field decides
            continue
        values.append(_parse_field(text, field_text, name, low, high, names))
    minutes, hours, dom, months, dow, years = values
    if dom is not None and min(dom) > max(_LONGEST[m] for m in months):
        raise ValueError(f"{text!r}: no month in the Month field has a day {min(dom)}, so it never fires")
    return CronExpression(text, minutes, hours, dom, months, dow, years)


def _parse_field(text: str, field_text: str, name: str, low: int, high: int, names: dict) -> tuple[int, ...]:
    where = f"{text!r}: {name} field {field_text!r}"
    if "?" in field_text:
        raise ValueError(f"{where}: '?' is allowed only alone, in Day-of-month or Day-of-week")
    if name in ("Day-of-month", "Day-of-week"):  # where AWS gives L, W and # a meaning
        stripped = field_text.upper()
        for day_name in names:  # "WED" is a weekday, not a W
            stripped = stripped.replace(day_name, "")
        for token, meaning in (("L", "last"), ("W", "nearest weekday"), ("#", "nth weekday")):
            if token in stripped:
                raise ValueError(f"{where}: '{token}' ({meaning}) is not supported by this scheduler")
    chosen: set[int] = set()
    for item in field_text.split(","):
        if not item:
            raise ValueError(f"{where}: empty item in a list")
        chosen.update(_parse_item(where, item, low, high, names))
    return tuple(sorted(chosen))


def _parse_item(where: str, item: str, low: int, high: int, names: dict) -> range:
    body, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not re.fullmatch(r"[0-9]+", step_text) or int(step_text) < 1:
            raise ValueError(f"{where}: the step in {item!r} must be a whole number >= 1")
        step = int(step_text)
    if body == "*":
        return range(low, high + 1, step)
    start_text, dash, end_text = body.partition("-")
    start = _value(where, start_text, low, high, names)
    if dash:
        end = _value(where, end_text, low, high, names)
        if end < start:
            raise ValueError(f"{where}: the range {body!r} ends before it starts")
    else:
        # AWS: "a/b" is "from a every b"; a lone value is just itself
        end = high if slash else start
    return range(start, end + 1, step)


def _value(where: str, text: str, low: int, high: int, names: dict) -> int:
    if text.upper() in names:
        return names[text.upper()]
    if not text:
        raise ValueError(f"{where}: a value is missing (around '-' or '/')")
    if not re.fullmatch(r"[0-9]+", text):
        allowed = f"{low}-{high}" + (f" or {min(names, key=names.get)}-{max(names, key=names.get)}" if names else "")
        raise ValueError(f"{where}: {text!r} is not a value ({allowed})")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{where}: {value} is out of range {low}-{high}")
    return value


def next_after(expression: str, after: datetime) -> datetime | None:
    """Shorthand: parse ``expression`` and return its next time after ``after``."""
    return parse(expression).next_after(after)
