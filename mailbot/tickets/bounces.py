"""Delivery failure reports for our own mails: mark the outbox row, tell the ticket.

A permanent failure flags the recipient's address so further mails to it are held
(and agents see why) until the customer writes from it again.
"""

from __future__ import annotations

from mailbot.context import Context
from mailbot.reading import classify, dsn
from mailbot.reading.message import Message
from mailbot.store import directory as dq
from mailbot.store import outbox as oq
from mailbot.store import tickets as tq
from mailbot.tickets.filing import store_message
from mailbot.tickets.outcome import Outcome


def handle(ctx: Context, msg: Message, verdict: classify.Verdict) -> Outcome:
    """File a bounce: outbox row bounced, contact flagged, internal note on the ticket."""
    report = verdict.bounce
    if report is None:
        return Outcome("ignored", "", f"{verdict.reason}; no delivery report found")
    now = ctx.clock()
    row = oq.outbox_by_message_id(ctx.store, report.original_message_id) \
        if report.original_message_id else None
    if row is not None and report.permanent:
        oq.mark_final(ctx.store, row["id"], "bounced", f"{report.status} {report.reason}")
    if report.permanent:
        for address in report.recipients:
            dq.flag_bounce(ctx.store, address, f"{report.status} {report.reason}".strip(), now)
    ticket = _ticket(ctx, row, report)
    if ticket is None:
        return Outcome("ignored", "", f"bounce for an unknown mail: {report.reason}")
    store_message(ctx, ticket["id"], msg, "note", now)
    tq.add_event(ctx.store, ticket["id"], "bounce", {
        "recipients": list(report.recipients), "status": report.status,
        "reason": report.reason, "permanent": report.permanent,
        "message_id": report.original_message_id}, now)
    return Outcome("bounce", ticket["number"], f"{report.status} {report.reason}".strip())


def _ticket(ctx: Context, row: dict | None, report: dsn.Bounce) -> dict | None:
    if row is not None and row["ticket_id"] is not None:
        return tq.by_id(ctx.store, row["ticket_id"])
    number = ctx.signer.read_message_id(report.original_message_id)
    return tq.by_number(ctx.store, number) if number else None
