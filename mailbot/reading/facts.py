"""Facts a support mail should contain, and what to ask the customer for when they are missing.

Detected in subject and body, German and English (seed 001): customer number, order, invoice
and ticket numbers, software version, device/operating system and an error message. Patterns
are configurable regexes, matched case-insensitively; a named group ``value`` marks the part
to keep, otherwise the whole match is kept. Only the first ``scan_chars`` characters of the
body are read, and only what the customer wrote in this mail counts: quoted history is cut
the same way as everywhere else (:func:`mailbot.reading.quotes.own_text`).

Speed: a pattern runs only when the text contains one of its keywords, the literal words
every match of it must contain ("kunden", "kd" or "knr" for a customer number), found once
per pattern when it is compiled (:class:`Gate`).  One pass over the lower-cased text finds
which keywords are there; most mails name few of them, so most patterns never run.  A pattern
whose every match begins with one of its words is tried only where such a word stands, not at
every character.  A pattern without such words (character classes only) runs everywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields

from mailbot.reading.quotes import own_text

try:  # the stdlib's regex parser: where the keywords of a pattern are read from
    from re import _constants as _sre
    from re import _parser as _sre_parser
except ImportError:  # another Python: no keywords, every pattern runs (the same result)
    _sre = _sre_parser = None

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
class Gate:
    """Where a pattern can match, as lower-case ASCII words (case ignored): one of
    ``contains`` is in every match, and every match begins with one of ``starts``.  An
    empty set says nothing: the pattern is tried everywhere."""

    contains: frozenset[str] = frozenset()
    starts: frozenset[str] = frozenset()

    @classmethod
    def of(cls, pattern: re.Pattern[str]) -> Gate:
        """The words of ``pattern``, read from its syntax tree (none for a tree this code
        does not know: then it is tried everywhere)."""
        if _sre_parser is None:
            return cls()
        try:
            tree = _sre_parser.parse(pattern.pattern, pattern.flags)
            contains, starts = _required(tree), _starts(tree)
        except Exception:  # an unexpected tree: no words
            return cls()
        # Short first words stand everywhere: there one pass over the text is cheaper.
        usable = starts is not None and min(map(len, starts[0])) >= MIN_START_CHARS
        return cls(contains or frozenset(), starts[0] if usable else frozenset())


# The shortest first word a pattern is tried at alone (see Gate.of).
MIN_START_CHARS = 2


@dataclass(frozen=True)
class FactPatterns:
    """FactsConfig with its regexes compiled; build once with compile_facts and reuse."""

    patterns: Mapping[str, tuple[re.Pattern[str], ...]]
    scan_chars: int
    max_values: int
    # Per fact, the Gate of each pattern (none: every pattern is tried everywhere).
    gates: Mapping[str, tuple[Gate, ...]] = ()

    @functools.cached_property
    def keywords(self) -> frozenset[str]:
        """Every word one of which some pattern's matches contain (worked out once)."""
        return frozenset(word for gates in dict(self.gates).values() for gate in gates
                         for word in gate.contains)


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
    gates = {key: tuple(Gate.of(p) for p in pats) for key, pats in compiled.items()}
    return FactPatterns(compiled, cfg.scan_chars, cfg.max_values, gates)


def _compile(pattern: str, path: str) -> re.Pattern[str]:
    """Compile one case-insensitive regex; errors name the key."""
    if not pattern:
        raise ValueError(f"{path}: empty pattern would match every mail")
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"{path}: invalid regex {pattern!r}: {exc}") from None


# Characters the regex engine takes case-insensitively for an ASCII letter that str.lower()
# does not turn into it (dotless and dotted I, long s): folded before keywords are looked for.
_FOLD = str.maketrans({"\u0131": "i", "\u0130": "i", "\u017f": "s"})


def _folded(text: str) -> str:
    """``text`` lower-cased, with the characters of :data:`_FOLD` folded (rare: looked for
    first, since str.translate is slow)."""
    if not text.isascii() and any(char in text for char in "\u0131\u0130\u017f"):
        text = text.translate(_FOLD)
    return text.lower()


def _required(items) -> frozenset[str] | None:
    """Words one of which a match of the sequence ``items`` contains, or None.

    A run of literal characters is a word, a group or a repeat of at least one counts as
    what it holds, alternatives as all of their words; of the parts every match goes
    through, the one with the longest words is taken.
    """
    options: list[frozenset[str]] = []
    run = ""
    for op, av in items:
        if op is _sre.LITERAL and av < 128:
            run += chr(av).lower()
            continue
        if run:
            options.append(frozenset({run}))
            run = ""
        inner = _required_of(op, av)
        if inner:
            options.append(inner)
    if run:
        options.append(frozenset({run}))
    return max(options, key=lambda words: (min(map(len, words)), -len(words)), default=None)


def _required_of(op, av) -> frozenset[str] | None:
    """Words one of which a match of one item (a group, alternatives, a repeat) contains."""
    if op is _sre.SUBPATTERN:
        return _required(av[3])
    if op is _sre.ATOMIC_GROUP:
        return _required(av)
    if op is _sre.BRANCH:
        branches = [_required(branch) for branch in av[1]]
        return None if not all(branches) else frozenset().union(*branches)
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and av[0] >= 1:
        return _required(av[2])
    return None


# Items that match no character: skipped at the start of a pattern (a match begins after).
_ZERO_WIDTH = ("AT", "ASSERT", "ASSERT_NOT")


def _starts(items) -> tuple[frozenset[str], bool] | None:
    """Words one of which every match of the sequence ``items`` begins with, and whether
    they are all of it; None when unknown (the sequence may begin with anything)."""
    found = {""}
    for op, av in items:
        if found == {""} and str(op) in _ZERO_WIDTH:
            continue
        if op is _sre.LITERAL and av < 128:
            found = {word + chr(av).lower() for word in found}
            continue
        inner = _starts_of(op, av)
        if inner is not None:
            found = {word + more for word in found for more in inner[0]}
        if inner is None or not inner[1] or len(found) > 64:
            return (frozenset(found), False) if "" not in found else None
    return frozenset(found), True


def _starts_of(op, av) -> tuple[frozenset[str], bool] | None:
    """:func:`_starts` of one item: a group, alternatives, a repeat of at least one."""
    if op is _sre.SUBPATTERN:
        return _starts(av[3])
    if op is _sre.ATOMIC_GROUP:
        return _starts(av)
    if op is _sre.BRANCH:
        branches = [_starts(branch) for branch in av[1]]
        if not all(branches):
            return None
        return (frozenset().union(*(words for words, _ in branches)),
                all(whole for _, whole in branches))
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT) and av[0] >= 1:
        inner = _starts(av[2])
        return None if inner is None else (inner[0], False)
    return None


def _matches(pattern: re.Pattern[str], gate: Gate, text: str,
             folded: str) -> Iterator[re.Match[str]]:
    """What ``pattern.finditer(text)`` finds, tried only where a first word of the gate
    stands in ``folded`` (``text`` lower-cased, position for position) when it has some."""
    if not gate.starts:
        yield from pattern.finditer(text)
        return
    end = 0
    for start in sorted({at for word in gate.starts for at in _positions(folded, word)}):
        if start >= end and (found := pattern.match(text, start)):
            end = found.end()
            yield found


def _positions(text: str, word: str) -> Iterator[int]:
    """Where ``word`` begins in ``text``, overlaps included."""
    at = text.find(word)
    while at >= 0:
        yield at
        at = text.find(word, at + 1)


def _value(m: re.Match[str]) -> str:
    """The kept part of a match: group "value" if the pattern has one, whitespace collapsed."""
    raw = m.group("value") if "value" in m.re.groupindex else m.group(0)
    return _SPACES.sub(" ", raw).strip().rstrip(".,;:)")[:200]


def _find(matches: Iterable[Iterator[re.Match[str]]], limit: int) -> tuple[str, ...]:
    """Distinct values (case-insensitively) of the patterns' matches, in text order, at most
    limit."""
    matches = sorted((m.start(), _value(m)) for each in matches for m in each)
    found: dict[str, str] = {}
    for _start, value in matches:
        if value and len(found) < limit:
            found.setdefault(value.casefold(), value)
    return tuple(found.values())


def extract_facts(subject: str, body: str, patterns: FactPatterns) -> dict[str, tuple[str, ...]]:
    """Facts found in subject and body: fact key -> values in order found; keys with no
    value are left out. Example: {"customer_number": ("12345",), "device": ("Windows 11",)}."""
    text = subject + "\n" + written_text(body, patterns.scan_chars)
    folded = _folded(text)
    present = {word for word in patterns.keywords if word in folded}
    found = {}
    for key, pats in patterns.patterns.items():
        gates = patterns.gates[key] if patterns.gates else (Gate(),) * len(pats)
        live = [_matches(p, gate, text, folded) for p, gate in zip(pats, gates, strict=True)
                if not gate.contains or not present.isdisjoint(gate.contains)]
        if live and (values := _find(live, patterns.max_values)):
            found[key] = values
    return found


def written_text(body: str, max_chars: int) -> str:
    """What the customer wrote in the first ``max_chars`` characters of ``body``
    (:func:`~mailbot.reading.quotes.own_text`), cut once for the facts and the priority
    rules, which read the same mail one after the other."""
    return _written(body[:max_chars])


@functools.lru_cache(maxsize=8)
def _written(text: str) -> str:
    return own_text(text, len(text))


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
