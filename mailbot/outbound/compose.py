"""Outbound mails from jinja2 templates, with threading and anti-loop headers.

Each mail template ``templates/<lang>/mail/<kind>.txt`` defines a ``subject`` and a
``body`` block.  Every mail we send carries ``Auto-Submitted``,
``X-Auto-Response-Suppress`` and our loop header, a signed Message-ID, and a signed
return path (VERP) that names the mail, for its bounces.
"""

from __future__ import annotations

import base64
import codecs
import email.message
import email.policy
import functools
import re
from dataclasses import dataclass
from datetime import datetime
from email import charset as email_charset
from email import quoprimime
from email.encoders import encode_base64
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2

from mailbot.outbound import wording
from mailbot.outbound.tokens import Signer
from mailbot.outbound.wording import supported_language
from mailbot.reading.charsets import read_bytes

LOOP_HEADER = "X-Mailbot-Loop"
_CRLF = email.policy.compat32.clone(linesep="\r\n")
_UTF8_QP = email_charset.Charset("utf-8")
_UTF8_QP.body_encoding = email_charset.QP


@dataclass(frozen=True)
class Outgoing:
    """A composed mail ready for the outbox."""

    kind: str
    message_id: str
    sender: str
    recipients: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class Envelope:
    """Who a mail goes to and how it threads."""

    to: tuple[str, ...]
    from_name: str
    in_reply_to: str = ""
    references: tuple[str, ...] = ()
    reply_to: str = ""
    auto_submitted: str = "auto-replied"
    attachments: tuple[tuple[str, str, bytes], ...] = ()


def text_environment(templates_dir: Path, timezone: str = "Europe/Berlin") -> jinja2.Environment:
    """The jinja2 environment for plain-text mails (no HTML escaping, strict variables).

    Its filters put values into words of the mail's language, times in ``timezone``:
    ``priority``, ``status``, ``moment``, ``facts``, ``deadline``, ``priority_reason``,
    ``sentence`` (a :class:`~mailbot.outbound.wording.Reason`), ``subject`` (a ticket's
    subject, its placeholder in words) (each with the language, e.g.
    ``{{ ticket.status | status("de") }}``) and ``person_name`` (a display name fit for a
    greeting, else "").
    """
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir)),
                             autoescape=False, undefined=jinja2.StrictUndefined,  # noqa: S701
                             keep_trailing_newline=True, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters.update(
        priority=wording.priority_label, status=wording.status_label,
        moment=lambda when, language: wording.moment(when, timezone, language) or "-",
        facts=wording.fact_labels, deadline=wording.deadline_label,
        priority_reason=wording.priority_reason, person_name=wording.person_name,
        sentence=wording.sentence, subject=wording.subject_text)
    return env


def tagged_subject(prefix: str, number: str, subject: str) -> str:
    """A subject that carries the ticket tag exactly once.

    A tag the subject already has, in any case or spacing ("[ticket# 2026…]"), counts.
    """
    wanted = number.lower()
    if any(tag.group(1).lower() == wanted for tag in _tags(prefix).finditer(subject)):
        return subject
    return f"[{prefix}{number}] {subject}".strip()


@functools.lru_cache(maxsize=8)
def _tags(prefix: str) -> re.Pattern[str]:
    """Subject tags with ``prefix`` and what follows it up to the bracket (compiled once,
    not once per ticket number)."""
    return re.compile(r"\[" + re.escape(prefix) + r"\s*([^\]]*)\]", re.IGNORECASE)


class Composer:
    """Renders and builds mailbot's outgoing mails."""

    def __init__(self, env: jinja2.Environment, signer: Signer, support_address: str,
                 instance_id: str, tag_prefix: str, timezone: str = "UTC") -> None:
        self.env = env
        self.timezone = ZoneInfo(timezone)
        self.signer = signer
        self.support_address = support_address
        self.domain = support_address.rpartition("@")[2]
        self.instance_id = instance_id
        self.tag_prefix = tag_prefix

    def render(self, kind: str, language: str, values: dict) -> tuple[str, str]:
        """Subject and body of template ``kind`` in ``language``."""
        lang = supported_language(language)
        template = self.env.get_template(f"{lang}/mail/{kind}.txt")
        context = template.new_context({**values, "tag_prefix": self.tag_prefix})
        subject = "".join(template.blocks["subject"](context)).strip()
        body = "".join(template.blocks["body"](context)).strip() + "\n"
        return " ".join(subject.split()), body

    def build(self, kind: str, language: str, number: str, envelope: Envelope,
              values: dict, now: datetime) -> Outgoing:
        """A complete mail of template ``kind`` about ticket ``number``."""
        subject, body = self.render(kind, language, {**values, "number": number})
        return self.build_text(kind, language, number, envelope, (subject, body), now)

    def build_text(self, kind: str, language: str, number: str, envelope: Envelope,
                   text: tuple[str, str], now: datetime) -> Outgoing:
        """A complete mail with a given subject and body about ticket ``number``."""
        subject, body = text
        message_id = self.signer.message_id(number, self.domain)
        headers = [
            ("From", _address(envelope.from_name, self.support_address)),
            ("To", ", ".join(envelope.to)),
            ("Subject", tagged_subject(self.tag_prefix, number, subject)),
            ("Date", format_datetime(now.astimezone(self.timezone))),  # local, with offset
            ("Message-ID", f"<{message_id}>"),
            *_thread_headers(envelope),
            *_auto_headers(envelope.auto_submitted),
            (LOOP_HEADER, self.instance_id),
            ("Content-Language", language),
        ]
        raw = _header_block(headers) + _body(body, envelope.attachments)
        return Outgoing(kind=kind, message_id=message_id, sender=self.return_path(message_id),
                        recipients=envelope.to, raw=raw)

    def return_path(self, message_id: str) -> str:
        """The envelope sender of our mail ``message_id``: the support address with a signed
        tag naming the mail (VERP), so a bounce of it proves which mail it is about."""
        local, _, domain = self.support_address.partition("@")
        return f"{local}+{self.signer.bounce_tag(message_id)}@{domain}"

    def reply_address(self, number: str, agent: str, issued: datetime) -> str:
        """The address through which the agent ``agent`` acts on ticket ``number``: the
        support address plus a tag signed for that agent and issue day."""
        local, _, domain = self.support_address.partition("@")
        return f"{local}+{self.signer.reply_tag(number, agent, issued)}@{domain}"


def _thread_headers(envelope: Envelope) -> list[tuple[str, str]]:
    """In-Reply-To, References (the last 20, folded) and Reply-To."""
    headers = []
    if envelope.in_reply_to:
        headers.append(("In-Reply-To", f"<{envelope.in_reply_to}>"))
    refs = [*envelope.references]
    if envelope.in_reply_to and envelope.in_reply_to not in refs:
        refs.append(envelope.in_reply_to)
    if refs:
        headers.append(("References", "\r\n ".join(f"<{r}>" for r in refs[-20:])))
    if envelope.reply_to:
        headers.append(("Reply-To", envelope.reply_to))
    return headers


def _auto_headers(auto_submitted: str) -> list[tuple[str, str]]:
    """RFC 3834 marks on automatic mail, and the Exchange hint not to auto-answer it."""
    if not auto_submitted:
        return []
    return [("Auto-Submitted", auto_submitted), ("X-Auto-Response-Suppress", "All")]


def _header_block(headers: list[tuple[str, str]]) -> bytes:
    """Header lines as bytes; non-ASCII values as RFC 2047 encoded words."""
    lines = (f"{name}: {value if value.isascii() else encoded_words(value)}"
             for name, value in headers)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _address(name: str, address: str) -> str:
    """A From header value; a non-ASCII display name as encoded words."""
    if name.isascii():
        return formataddr((name, address))
    return f"{encoded_words(name)} <{address}>"


def encoded_words(text: str, chunk: int = 45) -> str:
    """RFC 2047 base64 encoded words of at most ``chunk`` UTF-8 bytes each, folded.

    Chunks end on character boundaries, so every word decodes on its own (a chunk is cut
    before the UTF-8 continuation bytes of a character; ``chunk`` is at least 4).
    """
    data, words, start = text.encode("utf-8"), [], 0
    while len(data) - start > chunk:
        end = start + chunk
        while data[end] & 0xC0 == 0x80:  # inside a character: cut before it
            end -= 1
        words.append(data[start:end])
        start = end
    words.append(data[start:])
    return "\r\n ".join(f"=?utf-8?b?{base64.b64encode(w).decode('ascii')}?=" for w in words)


def _body(body: str, attachments: tuple[tuple[str, str, bytes], ...]) -> bytes:
    """The body with its MIME headers: the text alone is written directly (the bytes the
    stdlib's MIME classes would write, without building and flattening a tree)."""
    if attachments:
        return _body_part(body, attachments).as_bytes(policy=_CRLF)
    encoded = _quoted_printable(body.encode("utf-8").decode("latin-1")) if body else ""
    return _TEXT_HEAD + encoded.replace("\n", "\r\n").encode("ascii")


def _quoted_printable(text: str) -> str:
    """``quoprimime.body_encode(text)``, line by line: it quotes each character on its own
    and wraps each line on its own (only CR, LF and CRLF end a line once the rest is
    quoted), so the lines a template always writes are quoted once, not for every mail."""
    lines = _LINE_END.split(text)
    if text[-1] not in "\r\n":
        return "\n".join(map(_quoted_line, lines))
    lines.pop()  # the empty text after the last line end
    return "\n".join(map(_quoted_line, lines)) + "\n"


@functools.lru_cache(maxsize=1024)
def _quoted_line(line: str) -> str:
    """One line (no line end in it) as quoted-printable, soft line breaks included."""
    return quoprimime.body_encode(line)


_LINE_END = re.compile(r"\r\n|\r|\n")


# What MIMEText writes above a UTF-8 quoted-printable text.
_TEXT_HEAD = (b'Content-Type: text/plain; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
              b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")


def _body_part(body: str, attachments: tuple[tuple[str, str, bytes], ...]) -> MIMEBase:
    """The text (quoted-printable UTF-8), wrapped in multipart/mixed when files are attached."""
    text = MIMEText(body, "plain", _UTF8_QP)
    if not attachments:
        return text
    mixed = MIMEMultipart("mixed")
    mixed.attach(text)
    for filename, content_type, payload in attachments:
        mixed.attach(_file_part(filename, content_type, payload))
    return mixed


def _file_part(filename: str, content_type: str, payload: bytes) -> MIMEBase:
    """One attached file, base64.  A text file carries its charset (the one its type names,
    else the one its bytes read in), so mail programs show its umlauts, not mojibake."""
    maintype, _, subtype = content_type.partition(";")[0].strip().lower().partition("/")
    part = MIMEBase(maintype or "application", subtype or "octet-stream")
    if maintype == "text":
        part.set_param("charset", _declared_charset(content_type) or _text_charset(payload))
    part.set_payload(payload)
    encode_base64(part)
    part.add_header("Content-Disposition", "attachment", filename=("utf-8", "", filename))
    return part


def _declared_charset(content_type: str) -> str:
    """The charset parameter of a content type, if it names a charset Python knows ("" for
    none or any other: the type came by mail, and a forged parameter, e.g. one with a line
    break, must not reach a header of ours; the bytes are then read for their charset)."""
    header = email.message.Message()
    header["Content-Type"] = content_type
    declared = header.get_content_charset() or ""
    if not _CHARSET_NAME.fullmatch(declared):
        return ""
    try:
        codecs.lookup(declared)
    except LookupError:
        return ""
    return declared


# What a charset's name may look like (RFC 2978 mime-charset, as Python's codecs know them).
_CHARSET_NAME = re.compile(r"[a-z0-9][a-z0-9._:+-]{0,39}")


def _text_charset(payload: bytes) -> str:
    """The MIME name of the charset a text file (whose own was not kept) is in.

    UTF-16 or UTF-32 by a byte order mark; UTF-8 when it reads as UTF-8; else Windows-1252
    when that reads it (the default of Western mail programs and browsers for text without
    a charset: charset detection names a wrong codepage for short German or French texts);
    else the charset detected (:func:`mailbot.reading.charsets.read_bytes`).
    """
    bom = next((name for mark, name in _BOMS if payload.startswith(mark)), "")
    codec = bom or codecs.lookup(read_bytes(payload, ["utf-8", "cp1252"], detect=True)[1]).name
    name = _MIME_CHARSETS.get(codec, codec)
    return re.sub(r"^cp(125\d)$", r"windows-\1", re.sub(r"^iso8859-", "iso-8859-", name))


# Byte order marks, the longer first (UTF-32's little-endian one begins with UTF-16's).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
# Python's names of codecs that mail programs know by another (IANA) name; the Windows
# (cp125x) and ISO 8859 codecs are renamed by pattern in _text_charset.
_MIME_CHARSETS = {**email_charset.ALIASES, "mac-roman": "macintosh", "cp866": "ibm866",
                  "cp932": "windows-31j", "iso2022_jp": "iso-2022-jp", "utf-16-le": "utf-16le",
                  "utf-16-be": "utf-16be"}
