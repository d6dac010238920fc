"""The ticket status machine (pure): which changes are allowed and what a reply does."""

from __future__ import annotations

STATUSES = ("new", "open", "waiting", "resolved", "closed")
PRIORITIES = ("urgent", "high", "normal", "low")

ALLOWED = {
    "new": {"open", "waiting", "resolved", "closed"},
    "open": {"waiting", "resolved", "closed"},
    "waiting": {"open", "resolved", "closed"},
    "resolved": {"open", "closed"},
    "closed": {"open"},
}


class TransitionError(ValueError):
    """A status change the lifecycle does not allow."""


def check_transition(current: str, target: str) -> None:
    """Raise :class:`TransitionError` unless ``current`` may change to ``target``."""
    if target not in STATUSES:
        raise TransitionError(f"unknown status {target!r}; use one of {', '.join(STATUSES)}")
    if target != current and target not in ALLOWED[current]:
        raise TransitionError(f"a {current} ticket cannot become {target}")


def after_customer_reply(current: str) -> str:
    """The status a customer's follow-up leads to: waiting, resolved and closed tickets
    reopen (a closed one only reaches here when the configuration says to reopen it)."""
    return "open" if current in ("waiting", "resolved", "closed") else current


def closed_followup_action(mode: str, days_closed: float, reopen_days: int) -> str:
    """What a follow-up to a closed ticket does: ``reopen`` or ``new_linked``."""
    if mode == "reopen" or (mode == "reopen_within_days" and days_closed <= reopen_days):
        return "reopen"
    return "new_linked"
