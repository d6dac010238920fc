"""Queueing a ticket's mails, and the one rule for who may not get one.

A mail to an address that bounced permanently is held, with the reason, and the
ticket gets an event so agents see why the customer heard nothing.  Every mail a
ticket causes goes through :func:`queue`, in the transaction of the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.outbound.compose import Envelope, Outgoing
from mailbot.outbound.outbox import enqueue
from mailbot.store import directory as dq
from mailbot.store import tickets as tq

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context


def queue(ctx: Context, ticket_id: int | None, outgoing: Outgoing, now: datetime) -> int:
    """Put a composed mail into the outbox, held when a recipient bounced; its row id."""
    bounced = [(a, why) for a in outgoing.recipients if (why := dq.contact_bounce(ctx.store, a))]
    held = "; ".join(f"{a} bounced: {why}" for a, why in bounced)
    row = enqueue(ctx.store, ticket_id, outgoing, now, held_because=held)
    if bounced and ticket_id is not None:
        tq.add_event(ctx.store, ticket_id, "mail_held", {
            "kind": outgoing.kind, "recipients": [a for a, _ in bounced],
            "reason": "; ".join(why for _, why in bounced)}, now)
    return row


def to_customer(ctx: Context, ticket: dict, kind: str, values: dict, now: datetime) -> bool:
    """Queue a mail of template ``kind`` to the ticket's contact; False without one, and
    for a ticket opened by automatic mail or a null envelope sender (RFC 3834: no automatic
    mail answers it; agents' own answers still go out)."""
    contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
    if contact is None or not ticket.get("auto_mail", 1):
        return False
    envelope = Envelope(to=(contact["address"],), from_name=ctx.config.support.name,
                        auto_submitted="auto-generated")
    outgoing = ctx.composer.build(kind, ticket["language"], ticket["number"], envelope, {
        "subject": ticket["subject"], "customer_name": contact["name"],
        "ticket_url": ctx.link("ticket", ticket["number"]),
        "support_name": ctx.config.support.name, **values}, now)
    queue(ctx, ticket["id"], outgoing, now)
    return True
