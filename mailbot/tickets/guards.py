"""Whom we answer and who may add to a ticket: addresses, the acknowledgement limit, strangers.

Why an acknowledgement was held is a :class:`Hold`: a :class:`Reason` (a code and its
values, which the agents' mail words in its own language) and an English detail for
operators.  The ticket's ``acknowledgement_held`` event keeps both (:meth:`Hold.event`);
:func:`held_reason` reads the code back, and still words the English-only events that
older versions wrote.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from email_validator import EmailNotValidError, validate_email

from mailbot.outbound.wording import Reason
from mailbot.reading.authentication import authentication
from mailbot.reading.classify import CUSTOMER, Verdict
from mailbot.reading.message import Message
from mailbot.store import outbox as oq
from mailbot.store import tickets as tq
from mailbot.tickets.identify import Identity

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context


@dataclass(frozen=True)
class Hold:
    """Why a customer gets no acknowledgement: the reason the agents' mail words, and the
    detail operators read in the ticket's history and the log (English, as it was found)."""

    reason: Reason
    detail: str

    def event(self) -> dict:
        """The data of the ticket's ``acknowledgement_held`` event: the detail as its
        ``reason`` (where older versions kept their only text), the code and its values."""
        return {"reason": self.detail, "code": self.reason.code,
                "values": dict(self.reason.values)}


def hold_acknowledgement(ctx: Context, msg: Message, now: datetime) -> Hold | None:
    """Why an acknowledgement must not be sent, or None.

    No answer goes where it would be backscatter: to no address or one nobody can deliver
    to, to a sender our border MTA found forged (SPF or DMARC failed in its
    Authentication-Results), or beyond the rate limit.
    """
    if not msg.from_addr:
        return Hold(Reason("no_sender"), NO_SENDER)
    problem = undeliverable(msg.from_addr)
    if problem:
        return Hold(Reason("undeliverable", {"address": _shown(msg.from_addr)}), problem)
    hold = forged(ctx, msg)
    if hold is not None:
        return hold
    limit = ctx.config.hygiene.max_acks_per_hour
    sent = oq.acknowledgements_since(ctx.store, msg.from_addr, now - timedelta(hours=1))
    if sent >= limit:
        return Hold(Reason("rate_limit", {"sent": sent}),
                    f"{RATE_LIMIT}{sent} acknowledgements to {msg.from_addr} in the last hour")
    return None


def unacknowledged(verdict: Verdict) -> Hold:
    """Why a mail the classifier wants no acknowledgement for gets none: automatic mail, or
    a person who asked for no automatic reply (the verdict's own words as the detail)."""
    code = "no_auto_reply" if verdict.kind == CUSTOMER else "automatic"
    return Hold(Reason(code), verdict.reason)


@functools.lru_cache(maxsize=4096)
def undeliverable(address: str) -> str:
    """Why no mail can go to ``address``, judged by its form alone (no DNS), or ``""``.

    Control characters, no domain, broken quoting or no address at all would make the
    relay or the mail library refuse the mail; an internationalised address is fine.
    The answer depends on the text alone, so it is kept for the addresses seen last (a
    customer who writes again is not checked again: the check costs more than filing).
    """
    try:
        validate_email(address, check_deliverability=False, allow_quoted_local=True)
    except EmailNotValidError as exc:
        return f"{address!r}{UNDELIVERABLE}{exc}"
    return ""


def forged(ctx: Context, msg: Message) -> Hold | None:
    """Why the sender is not who the mail claims (by our border MTA's verdicts), or None;
    its detail: "DMARC failed for example.com (Authentication-Results of mx.example.com)"."""
    found = authentication(msg, ctx.config.trust.authserv_id)
    if found.dmarc == "fail":
        method, domain = "DMARC", found.dmarc_domain
    elif found.spf == "fail":
        method, domain = "SPF", found.spf_domain
    else:
        return None
    authserv = ctx.config.trust.authserv_id
    where = f" for {domain}" if domain else ""
    reason = Reason("forged", {"method": method,
                               "domain": domain or msg.from_addr.rpartition("@")[2],
                               "authserv": authserv})
    return Hold(reason, f"{method} failed{where} (Authentication-Results of {authserv})")


# The fixed parts of the details above, by which held_reason knows the events of older
# versions (English text only, no code) again.
NO_SENDER = "no sender address to answer to"
RATE_LIMIT = "rate limit: "
UNDELIVERABLE = " is not a deliverable address: "
_FORGED = re.compile(r"(SPF|DMARC) failed(?: for (\S+))? \(Authentication-Results of (.*)\)")
_RATE = re.compile(re.escape(RATE_LIMIT) + r"(\d+) ")
# The header classify's verdict names when the sender asked for no automatic reply (no rule
# for automatic mail looks at it).
_NO_AUTO_REPLY = "X-Auto-Response-Suppress"


def held_reason(ticket: dict, address: str, held: dict) -> Reason:
    """The reason of a ticket's ``acknowledgement_held`` event (its data ``held``; the
    ticket's sender ``address``) as the agents' mail words it: the code the event keeps.

    An event of an older version has only its English detail: it is read back as one of
    this module's holds, else as the classifier's verdict on a ticket opened without
    acknowledgement (automatic mail, or a sender who asked for none); "held" for a detail
    of neither kind.
    """
    if held.get("code"):
        return Reason(held["code"], held.get("values") or {})
    reason = held.get("reason", "")
    if reason == NO_SENDER:
        return Reason("no_sender")
    if UNDELIVERABLE in reason:
        return Reason("undeliverable", {"address": _shown(address)})
    if match := _RATE.match(reason):
        return Reason("rate_limit", {"sent": match.group(1)})
    if match := _FORGED.fullmatch(reason):
        domain = match.group(2) or address.rpartition("@")[2]
        return Reason("forged", {"method": match.group(1), "domain": domain,
                                 "authserv": match.group(3)})
    if not ticket.get("auto_mail", 1):
        return Reason("no_auto_reply" if _NO_AUTO_REPLY in reason else "automatic")
    return Reason("held")


def _shown(address: str) -> str:
    """An address as a mail may show it: one with control characters escaped."""
    return address if address.isprintable() else ascii(address)


def is_stranger(ctx: Context, msg: Message, ticket: dict, identity: Identity) -> bool:
    """Whether the sender has no business on ``ticket`` (not contact, participant or colleague)."""
    if ctx.config.hygiene.stranger_followup == "accept":
        return False
    if msg.from_addr in tq.participants(ctx.store, ticket["id"]):
        return False
    account = identity.account
    return not (account and ticket["account_id"] == account["id"])
