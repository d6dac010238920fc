"""Delivery failure reports: they act only on mails we sent, to the addresses we sent them to.

A report changes something (the outbox row marked bounced, the address flagged so further
mails to it are held until the customer writes from it again, a bounce event on the ticket)
only when it shows which of our mails it is about and names an address that mail went to.
The best proof is the signed return path (VERP) of the mail, which the report is sent to;
else the Message-ID of one of our outbox rows, quoted in the report.  Any other report
changes nothing: it is noted on the ticket when it names one of our tickets' signed
Message-IDs, else listed in the quarantine with the reason.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mailbot.reading import classify, dsn
from mailbot.reading.message import Message
from mailbot.store import directory as dq
from mailbot.store import inbound as iq
from mailbot.store import outbox as oq
from mailbot.store import tickets as tq
from mailbot.tickets.filing import store_message
from mailbot.tickets.outcome import Outcome

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

log = logging.getLogger(__name__)

BY_RETURN_PATH = "return path"
BY_MESSAGE_ID = "Message-ID"


def handle(ctx: Context, msg: Message, verdict: classify.Verdict, *, sha: str,
           source: str) -> Outcome:
    """File a delivery report: act on the addresses it proves our mail went to, record
    the rest.  ``sha`` and ``source`` name the spooled mail for a quarantine entry."""
    report = verdict.bounce
    if report is None:
        return Outcome("ignored", "", f"{verdict.reason}; no delivery report found")
    row, how = our_mail(ctx, msg, report)
    failed = failed_recipients(report, row, how)
    if row is None or not failed:
        return _record(ctx, msg, report, row, (sha, source))
    return _act(ctx, msg, report, row, (failed, how))


def our_mail(ctx: Context, msg: Message, report: dsn.Bounce) -> tuple[dict | None, str]:
    """The outbox row of the mail a report is about, and how we know it: by the signed
    return path the report was sent to, else by the Message-ID of our mail it quotes."""
    for tag in dsn.own_tags(msg, ctx.config.support.addresses):
        start = ctx.signer.read_bounce_tag(tag)
        row = oq.outbox_by_message_id_start(ctx.store, start) if start else None
        if row is not None:
            return row, BY_RETURN_PATH
    row = oq.outbox_by_message_id(ctx.store, report.original_message_id) \
        if report.original_message_id else None
    return (row, BY_MESSAGE_ID) if row is not None else (None, "")


def failed_recipients(report: dsn.Bounce, row: dict | None, how: str) -> tuple[str, ...]:
    """The failed addresses that our mail ``row`` went to.

    A report sent to the return path of a mail to one address is about that address even
    when it names none (some MTAs' bounces cannot be read for it).
    """
    if row is None:
        return ()
    sent_to = tuple(a.lower() for a in row["recipients"])
    if not report.recipients and how == BY_RETURN_PATH and len(sent_to) == 1:
        return sent_to
    return tuple(a for a in report.recipients if a in sent_to)


def _act(ctx: Context, msg: Message, report: dsn.Bounce, row: dict,
         proof: tuple[tuple[str, ...], str]) -> Outcome:
    """Mark the row and flag the addresses (a permanent failure), note it on the ticket."""
    failed, how = proof
    now = ctx.clock()
    what = _what(report)
    if report.permanent:
        oq.mark_final(ctx.store, row["id"], "bounced", what)
        for address in failed:
            dq.flag_bounce(ctx.store, address, what, now)
    state = "flagged undeliverable" if report.permanent else "delayed, nothing held"
    detail = f"{what}; {', '.join(failed)} {state} (our mail {row['message_id']}, by its {how})"
    ticket = tq.by_id(ctx.store, row["ticket_id"]) if row["ticket_id"] is not None else None
    if ticket is None:
        return Outcome("bounce", "", detail)
    store_message(ctx, ticket["id"], msg, "note", now)
    tq.add_event(ctx.store, ticket["id"], "bounce", {
        "recipients": list(failed), "status": report.status, "reason": report.reason,
        "permanent": report.permanent, "message_id": row["message_id"], "proof": how,
        "not_ours": [a for a in report.recipients if a not in failed]}, now)
    return Outcome("bounce", ticket["number"], detail)


def _record(ctx: Context, msg: Message, report: dsn.Bounce, row: dict | None,
            spooled: tuple[str, str]) -> Outcome:
    """A report that proves nothing changes nothing: a note on the ticket it names, else
    an entry in the quarantine list; the log says why."""
    now = ctx.clock()
    why = _why_not(report, row)
    ticket = _named_ticket(ctx, report, row)
    log.warning("a delivery report changed nothing: %s (%s)", why, _what(report))
    if ticket is None:
        sha, source = spooled
        iq.add_quarantine(ctx.store, sha, source, f"{why} ({_what(report)}); nothing changed",
                          now)
        return Outcome("ignored", "", f"{why}: listed in the quarantine, nothing changed")
    store_message(ctx, ticket["id"], msg, "note", now)
    tq.add_event(ctx.store, ticket["id"], "bounce_ignored", {
        "recipients": list(report.recipients), "status": report.status,
        "reason": report.reason, "message_id": report.original_message_id, "why": why}, now)
    return Outcome("note", ticket["number"], f"{why}: noted on the ticket, nothing changed")


def _why_not(report: dsn.Bounce, row: dict | None) -> str:
    """Why a report does not count, in the words of the log and the quarantine list."""
    if row is None:
        return "bounce for a mail we did not send"
    named = ", ".join(report.recipients) or "no address"
    return f"bounce names {named}, but our mail {row['message_id']} did not go there"


def _named_ticket(ctx: Context, report: dsn.Bounce, row: dict | None) -> dict | None:
    """The ticket of our mail, or of one of our signed Message-IDs the report quotes."""
    if row is not None and row["ticket_id"] is not None:
        return tq.by_id(ctx.store, row["ticket_id"])
    number = ctx.signer.read_message_id(report.original_message_id)
    return tq.by_number(ctx.store, number) if number else None


def _what(report: dsn.Bounce) -> str:
    """Status and reason of a report, for the row, the contact and the log."""
    return f"{report.status} {report.reason}".strip()
