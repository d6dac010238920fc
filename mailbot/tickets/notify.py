"""Mails to agents about tickets: new tickets, customer follow-ups, alerts.

Each is written to the outbox inside the transaction of the change it reports.
Replies go to the ticket's signed reply address, so an agent's answer lands back
at mailbot and is known to be about that ticket.
"""

from __future__ import annotations

from datetime import datetime

from mailbot.context import Context
from mailbot.outbound.compose import Envelope
from mailbot.reading import quotes
from mailbot.reading.message import Message
from mailbot.store import directory as dq
from mailbot.store import tickets as tq
from mailbot.tickets import mails


def recipients(ctx: Context, ticket: dict) -> tuple[str, ...]:
    """Who hears about a ticket: its owner once assigned, else every agent."""
    if ticket.get("owner"):
        return (ticket["owner"],)
    return ctx.team.addresses()


def ticket_facts(ctx: Context, ticket: dict) -> dict:
    """The facts an agent needs at a glance, as template values."""
    contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
    account = dq.account_by_id(ctx.store, ticket["account_id"])
    why = next((e["data"] for e in reversed(tq.events(ctx.store, ticket["id"]))
                if e["kind"] == "priority"), {})
    return {
        "ticket": ticket, "contact": contact or {"address": "", "name": "", "phone": ""},
        "account": account, "contract": ticket["contract"] or "",
        "priority_reason": why.get("reason", ""), "missing": ticket.get("missing") or [],
        "ticket_url": ctx.link("ticket", ticket["number"]),
    }


def agents_about_message(ctx: Context, ticket: dict, msg: Message | None, kind: str,
                         now: datetime, text: str = "") -> None:
    """Tell the agents about a new ticket or a customer's follow-up (kind names the template)."""
    to = recipients(ctx, ticket)
    if not to:
        return
    attachments = tuple((a.filename, a.content_type, a.payload) for a in msg.attachments) \
        if msg else ()
    body, shortened = _new_text(msg, kind) if msg else (text, False)
    sender = (msg.from_name or msg.from_addr) if msg else ticket["subject"]
    envelope = Envelope(to=to, from_name=f"{sender} via {ctx.config.support.name}",
                        in_reply_to=msg.message_id if msg else "",
                        reply_to=ctx.composer.reply_address(ticket["number"]),
                        auto_submitted="auto-generated", attachments=attachments)
    values = {**ticket_facts(ctx, ticket), "text": body, "shortened": shortened,
              "subject": ticket["subject"]}
    outgoing = ctx.composer.build(kind, ctx.config.service.language, ticket["number"],
                                  envelope, values, now)
    mails.queue(ctx, ticket["id"], outgoing, now)


def _new_text(msg: Message, kind: str) -> tuple[str, bool]:
    """What agents read of a customer mail: a follow-up without the quoted history."""
    if kind != "agent_followup":
        return msg.text, False
    latest = quotes.new_words(msg.text)
    return (latest, True) if latest else (msg.text, False)


def agents_alert(ctx: Context, ticket: dict | None, kind: str, values: dict,
                 now: datetime, to: tuple[str, ...] = ()) -> None:
    """An alert to agents (error in a command, suspicious mail, deadline warning)."""
    to = to or (recipients(ctx, ticket) if ticket else ctx.team.addresses())
    if not to:
        return
    number = ticket["number"] if ticket else "-"
    envelope = Envelope(to=to, from_name=ctx.config.support.name,
                        reply_to=ctx.composer.reply_address(number) if ticket else "",
                        auto_submitted="auto-generated")
    facts = ticket_facts(ctx, ticket) if ticket else {"ticket": None}
    outgoing = ctx.composer.build(kind, ctx.config.service.language, number, envelope,
                                  {**facts, **values}, now)
    mails.queue(ctx, ticket["id"] if ticket else None, outgoing, now)
