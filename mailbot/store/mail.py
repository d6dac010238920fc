"""Queries on ingest records, the quarantine, the outbox and IMAP state."""

from __future__ import annotations

import json
from datetime import datetime

from mailbot.store import Store, iso


def ingest_by_sha(store: Store, sha256: str) -> dict | None:
    """The ingest record of exactly these bytes, or None."""
    return store.row("SELECT * FROM ingest WHERE sha256 = ?", (sha256,))


def ingest_by_message_id(store: Store, message_id: str) -> dict | None:
    """The first ingest record of a mail with this Message-ID that was filed, or None."""
    if not message_id:
        return None
    return store.row("SELECT * FROM ingest WHERE message_id = ? AND outcome != 'quarantined' "
                     "ORDER BY id LIMIT 1", (message_id,))


def record_ingest(store: Store, sha256: str, message_id: str, outcome: str,
                  ticket_id: int | None, source: str, at: datetime) -> None:
    """Remember a processed mail so a second delivery of it is a no-op."""
    store.execute(
        "INSERT INTO ingest(sha256, message_id, outcome, ticket_id, source, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET outcome = excluded.outcome,"
        " ticket_id = excluded.ticket_id, message_id = excluded.message_id",
        (sha256, message_id, outcome, ticket_id, source, iso(at)))


def add_quarantine(store: Store, sha256: str, source: str, error: str, at: datetime) -> int:
    """Hold a mail that could not be processed, with its error."""
    return store.insert("quarantine", {"sha256": sha256, "source": source, "error": error,
                                       "created_at": at})


def quarantined(store: Store, status: str | None = "held") -> list[dict]:
    """Quarantine entries, newest last; all of them when ``status`` is None."""
    if status is None:
        return store.rows("SELECT * FROM quarantine ORDER BY id")
    return store.rows("SELECT * FROM quarantine WHERE status = ? ORDER BY id", (status,))


def set_quarantine_status(store: Store, entry_id: int, status: str, at: datetime) -> None:
    """Mark a quarantine entry retried or released."""
    store.execute("UPDATE quarantine SET status = ?, retried_at = ? WHERE id = ?",
                  (status, iso(at), entry_id))


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


def uidvalidity(store: Store, mailbox: str) -> int | None:
    """The UIDVALIDITY last seen for an IMAP mailbox, or None."""
    row = store.row("SELECT uidvalidity FROM imap_state WHERE mailbox = ?", (mailbox,))
    return row["uidvalidity"] if row else None


def set_uidvalidity(store: Store, mailbox: str, value: int) -> None:
    """Remember the UIDVALIDITY of an IMAP mailbox."""
    store.execute("INSERT INTO imap_state(mailbox, uidvalidity) VALUES (?, ?) "
                  "ON CONFLICT(mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity",
                  (mailbox, value))
