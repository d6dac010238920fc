"""Find what the author of a reply wrote: the text above quoted history and signature.

Agents answer tickets by replying to a notification; their answer is the text above the
quote.  Customers reply the same way, from German, English, French, Spanish, Italian, Dutch
and Polish clients.  One line-based cutter serves both readers, with the same markers:
:func:`latest_reply` (an agent's answer, a follow-up's new words on the ticket page) and
:func:`own_text` (what facts and priority rules read).

Policy, in order:
- Everything from the first history marker on is dropped:
  - an attribution line (also wrapped over two lines): "On … wrote:", "Am … schrieb …:",
    "Le … a écrit :", "El … escribió:", "Il … ha scritto:", "Op … schreef …:",
    "Op … heeft … het volgende geschreven:", "W dniu … pisze:" / "napisał(a):",
    "Dnia … napisał(a):", "Wiadomość napisana przez … w dniu …:";
  - a separator line: "-----Original Message-----", "-----Ursprüngliche Nachricht-----",
    "-------- Message original --------", "-----Mensaje original-----", "-----Messaggio
    originale-----", "-----Oorspronkelijk bericht-----", "-----Oryginalna wiadomość-----",
    the forwarded-message lines of Gmail, Thunderbird and Apple Mail in those languages;
  - an Outlook header block: two or more header lines in a row, one of them the sender
    ("From:/Sent:", "Von:/Gesendet:", "De :/Envoyé :", "De:/Enviado:", "Da:/Inviato:",
    "Van:/Verzonden:", "Od:/Wysłano:" with To, Cc, Subject and Date in each language);
  - a rule of 30 or more underscores (Outlook's separator, an HTML ``<hr>``, list footers).
- Bottom and inline posting: when a quote introduced by an attribution is followed by the
  author's own text, that text is kept; quote blocks between two pieces of own text stay as
  context, leading and trailing quote blocks and the attribution lines go.
- The signature from a "-- " (or "--") line on is dropped, and so are device footers at the
  end ("Sent from my iPhone", "Von meinem iPhone gesendet", "Envoyé de mon iPhone",
  "Get Outlook for iOS" and the like in the seven languages).  talon keeps such a footer,
  email-reply-parser drops it; we drop it from the latest reply because it is what an
  agent's answer would carry to the customer and what the ticket page would show as new
  words, and it says nothing either needs.  :func:`own_text` keeps it: the device is a
  fact.  A sentence that merely begins like one ("Sent from my desk, which …") is kept,
  and so are closings the author typed ("Viele Grüße, Anna") and "- item" lists.
- Never empty when the input has unquoted text; "" when everything is quoted.

Bounds: only the first ``max_chars`` characters are examined and returned (callers keep the
full body).  Every line is looked at a bounded number of times with patterns that cannot
backtrack beyond one line of at most ``_ATTRIBUTION_CHARS`` characters: linear time.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_ATTRIBUTION_CHARS = 300
_ATTRIBUTION_LINES = 3

# What an attribution line starts with, and how it reads (joined with its wrapped lines).
_ATTRIBUTION_OPENERS = ("On ", "Am ", "Le ", "El ", "Il ", "Op ", "W dniu ", "Dnia ",
                        "Wiadomość napisana przez ")
_ATTRIBUTION_RE = re.compile(
    r"On\s.*wrote\s*:"
    r"|Am\s.*\sschrieb\s.*:"
    r"|Le\s.*\sa\s+écrit\s*:"
    r"|El\s.*\sescribió\s*:"
    r"|Il\s.*\sha\s+scritto\s*:"
    r"|Op\s.*\s(?:schreef\s.*|het\s+volgende\s+geschreven\s*):"
    r"|(?:W\s+dniu|Dnia)\s.*\s(?:pisze|napisał(?:\(a\)|a)?)\s*:"
    r"|Wiadomość\s+napisana\s+przez\s.*\sw\s+dniu\s.*:")
_SEPARATOR_RE = re.compile(
    r"\s*-{2,}\s*(?:Original Message|Original-Nachricht|Ursprüngliche Nachricht|"
    r"Originalnachricht|Message original|Message d'origine|Mensaje original|"
    r"Messaggio originale|Oorspronkelijk bericht|Oryginalna wiadomość|"
    r"Forwarded message|Weitergeleitete Nachricht|Message transféré|Mensaje reenviado|"
    r"Messaggio inoltrato|Doorgestuurd bericht|Wiadomość przekazana|"
    r"Przekazana wiadomość)\s*-{2,}\s*"
    r"|\s*(?:Begin forwarded message|Anfang der weitergeleiteten Nachricht|"
    r"Début du message réexpédié|Comienzo del mensaje reenviado|Inizio messaggio inoltrato|"
    r"Begin doorgestuurd bericht|Początek przekazywanej wiadomości)\s*:\s*", re.IGNORECASE)
# Outlook's header labels in the seven languages (and Russian, as Windows Mail writes them):
# the sender's, and all of them.
_FROM_LABELS = r"From|Von|De|Da|Van|Od|От"
_HEADER_LABELS = (_FROM_LABELS + r"|Sent|Gesendet|Envoyé|Enviado|Inviato|Verzonden|Wysłano|"
                  r"Отправлено|To|An|À|Para|A|Aan|Do|Кому|Cc|DW|Копия|Subject|Betreff|Objet|"
                  r"Asunto|Oggetto|Onderwerp|Temat|Тема|Date|Datum|Fecha|Data|Дата")
_HEADER_FROM_RE = re.compile(rf"\s*\*?(?:{_FROM_LABELS})\*?\s*:", re.IGNORECASE)
_HEADER_RE = re.compile(rf"\s*\*?(?:{_HEADER_LABELS})\*?\s*:", re.IGNORECASE)
_RULE_RE = re.compile(r"\s*[_-]{5,}\s*")
_FOOTER_RULE_RE = re.compile(r"\s*_{30,}\s*")
_SIGNATURE_RE = re.compile(r"--\s?")
# How device and app footers begin, in the seven languages; the rest of the line is short.
_DEVICE_RE = re.compile(
    r"\s*(?:Sent from my|Sent from Mail for|Sent from Yahoo Mail|Sent from Outlook|"
    r"Sent with (?:Sparrow|Proton|Spark|BlackBerry)|"
    r"Gesendet von meinem|Gesendet von Mail für|Gesendet von Outlook|Gesendet mit der|"
    r"Von meinem (?:\S+ ){1,4}gesendet|"
    r"Envoyé de mon|Envoyé depuis (?:mon|ma|l'application)|Envoyé à partir de|"
    r"Enviado desde mi|Enviado desde (?:Outlook|Yahoo|Correo)|Enviado de mi|"
    r"Inviato da (?:iPhone|iPad|Outlook|Yahoo|Libero|Mail)|Inviato dal mio|"
    r"Verzonden (?:vanaf|met) (?:mijn|Outlook|Mail)|Verstuurd vanaf mijn|"
    r"Wysłane z (?:mojego|iPhone|iPada|Outlook|aplikacji)|"
    r"Wysłano z (?:mojego|iPhone|telefonu|aplikacji)|"
    r"(?:Get|Obtenir|Obtener|Scarica|Pobierz(?: aplikację)?) Outlook (?:for|pour|para|per|dla)|"
    r"Outlook (?:für|voor) \S+ (?:beziehen|herunterladen|downloaden))"
    r"[^,;:!?]{0,60}?(?:\s*<https?://[^>\s]*>)?\s*\.?\s*", re.IGNORECASE)
_DATE_OR_ADDRESS_RE = re.compile(r"@|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}:\d{2}")


def latest_reply(text: str, max_chars: int = 20000) -> str:
    """The text the author wrote above quoted history and signature (see the module policy)."""
    lines = _lines(text[:max_chars])
    reply = _tidy(_drop_intros(lines[:_reply_end(lines)]))
    return reply or _unquoted(lines)


def new_words(text: str) -> str:
    """What a mail adds to its thread when it quotes earlier mail: its latest reply; ``""``
    when nothing was cut (the whole text is new, or all of it is quoted)."""
    latest = latest_reply(text)
    return latest if latest and latest != text.strip() else ""


def own_text(text: str, max_chars: int) -> str:
    """Everything the author wrote in this mail, signature and footers included: the first
    ``max_chars`` characters without quoted history (the same markers as
    :func:`latest_reply`, inline answers kept) and without ">" lines.

    What facts and priority rules read: a "Sent from my iPhone" or a version in the
    signature is the customer's information, a quoted earlier mail is not.
    """
    lines = _lines(text[:max_chars])
    kept = _drop_intros(lines[:_reply_end(lines)])
    return "\n".join(line for line in kept if not _is_quoted(line))


def _lines(text: str) -> list[str]:
    """The lines of a text, whatever its line endings."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _reply_end(lines: list[str]) -> int:
    """Index of the first line of quoted history, letting inline answers extend the reply."""
    cut = _first_marker(lines, 0)
    while cut < len(lines) and _is_quote_intro(lines, cut):
        after = _after_quote_block(lines, cut)
        if after >= len(lines) or _is_marker(lines, after):
            return cut
        cut = _first_marker(lines, after)
    return cut


def _first_marker(lines: list[str], start: int) -> int:
    """Index of the first history marker at or after ``start``, or len(lines)."""
    return next((i for i in range(start, len(lines)) if _is_marker(lines, i)), len(lines))


def _is_marker(lines: list[str], i: int) -> bool:
    """Whether line ``i`` starts history: separator, footer rule, header block, attribution."""
    line = lines[i]
    return (bool(_SEPARATOR_RE.fullmatch(line) or _FOOTER_RULE_RE.fullmatch(line))
            or _is_header_block(lines, i) or _is_attribution(lines, i))


def _is_header_block(lines: list[str], i: int) -> bool:
    """An Outlook-style header block from line ``i``: a sender line with another header
    line within the next three, or a run of header lines with the sender among the first
    four (GMX and Hotmail put "Gesendet:" or "Date:" first)."""
    if _HEADER_FROM_RE.match(lines[i]):
        return any(_HEADER_RE.match(line) for line in lines[i + 1:i + 4])
    run = 0
    while run < 4 and i + run < len(lines) and _HEADER_RE.match(lines[i + run]):
        run += 1
    return run >= 2 and any(_HEADER_FROM_RE.match(line) for line in lines[i:i + run])


def _is_attribution(lines: list[str], i: int) -> bool:
    """An attribution line ("On … wrote:", "Le … a écrit :" …), possibly wrapped."""
    return _attribution_lines(lines, i) > 0


def _attribution_lines(lines: list[str], i: int) -> int:
    """How many lines the attribution starting at line ``i`` takes (mail programs wrap it
    onto a second or third line), or 0 when line ``i`` starts none."""
    line = lines[i].strip()
    if not line.startswith(_ATTRIBUTION_OPENERS) or len(line) > _ATTRIBUTION_CHARS:
        return 0
    for count in range(1, _ATTRIBUTION_LINES + 1):
        if count > 1:
            following = lines[i + count - 1].strip() if i + count - 1 < len(lines) else ""
            if not following or len(following) > _ATTRIBUTION_CHARS:
                return 0
            line = f"{line} {following}"
        if line.endswith(":") and _ATTRIBUTION_RE.fullmatch(line):
            return count
    return 0


def _is_quoted(line: str) -> bool:
    """Whether a line is part of a ">" quote."""
    return line.lstrip().startswith(">")


def _is_quote_intro(lines: list[str], i: int) -> bool:
    """Whether the line at ``i`` is an attribution above a ">" quote (one of the next two
    lines with text after it is quoted)."""
    count = _attribution_lines(lines, i)
    following = [line for line in lines[i + count:i + count + 3] if line.strip()][:2]
    return count > 0 and any(_is_quoted(line) for line in following)


def _after_quote_block(lines: list[str], i: int) -> int:
    """Index of the first line after the attribution at ``i`` and the quote below it."""
    j = next((k for k in range(i + 1, len(lines)) if _is_quoted(lines[k])), len(lines))
    while j < len(lines) and (_is_quoted(lines[j]) or not lines[j].strip()):
        j += 1
    return j


def _drop_intros(lines: list[str]) -> list[str]:
    """The lines without quote attributions (and their wrapped lines)."""
    kept: list[str] = []
    skip = 0
    for i, line in enumerate(lines):
        if skip:
            skip -= 1
        elif count := _attribution_lines(lines, i):
            skip = count - 1
        else:
            kept.append(line)
    return kept


def _tidy(lines: list[str]) -> str:
    """Drop leading and trailing quotes, the signature and device footers; join the rest."""
    lines = _drop_quote_tail(_drop_leading_quote(lines))
    lines = _drop_signature(lines)
    lines = _drop_trailing(lines, lambda line: not line.strip() or _is_device_footer(line))
    return "\n".join(_drop_quote_tail(lines)).strip()


def _is_device_footer(line: str) -> bool:
    """A "Sent from my iPhone" line (any of the seven languages), not a sentence."""
    return len(line) <= _ATTRIBUTION_CHARS and bool(_DEVICE_RE.fullmatch(line))


def _drop_leading_quote(lines: list[str]) -> list[str]:
    """Without a quote block at the top (bottom posting), when own text follows it."""
    i = 0
    while i < len(lines) and (_is_quoted(lines[i]) or not lines[i].strip()):
        i += 1
    return lines[i:] if i < len(lines) else lines


def _drop_quote_tail(lines: list[str]) -> list[str]:
    """Without trailing quotes, blanks and rules, nor the attribution line above a quote."""
    kept = _drop_trailing(lines, _is_history_tail)
    if any(_is_quoted(line) for line in lines[len(kept):]):
        return _drop_dangling_attribution(kept)
    return kept


def _drop_trailing(lines: list[str], unwanted: Callable[[str], bool]) -> list[str]:
    """The lines without the run at the end for which ``unwanted(line)`` holds."""
    end = len(lines)
    while end and unwanted(lines[end - 1]):
        end -= 1
    return lines[:end]


def _is_history_tail(line: str) -> bool:
    """Lines that may trail a reply without being part of it: quotes, blanks, rules."""
    return not line.strip() or _is_quoted(line) or bool(_RULE_RE.fullmatch(line))


def _drop_signature(lines: list[str]) -> list[str]:
    """The lines above the first signature separator ("-- ")."""
    end = next((i for i, line in enumerate(lines) if _SIGNATURE_RE.fullmatch(line)), len(lines))
    return lines[:end]


def _drop_dangling_attribution(lines: list[str]) -> list[str]:
    """Without a last line like 'X <x@y> написал:' that introduced the dropped quote."""
    if not lines or not lines[-1].rstrip().endswith(":"):
        return lines
    if not _DATE_OR_ADDRESS_RE.search(lines[-1]) or len(lines[-1]) > _ATTRIBUTION_CHARS:
        return lines
    wrapped = len(lines) > 1 and lines[-2].rstrip().endswith("<")
    return lines[:-2] if wrapped else lines[:-1]


def _unquoted(lines: list[str]) -> str:
    """Fallback: every line that is neither quoted nor an attribution, or ""."""
    return "\n".join(line for line in _drop_intros(lines) if not _is_quoted(line)).strip()
