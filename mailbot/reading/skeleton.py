"""The skeleton of a mail: its MIME structure without the bulk, and its fingerprint."""

from __future__ import annotations

import hashlib
import heapq
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

from mailbot.reading.attachments import Piece, line_chunks
from mailbot.reading.limits import ParseError

# Header fields a mail collects on its way (RFC 5321 trace fields, what delivery agents
# add, and an mbox "From " line); they differ between two copies of the same mail.
TRACE_HEADERS = frozenset({"from ", "received", "return-path", "delivered-to", "x-original-to",
                           "x-delivered-to", "envelope-to", "x-envelope-to"})


# Any byte that is not whitespace.
NOT_BLANK_RE = re.compile(rb"[^ \t\r\n\x0b\x0c]")


def fingerprint(raw: bytes) -> str:
    """SHA-256 of a mail without its trace headers, CRLF read as LF (see Message.fingerprint)."""
    digest = hashlib.sha256()
    lines, body = _header_lines(raw)
    trace = False
    for start, end in lines:
        if raw[start:start + 1] not in (b" ", b"\t"):  # a new field, not a continuation
            trace = _field_name(raw[start:end]) in TRACE_HEADERS
        if not trace:
            digest.update(_lf(raw[start:end]))
    for chunk in line_chunks((memoryview(raw)[body:],)):
        digest.update(_lf(chunk))
    return digest.hexdigest()


def _field_name(line: bytes) -> str:
    """The lower-case name of a header line; "from " for an mbox envelope line."""
    if line.startswith(b"From "):
        return "from "
    return line.partition(b":")[0].strip().lower().decode("ascii", "replace")


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


# -- the skeleton: the MIME structure without the bulk -----------------------------------------

# Lines that carry MIME structure (blank, or beginning with "--": a boundary), as many as
# follow each other, found by the line end before the first: a line feed (LF and CRLF mails)
# or a lone carriage return.  Searched for by that one character, which the regex engine
# finds fast; the runs of other lines between them are the bulk of a mail.
_STRUCTURE_LINES = rb"(?:--[^\r\n]*+(?:\r\n|\r|\n|\Z)|\r\n|\r|\n)*+"
_STRUCTURE_AFTER_LF_RE = re.compile(rb"\n(?=--|[\r\n])" + _STRUCTURE_LINES)
_STRUCTURE_AFTER_CR_RE = re.compile(rb"\r(?=--|\r)" + _STRUCTURE_LINES)
# Header lines as the stdlib's feedparser knows them (its headerRE), one or more.
_HEADER_RUN_RE = re.compile(rb"(?:(?:From |[\x21-\x39\x3b-\x7e]*+:|[\t ])[^\r\n]*+"
                            rb"(?:\r\n|\r|\n|\Z))++")
_LINE_END_RE = re.compile(rb"\r\n|\r|\n")
# One header line (feedparser's headerRE), or the end of the header block.
_HEADER_LINE_RE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
# A header field's first line: a name and a colon, perhaps after obsolete whitespace.
_FIELD_RE = re.compile(rb"([\x21-\x39\x3b-\x7e]++)[ \t]*+:")
_BOM = b"\xef\xbb\xbf"
# Lines before a header block that are no part of it: blank, an mbox envelope line (also
# escaped), the title Outlook puts above the headers it shows.
_JUNK_LINE_RE = re.compile(rb"[ \t]*(?:\r\n|\r|\n)|>*From (?![ \t]*:)|"
                           rb"Microsoft Mail Internet Headers")
# At most this many junk lines before the header block are skipped (see _head).
MAX_JUNK_LINES = 3
# Shorter runs of body lines stay in the skeleton as they are (a marker saves nothing).
ELIDE_BYTES = 1024


@dataclass(frozen=True)
class Skeleton:
    """The mail with every long run of body lines replaced by one marker line.

    Only blank lines and lines beginning with "--" carry MIME structure, and after one of
    them (or at the start) header lines may follow.  The first other line begins a body
    (or a preamble): the stdlib parser reads it and every line up to the next blank or
    "--" line as content, whatever they say, so one marker line can stand for all of them.
    ``spans[i]`` is where the lines of marker ``i`` are in the raw mail: start, end, and
    the length of the last line end (which the parser gives to a following boundary).
    The top-level header block is the repaired one of :func:`_head`.
    """

    text: bytes
    token: str
    spans: tuple[tuple[int, int, int], ...]
    raw: memoryview

    @classmethod
    def of(cls, raw: bytes) -> Skeleton:
        """The skeleton of ``raw``, with a marker that occurs nowhere else in what the parser
        reads (bytes that are left out may hold anything).

        Raises ParseError when ``raw`` has no header block at the top: it is no mail.
        """
        head, kept = _head(raw)
        spans = tuple(_elided(raw, kept))
        while True:
            token = secrets.token_hex(8)
            out, kept_from = [head], kept
            for number, (start, end, eol) in enumerate(spans):
                out += [raw[kept_from:start], f"Z{token}Z{number}Z".encode() + raw[end - eol:end]]
                kept_from = end
            out.append(raw[kept_from:])
            text = b"".join(out)
            if text.count(token.encode()) == len(spans):  # a hex token never spans a "Z"
                return cls(text, token, spans, memoryview(raw))

    def pieces(self, payload: str) -> tuple[Piece, ...]:
        """The raw bytes of a part's payload (as the parser gave it), markers put back."""
        out: list[Piece] = []
        pos = 0
        opening = f"Z{self.token}Z"  # occurs nowhere else in the skeleton: every one is a marker
        while (start := payload.find(opening, pos)) >= 0:
            digits = start + len(opening)
            close = payload.index("Z", digits)
            if start > pos:
                out.append(payload[pos:start].encode("ascii", "surrogateescape"))
            begin, end, eol = self.spans[int(payload[digits:close])]
            pos = close + 1
            ending = bytes(self.raw[end - eol:end]).decode("ascii")
            if eol and payload.startswith(ending, pos):
                pos += eol
            else:  # the parser gave the last line end to the boundary after it
                end -= eol
            out.append(self.raw[begin:end])
        if pos < len(payload):
            out.append(payload[pos:].encode("ascii", "surrogateescape"))
        return tuple(out)

    @cached_property
    def linesep(self) -> str:
        """The line end the mail is written with: CRLF, or LF (a file, an MTA pipe)."""
        first = _LINE_END_RE.search(self.raw)
        return first.group().decode() if first else "\r\n"

    def restore(self, payload: str) -> str:
        """A part's payload as the stdlib parser would have given it for the whole mail."""
        return b"".join(self.pieces(payload)).decode("ascii", "surrogateescape")


def _elided(raw: bytes, pos: int) -> Iterator[tuple[int, int, int]]:
    """The runs of body lines from ``pos`` on that a marker stands for: start, end, and the
    length of the last line end (see :class:`Skeleton`).  Header lines at the start of a
    run stay (after a boundary they are a part's headers)."""
    for start, end in _runs(raw, pos):
        if end - start < ELIDE_BYTES:
            continue
        found = _HEADER_RUN_RE.match(raw, start, end)
        start = found.end() if found else start
        if end - start >= ELIDE_BYTES:
            yield start, end, _line_end_length(raw, start, end)


def _runs(raw: bytes, pos: int) -> Iterator[tuple[int, int]]:
    """Where the maximal runs of lines without MIME structure are (start, end), from ``pos``
    (a line start after the first) on: the stretches between the blocks of structure lines.

    A line start follows a line feed or a lone carriage return, so the blocks are found by
    two searches, each one pass over the mail; a block found by both (mixed line ends) ends
    where the other ends, at the first line that is no structure.
    """
    blocks = _STRUCTURE_AFTER_LF_RE.finditer(raw, pos - 1)
    if b"\r" in raw and _STRUCTURE_AFTER_CR_RE.search(raw, pos - 1):  # rare: lone CRs
        blocks = heapq.merge(blocks, _STRUCTURE_AFTER_CR_RE.finditer(raw, pos - 1),
                             key=re.Match.start)
    for block in blocks:
        first = block.start() + 1
        if first < pos:  # inside the block before
            continue
        if first > pos:
            yield pos, first
        pos = block.end()
    if pos < len(raw):
        yield pos, len(raw)


def _head(raw: bytes) -> tuple[bytes, int]:
    """The top-level header block as the parser should read it, and where it ends in ``raw``.

    The block begins after a byte-order mark and at most :data:`MAX_JUNK_LINES` junk lines
    (blank, an mbox "From " or ">From " line, Outlook's title); "Name :" is written "Name:";
    a line that is no field between two fields is read as a continuation (a fold that lost
    its indentation).  It ends at the first blank line or other line, as the stdlib's does.
    Raises ParseError when no field is found.
    """
    pos = len(_BOM) if raw.startswith(_BOM) else 0
    for _ in range(MAX_JUNK_LINES):
        if not _JUNK_LINE_RE.match(raw, pos):
            break
        pos = _next_line(raw, pos)
    if not _FIELD_RE.match(raw, pos):
        raise ParseError("not an RFC 5322 message: no header block at the top "
                         "(a file, a text or noise)")
    out = []
    while pos < len(raw):
        end = _next_line(raw, pos)
        field_ = _FIELD_RE.match(raw, pos, end)
        if field_:
            out.append(field_.group(1) + b":" + raw[field_.end():end])
        elif raw[pos:pos + 1] in (b" ", b"\t"):
            out.append(raw[pos:end])
        elif NOT_BLANK_RE.search(raw, pos, end) and _FIELD_RE.match(raw, end):
            out.append(b" " + raw[pos:end])
        else:
            break
        pos = end
    return b"".join(out), pos


def _next_line(raw: bytes, pos: int) -> int:
    """Where the line after the one starting at ``pos`` starts (or the end of ``raw``)."""
    found = _LINE_END_RE.search(raw, pos)
    return found.end() if found else len(raw)


def _line_end_length(raw: bytes, start: int, end: int) -> int:
    """How many bytes of ``raw[start:end]`` are its last line end (0, 1 or 2)."""
    if end - start >= 2 and raw[end - 2:end] == b"\r\n":
        return 2
    return 1 if raw[end - 1:end] in (b"\r", b"\n") else 0


def _header_lines(raw: bytes) -> tuple[list[tuple[int, int]], int]:
    """The lines of the top-level header block (start, end) and where the body starts."""
    lines, pos = [], 0
    while pos < len(raw) and _HEADER_LINE_RE.match(raw, pos):
        end = _next_line(raw, pos)
        lines.append((pos, end))
        pos = end
    return lines, pos
