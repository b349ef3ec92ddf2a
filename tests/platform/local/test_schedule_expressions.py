"""AWS schedule expressions: what parses, what does not (and why), and the next fire times."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone

import pytest

from hsops.platform.local.schedule_expressions import (
    CronExpression,
    RateExpression,
    next_after,
    parse,
)


def t(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize("text, period", [
    ("rate(1 minute)", timedelta(minutes=1)), ("rate(5 minutes)", timedelta(minutes=5)),
    ("rate(1 hour)", timedelta(hours=1)), ("rate(12 hours)", timedelta(hours=12)),
    ("rate(1 day)", timedelta(days=1)), ("rate(2 days)", timedelta(days=2)),
    ("rate(90 minutes)", timedelta(minutes=90)),
])
def test_rates(text, period):
    rate = parse(text)
    assert isinstance(rate, RateExpression) and rate.period == period
    assert rate.next_after(t(2024, 2, 28, 23, 59)) == t(2024, 2, 28, 23, 59) + period


@pytest.mark.parametrize("text, why", [
    ("rate(1 minutes)", "singular"), ("rate(1 days)", "singular"), ("rate(5 minute)", "plural"),
    ("rate(2 hour)", "plural"), ("rate(0 minutes)", "at least 1"), ("rate(-1 minutes)", "whole number"),
    ("rate(1.5 hours)", "whole number"), ("rate(five minutes)", "whole number"), ("rate(5 seconds)", "unknown unit"),
    ("rate(5 weeks)", "unknown unit"), ("rate(5)", "one space"), ("rate(5  minutes)", "one space"),
    ("rate( 5 minutes)", "one space"), ("rate(5 minutes )", "one space"), ("rate()", "one space"),
    ("rate(10000000 minutes)", "at most"), ("RATE(5 minutes)", "not a schedule expression"),
    ("rate 5 minutes", "not a schedule expression"), ("rate(5 minutes", "not a schedule expression"),
])
def test_bad_rates(text, why):
    with pytest.raises(ValueError, match=why):
        parse(text)


def test_rate_keeps_the_phase_of_its_anchor():
    rate = parse("rate(1 hour)")
    anchor = t(2024, 1, 1, 10, 20)
    assert rate.next_after(t(2024, 1, 1, 15, 50), anchor=anchor) == t(2024, 1, 1, 16, 20)
    assert rate.next_after(t(2024, 1, 1, 16, 20), anchor=anchor) == t(2024, 1, 1, 17, 20)  # strictly after
    assert rate.next_after(t(2024, 1, 1, 9, 0), anchor=anchor) == anchor  # the anchor is still ahead


@pytest.mark.parametrize("text, after, expected", [
    # strictly after, to the minute
    ("cron(0 3 * * ? *)", t(2024, 5, 1, 3, 0), t(2024, 5, 2, 3, 0)),
    ("cron(0 3 * * ? *)", t(2024, 5, 1, 2, 59, 59, 999999), t(2024, 5, 1, 3, 0)),
    ("cron(0/15 * * * ? *)", t(2024, 5, 1, 10, 7), t(2024, 5, 1, 10, 15)),
    ("cron(0/15 * * * ? *)", t(2024, 5, 1, 10, 45), t(2024, 5, 1, 11, 0)),
    ("cron(*/20 9-17 * * ? *)", t(2024, 5, 1, 17, 40), t(2024, 5, 2, 9, 0)),
    ("cron(5,35 * * * ? *)", t(2024, 5, 1, 10, 5), t(2024, 5, 1, 10, 35)),
    ("cron(10-12/2 8 * * ? *)", t(2024, 5, 1, 8, 10), t(2024, 5, 1, 8, 12)),
    ("cron(* * * * ? *)", t(2024, 5, 1, 10, 7, 30), t(2024, 5, 1, 10, 8)),
    # month and year ends
    ("cron(59 23 31 12 ? *)", t(2024, 12, 31, 23, 59), t(2025, 12, 31, 23, 59)),
    ("cron(0 0 1 * ? *)", t(2024, 12, 15), t(2025, 1, 1)),
    ("cron(0 0 31 * ? *)", t(2024, 4, 1), t(2024, 5, 31)),  # April has no 31st
    ("cron(0 0 30 * ? *)", t(2024, 1, 31), t(2024, 3, 30)),  # nor February a 30th
    ("cron(0 0 1 JAN,JUL ? *)", t(2024, 1, 1), t(2024, 7, 1)),
    ("cron(0 0 1 jan-mar ? *)", t(2024, 3, 1), t(2025, 1, 1)),
    # leap days, and 2100 is not a leap year
    ("cron(0 12 29 2 ? *)", t(2024, 3, 1), t(2028, 2, 29, 12)),
    ("cron(0 12 29 FEB ? *)", t(2096, 3, 1), t(2104, 2, 29, 12)),
    ("cron(0 0 28-31 * ? *)", t(2023, 2, 28), t(2023, 3, 28)),
    # days of week: 1 = Sunday, as AWS (2024-03-01 is a Friday)
    ("cron(0 0 ? * 1 *)", t(2024, 3, 1), t(2024, 3, 3)),
    ("cron(0 0 ? * 7 *)", t(2024, 3, 1), t(2024, 3, 2)),
    ("cron(0 0 ? * SUN *)", t(2024, 3, 1), t(2024, 3, 3)),
    ("cron(0 9 ? * MON-FRI *)", t(2024, 3, 1, 9), t(2024, 3, 4, 9)),
    ("cron(0 9 ? * mon,wed,fri *)", t(2024, 3, 4, 9), t(2024, 3, 6, 9)),
    ("cron(0 0 ? * 2/2 *)", t(2024, 3, 5), t(2024, 3, 6)),  # MON, WED, FRI
    ("cron(0 0 ? FEB SAT *)", t(2024, 12, 1), t(2025, 2, 1)),
    # years
    ("cron(0 12 ? JAN-MAR 1,7 2030)", t(2024, 12, 31), t(2030, 1, 5, 12)),
    ("cron(0 0 1 1 ? 2030-2031)", t(2030, 1, 1), t(2031, 1, 1)),
    ("cron(0 0 1 1 ? 2030)", t(2030, 1, 1), None),
    ("cron(0 0 1 1 ? 2199)", t(2198, 6, 1), t(2199, 1, 1)),
])
def test_cron_next_after(text, after, expected):
    assert next_after(text, after) == expected


@pytest.mark.parametrize("text, why", [
    ("cron(0 3 * * ?)", "6 fields.*got 5"), ("cron(0 3 * * ? * *)", "6 fields.*got 7"), ("cron()", "got 0"),
    ("cron(0 3 * * * *)", "exactly one"), ("cron(0 3 ? * ? *)", "exactly one"),
    ("cron(60 * * * ? *)", "Minutes.*out of range 0-59"), ("cron(0 24 * * ? *)", "Hours.*out of range"),
    ("cron(0 0 0 * ? *)", "Day-of-month.*out of range 1-31"), ("cron(0 0 32 * ? *)", "out of range"),
    ("cron(0 0 1 13 ? *)", "Month.*out of range 1-12"), ("cron(0 0 1 0 ? *)", "Month.*out of range"),
    ("cron(0 0 ? * 0 *)", "Day-of-week.*out of range 1-7"), ("cron(0 0 ? * 8 *)", "out of range 1-7"),
    ("cron(0 0 1 1 ? 1969)", "Year.*out of range 1970-2199"), ("cron(0 0 1 1 ? 2200)", "out of range"),
    ("cron(? 0 1 1 ? *)", "Minutes.*'\\?' is allowed only"), ("cron(0 0 1 ? ? *)", "exactly one|Month"),
    ("cron(0 0 L * ? *)", "'L' \\(last\\) is not supported"), ("cron(0 0 ? * 6L *)", "'L'.*not supported"),
    ("cron(0 0 15W * ? *)", "'W'.*not supported"), ("cron(0 0 ? * 3#2 *)", "'#'.*not supported"),
    ("cron(5-1 * * * ? *)", "ends before it starts"), ("cron(*/0 * * * ? *)", "step"),
    ("cron(1/x * * * ? *)", "step"), ("cron(1,,2 * * * ? *)", "empty item"), ("cron(, * * * ? *)", "empty item"),
    ("cron(0 0 1 FOO ? *)", "'FOO' is not a value.*JAN-DEC"), ("cron(0 0 ? * FUNDAY *)", "SUN-SAT"),
    ("cron(0 0 ? JAN MON-FOO *)", "'FOO'"), ("cron(-5 * * * ? *)", "missing"), ("cron(1- * * * ? *)", "missing"),
    ("cron(0 0 31 2 ? *)", "never fires"), ("cron(0 0 30,31 FEB ? *)", "never fires"),
    ("cron(0 0 31 APR,JUN ? *)", "never fires"), ("cron(MON 0 1 * ? *)", "Minutes.*not a value"),
    ("0 3 * * ? *", "not a schedule expression"), ("cron 0 3 * * ? *", "not a schedule expression"),
    ("", "not a schedule expression"), ("at(2024-01-01T00:00:00)", "not a schedule expression"),
    (None, "string"), (5, "string"),
])
def test_bad_crons(text, why):
    with pytest.raises(ValueError, match=why):
        parse(text)


def test_expanded_fields():
    cron = parse("cron(0/20 9-11 ? JAN,MAR-APR MON-FRI 2025)")
    assert isinstance(cron, CronExpression)
    assert cron.minutes == (0, 20, 40) and cron.hours == (9, 10, 11)
    assert cron.days_of_month is None and cron.months == (1, 3, 4) and cron.days_of_week == (2, 3, 4, 5, 6)
    assert cron.years == (2025,)
    assert repr(cron) == "CronExpression('cron(0/20 9-11 ? JAN,MAR-APR MON-FRI 2025)')"


def test_naive_and_other_zones_are_utc():
    cron = parse("cron(0 7 * * ? *)")
    eastern = timezone(timedelta(hours=-5))
    assert cron.next_after(datetime(2024, 3, 10, 1, 30, tzinfo=eastern)) == t(2024, 3, 10, 7)  # 06:30 UTC
    assert cron.next_after(datetime(2024, 3, 10, 6, 30)) == t(2024, 3, 10, 7)  # naive: UTC
    assert cron.next_after(t(2024, 3, 10, 6, 30)).tzinfo == UTC


def test_daylight_saving_changes_do_not_matter():
    # 02:30 does not exist in New York on 2024-03-10, and 01:30 happens twice on 2024-11-03: in UTC
    # nothing special happens, every fire is exactly a day after the previous one
    cron = parse("cron(30 2 * * ? *)")
    moment, fires = t(2024, 3, 1), []
    while moment < t(2024, 11, 30):
        moment = cron.next_after(moment)
        fires.append(moment)
    assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(days=1)}
    assert t(2024, 3, 10, 2, 30) in fires and t(2024, 11, 3, 2, 30) in fires


def test_a_cron_that_runs_out_of_years_returns_none_quickly():
    assert parse("cron(0 0 29 2 ? 2101-2103)").next_after(t(2100, 1, 1)) is None  # no leap day in range
