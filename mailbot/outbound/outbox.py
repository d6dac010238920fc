"""The outbox: composed mails waiting for delivery, written in the caller's transaction.

Rows are written by the step that causes them, in the same transaction as the change,
so a crash leaves a change and its mails together or neither.  Whether a mail may go
out at all (e.g. to an address that bounced) is the caller's decision: a mail queued
with a reason to hold it waits as ``held`` and is never sent.  A mail is retried for a
lifetime counted from when it was queued, or queued again by the operator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.outbound.compose import Outgoing
from mailbot.outbound.wording import Reason
from mailbot.store import Store
from mailbot.store import outbox as oq


@dataclass(frozen=True)
class Failure:
    """Why the sender gave up on a mail: the error of its last attempt, as data.

    ``reason`` is our words for the cause (a code the agents' mail words in its language;
    None where the relay's answer says it all), ``answer`` the relay's or the system's own
    words, ``expired`` whether temporary failures lasted the mail's whole lifetime
    (``[outbox] lifetime_days``).  ``str()`` is the English line of the log, the outbox row
    and the ticket's history.
    """

    answer: str
    reason: Reason | None = None
    expired: bool = False
    text: str = ""

    def __str__(self) -> str:
        return self.text


class RetryError(ValueError):
    """`outbox retry` was asked for mails that do not exist or have not failed."""


def enqueue(store: Store, ticket_id: int | None, outgoing: Outgoing, now: datetime,
            held_because: str = "") -> int:
    """Write a composed mail to the outbox (inside the caller's transaction); its row id.

    With ``held_because`` the row is kept as ``held`` with that reason instead of sent.
    """
    return oq.enqueue(store, {
        "ticket_id": ticket_id, "kind": outgoing.kind, "message_id": outgoing.message_id,
        "sender": outgoing.sender, "recipients": outgoing.recipients, "raw": outgoing.raw,
        "status": "held" if held_because else "pending", "next_attempt_at": now,
        "last_error": held_because, "created_at": now})


def backoff(attempts: int, base: float, ceiling: float) -> timedelta:
    """Wait before attempt ``attempts + 1``: exponential from ``base``, capped at ``ceiling``."""
    return timedelta(seconds=min(ceiling, base * (2 ** max(0, attempts - 1))))


def give_up_at(row: dict, lifetime_days: float) -> datetime:
    """When temporary failures stop being retried: the lifetime after the row was queued
    (or queued again by `outbox retry`)."""
    start = datetime.fromisoformat(row.get("retried_at") or row["created_at"])
    return start + timedelta(days=lifetime_days)


def retry_failed(store: Store, row_ids: Sequence[int], now: datetime) -> list[dict]:
    """Queue failed mails again (inside the caller's transaction): due now, with attempts and
    lifetime starting afresh; the rows, as they were.  No ids: every failed mail.

    Raises :class:`RetryError` naming every id that is unknown or not failed; then nothing
    is queued.
    """
    ids = tuple(dict.fromkeys(row_ids))
    rows = oq.outbox_rows(store, None, ids) if ids else oq.outbox_rows(store, "failed")
    found = {r["id"]: r for r in rows}
    problems = [f"no outbox mail {i}" if i not in found else
                f"mail {i} is {found[i]['status']}, only failed mails are queued again"
                for i in ids if found.get(i, {}).get("status") != "failed"]
    if problems:
        raise RetryError("; ".join(problems))
    if rows:
        oq.requeue(store, found, now)
    return rows
