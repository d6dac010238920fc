"""Customer-facing words in German and English: priorities, deadlines, hours, requests.

Kept apart from templates because the same phrases appear in several mails and pages.
"""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from mailbot.policy.bizhours import CalendarConfig

# The languages of mails and pages; the first is the default.
LANGUAGES = ("de", "en")
PRIORITY_LABELS = {
    "de": {"urgent": "dringend", "high": "hoch", "normal": "normal", "low": "niedrig"},
    "en": {"urgent": "urgent", "high": "high", "normal": "normal", "low": "low"},
}
WEEKDAYS = {
    "de": ("Montag", "Dienstag", "Mittwoch", "Donnerstag", "Freitag", "Samstag", "Sonntag"),
    "en": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
}
ENGLISH_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
                  "September", "October", "November", "December")
SHORT_DAYS = {
    "de": {"mon": "Mo", "tue": "Di", "wed": "Mi", "thu": "Do", "fri": "Fr", "sat": "Sa",
           "sun": "So"},
    "en": {"mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat",
           "sun": "Sun"},
}
MISSING = {
    "de": {
        "customer_number": "Ihre Kundennummer (wir konnten Ihre E-Mail-Adresse keinem "
                           "Kundenkonto zuordnen)",
        "version": "die Versionsnummer der Software, die Sie verwenden",
        "device": "Ihr Gerät und Betriebssystem (z. B. Windows 11 oder iPhone mit iOS 17)",
        "error_message": "den genauen Wortlaut der Fehlermeldung (gern als Screenshot)",
    },
    "en": {
        "customer_number": "your customer number (we could not match your address to a "
                           "customer account)",
        "version": "the version number of the software you use",
        "device": "your device and operating system (e.g. Windows 11 or an iPhone with iOS 17)",
        "error_message": "the exact wording of the error message (a screenshot is welcome)",
    },
}
_DAY_TOKEN = re.compile(r"\b(mon|tue|wed|thu|fri|sat|sun)\b", re.IGNORECASE)


def supported_language(wanted: str | None, fallback: str = "de") -> str:
    """``wanted`` when mails and pages exist in it, else ``fallback`` (itself checked), else
    German: the one rule for a language nobody wrote templates for."""
    if wanted in LANGUAGES:
        return wanted
    return fallback if fallback in LANGUAGES else LANGUAGES[0]


def priority_label(priority: str, language: str) -> str:
    """The priority as a customer reads it."""
    return PRIORITY_LABELS[supported_language(language)].get(priority, priority)


def moment(when: datetime | str | None, timezone: str, language: str) -> str:
    """A point in time in local words: "Mittwoch, 26.11.2026, 11:00 Uhr"; "" for none."""
    if not when:
        return ""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    local = when.astimezone(ZoneInfo(timezone))
    day = WEEKDAYS[supported_language(language)][local.weekday()]
    if supported_language(language) == "de":
        return f"{day}, {local:%d.%m.%Y}, {local:%H:%M} Uhr"
    return f"{day}, {local.day} {ENGLISH_MONTHS[local.month - 1]} {local.year}, " \
        f"{local:%H:%M} ({local.tzname()})"


def hours(calendar: CalendarConfig, language: str) -> str:
    """Opening hours as a sentence fragment: "Mo-Fr 09:00-16:00 Uhr, außer an Feiertagen"."""
    names = SHORT_DAYS[supported_language(language)]
    spans = "; ".join(_DAY_TOKEN.sub(lambda m: names[m.group(1).lower()], h).replace("-", "–")
                      for h in calendar.hours)
    if supported_language(language) == "de":
        return f"{spans} Uhr, außer an Feiertagen"
    return f"{spans} ({calendar.timezone}), except public holidays"


def missing(keys: tuple[str, ...] | list[str], language: str) -> list[str]:
    """Polite, specific requests for exactly the missing facts."""
    table = MISSING[supported_language(language)]
    return [table[k] for k in keys if k in table]
