"""Queries on the outbox: queueing, claiming, delivery state, the acknowledgement count."""

from __future__ import annotations

import json
from datetime import datetime

from mailbot.store import Store, iso


def enqueue(store: Store, record: dict) -> int:
    """Put a mail to send into the outbox (inside the causing transaction)."""
    record = {**record, "recipients": list(record["recipients"])}
    return store.insert("outbox", record)


def acknowledgements_since(store: Store, address: str, since: datetime) -> int:
    """How many acknowledgements went to ``address`` since ``since``."""
    row = store.row("SELECT COUNT(*) AS n FROM outbox WHERE kind = 'acknowledgement' "
                    "AND created_at >= ? AND recipients = ?",
                    (iso(since), f'["{address}"]'))
    return row["n"]


def outbox_by_message_id(store: Store, message_id: str) -> dict | None:
    """The outbox row of the mail we sent with this Message-ID, or None."""
    return store.row("SELECT id, ticket_id, kind, status FROM outbox WHERE message_id = ?",
                     (message_id,))


def due(store: Store, now: datetime, limit: int) -> list[dict]:
    """Pending outbox rows whose next attempt is due, oldest first."""
    rows = store.rows("SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
                      "ORDER BY next_attempt_at, id LIMIT ?", (iso(now), limit))
    for row in rows:
        row["recipients"] = json.loads(row["recipients"])
    return rows


def next_due_at(store: Store) -> str | None:
    """When the earliest pending outbox row is due, or None."""
    row = store.row("SELECT MIN(next_attempt_at) AS at FROM outbox WHERE status = 'pending'")
    return row["at"] if row else None


def claim(store: Store, row_id: int, seen_next_at: str, lease_until: datetime) -> bool:
    """Take a due row for delivery so no other sender (daemon or CLI) sends it too."""
    return store.execute("UPDATE outbox SET next_attempt_at = ? WHERE id = ? AND status = "
                         "'pending' AND next_attempt_at = ?",
                         (iso(lease_until), row_id, seen_next_at)) == 1


def mark_sent(store: Store, row_id: int, at: datetime) -> None:
    """Record a delivered outbox row."""
    store.execute("UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1, "
                  "last_error = '' WHERE id = ?", (iso(at), row_id))


def mark_retry(store: Store, row_id: int, error: str, next_at: datetime) -> None:
    """Record a failed attempt and when to try again."""
    store.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                  "next_attempt_at = ? WHERE id = ?", (error, iso(next_at), row_id))


def mark_final(store: Store, row_id: int, status: str, error: str) -> None:
    """Record an outbox row that will not be tried again (failed, bounced, held)."""
    store.execute("UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ? "
                  "WHERE id = ?", (status, error, row_id))


def retry_now(store: Store, now: datetime, include_failed: bool) -> int:
    """Make pending (and optionally failed) outbox rows due immediately."""
    if include_failed:
        return store.execute("UPDATE outbox SET status = 'pending', next_attempt_at = ? "
                             "WHERE status IN ('pending', 'failed')", (iso(now),))
    return store.execute("UPDATE outbox SET next_attempt_at = ? WHERE status = 'pending'",
                         (iso(now),))


def outbox_rows(store: Store, status: str | None) -> list[dict]:
    """Outbox rows without their bytes, for listing."""
    sql = ("SELECT o.id, o.kind, o.message_id, o.recipients, o.status, o.attempts, "
           "o.next_attempt_at, o.last_error, o.created_at, o.sent_at, t.number AS ticket "
           "FROM outbox o LEFT JOIN tickets t ON t.id = o.ticket_id")
    rows = (store.rows(sql + " WHERE o.status = ? ORDER BY o.id", (status,)) if status
            else store.rows(sql + " ORDER BY o.id"))
    for row in rows:
        row["recipients"] = json.loads(row["recipients"])
    return rows


def outbox_counts(store: Store) -> dict[str, int]:
    """How many outbox rows are in each status."""
    return {r["status"]: r["n"] for r in
            store.rows("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")}
