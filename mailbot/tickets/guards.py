"""Whom we answer and who may add to a ticket: addresses, the acknowledgement limit, strangers.

Why an acknowledgement was held is an English sentence on the ticket's event (for operators
and the log); :func:`held_reason` reads it back as a :class:`Reason` the agents' mail words
in its own language.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from mailbot.context import Context
from mailbot.outbound.wording import Reason
from mailbot.reading.authentication import authentication
from mailbot.reading.message import Message
from mailbot.store import outbox as oq
from mailbot.store import tickets as tq
from mailbot.tickets.identify import Identity


def hold_acknowledgement(ctx: Context, msg: Message, now: datetime) -> str:
    """Why an acknowledgement must not be sent, or ``""``.

    No answer goes where it would be backscatter: to no address or one nobody can deliver
    to, to a sender our border MTA found forged (SPF or DMARC failed in its
    Authentication-Results), or beyond the rate limit.
    """
    if not msg.from_addr:
        return NO_SENDER
    problem = undeliverable(msg.from_addr) or forged(ctx, msg)
    if problem:
        return problem
    limit = ctx.config.hygiene.max_acks_per_hour
    sent = oq.acknowledgements_since(ctx.store, msg.from_addr, now - timedelta(hours=1))
    if sent >= limit:
        return f"{RATE_LIMIT}{sent} acknowledgements to {msg.from_addr} in the last hour"
    return ""


def undeliverable(address: str) -> str:
    """Why no mail can go to ``address``, judged by its form alone (no DNS), or ``""``.

    Control characters, no domain, broken quoting or no address at all would make the
    relay or the mail library refuse the mail; an internationalised address is fine.
    """
    try:
        validate_email(address, check_deliverability=False, allow_quoted_local=True)
    except EmailNotValidError as exc:
        return f"{address!r}{UNDELIVERABLE}{exc}"
    return ""


def forged(ctx: Context, msg: Message) -> str:
    """Why the sender is not who the mail claims (by our border MTA's verdicts), or ``""``:
    "DMARC failed for example.com (Authentication-Results of mx.example.com)"."""
    found = authentication(msg, ctx.config.trust.authserv_id)
    if found.dmarc == "fail":
        method, domain = "DMARC", found.dmarc_domain
    elif found.spf == "fail":
        method, domain = "SPF", found.spf_domain
    else:
        return ""
    where = f" for {domain}" if domain else ""
    return f"{method} failed{where} (Authentication-Results of {ctx.config.trust.authserv_id})"


# The fixed parts of the reasons above, by which held_reason knows them again.
NO_SENDER = "no sender address to answer to"
RATE_LIMIT = "rate limit: "
UNDELIVERABLE = " is not a deliverable address: "
_FORGED = re.compile(r"(SPF|DMARC) failed(?: for (\S+))? \(Authentication-Results of (.*)\)")
_RATE = re.compile(re.escape(RATE_LIMIT) + r"(\d+) ")
# The header classify's verdict names when the sender asked for no automatic reply (no rule
# for automatic mail looks at it).
_NO_AUTO_REPLY = "X-Auto-Response-Suppress"


def held_reason(ticket: dict, address: str, reason: str) -> Reason:
    """The reason of a ticket's ``acknowledgement_held`` event (``reason``, its sender
    ``address``) as a code the agents' mail words: one of this module's holds, else the
    classifier's verdict on a ticket opened without acknowledgement (automatic mail, or a
    sender who asked for none); "held" for a reason of neither kind."""
    shown = address if address.isprintable() else ascii(address)
    if reason == NO_SENDER:
        return Reason("no_sender")
    if UNDELIVERABLE in reason:
        return Reason("undeliverable", {"address": shown})
    if match := _RATE.match(reason):
        return Reason("rate_limit", {"sent": match.group(1)})
    if match := _FORGED.fullmatch(reason):
        domain = match.group(2) or address.rpartition("@")[2]
        return Reason("forged", {"method": match.group(1), "domain": domain,
                                 "authserv": match.group(3)})
    if not ticket.get("auto_mail", 1):
        return Reason("no_auto_reply" if _NO_AUTO_REPLY in reason else "automatic")
    return Reason("held")


def is_stranger(ctx: Context, msg: Message, ticket: dict, identity: Identity) -> bool:
    """Whether the sender has no business on ``ticket`` (not contact, participant or colleague)."""
    if ctx.config.hygiene.stranger_followup == "accept":
        return False
    if msg.from_addr in tq.participants(ctx.store, ticket["id"]):
        return False
    account = identity.account
    return not (account and ticket["account_id"] == account["id"])
