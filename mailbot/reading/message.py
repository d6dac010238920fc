"""Parse raw mail bytes into one normalised, immutable message record.

Everything downstream of the spool works on a :class:`Message`; nothing else in
mailbot touches MIME.  mail-parser does the heavy lifting; the stdlib ``email``
package fills the gaps where mail-parser loses information (raw 8-bit headers,
the MIME tree for limits and reports).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hashlib
import html as htmllib
import mimetypes
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from email.header import decode_header, make_header
from email.utils import getaddresses

import html2text
import mailparser


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


@dataclass(frozen=True)
class Attachment:
    """One attached file: a sanitised display name, never a path."""

    filename: str
    content_type: str
    payload: bytes = field(repr=False)

    @property
    def size(self) -> int:
        """Size of the payload in bytes."""
        return len(self.payload)

    @property
    def sha256(self) -> str:
        """Content hash; attachments are stored on disk under it."""
        return hashlib.sha256(self.payload).hexdigest()


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


_MSGID_RE = re.compile(r"<([^<>\s]+)>")
_UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")
_NESTING_TAG_RE = re.compile(r"<(/?)(?:ul|ol|dl|dir|menu|blockquote)\b", re.IGNORECASE)
_TAG_RE = re.compile(r"<[^>]*>")
# Deeper list/quote nesting than this is converted by stripping tags only.
MAX_HTML_NESTING = 32


def parse(raw: bytes, limits: Limits | None = None) -> Message:
    """Turn raw bytes into a :class:`Message`, or raise :class:`ParseError` with the reason."""
    limits = limits or Limits()
    if not raw.strip():
        raise ParseError("empty message")
    if len(raw) > limits.max_message_bytes:
        raise ParseError(f"message is {len(raw)} bytes, over the limit of "
                         f"{limits.max_message_bytes} (limits.max_message_bytes)")
    try:
        parsed = mailparser.parse_from_bytes(raw)
    except (ValueError, LookupError, RecursionError, AttributeError, TypeError,
            IndexError, email.errors.MessageError) as exc:
        # seen: a NUL in a charset name, bad base64 in an encoded-word of an address,
        # a multipart whose boundary is broken (mail-parser's epilogue search)
        raise ParseError(f"mail-parser cannot read the mail: {type(exc).__name__}: "
                         f"{exc}") from exc
    tree = parsed.message
    _check_tree(tree, limits)
    headers = _headers(tree)
    from_name, from_addr = _sender(parsed, headers)
    html = "\n".join(parsed.text_html)
    attachments = _attachments(parsed, limits)
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
        date=parsed.date if isinstance(parsed.date, datetime) else None,
        text=_body_text(parsed, html, limits),
        html=html,
        attachments=attachments,
        headers=headers,
        content_type=tree.get_content_type(),
        defects=tuple(str(d) for d in parsed.defects),
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


def _check_tree(tree: email.message.Message, limits: Limits) -> None:
    if len(tree.keys()) > limits.max_headers:
        raise ParseError(f"{len(tree.keys())} header lines, over the limit of "
                         f"{limits.max_headers} (limits.max_headers)")
    depth = _depth(tree, 0, limits.max_mime_depth)
    if depth > limits.max_mime_depth:
        raise ParseError(f"MIME nesting deeper than {limits.max_mime_depth} "
                         "(limits.max_mime_depth)")


def _depth(part: email.message.Message, level: int, ceiling: int) -> int:
    if level > ceiling or not part.is_multipart():
        return level
    payload = part.get_payload()
    if not isinstance(payload, list):
        return level
    return max((_depth(p, level + 1, ceiling) for p in payload), default=level)


def _headers(tree: email.message.Message) -> tuple[tuple[str, str], ...]:
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


def _sender(parsed: mailparser.MailParser, headers: tuple[tuple[str, str], ...]) -> tuple[str, str]:
    pairs = getaddresses([_first(headers, "from")])
    for name, addr in pairs:
        if "@" in addr:
            return _one_line(name), addr.strip().lower()
    for name, addr in parsed.from_ or ():
        if "@" in (addr or ""):
            return _one_line(name), addr.strip().lower()
    return "", ""


def _body_text(parsed: mailparser.MailParser, html: str, limits: Limits) -> str:
    plain = "\n".join(parsed.text_plain).strip()
    if plain:
        return plain.replace("\r\n", "\n")
    if html:
        return html_to_text(html, limits.max_html_chars)
    return ""


def _attachments(parsed: mailparser.MailParser, limits: Limits) -> tuple[Attachment, ...]:
    items = parsed.attachments or []
    if len(items) > limits.max_attachments:
        raise ParseError(f"{len(items)} attachments, over the limit of "
                         f"{limits.max_attachments} (limits.max_attachments)")
    result = []
    for index, item in enumerate(items, start=1):
        payload = _payload(item)
        if len(payload) > limits.max_attachment_bytes:
            raise ParseError(f"attachment {index} is {len(payload)} bytes, over the limit of "
                             f"{limits.max_attachment_bytes} (limits.max_attachment_bytes)")
        content_type = (item.get("mail_content_type") or "application/octet-stream").lower()
        name = safe_filename(_decode(item.get("filename") or ""), content_type, index)
        result.append(Attachment(filename=name, content_type=content_type, payload=payload))
    return tuple(result)


def _payload(item: dict) -> bytes:
    payload = item.get("payload") or ""
    if isinstance(payload, bytes):
        return payload
    if item.get("binary"):
        try:
            return base64.b64decode(payload)
        except (binascii.Error, ValueError) as exc:
            raise ParseError(f"attachment payload is not valid base64: {exc}") from exc
    return payload.encode("utf-8", "surrogateescape")
