"""Business hours and deadline arithmetic (mailbot.bizhours), stated as tables."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.policy import holiday_cache
from mailbot.policy.bizhours import (
    BusinessCalendar,
    BusinessDuration,
    CalendarConfig,
    add_business_time,
    business_time_between,
    country_holidays,
    is_open,
    next_opening,
    parse_duration,
)
from mailbot.settings.config import load

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = BusinessCalendar(CalendarConfig())
POS = BusinessCalendar(CalendarConfig(hours=("mon-sat 09:00-20:00",)))
NO_CLOSED_DAYS = BusinessCalendar(CalendarConfig(closed_days=()))
ROUND_THE_CLOCK = BusinessCalendar(
    CalendarConfig(hours=("mon-sun 00:00-24:00",), holidays_country="", closed_days=())
)
SHORT_SATURDAY = BusinessCalendar(CalendarConfig(hours=("mo-fr 09:00-16:00", "sa 09:00-12:00")))
LUNCH_BREAK = BusinessCalendar(CalendarConfig(hours=("mon-fri 08:00-12:00, 13:00-17:00",)))
CALENDARS = {
    "office": OFFICE, "pos": POS, "no_closed": NO_CLOSED_DAYS, "24h": ROUND_THE_CLOCK,
    "short_sat": SHORT_SATURDAY, "lunch": LUNCH_BREAK,
}  # fmt: skip


def at(text: str) -> datetime:
    """A Berlin wall-clock time from 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def test_holiday_dates_used_in_these_tables():
    """The holidays the tables rely on are Munich holidays in the holidays package."""
    bavaria = holidays.country_holidays("DE", subdiv="BY", years=(2026, 2027))
    assert at("2026-06-04 00:00").date() in bavaria  # Fronleichnam, a Thursday
    assert at("2027-11-01 00:00").date() in bavaria  # Allerheiligen, a Monday
    assert at("2026-08-15 00:00").date() not in bavaria  # only with the catholic category


@pytest.mark.parametrize(
    ("cal", "start", "duration", "due"),
    [
        pytest.param("office", "2026-11-20 15:30", "4h", "2026-11-23 12:30",
                     id="Friday 15:30 + 4h runs into Monday"),
        pytest.param("office", "2026-11-20 12:00", "4h", "2026-11-20 16:00",
                     id="a deadline at closing time stays there"),
        pytest.param("office", "2026-11-21 11:00", "4h", "2026-11-23 13:00",
                     id="Saturday mail: clock starts Monday 09:00"),
        pytest.param("office", "2026-11-23 06:00", "4h", "2026-11-23 13:00",
                     id="early mail: clock starts at opening"),
        pytest.param("office", "2026-11-23 18:00", "4h", "2026-11-24 13:00",
                     id="evening mail: clock starts next morning"),
        pytest.param("office", "2026-06-03 15:00", "4h", "2026-06-05 12:00",
                     id="day before Fronleichnam skips the holiday"),
        pytest.param("office", "2027-10-29 15:00", "4h", "2027-11-02 12:00",
                     id="Friday before Allerheiligen (Monday)"),
        pytest.param("office", "2026-12-24 10:00", "4h", "2026-12-28 13:00",
                     id="mail on 24 December waits for 28th"),
        pytest.param("office", "2026-12-23 15:00", "4h", "2026-12-28 12:00",
                     id="mail on 23 December skips 24-27"),
        pytest.param("office", "2026-12-31 10:00", "4h", "2027-01-04 13:00",
                     id="mail on 31 December waits for 4 January"),
        pytest.param("no_closed", "2026-12-24 10:00", "4h", "2026-12-24 14:00",
                     id="24 December open when not configured closed"),
        pytest.param("office", "2026-03-27 15:00", "4h", "2026-03-30 12:00",
                     id="across the March DST switch"),
        pytest.param("office", "2026-10-23 15:00", "4h", "2026-10-26 12:00",
                     id="across the October DST switch"),
        pytest.param("24h", "2026-03-28 12:00", "24h", "2026-03-29 13:00",
                     id="24h calendar: March switch day has 23 hours"),
        pytest.param("24h", "2026-10-24 12:00", "24h", "2026-10-25 11:00",
                     id="24h calendar: October switch day has 25 hours"),
        pytest.param("pos", "2026-11-20 19:30", "4h", "2026-11-21 12:30",
                     id="point of sale: Friday evening runs into Saturday"),
        pytest.param("pos", "2026-11-21 19:00", "4h", "2026-11-23 12:00",
                     id="point of sale: Saturday evening runs into Monday"),
        pytest.param("pos", "2026-11-22 10:00", "4h", "2026-11-23 13:00",
                     id="point of sale: Sunday mail starts Monday 09:00"),
        pytest.param("lunch", "2026-11-23 10:00", "4h", "2026-11-23 15:00",
                     id="lunch break does not count"),
        pytest.param("office", "2026-11-21 11:00", "0h", "2026-11-23 09:00",
                     id="zero duration is the next opening"),
        pytest.param("office", "2026-11-20 15:50", "30m", "2026-11-23 09:20",
                     id="minutes"),
    ],
)
def test_business_hours_deadline(cal, start, duration, due):
    """A response deadline in business hours skips nights, weekends, holidays and DST shifts."""
    result = add_business_time(CALENDARS[cal], at(start), parse_duration(duration))
    assert result == at(due)
    assert result.tzinfo == BERLIN


@pytest.mark.parametrize(
    ("cal", "start", "duration", "due"),
    [
        pytest.param("office", "2026-11-23 10:00", "1d", "2026-11-24 10:00",
                     id="Monday 10:00 + 1 day is Tuesday 10:00"),
        pytest.param("office", "2026-11-23 10:00", "2d", "2026-11-25 10:00",
                     id="+ 2 days is Wednesday 10:00"),
        pytest.param("office", "2026-11-23 10:00", "5d", "2026-11-30 10:00",
                     id="+ 5 days is next Monday 10:00"),
        pytest.param("office", "2026-11-20 15:30", "1d", "2026-11-23 15:30",
                     id="Friday 15:30 + 1 day is Monday 15:30"),
        pytest.param("office", "2026-11-21 11:00", "1d", "2026-11-23 16:00",
                     id="Saturday + 1 day: end of Monday"),
        pytest.param("office", "2026-11-21 11:00", "2d", "2026-11-24 16:00",
                     id="Saturday + 2 days: end of Tuesday"),
        pytest.param("office", "2026-11-23 09:00", "1d", "2026-11-23 16:00",
                     id="Monday at opening + 1 day: end of Monday"),
        pytest.param("office", "2026-11-23 16:30", "1d", "2026-11-24 16:00",
                     id="after closing + 1 day: end of next day"),
        pytest.param("office", "2026-06-03 10:00", "1d", "2026-06-05 10:00",
                     id="day before Fronleichnam + 1 day"),
        pytest.param("office", "2026-12-23 11:00", "2d", "2026-12-29 11:00",
                     id="23 December + 2 days skips Christmas"),
        pytest.param("office", "2026-03-27 11:00", "1d", "2026-03-30 11:00",
                     id="across the March DST switch"),
        pytest.param("office", "2026-10-23 11:00", "1d", "2026-10-26 11:00",
                     id="across the October DST switch"),
        pytest.param("pos", "2026-11-20 18:00", "1d", "2026-11-21 18:00",
                     id="point of sale: Friday + 1 day is Saturday"),
        pytest.param("short_sat", "2026-11-20 15:00", "1d", "2026-11-21 12:00",
                     id="shorter next day: capped at its closing"),
        pytest.param("office", "2026-11-23 15:00", "1d2h", "2026-11-25 10:00",
                     id="days then hours"),
    ],
)
def test_business_day_deadline(cal, start, duration, due):
    """N business days are N full days of opening hours, at the same clock time if possible."""
    assert add_business_time(CALENDARS[cal], at(start), parse_duration(duration)) == at(due)


@pytest.mark.parametrize(
    ("when", "open_now", "opens"),
    [
        ("2026-11-23 09:00", True, "2026-11-23 09:00"),
        ("2026-11-23 15:59", True, "2026-11-23 15:59"),
        ("2026-11-23 16:00", False, "2026-11-24 09:00"),
        ("2026-11-23 08:59", False, "2026-11-23 09:00"),
        ("2026-11-21 12:00", False, "2026-11-23 09:00"),
        ("2026-06-04 12:00", False, "2026-06-05 09:00"),
        ("2026-12-24 12:00", False, "2026-12-28 09:00"),
        ("2026-03-29 12:00", False, "2026-03-30 09:00"),
    ],
)
def test_open_and_next_opening(when, open_now, opens):
    """A mail outside business hours is told when support opens next."""
    assert is_open(OFFICE, at(when)) is open_now
    assert next_opening(OFFICE, at(when)) == at(opens)


def test_other_time_zones_are_accepted():
    """Receipt times in UTC or another zone are compared by instant, not by wall clock."""
    received = datetime(2026, 11, 20, 14, 30, tzinfo=UTC)  # 15:30 in Berlin
    assert add_business_time(OFFICE, received, timedelta(hours=4)) == at("2026-11-23 12:30")


def test_naive_datetimes_are_rejected():
    """A time without zone is an error rather than a silently wrong deadline."""
    with pytest.raises(ValueError, match="naive"):
        is_open(OFFICE, datetime(2026, 11, 23, 10, 0))


@pytest.mark.parametrize(
    ("start", "end", "elapsed"),
    [
        ("2026-11-20 15:00", "2026-11-23 10:00", timedelta(hours=2)),
        ("2026-11-21 10:00", "2026-11-22 10:00", timedelta(0)),
        ("2026-11-23 10:00", "2026-11-23 10:30", timedelta(minutes=30)),
        ("2026-06-03 15:00", "2026-06-05 10:00", timedelta(hours=2)),
        ("2026-11-23 10:00", "2026-11-20 15:00", timedelta(hours=-2)),
    ],
)
def test_business_time_between(start, end, elapsed):
    """Time spent waiting counts only its business hours (used to pause the clock)."""
    assert business_time_between(OFFICE, at(start), at(end)) == elapsed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4h", BusinessDuration(0, timedelta(hours=4))),
        ("30m", BusinessDuration(0, timedelta(minutes=30))),
        ("2d", BusinessDuration(2)),
        ("1d4h30m", BusinessDuration(1, timedelta(hours=4, minutes=30))),
        (" 5D ", BusinessDuration(5)),
    ],
)
def test_parse_duration(text, expected):
    """Targets are written as days, hours and minutes in mailbot.toml."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (CalendarConfig(hours=("mon 25:00-26:00",)), "calendar.hours[0]"),
        (CalendarConfig(hours=("mon 09:00-24:30",)), "calendar.hours[0]"),
        (CalendarConfig(hours=("xyz 09:00-16:00",)), "calendar.hours[0]"),
        (CalendarConfig(hours=("mon 16:00-09:00",)), "calendar.hours[0]"),
        (CalendarConfig(hours=("mon", "tue 09:00-12:00")), "calendar.hours[0]"),
        (CalendarConfig(hours=("mon 09:00-12:00", "mon 11:00-13:00")), "calendar.hours"),
        (CalendarConfig(hours=()), "calendar.hours"),
        (CalendarConfig(timezone="Mars/Olympus"), "calendar.timezone"),
        (CalendarConfig(closed_days=("12-24", "13-45")), "calendar.closed_days[1]"),
        (CalendarConfig(closed_days=("2026-02-30",)), "calendar.closed_days[0]"),
        (CalendarConfig(holidays_country="XX"), "calendar.holidays_country/"),
        (CalendarConfig(holidays_subdiv="XX"), "calendar.holidays_"),
        (CalendarConfig(holidays_categories=("nope",)), "calendar.holidays_"),
    ],
)
def test_bad_calendar_config_names_the_key(config, key):
    """An operator's typo in the business hours is reported with the key to fix."""
    with pytest.raises(ValueError, match="^" + re.escape(key)):
        BusinessCalendar(config)


@pytest.mark.parametrize("text", ["", "4", "4x", "h", "-1h", "1h1d"])
def test_bad_duration_names_the_key(text):
    """A malformed target is reported with its key."""
    with pytest.raises(ValueError, match=r"^targets\.urgent: "):
        parse_duration(text, "targets.urgent")


def test_catholic_holidays_are_configurable():
    """Adding the catholic category closes Mariä Himmelfahrt (15 August) in Bavaria."""
    catholic = BusinessCalendar(CalendarConfig(holidays_categories=("public", "catholic")))
    assert is_open(OFFICE, at("2025-08-15 10:00"))  # a Friday
    assert not is_open(catholic, at("2025-08-15 10:00"))


def test_one_off_closed_day():
    """A closed day given with its year closes that date only."""
    cal = BusinessCalendar(CalendarConfig(closed_days=("2026-11-23",)))
    assert not is_open(cal, at("2026-11-23 10:00"))
    assert is_open(cal, at("2027-11-23 10:00"))


instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31),
    timezones=st.sampled_from([BERLIN, UTC]), allow_imaginary=False,
)  # fmt: skip
calendars = st.sampled_from(sorted(CALENDARS))
minutes = st.integers(min_value=1, max_value=60 * 24 * 20).map(lambda m: timedelta(minutes=m))


@settings(max_examples=200, deadline=None)
@given(calendars, instants, minutes)
def test_deadline_lies_in_business_hours(cal, start, amount):
    """A deadline never falls on a night, weekend or holiday: business time runs up to it."""
    due = add_business_time(CALENDARS[cal], start, amount)
    assert due > start
    assert is_open(CALENDARS[cal], due - timedelta(microseconds=1))
    assert business_time_between(CALENDARS[cal], start, due) == amount


@settings(max_examples=200, deadline=None)
@given(calendars, instants, instants, minutes, st.integers(min_value=0, max_value=10))
def test_deadline_is_monotonic_in_start(cal, a, b, amount, days):
    """A later mail never gets an earlier deadline."""
    a, b = sorted((a, b))
    for duration in (amount, BusinessDuration(days, amount)):
        assert add_business_time(CALENDARS[cal], a, duration) <= add_business_time(
            CALENDARS[cal], b, duration
        )


@settings(max_examples=200, deadline=None)
@given(calendars, instants, minutes | st.just(timedelta(0)), minutes)
def test_adding_hours_in_two_steps_is_adding_the_sum(cal, start, first, second):
    """Pausing and resuming the clock loses and gains no business time."""
    c = CALENDARS[cal]
    stepwise = add_business_time(c, add_business_time(c, start, first), second)
    assert stepwise == add_business_time(c, start, first + second)


@settings(max_examples=100, deadline=None)
@given(calendars, instants, st.integers(min_value=1, max_value=20))
def test_business_days_end_in_business_hours(cal, start, days):
    """A deadline in business days is also at an open time, on an open day."""
    c = CALENDARS[cal]
    due = add_business_time(c, start, BusinessDuration(days))
    assert due > start
    assert is_open(c, due - timedelta(microseconds=1))


# -- public holidays kept between processes ---------------------------------------------------

# A process that loads the config and asks its calendar whether Christmas Day is closed (a
# public holiday in Bavaria, and no extra closed day): prints that, and whether the holidays
# package had to be imported for it.
CHRISTMAS = """
import sys
from datetime import date
from pathlib import Path
from mailbot.context import build_settings
from mailbot.outbound.tokens import Signer
from mailbot.settings.config import load
config = load(Path(sys.argv[1]))
calendar = build_settings(config, Signer("s" * 32)).policy.calendars["default"]
print(calendar.is_closed_day(date(date.today().year, 12, 25)), "holidays" in sys.modules)
"""


def _christmas(config) -> tuple[bool, bool]:
    """Whether a fresh process finds Christmas Day closed, and imported the package."""
    done = subprocess.run([sys.executable, "-c", CHRISTMAS, str(config)], check=True,
                          capture_output=True, text=True)
    closed, imported = done.stdout.split()
    return closed == "True", imported == "True"


@pytest.fixture
def config_file(tmp_path):
    """A config whose data directory exists (an installation after its first start)."""
    (tmp_path / "data").mkdir(mode=0o700)
    path = tmp_path / "mailbot.toml"
    path.write_text('[service]\ndata_dir = "data"\n', encoding="utf-8")
    return path


def test_public_holidays_are_computed_once_then_kept_for_the_next_process(config_file):
    """The first start asks the holidays package and keeps the year's dates in the data
    directory (0600 in a 0700 folder); the next start closes on the same days without
    importing the package (over a tenth of a second of every `mailbot ingest`)."""
    assert _christmas(config_file) == (True, True)
    cache = config_file.parent / "data" / "cache"
    kept = list(cache.iterdir())
    assert len(kept) == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(kept[0].stat().st_mode) == 0o600
    assert _christmas(config_file) == (True, False)


@pytest.mark.parametrize("damage", [b"", b"{not json", b'["2001-12-25"]', b'{"a": 1}'],
                         ids=["empty", "not json", "another year", "not a list"])
def test_a_damaged_holiday_file_is_computed_again(tmp_path, monkeypatch, damage):
    """A kept file that is empty, broken or holds anything but the year's dates is never
    believed: the dates are computed again (Christmas among them) and the file written
    anew, which the next process reads instead of computing."""
    asked = []

    def counted(*question):
        asked.append(question)
        return country_holidays(*question)

    monkeypatch.setattr(holiday_cache, "country_holidays", counted)
    year = date.today().year

    def process_start() -> frozenset:  # a new process: nothing cached in memory
        return holiday_cache.public_holidays.__wrapped__("DE", "BY", ("public",), year,
                                                         str(tmp_path), write=True)

    first = process_start()
    [kept] = (tmp_path / "cache").iterdir()
    kept.write_bytes(damage)
    assert process_start() == first and date(year, 12, 25) in first
    assert len(asked) == 2
    assert process_start() == first
    assert len(asked) == 2


@pytest.mark.parametrize("exists", [False, True], ids=["before the first start", "after"])
def test_checking_a_config_writes_nothing_into_the_data_directory(tmp_path, exists):
    """Checking a config (`mailbot check-config`, and every command before a backup or a
    move to another store) checks its holidays, and writes nothing for them: no data
    directory before the first start, nothing in it after."""
    if exists:
        (tmp_path / "data").mkdir(mode=0o700)
    path = tmp_path / "mailbot.toml"
    path.write_text('[service]\ndata_dir = "data"\n', encoding="utf-8")
    load(path)
    assert list((tmp_path / "data").iterdir()) == [] if exists \
        else not (tmp_path / "data").exists()
