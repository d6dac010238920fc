"""Queries on what came in: ingest records, the quarantine, each mailbox's UIDVALIDITY."""

from __future__ import annotations

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
                  ticket_number: str, source: str, at: datetime) -> None:
    """Remember a processed mail so a second delivery of it is a no-op; ``ticket_number``
    names the ticket it went to, if any ("": none).

    The record of bytes that were filed is never replaced; only a quarantined or spam-held
    mail's record is, when it is filed after all (retried, released).
    """
    store.execute(
        "INSERT INTO ingest(sha256, message_id, outcome, ticket_id, source, created_at) "
        "VALUES (?, ?, ?, (SELECT id FROM tickets WHERE number = ?), ?, ?) "
        "ON CONFLICT(sha256) DO UPDATE SET outcome = excluded.outcome,"
        " ticket_id = excluded.ticket_id, message_id = excluded.message_id"
        " WHERE ingest.outcome IN ('quarantined', 'spam')",
        (sha256, message_id, outcome, ticket_number, source, iso(at)))


def add_quarantine(store: Store, sha256: str, source: str, error: str, at: datetime,
                   size: int = 0, sender: str = "") -> int:
    """Hold a mail that could not be processed, with its error; the same bytes held already
    count as one more copy of that entry (with the latest error), not a new entry."""
    held = store.row("SELECT id FROM quarantine WHERE sha256 = ? AND status = 'held' "
                     "AND sha256 != ''", (sha256,))
    if held is not None:
        store.execute("UPDATE quarantine SET copies = copies + 1, last_seen_at = ?, error = ? "
                      "WHERE id = ?", (iso(at), error, held["id"]))
        return held["id"]
    return store.insert("quarantine", {"sha256": sha256, "source": source, "error": error,
                                       "created_at": at, "last_seen_at": at, "size": size,
                                       "sender": sender})


def quarantined(store: Store, status: str | None = "held") -> list[dict]:
    """Quarantine entries, newest last; all of them when ``status`` is None."""
    if status is None:
        return store.rows("SELECT * FROM quarantine ORDER BY id")
    return store.rows("SELECT * FROM quarantine WHERE status = ? ORDER BY id", (status,))


def set_quarantine_status(store: Store, entry_id: int, status: str, at: datetime) -> None:
    """Mark a quarantine entry retried or released."""
    store.execute("UPDATE quarantine SET status = ?, retried_at = ? WHERE id = ?",
                  (status, iso(at), entry_id))


def uidvalidity(store: Store, mailbox: str) -> int | None:
    """The UIDVALIDITY last seen for an IMAP mailbox, or None."""
    row = store.row("SELECT uidvalidity FROM imap_state WHERE mailbox = ?", (mailbox,))
    return row["uidvalidity"] if row else None


def set_uidvalidity(store: Store, mailbox: str, value: int) -> None:
    """Remember the UIDVALIDITY of an IMAP mailbox."""
    store.execute("INSERT INTO imap_state(mailbox, uidvalidity) VALUES (?, ?) "
                  "ON CONFLICT(mailbox) DO UPDATE SET uidvalidity = excluded.uidvalidity",
                  (mailbox, value))


def quarantine_count(store: Store) -> int:
    """How many mails are held in the quarantine, waiting for an operator."""
    return store.row("SELECT COUNT(*) AS n FROM quarantine WHERE status = 'held'")["n"]
