"""Customer-facing words in German and English: priorities, deadlines, hours, requests.

Kept apart from templates because the same phrases appear in several mails and pages.
The core says why something happened as a :class:`Reason` (a code and its values); the
sentences for each code live here, in :data:`SENTENCES`, and a mail's template words a
reason in its own language (the ``sentence`` filter), so no English reaches a German mail.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
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
STATUS_LABELS = {
    "de": {"new": "neu", "open": "in Bearbeitung", "waiting": "wartet auf den Kunden",
           "resolved": "gelöst", "closed": "geschlossen"},
    "en": {"new": "new", "open": "open", "waiting": "waiting for the customer",
           "resolved": "resolved", "closed": "closed"},
}
FACT_LABELS = {
    "de": {"customer_number": "Kundennummer", "order_number": "Auftragsnummer",
           "invoice_number": "Rechnungsnummer", "ticket_number": "Ticketnummer",
           "version": "Softwareversion", "device": "Gerät und Betriebssystem",
           "error_message": "Fehlermeldung"},
    "en": {"customer_number": "customer number", "order_number": "order number",
           "invoice_number": "invoice number", "ticket_number": "ticket number",
           "version": "software version", "device": "device and operating system",
           "error_message": "error message"},
}
# The shipped priority rules (policy/config.py DEFAULT_RULES) by name; an operator's own
# rules are shown as named.
RULE_LABELS = {
    "de": {"outage": "Ausfall", "impairment": "Beeinträchtigung",
           "question or wish": "Frage oder Wunsch"},
    "en": {},
}
DEADLINE_LABELS = {
    "de": {"first_response": "erste Antwort", "update": "nächste Antwort"},
    "en": {"first_response": "first response", "update": "next answer"},
}
# The sentence of each reason code, by language; {names} are the reason's values.  A value
# named "current" or "target" is a ticket status and is worded with STATUS_LABELS.
SENTENCES = {
    "de": {
        # an agent's reply that was not applied (tickets/commands.py, tickets/agents.py)
        "unknown_command": "unbekannter Befehl #{command}; bekannte Befehle: {known}",
        "needs_value": "#{command} braucht einen Wert",
        "takes_no_value": "#{command} hat keinen Wert (angegeben: „{value}“)",
        "bad_status": "#status {value}: erlaubt sind {allowed}",
        "bad_priority": "#priority {value}: erlaubt sind {allowed}",
        "not_agent": "#assign {value}: diese Adresse gehört zu keinem Agenten",
        "transition": "ein Ticket im Status „{current}“ kann nicht in den Status „{target}“ "
                      "wechseln",
        "no_claim": "#confirm: zu diesem Ticket gibt es keine angegebene Kundennummer, die "
                    "sich bestätigen ließe",
        "claims_by_operator": "#confirm: angegebene Kundennummern werden hier nicht per "
                              "E-Mail bestätigt ([directory] claims = \"{mode}\"); ein "
                              "Betreiber kann sie zuordnen: mailbot accounts link ADRESSE "
                              "{number}",
        "account_gone": "#confirm: das Kundenkonto zur Kundennummer {number} gibt es nicht "
                        "mehr",
        # why a customer got no acknowledgement (tickets/guards.py)
        "no_sender": "die E-Mail hat keine Absenderadresse",
        "undeliverable": "an die Absenderadresse {address} lässt sich keine E-Mail zustellen",
        "forged": "{method} ist für {domain} fehlgeschlagen (Authentication-Results von "
                  "{authserv}), der Absender ist wohl gefälscht",
        "rate_limit": "an diese Adresse gingen in der letzten Stunde schon {sent} "
                      "Eingangsbestätigungen",
        "automatic": "die E-Mail wurde automatisch versandt, und automatische E-Mails "
                     "beantworten wir nie",
        "no_auto_reply": "der Absender hat um keine automatische Antwort gebeten "
                         "(X-Auto-Response-Suppress)",
        "held": "der Grund steht im Verlauf des Tickets",
        # why a mail was not delivered, in our words (outbound/transports.py)
        "relay_connection": "die Verbindung zum Mailserver {relay} kam nicht zustande oder "
                            "brach ab",
        "relay_login": "der Mailserver {relay} hat die Anmeldung von mailbot abgelehnt",
        "relay_token": "für die Anmeldung am Mailserver {relay} gab es kein gültiges "
                       "OAuth2-Zugriffstoken",
        "unusable_address": "die Adresse {addresses} lässt sich so nicht versenden (das "
                            "Mailprogramm lehnt sie ab)",
        "no_smtputf8": "der Mailserver {relay} bietet kein SMTPUTF8 an, das für die Adresse "
                       "{addresses} nötig wäre",
        "maildir_unwritable": "in das Maildir {path} lässt sich nicht schreiben",
    },
    "en": {
        "unknown_command": "unknown command #{command}; known commands: {known}",
        "needs_value": "#{command} needs a value",
        "takes_no_value": "#{command} takes no value (got \"{value}\")",
        "bad_status": "#status {value}: use one of {allowed}",
        "bad_priority": "#priority {value}: use one of {allowed}",
        "not_agent": "#assign {value}: not a configured agent",
        "transition": "a ticket that is \"{current}\" cannot become \"{target}\"",
        "no_claim": "#confirm: this ticket has no customer number claim to confirm",
        "claims_by_operator": "#confirm: customer number claims are not confirmed by mail "
                              "here ([directory] claims = \"{mode}\"); an operator can run: "
                              "mailbot accounts link ADDRESS {number}",
        "account_gone": "#confirm: the account of customer number {number} no longer exists",
        "no_sender": "the mail has no sender address",
        "undeliverable": "no mail can be delivered to the sender address {address}",
        "forged": "{method} failed for {domain} (Authentication-Results of {authserv}): the "
                  "sender is probably forged",
        "rate_limit": "{sent} acknowledgements already went to this address in the last hour",
        "automatic": "the mail was sent automatically, and we never answer automatic mail",
        "no_auto_reply": "the sender asked for no automatic reply (X-Auto-Response-Suppress)",
        "held": "the reason is in the ticket's history",
        "relay_connection": "the connection to the relay {relay} failed or broke off",
        "relay_login": "the relay {relay} refused mailbot's login",
        "relay_token": "no valid OAuth2 access token for the login to the relay {relay}",
        "unusable_address": "the address {addresses} cannot be used for sending (the mail "
                            "library refuses it)",
        "no_smtputf8": "the relay {relay} does not offer SMTPUTF8, which the address "
                       "{addresses} needs",
        "maildir_unwritable": "cannot write to the Maildir {path}",
    },
}
# The subject a ticket without one is filed under (tickets/filing.py), and its words.
NO_SUBJECT = "(no subject)"
NO_SUBJECT_WORDS = {"de": "(ohne Betreff)", "en": NO_SUBJECT}
_STATUS_VALUES = ("current", "target")
# Words that make a display name a role or a shared mailbox, not a person ("Kasse", "Info").
_ROLE_WORDS = frozenset((
    "info", "kasse", "support", "service", "team", "office", "buchhaltung", "einkauf",
    "verkauf", "vertrieb", "zentrale", "empfang", "verwaltung", "technik", "it", "edv",
    "admin", "administrator", "sekretariat", "kundendienst", "hotline", "noreply", "no-reply",
    "mail", "postmaster", "webmaster", "sales", "billing", "accounts", "helpdesk", "reception",
    "filiale", "praxis", "kanzlei", "apotheke", "gmbh", "ag", "kg", "ug", "ltd", "inc",
))
_NAME_WORD = re.compile(r"[^\W\d_][^\W\d_'.-]*(?:[-'][^\W\d_]+)*\.?")
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
    lang = supported_language(language)
    day = WEEKDAYS[lang][local.weekday()]
    clock = f"{local.hour:02d}:{local.minute:02d}"  # numbers, not strftime: twice as fast
    if lang == "de":
        return f"{day}, {local.day:02d}.{local.month:02d}.{local.year}, {clock} Uhr"
    return f"{day}, {local.day} {ENGLISH_MONTHS[local.month - 1]} {local.year}, " \
        f"{clock} ({local.tzname()})"


def hours(calendar: CalendarConfig, language: str) -> str:
    """Opening hours as a sentence fragment: "Mo-Fr 09:00-16:00 Uhr, außer an Feiertagen"."""
    return _hours(tuple(calendar.hours), calendar.timezone, supported_language(language))


@functools.lru_cache(maxsize=64)
def _hours(spans: tuple[str, ...], timezone: str, language: str) -> str:
    """The words of :func:`hours`, made once per calendar and language (every
    acknowledgement names them)."""
    names = SHORT_DAYS[language]
    text = "; ".join(_DAY_TOKEN.sub(lambda m: names[m.group(1).lower()], h).replace("-", "–")
                     for h in spans)
    if language == "de":
        return f"{text} Uhr, außer an Feiertagen"
    return f"{text} ({timezone}), except public holidays"


def missing(keys: tuple[str, ...] | list[str], language: str) -> list[str]:
    """Polite, specific requests for exactly the missing facts."""
    table = MISSING[supported_language(language)]
    return [table[k] for k in keys if k in table]


def status_label(status: str, language: str) -> str:
    """A ticket status as people read it."""
    return STATUS_LABELS[supported_language(language)].get(status, status)


def fact_labels(keys: list[str] | tuple[str, ...], language: str) -> list[str]:
    """The names of facts (what is missing, what was found), in the mail's language."""
    table = FACT_LABELS[supported_language(language)]
    return [table.get(k, k) for k in keys]


def deadline_label(key: str, language: str) -> str:
    """Which deadline: the first response, or the next answer after a follow-up."""
    return DEADLINE_LABELS[supported_language(language)].get(key, key)


def priority_reason(why: dict, language: str) -> str:
    """Why a ticket got its priority, from the ``priority`` event, in words."""
    if not why:
        return ""
    german = supported_language(language) == "de"
    if why.get("rule"):
        rule = RULE_LABELS[supported_language(language)].get(why["rule"], why["rule"])
        text = (f"Regel „{rule}“ traf „{why.get('matched', '')}“" if german
                else f"rule \"{rule}\" matched \"{why.get('matched', '')}\"")
    else:
        text = "keine Regel traf, Standardpriorität" if german else \
            "no rule matched, default priority"
    if why.get("raised_by"):
        base = priority_label(why.get("base_priority", ""), language)
        text += (f"; von {base} angehoben durch den Vertrag {why['raised_by']}" if german
                 else f"; raised from {base} by the contract {why['raised_by']}")
    return text


def person_name(display_name: str) -> str:
    """The display name when it looks like a person's (two to four name words, none a
    role like "Kasse" or "Support"), else ``""``: greet "Guten Tag Anna Berg," but never
    "Guten Tag Kasse,"."""
    words = display_name.replace(",", " ").split()
    if not 2 <= len(words) <= 4:
        return ""
    if any(not _NAME_WORD.fullmatch(w) or w.lower().strip(".") in _ROLE_WORDS for w in words):
        return ""
    if any(w.isupper() and len(w) > 3 for w in words):
        return ""
    return " ".join(words) if "," not in display_name else " ".join(reversed(words))


@dataclass(frozen=True)
class Reason:
    """Why something happened or was refused: a code of :data:`SENTENCES` and its values.

    The core returns reasons; a template words one with ``{{ reason | sentence("de") }}``.
    ``str()`` is the English sentence, for logs, events and the operator's CLI.
    """

    code: str
    values: dict = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        return sentence(self, "en")


def sentence(reason: Reason, language: str) -> str:
    """A reason as a sentence in ``language`` (statuses worded too)."""
    lang = supported_language(language)
    values = {k: status_label(v, lang) if k in _STATUS_VALUES else v
              for k, v in reason.values.items()}
    return SENTENCES[lang][reason.code].format(**values)


def subject_text(subject: str, language: str) -> str:
    """A ticket's subject as a mail shows it: the placeholder of a mail without one in words."""
    if not subject or subject == NO_SUBJECT:
        return NO_SUBJECT_WORDS[supported_language(language)]
    return subject


def decimal(value: float, language: str, places: int | None = None) -> str:
    """A number as people write it: "1,5" in German, "1.5" in English; with ``places``
    decimals ("5,0"), else without trailing zeros."""
    text = f"{value:g}" if places is None else f"{value:.{places}f}"
    return text.replace(".", ",") if supported_language(language) == "de" else text
