"""Find what the author of a reply wrote: the text above quoted history and signature.

Agents answer tickets by replying to a notification; their answer is the text above the
quote.  Customers reply the same way, in German or English clients.  mail-parser-reply finds
the quote headers of many clients; a fast line-based stripper of our own covers what it
misses ("-----Ursprüngliche Nachricht-----", bottom posting, signatures) and takes over when
the library fails or is slow.

Policy, in order:
- Everything from the first history marker on is dropped: "On … wrote:", "Am … schrieb …:"
  (also wrapped over two lines), "-----Original Message-----",
  "-----Ursprüngliche Nachricht-----", an Outlook "Von:/Gesendet:" or "From:/Sent:" block,
  a rule of 30 or more underscores (Outlook's separator, mailing-list footers).
- Bottom and inline posting: when a quote introduced by "On … wrote:" is followed by the
  author's own text, that text is kept; quote blocks between two pieces of own text stay as
  context, leading and trailing quote blocks and the "wrote:" lines go.
- The signature from a "-- " (or "--") line on is dropped, and so are device footers at the
  end ("Sent from my iPhone", "Gesendet von meinem iPad", "Von meinem iPhone gesendet",
  "Get Outlook for iOS"): they say nothing the ticket needs.  Closings the author typed
  ("Viele Grüße, Anna") and "- item" lists are kept.
- Never empty when the input has unquoted text; "" when everything is quoted.

Bounds: only the first ``max_chars`` characters are examined and returned (callers keep the
full body).  The library's regular expressions are super-linear on long lines (one 5 KB line
of "Am schrieb …" takes 36 s), so it only sees lines of at most ``_LIBRARY_LINE_CHARS``
characters and no more than two blank lines in a row, which bounds it to about 0.3 s on 20 KB
of the worst input we found.  A result that
took longer than ``timeout`` seconds, or an exception, makes the fast stripper decide alone.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from mailparser_reply import EmailReplyParser
from mailparser_reply.parser import EmailReply

log = logging.getLogger(__name__)

_LANGUAGES = ("de", "en")
_LIBRARY_LINE_CHARS = 200
_ATTRIBUTION_CHARS = 300

_SEPARATOR_RE = re.compile(
    r"\s*-{2,}\s*(?:Original Message|Original-Nachricht|Ursprüngliche Nachricht|"
    r"Originalnachricht)\s*-{2,}\s*", re.IGNORECASE)
_HEADER_FROM_RE = re.compile(r"\s*\*?(?:From|Von)\*?:")
_HEADER_NEXT_RE = re.compile(
    r"\s*\*?(?:Sent|Gesendet|Date|Datum|To|An|Subject|Betreff|Cc)\*?:", re.IGNORECASE)
_RULE_RE = re.compile(r"\s*[_-]{5,}\s*")
_FOOTER_RULE_RE = re.compile(r"\s*_{30,}\s*")
_LONG_RULE_RE = re.compile(r"[_-]{32,}")
_SIGNATURE_RE = re.compile(r"--\s?")
_DEVICE_RE = re.compile(
    r"\s*(?:Sent from my |Sent from Mail for |Get Outlook for |Gesendet von meinem |"
    r"Von meinem \S+ gesendet|Gesendet mit der |Outlook für \S+ beziehen)", re.IGNORECASE)
_DATE_OR_ADDRESS_RE = re.compile(r"@|\d{1,4}[./-]\d{1,2}[./-]\d{1,4}|\d{1,2}:\d{2}")


def latest_reply(text: str, max_chars: int = 20000, timeout: float = 1.0) -> str:
    """The text the author wrote above quoted history and signature (see the module policy)."""
    lines = _lines(text[:max_chars])
    end = _reply_end(lines, _library_cut(lines, timeout))
    reply = _tidy(_drop_intros(lines[:end]))
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
    end = _reply_end(lines, len(lines))
    return "\n".join(line for line in _drop_intros(lines[:end]) if not _is_quoted(line))


def _lines(text: str) -> list[str]:
    """The lines of a text, whatever its line endings."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _library_cut(lines: list[str], timeout: float) -> int:
    """Line index where mail-parser-reply sees the history start; len(lines) when undecided."""
    shaped, origin = _shape(lines)
    started = time.monotonic()
    try:
        message = EmailReplyParser(languages=list(_LANGUAGES)).read("\n".join(shaped))
    except Exception:  # the library is a helper only: any failure leaves the decision to us
        log.warning("mail-parser-reply failed; using the line-based quote stripper",
                    exc_info=True)
        return len(lines)
    elapsed = time.monotonic() - started
    if elapsed > timeout:
        log.warning("mail-parser-reply took %.2f s (budget %.2f s); using the line-based "
                    "quote stripper", elapsed, timeout)
        return len(lines)
    return origin[_cut_from(message.replies[0], shaped)]


def _shape(lines: list[str]) -> tuple[list[str], list[int]]:
    """Lines the library scans quickly, and for each its index in ``lines`` (plus the end).

    Long lines become a placeholder, long rules get short, and runs of blank lines are cut to
    two: the library's patterns are super-linear in all three.
    """
    shaped: list[str] = []
    origin: list[int] = []
    for index, line in enumerate(lines):
        if not line.strip() and len(shaped) > 1 and not (shaped[-1] or shaped[-2]):
            continue
        shaped.append(_shape_line(line))
        origin.append(index)
    return shaped, [*origin, len(lines)]


def _shape_line(line: str) -> str:
    """One line as the library sees it."""
    if not line.strip():
        return ""
    if len(line) > _LIBRARY_LINE_CHARS:
        return "x"
    return _LONG_RULE_RE.sub("_" * 8, line)


def _cut_from(first: EmailReply, shaped: list[str]) -> int:
    """Map the library's first reply fragment back to an index into ``shaped``."""
    start = next((i for i, line in enumerate(shaped) if line.strip()), len(shaped))
    if first.headers or not first.content:
        return start
    return min(start + first.content.count("\n") + 1, len(shaped))


def _reply_end(lines: list[str], library_cut: int) -> int:
    """Index of the first line of quoted history, letting inline answers extend the reply."""
    cut = min(_skip_blank(lines, library_cut), _first_marker(lines, 0))
    while cut < len(lines) and _is_quote_intro(lines, cut):
        after = _after_quote_block(lines, cut)
        if after >= len(lines) or _is_marker(lines, after):
            return cut
        cut = _first_marker(lines, after)
    return cut


def _skip_blank(lines: list[str], i: int) -> int:
    """Index of the first non-blank line at or after ``i``, or len(lines)."""
    return next((k for k in range(i, len(lines)) if lines[k].strip()), len(lines))


def _first_marker(lines: list[str], start: int) -> int:
    """Index of the first history marker at or after ``start``, or len(lines)."""
    return next((i for i in range(start, len(lines)) if _is_marker(lines, i)), len(lines))


def _is_marker(lines: list[str], i: int) -> bool:
    """Whether line ``i`` starts history: separator, footer rule, header block, attribution."""
    line = lines[i]
    return (bool(_SEPARATOR_RE.fullmatch(line) or _FOOTER_RULE_RE.fullmatch(line))
            or _is_header_block(lines, i) or _is_attribution(lines, i))


def _is_header_block(lines: list[str], i: int) -> bool:
    """An Outlook-style "From:/Sent:" block: a From line and another header just below."""
    if not _HEADER_FROM_RE.match(lines[i]):
        return False
    return any(_HEADER_NEXT_RE.match(line) for line in lines[i + 1:i + 4])


def _is_attribution(lines: list[str], i: int) -> bool:
    """An "On … wrote:" or "Am … schrieb …:" line, possibly wrapped onto the next line."""
    line = lines[i].strip()
    if not line.startswith(("On ", "Am ")) or len(line) > _ATTRIBUTION_CHARS:
        return False
    if _attribution_text(line):
        return True
    following = lines[i + 1].strip() if i + 1 < len(lines) else ""
    return len(following) < _ATTRIBUTION_CHARS and _attribution_text(f"{line} {following}")


def _attribution_text(line: str) -> bool:
    """Whether one (joined) line reads like a quote attribution."""
    if line.startswith("On "):
        return line.endswith("wrote:")
    return " schrieb " in line and line.endswith(":")


def _is_quoted(line: str) -> bool:
    """Whether a line is part of a ">" quote."""
    return line.lstrip().startswith(">")


def _is_quote_intro(lines: list[str], i: int) -> bool:
    """Whether the line at ``i`` introduces a ">" quote (checked on the next two lines)."""
    following = [line for line in lines[i + 1:i + 4] if line.strip()][:2]
    return _is_attribution(lines, i) and any(_is_quoted(line) for line in following)


def _after_quote_block(lines: list[str], i: int) -> int:
    """Index of the first line after the attribution at ``i`` and the quote below it."""
    j = next((k for k in range(i + 1, len(lines)) if _is_quoted(lines[k])), len(lines))
    while j < len(lines) and (_is_quoted(lines[j]) or not lines[j].strip()):
        j += 1
    return j


def _drop_intros(lines: list[str]) -> list[str]:
    """The lines without quote attributions (and their wrapped second line)."""
    kept: list[str] = []
    skip_next = False
    for i, line in enumerate(lines):
        if skip_next:
            skip_next = False
        elif _is_attribution(lines, i):
            skip_next = not _attribution_text(line.strip())
        else:
            kept.append(line)
    return kept


def _tidy(lines: list[str]) -> str:
    """Drop leading and trailing quotes, the signature and device footers; join the rest."""
    lines = _drop_quote_tail(_drop_leading_quote(lines))
    lines = _drop_signature(lines)
    lines = _drop_trailing(lines, lambda line: not line.strip() or bool(_DEVICE_RE.match(line)))
    return "\n".join(_drop_quote_tail(lines)).strip()


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
