"""Mails to agents about tickets: new tickets, customer follow-ups, alerts.

Each is written to the outbox inside the transaction of the change it reports.
Each agent gets a mail of its own whose Reply-To is signed for that agent, the ticket
and the day, so an agent's answer lands back at mailbot and is known to be about that
ticket and from the agent it was sent to.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from typing import TYPE_CHECKING

from mailbot.outbound.compose import Envelope
from mailbot.outbound.outbox import Failure
from mailbot.outbound.wording import decimal, moment, supported_language
from mailbot.reading import quotes
from mailbot.reading.message import Attachment, Message
from mailbot.store import directory as dq
from mailbot.store import tickets as tq
from mailbot.tickets import guards, identify, mails

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

log = logging.getLogger(__name__)


def recipients(ctx: Context, ticket: dict) -> tuple[str, ...]:
    """Who hears about a ticket: its owner once assigned, else every agent."""
    if ticket.get("owner"):
        return (ticket["owner"],)
    return ctx.team.addresses()


def ticket_facts(ctx: Context, ticket: dict) -> dict:
    """The facts an agent needs at a glance, as template values."""
    contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
    account = dq.account_by_id(ctx.store, ticket["account_id"])
    events = tq.events(ctx.store, ticket["id"])
    why = next((e["data"] for e in reversed(events) if e["kind"] == "priority"), {})
    contact = contact or {"address": "", "name": "", "phone": ""}
    # Why the customer got no acknowledgement (forged sender, undeliverable, rate limit).
    unanswered = next((e["data"] for e in reversed(events)
                       if e["kind"] == "acknowledgement_held"), None)
    return {
        "ticket": ticket, "contact": contact,
        "account": account, "contract": ticket["contract"] or "",
        "priority_why": why, "missing": ticket.get("missing") or [],
        "acknowledgement_held": guards.held_reason(ticket, contact["address"], unanswered)
        if unanswered is not None else None,
        "ticket_url": ctx.link("ticket", ticket["number"]),
        "claim": identify.open_claim(ctx, ticket),
        "claim_confirmable": ctx.config.directory.claims == "confirm",
    }


def agents_about_message(ctx: Context, ticket: dict, msg: Message | None, kind: str,
                         now: datetime, text: str = "") -> None:
    """Tell the agents about a new ticket or a customer's follow-up (kind names the template)."""
    to = recipients(ctx, ticket)
    if not to:
        return
    attachments = mail_files(ctx, ticket["number"], msg.attachments,
                             ctx.config.service.language) if msg else ()
    body, shortened = _new_text(msg, kind) if msg else (text, False)
    sender = (msg.from_name or msg.from_addr) if msg else ticket["subject"]
    envelope = Envelope(to=to, from_name=f"{sender} via {ctx.config.support.name}",
                        in_reply_to=msg.message_id if msg else "",
                        auto_submitted="auto-generated", attachments=attachments)
    values = {**ticket_facts(ctx, ticket), "text": body, "shortened": shortened,
              "subject": ticket["subject"]}
    to_each_agent(ctx, ticket, kind, envelope, values, now)


def to_each_agent(ctx: Context, ticket: dict, kind: str, envelope: Envelope, values: dict,
                  now: datetime) -> None:
    """Queue one mail of template ``kind`` to each address of ``envelope.to``, each with a
    reply address signed for that agent alone (a colleague cannot act through it)."""
    for agent in envelope.to:
        reply_to = ctx.composer.reply_address(ticket["number"], agent, now)
        outgoing = ctx.composer.build(kind, ctx.config.service.language, ticket["number"],
                                      replace(envelope, to=(agent,), reply_to=reply_to),
                                      values, now)
        mails.queue(ctx, ticket["id"], outgoing, now)


def mail_files(ctx: Context, number: str, files: tuple[Attachment, ...],
               language: str) -> tuple[tuple[str, str, bytes], ...]:
    """The files a mail about ticket ``number`` carries, read from where they are kept.

    Once :data:`MAIL_FILES_BYTES` are attached, each further file is replaced by a short
    note (in ``language``) that names it and links the ticket, where it is kept: relays
    refuse big mails, and composing one costs several times its size in memory.
    """
    attached, room = [], MAIL_FILES_BYTES
    for file in files:
        if file.size <= room:
            room -= file.size
            attached.append((file.filename, file.content_type,
                             ctx.files.get(file.sha256)))
            continue
        megabytes = decimal(file.size / 1024 / 1024, language, places=1)
        note = LEFT_OUT[supported_language(language)].format(
            name=file.filename, size=f"{megabytes} MB", number=number,
            url=ctx.link("ticket", number))
        attached.append((f"{file.filename}.txt", "text/plain; charset=utf-8",
                         note.encode("utf-8")))
    return tuple(attached)


# Most bytes of files one mail carries; see mail_files.
MAIL_FILES_BYTES = 5 * 1024 * 1024
LEFT_OUT = {
    "de": "Die Datei {name} ({size}) ist zu groß für diese E-Mail. Sie liegt bei Ticket "
          "{number}:\n{url}\n",
    "en": "The file {name} ({size}) is too large for this mail. It is kept with ticket "
          "{number}:\n{url}\n",
}


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
    envelope = Envelope(to=to, from_name=ctx.config.support.name,
                        auto_submitted="auto-generated")
    if ticket is not None:
        to_each_agent(ctx, ticket, kind, envelope, {**ticket_facts(ctx, ticket), **values},
                      now)
        return
    outgoing = ctx.composer.build(kind, ctx.config.service.language, "-", envelope,
                                  {"ticket": None, **values}, now)
    mails.queue(ctx, None, outgoing, now)


def delivery_failed(ctx: Context, row: dict, failure: Failure, now: datetime) -> None:
    """Report an outbox mail given up on: an event on its ticket and a notice to the agents.

    The sender calls it in the transaction that marks the row failed, so each failure is
    reported once.  A notice that fails itself is not reported by another notice: its
    addressees are the ones who cannot be reached.  The notice words the failure's reason
    in its language and quotes the relay's or the system's answer as it is.
    """
    ticket = tq.by_id(ctx.store, row["ticket_id"]) if row.get("ticket_id") else None
    recipients = list(row["recipients"])
    if ticket is not None:
        tq.add_event(ctx.store, ticket["id"], "mail_failed", {
            "kind": row["kind"], "recipients": recipients, "reason": failure.text,
            "message_id": row["message_id"], "answer": failure.answer,
            "expired": failure.expired,
            **({"code": failure.reason.code, "values": dict(failure.reason.values)}
               if failure.reason else {})}, now)
    if row["kind"] == "agent_mail_failed":
        log.error("the notice about a failed mail (%s) failed too: %s", row["message_id"],
                  failure)
        return
    shown = [a if a.isprintable() else repr(a) for a in recipients]  # control characters
    language = ctx.config.service.language
    agents_alert(ctx, ticket, "agent_mail_failed", {
        "row_id": row["id"], "recipients": shown, "reason": failure.reason,
        "answer": failure.answer,
        "lifetime": decimal(ctx.config.outbox.lifetime_days, language)
        if failure.expired else "",
        "attempts": row["attempts"], "mail_subject": _subject(row["raw"]),
        "queued": moment(row["created_at"], ctx.config.timezone, language),
    }, now)


def _subject(raw: bytes) -> str:
    """The decoded subject of a mail we composed."""
    headers = BytesHeaderParser(policy=default_policy).parsebytes(raw)
    return " ".join(str(headers.get("Subject", "")).split())
