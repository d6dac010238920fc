"""Parse raw mail bytes into one normalised, immutable message record.

Everything downstream of the spool works on a :class:`Message`; nothing else in
mailbot touches MIME.  Memory stays bounded by the headers, not by the files a mail
carries: the stdlib ``email`` parser only ever sees a *skeleton* of the mail, in which
every long run of body lines is replaced by a one-line marker (:class:`_Skeleton`).  Such
lines cannot change the MIME structure (they are no boundary, no blank line and no
header), so the skeleton parses to the same tree as the mail.  Text parts are put back
together to be read; an attachment stays in the raw bytes and is decoded piece by piece
(:meth:`Attachment.chunks`) when it is written to disk.

An attachment that cannot be decoded (broken base64, an unknown transfer encoding) is
kept as it came, marked damaged; the rest of the mail is read as usual.
"""

from __future__ import annotations

import binascii
import email
import email.errors
import email.header
import email.message
import email.policy
import email.utils
import hashlib
import html as htmllib
import io
import mimetypes
import re
import secrets
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.utils import getaddresses
from functools import cached_property

import html2text

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

    def chunks(self) -> Iterator[Piece]:
        """The file's bytes in pieces of about a megabyte: write a large file with these."""
        return self.body.decoded()

    @property
    def payload(self) -> bytes:
        """The whole file in memory (for a small file; a big one is written with chunks)."""
        return b"".join(self.chunks())


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
    text: str
    html: str = field(repr=False)
    attachments: tuple[Attachment, ...]
    headers: tuple[tuple[str, str], ...] = field(repr=False)
    content_type: str
    defects: tuple[str, ...] = ()

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


# Header fields a mail collects on its way (RFC 5321 trace fields, what delivery agents
# add, and an mbox "From " line); they differ between two copies of the same mail.
TRACE_HEADERS = frozenset({"from ", "received", "return-path", "delivered-to", "x-original-to",
                           "x-delivered-to", "envelope-to", "x-envelope-to"})

_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_NESTING_TAG_RE = re.compile(r"<(/?)(?:ul|ol|dl|dir|menu|blockquote)\b", re.IGNORECASE)
_TAG_RE = re.compile(r"<[^>]*>")
_NOT_BLANK_RE = re.compile(rb"[^ \t\r\n\x0b\x0c]")
# Deeper list/quote nesting than this is converted by stripping tags only.
MAX_HTML_NESTING = 32


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
    headers = _headers(tree)
    reading = _Reading(skeleton, limits)
    reading.walk(tree)
    html = "\n".join(reading.html)
    from_name, from_addr = _sender(_first(headers, "from"), str(tree.get("from", "")))
    return Message(
        raw=raw,
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        from_name=from_name,
        from_addr=from_addr,
        to=_addresses(headers, "to"),
        cc=_addresses(headers, "cc"),
        reply_to=_addresses(headers, "reply-to"),
        subject=_one_line(_first(headers, "subject")),
        message_id=next(iter(message_ids(_first(headers, "message-id"))), ""),
        in_reply_to=message_ids(_first(headers, "in-reply-to")),
        references=message_ids(" ".join(v for k, v in headers if k == "references")),
        date=_date(_first(headers, "date")),
        text=_body_text(reading.plain, html, limits),
        html=html,
        attachments=tuple(reading.attachments),
        headers=headers,
        content_type=tree.get_content_type(),
        defects=tuple(reading.defects),
    )


def message_ids(value: str) -> tuple[str, ...]:
    """Message-IDs in a header value, without angle brackets, in order."""
    return tuple(dict.fromkeys(_MSGID_RE.findall(value or "")))


def base_address(address: str) -> str:
    """An address without its +tag, lower-case: support+t1-ab@x -> support@x."""
    local, _, domain = address.lower().partition("@")
    return f"{local.partition('+')[0]}@{domain}"


def safe_filename(name: str, content_type: str, index: int) -> str:
    """A display filename that can never act as a path (no separators, no dots first)."""
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name or ""))[-1]
    base = _UNSAFE_NAME_RE.sub("_", base).strip(" .")[:200]
    if base:
        return base
    extension = mimetypes.guess_extension(content_type or "") or ".bin"
    return f"attachment-{index}{extension}"


def html_to_text(html: str, max_chars: int) -> str:
    """Readable plain text for an HTML-only mail, bounded in input size.

    html2text indents every line by its list/quote depth, so deep nesting makes its
    output (and time) grow with the square of the input: such HTML is only stripped.
    """
    html = html[:max_chars]
    if _html_nesting(html) > MAX_HTML_NESTING:
        return _strip_tags(html)
    converter = html2text.HTML2Text()
    converter.body_width = 0
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True  # &uuml; is "ü", not "u"
    return converter.handle(html).strip()


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
    """

    text: bytes
    token: str
    spans: tuple[tuple[int, int, int], ...]
    raw: memoryview

    @classmethod
    def of(cls, raw: bytes) -> _Skeleton:
        """The skeleton of ``raw``, with a marker that occurs nowhere in it."""
        token = secrets.token_hex(8)
        while token.encode() in raw:
            token = secrets.token_hex(8)
        out, spans, kept = [], [], 0
        for run in _RUN_RE.finditer(raw):
            if run.end() - run.start() < ELIDE_BYTES:
                continue
            head = _HEADER_RUN_RE.match(raw, run.start(), run.end())
            start, end = head.end() if head else run.start(), run.end()
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

    def restore(self, payload: str) -> str:
        """A part's payload as the stdlib parser would have given it for the whole mail."""
        return b"".join(self.pieces(payload)).decode("ascii", "surrogateescape")


def _line_end_length(raw: bytes, start: int, end: int) -> int:
    """How many bytes of ``raw[start:end]`` are its last line end (0, 1 or 2)."""
    if end - start >= 2 and raw[end - 2:end] == b"\r\n":
        return 2
    return 1 if raw[end - 1:end] in (b"\r", b"\n") else 0


def _header_lines(raw: bytes) -> tuple[list[tuple[int, int]], int]:
    """The lines of the top-level header block (start, end) and where the body starts."""
    lines, pos = [], 0
    while pos < len(raw) and _HEADER_LINE_RE.match(raw, pos):
        found = _LINE_END_RE.search(raw, pos)
        end = found.end() if found else len(raw)
        lines.append((pos, end))
        pos = end
    return lines, pos


# -- reading the tree ----------------------------------------------------------------------------


class _Reading:
    """One walk over the MIME tree: body texts, attachments and defects, in order.

    Which part is an attachment and which is text follows what mail-parser (the library
    mailbot used before) decided, so mails read the same as they always did.
    """

    def __init__(self, skeleton: _Skeleton, limits: Limits) -> None:
        self.skeleton = skeleton
        self.limits = limits
        self.plain: list[str] = []
        self.html: list[str] = []
        self.attachments: list[Attachment] = []
        self.defects: list[str] = []

    def walk(self, tree: Part) -> None:
        """Read every part in order: its texts, then each attachment (decoded once, to hash it)."""
        files = []
        for part, inside_attachment in _parts(tree):
            self.defects += [type(d).__name__ for d in part.defects]
            disposition = (part.get_content_disposition() or "").lower()
            if part.is_multipart() and disposition != "attachment":
                continue
            name = _attachment_name(part, disposition)
            if name is not None:
                files.append((part, name))
            inline_body = (not inside_attachment and not part.is_multipart()
                           and disposition == "inline"
                           and part.get_content_type() in ("text/plain", "text/html"))
            if name is None or inline_body:
                self._read_text(part)
        if len(files) > self.limits.max_attachments:
            raise ParseError(f"{len(files)} attachments, over the limit of "
                             f"{self.limits.max_attachments} (limits.max_attachments)")
        for index, (part, name) in enumerate(files, start=1):
            self.attachments.append(self._attachment(part, name, index))

    def _read_text(self, part: Part) -> None:
        """A plain or HTML part's text, put back together from the raw mail and decoded."""
        subtype = part.get_content_subtype()
        if subtype not in ("plain", "html") or part.is_multipart():
            return
        part.set_payload(self.skeleton.restore(_raw_payload(part)))
        text = self._decode_text(part)
        if text:
            (self.html if subtype == "html" else self.plain).append(text)

    def _decode_text(self, part: Part) -> str:
        """A text part as text: its charset, else UTF-8, else UTF-8 with replacements."""
        raw_text = _raw_payload(part)
        if _transfer_encoding(part) in ("", "7bit", "8bit") and raw_text.isascii():
            return raw_text
        payload = part.get_payload(decode=True)
        if not payload:
            return ""
        charset = part.get_content_charset("utf-8")
        try:
            text = payload.decode(charset)
            text.encode("utf-8")  # some codecs produce lone surrogates
            return text
        except (LookupError, UnicodeError):
            self.defects.append(f"CharsetDecodeDefect: {part.get_content_type()} "
                                f"charset {charset!r} failed; read as UTF-8")
            return payload.decode("utf-8", "replace")

    def _attachment(self, part: Part, name: str, index: int) -> Attachment:
        content_type = part.get_content_type().lower()
        filename = safe_filename(name, content_type, index)
        body, damage = self._body(part)
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

    def _body(self, part: Part) -> tuple[_Body, str]:
        """Where the attachment's bytes are and how to decode them, or why they cannot be."""
        if part.is_multipart():  # an attached mail or container: its parts as they came
            return self._container(part)
        pieces = self.skeleton.pieces(_raw_payload(part))
        encoding = _transfer_encoding(part)
        if encoding in ("base64", "quoted-printable"):
            return _Body(pieces, encoding), ""
        if encoding in _AS_IS:
            return _Body(pieces), ""
        if encoding in _UUENCODE:
            return _uudecoded(pieces)
        return _Body(pieces), f"unknown transfer encoding {encoding!r}"

    def _container(self, part: Part) -> tuple[_Body, str]:
        """An attached mail (message/rfc822) or multipart: its parts written out again."""
        out = io.BytesIO()
        try:
            for child in part.get_payload():
                BytesGenerator(out, mangle_from_=False, maxheaderlen=0).flatten(child)
        except (LookupError, UnicodeError, ValueError, TypeError) as exc:
            return _Body(()), f"the attached parts cannot be written out: {exc}"
        written = out.getvalue().decode("ascii", "surrogateescape")
        return _Body(self.skeleton.pieces(written)), ""


def _parts(tree: Part) -> list[tuple[Part, bool]]:
    """Every part in order, and whether it sits inside an attached container.

    RFC 2183 applies a disposition to a whole container: the named inline texts inside an
    attached one are not shown as the mail's text.
    """
    parts, inside = [], set()
    for part in tree.walk():
        within = id(part) in inside
        parts.append((part, within))
        if part.is_multipart():
            disposition = part.get_content_disposition()
            blocks = disposition not in (None, "inline") or (
                disposition != "inline" and bool(part.get_filename()))
            if within or blocks:
                inside.update(id(child) for child in part.get_payload())
    return parts


def _attachment_name(part: Part, disposition: str) -> str | None:
    """The file name of a part that is an attachment (may be ""), or None for text."""
    name = _filename(part)
    if name:
        return name
    content_id = str(part.get("content-id") or "")
    if content_id and part.get_content_subtype() not in ("html", "plain"):
        return content_id
    if part.get_content_subtype() == "rtf" or disposition == "attachment":
        return ""
    return None


def _filename(part: Part) -> str:
    """The decoded file name (RFC 2231, encoded-words, raw 8-bit UTF-8 or Windows-1252)."""
    view = email.message.Message()
    for name, value in part.raw_items():
        if name.lower() in ("content-type", "content-disposition"):
            view[name] = _text(str(value).encode("utf-8", "surrogateescape"), None)
    return _decode(view.get_filename() or "")


def _raw_payload(part: Part) -> str:
    """A leaf part's payload as parsed: 8-bit bytes as surrogates, no charset applied.

    (``get_payload()`` would decode those bytes with the part's charset, lossily.)
    """
    return part._payload


def _transfer_encoding(part: Part) -> str:
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _uudecoded(pieces: tuple[Piece, ...]) -> tuple[_Body, str]:
    """A uuencoded attachment (rare and small in practice), decoded at once by the stdlib."""
    holder = email.message.Message()
    holder["Content-Transfer-Encoding"] = "x-uuencode"
    encoded = b"".join(pieces)
    holder.set_payload(encoded.decode("ascii", "surrogateescape"))
    decoded = holder.get_payload(decode=True)
    if decoded == encoded:  # the stdlib gives the input back when it cannot decode it
        return _Body(pieces), "broken uuencode"
    return _Body((decoded,)), ""


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


# -- headers and text ------------------------------------------------------------------------------


def _html_nesting(html: str) -> int:
    """The deepest nesting of list and quote elements (which html2text indents)."""
    depth = deepest = 0
    for match in _NESTING_TAG_RE.finditer(html):
        depth = max(0, depth - 1) if match.group(1) else depth + 1
        deepest = max(deepest, depth)
    return deepest


def _strip_tags(html: str) -> str:
    """Plain text of hostile HTML in linear time: tags dropped, entities decoded."""
    text = htmllib.unescape(_TAG_RE.sub(" ", html))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def _check_tree(tree: Part, limits: Limits) -> None:
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


def _headers(tree: Part) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), _decode(v)) for k, v in tree.items())


def _decode(value: object) -> str:
    """A header value as text: encoded-words decoded, raw 8-bit bytes read as UTF-8/cp1252."""
    try:
        chunks = decode_header(value if isinstance(value, email.header.Header) else str(value))
        fixed = [(_text(data, charset).encode("utf-8"), "utf-8") for data, charset in chunks]
        return str(make_header(fixed))
    except (UnicodeError, LookupError, ValueError, email.errors.HeaderParseError):
        return str(value)


def _text(data: bytes | str, charset: str | None) -> str:
    if isinstance(data, str):
        return data
    for candidate in (charset, "utf-8"):
        if candidate and candidate != "unknown-8bit":
            try:
                return data.decode(candidate)
            except (UnicodeDecodeError, LookupError):
                continue
    return data.decode("cp1252", "replace")


def _first(headers: tuple[tuple[str, str], ...], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _addresses(headers: tuple[tuple[str, str], ...], name: str) -> tuple[str, ...]:
    values = [v for k, v in headers if k == name]
    found = (addr.strip().lower() for _, addr in getaddresses(values))
    return tuple(dict.fromkeys(a for a in found if "@" in a))


def _sender(decoded: str, raw: str) -> tuple[str, str]:
    """Name and address of the From header; read undecoded if decoding broke the address."""
    for value in (decoded, raw):
        for name, addr in getaddresses([value]):
            if "@" in addr:
                return _one_line(name), addr.strip().lower()
    return "", ""


def _date(value: str) -> datetime | None:
    """The Date header as an aware datetime (UTC when it names no zone), or None."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _body_text(plain: list[str], html: str, limits: Limits) -> str:
    text = "\n".join(plain).strip()
    if text:
        return text.replace("\r\n", "\n")
    if html:
        return html_to_text(html, limits.max_html_chars)
    return ""
