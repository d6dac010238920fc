"""Parse raw mail bytes into one normalised, immutable message record.

Everything downstream of the spool works on a :class:`Message`; nothing else in
mailbot touches MIME.  Memory stays bounded by the headers, not by the files a mail
carries: the stdlib ``email`` parser only ever sees a *skeleton* of the mail, in which
every long run of body lines is replaced by a one-line marker (:class:`Skeleton`).  Such
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

import email
import email.errors
import email.message
import email.parser
import email.policy
import email.utils
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from functools import cached_property

from mailbot.reading.attachments import Attachment, Body, Piece, transfer_encoding
from mailbot.reading.headers import (
    decoded_headers,
    first_value,
    header_addresses,
    header_date,
    message_ids,
    name_and_address,
    one_line,
    raw_header,
)
from mailbot.reading.limits import Limits, ParseError, check_headers, counting_parts
from mailbot.reading.skeleton import NOT_BLANK_RE, Skeleton, fingerprint
from mailbot.reading.tree import FORWARDED_TYPES, Reading, raw_payload

Part = email.message.Message


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


def parse(raw: bytes, limits: Limits | None = None) -> Message:
    """Turn raw bytes into a :class:`Message`, or raise :class:`ParseError` with the reason."""
    limits = limits or Limits()
    if not NOT_BLANK_RE.search(raw):
        raise ParseError("the mail is empty")
    if len(raw) > limits.max_message_bytes:
        raise ParseError(f"message is {len(raw)} bytes, over the limit of "
                         f"{limits.max_message_bytes} (limits.max_message_bytes)")
    skeleton = Skeleton.of(raw)
    try:
        tree = email.message_from_bytes(skeleton.text, policy=counting_parts(limits))
    except RecursionError as exc:
        raise ParseError(f"MIME parts nested deeper than {limits.max_mime_depth} "
                         "(limits.max_mime_depth)") from exc
    _check_tree(tree, limits)
    try:
        return _message(raw, tree, skeleton, limits)
    except (ValueError, LookupError, RecursionError, AttributeError, TypeError,
            IndexError, email.errors.MessageError) as exc:
        # Seen: a NUL in a charset name, a multipart whose parameters cannot be read.  The
        # reason is for people; the exception stays the cause (the log shows it).
        raise ParseError("the mail's headers or MIME structure are malformed in a way "
                         "mailbot cannot read") from exc


def _message(raw: bytes, tree: Part, skeleton: Skeleton, limits: Limits) -> Message:
    reading = Reading(skeleton, limits)
    reading.walk(tree)
    hint = reading.charset
    headers = decoded_headers(tree, hint)
    from_name, from_addr = name_and_address(raw_header(tree, "from"), hint)
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
        to=header_addresses(tree, "to", hint),
        cc=header_addresses(tree, "cc", hint),
        reply_to=header_addresses(tree, "reply-to", hint),
        subject=one_line(first_value(headers, "subject")),
        message_id=next(iter(message_ids(first_value(headers, "message-id"))), ""),
        in_reply_to=message_ids(first_value(headers, "in-reply-to")),
        references=message_ids(" ".join(v for k, v in headers if k == "references")),
        date=header_date(first_value(headers, "date")),
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


def _delivery_report(tree: Part, skeleton: Skeleton) -> tuple[tuple, tuple[str, ...]]:
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
        elif kind in FORWARDED_TYPES and isinstance(part.get_payload(), list):
            ids += _returned_ids(part.get_payload()[0] if part.get_payload() else None)
        elif kind == "text/rfc822-headers":
            data = b"".join(bytes(p) for p in _decoded_pieces(part, skeleton))
            headers = email.parser.BytesHeaderParser(policy=email.policy.compat32)
            ids += _returned_ids(headers.parsebytes(data))  # only headers: no parts to count
    return tuple(blocks), tuple(dict.fromkeys(ids))


def _decoded_pieces(part: Part, skeleton: Skeleton) -> list[Piece]:
    """A small leaf part's bytes, transfer encoding undone (nothing when it is broken)."""
    encoding = transfer_encoding(part)
    body = Body(skeleton.pieces(raw_payload(part)),
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


def _forwarded(part: Part, filename: str, reading: Reading, hint: str) -> Forwarded:
    """The forwarded mail of a message/rfc822 part: its sender, subject, date and text."""
    inner = part.get_payload(0)
    from_name, from_addr = name_and_address(raw_header(inner, "from"), hint)
    headers = decoded_headers(inner, hint)
    return Forwarded(filename=filename, from_name=from_name, from_addr=from_addr,
                     subject=one_line(first_value(headers, "subject")),
                     date=header_date(first_value(headers, "date")), text=reading.text(id(part)))


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
        raise ParseError(f"MIME parts nested deeper than {limits.max_mime_depth} "
                         "(limits.max_mime_depth)")
    for part in tree.walk():
        check_headers(part, limits)


def _depth(part: Part, level: int, ceiling: int) -> int:
    if level > ceiling or not part.is_multipart():
        return level
    payload = part.get_payload()
    if not isinstance(payload, list):
        return level
    return max((_depth(p, level + 1, ceiling) for p in payload), default=level)
