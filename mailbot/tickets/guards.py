"""Whom we answer and who may add to a ticket: addresses, the acknowledgement limit, strangers."""

from __future__ import annotations

from datetime import datetime, timedelta

from email_validator import EmailNotValidError, validate_email

from mailbot.context import Context
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
        return "no sender address to answer to"
    problem = undeliverable(msg.from_addr) or forged(ctx, msg)
    if problem:
        return problem
    limit = ctx.config.hygiene.max_acks_per_hour
    sent = oq.acknowledgements_since(ctx.store, msg.from_addr, now - timedelta(hours=1))
    if sent >= limit:
        return f"rate limit: {sent} acknowledgements to {msg.from_addr} in the last hour"
    return ""


def undeliverable(address: str) -> str:
    """Why no mail can go to ``address``, judged by its form alone (no DNS), or ``""``.

    Control characters, no domain, broken quoting or no address at all would make the
    relay or the mail library refuse the mail; an internationalised address is fine.
    """
    try:
        validate_email(address, check_deliverability=False, allow_quoted_local=True)
    except EmailNotValidError as exc:
        return f"{address!r} is not a deliverable address: {exc}"
    return ""


def forged(ctx: Context, msg: Message) -> str:
    """Why the sender is not who the mail claims (by our border MTA's verdicts), or ``""``."""
    failed = authentication(msg, ctx.config.trust.authserv_id).failed
    return f"{failed} (Authentication-Results of {ctx.config.trust.authserv_id})" \
        if failed else ""


def is_stranger(ctx: Context, msg: Message, ticket: dict, identity: Identity) -> bool:
    """Whether the sender has no business on ``ticket`` (not contact, participant or colleague)."""
    if ctx.config.hygiene.stranger_followup == "accept":
        return False
    if msg.from_addr in tq.participants(ctx.store, ticket["id"]):
        return False
    account = identity.account
    return not (account and ticket["account_id"] == account["id"])
