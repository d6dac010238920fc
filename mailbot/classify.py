"""Decide what kind of mail a message is: customer, agent, auto-reply, bounce, robot or loop.

Rules decide, steps act: every rule here is a pure function of the message and a small
context that returns a :class:`Verdict` (with the reason) or ``None``; the first rule in
:data:`RULES` that answers wins.  Only customer mails are acknowledged.  Signals follow
RFC 3834 (automatic responses), RFC 3464 (delivery status notifications), RFC 8098 (read
receipts) and what Exchange, Gmail, Postfix, Exim and Sieve really send.
"""

from __future__ import annotations

import email
import email.policy
import re
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message as MimePart

from mailbot.message import Message, message_ids

CUSTOMER = "customer"
AGENT = "agent"
AUTO_REPLY = "auto_reply"
BOUNCE = "bounce"
ROBOT = "robot"
LOOP = "loop"


@dataclass(frozen=True)
class ClassifyContext:
    """What classification needs to know about this mailbot instance."""

    # Our support addresses, lower-case; mail from them is our own mail coming back.
    own_addresses: tuple[str, ...]
    # The value our outgoing mails carry in the loop header.
    loop_id: str
    # Name of the loop header on our outgoing mails.
    loop_header: str = "X-Mailbot-Loop"
    # Configured agents, lower-case.
    agent_addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """The kind of a mail, why, and whether it gets an acknowledgement (customers only)."""

    kind: str
    reason: str
    acknowledge: bool = False


_OOF_SUBJECT_RE = re.compile(
    r"(?:(?:re|aw|wg|fw|fwd|antw)\s*:\s*)*"
    r"(?:abwesenheitsnotiz|automatische antwort|out of (?:the )?office|auto-?reply|"
    r"automatic reply|autoreply|i am out of the office|i'm out of the office|"
    r"ich bin nicht im büro|abwesenheit|(?:vacation|urlaub|abwesend)\b\s*(?:[:(-]|$))",
    re.IGNORECASE)
_ROBOT_LOCAL_RE = re.compile(
    r"(?:mailer-daemon|postmaster|no[._-]?reply|do[._-]?not[._-]?reply|bounces?)(?:[+-].*)?")
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
# Headers of our original mail that identify it, most specific first.
_ORIGINAL_ID_HEADERS = ("Message-ID", "X-Mailbot-Id")
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
_SUPPRESS_TOKENS = frozenset({"all", "oof", "autoreply", "dr", "ndr", "rn", "nrn"})
_EXCHANGE_HEADERS = ("X-MS-Exchange-Inbox-Rules-Loop", "X-MS-Exchange-Generated-Message-Source")
_AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_LIST_HEADERS = ("List-Id", "List-Unsubscribe")


def classify(msg: Message, ctx: ClassifyContext) -> Verdict:
    """The verdict of the first rule in :data:`RULES` that matches; a customer otherwise."""
    for rule in RULES:
        verdict = rule(msg, ctx)
        if verdict is not None:
            return verdict
    return Verdict(CUSTOMER, "no automatic-mail signal", acknowledge=True)


def _verdict(kind: str, reason: str) -> Verdict:
    return Verdict(kind, reason, acknowledge=kind == CUSTOMER)


def _first_token(value: str) -> str:
    """Leading keyword of a header value: 'auto-replied (vacation)' -> 'auto-replied'."""
    match = re.match(r"\s*([\w-]+)", value)
    return match.group(1).lower() if match else ""


def _local_part(address: str) -> str:
    return address.rpartition("@")[0] if "@" in address else address


def _without_tag(address: str) -> str:
    """An address without its plus tag: support+t0k3n@example.com -> support@example.com."""
    local, _, domain = address.lower().partition("@")
    return f"{local.split('+', 1)[0]}@{domain}"


def loop_header(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Our own loop header: the mail is ours coming back (another instance's: a robot)."""
    values = [v.strip() for v in msg.header_all(ctx.loop_header)]
    if ctx.loop_id in values:
        return _verdict(LOOP, f"header {ctx.loop_header}: {ctx.loop_id}")
    if values:
        return _verdict(ROBOT, f"header {ctx.loop_header}: {values[0]} (another instance)")
    return None


def own_sender(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """From one of our own support addresses (also with a plus tag): our mail coming back."""
    own = {_without_tag(a) for a in ctx.own_addresses}
    if msg.from_addr and _without_tag(msg.from_addr) in own:
        return _verdict(LOOP, f"From is our own address {msg.from_addr}")
    return None


def delivery_failure(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """A delivery status notification about a failed or delayed delivery."""
    bounce = parse_bounce(msg)
    if bounce is None:
        return None
    state = "permanent failure" if bounce.permanent else "temporary failure"
    recipients = ", ".join(bounce.recipients) or "unknown recipient"
    return _verdict(BOUNCE, f"{state} {bounce.status or '?'} for {recipients}")


def other_report(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Any other multipart/report: read receipts and success notifications."""
    if msg.content_type != "multipart/report":
        return None
    kind = report_type(msg) or "unknown"
    if kind == "disposition-notification":
        return _verdict(ROBOT, "read receipt (multipart/report; disposition-notification)")
    return _verdict(ROBOT, f"multipart/report; report-type={kind}")


def auto_reply_header(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """RFC 3834 auto-replied, X-Autoreply and friends, Precedence: auto_reply."""
    submitted = _first_token(msg.header("Auto-Submitted"))
    if submitted == "auto-replied":
        return _verdict(AUTO_REPLY, f"header Auto-Submitted: {msg.header('Auto-Submitted')}")
    for name in _AUTOREPLY_HEADERS:
        value = msg.header(name)
        if msg.has_header(name) and _first_token(value) not in {"no", "false", "0"}:
            return _verdict(AUTO_REPLY, f"header {name}: {value}")
    if _first_token(msg.header("Precedence")) == "auto_reply":
        return _verdict(AUTO_REPLY, "header Precedence: auto_reply")
    return None


def bulk_or_list(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Mailing lists and newsletters: List-Id, List-Unsubscribe, Precedence bulk/junk/list."""
    for name in _LIST_HEADERS:
        if msg.has_header(name):
            return _verdict(ROBOT, f"header {name}: {msg.header(name)}")
    precedence = _first_token(msg.header("Precedence"))
    if precedence in _BULK_PRECEDENCE:
        return _verdict(ROBOT, f"header Precedence: {precedence}")
    return None


def auto_reply_subject(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Out-of-office subjects ("Automatische Antwort:", "Out of Office", ...), at the start."""
    if _OOF_SUBJECT_RE.match(msg.subject.strip()):
        return _verdict(AUTO_REPLY, f"subject {msg.subject!r}")
    return None


def auto_submitted(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """RFC 3834: any Auto-Submitted value other than 'no' is automatic mail."""
    keyword = _first_token(msg.header("Auto-Submitted"))
    if msg.has_header("Auto-Submitted") and keyword != "no":
        return _verdict(ROBOT, f"header Auto-Submitted: {msg.header('Auto-Submitted')}")
    return None


def response_suppress(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """X-Auto-Response-Suppress (All, OOF, AutoReply, ...): the sender is an automatic mailer."""
    value = msg.header("X-Auto-Response-Suppress")
    tokens = {t.strip().lower() for t in value.split(",")}
    if tokens & _SUPPRESS_TOKENS:
        return _verdict(ROBOT, f"header X-Auto-Response-Suppress: {value}")
    return None


def exchange_generated(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Mail generated or redirected by Exchange inbox rules."""
    for name in _EXCHANGE_HEADERS:
        if msg.has_header(name):
            return _verdict(ROBOT, f"header {name}: {msg.header(name)}")
    return None


def null_return_path(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """An empty Return-Path (<>): the envelope of automatic mail (RFC 5321 section 4.5.5)."""
    return _verdict(ROBOT, "empty Return-Path <>") if _null_return_path(msg) else None


def _null_return_path(msg: Message) -> bool:
    values = msg.header_all("Return-Path")
    return bool(values) and all(v.strip() in {"<>", ""} for v in values)


def robot_sender(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """MAILER-DAEMON@, postmaster@, no-reply@, do-not-reply@, bounce(s)@ senders."""
    if _ROBOT_LOCAL_RE.fullmatch(_local_part(msg.from_addr)):
        return _verdict(ROBOT, f"sender {msg.from_addr}")
    return None


def agent_sender(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """From a configured agent (whether the agent may act is decided by the reply token)."""
    if msg.from_addr and msg.from_addr in {a.lower() for a in ctx.agent_addresses}:
        return _verdict(AGENT, f"From is agent {msg.from_addr}")
    return None


# The order of the rules: the first that answers decides.  Loops first (never a ticket),
# then bounces and reports, auto-replies before the generic robot signals they also carry.
RULES: tuple[Callable[[Message, ClassifyContext], Verdict | None], ...] = (
    loop_header,
    own_sender,
    delivery_failure,
    other_report,
    auto_reply_header,
    bulk_or_list,
    auto_reply_subject,
    auto_submitted,
    response_suppress,
    exchange_generated,
    null_return_path,
    robot_sender,
    agent_sender,
)


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
    tree = email.message_from_bytes(msg.raw, policy=email.policy.compat32)
    blocks = [b for b in _status_blocks(tree) if _field(b, "Action") in {"failed", "delayed"}]
    if not blocks:
        return None
    permanent = [b for b in blocks if _is_permanent(b)]
    chosen = (permanent or blocks)[0]
    return Bounce(
        permanent=bool(permanent),
        recipients=tuple(dict.fromkeys(_recipient(b) for b in (permanent or blocks))),
        status=_field(chosen, "Status"),
        reason=_after_type(_field(chosen, "Diagnostic-Code", lower=False)) or msg.subject,
        original_message_id=_attached_id(tree) or _reply_id(msg),
    )


def _status_blocks(tree: MimePart) -> list[MimePart]:
    """The per-recipient field blocks of every message/delivery-status part."""
    blocks: list[MimePart] = []
    for part in tree.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks.extend(b for b in payload if isinstance(b, MimePart) and b.get("Action"))
    return blocks


def _field(block: MimePart, name: str, lower: bool = True) -> str:
    text = " ".join(str(block.get(name, "")).split())
    return text.lower() if lower else text


def _is_permanent(block: MimePart) -> bool:
    status = _field(block, "Status")
    if status[:1] in {"4", "5"}:
        return status.startswith("5") and _field(block, "Action") == "failed"
    return _field(block, "Action") == "failed"


def _after_type(value: str) -> str:
    """'rfc822; a@b' -> 'a@b', 'smtp; 550 ...' -> '550 ...'."""
    return value.split(";", 1)[1].strip() if ";" in value else value.strip()


def _recipient(block: MimePart) -> str:
    original = _after_type(_field(block, "Original-Recipient"))
    return original or _after_type(_field(block, "Final-Recipient"))


def _attached_id(tree: MimePart) -> str:
    """Message-ID of the returned original (message/rfc822 or text/rfc822-headers part)."""
    for part in tree.walk():
        headers = _attached_headers(part)
        for name in _ORIGINAL_ID_HEADERS:
            found = message_ids(str(headers.get(name, ""))) if headers is not None else ()
            if found:
                return found[0]
    return ""


def _attached_headers(part: MimePart) -> MimePart | None:
    content_type = part.get_content_type()
    if content_type == "message/rfc822":
        payload = part.get_payload()
        return payload[0] if isinstance(payload, list) and payload else None
    if content_type == "text/rfc822-headers":
        raw = part.get_payload(decode=True) or b""
        return email.message_from_bytes(raw, policy=email.policy.compat32)
    return None


def _reply_id(msg: Message) -> str:
    """Some MTAs thread their DSN onto the original: In-Reply-To, then References."""
    return next(iter(msg.in_reply_to + msg.references), "")


def _looks_like_bounce(msg: Message) -> bool:
    if msg.has_header("X-Failed-Recipients"):
        return True
    daemon = bool(_DAEMON_LOCAL_RE.fullmatch(_local_part(msg.from_addr)))
    if not (daemon or _null_return_path(msg)):
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
    robots = (a for a in found if not _ROBOT_LOCAL_RE.fullmatch(_local_part(a.lower())))
    return tuple(dict.fromkeys(a.lower() for a in robots if a.lower() != msg.from_addr))


def _text_id(text: str) -> str:
    match = _ORIGINAL_ID_RE.search(text)
    return match.group(1).strip("<>") if match else ""

