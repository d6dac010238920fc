"""Delivery status notifications (RFC 3464) and the plain-text bounces of older MTAs.

Pure: reads a :class:`~mailbot.message.Message` and says which of our mails failed,
for whom, and why.  :mod:`mailbot.classify` uses it to recognise bounces,
:mod:`mailbot.bounces` to act on them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import getaddresses

from mailbot.reading.headers import base_address
from mailbot.reading.message import Message

_DAEMON_LOCAL_RE = re.compile(r"mailer-daemon|postmaster")
_BOUNCE_SUBJECT_RE = re.compile(
    r"(?:undelivered mail|mail delivery failed|delivery status notification|failure notice|"
    r"undeliverable|unzustellbar|nicht zustellbar|returned mail|delivery failure|"
    r"warning: could not send|mail delivery delayed|delayed mail)", re.IGNORECASE)
_BOUNCE_TEXT_RE = re.compile(
    r"delivery to the following recipient(?:s)? failed|could not be delivered|"
    r"wasn't able to deliver|was not delivered|message could not be delivered|"
    r"konnte nicht zugestellt werden|permanent(?:ly)? fail", re.IGNORECASE)
_DELAY_TEXT_RE = re.compile(
    r"delayed|will (?:keep|continue) trying|will retry|not yet been delivered|"
    r"noch nicht zugestellt|verzögert", re.IGNORECASE)
_ENHANCED_STATUS_RE = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")
_SMTP_CODE_RE = re.compile(r"\b([45]\d\d)[ -]")
_ADDRESS_RE = re.compile(r"[\w.+=-]+@[\w-]+(?:\.[\w-]+)+")
_COPY_START_RE = re.compile(
    r"^(?:return-path:|received:|message-id:|-+ ?(?:this is a copy|original message|"
    r"below this line))", re.IGNORECASE | re.MULTILINE)
_ORIGINAL_ID_RE = re.compile(r"^(?:message-id|x-mailbot-id):[ \t]*(<[^<>\s]+>)",
                             re.IGNORECASE | re.MULTILINE)
_REPORT_TYPE_RE = re.compile(r"report-type\s*=\s*\"?([\w-]+)", re.IGNORECASE)
# Where delivery agents record the address they delivered a mail to (its envelope recipient).
ENVELOPE_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "X-Delivered-To", "Envelope-To",
                              "X-Envelope-To")
ROBOT_LOCAL_RE = re.compile(
    r"(?:mailer-daemon|postmaster|no[._-]?reply|do[._-]?not[._-]?reply|bounces?)(?:[+-].*)?")
def local_part(address: str) -> str:
    """The part of an address before the @."""
    return address.rpartition("@")[0] if "@" in address else address


def null_return_path(msg: Message) -> bool:
    """Whether the mail came with an empty envelope sender (Return-Path: <>)."""
    values = msg.header_all("Return-Path")
    return bool(values) and all(v.strip() in {"<>", ""} for v in values)


def own_tags(msg: Message, own_addresses: tuple[str, ...]) -> tuple[str, ...]:
    """The +tags of our own addresses that a mail was addressed or delivered to, lower-case.

    A bounce goes to the envelope sender of the mail that failed: MTAs write it into To,
    delivery agents record it in Delivered-To, X-Original-To or Envelope-To.
    """
    own = {base_address(a) for a in own_addresses}
    recorded = getaddresses([*msg.recipients, *(v for name in ENVELOPE_RECIPIENT_HEADERS
                                                for v in msg.header_all(name))])
    addresses = (address.strip().lower() for _, address in recorded)
    tags = (local_part(a).partition("+")[2] for a in addresses if base_address(a) in own)
    return tuple(dict.fromkeys(t for t in tags if t))


@dataclass(frozen=True)
class Bounce:
    """What a delivery status notification says about one of our outgoing mails."""

    # True for a final failure (5.x.x), False for a delay or temporary failure (4.x.x).
    permanent: bool
    # The recipients whose delivery failed, lower-case.
    recipients: tuple[str, ...]
    # Enhanced status code ("5.1.1") or SMTP code ("550"), "" when unknown.
    status: str
    # The diagnostic text of the remote server, or the DSN's own explanation.
    reason: str
    # Message-ID (without angle brackets) of our mail that bounced, "" when unknown.
    original_message_id: str


def parse_bounce(msg: Message) -> Bounce | None:
    """The failure a delivery status notification reports; None if the mail is not one.

    RFC 3464 reports are read field by field; the plain-text bounces of older MTAs (Exim,
    qmail, old Gmail) and X-Failed-Recipients are read heuristically.  A report that only
    says "delivered" is not a bounce.
    """
    if msg.content_type == "multipart/report" and report_type(msg) == "delivery-status":
        return _rfc3464_bounce(msg)
    if _looks_like_bounce(msg):
        return _plain_bounce(msg)
    return None


def report_type(msg: Message) -> str:
    """The report-type parameter of a multipart/report mail, lower-case, or ""."""
    match = _REPORT_TYPE_RE.search(msg.header("Content-Type"))
    return match.group(1).lower() if match else ""


def _rfc3464_bounce(msg: Message) -> Bounce | None:
    """A report read field by field (the fields come from the one parse of the mail)."""
    blocks = [dict(b) for b in msg.status_blocks]
    blocks = [b for b in blocks if _field(b, "Action") in {"failed", "delayed"}]
    if not blocks:
        return None
    permanent = [b for b in blocks if _is_permanent(b)]
    chosen = (permanent or blocks)[0]
    return Bounce(
        permanent=bool(permanent),
        recipients=tuple(dict.fromkeys(_recipient(b) for b in (permanent or blocks))),
        status=_field(chosen, "Status"),
        reason=_after_type(_field(chosen, "Diagnostic-Code", lower=False)) or msg.subject,
        original_message_id=next(iter(msg.returned_ids), "") or _reply_id(msg),
    )


def _field(block: dict[str, str], name: str, lower: bool = True) -> str:
    text = block.get(name.lower(), "")
    return text.lower() if lower else text


def _is_permanent(block: dict[str, str]) -> bool:
    status = _field(block, "Status")
    if status[:1] in {"4", "5"}:
        return status.startswith("5") and _field(block, "Action") == "failed"
    return _field(block, "Action") == "failed"


def _after_type(value: str) -> str:
    """'rfc822; a@b' -> 'a@b', 'smtp; 550 ...' -> '550 ...'."""
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def _recipient(block: dict[str, str]) -> str:
    original = _after_type(_field(block, "Original-Recipient"))
    return original or _after_type(_field(block, "Final-Recipient"))


def _reply_id(msg: Message) -> str:
    """Some MTAs thread their DSN onto the original: In-Reply-To, then References."""
    return next(iter(msg.in_reply_to + msg.references), "")


def _looks_like_bounce(msg: Message) -> bool:
    if msg.has_header("X-Failed-Recipients"):
        return True
    daemon = bool(_DAEMON_LOCAL_RE.fullmatch(local_part(msg.from_addr)))
    if not (daemon or null_return_path(msg)):
        return False
    return bool(_BOUNCE_SUBJECT_RE.search(msg.subject) or _BOUNCE_TEXT_RE.search(msg.text))


def _plain_bounce(msg: Message) -> Bounce:
    explanation = _COPY_START_RE.split(msg.text, maxsplit=1)[0]
    status = _status_code(explanation)
    delayed = status.startswith("4") or (not status and _DELAY_TEXT_RE.search(explanation))
    return Bounce(
        permanent=not delayed,
        recipients=_failed_recipients(msg, explanation),
        status=status,
        reason=_status_line(explanation, status) or msg.subject,
        original_message_id=_text_id(msg.text[len(explanation):]) or _reply_id(msg),
    )


def _status_code(text: str) -> str:
    match = _ENHANCED_STATUS_RE.search(text) or _SMTP_CODE_RE.search(text)
    return match.group(1) if match else ""


def _status_line(text: str, status: str) -> str:
    line = next((ln for ln in text.splitlines() if status and status in ln), "")
    return " ".join(line.split())[:300]


def _failed_recipients(msg: Message, explanation: str) -> tuple[str, ...]:
    listed = ",".join(msg.header_all("X-Failed-Recipients"))
    found = _ADDRESS_RE.findall(listed) or _ADDRESS_RE.findall(explanation)
    robots = (a for a in found if not ROBOT_LOCAL_RE.fullmatch(local_part(a.lower())))
    return tuple(dict.fromkeys(a.lower() for a in robots if a.lower() != msg.from_addr))


def _text_id(text: str) -> str:
    match = _ORIGINAL_ID_RE.search(text)
    return match.group(1).strip("<>") if match else ""

