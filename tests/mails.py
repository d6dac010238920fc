"""Realistic inbound test mails, built the way real mail programs write them.

German and English, plain text, HTML-only or both, with attachments; bodies in
ISO-8859-1/15, Windows-1252 or UTF-8, sent quoted-printable, base64 or 8bit; the
subject and the sender's name as encoded-words in the same charset.  Everything is
returned as raw CRLF bytes, ready for IMAP APPEND, SMTP DATA or `mailbot ingest`.
"""

from __future__ import annotations

import email.charset
import email.encoders
import email.policy
from dataclasses import dataclass
from datetime import UTC, datetime
from email.generator import BytesGenerator
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import format_datetime, formataddr, make_msgid
from io import BytesIO

SUPPORT = "support@example.com"
CUSTOMER = ("Jürgen Müller", "juergen.mueller@kunde.example")
TRANSFERS = {"quoted-printable": email.charset.QP, "base64": email.charset.BASE64,
             "8bit": None}
WIRE = email.policy.compat32.clone(linesep="\r\n", max_line_length=78)


@dataclass(frozen=True)
class Encoded:
    """One way of writing German text into a mail, and text that survives it."""

    charset: str
    transfer: str
    subject: str
    name: str
    text: str

    @property
    def label(self) -> str:
        """A short id for test parametrisation."""
        return f"{self.charset}-{self.transfer}"


# ISO-8859-1 has no € and no typographic quotes; ISO-8859-15 has € but no quotes.
ENCODINGS = (
    Encoded("iso-8859-1", "quoted-printable", "Störung: Drucker läuft heiß",
            "Jürgen Größer", "Grüße aus Köln, die Tür ist zu groß. Straße: Äußere Ö-Gasse.\n"),
    Encoded("iso-8859-15", "base64", "Rechnung über 12,50 € fehlt",
            "Dörte Weiß", "Die Rechnung über 12,50 € für März fehlt. Schöne Grüße!\n"),
    Encoded("windows-1252", "quoted-printable", "„Wichtig“: Lizenz für Büro",
            "Björn Schäfer", "Er sagte „geht nicht“ und “fertig” – Kosten 99 €, Maß: groß.\n"),
    Encoded("utf-8", "base64", "Fehler beim Öffnen – “Datei” ß € 日本",
            "Zoë Ähre-Ünal", "Übergröße: ä ö ü ß € “quotes” ‚einfach‘ – 日本語 ✓\n"),
    Encoded("utf-8", "8bit", "Anfrage zu Ölstand und Maßen",
            "Änne Öztürk", "8bit-Text mit ä ö ü ß € “quotes” direkt im Körper.\n"),
)


def build_mail(*, subject: str = "Drucker druckt nicht", sender: tuple[str, str] = CUSTOMER,
               to: str = SUPPORT, text: str | None = "Hallo,\nunser Drucker druckt nicht.\n",
               html: str | None = None, charset: str = "utf-8",
               transfer: str = "quoted-printable",
               attachments: tuple[tuple[str, str, bytes], ...] = (),
               message_id: str | None = None, in_reply_to: str = "",
               references: tuple[str, ...] = (), date: datetime | None = None,
               headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """One inbound mail as raw CRLF bytes; pass ``message_id=""`` to leave the header out.

    ``attachments`` are ``(filename, content_type, payload)``; names with non-ASCII
    characters are written RFC 2231-encoded, as Thunderbird and Outlook do.
    """
    cs = _charset(charset, transfer)
    body = _body(text, html, cs)
    msg = _with_attachments(body, attachments)
    msg["From"] = formataddr(sender, charset=cs)
    msg["To"] = to
    msg["Subject"] = subject if subject.isascii() else Header(subject, cs, header_name="Subject")
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    if message_id != "":
        msg["Message-ID"] = f"<{message_id}>" if message_id else make_msgid(domain="kunde.example")
    if in_reply_to:
        msg["In-Reply-To"] = f"<{in_reply_to}>"
    if references:
        msg["References"] = " ".join(f"<{r}>" for r in references)
    for name, value in headers:
        msg[name] = value
    return as_bytes(msg)


def encoded_mail(case: Encoded, sender_addr: str = CUSTOMER[1], **extra) -> bytes:
    """A plain-text mail written in one of :data:`ENCODINGS`."""
    return build_mail(subject=case.subject, sender=(case.name, sender_addr), text=case.text,
                      charset=case.charset, transfer=case.transfer, **extra)


def message_id_of(raw: bytes) -> str:
    """The Message-ID of a raw mail, without angle brackets."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    return str(msg["Message-ID"]).strip().strip("<>")


def as_bytes(msg) -> bytes:
    """Serialise a message exactly as it goes on the wire (CRLF line ends)."""
    out = BytesIO()
    BytesGenerator(out, policy=WIRE).flatten(msg)
    return out.getvalue()


def _charset(name: str, transfer: str) -> email.charset.Charset:
    cs = email.charset.Charset(name)
    cs.header_encoding = email.charset.BASE64 if transfer == "base64" else email.charset.QP
    cs.body_encoding = TRANSFERS[transfer]
    return cs


def _text_part(content: str, subtype: str, cs: email.charset.Charset) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype, charset=cs.input_charset)
    part.set_payload(content.replace("\n", "\r\n"), cs)
    return part


def _body(text: str | None, html: str | None, cs: email.charset.Charset):
    parts = [_text_part(content, subtype, cs)
             for content, subtype in ((text, "plain"), (html, "html")) if content is not None]
    if len(parts) == 1:
        return parts[0]
    alternative = MIMEMultipart("alternative")
    for part in parts:
        alternative.attach(part)
    return alternative


def _with_attachments(body, attachments: tuple[tuple[str, str, bytes], ...]):
    if not attachments:
        return body
    mixed = MIMEMultipart("mixed")
    mixed.attach(body)
    for filename, content_type, payload in attachments:
        maintype, _, subtype = content_type.partition("/")
        part = MIMEBase(maintype, subtype)
        part.set_payload(payload)
        email.encoders.encode_base64(part)
        name = filename if filename.isascii() else ("utf-8", "", filename)
        part.add_header("Content-Disposition", "attachment", filename=name)
        mixed.attach(part)
    return mixed


def slow_mail(parameters: int = 120_000, number: int = 1) -> bytes:
    """A mail whose Content-Type holds ``parameters`` parameters, 500 a line (SMTP takes it):
    the standard library reads them in time that grows with the square of their number (the
    default takes about half a minute), so only the per-mail budget stops it."""
    params = [b"p%d=v" % i for i in range(parameters)]
    lines = b";\r\n ".join(b"; ".join(params[i:i + 500]) for i in range(0, parameters, 500))
    return (b"From: Kunde <kunde@kunde.example>\r\nTo: support@example.com\r\n"
            b"Subject: Langsam\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n"
            b"Message-ID: <slow.%d@kunde.example>\r\nContent-Type: text/plain;\r\n " % number
            + lines + b"\r\n\r\nHallo\r\n")
