"""A ticket's deadline clocks: started, stopped, paused and moved as the ticket changes.

The first-response clock stops at the first agent answer; the update clock starts with
a customer's follow-up; clocks pause while the ticket waits for the customer and an
escalation sets a new, urgent deadline.  All in business time of the ticket's calendar.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailbot.policy import rules as policy_mod
from mailbot.policy.bizhours import (
    BusinessCalendar,
    BusinessDuration,
    add_business_time,
    business_time_between,
)
from mailbot.policy.config import contract_policy
from mailbot.store import directory as dq
from mailbot.store import iso
from mailbot.store import tickets as tq

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context


def calendar_of(ctx: Context, ticket: dict) -> BusinessCalendar:
    """The business-hours calendar that applies to a ticket (its contract's, else default)."""
    contract = contract_policy(dq.contract(ctx.store, ticket.get("contract")))
    try:
        return policy_mod.calendar_for(ctx.policy, contract)[1]
    except ValueError:
        return policy_mod.calendar_for(ctx.policy, None)[1]


def reminder_due(calendar: BusinessCalendar, since: datetime, days: int) -> datetime:
    """When the customer of a ticket waiting from ``since`` on is reminded: after ``days``
    business days of its calendar (``since`` itself while reminders are off, ``days`` < 1:
    the reminder job looks at the ticket again if they are turned on)."""
    return add_business_time(calendar, since, BusinessDuration(days)) if days > 0 else since


def after_customer_reply(ctx: Context, ticket: dict, now: datetime) -> None:
    """Start the update clock after a customer's follow-up (once the first answer went out)."""
    if not ticket.get("first_response_at") or ticket.get("update_due"):
        return
    contract = contract_policy(dq.contract(ctx.store, ticket.get("contract")))
    due = policy_mod.update_due(ctx.policy, contract, ticket["priority"], now)
    tq.update(ctx.store, ticket["id"], update_due=due)
    ticket["update_due"] = iso(due)


def after_agent_answer(ctx: Context, ticket: dict, now: datetime) -> None:
    """Stop the first-response clock (recording whether it was met) and the update clock."""
    if not ticket.get("first_response_at"):
        due = ticket.get("first_response_due")
        met = None if not due else int(now <= datetime.fromisoformat(due))
        tq.update(ctx.store, ticket["id"], first_response_at=now, first_response_met=met,
                  update_due=None)
        tq.add_event(ctx.store, ticket["id"], "first_response", {"met": met}, now)
        ticket["first_response_at"] = now
    else:
        tq.update(ctx.store, ticket["id"], update_due=None)


def after_status_change(ctx: Context, ticket: dict, old: str, new: str, now: datetime) -> None:
    """Start the reminder clock when the ticket starts to wait (``remind_at``); resume the
    deadline clocks after waiting: push them back by the business time paused."""
    if new == "waiting":
        tq.update(ctx.store, ticket["id"], remind_at=reminder_due(
            calendar_of(ctx, ticket), now, ctx.config.notifications.waiting_reminder_days))
    paused = ctx.policy.config.paused_statuses
    if old not in paused or new in paused:
        return
    since = next((datetime.fromisoformat(e["created_at"]) for e in
                  reversed(tq.events(ctx.store, ticket["id"]))
                  if e["kind"] == "status" and e["data"].get("to") == old), None)
    if since is None:
        return
    cal = calendar_of(ctx, ticket)
    gap = business_time_between(cal, since, now)
    if gap <= timedelta(0):
        return
    keys = ["resolution_due", "update_due"] + ([] if ticket.get("first_response_at")
                                              else ["first_response_due"])
    moved = {k: add_business_time(cal, datetime.fromisoformat(ticket[k]), gap)
             for k in keys if ticket.get(k)}
    if moved:
        tq.update(ctx.store, ticket["id"], **moved)
        ticket.update({k: iso(v) for k, v in moved.items()})


def on_escalation(ctx: Context, ticket: dict, now: datetime) -> dict:
    """Ticket fields an escalation sets: urgent priority and a new response deadline."""
    contract = contract_policy(dq.contract(ctx.store, ticket.get("contract")))
    cal = calendar_of(ctx, ticket)
    targets = policy_mod.resolve_targets(ctx.policy, "urgent", contract)
    due = add_business_time(cal, now, targets.first_response)
    key = "update_due" if ticket.get("first_response_at") else "first_response_due"
    return {"priority": "urgent", key: due}
