"""Decide what kind of mail a message is: customer, agent, auto-reply, bounce, robot or loop.

Rules decide, steps act: every rule here is a pure function of the message and a small
context that returns a :class:`Verdict` (with the reason) or ``None``; the first rule in
:data:`RULES` that answers wins.  Only customer mails are acknowledged.  Signals follow
RFC 3834 (automatic responses), RFC 3464 (delivery status notifications), RFC 8098 (read
receipts) and what Exchange, Gmail, Postfix, Exim and Sieve really send.

Every copy of a signal header counts, not just the first: a list server or a relay may add
its own ``Precedence`` or ``Auto-Submitted`` below the sender's.  Outlook and Exchange mark
ordinary mail too (``Thread-Index``, ``X-MS-Exchange-*``, and ``X-Auto-Response-Suppress``
on meeting responses and some plain sends): none of these makes a person's mail a robot.
``X-Auto-Response-Suppress: All`` (or ``AutoReply``) is the sender's request that no
automatic reply answer the mail; our acknowledgement is one, so such a mail is a customer's
whose ticket is opened without an acknowledgement.  Exchange's own answers (out-of-office,
inbox-rule replies) say ``X-MS-Exchange-Inbox-Rules-Loop`` and reply to a mail: auto-replies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from mailbot.reading import dsn
from mailbot.reading.dsn import ROBOT_LOCAL_RE, Bounce, local_part, parse_bounce, report_type
from mailbot.reading.headers import base_address
from mailbot.reading.message import Message

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
    """The kind of a mail, why, and whether it gets an acknowledgement (customers only).

    A bounce carries the delivery report it was recognised by, read once, here.
    """

    kind: str
    reason: str
    acknowledge: bool = False
    bounce: Bounce | None = None


_OOF_SUBJECT_RE = re.compile(
    r"(?:(?:re|aw|wg|fw|fwd|antw|tr|rv|r|sv|odp)\s*:\s*)*"
    r"(?:abwesenheitsnotiz|automatische antwort|out of (?:the )?office|auto-?reply|"
    r"automatic reply|autoreply|i am out of the office|i'm out of the office|"
    r"ich bin nicht im büro|abwesenheit|(?:vacation|urlaub|abwesend)\b\s*(?:[:(-]|$)|"
    # Exchange/Outlook out-of-office subjects in French, Spanish, Italian, Dutch, Polish,
    # Portuguese, the Scandinavian languages and Czech
    r"r[ée]ponse automatique|respuesta autom[áa]tica|risposta automatica|"
    r"automatisch antwoord|odpowied[źz] automatyczna|resposta autom[áa]tica|"
    r"automatiskt? svar|automatick[áa] odpov[ěe]ď)",
    re.IGNORECASE)
_BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
# X-Auto-Response-Suppress tokens that ask automatic replies (like our acknowledgement) not
# to answer; DR, NDR, RN, NRN and OOF name other kinds of automatic mail.
_NO_AUTO_REPLY_TOKENS = frozenset({"all", "autoreply"})
# Exchange stamps these on mail its inbox rules generate: out-of-office, rule replies, forwards.
_EXCHANGE_HEADERS = ("X-MS-Exchange-Inbox-Rules-Loop", "X-MS-Exchange-Generated-Message-Source")
_NEGATIVE_TOKENS = frozenset({"no", "false", "0"})
_AUTOREPLY_HEADERS = ("X-Autoreply", "X-Autorespond", "X-Autoresponder")
_LIST_HEADERS = ("List-Id", "List-Unsubscribe")


def classify(msg: Message, ctx: ClassifyContext, null_sender: bool = False) -> Verdict:
    """The verdict of the first rule in :data:`RULES` that matches; a customer otherwise.

    ``null_sender``: the MTA delivered the mail from the null envelope sender (MAIL FROM:<>),
    which only automatic mail uses and nothing automatic may answer (RFC 3834 section 2),
    whatever its From header says: a robot's, like an empty Return-Path.
    """
    for rule in RULES:
        verdict = rule(msg, ctx)
        if verdict is not None:
            return verdict
    if null_sender:
        return _verdict(ROBOT, "null envelope sender (MAIL FROM:<>)")
    return Verdict(CUSTOMER, "no automatic-mail signal", acknowledge=True)


def _verdict(kind: str, reason: str) -> Verdict:
    return Verdict(kind, reason, acknowledge=kind == CUSTOMER)


def _first_token(value: str) -> str:
    """Leading keyword of a header value: 'auto-replied (vacation)' -> 'auto-replied'."""
    match = re.match(r"\s*([\w-]+)", value)
    return match.group(1).lower() if match else ""


def _keywords(msg: Message, name: str) -> tuple[str, ...]:
    """The leading keyword of every copy of header ``name``, in order."""
    return tuple(_first_token(value) for value in msg.header_all(name))


def _tokens(msg: Message, name: str) -> frozenset[str]:
    """The comma-separated tokens of every copy of header ``name``, lower-case."""
    return frozenset(token.strip().lower() for value in msg.header_all(name)
                     for token in value.split(","))


def _shown(msg: Message, name: str) -> str:
    """Header ``name`` as a reason shows it: every copy, joined."""
    return f"header {name}: {'; '.join(v.strip() for v in msg.header_all(name))}"


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
    own = {base_address(a) for a in ctx.own_addresses}
    if msg.from_addr and base_address(msg.from_addr) in own:
        return _verdict(LOOP, f"From is our own address {msg.from_addr}")
    return None


def delivery_failure(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """A delivery status notification about a failed or delayed delivery."""
    bounce = parse_bounce(msg)
    if bounce is None:
        return None
    state = "permanent failure" if bounce.permanent else "temporary failure"
    recipients = ", ".join(bounce.recipients) or "unknown recipient"
    return Verdict(BOUNCE, f"{state} {bounce.status or '?'} for {recipients}", bounce=bounce)


def other_report(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Any other multipart/report: read receipts and success notifications."""
    if msg.content_type != "multipart/report":
        return None
    kind = report_type(msg) or "unknown"
    if kind == "disposition-notification":
        return _verdict(ROBOT, "read receipt (multipart/report; disposition-notification)")
    return _verdict(ROBOT, f"multipart/report; report-type={kind}")


def auto_reply_header(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """RFC 3834 auto-replied, X-Autoreply and friends, Precedence: auto_reply (any copy)."""
    if "auto-replied" in _keywords(msg, "Auto-Submitted"):
        return _verdict(AUTO_REPLY, _shown(msg, "Auto-Submitted"))
    for name in _AUTOREPLY_HEADERS:
        if any(k not in _NEGATIVE_TOKENS for k in _keywords(msg, name)):
            return _verdict(AUTO_REPLY, _shown(msg, name))
    if "auto_reply" in _keywords(msg, "Precedence"):
        return _verdict(AUTO_REPLY, "header Precedence: auto_reply")
    return None


def exchange_reply(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Exchange's out-of-office and inbox-rule replies, whatever their language: automatic
    mail (Auto-Submitted) from an inbox rule (X-MS-Exchange-Inbox-Rules-Loop) that replies
    to another mail (In-Reply-To).  A rule's forward replies to nothing; a redirect keeps
    the person's own headers, without Auto-Submitted."""
    names = [name for name in _EXCHANGE_HEADERS if msg.has_header(name)]
    automatic = any(k != "no" for k in _keywords(msg, "Auto-Submitted"))
    if names and automatic and msg.in_reply_to:
        return _verdict(AUTO_REPLY, f"{_shown(msg, names[0])}, replying to a mail")
    return None


def bulk_or_list(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Mailing lists and newsletters: List-Id, List-Unsubscribe, Precedence bulk/junk/list."""
    for name in _LIST_HEADERS:
        if msg.has_header(name):
            return _verdict(ROBOT, f"header {name}: {msg.header(name)}")
    bulk = [k for k in _keywords(msg, "Precedence") if k in _BULK_PRECEDENCE]
    if bulk:
        return _verdict(ROBOT, f"header Precedence: {bulk[0]}")
    return None


def auto_reply_subject(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Out-of-office subjects ("Automatische Antwort:", "Out of Office", ...), at the start."""
    if _OOF_SUBJECT_RE.match(msg.subject.strip()):
        return _verdict(AUTO_REPLY, f"subject {msg.subject!r}")
    return None


def auto_submitted(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """RFC 3834: any Auto-Submitted value other than 'no' (in any copy) is automatic mail."""
    if any(k != "no" for k in _keywords(msg, "Auto-Submitted")):
        return _verdict(ROBOT, _shown(msg, "Auto-Submitted"))
    return None


def exchange_generated(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """Mail generated, forwarded or redirected by Exchange inbox rules."""
    for name in _EXCHANGE_HEADERS:
        if msg.has_header(name):
            return _verdict(ROBOT, _shown(msg, name))
    return None


def null_return_path(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """An empty Return-Path (<>): the envelope of automatic mail (RFC 5321 section 4.5.5)."""
    return _verdict(ROBOT, "empty Return-Path <>") if dsn.null_return_path(msg) else None


def robot_sender(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """MAILER-DAEMON@, postmaster@, no-reply@, do-not-reply@, bounce(s)@ senders."""
    if ROBOT_LOCAL_RE.fullmatch(local_part(msg.from_addr)):
        return _verdict(ROBOT, f"sender {msg.from_addr}")
    return None


def agent_sender(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """From a configured agent (whether the agent may act is decided by the reply token)."""
    if msg.from_addr and msg.from_addr in {a.lower() for a in ctx.agent_addresses}:
        return _verdict(AGENT, f"From is agent {msg.from_addr}")
    return None


def no_auto_reply_wanted(msg: Message, ctx: ClassifyContext) -> Verdict | None:
    """A person's mail whose sender asked that no automatic reply answer it
    (X-Auto-Response-Suppress: All or AutoReply, as Outlook writes on meeting responses and
    some ordinary mail): a customer's, not acknowledged.  Last, so every robot rule has
    spoken first."""
    tokens = _tokens(msg, "X-Auto-Response-Suppress")
    if tokens & _NO_AUTO_REPLY_TOKENS:
        return Verdict(CUSTOMER, f"{_shown(msg, 'X-Auto-Response-Suppress')}: the sender asked "
                                 "for no automatic reply", acknowledge=False)
    return None


# The order of the rules: the first that answers decides.  Loops first (never a ticket),
# then bounces and reports, auto-replies before the generic robot signals they also carry;
# the sender's wish for no automatic reply last, as it speaks only for a person's mail.
RULES: tuple[Callable[[Message, ClassifyContext], Verdict | None], ...] = (
    loop_header,
    own_sender,
    delivery_failure,
    other_report,
    auto_reply_header,
    exchange_reply,
    bulk_or_list,
    auto_reply_subject,
    auto_submitted,
    exchange_generated,
    null_return_path,
    robot_sender,
    agent_sender,
    no_auto_reply_wanted,
)
