"""Queries of retention: what is old enough to go (closed tickets, raw bytes, quarantine).

What actually goes, and which files nothing refers to afterwards, is in
:mod:`mailbot.store.privacy`.
"""

from __future__ import annotations

from datetime import datetime

from mailbot.store import Store, iso


def closed_before(store: Store, moment: datetime, after: dict | None, limit: int,
                  holding_raw: bool = False) -> list[dict]:
    """A page of the tickets (``id``) closed before ``moment``, in id order after the row
    ``after``; ``holding_raw``: only those that still keep a raw mail or an attachment (a
    desk's raw retention reads the tickets it acts on, not every ticket it ever closed)."""
    raw = (" AND EXISTS (SELECT 1 FROM messages m WHERE m.ticket_id = t.id AND "
           "(m.spool_sha256 IS NOT NULL OR EXISTS (SELECT 1 FROM attachments a "
           "WHERE a.message_row = m.id)))") if holding_raw else ""
    return store.rows("SELECT id FROM tickets t WHERE status = 'closed' AND closed_at < ? "  # noqa: S608
                      f"AND id > ?{raw} ORDER BY id LIMIT ?",
                      (iso(moment), after["id"] if after else 0, limit))


def raw_counts(store: Store, ticket_ids: list[int]) -> dict[int, tuple[int, int]]:
    """Per ticket, how many of its messages still refer to raw bytes and how many
    attachment rows it has (tickets with neither are left out)."""
    found: dict[int, tuple[int, int]] = {}
    for row in store.rows(
            "SELECT m.ticket_id, COUNT(DISTINCT m.id) FILTER (WHERE m.spool_sha256 IS NOT NULL)"  # noqa: S608
            " AS raw, COUNT(a.id) AS files FROM messages m "
            "LEFT JOIN attachments a ON a.message_row = m.id "
            f"WHERE m.ticket_id IN ({store.dialect.each('?')}) GROUP BY m.ticket_id",
            (_ids(ticket_ids),)):
        if row["raw"] or row["files"]:
            found[row["ticket_id"]] = (row["raw"], row["files"])
    return found


def drop_raw(store: Store, ticket_ids: list[int]) -> None:
    """Tickets' messages keep their texts but no raw bytes and no attachments."""
    ids = (_ids(ticket_ids),)
    store.execute("DELETE FROM attachments WHERE message_row IN (SELECT id FROM messages "  # noqa: S608
                  f"WHERE ticket_id IN ({store.dialect.each('?')}))", ids)
    store.execute("UPDATE messages SET spool_sha256 = NULL WHERE spool_sha256 IS NOT NULL "  # noqa: S608
                  f"AND ticket_id IN ({store.dialect.each('?')})", ids)


def unfiled_before(store: Store, moment: datetime, after: dict | None, limit: int,
                   ) -> list[dict]:
    """A page of the mails (``id``, spool ``sha256``) that made no ticket (ignored, bounces,
    erased) and came before ``moment``, in id order after the row ``after``; quarantined
    and held spam mails are the quarantine's and the spam hold's."""
    return store.rows(
        "SELECT id, sha256 FROM ingest WHERE ticket_id IS NULL AND sha256 != '' "
        "AND outcome NOT IN ('quarantined', 'spam') AND created_at < ? AND id > ? "
        "ORDER BY id LIMIT ?", (iso(moment), after["id"] if after else 0, limit))


def quarantine_before(store: Store, moment: datetime) -> list[dict]:
    """Quarantine entries last seen before ``moment`` (held or not)."""
    return store.rows("SELECT id, sha256 FROM quarantine "
                      "WHERE COALESCE(last_seen_at, created_at) < ? ORDER BY id", (iso(moment),))


def _ids(values: list[int]) -> str:
    return "[" + ",".join(str(int(v)) for v in values) + "]"
