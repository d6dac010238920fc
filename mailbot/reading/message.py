"""Parse raw mail bytes into one normalised, immutable message record.

Everything downstream of the spool works on a :class:`Message`; nothing else in
mailbot touches MIME.  Memory stays bounded by the headers, not by the files a mail
carries: the stdlib ``email`` parser only ever sees a *skeleton* of the mail, in which
every long run of body lines is replaced by a one-line marker (:class:`_Skeleton`).  Such
lines cannot change the MIME structure (they are no boundary, no blank line and no
header), so the skeleton parses to the same tree as the mail.  Text parts are put back
together to be read; an attachment stays in the raw bytes and is decoded piece by piece
(:meth:`Attachment.chunks`) when it is written to disk.

A mail is read as its writer meant it, whatever the mail program got wrong:

- Not a mail: bytes without a header block at the top, or whose header block holds none
  of the fields every mail program or MTA writes (:data:`MAIL_FIELDS`), raise
  :class:`ParseError` "not an RFC 5322 message" (binary files, headerless text, noise).
  A header block behind a few junk lines (a byte-order mark, blank lines, an mbox
  ">From " line, Outlook's "Microsoft Mail Internet Headers" title) is found, a field
  written "Name :" is read as "Name:", and a line that lost its folding indentation
  between two fields is read as the fold it was.
- Headers: encoded-words are decoded after an address header's structure is read (an
  encoded "Müller, Bernd" is one name), whitespace between adjacent encoded-words is
  dropped (RFC 2047 6.2), and raw 8-bit bytes are read as UTF-8, else in the charset the
  mail's text turned out to be in, else as Windows-1252.
- Addresses are normalised in one place, :func:`normalise_address`: lower-case, the
  domain in its ASCII (IDNA) form, angle brackets and comments removed.  A sender address
  nobody can deliver to is kept as written (the guards refuse to answer it).
- Text: UTF-8 where the bytes are UTF-8, else the declared charset (an HTML part's
  ``<meta>`` charset too), else a detected one (charset-normalizer) when the declared one
  fails or gives control characters.  Without plain text, the HTML part is the text; what
  only the HTML alternative says (a stub or shortened plain part) is added to it.
- Old encodings: x-uuencode parts and uuencoded blocks in plain text are attachments;
  Outlook's TNEF wrapper (winmail.dat) is unpacked into its files, or kept with a note.
- Forwarded mails (message/rfc822 parts) are attachments and shown in the text as a
  block with their own sender, date and subject (:meth:`Forwarded.view`).
- A file without a name gets one from its type and position ("image-2.png",
  "forwarded-message-1.eml"), the same on every run.

An attachment that cannot be decoded (broken base64, an unknown transfer encoding) is
kept as it came, marked damaged; the rest of the mail is read as usual.
"""

from __future__ import annotations

import binascii
import codecs
import copy
import email
import email.errors
import email.message
import email.policy
import email.utils
import hashlib
import io
import itertools
import mimetypes
import re
import secrets
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.utils import format_datetime, getaddresses
from functools import cached_property

import charset_normalizer
import idna
import tnefparse

from mailbot.reading.html import html_to_text

Part = email.message.Message
Piece = bytes | memoryview


class ParseError(Exception):
    """The mail cannot be turned into a message record; it belongs in quarantine."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what one inbound mail may contain; beyond them it is quarantined."""

    # Largest accepted mail in bytes (the SMTP listener also announces it as SIZE).
    max_message_bytes: int = 25 * 1024 * 1024
    # Most attachments one mail may carry.
    max_attachments: int = 50
    # Largest single attachment in bytes.
    max_attachment_bytes: int = 20 * 1024 * 1024
    # Deepest MIME nesting (multipart inside multipart ...).
    max_mime_depth: int = 12
    # Most header lines in the top-level header block.
    max_headers: int = 500
    # Largest HTML part converted to text, in characters; the rest is cut off.
    max_html_chars: int = 512 * 1024


# How much of an attachment is decoded at a time.
CHUNK_BYTES = 1024 * 1024
# Transfer encodings an attachment is decoded from piece by piece ("" and the rest: as is).
_AS_IS = ("", "7bit", "8bit", "binary")
_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(c for c in range(256) if c not in _BASE64_ALPHABET)


@dataclass(frozen=True)
class _Body:
    """Where an attachment's bytes are in the raw mail, and how they are encoded."""

    pieces: tuple[Piece, ...]
    encoding: str = ""  # "base64", "quoted-printable" or "" (as is)

    def decoded(self) -> Iterator[Piece]:
        """The decoded bytes, at most about :data:`CHUNK_BYTES` at a time.

        Raises ValueError (binascii.Error) where the base64 is broken.
        """
        if self.encoding == "base64":
            return _base64_chunks(self.pieces)
        if self.encoding == "quoted-printable":
            return (binascii.a2b_qp(lines) for lines in _line_chunks(self.pieces))
        return _chunks(self.pieces)


@dataclass(frozen=True)
class Attachment:
    """One attached file: a sanitised display name (never a path), its size and hash.

    The file is not held decoded: :meth:`chunks` decodes it piece by piece from the raw
    mail; :attr:`payload` joins them, for files known to be small.
    """

    filename: str
    content_type: str
    size: int
    sha256: str
    body: _Body = field(repr=False, compare=False)
    # Why the file is kept as it came, undecoded (its name ends in ".damaged"); "" if not.
    damage: str = ""
    # What agents should know about a file kept as it came although it is whole (a TNEF
    # wrapper that could not be unpacked); "" if nothing.
    note: str = ""

    def chunks(self) -> Iterator[Piece]:
        """The file's bytes in pieces of about a megabyte: write a large file with these."""
        return self.body.decoded()

    @property
    def payload(self) -> bytes:
        """The whole file in memory (for a small file; a big one is written with chunks)."""
        return b"".join(self.chunks())


@dataclass(frozen=True)
class Forwarded:
    """A mail forwarded as an attachment (a message/rfc822 part): who wrote it, when, what."""

    # The attachment that holds the forwarded mail as it came.
    filename: str
    from_name: str
    from_addr: str
    subject: str
    date: datetime | None
    text: str

    def view(self) -> str:
        """The forwarded mail as a block of the message text, as mail programs show it inline."""
        sender = f"{self.from_name} <{self.from_addr}>" if self.from_name else self.from_addr
        lines = [FORWARDED_MARKER, f"From: {sender}"]
        if self.date is not None:
            lines.append(f"Date: {format_datetime(self.date)}")
        lines += [f"Subject: {self.subject}", f"Attachment: {self.filename}", "", self.text]
        return "\n".join(lines).strip()


# The first line of a forwarded mail's block in the text (as Thunderbird writes it).
FORWARDED_MARKER = "-------- Forwarded Message --------"


@dataclass(frozen=True)
class Message:
    """The normalised record of one inbound mail."""

    raw: bytes = field(repr=False)
    raw_sha256: str
    from_name: str
    from_addr: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    reply_to: tuple[str, ...]
    subject: str
    message_id: str
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    date: datetime | None
    # The sender's text, then a block for each forwarded mail (Forwarded.view).
    text: str
    html: str = field(repr=False)
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    content_type: str
    defects: tuple[str, ...] = ()
    forwarded: tuple[Forwarded, ...] = ()
    # A delivery report, read in the same parse: the per-recipient field blocks of its
    # message/delivery-status parts (names lower-case) ...
    status_blocks: tuple[tuple[tuple[str, str], ...], ...] = ()
    # ... and the Message-ID / X-Mailbot-Id of the original it returns.
    returned_ids: tuple[str, ...] = ()

    def header(self, name: str) -> str:
        """First value of header ``name`` (case-insensitive), or ``""``."""
        values = self.header_all(name)
        return values[0] if values else ""

    def header_all(self, name: str) -> tuple[str, ...]:
        """All values of header ``name`` in order of appearance."""
        key = name.lower()
        return tuple(v for k, v in self.headers if k == key)

    def has_header(self, name: str) -> bool:
        """Whether header ``name`` is present at all (even empty)."""
        key = name.lower()
        return any(k == key for k, _ in self.headers)

    @property
    def recipients(self) -> tuple[str, ...]:
        """To and Cc addresses together, in order, without repeats."""
        return tuple(dict.fromkeys(self.to + self.cc))

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the whole mail without the trace headers each delivery adds.

        Two copies of one mail delivered to two addresses, or along two paths, differ only
        in :data:`TRACE_HEADERS` (and perhaps in CRLF or LF line ends): they have the same
        fingerprint.  Two mails that differ anywhere else (an attachment) do not.
        """
        return fingerprint(self.raw)

    @property
    def damaged(self) -> tuple[Attachment, ...]:
        """The attachments kept as they came because they could not be decoded."""
        return tuple(a for a in self.attachments if a.damage)

    @property
    def noted(self) -> tuple[Attachment, ...]:
        """The attachments that carry a note for agents (see :attr:`Attachment.note`)."""
        return tuple(a for a in self.attachments if a.note)


# Header fields a mail collects on its way (RFC 5321 trace fields, what delivery agents
# add, and an mbox "From " line); they differ between two copies of the same mail.
TRACE_HEADERS = frozenset({"from ", "received", "return-path", "delivered-to", "x-original-to",
                           "x-delivered-to", "envelope-to", "x-envelope-to"})
# A header block holds at least one of these fields, or it is no mail: every mail program
# writes some of them (a script's minimal mail: From, To, Subject) and every MTA adds a
# trace field; a MIME part on its own (Content-Type only), a text or a binary file has none.
MAIL_FIELDS = ("from", "sender", "reply-to", "to", "cc", "date", "message-id", "subject",
               "in-reply-to", "references", "received", "return-path")

_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_NOT_BLANK_RE = re.compile(rb"[^ \t\r\n\x0b\x0c]")


def parse(raw: bytes, limits: Limits | None = None) -> Message:
    """Turn raw bytes into a :class:`Message`, or raise :class:`ParseError` with the reason."""
    limits = limits or Limits()
    if not _NOT_BLANK_RE.search(raw):
        raise ParseError("empty message")
    if len(raw) > limits.max_message_bytes:
        raise ParseError(f"message is {len(raw)} bytes, over the limit of "
                         f"{limits.max_message_bytes} (limits.max_message_bytes)")
    skeleton = _Skeleton.of(raw)
    try:
        tree = email.message_from_bytes(skeleton.text, policy=email.policy.compat32)
        _check_tree(tree, limits)
        return _message(raw, tree, skeleton, limits)
    except (ValueError, LookupError, RecursionError, AttributeError, TypeError,
            IndexError, email.errors.MessageError) as exc:
        # seen: a NUL in a charset name, a multipart whose parameters cannot be read
        raise ParseError(f"the mail cannot be read: {type(exc).__name__}: {exc}") from exc


def _message(raw: bytes, tree: Part, skeleton: _Skeleton, limits: Limits) -> Message:
    reading = _Reading(skeleton, limits)
    reading.walk(tree)
    hint = reading.charset
    headers = _headers(tree, hint)
    from_name, from_addr = _sender(_raw_header(tree, "from"), hint)
    attachments = reading.attachments()
    forwarded = tuple(_forwarded(part, name, reading, hint) for part, name in reading.forwarded)
    html = "\n".join(reading.html(0))
    text = "\n\n".join(t for t in (reading.text(0), *(f.view() for f in forwarded)) if t)
    status_blocks, returned_ids = _delivery_report(tree, skeleton)
    return Message(
        raw=raw,
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        from_name=from_name,
        from_addr=from_addr,
        to=_addresses(tree, "to", hint),
        cc=_addresses(tree, "cc", hint),
        reply_to=_addresses(tree, "reply-to", hint),
        subject=_one_line(_first(headers, "subject")),
        message_id=next(iter(message_ids(_first(headers, "message-id"))), ""),
        in_reply_to=message_ids(_first(headers, "in-reply-to")),
        references=message_ids(" ".join(v for k, v in headers if k == "references")),
        date=_date(_first(headers, "date")),
        text=text,
        html=html,
        attachments=attachments,
        headers=headers,
        content_type=tree.get_content_type(),
        defects=tuple(reading.defects),
        forwarded=forwarded,
        status_blocks=status_blocks,
        returned_ids=returned_ids,
    )


# Headers of a returned original that name it, most specific first.
_RETURNED_ID_HEADERS = ("message-id", "x-mailbot-id")


def _delivery_report(tree: Part, skeleton: _Skeleton) -> tuple[tuple, tuple[str, ...]]:
    """What a delivery report says (RFC 3464), from this parse: the per-recipient field
    blocks of its message/delivery-status parts, and the ids of the returned original."""
    if tree.get_content_type() != "multipart/report":
        return (), ()
    blocks, ids = [], []
    for part in tree.walk():
        kind = part.get_content_type()
        if kind == "message/delivery-status" and isinstance(part.get_payload(), list):
            blocks += [tuple((k.lower(), " ".join(str(v).split())) for k, v in block.items())
                       for block in part.get_payload()
                       if isinstance(block, Part) and block.get("Action")]
        elif kind in _FORWARDED_TYPES and isinstance(part.get_payload(), list):
            ids += _returned_ids(part.get_payload()[0] if part.get_payload() else None)
        elif kind == "text/rfc822-headers":
            data = b"".join(bytes(p) for p in _decoded_pieces(part, skeleton))
            ids += _returned_ids(email.message_from_bytes(data, policy=email.policy.compat32))
    return tuple(blocks), tuple(dict.fromkeys(ids))


def _decoded_pieces(part: Part, skeleton: _Skeleton) -> list[Piece]:
    """A small leaf part's bytes, transfer encoding undone (nothing when it is broken)."""
    encoding = _transfer_encoding(part)
    body = _Body(skeleton.pieces(_raw_payload(part)),
                 encoding if encoding in ("base64", "quoted-printable") else "")
    try:
        return list(body.decoded())
    except ValueError:
        return []


def _returned_ids(headers: Part | None) -> list[str]:
    if headers is None:
        return []
    return [found for name in _RETURNED_ID_HEADERS
            for found in message_ids(str(headers.get(name, "")))]


def message_ids(value: str) -> tuple[str, ...]:
    """Message-IDs in a header value, without angle brackets, in order."""
    return tuple(dict.fromkeys(_MSGID_RE.findall(value or "")))


def base_address(address: str) -> str:
    """An address without its +tag, lower-case: support+t1-ab@x -> support@x."""
    local, _, domain = address.lower().partition("@")
    return f"{local.partition('+')[0]}@{domain}"


def normalise_address(address: str) -> str:
    """An address as mailbot stores and compares it, wherever it comes from (a mail, an import).

    "Jana Kurz <Jana.Kurz@Kunde.EXAMPLE> (work)" -> "jana.kurz@kunde.example": the display
    name, angle brackets and comments go, the whole address is lower-case (as mailbot always
    compared addresses), Unicode in NFC, and an internationalised domain is written in its
    ASCII (IDNA) form, which every relay can deliver to: "jana@müller.example" and
    "jana@xn--mller-kva.example" are one address.  An address with broken quoting is kept
    as written (lower-case), never repaired into another one.
    """
    address = unicodedata.normalize("NFC", address).strip()
    if _balanced(address) and any(c in address for c in "<>()"):
        found = [a for _, a in getaddresses([address]) if a]
        address = found[0] if len(found) == 1 else address
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    return f"{local.lower()}@{normalise_domain(domain)}"


def normalise_domain(domain: str) -> str:
    """A mail domain as mailbot stores and compares it: lower-case ASCII, IDNA for Unicode."""
    domain = unicodedata.normalize("NFC", domain).strip().rstrip(".")
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return domain.lower()


def safe_filename(name: str, content_type: str, index: int) -> str:
    """A display filename that can never act as a path (no separators, no dots first).

    A part without a usable name is named by its type and its position among the mail's
    attachments, the same on every run: "image-2.png", "forwarded-message-1.eml".
    """
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name or ""))[-1]
    base = _UNSAFE_NAME_RE.sub("_", base).strip(" .")[:200]
    if base:
        return base
    content_type = (content_type or "").lower()
    stem = _NAME_STEMS.get(content_type) or _NAME_STEMS.get(content_type.partition("/")[0])
    return f"{stem or 'attachment'}-{index}{_extension(content_type)}"


# Names for parts without one, by type or main type.
_NAME_STEMS = {"message/rfc822": "forwarded-message", "message/global": "forwarded-message",
               "text/calendar": "invitation", "image": "image", "audio": "audio",
               "video": "video"}
# Extensions of types the built-in table lacks.
_EXTENSIONS = {"text/calendar": ".ics", "application/pgp-signature": ".asc",
               "application/ms-tnef": ".dat", "application/vnd.ms-tnef": ".dat",
               "message/global": ".eml", "message/delivery-status": ".txt",
               "text/rfc822-headers": ".txt"}
# The standard library's built-in types only (never /etc/mime.types): names stay stable.
_TYPES = mimetypes.MimeTypes()
# Office files, common in support mail, which the built-in table lacks.
_OFFICE_TYPES = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".msg": "application/vnd.ms-outlook"}


def _extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or _TYPES.guess_extension(content_type) or ".bin"


def _type_of(filename: str) -> str:
    """The content type a file name suggests (built-in table), else application/octet-stream."""
    extension = "." + filename.rpartition(".")[2].lower()
    return (_OFFICE_TYPES.get(extension) or _TYPES.guess_type(filename)[0]
            or "application/octet-stream")


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
    for chunk in _line_chunks((memoryview(raw)[body:],)):
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

# A maximal run of lines that carry no MIME structure: none is blank, none begins with
# "--" (a boundary).  Possessive, because a backtracking repeat keeps state for every line.
_RUN_RE = re.compile(rb"(?<![^\r\n])(?:(?:[^\r\n-]|-(?!-))[^\r\n]*+(?:\r\n|\r|\n|\Z))++")
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
class _Skeleton:
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
    def of(cls, raw: bytes) -> _Skeleton:
        """The skeleton of ``raw``, with a marker that occurs nowhere in it.

        Raises ParseError when ``raw`` has no header block at the top: it is no mail.
        """
        token = secrets.token_hex(8)
        while token.encode() in raw:
            token = secrets.token_hex(8)
        head, kept = _head(raw)
        out, spans = [head], []
        for run in _RUN_RE.finditer(raw, kept):
            if run.end() - run.start() < ELIDE_BYTES:
                continue
            found = _HEADER_RUN_RE.match(raw, run.start(), run.end())
            start, end = found.end() if found else run.start(), run.end()
            if end - start < ELIDE_BYTES:
                continue
            eol = _line_end_length(raw, start, end)
            out += [raw[kept:start], f"Z{token}Z{len(spans)}Z".encode() + raw[end - eol:end]]
            spans.append((start, end, eol))
            kept = end
        out.append(raw[kept:])
        return cls(b"".join(out), token, tuple(spans), memoryview(raw))

    @cached_property
    def _marker(self) -> re.Pattern[str]:
        return re.compile(rf"Z{self.token}Z(\d+)Z")

    def pieces(self, payload: str) -> tuple[Piece, ...]:
        """The raw bytes of a part's payload (as the parser gave it), markers put back."""
        out: list[Piece] = []
        pos = 0
        for found in self._marker.finditer(payload):
            if found.start() > pos:
                out.append(payload[pos:found.start()].encode("ascii", "surrogateescape"))
            start, end, eol = self.spans[int(found.group(1))]
            pos = found.end()
            ending = bytes(self.raw[end - eol:end]).decode("ascii")
            if eol and payload.startswith(ending, pos):
                pos += eol
            else:  # the parser gave the last line end to the boundary after it
                end -= eol
            out.append(self.raw[start:end])
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
        elif _NOT_BLANK_RE.search(raw, pos, end) and _FIELD_RE.match(raw, end):
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


# -- reading the tree ----------------------------------------------------------------------------

# Types of a part that holds a whole mail: a forwarded one.
_FORWARDED_TYPES = ("message/rfc822", "message/global")
# Types of Outlook's rich-text wrapper (a "winmail.dat").
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")


@dataclass(frozen=True)
class _File:
    """A file found in the mail, before it is measured: name, type, bytes, why damaged."""

    name: str
    content_type: str
    body: _Body
    damage: str = ""


class _Reading:
    """One walk over the MIME tree: texts (per mail: 0 is the mail itself, else the id of a
    forwarded mail's part), files in order, and defects.

    A leaf part is text when it is text/plain or text/html and neither named nor attached;
    every other leaf is a file (inline images without a name too), and a forwarded mail
    (message/rfc822) is one file whose own texts make its block.  A named inline text is
    both (as mail programs show it).
    """

    def __init__(self, skeleton: _Skeleton, limits: Limits) -> None:
        self.skeleton = skeleton
        self.limits = limits
        self.defects: list[str] = []
        # Per mail: its plain and its HTML texts, in order.
        self.texts: dict[int, tuple[list[str], list[str]]] = {}
        # The files in order: a part (read after the walk) or a file cut out of a text.
        self.files: list[Part | _File] = []
        # The ids of the forwarded mails' parts among the files.
        self.forwarded_parts: set[int] = set()
        # Each forwarded mail's part and the name of the attachment that holds it.
        self.forwarded: list[tuple[Part, str]] = []
        # Codecs that read 8-bit text other than UTF-8, in order.
        self.charsets: list[str] = []

    @property
    def charset(self) -> str:
        """The charset the mail's own 8-bit text was in (a hint for raw 8-bit headers)."""
        return self.charsets[0] if self.charsets else ""

    def walk(self, tree: Part) -> None:
        """Read every part in order: texts now, files listed (and counted) for later."""
        for part, owner, inside_attachment in _parts(tree):
            self.defects += [type(d).__name__ for d in part.defects]
            disposition = (part.get_content_disposition() or "").lower()
            if part is not tree and part.get_content_type() in _FORWARDED_TYPES:
                self.files.append(part)
                self.forwarded_parts.add(id(part))
                continue
            if part.is_multipart():
                if disposition == "attachment":
                    self.files.append(part)
                continue
            text_type = part.get_content_type() in ("text/plain", "text/html")
            named = bool(_filename(part, ""))
            if not text_type or named or disposition == "attachment" or _uuencoded(part):
                self.files.append(part)
                if not (text_type and named and disposition == "inline"
                        and not inside_attachment):
                    continue
            self._read_text(part, owner)
        if len(self.files) > self.limits.max_attachments:
            raise ParseError(f"{len(self.files)} attachments, over the limit of "
                             f"{self.limits.max_attachments} (limits.max_attachments)")

    def text(self, owner: int) -> str:
        """The text of the mail (0) or of a forwarded one: its plain text, else its HTML's."""
        plain, html = self.texts.get(owner, ([], []))
        return _body_text(plain, "\n".join(html), self.limits)

    def html(self, owner: int) -> list[str]:
        """The HTML parts of the mail (0) or of a forwarded one."""
        return self.texts.get(owner, ([], []))[1]

    def attachments(self) -> tuple[Attachment, ...]:
        """Every file measured (decoded once, to hash it), TNEF wrappers unpacked."""
        found: list[Attachment] = []
        for entry in self.files:
            file = self._file(entry) if isinstance(entry, Part) else entry
            attachment = self._attachment(file, len(found) + 1)
            if id(entry) in self.forwarded_parts:
                self.forwarded.append((entry, attachment.filename))
            found += self._unpacked(attachment)
        if len(found) > self.limits.max_attachments:
            raise ParseError(f"{len(found)} attachments, over the limit of "
                             f"{self.limits.max_attachments} (limits.max_attachments)")
        return tuple(found)

    def _read_text(self, part: Part, owner: int) -> None:
        """A plain or HTML part's text, put back together from the raw mail and decoded.

        Uuencoded blocks in a plain text are cut out of it and become files.  The tree keeps
        its markers: an attached mail is written out from it as it came.
        """
        whole = copy.copy(part)
        whole.set_payload(self.skeleton.restore(_raw_payload(part)))
        text = self._decode_text(whole)
        plain, html = self.texts.setdefault(owner, ([], []))
        if part.get_content_subtype() == "html":
            if text:
                html.append(text)
            return
        text, blocks = _uu_blocks(text)
        self.files += blocks
        if text:
            plain.append(text)

    def _decode_text(self, part: Part) -> str:
        """A text part as text: UTF-8, its declared charset, a detected one (module docs)."""
        raw_text = _raw_payload(part)
        declared = part.get_content_charset() or ""
        if (_transfer_encoding(part) in _AS_IS and raw_text.isascii()
                and _ascii_compatible(declared)):
            return raw_text
        payload = part.get_payload(decode=True)
        if not payload:
            return ""
        candidates = ["utf-8", declared]
        if part.get_content_subtype() == "html":
            candidates.append(_meta_charset(payload))
        text, codec = _read_bytes(payload, candidates, detect=True)
        if codec not in ("ascii", "utf-8"):
            self.charsets.append(codec)
        if codec not in _codecs_for(declared or "ascii"):
            self.defects.append(f"CharsetDecodeDefect: {part.get_content_type()} "
                                f"charset {declared!r} does not fit; read as {codec}")
        return text

    def _file(self, part: Part) -> _File:
        """A file part: its decoded name, its type, where its bytes are, or why they cannot be."""
        name = _filename(part, self.charset)
        content_type = part.get_content_type().lower()
        if part.is_multipart():  # a forwarded mail or an attached container: its parts
            body, damage = self._container(part)
            return _File(name, content_type, body, damage)
        pieces = self.skeleton.pieces(_raw_payload(part))
        encoding = _transfer_encoding(part)
        if encoding in ("base64", "quoted-printable"):
            return _File(name, content_type, _Body(pieces, encoding))
        if _uuencoded(part):
            block = _uudecoded(b"".join(pieces))
            if block is None:
                return _File(name, content_type, _Body(pieces), "broken uuencode")
            begun, data = block
            return _File(name or begun, content_type if name else _type_of(begun),
                         _Body((data,)))
        if encoding in _AS_IS:
            return _File(name, content_type, _Body(pieces))
        return _File(name, content_type, _Body(pieces),
                     f"unknown transfer encoding {encoding!r}")

    def _attachment(self, file: _File, index: int) -> Attachment:
        filename = safe_filename(file.name, file.content_type, index)
        body, damage, content_type = file.body, file.damage, file.content_type
        if not damage:
            try:
                size, digest = _measure(body.decoded())
            except ValueError as exc:  # binascii.Error: broken base64
                damage = f"broken base64 ({exc})"
        if damage:
            body = _Body(body.pieces)
            size, digest = _measure(body.decoded())
            filename, content_type = f"{filename}.damaged", "application/octet-stream"
            self.defects.append(f"AttachmentDamaged: {filename}: {damage}")
        if size > self.limits.max_attachment_bytes:
            raise ParseError(f"attachment {index} is {size} bytes, over the limit of "
                             f"{self.limits.max_attachment_bytes} "
                             "(limits.max_attachment_bytes)")
        return Attachment(filename=filename, content_type=content_type, size=size,
                          sha256=digest, damage=damage, body=body)

    def _unpacked(self, attachment: Attachment) -> list[Attachment]:
        """A TNEF wrapper's files in its place; the wrapper itself, with a note, if none."""
        if attachment.damage or not (attachment.content_type in _TNEF_TYPES
                                     or attachment.filename.lower() == "winmail.dat"):
            return [attachment]
        files, problem = _tnef_files(attachment.payload)
        if problem:
            self.defects.append(f"TnefNotUnpacked: {attachment.filename}: {problem}")
            note = (f"Outlook's TNEF wrapper {attachment.filename} {problem}: kept as it came "
                    "(tools like tnef or winmail-opener read it)")
            return [replace(attachment, note=note)]
        out = []
        for name, data in files:
            content_type = _type_of(name)
            out.append(Attachment(
                filename=safe_filename(name, content_type, len(out) + 1), size=len(data),
                content_type=content_type, sha256=hashlib.sha256(data).hexdigest(),
                body=_Body((data,))))
        return out

    def _container(self, part: Part) -> tuple[_Body, str]:
        """An attached mail (message/rfc822) or multipart: its parts written out again, with
        the mail's line ends (byte for byte as sent, as far as the parser kept it)."""
        out, policy = io.BytesIO(), email.policy.compat32.clone(linesep=self.skeleton.linesep)
        try:
            for child in part.get_payload():
                BytesGenerator(out, mangle_from_=False, maxheaderlen=0,
                               policy=policy).flatten(child)
        except (LookupError, UnicodeError, ValueError, TypeError) as exc:
            return _Body(()), f"the attached parts cannot be written out: {exc}"
        written = out.getvalue().decode("ascii", "surrogateescape")
        return _Body(self.skeleton.pieces(written)), ""


def _parts(tree: Part) -> list[tuple[Part, int, bool]]:
    """Every part in order: which mail it belongs to (0, or the id of the forwarded mail's
    part) and whether it sits inside an attached container.

    RFC 2183 applies a disposition to a whole container: the named inline texts inside an
    attached one are not shown as the mail's text.  A forwarded mail begins afresh.
    """
    parts, inside, owners = [], set(), {}
    for part in tree.walk():
        within, owner = id(part) in inside, owners.get(id(part), 0)
        parts.append((part, owner, within))
        if not part.is_multipart():
            continue
        children = part.get_payload()
        if part is not tree and part.get_content_type() in _FORWARDED_TYPES:
            owners.update((id(child), id(part)) for child in children)
            continue
        owners.update((id(child), owner) for child in children)
        disposition = part.get_content_disposition()
        blocks = disposition not in (None, "inline") or (
            disposition != "inline" and bool(part.get_filename()))
        if within or blocks:
            inside.update(id(child) for child in children)
    return parts


def _forwarded(part: Part, filename: str, reading: _Reading, hint: str) -> Forwarded:
    """The forwarded mail of a message/rfc822 part: its sender, subject, date and text."""
    inner = part.get_payload(0)
    from_name, from_addr = _sender(_raw_header(inner, "from"), hint)
    headers = _headers(inner, hint)
    return Forwarded(filename=filename, from_name=from_name, from_addr=from_addr,
                     subject=_one_line(_first(headers, "subject")),
                     date=_date(_first(headers, "date")), text=reading.text(id(part)))


def _filename(part: Part, hint: str) -> str:
    """The decoded file name (RFC 2231, encoded-words, raw 8-bit bytes as the headers)."""
    view = email.message.Message()
    for name, value in part.raw_items():
        if name.lower() in ("content-type", "content-disposition"):
            view[name] = _raw_text(_unfold(str(value)), hint)
    return decode_header_value(view.get_filename() or "", hint)


def _raw_payload(part: Part) -> str:
    """A leaf part's payload as parsed: 8-bit bytes as surrogates, no charset applied.

    (``get_payload()`` would decode those bytes with the part's charset, lossily.)
    """
    return part._payload


def _transfer_encoding(part: Part) -> str:
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _measure(chunks: Iterable[Piece]) -> tuple[int, str]:
    """Size and SHA-256 of a stream of bytes."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _chunks(pieces: Iterable[Piece]) -> Iterator[Piece]:
    """The pieces cut to at most :data:`CHUNK_BYTES` each (views, no copies)."""
    for piece in pieces:
        for start in range(0, len(piece), CHUNK_BYTES):
            yield piece[start:start + CHUNK_BYTES]


def _line_chunks(pieces: Iterable[Piece]) -> Iterator[bytes]:
    """The bytes in chunks that end at a line feed (or the end): whole lines each."""
    rest = b""
    for chunk in _chunks(pieces):
        data = rest + bytes(chunk)
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        rest = data[cut:]
    if rest:
        yield rest


def _base64_chunks(pieces: Iterable[Piece]) -> Iterator[bytes]:
    """Base64 decoded a chunk at a time, as the stdlib decodes it whole (non-strict).

    Characters outside the alphabet are skipped; chunks are cut at whole groups of four.
    Broken base64 raises binascii.Error: a length that cannot be decoded, wrong padding,
    or data after the padding (which a whole decode would drop without a word).
    """
    carry, padded = b"", False
    for chunk in _chunks(pieces):
        clean = bytes(chunk).translate(None, _NOT_BASE64)
        pad = 0 if padded else clean.find(b"=")
        if pad >= 0:
            if clean[pad:].strip(b"="):
                raise binascii.Error("data after the padding")
            if not padded:
                padded = True
                yield binascii.a2b_base64(carry + clean)
            continue
        data = carry + clean
        whole = len(data) - len(data) % 4
        yield binascii.a2b_base64(data[:whole])
        carry = data[whole:]
    if carry and not padded:
        yield binascii.a2b_base64(carry)


# -- old encodings: uuencode and TNEF --------------------------------------------------------------

# The first line of a uuencoded file: "begin 644 name".
_UU_BEGIN_RE = re.compile(r"begin [0-7]{3,4} ([^\r\n]+)")
# One line of uuencoded data (a length character and up to 60 characters of data).
_UU_LINE_RE = re.compile(r"[\x20-\x60]{1,62}")


def _uuencoded(part: Part) -> bool:
    return _transfer_encoding(part) in _UUENCODE


def _uu_blocks(text: str) -> tuple[str, list[_File]]:
    """A plain text without its uuencoded blocks, and the files they hold, in order.

    A block is "begin <mode> <name>", lines of uuencoded data and "end" (the form of
    ``uuencode`` and of old mail programs); one that does not decode stays in the text.
    """
    if "begin " not in text:
        return text, []
    lines = text.split("\n")
    kept, files, pos = [], [], 0
    while pos < len(lines):
        block = _uu_block(lines, pos)
        if block is None:
            kept.append(lines[pos])
            pos += 1
            continue
        end, name, data = block
        files.append(_File(name, _type_of(name), _Body((data,))))
        blank_around = kept and not kept[-1].strip() and end < len(lines)
        pos = end + 1 if blank_around and not lines[end].strip() else end
    return "\n".join(kept).strip("\n"), files


def _uu_block(lines: list[str], pos: int) -> tuple[int, str, bytes] | None:
    """The block beginning at line ``pos``: the line after its "end", its name and bytes;
    None if no block begins there or it does not decode."""
    begun = _UU_BEGIN_RE.fullmatch(lines[pos].rstrip())
    if begun is None:
        return None
    for end in range(pos + 1, len(lines)):
        line = lines[end].rstrip()
        if line == "end":
            try:
                data = b"".join(_uu_line(encoded.rstrip().encode("ascii"))
                                for encoded in lines[pos + 1:end] if encoded.strip())
            except (binascii.Error, UnicodeError):
                return None
            return end + 1, begun.group(1).strip(), data
        if line and not _UU_LINE_RE.fullmatch(line):
            return None
    return None


def _uudecoded(encoded: bytes) -> tuple[str, bytes] | None:
    """The name and bytes of the file in an x-uuencode part, or None if it is broken."""
    lines = encoded.decode("latin-1").splitlines()
    begins = (i for i, line in enumerate(lines) if _UU_BEGIN_RE.fullmatch(line.rstrip()))
    block = _uu_block(lines, next(begins, len(lines) - 1)) if lines else None
    return block[1:] if block else None


def _uu_line(line: bytes) -> bytes:
    """One line of uuencoded data; extra characters some encoders add at the end are cut."""
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        length = (((line[0] - 32) & 63) * 4 + 5) // 3
        return binascii.a2b_uu(line[:length])


def _tnef_files(data: bytes) -> tuple[list[tuple[str, bytes]], str]:
    """The files in an Outlook TNEF wrapper (name, bytes), or why there are none."""
    try:
        wrapper = tnefparse.TNEF(data, do_checksum=False)
        files = [(_tnef_name(a), a.data) for a in wrapper.attachments if a.data]
    except Exception as exc:  # a third-party reader of hostile bytes: any error
        return [], f"cannot be unpacked ({type(exc).__name__}: {exc})"
    if not files:
        return [], "holds no files (only Outlook's formatting)"
    return files, ""


def _tnef_name(attachment: tnefparse.TNEFAttachment) -> str:
    """A TNEF file's long name, else its short one (bytes read as UTF-8, else Windows-1252)."""
    try:
        name = attachment.long_filename()
    except UnicodeError:  # a short name in a legacy code page
        name = attachment._name
    if isinstance(name, bytes):
        name = _read_bytes(name, ["utf-8"])[0]
    return str(name).strip("\x00")


# -- headers: encoded-words, raw 8-bit bytes, addresses --------------------------------------------

_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK_RE = re.compile(r"[\r\n]+")
# Bytes the parser could not read as ASCII (surrogate-escaped), one run at a time.
_RAW_BYTES_RE = re.compile(r"[\udc80-\udcff]+")


def decode_header_value(value: str, hint: str = "") -> str:
    """A header value as its writer meant it: unfolded, encoded-words decoded, raw 8-bit
    bytes (surrogate-escaped, as the parser gives them) read as text (:func:`_raw_text`).

    Whitespace between adjacent encoded-words is dropped (RFC 2047 6.2), and adjacent
    words in one charset are decoded together: a character split across two of them (as
    some webmailers write) comes out whole.
    """
    value = _unfold(value)
    out: list[str] = []
    words: list[tuple[str, bytes]] = []
    pos = 0
    for found in _ENCODED_WORD_RE.finditer(value):
        word = _encoded_word(found)
        if word is None:  # not decodable: stays as it is written
            continue
        between = value[pos:found.start()]
        if between and not (words and between.isspace()):
            out += [_words(words, hint), _raw_text(between, hint)]
            words = []
        words.append(word)
        pos = found.end()
    out += [_words(words, hint), _raw_text(value[pos:], hint)]
    return "".join(out)


def _encoded_word(found: re.Match[str]) -> tuple[str, bytes] | None:
    """The charset and bytes of one encoded-word (RFC 2231 language dropped), or None."""
    charset = found.group(1).partition("*")[0]
    data = found.group(3).encode("utf-8", "surrogateescape")
    if found.group(2) in "qQ":
        return charset, binascii.a2b_qp(data, header=True)
    try:
        return charset, binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return None


def _words(words: list[tuple[str, bytes]], hint: str) -> str:
    """Adjacent encoded-words as text, the bytes of each run in one charset decoded together."""
    return "".join(_read_bytes(b"".join(data for _, data in run), [charset, "utf-8", hint])[0]
                   for charset, run in itertools.groupby(words, key=lambda w: w[0].lower()))


def _raw_text(value: str, hint: str) -> str:
    """A header value with its raw 8-bit bytes read as text: UTF-8, else in ``hint`` (the
    charset the mail's text was in: old mail programs write both in theirs), else as
    Windows-1252 (short header text defeats charset detection)."""
    if value.isascii():
        return value
    whole = _try_decode(value.encode("utf-8", "surrogateescape"), "utf-8")
    if whole is not None:
        return whole
    return _RAW_BYTES_RE.sub(
        lambda run: _read_bytes(run.group().encode("utf-8", "surrogateescape"),
                                ["utf-8", hint])[0], value)


def _unfold(value: str) -> str:
    return _LINE_BREAK_RE.sub(" ", _FOLD_RE.sub("", value))


def _headers(part: Part, hint: str) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), decode_header_value(str(v), hint)) for k, v in part.raw_items())


def _raw_header(part: Part, name: str) -> str:
    """The first value of header ``name`` as written (encoded-words and raw bytes kept)."""
    return next((str(v) for k, v in part.raw_items() if k.lower() == name), "")


def _first(headers: tuple[tuple[str, str], ...], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _address_pairs(value: str, hint: str) -> list[tuple[str, str]]:
    """The (name, address) pairs of an address header value.

    The structure is read first, then the names are decoded: an encoded-word that holds a
    comma ("Müller, Bernd") stays one name.  A name with a comma written without quotes
    ("Müller, Bernd <b@x>", as sloppy mailers do) is put back together.
    """
    out: list[tuple[str, str]] = []
    for name, address in getaddresses([_raw_text(_unfold(value), hint)]):
        name = _one_line(decode_header_value(name, hint))
        if out and name and not out[-1][0] and out[-1][1] and "@" not in out[-1][1]:
            name = f"{out.pop()[1]}, {name}"
        out.append((name, address))
    return out


def _sender(value: str, hint: str) -> tuple[str, str]:
    """Name and address of a From header value.

    An address nobody can deliver to (no domain as in "root", control characters) is kept
    as written, and so is the whole value when its quoting is broken: the ticket shows what
    came, and the guards refuse to answer it.  Words without an address ("Kunde ohne
    Adresse") are a name.  The first mailbox with an address counts.
    """
    text = _raw_text(_unfold(value), hint).strip()
    if _balanced(text) and not any(c in text for c in "<@") and len(text.split()) > 1:
        return _one_line(decode_header_value(text, hint)), ""
    if not _balanced(text) or not any(c in text for c in "<@"):
        return "", normalise_address(text)
    pairs = _address_pairs(value, hint)
    for name, address in pairs:
        if address.strip():
            return name, normalise_address(address)
    return (pairs[0][0] if pairs else ""), ""


def _addresses(part: Part, name: str, hint: str) -> tuple[str, ...]:
    """The normalised addresses of every header ``name`` (To, Cc, Reply-To), without repeats."""
    found = (normalise_address(address) for k, v in part.raw_items() if k.lower() == name
             for _, address in _address_pairs(str(v), hint))
    return tuple(dict.fromkeys(a for a in found if "@" in a))


def _balanced(value: str) -> bool:
    """Whether the quotes, comments and angle brackets of an address value are all closed."""
    quoted, escaped, comment, angle = False, False, 0, 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and not comment:
            quoted = not quoted
        elif quoted:
            continue
        elif char in "()":
            comment += 1 if char == "(" else -1
        elif char in "<>" and not comment:
            angle += 1 if char == "<" else -1
        if comment < 0 or angle < 0 or angle > 1:
            return False
    return not quoted and comment == 0 and angle == 0


def _date(value: str) -> datetime | None:
    """The Date header as an aware datetime (UTC when it names no zone), or None."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# -- charsets ------------------------------------------------------------------------------------

# Characters no text means to contain: what a wrong charset makes of bytes (C1 controls are
# Windows-1252 read as Latin-1; NULs are UTF-16 read as UTF-8).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_META_CHARSET_RE = re.compile(rb"<meta[^>]{0,300}?charset\s*=\s*[\"']?\s*([\w.:-]{1,40})",
                              re.IGNORECASE)
# Codecs that read plain ASCII bytes as something else (escapes, "+" runs, NULs).
_NOT_ASCII_COMPATIBLE = ("utf-7", "utf-16", "utf-32", "iso2022", "hz")
# How much of a text charset detection looks at.
DETECT_BYTES = 64 * 1024
# Codecs under which almost any bytes decode (see _detected).
_WIDE_CODECS = ("shift_jis", "shift_jis_2004", "shift_jisx0213", "cp932", "euc_jp",
                "euc_jis_2004", "euc_jisx0213", "gb2312", "gbk", "gb18030", "big5", "big5hkscs",
                "cp950", "euc_kr", "cp949", "johab", "utf_16", "utf_16_le", "utf_16_be",
                "utf_32", "utf_32_le", "utf_32_be")


def _read_bytes(data: bytes, candidates: list[str], detect: bool = False) -> tuple[str, str]:
    """``data`` as text and the codec that read it.

    The first candidate charset that reads it without control characters wins; else bytes
    that are mostly UTF-8 are read as UTF-8 (a few broken sequences replaced); else, with
    ``detect``, a charset detected by charset-normalizer; else the first candidate that read
    it at all; else Windows-1252 (undefined bytes replaced).
    """
    fallback = None
    for codec in dict.fromkeys(c for label in candidates if label for c in _codecs_for(label)):
        text = _try_decode(data, codec)
        if text is None:
            continue
        if not _CONTROL_RE.search(text):
            return text, codec
        fallback = fallback or (text, codec)
    text = data.decode("utf-8", "replace")
    broken = text.count("\ufffd")
    if len(text) - len(text.encode("ascii", "ignore")) - broken >= 3 * broken:
        return text, "utf-8"
    found = _detected(data) if detect else None
    if found is not None and not _CONTROL_RE.search(found[0]):
        return found
    return fallback or (data.decode("cp1252", "replace"), "cp1252")


def _detected(data: bytes) -> tuple[str, str] | None:
    """``data`` read in the charset charset-normalizer finds in its first bytes, or None.

    Without a language recognised in the result, detection runs again without the East
    Asian multi-byte codecs and UTF-16/32, in whose wide byte ranges a short single-byte
    text (KOI8-R, Windows-1251) also looks valid; a result with a language wins.
    """
    sample = data[:DETECT_BYTES]
    if len(data) > DETECT_BYTES and b"\n" in sample:
        sample = sample[:sample.rindex(b"\n") + 1]
    match = charset_normalizer.from_bytes(sample).best()
    if match is not None and not match.coherence:
        again = charset_normalizer.from_bytes(sample, cp_exclusion=list(_WIDE_CODECS)).best()
        match = again if again is not None and again.coherence else match
    codec = _codec(match.encoding) if match is not None else None
    if codec is None:
        return None
    text = _try_decode(data, codec)
    return (text if text is not None else data.decode(codec, "replace")), codec


def _try_decode(data: bytes, codec: str) -> str | None:
    try:
        text = data.decode(codec)
        text.encode("utf-8")  # some codecs produce lone surrogates
        return text
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None


def _codec(label: str) -> str | None:
    """The Python codec of a charset label, or None for an unknown (or no) one."""
    label = label.strip().strip("\"'").lower()
    if not label or label in ("unknown-8bit", "x-unknown", "unknown"):
        return None
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError, TypeError):
        return None


def _codecs_for(label: str) -> tuple[str, ...]:
    """The codecs to try for a charset label.  ISO-8859-1 is read as Windows-1252 first (its
    superset, which mail programs that declare ISO-8859-1 often write, as browsers know)."""
    codec = _codec(label)
    if codec is None:
        return ()
    return ("cp1252", codec) if codec == "iso8859-1" else (codec,)


def _ascii_compatible(label: str) -> bool:
    codec = _codec(label)
    return codec is None or not codec.startswith(_NOT_ASCII_COMPATIBLE)


def _meta_charset(payload: bytes) -> str:
    """The charset an HTML document names in a ``<meta>`` element, or ``""``."""
    found = _META_CHARSET_RE.search(payload[:4096])
    return found.group(1).decode("ascii") if found else ""


# -- text ----------------------------------------------------------------------------------------

# Characters that make a text look filled without showing anything.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
# A word, for comparing a mail's plain and HTML alternatives: three letters or more.
_WORD_RE = re.compile(r"[^\W\d_]{3,}")
# How many words the HTML alternative must add before its text is added to the plain one.
MIN_NEW_WORDS = 3


def _is_new(line: str, known: set[str]) -> bool:
    """Whether most words of ``line`` (and at least one) are not in ``known``."""
    words = [word.lower() for word in _WORD_RE.findall(line)]
    return sum(word not in known for word in words) * 2 > len(words)


def _check_tree(tree: Part, limits: Limits) -> None:
    names = {name.lower() for name in tree}
    if not names.intersection(MAIL_FIELDS):
        found = ", ".join(sorted(names)[:5])
        raise ParseError("not an RFC 5322 message: its header block has none of the fields "
                         f"a mail has (From, Date, Subject, To, Message-ID, Received ...), "
                         f"only {found}")
    if len(tree.keys()) > limits.max_headers:
        raise ParseError(f"{len(tree.keys())} header lines, over the limit of "
                         f"{limits.max_headers} (limits.max_headers)")
    depth = _depth(tree, 0, limits.max_mime_depth)
    if depth > limits.max_mime_depth:
        raise ParseError(f"MIME nesting deeper than {limits.max_mime_depth} "
                         "(limits.max_mime_depth)")


def _depth(part: Part, level: int, ceiling: int) -> int:
    if level > ceiling or not part.is_multipart():
        return level
    payload = part.get_payload()
    if not isinstance(payload, list):
        return level
    return max((_depth(p, level + 1, ceiling) for p in payload), default=level)


def _body_text(plain: list[str], html: str, limits: Limits) -> str:
    """The plain text and what only the HTML says; without plain text, the HTML's text."""
    text = "\n".join(plain).strip().replace("\r\n", "\n")
    if not text.strip(_INVISIBLE):
        return html_to_text(html, limits.max_html_chars) if html else ""
    return _with_html_only_text(text, html, limits) if html else text


def _with_html_only_text(text: str, html: str, limits: Limits) -> str:
    """The plain text, then the lines of the HTML alternative that it lacks.

    Both alternatives should say the same; where the HTML says more (a plain part that is
    a stub or lost a paragraph), its lines of mostly new words are added.  Not added: fewer
    than :data:`MIN_NEW_WORDS` new words (an image's alt text, a link), and anything from
    the HTML's quoted history on (Yahoo, for one, shortens it in the plain part).
    """
    known = {word.lower() for word in _WORD_RE.findall(text)}
    visible = html_to_text(html, limits.max_html_chars)
    if len({word.lower() for word in _WORD_RE.findall(visible)} - known) < MIN_NEW_WORDS:
        return text
    lines = [line.strip() for line in visible.splitlines()]
    quoted = next((i for i, line in enumerate(lines) if line.startswith(">")), len(lines))
    extra = [line for line in lines[:quoted] if _is_new(line, known)]
    return "\n\n".join([text, "\n".join(extra)]) if extra else text
