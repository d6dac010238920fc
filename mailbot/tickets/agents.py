"""Agent mail: replies through a signed reply address become answers, notes and commands.

A mail from an agent address that did not come through a valid reply address is
never trusted: it changes nothing, reaches no customer, and the agents are told.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mailbot.context import Context
from mailbot.outbound.compose import Envelope
from mailbot.reading import quotes
from mailbot.reading.message import Attachment, Message
from mailbot.store import directory as dq
from mailbot.store import tickets as tq
from mailbot.tickets import clocks, commands, filing, lifecycle, mails, notify
from mailbot.tickets.outcome import Outcome


def handle_reply(ctx: Context, msg: Message, ticket: dict) -> Outcome:
    """Apply an agent's reply: commands, then the public answer or the internal note."""
    now = ctx.clock()
    agent = ctx.team.get(msg.from_addr)
    text = quotes.latest_reply(msg.text)
    parsed = commands.parse(text, ctx.team.addresses())
    errors = list(parsed.errors) + _transition_errors(ticket, parsed)
    if errors:
        filing.store_message(ctx, ticket["id"], msg, "note", now)
        tq.add_event(ctx.store, ticket["id"], "agent_command_error",
                     {"errors": errors}, now, actor=agent.address)
        notify.agents_alert(ctx, ticket, "agent_error", {"errors": errors, "text": text}, now,
                            to=(agent.address,))
        return Outcome("note", ticket["number"], "; ".join(errors))
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
    """Record a mail that claims to be from an agent without a valid reply address."""
    now = ctx.clock()
    if ticket is not None:
        filing.store_message(ctx, ticket["id"], msg, "note", now)
        tq.add_event(ctx.store, ticket["id"], "suspicious",
                     {"from": msg.from_addr, "reason": reason}, now)
    notify.agents_alert(ctx, ticket, "agent_suspicious",
                        {"sender": msg.from_addr, "reason": reason, "mail_subject": msg.subject},
                        now, to=ctx.team.addresses())
    return Outcome("suspicious", ticket["number"] if ticket else "", reason)


def apply_commands(ctx: Context, ticket: dict, parsed: commands.Parsed, actor: str,
                   now: datetime) -> None:
    """Apply checked commands (priority, owner, then status) to a ticket, each with its event.

    Taking or assigning a new ticket opens it: an agent now works on it (seed 001).
    """
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


def _transition_errors(ticket: dict, parsed: commands.Parsed) -> list[str]:
    target = commands.target_status(parsed.commands)
    try:
        lifecycle.check_transition(ticket["status"], target or ticket["status"])
    except lifecycle.TransitionError as exc:
        return [str(exc)]
    return []
