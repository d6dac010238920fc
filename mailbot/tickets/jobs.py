"""The scheduler's jobs: status mails, deadline warnings, reminders, auto-close, held spam,
and once a day retention.

Each job is a plain function of the context and ``now`` (tests pass their own clock),
safe to run twice: what it sends is written to the outbox in the same transaction
that records it as done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailbot.policy.bizhours import BusinessCalendar, is_open
from mailbot.policy.rules import DEFAULT_CALENDAR
from mailbot.store import directory as dq
from mailbot.store import jobs as jq
from mailbot.store import pages
from mailbot.store import tickets as tq
from mailbot.tickets import clocks, filing, mails, notify, retention, spam

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

log = logging.getLogger(__name__)


def run_all(ctx: Context, now: datetime) -> dict[str, int]:
    """Run every job once; how many mails or changes each produced."""
    counts = {}
    for job in (status_notifications, deadline_warnings, waiting_reminders, auto_close,
                spam.expire_spam):
        try:
            counts[job.__name__] = job(ctx, now)
        except Exception:
            log.exception("job %s failed; it runs again next round", job.__name__)
    if any(counts.values()):
        ctx.on_outbox()
    return counts


def run_daily(ctx: Context, now: datetime) -> dict[str, int]:
    """The once-a-day job: retention (``[retention]``), when any of it is configured; what
    it deleted, also in the log."""
    config = ctx.config.retention
    if not (config.raw_days or config.tickets_days or config.quarantine_days):
        return {}
    counts = retention.run(ctx, now)
    if any(counts.values()):
        log.info("retention: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts


def _calendars(ctx: Context) -> Callable[[dict], BusinessCalendar]:
    """A ticket's calendar for one job run: each contract's is looked up once, not per ticket."""
    known: dict[str | None, BusinessCalendar] = {}

    def calendar_of(ticket: dict) -> BusinessCalendar:
        name = ticket.get("contract")
        if name not in known:
            known[name] = clocks.calendar_of(ctx, ticket)
        return known[name]

    return calendar_of


def status_notifications(ctx: Context, now: datetime) -> int:
    """One mail per ticket for status changes that settled for the coalescing window."""
    window = timedelta(seconds=ctx.config.notifications.coalesce_seconds)
    sent = 0
    for pending in pages(lambda after, limit: jq.pending_status_events(ctx.store, after, limit)):
        ticket_id, events = pending["ticket_id"], pending["events"]
        if datetime.fromisoformat(events[-1]["created_at"]) > now - window:
            continue
        with ctx.store.transaction():
            sent += _notify_status(ctx, ticket_id, events, now)
    return sent


def _notify_status(ctx: Context, ticket_id: int, events: list[dict], now: datetime) -> int:
    ticket = tq.by_id(ctx.store, ticket_id)
    if jq.mark_notified(ctx.store, [e["id"] for e in events], now) != len(events):
        return 0
    contact = dq.contact_by_id(ctx.store, ticket["contact_id"])
    by_customer = all(e["actor"] in ("customer", contact and contact["address"])
                      for e in events)
    final, before = ticket["status"], events[0]["data"].get("from")
    if by_customer or final == before or final not in ctx.config.notifications.statuses:
        return 0
    return int(mails.to_customer(ctx, ticket, "status_changed", {"status": final}, now))


def deadline_warnings(ctx: Context, now: datetime) -> int:
    """Warn agents once before a response deadline and once when it is breached, in the
    business hours of the ticket's calendar.  Only tickets whose calendar is open now are
    read: at night and at the weekend a round reads nothing, however many deadlines passed
    since support closed (they are told when it opens)."""
    calendars = ctx.policy.calendars
    hours = jq.OpenHours(open=tuple(name for name, cal in calendars.items() if is_open(cal, now)),
                         known=tuple(calendars), default=DEFAULT_CALENDAR)
    if not hours.open:
        return 0
    lead = timedelta(minutes=ctx.config.notifications.warning_minutes)
    sent = 0
    for label in jq.DEADLINES:
        for ticket in pages(lambda after, limit, label=label: jq.deadlines_due(
                ctx.store, label, now, lead, hours, after, limit)):
            sent += _deadline_stage(ctx, ticket, label, ticket["due"], now, lead)
    return sent


def _deadline_stage(ctx: Context, ticket: dict, label: str, due_text: str, now: datetime,
                    lead: timedelta) -> int:
    due = datetime.fromisoformat(due_text)
    stage = "deadline_breached" if now >= due else \
        "deadline_warning" if now >= due - lead else ""
    if not stage:
        return 0
    told = 0
    with ctx.store.transaction():
        if not jq.has_event(ctx.store, ticket["id"], stage, "due", due_text):
            tq.add_event(ctx.store, ticket["id"], stage, {"deadline": label, "due": due_text},
                         now)
            notify.agents_alert(ctx, tq.by_id(ctx.store, ticket["id"]), "deadline_warning", {
                "breached": stage == "deadline_breached", "deadline": label, "due": due_text},
                now)
            told = 1
        if stage == "deadline_breached":  # nothing more to tell of this deadline
            tq.update(ctx.store, ticket["id"], **{jq.TOLD[label]: due_text})
    return told


def waiting_reminders(ctx: Context, now: datetime) -> int:
    """Remind customers once per waiting period after N business days without an answer.

    Reads only the tickets whose ``remind_at`` (set when they started to wait) has come;
    one whose moment moved later since (more days configured) gets its new moment."""
    days = ctx.config.notifications.waiting_reminder_days
    if days <= 0:
        return 0
    calendar_of = _calendars(ctx)
    sent = 0
    for ticket in pages(lambda after, limit: jq.reminders_due(ctx.store, now, after, limit)):
        due = clocks.reminder_due(calendar_of(ticket), datetime.fromisoformat(ticket["since"]),
                                  days)
        with ctx.store.transaction():
            if now < due:
                tq.update(ctx.store, ticket["id"], remind_at=due)
                continue
            if not jq.has_event(ctx.store, ticket["id"], "waiting_reminder", "since",
                                ticket["since"]):
                tq.add_event(ctx.store, ticket["id"], "waiting_reminder",
                             {"since": ticket["since"]}, now)
                sent += mails.to_customer(ctx, ticket, "waiting_reminder", {}, now)
            tq.update(ctx.store, ticket["id"], remind_at=None)
    return sent


def auto_close(ctx: Context, now: datetime) -> int:
    """Close tickets resolved for N days, with a final mail instead of a status mail."""
    days = ctx.config.notifications.auto_close_days
    if days <= 0:
        return 0
    closed = 0
    for ticket in pages(lambda after, limit: jq.in_status_since(
            ctx.store, "resolved", now - timedelta(days=days), after, limit)):
        with ctx.store.transaction():
            current = tq.by_id(ctx.store, ticket["id"])
            if current["status"] != "resolved":
                continue
            filing.change_status(ctx, current, "closed", now)
            pending = jq.pending_status_events_of(ctx.store, current["id"])
            jq.mark_notified(ctx.store, [e["id"] for e in pending], now)
            mails.to_customer(ctx, current, "auto_closed", {"days": days}, now)
            closed += 1
    return closed

