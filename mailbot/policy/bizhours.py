"""Business-hours calendars and deadline arithmetic (pure: no I/O beyond reading tz data).

A calendar is weekly opening hours in a time zone, minus public holidays from the ``holidays``
package, minus extra closed days. Opening hours are local wall-clock times, so a day that
opens 09:00-16:00 does so in summer and in winter; all durations are measured in real elapsed
time inside opening hours, which makes DST changes exact.

Business time: the time a calendar is open. Adding business time to an instant starts the
clock at that instant, or at the next opening when it lies outside business hours. A deadline
that falls exactly at a closing time stays there ("by Friday 16:00"), it does not move to the
next opening.

Business day: one open day's opening hours. N business days after an instant T: the clock
starts at T, or at the next opening when T is outside business hours; the deadline is on the
Nth open day after the day the clock starts, at the same amount of business time after that
day's opening as the start was (on days with equal hours: the same local clock time), but no
later than that day's closing. When the clock starts exactly at a day's opening, that day
counts as the first: the deadline is the closing time of the (N-1)th following open day. In
short, N business days are N full days of opening hours: a mail received on Saturday with a
one-day target is due on Monday at closing time; a mail received on Monday 10:00 is due on
Tuesday 10:00.

Deadlines are returned in the calendar's time zone. Subtract aware datetimes only after
converting them to UTC (Python ignores DST when both operands share one tzinfo).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

_DAY_NAMES = {
    "mon": 0, "tue": 1, "wed": 2, "thu": 3, "fri": 4, "sat": 5, "sun": 6,
    "mo": 0, "di": 1, "mi": 2, "do": 3, "fr": 4, "sa": 5, "so": 6,
}  # fmt: skip
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RE = re.compile(r"^\s*(\w+)(?:\s*-\s*(\w+))?\s+(.+?)\s*$")
_RANGE_RE = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_DURATION_RE = re.compile(r"^(?:(\d{1,4})d)?(?:(\d{1,5})h)?(?:(\d{1,6})m)?$")
_CLOSED_RE = re.compile(r"^(?:(\d{4})-)?(\d\d)-(\d\d)$")
_SEARCH_DAYS = 3700
# Dates whose opening intervals a calendar keeps computed (about ten years of them).
_KEPT_DAYS = 4096
Interval = tuple[datetime, datetime]


@dataclass(frozen=True)
class CalendarConfig:
    """Business hours: weekly opening hours in a time zone minus holidays and closed days."""

    # IANA time zone the opening hours are given in.
    timezone: str = "Europe/Berlin"
    # Weekly opening hours, local wall-clock time: "DAYS HH:MM-HH:MM[, HH:MM-HH:MM]".
    # DAYS is one day or a range (mon..sun or German mo..so), e.g. "mon-fri 09:00-16:00",
    # "sat 09:00-13:00", "mon-fri 08:00-12:00, 13:00-17:00"; "24:00" ends a day at midnight.
    hours: tuple[str, ...] = ("mon-fri 09:00-16:00",)
    # Country whose public holidays close the calendar (ISO code; "" for no holidays).
    holidays_country: str = "DE"
    # Subdivision of that country ("BY" = Bavaria, i.e. Munich's holidays; "" for none).
    holidays_subdiv: str = "BY"
    # Holiday categories to observe, e.g. ("public", "catholic") adds 15 August in Bavaria.
    holidays_categories: tuple[str, ...] = ("public",)
    # Extra closed days: "MM-DD" every year or "YYYY-MM-DD" once.
    closed_days: tuple[str, ...] = ("12-24", "12-31")


@dataclass(frozen=True)
class BusinessDuration:
    """An amount of business time: whole business days, then business hours/minutes."""

    days: int = 0
    time: timedelta = timedelta(0)


@functools.lru_cache(maxsize=256)
def parse_duration(text: str, path: str = "duration") -> BusinessDuration:
    """Parse "4h", "1d", "30m" or "1d4h30m" into a BusinessDuration; ValueError names path."""
    m = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or m is None:
        raise ValueError(f"{path}: {text!r} is not a duration; use e.g. '4h', '30m', '2d'")
    days, hours, minutes = (int(g or 0) for g in m.groups())
    return BusinessDuration(days, timedelta(hours=hours, minutes=minutes))


def _parse_days(first: str, last: str, path: str) -> list[int]:
    """Turn a day range such as mon..fri (or fri..mon, wrapping) into weekdays, Monday = 0."""
    names = [first.lower(), last.lower()]
    for name in names:
        if name not in _DAY_NAMES:
            raise ValueError(f"{path}: unknown weekday {name!r}; use mon..sun (or mo..so)")
    start, end = (_DAY_NAMES[n] for n in names)
    return [(start + i) % 7 for i in range((end - start) % 7 + 1)]


def _parse_range(spec: str, path: str) -> tuple[int, int]:
    """Turn "09:00-16:00" into minutes after midnight (540, 960)."""
    m = _RANGE_RE.match(spec.replace(" ", ""))
    if m is None:
        raise ValueError(f"{path}: {spec!r} is not a time range; use e.g. '09:00-16:00'")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"{path}: {spec!r} has an invalid time (00:00-23:59, or 24:00 as end)")
    if h1 * 60 + m1 >= h2 * 60 + m2:
        raise ValueError(f"{path}: {spec!r} ends before it starts")
    return h1 * 60 + m1, h2 * 60 + m2


def parse_hours(hours: tuple[str, ...], path: str = "hours") -> tuple[tuple[int, int], ...]:
    """Parse weekly opening hours into 7 sorted tuples of (start, end) minutes, Monday first."""
    week: list[list[tuple[int, int]]] = [[] for _ in range(7)]
    for i, line in enumerate(hours):
        m = _HOURS_RE.match(line)
        if m is None:
            raise ValueError(f"{path}[{i}]: {line!r}; use e.g. 'mon-fri 09:00-16:00'")
        days = _parse_days(m.group(1), m.group(2) or m.group(1), f"{path}[{i}]")
        ranges = [_parse_range(r, f"{path}[{i}]") for r in m.group(3).split(",")]
        for day in days:
            week[day].extend(ranges)
    for day, ranges in enumerate(week):
        ranges.sort()
        if any(a[1] > b[0] for a, b in pairwise(ranges)):
            raise ValueError(f"{path}: overlapping opening hours on {_WEEKDAYS[day]}")
    if not any(week):
        raise ValueError(f"{path}: no opening hours; give at least one, e.g. 'mon 09:00-16:00'")
    return tuple(tuple(r) for r in week)


def _parse_closed(days: tuple[str, ...], path: str) -> tuple[frozenset, frozenset]:
    """Split closed days into recurring (month, day) pairs and one-off dates."""
    recurring, once = set(), set()
    for i, text in enumerate(days):
        day = _closed_date(text)
        if day is None:
            raise ValueError(f"{path}[{i}]: {text!r} is not a date; use 'MM-DD' or 'YYYY-MM-DD'")
        if len(text.strip()) == 5:
            recurring.add((day.month, day.day))
        else:
            once.add(day)
    return frozenset(recurring), frozenset(once)


def _closed_date(text: str) -> date | None:
    """Parse "MM-DD" (as a day of leap year 2000) or "YYYY-MM-DD"; None when invalid."""
    m = _CLOSED_RE.match(text.strip())
    if m is None:
        return None
    try:
        return date(int(m.group(1) or 2000), int(m.group(2)), int(m.group(3)))
    except ValueError:
        return None


def _check_holidays(cfg: CalendarConfig, path: str, holidays: Holidays) -> None:
    """Fail with the key name when the holidays package rejects country, subdiv or categories."""
    if not cfg.holidays_country:
        return
    try:  # this year's: the calendar asks for the same year next (one computation, cached)
        holidays(cfg.holidays_country, cfg.holidays_subdiv, cfg.holidays_categories,
                 date.today().year)
    except (NotImplementedError, ValueError, KeyError) as exc:
        keys = f"{path}.holidays_country/holidays_subdiv/holidays_categories"
        raise ValueError(f"{keys}: {exc}") from None


@functools.lru_cache(maxsize=64)
def country_holidays(country: str, subdiv: str, categories: tuple[str, ...],
                     year: int) -> frozenset[date]:
    """The public holidays of a country in one year, computed once per process (the config
    check, the context and a reload each build the calendars: a year costs 10–60 ms).  The
    holidays package is imported here, by calendars that name a country.  Unknown country,
    subdivision or categories raise what the package raises (NotImplementedError,
    ValueError, KeyError)."""
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdiv or None,
                                               categories=categories, years=year))


# Where a calendar gets a year's public holidays: country_holidays, or the same kept
# between processes (mailbot.policy.holiday_cache).
Holidays = Callable[[str, str, tuple[str, ...], int], frozenset[date]]


class BusinessCalendar:
    """A validated, ready-to-use calendar; build one per CalendarConfig and reuse it."""

    def __init__(self, cfg: CalendarConfig, path: str = "calendar",
                 holidays: Holidays = country_holidays) -> None:
        """Validate cfg (ValueError naming the key under path) and precompute its tables;
        ``holidays`` gives a year's public holidays."""
        try:
            self.tz = ZoneInfo(cfg.timezone)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError(f"{path}.timezone: unknown time zone {cfg.timezone!r}") from None
        self.config = cfg
        self.week = parse_hours(cfg.hours, f"{path}.hours")
        self._recurring, self._once = _parse_closed(cfg.closed_days, f"{path}.closed_days")
        self._holidays_of = holidays
        _check_holidays(cfg, path, holidays)
        self._holidays: dict[int, frozenset[date]] = {}
        # Opening intervals by local date, as computed (every deadline walks the same days).
        self._intervals: dict[date, tuple[Interval, ...]] = {}

    def _holidays_in(self, year: int) -> frozenset[date]:
        """Public holiday dates of one year, computed once per year and cached."""
        if year not in self._holidays:
            cfg = self.config
            self._holidays[year] = self._holidays_of(
                cfg.holidays_country, cfg.holidays_subdiv, cfg.holidays_categories,
                year) if cfg.holidays_country else frozenset()
        return self._holidays[year]

    def is_closed_day(self, day: date) -> bool:
        """True when day is a holiday or an extra closed day (whatever its weekday)."""
        return (
            day in self._once
            or (day.month, day.day) in self._recurring
            or day in self._holidays_in(day.year)
        )

    def intervals(self, day: date) -> tuple[Interval, ...]:
        """The opening intervals of one local date as (start, end) UTC datetimes (computed
        once per date: the calendar does not change)."""
        found = self._intervals.get(day)
        if found is None:
            if len(self._intervals) >= _KEPT_DAYS:  # bounded: a long-running daemon
                self._intervals.clear()
            found = self._intervals[day] = self._compute_intervals(day)
        return found

    def _compute_intervals(self, day: date) -> tuple[Interval, ...]:
        if self.is_closed_day(day):
            return ()
        hours = self.week[day.weekday()]
        return tuple((self._instant(day, a), self._instant(day, b)) for a, b in hours)

    def _instant(self, day: date, minute: int) -> datetime:
        """The UTC instant of a local wall-clock minute of day (1440 = next midnight)."""
        local = datetime.combine(day, time(0), self.tz) + timedelta(minutes=minute)
        return local.astimezone(UTC)

    def open_days(self, start: date) -> Iterator[tuple[date, tuple[Interval, ...]]]:
        """Yield (date, intervals) for each open day from start on; fails after ~10 years."""
        for offset in range(_SEARCH_DAYS):
            day = start + timedelta(days=offset)
            if spans := self.intervals(day):
                yield day, spans
        raise ValueError(f"calendar has no open day within {_SEARCH_DAYS} days of {start}")

    def local_date(self, t: datetime) -> date:
        """The calendar-local date of an aware instant."""
        return _utc(t).astimezone(self.tz).date()


def _utc(t: datetime) -> datetime:
    """t in UTC; rejects naive datetimes, which would silently mean the wrong time."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t!r}: pass a timezone-aware datetime")
    return t.astimezone(UTC)


def _spans_from(cal: BusinessCalendar, t: datetime) -> Iterator[Interval]:
    """Opening intervals that end after UTC instant t, in order."""
    for _day, spans in cal.open_days(cal.local_date(t)):
        yield from (s for s in spans if s[1] > t)


def is_open(cal: BusinessCalendar, t: datetime) -> bool:
    """True when t lies within business hours (opening inclusive, closing exclusive)."""
    u = _utc(t)
    return any(a <= u < b for a, b in cal.intervals(cal.local_date(u)))


def next_opening(cal: BusinessCalendar, t: datetime) -> datetime:
    """The instant business time next runs: t itself when open, else the next opening."""
    u = _utc(t)
    start, _end = next(_spans_from(cal, u))
    return max(start, u).astimezone(cal.tz)


def _add_time(cal: BusinessCalendar, start: datetime, amount: timedelta) -> datetime:
    """start plus amount of business time (amount >= 0), as a UTC instant."""
    for a, b in _spans_from(cal, start):
        a = max(a, start)
        if amount <= b - a:
            return a + amount
        amount -= b - a
    raise AssertionError("unreachable: open_days never ends without raising")


def _day_offset(spans: tuple[Interval, ...], t: datetime) -> timedelta:
    """Business time on one day's spans before instant t."""
    return sum((min(b, t) - a for a, b in spans if a < t), timedelta(0))


def _at_offset(spans: tuple[Interval, ...], offset: timedelta) -> datetime:
    """The instant offset business time into a day's spans, capped at its closing."""
    for a, b in spans:
        if offset <= b - a:
            return a + offset
        offset -= b - a
    return spans[-1][1]


def _add_days(cal: BusinessCalendar, start: datetime, days: int) -> datetime:
    """start plus whole business days per the module's definition, as a UTC instant."""
    start = _add_time(cal, start, timedelta(0))
    days_iter = cal.open_days(cal.local_date(start))
    _first, spans = next(days_iter)
    offset = _day_offset(spans, start)
    if offset == timedelta(0):
        days -= 1
    for _ in range(days):
        _day, spans = next(days_iter)
    return _at_offset(spans, offset) if offset else spans[-1][1]


def add_business_time(
    cal: BusinessCalendar, start: datetime, duration: BusinessDuration | timedelta
) -> datetime:
    """The deadline duration of business time after start: whole days first, then the rest."""
    if isinstance(duration, timedelta):
        duration = BusinessDuration(0, duration)
    if duration.days < 0 or duration.time < timedelta(0):
        raise ValueError(f"negative business duration {duration!r}")
    t = _utc(start)
    if duration.days:
        t = _add_days(cal, t, duration.days)
    if duration.time or not duration.days:
        t = _add_time(cal, t, duration.time)
    return t.astimezone(cal.tz)


def business_time_between(cal: BusinessCalendar, a: datetime, b: datetime) -> timedelta:
    """Business time elapsed from a to b (negative when b is before a); for paused clocks."""
    u, v = _utc(a), _utc(b)
    if v < u:
        return -business_time_between(cal, b, a)
    total = timedelta(0)
    for s, e in _spans_from(cal, u):
        if s >= v:
            break
        total += min(e, v) - max(s, u)
    return total

