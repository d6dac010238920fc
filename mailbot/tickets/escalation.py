"""Escalation: the customer's call-back request, applied at most once per ticket.

An escalation marks the ticket (time and call-back number), lets policy raise it
(:func:`mailbot.tickets.clocks.on_escalation`), writes an event and queues an immediate mail
to every agent and a confirmation to the customer, all in one transaction, so a
crash leaves either a fully escalated ticket with its mails queued or nothing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.outbound.compose import Envelope
from mailbot.outbound.wording import moment, supported_language
from mailbot.store import directory as dq
from mailbot.store import public as wq
from mailbot.store import tickets as tq
from mailbot.tickets import clocks, filing, lifecycle, mails

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

log = logging.getLogger(__name__)

ESCALATED = "escalated"
ALREADY = "already"
CLOSED = "closed"
UNKNOWN = "unknown"
PHONE_PATTERN = re.compile(r"\+?[0-9][0-9 ()/.-]*[0-9]")
PHONE_DIGITS = (5, 20)


class InvalidPhone(ValueError):
    """The text given as call-back number cannot be a phone number."""


@dataclass(frozen=True)
class Result:
    """What an escalation attempt did: ``outcome`` is one of the module's constants."""

    outcome: str
    ticket: dict | None = None


def clean_phone(text: str) -> str:
    """The call-back number as typed, whitespace normalised; InvalidPhone when it is none."""
    phone = " ".join(text.split())
    digits = sum(c.isdigit() for c in phone)
    low, high = PHONE_DIGITS
    if not PHONE_PATTERN.fullmatch(phone) or not low <= digits <= high:
        raise InvalidPhone("not a phone number")
    return phone


def escalate(ctx: Context, number: str, phone: str, via: str = "web") -> Result:
    """Escalate ticket ``number`` once; a second call, or a closed ticket, changes nothing."""
    now = ctx.clock()
    with ctx.store.transaction():
        ticket = tq.by_number(ctx.store, number)
        refused = _refusal(ticket)
        if refused:
            return Result(refused, ticket)
        contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
        _mark(ctx, ticket, phone, via, contact, now)
        ticket = tq.by_id(ctx.store, ticket["id"])
        _mail_agents(ctx, ticket, contact, now)
        _confirm_to_customer(ctx, ticket, contact, now)
    ctx.on_outbox()
    log.info("ticket %s escalated via %s, call back %s", number, via, phone)
    return Result(ESCALATED, ticket)


def _refusal(ticket: dict | None) -> str:
    if ticket is None:
        return UNKNOWN
    if ticket["status"] == "closed":
        return CLOSED
    return ALREADY if ticket["escalated_at"] else ""


def _mark(ctx: Context, ticket: dict, phone: str, via: str, contact: dict | None,
          now: datetime) -> None:
    actor = contact["address"] if contact else "customer"
    filing.change_status(ctx, ticket, lifecycle.after_customer_reply(ticket["status"]), now,
                          actor=actor)
    fields = {"escalated_at": now, "escalation_phone": phone, "updated_at": now,
              **clocks.on_escalation(ctx, ticket, now)}
    tq.update(ctx.store, ticket["id"], **fields)
    tq.add_event(ctx.store, ticket["id"], "escalated",
                 {"phone": phone, "via": via, "priority_from": ticket["priority"],
                  "priority_to": fields.get("priority", ticket["priority"])}, now, actor=actor)


def mail_values(ctx: Context, ticket: dict, contact: dict | None, language: str) -> dict:
    """What the escalation mail templates may show."""
    zone = ctx.config.timezone
    return {
        "subject": ticket["subject"], "phone": ticket["escalation_phone"],
        "status": ticket["status"], "priority": ticket["priority"],
        "customer": contact["address"] if contact else "",
        "customer_name": contact["name"] if contact else "",
        "escalated_text": moment(ticket["escalated_at"], zone, language),
        "deadline_text": moment(ticket["first_response_due"], zone, language),
        "support_name": ctx.config.support.name,
        "notice": ctx.config.web.escalation_notice(language),
        "ticket_url": ctx.link("ticket", ticket["number"]),
    }


def _mail_agents(ctx: Context, ticket: dict, contact: dict | None, now: datetime) -> None:
    agents = ctx.team.agents
    if not agents:
        log.warning("ticket %s escalated but no agents are configured", ticket["number"])
    language = ctx.config.service.language
    values = mail_values(ctx, ticket, contact, language)
    for agent in agents:
        envelope = Envelope(to=(agent.address,), from_name=ctx.config.support.name,
                            reply_to=ctx.composer.reply_address(ticket["number"], agent.address,
                                                                now),
                            auto_submitted="auto-generated")
        outgoing = ctx.composer.build("agent_escalation", language, ticket["number"], envelope,
                                      {**values, "agent_name": agent.name}, now)
        mails.queue(ctx, ticket["id"], outgoing, now)


def _confirm_to_customer(ctx: Context, ticket: dict, contact: dict | None,
                         now: datetime) -> None:
    if not contact or not contact["address"]:
        return
    language = supported_language(ticket["language"], ctx.config.service.language)
    envelope = Envelope(to=(contact["address"],), from_name=ctx.config.support.name,
                        in_reply_to=wq.first_message_id(ctx.store, ticket["id"]))
    outgoing = ctx.composer.build("escalation_confirmed", language, ticket["number"], envelope,
                                  mail_values(ctx, ticket, contact, language), now)
    mails.queue(ctx, ticket["id"], outgoing, now)
