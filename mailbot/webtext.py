"""Words for customers: moments in local time, written out in German or English.

Pages and the mails the web layer causes show deadlines like "Dienstag, 24. November
2026, 15:00 Uhr (MEZ)" instead of stored UTC timestamps; no locale is needed.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

GERMAN_DAYS = ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag")
GERMAN_MONTHS = ("Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August",
                 "September", "Oktober", "November", "Dezember")
GERMAN_ZONES = (("CEST", "MESZ"), ("CET", "MEZ"))
ENGLISH_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ENGLISH_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
                  "September", "October", "November", "December")


def local_words(moment: str | datetime | None, language: str, zone: str) -> str:
    """A stored timestamp in ``zone`` local time, in words; ``""`` when there is none."""
    if not moment:
        return ""
    when = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    local = when.astimezone(ZoneInfo(zone))
    if language == "en":
        return (f"{ENGLISH_DAYS[local.weekday()]}, {local.day} "
                f"{ENGLISH_MONTHS[local.month - 1]} {local.year}, {local:%H:%M} "
                f"({local.tzname()})")
    zone_name = dict(GERMAN_ZONES).get(local.tzname() or "", local.tzname())
    return (f"{GERMAN_DAYS[local.weekday()]}, {local.day}. {GERMAN_MONTHS[local.month - 1]} "
            f"{local.year}, {local:%H:%M} Uhr ({zone_name})")
