"""Facts a support mail should contain, and what to ask the customer for when they are missing.

Detected in subject and body, German and English (seed 001): customer number, order, invoice
and ticket numbers, software version, device/operating system and an error message. Patterns
are configurable regexes, matched case-insensitively; a named group ``value`` marks the part
to keep, otherwise the whole match is kept. Only the first ``scan_chars`` characters of the
body are read, and only what the customer wrote in this mail counts: quoted history is cut
the same way as everywhere else (:func:`mailbot.reading.quotes.own_text`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields

from mailbot.reading.quotes import own_text

FACT_KEYS = (
    "customer_number", "order_number", "invoice_number", "ticket_number",
    "version", "device", "error_message",
)  # fmt: skip
# What missing_facts may ask for, in the order the acknowledgement asks.
ASKABLE_FACTS = ("customer_number", "version", "device", "error_message")

_SPACES = re.compile(r"\s+")

_SEP = r"\.?\s{0,3}(?:[:#]\s{0,3}|(?:ist|lautet|is)\s{1,3})?"
_ID = r"(?P<value>(?:[a-z]{1,4}[-/]?)?\d[\w./-]{0,30})"


def _labelled(label: str) -> str:
    """A pattern for an identifier that follows a label, e.g. "Kundennummer: 12345"."""
    return rf"(?<!\w)(?:{label}){_SEP}{_ID}"


@dataclass(frozen=True)
class FactsConfig:
    """Regexes that find facts in a mail (case-insensitive; group "value" = the part kept)."""

    # Customer number: "Kundennummer: 12345", "Kd.-Nr. 12345", "KNr 12345", "customer no. 1".
    customer_number: tuple[str, ...] = (
        _labelled(r"kunden\s?-?\s?(?:nr|nummer|number)|kd\.?\s?-?\s?nr|knr"),
        _labelled(r"customer\s?(?:no|number|id|#)|account\s(?:no|number)"),
    )
    # Order number: "Auftragsnummer", "Bestellnummer", "order number", "order no.".
    order_number: tuple[str, ...] = (
        _labelled(r"(?:auftrags|bestell)\s?-?\s?(?:nr|nummer)|order\s?(?:no|number|id|#)"),
    )
    # Invoice number: "Rechnungsnummer", "Rechnungs-Nr.", "invoice number", "invoice".
    invoice_number: tuple[str, ...] = (
        _labelled(r"rechnung(?:s\s?-?\s?|\s)(?:nr|nummer)|invoice\s?(?:no|number|#)?"),
    )
    # Ticket number: "Ticketnummer", "Ticket-Nr.", "ticket #123", "Vorgangsnummer", "case".
    ticket_number: tuple[str, ...] = (
        _labelled(r"ticket\s?-?\s?(?:nr|nummer|number|no|id)?|vorgangs\s?-?\s?(?:nr|nummer)"),
        _labelled(r"case\s?(?:no|number|id|#)"),
    )
    # Software version: "Version 4.2.1", "Softwareversion: 4.2", "v4.2", "Build 1234".
    version: tuple[str, ...] = (
        r"(?<!\w)(?:\w{1,20}-)?\w{0,20}version(?:snummer)?\s{0,3}:?\s{0,3}"
        r"(?P<value>v?\d{1,4}(?:\.\d{1,6}){0,3}[a-z]?)(?![\w.])",
        r"(?<![\w.])v\d{1,4}\.\d{1,6}(?:\.\d{1,6}){0,2}(?![\w.])",
        r"(?<!\w)(?:build|release)\s{0,3}:?\s{0,3}#?\d[\d.]{0,15}\d(?!\w)",
    )
    # Device or operating system: "Windows 11", "macOS 14", "iOS 17", "Android 14", "iPhone".
    device: tuple[str, ...] = (
        r"(?<!\w)windows(?:\s?(?:1[01]|[78](?:\.1)?|xp|vista|server\s?20\d\d(?:\s?r2)?))?(?!\w)",
        r"(?<!\w)(?:mac\s?os(?:\s?x)?|os\s?x)(?:\s?\d{2}(?:\.\d{1,2}){0,2})?(?!\w)",
        r"(?<!\w)(?:ipados|ios|android|chrome\s?os)(?:\s?\d{1,2}(?:\.\d{1,2}){0,2})?(?!\w)",
        r"(?<!\w)(?:ubuntu|debian|fedora|linux|red\s?hat|rhel|suse)"
        r"(?:\s?\d{1,2}(?:\.\d{1,2}){0,2})?(?!\w)",
        r"(?<!\w)(?:iphone|ipad|macbook|imac)(?:\s?(?:\d{1,2}|se|air|pro|max|mini|plus)){0,3}(?!\w)",
        r"(?<!\w)(?:samsung\s?)?galaxy(?:\s?[a-z]{0,4}\d{1,3}\w{0,5})?(?!\w)",
        r"(?<!\w)(?:google\s)?pixel\s?\d{1,2}\w{0,3}(?!\w)",
    )
    # Error message: "Fehlermeldung: ...", "error: ...", "Error 500", "Fehlercode 0x8007",
    # exception names ("NullPointerException: ..."), quoted text after "Meldung"/"message".
    error_message: tuple[str, ...] = (
        r"(?<!\w)(?:fehler|error|exception|meldung|fehlermeldung|fehlertext|error\s?message)"
        r"\s{0,3}:\s{0,3}(?P<value>[^\n]{3,200})",
        r"(?<!\w)(?:fehler(?:code|nummer)?|error(?:\s?code)?|http(?:\s?status)?)"
        r"\s{0,3}:?\s{0,3}#?(?:0x[0-9a-f]{1,8}|[a-z]{0,4}-?\d{2,6})(?!\w)",
        r"(?-i:(?<!\w)[A-Z]\w{0,60}(?:Exception|Error)(?!\w)(?::[^\n]{0,200})?)",
        r"(?<!\w)traceback \(most recent call last\)",
        r"(?:meldung|message|fehler|error|erscheint|zeigt|shows|says)[^\n\"„“”]{0,40}"
        r"[\"„“”](?P<value>[^\"„“”\n]{3,200})[\"“”]",
    )
    # Characters of the body read at most (bounds the work per mail).
    scan_chars: int = 8192
    # Values kept at most per fact.
    max_values: int = 5


@dataclass(frozen=True)
class FactPatterns:
    """FactsConfig with its regexes compiled; build once with compile_facts and reuse."""

    patterns: Mapping[str, tuple[re.Pattern[str], ...]]
    scan_chars: int
    max_values: int


def compile_facts(cfg: FactsConfig, path: str = "facts") -> FactPatterns:
    """Compile and check cfg; a bad regex raises ValueError naming its key, e.g. facts.device[2]."""
    if cfg.scan_chars < 1 or cfg.max_values < 1:
        raise ValueError(f"{path}.scan_chars/max_values: must be at least 1")
    compiled = {}
    for f in fields(FactsConfig):
        if f.name in FACT_KEYS:
            compiled[f.name] = tuple(
                _compile(p, f"{path}.{f.name}[{i}]") for i, p in enumerate(getattr(cfg, f.name))
            )
    return FactPatterns(compiled, cfg.scan_chars, cfg.max_values)


def _compile(pattern: str, path: str) -> re.Pattern[str]:
    """Compile one case-insensitive regex; errors name the key."""
    if not pattern:
        raise ValueError(f"{path}: empty pattern would match every mail")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{path}: invalid regex {pattern!r}: {exc}") from None


def _value(m: re.Match[str]) -> str:
    """The kept part of a match: group "value" if the pattern has one, whitespace collapsed."""
    raw = m.group("value") if "value" in m.re.groupindex else m.group(0)
    return _SPACES.sub(" ", raw).strip().rstrip(".,;:)")[:200]


def _find(patterns: tuple[re.Pattern[str], ...], text: str, limit: int) -> tuple[str, ...]:
    """Distinct values (case-insensitively) found by patterns, in text order, at most limit."""
    matches = sorted((m.start(), _value(m)) for p in patterns for m in p.finditer(text))
    found: dict[str, str] = {}
    for _start, value in matches:
        if value and len(found) < limit:
            found.setdefault(value.casefold(), value)
    return tuple(found.values())


def extract_facts(subject: str, body: str, patterns: FactPatterns) -> dict[str, tuple[str, ...]]:
    """Facts found in subject and body: fact key -> values in order found; keys with no
    value are left out. Example: {"customer_number": ("12345",), "device": ("Windows 11",)}."""
    text = subject + "\n" + own_text(body, patterns.scan_chars)
    found = {key: _find(pats, text, patterns.max_values) for key, pats in patterns.patterns.items()}
    return {key: values for key, values in found.items() if values}


def missing_facts(
    facts: Mapping[str, tuple[str, ...]], sender_known: bool, is_problem_report: bool
) -> tuple[str, ...]:
    """Exactly what the acknowledgement should ask for, in ASKABLE_FACTS order: the customer
    number when the sender is unknown and none was found; version, device and error message
    when the mail reports a problem and does not name them."""
    wanted = set()
    if not sender_known:
        wanted.add("customer_number")
    if is_problem_report:
        wanted.update(("version", "device", "error_message"))
    return tuple(key for key in ASKABLE_FACTS if key in wanted and not facts.get(key))
