"""The policy step of the pipeline: priority, deadlines, what to ask, whom to answer.

This module connects the pure policy functions to tickets and the store; the
decisions themselves live in :mod:`mailbot.policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailbot.context import Context
from mailbot.directory import Identity
from mailbot.message import Message
from mailbot.store import tickets as tq
from mailbot.store import triage as trq


@dataclass(frozen=True)
class Assessed:
    """What policy decided for a new ticket."""

    priority: str = "normal"
    entitled: bool = False
    fields: dict = field(default_factory=dict)
    events: tuple[tuple[str, dict], ...] = ()
    ack_values: dict = field(default_factory=dict)


def timezone_name(config) -> str:
    """The time zone ticket numbers and customer-facing times use."""
    return "Europe/Berlin"


def customer_numbers(config, msg: Message) -> tuple[str, ...]:
    """Customer numbers named in a mail, to identify an unknown sender's account."""
    return ()


def assess(ctx: Context, msg: Message, identity: Identity, now: datetime) -> Assessed:
    """Priority, entitlement, deadlines and acknowledgement wording for a new ticket."""
    contract = identity.contract or {}
    entitled = bool(contract) and contract.get("tier", "none") != "none"
    return Assessed(priority="normal", entitled=entitled,
                    ack_values={"priority_label": "", "deadline_text": "", "hours_text": "",
                                "next_opening_text": "", "missing": []})


def after_customer_reply(ctx: Context, ticket: dict, now: datetime) -> None:
    """Start the update clock after a customer's follow-up."""


def after_agent_answer(ctx: Context, ticket: dict, now: datetime) -> None:
    """Stop the first-response clock (recording whether it was met) and the update clock."""
    if not ticket.get("first_response_at"):
        due = ticket.get("first_response_due")
        met = None if not due else int(now <= datetime.fromisoformat(due))
        tq.update(ctx.store, ticket["id"], first_response_at=now, first_response_met=met,
                  update_due=None)
        tq.add_event(ctx.store, ticket["id"], "first_response", {"met": met}, now)
        ticket["first_response_at"] = now
    else:
        tq.update(ctx.store, ticket["id"], update_due=None)


def after_status_change(ctx: Context, ticket: dict, old: str, new: str, now: datetime) -> None:
    """Pause or resume deadline clocks when a ticket starts or stops waiting."""


def on_escalation(ctx: Context, ticket: dict, now: datetime) -> dict:
    """Ticket fields an escalation sets: urgent priority and a new response deadline."""
    return {"priority": "urgent"}


def hold_acknowledgement(ctx: Context, msg: Message, now: datetime) -> str:
    """Why an acknowledgement must not be sent (rate limit, bounced address), or ``""``."""
    contact = trq.contact_bounce(ctx.store, msg.from_addr)
    if contact:
        return f"address bounced permanently: {contact}"
    limit = ctx.config.hygiene.max_acks_per_hour
    sent = trq.acknowledgements_since(ctx.store, msg.from_addr, now - timedelta(hours=1))
    if sent >= limit:
        return f"rate limit: {sent} acknowledgements to {msg.from_addr} in the last hour"
    return ""


def is_stranger(ctx: Context, msg: Message, ticket: dict, identity: Identity) -> bool:
    """Whether the sender has no business on ``ticket`` (not contact, participant or colleague)."""
    if ctx.config.hygiene.stranger_followup == "accept":
        return False
    if msg.from_addr in tq.participants(ctx.store, ticket["id"]):
        return False
    account = identity.account
    return not (account and ticket["account_id"] == account["id"])
