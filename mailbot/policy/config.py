"""The support policy's configuration: priority rules, response targets, contracts.

Plain frozen dataclasses with the defaults from the seed pages; mailbot.policy compiles
and applies them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from mailbot.policy.bizhours import CalendarConfig

Priority = Literal["urgent", "high", "normal", "low"]


@dataclass(frozen=True)
class PriorityRule:
    """A named set of regexes that give a mail a priority when one matches."""

    # Name recorded in the ticket's events, so an agent sees why a ticket got its priority.
    name: str = ""
    # Priority of a matching mail: urgent, high, normal or low.
    priority: Priority = "normal"
    # Case-insensitive regexes over subject and body; each must match whole words.
    patterns: tuple[str, ...] = ()


DEFAULT_RULES: tuple[PriorityRule, ...] = (
    PriorityRule("outage", "urgent", (
        r"funktionier\w*\s+(?:gar\s+|überhaupt\s+)?nicht(?:\s+mehr)?", r"\w*ausf[aä]ll\w*",
        r"ausgefallen", r"geht\s+(?:gar\s+)?nicht\s+mehr", r"(?<!nicht )(?<!kein )dringend\w*",
        r"nicht\s+(?:mehr\s+)?erreichbar", r"stillstand", r"notfall", r"(?<!not )urgent",
        r"outage", r"(?:is|are)\s+down", r"not\s+working", r"(?:does|do)(?:n['’]t|\s+not)\s+work",
        r"stopped\s+working", r"emergency",
    )),
    PriorityRule("impairment", "high", (
        r"\w*fehler(?!frei)\w*", r"(?<!kein )(?<!no )problem\w*", r"errors?", r"bugs?",
        r"st[öo]rung\w*", r"defekt\w*", r"absturz|abgest[üu]rzt|st[üu]rzt\w*\s+ab",
        r"crash\w*", r"broken", r"kaputt", r"failed|failure|fails",
    )),
    PriorityRule("question or wish", "low", (
        r"\w*frage\w*", r"\w*w[uü]nsch\w*", r"verbesserungsvorschl[aä]g\w*", r"vorschlag",
        r"anregung\w*", r"nicht\s+dringend", r"questions?", r"feature\s+requests?",
        r"suggestions?", r"how\s+(?:do|can)\s+i", r"wie\s+kann\s+ich", r"not\s+urgent",
    )),
)  # fmt: skip


@dataclass(frozen=True)
class Targets:
    """Response targets as business durations ("4h", "30m", "1d", "1d4h"); "" = inherit."""

    # First agent answer after the ticket was created.
    first_response: str = ""
    # Next agent answer after a customer follow-up.
    update: str = ""
    # Ticket resolved (the clock pauses while the ticket waits for the customer).
    resolution: str = ""


DEFAULT_TARGETS: Mapping[str, Targets] = MappingProxyType({
    "urgent": Targets("4h", "4h", "2d"),
    "high": Targets("1d", "1d", "5d"),
    "normal": Targets("2d", "2d", "10d"),
    "low": Targets("5d", "5d", "20d"),
})  # fmt: skip


def _default_calendars() -> dict[str, CalendarConfig]:
    """Named calendars shipped by default: point-of-sale systems, Mon-Sat 09:00-20:00."""
    return {"pos": CalendarConfig(hours=("mon-sat 09:00-20:00",))}


@dataclass(frozen=True)
class PolicyConfig:
    """Priorities, business hours and response targets."""

    # Business hours of customers whose contract names no calendar of its own.
    calendar: CalendarConfig = field(default_factory=CalendarConfig)
    # Further calendars by name, chosen by a contract's `calendar` key.
    calendars: dict[str, CalendarConfig] = field(default_factory=_default_calendars)
    # Priority rules (replace the defaults when given); tried urgent first, then high,
    # normal, low, each group in the order given here.
    rules: tuple[PriorityRule, ...] = DEFAULT_RULES
    # Priority of a mail that matches no rule.
    default_priority: Priority = "normal"
    # Response targets per priority; missing priorities and empty fields use the defaults
    # (urgent 4h/4h/2d, high 1d/1d/5d, normal 2d/2d/10d, low 5d/5d/20d).
    targets: dict[str, Targets] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    # Characters of the body read for the priority rules (quoted lines are skipped).
    scan_chars: int = 4096
    # Ticket statuses during which the update and resolution clocks pause.
    paused_statuses: tuple[str, ...] = ("waiting",)


@dataclass(frozen=True)
class ContractPolicy:
    """A support contract as the policy sees it."""

    # Contract name, shown in events ("raised by maintenance contract Gold").
    name: str = ""
    # Tier: "maintenance", "none" or another name; any tier but "none" is entitled.
    tier: str = "none"
    # Priority levels the contract raises a ticket; -1: 1 for "maintenance", else 0.
    raise_levels: int = -1
    # Calendar name from the policy's calendars; "" for the default calendar.
    calendar: str = ""
    # Response targets per priority overriding the policy's; "" fields inherit.
    targets: dict[str, Targets] = field(default_factory=dict)


def contract_policy(contract: dict | None) -> ContractPolicy | None:
    """A contract row of the store as the policy sees it (None without a contract)."""
    if not contract:
        return None
    raise_levels = contract.get("raise_levels")
    targets = {k: Targets(**v) for k, v in (contract.get("targets") or {}).items()}
    return ContractPolicy(name=contract["name"], tier=contract.get("tier") or "none",
                          raise_levels=-1 if raise_levels is None else raise_levels,
                          calendar=contract.get("calendar") or "", targets=targets)
