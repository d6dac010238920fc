"""Support policy: priority, contract raise, entitlement, response deadlines (pure functions).

Priorities are urgent > high > normal > low. A mail's initial priority comes from the first
matching rule (rules are tried urgent first, then high, normal, low; each in config order)
over its subject and the first ``scan_chars`` characters of its body, without quoted history.
A contract then raises it (maintenance contract: one level, capped at urgent). Deadlines are
business time after receipt on the contract's calendar (see mailbot.bizhours for the exact
meaning of business hours and business days); the clock pauses while a ticket waits for the
customer. Build a Policy once from PolicyConfig with build_policy and pass it around.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from mailbot.policy.bizhours import (
    BusinessCalendar,
    BusinessDuration,
    Holidays,
    add_business_time,
    country_holidays,
    is_open,
    next_opening,
    parse_duration,
)
from mailbot.policy.config import (
    DEFAULT_TARGETS,
    ContractPolicy,
    PolicyConfig,
    Priority,
    PriorityRule,
    Targets,
)
from mailbot.reading.facts import written_text

PRIORITIES: tuple[Priority, ...] = ("urgent", "high", "normal", "low")
DEFAULT_CALENDAR = "default"
_SPACES = re.compile(r"\s+")
_FAR_FUTURE = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _Rule:
    """A PriorityRule with its patterns compiled into one regex."""

    name: str
    priority: Priority
    regex: re.Pattern[str]


@dataclass(frozen=True)
class Rating:
    """The priority rules alone, compiled: all that rating a mail's text needs (it crosses
    to the reader processes, which rate a mail as they read it)."""

    rules: tuple[_Rule, ...]
    scan_chars: int
    default_priority: Priority


@dataclass(frozen=True)
class Policy:
    """A validated PolicyConfig with compiled rules and calendars; build it with build_policy."""

    config: PolicyConfig
    calendars: Mapping[str, BusinessCalendar]
    rating: Rating


def priority_rank(priority: str, key: str = "priority") -> int:
    """0 for urgent up to 3 for low; ValueError naming key for anything else."""
    if priority not in PRIORITIES:
        raise ValueError(f"{key}: {priority!r} is not a priority; use {', '.join(PRIORITIES)}")
    return PRIORITIES.index(priority)


def raise_priority(priority: Priority, levels: int) -> Priority:
    """priority raised by levels (lowered when negative), capped at urgent and low."""
    return PRIORITIES[min(max(priority_rank(priority) - levels, 0), len(PRIORITIES) - 1)]


def _compile_rule(rule: PriorityRule, path: str) -> _Rule:
    """Join a rule's patterns into one case-insensitive, whole-word regex."""
    priority_rank(rule.priority, f"{path}.priority")
    for i, pattern in enumerate(rule.patterns):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{path}.patterns[{i}]: invalid regex {pattern!r}: {exc}") from None
        if not pattern or re.fullmatch(pattern, ""):
            raise ValueError(f"{path}.patterns[{i}]: pattern matches empty text")
    joined = "|".join(f"(?:{p})" for p in rule.patterns) or "(?!)"
    return _Rule(rule.name, rule.priority, re.compile(rf"(?<!\w)(?:{joined})(?!\w)", re.I))


def _check_targets(targets: Mapping[str, Targets], path: str) -> None:
    """Every key must be a priority and every non-empty target a valid duration."""
    for priority, target in targets.items():
        priority_rank(priority, f"{path}.{priority}")
        for name in ("first_response", "update", "resolution"):
            if text := getattr(target, name):
                parse_duration(text, f"{path}.{priority}.{name}")


def build_policy(cfg: PolicyConfig, path: str = "policy",
                 holidays: Holidays = country_holidays) -> Policy:
    """Validate cfg and compile it; ValueError messages start with the offending key.
    The calendars take their public holidays from ``holidays``."""
    if DEFAULT_CALENDAR in cfg.calendars:
        raise ValueError(f"{path}.calendars.{DEFAULT_CALENDAR}: reserved; set {path}.calendar")
    priority_rank(cfg.default_priority, f"{path}.default_priority")
    if cfg.scan_chars < 1:
        raise ValueError(f"{path}.scan_chars: must be at least 1")
    _check_targets(cfg.targets, f"{path}.targets")
    calendars = {DEFAULT_CALENDAR: BusinessCalendar(cfg.calendar, f"{path}.calendar", holidays)}
    for name, cal in cfg.calendars.items():
        calendars[name] = BusinessCalendar(cal, f"{path}.calendars.{name}", holidays)
    rules = [_compile_rule(rule, f"{path}.rules[{i}]") for i, rule in enumerate(cfg.rules)]
    rules.sort(key=lambda rule: priority_rank(rule.priority))
    return Policy(cfg, MappingProxyType(calendars),
                  Rating(tuple(rules), cfg.scan_chars, cfg.default_priority))


def validate_contract(contract: ContractPolicy, policy: Policy, path: str = "contract") -> None:
    """Raise ValueError naming the key when a contract's calendar or targets are invalid."""
    if contract.calendar and contract.calendar not in policy.calendars:
        known = ", ".join(sorted(policy.calendars))
        raise ValueError(f"{path}.calendar: unknown calendar {contract.calendar!r}; known: {known}")
    if contract.raise_levels < -1:
        raise ValueError(f"{path}.raise_levels: must be -1 (by tier) or at least 0")
    _check_targets(contract.targets, f"{path}.targets")


@dataclass(frozen=True)
class RuleMatch:
    """Why a mail got its initial priority: the rule and the text it matched ("" if none)."""

    priority: Priority
    rule_name: str = ""
    matched_text: str = ""


def classify(subject: str, body: str, rating: Rating) -> RuleMatch:
    """The initial priority of a mail from the first matching rule, urgent rules first."""
    text = subject + "\n" + written_text(body, rating.scan_chars)
    for rule in rating.rules:
        if m := rule.regex.search(text):
            return RuleMatch(rule.priority, rule.name, _SPACES.sub(" ", m.group(0))[:100])
    return RuleMatch(rating.default_priority)


def contract_raise(contract: ContractPolicy | None) -> int:
    """Priority levels a contract adds: its raise_levels, or by tier (maintenance: 1)."""
    if contract is None:
        return 0
    if contract.raise_levels >= 0:
        return contract.raise_levels
    return 1 if contract.tier.strip().lower() == "maintenance" else 0


def is_entitled(contract: ContractPolicy | None) -> bool:
    """True for customers with a contract whose tier is not "none" (seeds 003, 004)."""
    return contract is not None and contract.tier.strip().lower() not in ("", "none")


@dataclass(frozen=True)
class ResolvedTargets:
    """The response targets that apply to one ticket."""

    first_response: BusinessDuration
    update: BusinessDuration
    resolution: BusinessDuration


def resolve_targets(
    policy: Policy, priority: Priority, contract: ContractPolicy | None
) -> ResolvedTargets:
    """Targets for priority: the contract's, else the policy's, else the built-in default."""
    layers = [policy.config.targets.get(priority), DEFAULT_TARGETS[priority]]
    if contract is not None:
        layers.insert(0, contract.targets.get(priority))
    values = [
        next(getattr(t, name) for t in layers if t is not None and getattr(t, name))
        for name in ("first_response", "update", "resolution")
    ]
    return ResolvedTargets(*(parse_duration(v) for v in values))


def calendar_for(policy: Policy, contract: ContractPolicy | None) -> tuple[str, BusinessCalendar]:
    """The name and calendar whose business hours apply to a customer with contract."""
    name = (contract.calendar if contract is not None else "") or DEFAULT_CALENDAR
    if name not in policy.calendars:
        raise ValueError(f"contract {contract.name!r}: unknown calendar {name!r}")
    return name, policy.calendars[name]


@dataclass(frozen=True)
class Assessment:
    """What the policy decides for a new ticket, and why."""

    priority: Priority  # after the contract raise
    base_priority: Priority  # from the rules alone
    rule_name: str  # the rule that matched ("" when none did)
    matched_text: str  # the text it matched, for the ticket's event
    raised_by: str  # contract name when the contract raised the priority, else ""
    entitled: bool  # the customer has a contract with a tier other than "none"
    calendar: str  # name of the calendar the deadlines use
    first_response_due: datetime
    update_due: datetime | None  # set when a customer follows up; None at creation
    resolution_due: datetime
    received_in_hours: bool
    next_opening: datetime | None  # when support opens next, if received outside hours
    problem_report: bool  # the rules rate it urgent or high: ask for version, device, error


def assess(
    match: RuleMatch, contract: ContractPolicy | None, received_at: datetime, policy: Policy,
) -> Assessment:  # fmt: skip
    """Priority, entitlement and deadlines of a new ticket from the rating of its first mail
    (:func:`classify`)."""
    priority = raise_priority(match.priority, contract_raise(contract))
    name, cal = calendar_for(policy, contract)
    targets = resolve_targets(policy, priority, contract)
    in_hours = is_open(cal, received_at)
    return Assessment(
        priority=priority,
        base_priority=match.priority,
        rule_name=match.rule_name,
        matched_text=match.matched_text,
        raised_by=contract.name if contract and priority != match.priority else "",
        entitled=is_entitled(contract),
        calendar=name,
        first_response_due=add_business_time(cal, received_at, targets.first_response),
        update_due=None,
        resolution_due=add_business_time(cal, received_at, targets.resolution),
        received_in_hours=in_hours,
        next_opening=None if in_hours else next_opening(cal, received_at),
        problem_report=priority_rank(match.priority) <= priority_rank("high"),
    )


def update_due(
    policy: Policy, contract: ContractPolicy | None, priority: Priority, followed_up_at: datetime
) -> datetime:
    """When the next agent answer is due after a customer follow-up at followed_up_at."""
    _name, cal = calendar_for(policy, contract)
    target = resolve_targets(policy, priority, contract).update
    return add_business_time(cal, followed_up_at, target)
