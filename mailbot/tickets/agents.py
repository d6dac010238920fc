"""Agent mail: replies through a signed reply address become answers, notes and commands.

Each agent's reply address is signed for that agent and the day it was sent.  A reply
through it is applied only when it comes from that agent, within ``[team]
reply_token_days``, and (with ``[trust] authserv_id``) is not disowned by the agent's
domain; otherwise it changes nothing, is kept as a note, and the sender is told why.
A mail from an agent address that did not come through a valid reply address is
never trusted: it changes nothing, reaches no customer, and the agents are told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.outbound.compose import Envelope
from mailbot.outbound.tokens import ReplyTag
from mailbot.outbound.wording import Reason
from mailbot.reading import quotes
from mailbot.reading.authentication import authentication
from mailbot.reading.message import Attachment, Message
from mailbot.store import directory as dq
from mailbot.store import tickets as tq
from mailbot.tickets import (
    assessment,
    clocks,
    commands,
    filing,
    guards,
    identify,
    lifecycle,
    mails,
    notify,
)
from mailbot.tickets.outcome import Outcome

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context


@dataclass(frozen=True)
class Refusal:
    """Why a mail through a reply address is not applied: a code the explanation mail's
    templates word (not_agent, other_agent, expired, unauthenticated) and a sentence."""

    reason: str
    detail: str


def handle_reply(ctx: Context, msg: Message, ticket: dict, tag: ReplyTag) -> Outcome:
    """Apply a reply through an agent's reply address (commands, then the public answer or
    the internal note) once it is known to be that agent's; else refuse it."""
    now = ctx.clock()
    refusal = refusal_of(ctx, msg, tag, now)
    if refusal is not None:
        return refuse(ctx, msg, ticket, refusal, now)
    agent = ctx.team.get(msg.from_addr)
    text = quotes.latest_reply(msg.text)
    parsed = commands.parse(text, ctx.team.addresses())
    errors = list(parsed.errors) + _transition_errors(ticket, parsed) + \
        _confirm_errors(ctx, ticket, parsed)
    if errors:
        told = [str(e) for e in errors]  # the event and the log read English
        filing.store_message(ctx, ticket["id"], msg, "note", now)
        tq.add_event(ctx.store, ticket["id"], "agent_command_error",
                     {"errors": told}, now, actor=agent.address)
        notify.agents_alert(ctx, ticket, "agent_error", {"errors": errors, "text": text}, now,
                            to=(agent.address,))
        return Outcome("note", ticket["number"], "; ".join(told))
    public = bool(parsed.text) and not parsed.is_note
    apply_commands(ctx, ticket, parsed, agent.address, now)
    if public:
        answer(ctx, ticket, Reply(parsed.text, agent.name or agent.address, agent.address,
                                  msg.attachments), now)
    else:
        filing.store_message(ctx, ticket["id"], msg, "note", now)
        tq.add_event(ctx.store, ticket["id"], "note", {"by": agent.address}, now,
                     actor=agent.address)
    return Outcome("agent_reply", ticket["number"], "answer" if public else "note")


@dataclass(frozen=True)
class Reply:
    """An answer for the customer: its text, who signs it, who acted, files to send along."""

    text: str
    agent_name: str
    actor: str
    files: tuple[Attachment, ...] = ()


def answer(ctx: Context, ticket: dict, reply: Reply, now: datetime) -> None:
    """Send an agent's answer (with its attachments) to the customer, threaded."""
    text, agent_name, actor = reply.text, reply.agent_name, reply.actor
    contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
    if contact is None:
        return
    thread = tq.messages(ctx.store, ticket["id"])
    last_in = next((m["message_id"] for m in reversed(thread)
                    if m["direction"] == "in" and m["message_id"]), "")
    refs = tuple(m["message_id"] for m in thread if m["message_id"]
                 and m["direction"] in ("in", "out"))
    envelope = Envelope(to=(contact["address"],), from_name=agent_name, in_reply_to=last_in,
                        references=refs, auto_submitted="",
                        attachments=notify.mail_files(ctx, ticket["number"], reply.files,
                                                      ticket["language"]))
    values = {"text": text, "agent_name": agent_name, "subject": ticket["subject"],
              "ticket_url": ctx.link("ticket", ticket["number"]),
              "support_name": ctx.config.support.name}
    outgoing = ctx.composer.build("agent_reply", ticket["language"], ticket["number"],
                                  envelope, values, now)
    mails.queue(ctx, ticket["id"], outgoing, now)
    row = tq.add_message(ctx.store, {
        "ticket_id": ticket["id"], "direction": "out", "message_id": outgoing.message_id,
        "from_addr": ctx.config.support.address, "from_name": agent_name,
        "to_addrs": [contact["address"]], "subject": ticket["subject"], "body": text,
        "created_at": now})
    for file in reply.files:
        tq.add_attachment(ctx.store, {"message_row": row, "filename": file.filename,
                                      "content_type": file.content_type, "size": file.size,
                                      "sha256": file.sha256})
    tq.add_event(ctx.store, ticket["id"], "agent_reply", {"by": actor}, now, actor=actor)
    clocks.after_agent_answer(ctx, ticket, now)
    if ticket["status"] == "new":
        filing.change_status(ctx, ticket, "open", now, actor=actor)


def suspicious(ctx: Context, msg: Message, ticket: dict | None, reason: str) -> Outcome:
    """Record a mail that claims to be from an agent without a valid reply address.

    ``reason`` goes to the ticket's event and the log; the agents' mail says in its own
    words that the mail came without a valid reply address.
    """
    now = ctx.clock()
    if ticket is not None:
        filing.store_message(ctx, ticket["id"], msg, "note", now)
        tq.add_event(ctx.store, ticket["id"], "suspicious",
                     {"from": msg.from_addr, "reason": reason}, now)
    notify.agents_alert(ctx, ticket, "agent_suspicious",
                        {"sender": msg.from_addr, "mail_subject": msg.subject},
                        now, to=ctx.team.addresses())
    return Outcome("suspicious", ticket["number"] if ticket else "", reason)


def apply_commands(ctx: Context, ticket: dict, parsed: commands.Parsed, actor: str,
                   now: datetime) -> None:
    """Apply checked commands (a claim's confirmation, priority, owner, then status) to a
    ticket, each with its event.

    Taking or assigning a new ticket opens it: an agent now works on it (seed 001).
    """
    if any(c.name == "confirm" for c in parsed.commands):
        confirm_claim(ctx, ticket, actor, now)
    for command in parsed.commands:
        if command.name == "priority":
            _set_field(ctx, ticket, "priority", command.argument.lower(), actor, now)
        elif command.name in ("assign", "take"):
            owner = command.argument.lower() if command.name == "assign" else actor
            _set_field(ctx, ticket, "owner", owner, actor, now)
    target = commands.target_status(parsed.commands)
    if not target and ticket["status"] == "new" and ticket["owner"]:
        target = "open"
    if target:
        filing.change_status(ctx, ticket, target, now, actor=actor)


def _set_field(ctx: Context, ticket: dict, name: str, value: str, actor: str,
               now: datetime) -> None:
    if ticket[name] == value:
        return
    tq.update(ctx.store, ticket["id"], **{name: value, "updated_at": now})
    tq.add_event(ctx.store, ticket["id"], name, {"from": ticket[name], "to": value,
                                                  "reason": f"set by {actor}"}, now, actor=actor)
    ticket[name] = value


def _transition_errors(ticket: dict, parsed: commands.Parsed) -> list[Reason]:
    """A status change the lifecycle forbids; an unknown status is the command's own error."""
    target = commands.target_status(parsed.commands)
    if target not in lifecycle.STATUSES:
        return []
    try:
        lifecycle.check_transition(ticket["status"], target)
    except lifecycle.TransitionError:
        return [Reason("transition", {"current": ticket["status"], "target": target})]
    return []


def _confirm_errors(ctx: Context, ticket: dict, parsed: commands.Parsed) -> list[Reason]:
    if not any(c.name == "confirm" for c in parsed.commands):
        return []
    claim = identify.open_claim(ctx, ticket)
    if claim is None:
        return [Reason("no_claim")]
    if ctx.config.directory.claims != "confirm":
        return [Reason("claims_by_operator", {"mode": ctx.config.directory.claims,
                                              "number": claim["customer_number"]})]
    if dq.account_by_id(ctx.store, claim["account_id"]) is None:
        return [Reason("account_gone", {"number": claim["customer_number"]})]
    return []


def confirm_claim(ctx: Context, ticket: dict, actor: str, now: datetime) -> None:
    """Confirm the ticket's customer number claim: its contact belongs to the claimed
    account from now on, and the ticket gets the account's contract treatment."""
    claim = identify.open_claim(ctx, ticket)
    account = dq.account_by_id(ctx.store, claim["account_id"])
    contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
    if contact is not None:
        dq.upsert_contact(ctx.store, {"address": contact["address"], "name": "",
                                      "account_id": account["id"], "phone": "",
                                      "language": ""})
    assessment.contract_treatment(
        ctx, ticket, account, f"customer number {claim['customer_number']} confirmed by "
        f"{actor}", actor, now)


def refusal_of(ctx: Context, msg: Message, tag: ReplyTag, now: datetime) -> Refusal | None:
    """Why a mail through the reply address ``tag`` must not act on its ticket, or None:
    not from an agent, from another agent than the one it was sent to, too old, or
    disowned by the agent's domain in our border MTA's Authentication-Results."""
    if ctx.team.get(msg.from_addr) is None:
        return Refusal("not_agent", f"{msg.from_addr} is not an agent")
    if not tag.sent_to(msg.from_addr):
        return Refusal("other_agent", "the reply address was sent to another agent")
    days = ctx.config.team.reply_token_days
    if tag.age_days(now) > days:
        return Refusal("expired", f"the reply address is {tag.age_days(now)} days old; "
                                  f"it is valid for {days} days")
    domain = msg.from_addr.rpartition("@")[2]
    found = authentication(msg, ctx.config.trust.authserv_id)
    if found.known and not (found.dkim_pass(domain) or found.spf_pass(domain)):
        return Refusal("unauthenticated", f"{ctx.config.trust.authserv_id} found neither DKIM "
                                          f"nor SPF passing for {domain}")
    return None


def refuse(ctx: Context, msg: Message, ticket: dict, refusal: Refusal,
           now: datetime) -> Outcome:
    """Keep a refused mail as a note with an event, and tell its sender why (an agent
    also gets a fresh reply address of its own to answer through)."""
    filing.store_message(ctx, ticket["id"], msg, "note", now)
    tq.add_event(ctx.store, ticket["id"], "agent_mail_refused",
                 {"from": msg.from_addr, "reason": refusal.reason, "detail": refusal.detail},
                 now, actor=msg.from_addr)
    if not guards.undeliverable(msg.from_addr):
        _explain(ctx, msg, ticket, refusal, now)
    return Outcome("note", ticket["number"], f"not applied: {refusal.detail}")


def _explain(ctx: Context, msg: Message, ticket: dict, refusal: Refusal,
             now: datetime) -> None:
    agent = ctx.team.get(msg.from_addr)
    reply_to = ctx.composer.reply_address(ticket["number"], agent.address, now) \
        if agent else ""
    envelope = Envelope(to=(msg.from_addr,), from_name=ctx.config.support.name,
                        in_reply_to=msg.message_id, reply_to=reply_to,
                        auto_submitted="auto-replied")
    outgoing = ctx.composer.build("agent_refused", ctx.config.service.language,
                                  ticket["number"], envelope, {
                                      "reason": refusal.reason, "agent": agent is not None,
                                      "days": ctx.config.team.reply_token_days,
                                      "text": quotes.latest_reply(msg.text) if agent else "",
                                      "support_address": ctx.config.support.address},
                                  now)
    mails.queue(ctx, ticket["id"], outgoing, now)
