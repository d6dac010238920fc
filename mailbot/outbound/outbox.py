"""The outbox: composed mails waiting for delivery, written in the caller's transaction.

Rows are written by the step that causes them, in the same transaction as the change,
so a crash leaves a change and its mails together or neither.  Whether a mail may go
out at all (e.g. to an address that bounced) is the caller's decision: a mail queued
with a reason to hold it waits as ``held`` and is never sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from mailbot.outbound.compose import Outgoing
from mailbot.store import Store
from mailbot.store import outbox as oq


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
