"""Filing one classified mail: a new ticket or a follow-up, committed in one transaction.

Everything a mail causes (ticket, message, attachments, events, outbox rows and the
ingest record) is written in the same transaction, so a crash leaves all or nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from mailbot.outbound.compose import Envelope
from mailbot.outbound.wording import NO_SUBJECT, supported_language
from mailbot.policy.rules import RuleMatch
from mailbot.reading.classify import Verdict
from mailbot.reading.message import Message
from mailbot.store import directory as dq
from mailbot.store import tickets as tq
from mailbot.tickets import assessment, clocks, guards, lifecycle, mails, notify, threads
from mailbot.tickets.identify import Identity, record_claim
from mailbot.tickets.outcome import Outcome

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

log = logging.getLogger(__name__)


def new_ticket_number(ctx: Context, now: datetime) -> str:
    """A fresh, never reused ticket number in the configured format."""
    local = now.astimezone(ZoneInfo(ctx.config.timezone))
    day = local.strftime("%Y%m%d")
    while True:
        counter = tq.next_counter(ctx.store, day)
        number = ctx.config.tickets.number_format.format(date=local, counter=counter)
        if not tq.number_taken(ctx.store, number):
            return number


def store_message(ctx: Context, ticket_id: int, msg: Message, direction: str,
                  now: datetime) -> int:
    """Append an inbound mail and its attachments to a ticket.

    An attachment that could not be decoded is kept as it came, and an event on the
    ticket names it and why, so agents know the file needs a look; so is one kept whole
    with a note (a TNEF wrapper that could not be unpacked).  A forwarded mail shows in the
    body as a block with its own sender, date and subject (the parser writes it).
    """
    row = tq.add_message(ctx.store, {
        "ticket_id": ticket_id, "direction": direction, "message_id": msg.message_id,
        "from_addr": msg.from_addr, "from_name": msg.from_name, "to_addrs": list(msg.recipients),
        "subject": msg.subject, "body": msg.text, "html": msg.html,
        "spool_sha256": msg.raw_sha256, "created_at": now})
    for attachment in msg.attachments:
        tq.add_attachment(ctx.store, {"message_row": row, "filename": attachment.filename,
                                      "content_type": attachment.content_type,
                                      "size": attachment.size, "sha256": attachment.sha256})
    for attachment in msg.damaged:
        tq.add_event(ctx.store, ticket_id, "attachment_damaged",
                     {"filename": attachment.filename, "reason": attachment.damage,
                      "from": msg.from_addr}, now)
    for attachment in msg.noted:
        tq.add_event(ctx.store, ticket_id, "attachment_note",
                     {"filename": attachment.filename, "note": attachment.note,
                      "from": msg.from_addr}, now)
    return row


def file_customer_mail(ctx: Context, msg: Message, verdict: Verdict,
                       thread: tuple[threads.ThreadMatch, dict | None],
                       sender: tuple[Identity, dict], rated: RuleMatch) -> Outcome:
    """File a mail from a customer (or a robot, without acknowledgement).

    ``thread`` is the thread evidence and the ticket it names (None for a new ticket);
    ``sender`` the identity of the sender and the facts the mail names; ``rated`` the
    priority rule its text matches (read with the mail, for a new ticket's priority).
    """
    match, ticket = thread
    identity, facts = sender
    now = ctx.clock()
    contact_id = _ensure_contact(ctx, msg, identity)
    if ticket is not None:
        action = _followup_action(ctx, msg, ticket, identity, now)
        if action in ("append", "reopen"):
            if contact_id is not None and contact_id == ticket["contact_id"]:
                record_claim(ctx, ticket, identity, msg.from_addr, now)
            return append_followup(ctx, msg, ticket, (match, facts), now)
        if action == "note":
            return _stranger_note(ctx, msg, ticket, now)
        parent = ticket
    else:
        parent = None
    return create_ticket(ctx, msg, identity, contact_id, (verdict, facts, rated), parent, now)


def append_followup(ctx: Context, msg: Message, ticket: dict,
                    evidence: tuple[threads.ThreadMatch, dict], now: datetime) -> Outcome:
    """Append a customer's follow-up to its ticket, reopening it where the lifecycle says;
    facts it names are added to the ticket's, and what was missing and now came is no
    longer asked for."""
    match, facts = evidence
    store_message(ctx, ticket["id"], msg, "in", now)
    _update_facts(ctx, ticket, facts, now)
    _customer_wrote(ctx, ticket, msg.from_addr, {"threaded_by": match.how}, now)
    notify.agents_about_message(ctx, ticket, msg, "agent_followup", now)
    return Outcome("followup", ticket["number"], f"threaded by {match.how}")


def _update_facts(ctx: Context, ticket: dict, facts: dict, now: datetime) -> None:
    """Merge the facts of a follow-up into the ticket's, with an event naming the new ones."""
    known = {k: list(v) for k, v in (ticket.get("facts") or {}).items()}
    added = {k: [v for v in values if v not in known.get(k, [])] for k, values in facts.items()}
    added = {k: v for k, v in added.items() if v}
    if not added:
        return
    for key, values in added.items():
        known[key] = [*known.get(key, []), *values]
    missing = [k for k in ticket.get("missing") or [] if k not in known]
    tq.update(ctx.store, ticket["id"], facts=known, missing=missing)
    tq.add_event(ctx.store, ticket["id"], "facts_updated",
                 {"added": added, "still_missing": missing}, now)
    ticket.update(facts=known, missing=missing)


def append_customer_text(ctx: Context, ticket: dict, text: str, via: str,
                         now: datetime) -> int:
    """Add a customer message that did not come by mail (the ticket page) like a follow-up."""
    contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
    address = contact["address"] if contact else ""
    row = tq.add_message(ctx.store, {
        "ticket_id": ticket["id"], "direction": "in", "from_addr": address,
        "from_name": contact["name"] if contact else "", "to_addrs": [],
        "subject": ticket["subject"], "body": text, "created_at": now})
    _customer_wrote(ctx, ticket, address, {"via": via}, now)
    notify.agents_about_message(ctx, ticket, None, "agent_followup", now, text=text)
    return row


def _customer_wrote(ctx: Context, ticket: dict, address: str, how: dict,
                    now: datetime) -> None:
    """The event, the reopening and the update clock of a customer's follow-up."""
    actor = address or "customer"
    tq.add_event(ctx.store, ticket["id"], "customer_reply", {"from": address, **how}, now,
                 actor=actor)
    change_status(ctx, ticket, lifecycle.after_customer_reply(ticket["status"]), now,
                  actor=actor)
    clocks.after_customer_reply(ctx, ticket, now)


def change_status(ctx: Context, ticket: dict, target: str, now: datetime,
                  actor: str = "system") -> bool:
    """Move a ticket to ``target`` status with an event; False when it already was there."""
    if target == ticket["status"]:
        return False
    lifecycle.check_transition(ticket["status"], target)
    fields: dict = {"status": target, "updated_at": now, "status_since": now}
    fields["closed_at"] = now if target == "closed" else None
    tq.update(ctx.store, ticket["id"], **fields)
    tq.add_event(ctx.store, ticket["id"], "status",
                 {"from": ticket["status"], "to": target}, now, actor=actor)
    clocks.after_status_change(ctx, ticket, ticket["status"], target, now)
    ticket["status"] = target
    return True


def create_ticket(ctx: Context, msg: Message, identity: Identity, contact_id: int | None,
                  read: tuple[Verdict, dict, RuleMatch], parent: dict | None,
                  now: datetime) -> Outcome:
    """Open a new ticket for ``msg`` and queue its acknowledgement (when the verdict asks);
    ``read`` is what reading the mail found: its verdict, facts and priority rule."""
    verdict, facts, rated = read
    account = identity.account or {}
    language = supported_language(
        account.get("language") or (identity.contact or {}).get("language"),
        ctx.config.service.language)
    assessed = assessment.assess(ctx, rated, identity, facts, now, language)
    number = new_ticket_number(ctx, now)
    ticket = tq.add_ticket(ctx.store, {
        "number": number, "subject": msg.subject or NO_SUBJECT, "status": "new",
        "priority": assessed.priority, "contact_id": contact_id,
        "account_id": account.get("id"), "contract": account.get("contract"),
        "entitled": int(assessed.entitled), "language": language,
        "parent_id": parent["id"] if parent else None, "created_at": now, "updated_at": now,
        "status_since": now, "auto_mail": int(verdict.acknowledge),
        **assessed.fields})
    ticket_id = ticket["id"]
    store_message(ctx, ticket_id, msg, "in", now)
    tq.add_events(ctx.store, ticket_id, [
        ("created", {"from": msg.from_addr, "identified_by": identity.matched_by,
                     "parent": parent["number"] if parent else None}, msg.from_addr),
        *((kind, data, "system") for kind, data in assessed.events)], now)
    record_claim(ctx, ticket, identity, msg.from_addr, now)
    if verdict.acknowledge:
        queue_acknowledgement(ctx, ticket, msg, assessed.ack_values, now)
    else:  # a robot, or a person who asked for no automatic reply: agents see why
        tq.add_event(ctx.store, ticket_id, "acknowledgement_held",
                     guards.unacknowledged(verdict).event(), now)
    notify.agents_about_message(ctx, ticket, msg, "agent_new_ticket", now)
    return Outcome("created", number, f"linked to {parent['number']}" if parent else "")


def queue_acknowledgement(ctx: Context, ticket: dict, msg: Message, values: dict,
                          now: datetime) -> None:
    """Put the acknowledgement of a new ticket into the outbox, unless policy holds it back."""
    hold = guards.hold_acknowledgement(ctx, msg, now)
    if hold is not None:
        tq.add_event(ctx.store, ticket["id"], "acknowledgement_held", hold.event(), now)
        log.warning("no acknowledgement for ticket %s: %s", ticket["number"], hold.detail)
        return
    number = ticket["number"]
    envelope = Envelope(to=(msg.from_addr,), from_name=ctx.config.support.name,
                        in_reply_to=msg.message_id, references=msg.references)
    outgoing = ctx.composer.build("acknowledgement", ticket["language"], number, envelope, {
        **values, "subject": msg.subject or NO_SUBJECT, "customer_name": msg.from_name,
        "support_name": ctx.config.support.name, "ticket_url": ctx.link("ticket", number),
        "escalation_url": ctx.link("escalate", number)}, now)
    mails.queue(ctx, ticket["id"], outgoing, now)


def _ensure_contact(ctx: Context, msg: Message, identity: Identity) -> int | None:
    if not msg.from_addr:
        return None
    if identity.contact and identity.contact["bounced_at"]:
        dq.clear_bounce(ctx.store, msg.from_addr)
    account_id = identity.account["id"] if identity.account else None
    if identity.contact and (identity.contact["account_id"] or not account_id):
        return identity.contact["id"]
    return dq.upsert_contact(ctx.store, {"address": msg.from_addr, "name": msg.from_name,
                                         "account_id": account_id, "phone": "", "language": ""})


def _followup_action(ctx: Context, msg: Message, ticket: dict, identity: Identity,
                     now: datetime) -> str:
    if ticket["status"] == "closed":
        closed_at = datetime.fromisoformat(ticket["closed_at"] or ticket["updated_at"])
        days = (now - closed_at).total_seconds() / 86400
        return lifecycle.closed_followup_action(ctx.config.tickets.closed_followup, days,
                                                ctx.config.tickets.reopen_days)
    if guards.is_stranger(ctx, msg, ticket, identity):
        mode = ctx.config.hygiene.stranger_followup
        return "note" if mode == "note" else "new_linked"
    return "append"


def _stranger_note(ctx: Context, msg: Message, ticket: dict, now: datetime) -> Outcome:
    store_message(ctx, ticket["id"], msg, "note", now)
    tq.add_event(ctx.store, ticket["id"], "stranger_mail", {"from": msg.from_addr}, now)
    return Outcome("note", ticket["number"], f"mail from stranger {msg.from_addr} kept as note")


def note_auto_reply(ctx: Context, msg: Message, ticket: dict, reason: str) -> Outcome:
    """Keep an automatic reply (out of office) as a note on its ticket; nobody is told."""
    now = ctx.clock()
    store_message(ctx, ticket["id"], msg, "auto", now)
    tq.add_event(ctx.store, ticket["id"], "auto_reply", {"reason": reason}, now)
    return Outcome("note", ticket["number"], reason)
