"""The policy step of a new ticket: priority, entitlement, deadlines, what to ask for.

The decisions are the pure functions of :mod:`mailbot.policy.rules`; this module feeds
them the mail and the sender's contract and turns their answer into ticket fields,
events (why this priority, which deadlines) and the acknowledgement's wording.  A ticket
whose sender is linked to an account later (a confirmed claim) gets the same treatment
through :func:`contract_treatment`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from mailbot.outbound import wording
from mailbot.policy import rules as policy_mod
from mailbot.policy.bizhours import add_business_time
from mailbot.policy.config import ContractPolicy, contract_policy
from mailbot.reading import facts as facts_mod
from mailbot.store import directory as dq
from mailbot.store import iso
from mailbot.store import tickets as tq
from mailbot.tickets.identify import Identity

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context


@dataclass(frozen=True)
class Assessed:
    """What policy decided for a new ticket."""

    priority: str = "normal"
    entitled: bool = False
    fields: dict = field(default_factory=dict)
    events: tuple[tuple[str, dict], ...] = ()
    ack_values: dict = field(default_factory=dict)


def assess(ctx: Context, rated: policy_mod.RuleMatch, identity: Identity, facts: dict,
           now: datetime, language: str) -> Assessed:
    """Priority, entitlement, deadlines and acknowledgement wording for a new ticket whose
    first mail matched the priority rule ``rated``."""
    contract = contract_policy(identity.contract)
    result = policy_mod.assess(rated, contract, now, ctx.policy)
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


def contract_treatment(ctx: Context, ticket: dict, account: dict, why: str, actor: str,
                       now: datetime) -> None:
    """Give an existing ticket the contract treatment of ``account``, once its sender is
    known to belong to it (a confirmed claim, an operator's link): the account link,
    entitlement, the contract's priority raise and its targets, counted from the ticket's
    arrival in the contract's calendar.  Each change is an event saying ``why``."""
    contract = contract_policy(dq.contract(ctx.store, account.get("contract")))
    before = ticket["priority"]
    priority = policy_mod.raise_priority(before, policy_mod.contract_raise(contract))
    calendar, due = _contract_deadlines(ctx, ticket, contract, priority)
    fields = {"account_id": account["id"], "contract": account.get("contract"),
              "entitled": int(policy_mod.is_entitled(contract)), "priority": priority, **due}
    tq.update(ctx.store, ticket["id"], **fields, updated_at=now)
    ticket.update({k: iso(v) if isinstance(v, datetime) else v for k, v in fields.items()})
    tq.add_event(ctx.store, ticket["id"], "account", {
        "account": account["name"], "customer_number": account.get("customer_number"),
        "contract": account.get("contract"), "reason": why}, now, actor=actor)
    if priority != before:
        tq.add_event(ctx.store, ticket["id"], "priority", {
            "from": before, "to": priority, "raised_by": contract.name,
            "reason": f"raised from {before} by contract {contract.name}: {why}"}, now,
            actor=actor)
    tq.add_event(ctx.store, ticket["id"], "deadlines", {
        "calendar": calendar, **{k: iso(v) for k, v in due.items()},
        "reason": f"targets of contract {contract.name if contract else '-'}: {why}"}, now,
        actor=actor)


def _contract_deadlines(ctx: Context, ticket: dict, contract: ContractPolicy | None,
                        priority: str) -> tuple[str, dict]:
    """The calendar's name and the deadlines the contract sets, from the ticket's arrival
    (the first response only while none was given)."""
    try:
        calendar, hours = policy_mod.calendar_for(ctx.policy, contract)
    except ValueError:  # a calendar the config no longer has: the default one
        calendar, hours = policy_mod.calendar_for(ctx.policy, None)
    targets = policy_mod.resolve_targets(ctx.policy, priority, contract)
    arrived = datetime.fromisoformat(ticket["created_at"])
    due = {"resolution_due": add_business_time(hours, arrived, targets.resolution)}
    if not ticket["first_response_at"]:
        due["first_response_due"] = add_business_time(hours, arrived, targets.first_response)
    return calendar, due
