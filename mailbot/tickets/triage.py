"""The policy step of the pipeline: priority, deadlines, what to ask, whom to answer.

This module connects the pure policy functions to tickets and the store; the
decisions themselves live in :mod:`mailbot.policy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mailbot.context import Context
from mailbot.outbound import wording
from mailbot.policy import rules as policy_mod
from mailbot.policy.bizhours import BusinessCalendar, add_business_time, business_time_between
from mailbot.policy.config import ContractPolicy, Targets
from mailbot.reading import facts as facts_mod
from mailbot.reading.message import Message
from mailbot.settings.config import Config
from mailbot.store import directory as dq
from mailbot.store import iso
from mailbot.store import tickets as tq
from mailbot.store import triage as trq
from mailbot.tickets.directory import Identity


@dataclass(frozen=True)
class Assessed:
    """What policy decided for a new ticket."""

    priority: str = "normal"
    entitled: bool = False
    fields: dict = field(default_factory=dict)
    events: tuple[tuple[str, dict], ...] = ()
    ack_values: dict = field(default_factory=dict)


def timezone_name(config: Config) -> str:
    """The time zone ticket numbers and customer-facing times use."""
    return config.policy.calendar.timezone


def extract(ctx: Context, msg: Message) -> dict[str, tuple[str, ...]]:
    """Facts named in a mail (customer number, version, device, error message ...)."""
    return facts_mod.extract_facts(msg.subject, msg.text, ctx.facts)


def contract_policy(contract: dict | None) -> ContractPolicy | None:
    """A stored contract as the policy sees it."""
    if not contract:
        return None
    raise_levels = contract.get("raise_levels")
    targets = {k: Targets(**v) for k, v in (contract.get("targets") or {}).items()}
    return ContractPolicy(name=contract["name"], tier=contract.get("tier") or "none",
                          raise_levels=-1 if raise_levels is None else raise_levels,
                          calendar=contract.get("calendar") or "", targets=targets)


def assess(ctx: Context, msg: Message, identity: Identity, facts: dict,
           now: datetime, language: str) -> Assessed:
    """Priority, entitlement, deadlines and acknowledgement wording for a new ticket."""
    contract = contract_policy(identity.contract)
    result = policy_mod.assess(msg.subject, msg.text, contract, now, ctx.policy)
    missing = facts_mod.missing_facts(facts, identity.known, result.problem_report)
    fields = {"first_response_due": result.first_response_due,
              "resolution_due": result.resolution_due,
              "facts": {k: list(v) for k, v in facts.items()}, "missing": list(missing)}
    return Assessed(priority=result.priority, entitled=result.entitled, fields=fields,
                    events=(("priority", _priority_event(result)),
                            ("deadlines", _deadline_event(result))),
                    ack_values=_ack_values(ctx, result, missing, language))


def _priority_event(result: policy_mod.Assessment) -> dict:
    reason = f"rule {result.rule_name} matched {result.matched_text!r}" if result.rule_name \
        else "no rule matched: default priority"
    if result.raised_by:
        reason += f"; raised from {result.base_priority} by contract {result.raised_by}"
    return {"priority": result.priority, "base_priority": result.base_priority,
            "rule": result.rule_name, "matched": result.matched_text,
            "raised_by": result.raised_by, "reason": reason}


def _deadline_event(result: policy_mod.Assessment) -> dict:
    return {"calendar": result.calendar, "first_response_due": iso(result.first_response_due),
            "resolution_due": iso(result.resolution_due),
            "received_in_hours": result.received_in_hours}


def _ack_values(ctx: Context, result: policy_mod.Assessment, missing: tuple[str, ...],
                language: str) -> dict:
    calendar = ctx.policy.calendars[result.calendar].config
    tz = calendar.timezone
    return {
        "priority_label": wording.priority_label(result.priority, language),
        "deadline_text": wording.moment(result.first_response_due, tz, language),
        "hours_text": wording.hours(calendar, language),
        "next_opening_text": wording.moment(result.next_opening, tz, language)
        if result.next_opening else "",
        "missing": wording.missing(missing, language),
    }


def calendar_of(ctx: Context, ticket: dict) -> BusinessCalendar:
    """The business-hours calendar that applies to a ticket (its contract's, else default)."""
    contract = contract_policy(dq.contract(ctx.store, ticket.get("contract")))
    try:
        return policy_mod.calendar_for(ctx.policy, contract)[1]
    except ValueError:
        return policy_mod.calendar_for(ctx.policy, None)[1]


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
    """Resume deadline clocks after waiting: push them back by the business time paused."""
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


def hold_acknowledgement(ctx: Context, msg: Message, now: datetime) -> str:
    """Why an acknowledgement must not be sent (rate limit, no sender address), or ``""``."""
    if not msg.from_addr:
        return "no sender address to answer to"
    limit = ctx.config.hygiene.max_acks_per_hour
    sent = trq.acknowledgements_since(ctx.store, msg.from_addr, now - timedelta(hours=1))
    if sent >= limit:
        return f"rate limit: {sent} acknowledgements to {msg.from_addr} in the last hour"
    return ""


def is_stranger(ctx: Context, msg: Message, ticket: dict, identity: Identity) -> bool:
    """Whether the sender has no business on ``ticket`` (not contact, participant or colleague)."""
    if ctx.config.hygiene.stranger_followup == "accept":
        return False
    if msg.from_addr in tq.participants(ctx.store, ticket["id"]):
        return False
    account = identity.account
    return not (account and ticket["account_id"] == account["id"])
