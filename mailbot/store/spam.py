"""Queries on mails held as spam: held until released, deleted or expired.

A held mail is one row here (its raw bytes stay in the spool under ``sha256``) and an
ingest record with outcome ``spam``, so a re-delivery of it is a duplicate.
"""

from __future__ import annotations

from datetime import datetime

from mailbot.store import Store, iso

# What a listing shows of each held mail.
LISTED = "id, sha256, source, message_id, from_addr, subject, reason, created_at"


def hold(store: Store, entry: dict, at: datetime) -> int:
    """Hold a mail (sha256, source, message_id, from_addr, subject, reason); its id.

    The same bytes are held once: holding them again keeps the first entry.
    """
    store.execute(
        "INSERT INTO spam_held(sha256, source, message_id, from_addr, subject, reason, "
        "created_at) VALUES (:sha256, :source, :message_id, :from_addr, :subject, :reason, "
        ":created_at) ON CONFLICT(sha256) DO NOTHING", {**entry, "created_at": iso(at)})
    return store.row("SELECT id FROM spam_held WHERE sha256 = ?", (entry["sha256"],))["id"]


def held(store: Store) -> list[dict]:
    """Every held mail, oldest first."""
    return store.rows(f"SELECT {LISTED} FROM spam_held ORDER BY id")  # noqa: S608 - constant


def by_id(store: Store, entry_id: int) -> dict | None:
    """One held mail, or None."""
    return store.row(f"SELECT {LISTED} FROM spam_held WHERE id = ?",  # noqa: S608 - constant
                     (entry_id,))


def held_before(store: Store, moment: datetime, after: dict | None, limit: int) -> list[dict]:
    """A page of the held mails that came in before ``moment`` (those due to expire), in
    id order after the row ``after`` (None: from the start)."""
    return store.rows(f"SELECT {LISTED} FROM spam_held "  # noqa: S608 - constant
                      "WHERE created_at < ? AND id > ? ORDER BY id LIMIT ?",
                      (iso(moment), after["id"] if after else 0, limit))


def count(store: Store) -> int:
    """How many mails are held."""
    return store.row("SELECT COUNT(*) AS n FROM spam_held")["n"]


def release(store: Store, sha256: str) -> int:
    """Let go of the held entry of these bytes as they are filed; how many went (0 or 1).

    The ingest record stays: the filing that follows in the same transaction rewrites it.
    """
    return store.execute("DELETE FROM spam_held WHERE sha256 = ?", (sha256,))


def forget(store: Store, entry: dict) -> bool:
    """Forget a held mail and its ingest record; whether its spooled bytes are now unused.

    Bytes are in use while a ticket's message, a quarantine entry or an ingest record of
    another outcome (a later filing of the same bytes) refers to them.
    """
    sha = entry["sha256"]
    store.execute("DELETE FROM spam_held WHERE id = ?", (entry["id"],))
    store.execute("DELETE FROM ingest WHERE sha256 = ? AND outcome = 'spam'", (sha,))
    users = store.row(
        "SELECT (SELECT COUNT(*) FROM messages WHERE spool_sha256 = :sha)"
        " + (SELECT COUNT(*) FROM quarantine WHERE sha256 = :sha)"
        " + (SELECT COUNT(*) FROM ingest WHERE sha256 = :sha)"
        " + (SELECT COUNT(*) FROM spam_held WHERE sha256 = :sha) AS n", {"sha": sha})
    return users["n"] == 0
