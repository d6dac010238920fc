"""Queries on the outbox: queueing, claiming, delivery state, the acknowledgement count.

A sender claims one row at a time: ``claimed_by`` names it, ``claimed_until`` ends the
claim (a lease, so a crashed sender's row is tried again); a row nobody holds has no
``claimed_until`` or one in the past.  Only the sender named in a claim marks the row
sent, retried or failed (a lease that ran out still counts as long as nobody else took
the row); a finished row keeps ``claimed_by``, the sender that last had it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
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
    """The outbox row of the mail we sent with this Message-ID (with its recipients), or None."""
    return _with_recipients(store.row(
        "SELECT id, ticket_id, kind, status, message_id, recipients FROM outbox "
        "WHERE message_id = ?", (message_id,)))


def outbox_by_message_id_start(store: Store, start: str) -> dict | None:
    """The first outbox row whose Message-ID begins with ``start`` (with its recipients),
    or None; a range over the Message-ID index, exact in case."""
    return _with_recipients(store.row(
        "SELECT id, ticket_id, kind, status, message_id, recipients FROM outbox "
        "WHERE message_id >= ? AND message_id < ? ORDER BY id LIMIT 1",
        (start, start + "\U0010ffff")))


def _with_recipients(row: dict | None) -> dict | None:
    return {**row, "recipients": json.loads(row["recipients"])} if row else None


def due(store: Store, now: datetime, limit: int) -> list[dict]:
    """Pending outbox rows whose next attempt is due, oldest first (claimed or not)."""
    rows = store.rows("SELECT * FROM outbox WHERE status = 'pending' AND next_attempt_at <= ? "
                      "ORDER BY next_attempt_at, id LIMIT ?", (iso(now), limit))
    for row in rows:
        row["recipients"] = json.loads(row["recipients"])
    return rows


def claiming(store: Store) -> contextlib.AbstractContextManager:
    """The transaction a claim (:func:`claim_next`) runs in.

    SQLite: under the write lock, like every write (without an fsync: a lost claim only
    makes the row due again).  PostgreSQL: without the cluster-wide write lock, as the
    claim locks its row and passes over rows others hold (FOR UPDATE SKIP LOCKED), so the
    senders of several nodes claim different rows at the same time.
    """
    if store.dialect.skip_locked:
        return store.row_locked()
    return store.transaction(durable=False)


def claim_next(store: Store, owner: str, due_by: datetime, now: datetime,
               until: datetime, up_to_id: int | None = None) -> dict | None:
    """Claim the oldest pending row due by ``due_by`` that nobody holds; the row, or None
    (inside :func:`claiming`).

    One statement looks the row up and claims it, so two senders (the daemon and
    ``mailbot outbox flush``, or the daemons of two nodes) never claim the same row.  With
    ``up_to_id`` only rows up to it are taken: the ones the caller knows to be durable.
    """
    row = store.row(
        "UPDATE outbox SET claimed_by = :owner, claimed_until = :until WHERE id = ("  # noqa: S608
        "SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= :due "
        "AND (CAST(:up_to AS BIGINT) IS NULL OR id <= :up_to) "
        "AND (claimed_until IS NULL OR claimed_until <= :now) "
        f"ORDER BY next_attempt_at, id LIMIT 1 {store.dialect.skip_locked}) RETURNING *",
        {"owner": owner, "until": iso(until), "due": iso(due_by), "now": iso(now),
         "up_to": up_to_id})
    if row is not None:
        row["recipients"] = json.loads(row["recipients"])
    return row


def claim_owners(store: Store, now: datetime) -> list[str]:
    """The senders holding a claim on a pending row right now."""
    return [r["claimed_by"] for r in store.rows(
        "SELECT DISTINCT claimed_by FROM outbox WHERE status = 'pending' "
        "AND claimed_until > ?", (iso(now),))]


def release_claims(store: Store, owner: str) -> int:
    """End every claim of ``owner`` (a sender that is gone); its rows are due again."""
    return store.execute("UPDATE outbox SET claimed_until = NULL WHERE status = 'pending' "
                         "AND claimed_by = ? AND claimed_until IS NOT NULL", (owner,))


def next_due_at(store: Store) -> str | None:
    """When the earliest pending outbox row can be sent (due and not held by a claim)."""
    row = store.row(f"SELECT MIN({store.dialect.greatest}(next_attempt_at, "  # noqa: S608
                    "COALESCE(claimed_until, ''))) AS at "
                    "FROM outbox WHERE status = 'pending'")
    return row["at"] if row else None


def mark_sent(store: Store, row_id: int, owner: str, at: datetime) -> bool:
    """Record a delivered row claimed by ``owner``; False when the claim is not its own."""
    return store.execute(
        "UPDATE outbox SET status = 'sent', sent_at = :at, attempts = attempts + 1, "
        "last_error = '', claimed_until = NULL WHERE id = :id AND status = 'pending' "
        "AND claimed_by = :owner AND claimed_until IS NOT NULL",
        {"at": iso(at), "id": row_id, "owner": owner}) == 1


def mark_retry(store: Store, row_id: int, owner: str, error: str, next_at: datetime) -> bool:
    """Record a failed attempt of ``owner``'s row and when to try again; releases the claim."""
    return store.execute(
        "UPDATE outbox SET attempts = attempts + 1, last_error = :error, "
        "next_attempt_at = :next, claimed_until = NULL WHERE id = :id AND status = 'pending' "
        "AND claimed_by = :owner AND claimed_until IS NOT NULL",
        {"error": error, "next": iso(next_at), "id": row_id, "owner": owner}) == 1


def mark_failed(store: Store, row_id: int, owner: str, error: str) -> bool:
    """Give up on ``owner``'s row: failed, with the reason; False when the claim is not its own."""
    return store.execute(
        "UPDATE outbox SET status = 'failed', attempts = attempts + 1, last_error = :error, "
        "claimed_until = NULL WHERE id = :id AND status = 'pending' "
        "AND claimed_by = :owner AND claimed_until IS NOT NULL",
        {"error": error, "id": row_id, "owner": owner}) == 1


def mark_final(store: Store, row_id: int, status: str, error: str) -> None:
    """Record an outbox row that will not be tried again (failed, bounced, held)."""
    store.execute("UPDATE outbox SET status = ?, attempts = attempts + 1, last_error = ? "
                  "WHERE id = ?", (status, error, row_id))


def retry_now(store: Store, now: datetime) -> int:
    """Make every pending row due now that is not due yet (a row in flight keeps its claim)."""
    return store.execute("UPDATE outbox SET next_attempt_at = :now WHERE status = 'pending' "
                         "AND next_attempt_at > :now", {"now": iso(now)})


def requeue(store: Store, row_ids: Iterable[int], now: datetime) -> int:
    """Queue failed rows again: pending, due now, attempts and lifetime starting afresh."""
    return store.execute(
        "UPDATE outbox SET status = 'pending', next_attempt_at = ?, retried_at = ?, "  # noqa: S608
        "attempts = 0, claimed_until = NULL WHERE status = 'failed' "
        f"AND id IN ({store.dialect.each('?')})",
        (iso(now), iso(now), json.dumps(list(row_ids))))


def outbox_rows(store: Store, status: str | None, row_ids: Iterable[int] = ()) -> list[dict]:
    """Outbox rows without their bytes, for listing: all, of one status, or these ids."""
    sql = ("SELECT o.id, o.kind, o.message_id, o.recipients, o.status, o.attempts, "
           "o.next_attempt_at, o.last_error, o.created_at, o.sent_at, t.number AS ticket "
           "FROM outbox o LEFT JOIN tickets t ON t.id = o.ticket_id")
    ids = list(row_ids)
    if ids:
        rows = store.rows(sql + f" JOIN ({store.dialect.each('?')}) AS wanted "
                          "ON wanted.value = o.id "
                          "ORDER BY o.id", (json.dumps(ids),))
    elif status:
        rows = store.rows(sql + " WHERE o.status = ? ORDER BY o.id", (status,))
    else:
        rows = store.rows(sql + " ORDER BY o.id")
    for row in rows:
        row["recipients"] = json.loads(row["recipients"])
    return rows


def outbox_counts(store: Store) -> dict[str, int]:
    """How many outbox rows are pending and how many failed (each scrape of the metrics
    asks): counted in the index of those statuses, not over every mail ever sent."""
    return {r["status"]: r["n"] for r in
            store.rows("SELECT status, COUNT(*) AS n FROM outbox "
                       "WHERE status IN ('pending', 'failed') GROUP BY status")}


def last_id(store: Store) -> int:
    """The id of the newest outbox row (0 when there is none)."""
    return store.row("SELECT COALESCE(MAX(id), 0) AS id FROM outbox")["id"]


def oldest_pending_at(store: Store) -> str | None:
    """When the oldest mail still waiting for delivery was queued (ISO), or None."""
    return store.row("SELECT MIN(created_at) AS at FROM outbox WHERE status = 'pending'")["at"]
