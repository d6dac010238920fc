"""Queries that find and forget personal data: one person's rows (GDPR export and erasure),
whole tickets and the raw bytes behind them (retention), and the raw mails and
attachments nothing kept refers to any more (their bytes: :mod:`mailbot.store.blobs`).

Lists of row ids and hashes travel as one JSON array (``store.dialect.each``), so a
statement handles any number of them.  Raw bytes of a mail (the spool) are kept while a
message, a quarantine entry or a held spam mail refers to them; an attachment's bytes
while an attachment row does.  Ingest records never keep bytes: they only remember a
mail's hash and Message-ID, so a re-delivery is still recognised once the bytes are gone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from mailbot.store import Store

# Tables whose rows are deleted by id here.
_BY_ID = frozenset({"outbox", "quarantine", "spam_held", "messages", "events"})


def _ids(values: Iterable) -> str:
    return json.dumps(sorted(set(values)))


def _each(store: Store, cast: str = "bigint") -> str:
    """The items of the ``:ids`` array, in the store's dialect."""
    return store.dialect.each(":ids", cast)


# -- finding a person ------------------------------------------------------------------------

def tickets_of_contact(store: Store, contact_id: int) -> list[dict]:
    """Every ticket whose contact this is (the full rows), oldest first."""
    return store.rows("SELECT * FROM tickets WHERE contact_id = ? ORDER BY id", (contact_id,))


def tickets_naming(store: Store, address: str) -> list[int]:
    """The tickets where ``address`` wrote, was written to, acted, or is named in an event."""
    return [r["ticket_id"] for r in store.rows(
        "SELECT ticket_id FROM messages WHERE from_addr = :a OR EXISTS "  # noqa: S608
        f"(SELECT 1 FROM ({store.dialect.each('messages.to_addrs', 'text')}) AS j "
        f"WHERE value = :a) UNION SELECT ticket_id FROM events WHERE actor = :a OR "
        f"{store.dialect.contains('lower(data)', ':a')} "
        "ORDER BY ticket_id", {"a": address})]


def tickets(store: Store, ticket_ids: Iterable[int]) -> list[dict]:
    """Some tickets (the full rows) by id, oldest first."""
    return store.rows(f"SELECT * FROM tickets WHERE id IN ({_each(store)}) "  # noqa: S608
                      "ORDER BY id", {"ids": _ids(ticket_ids)})


def senders(store: Store, ticket_id: int) -> set[str]:
    """Every address a message of this ticket came from."""
    return {r["from_addr"] for r in store.rows(
        "SELECT DISTINCT from_addr FROM messages WHERE ticket_id = ?", (ticket_id,))}


def names_used(store: Store, address: str) -> list[str]:
    """The display names mails from ``address`` carried."""
    return [r["from_name"] for r in store.rows(
        "SELECT DISTINCT from_name FROM messages WHERE from_addr = ? AND from_name != ''",
        (address,))]


def messages(store: Store, ticket_ids: Iterable[int]) -> list[dict]:
    """The messages of some tickets in order, each with its attachments."""
    rows = store.rows("SELECT * FROM messages WHERE ticket_id IN "  # noqa: S608
                      f"({_each(store)}) ORDER BY id", {"ids": _ids(ticket_ids)})
    files: dict[int, list[dict]] = {}
    for row in store.rows(
            "SELECT a.message_row, a.id, a.filename, a.content_type, a.size, a.sha256 "  # noqa: S608
            "FROM attachments a JOIN messages m ON m.id = a.message_row "
            f"WHERE m.ticket_id IN ({_each(store)}) ORDER BY a.id",
            {"ids": _ids(ticket_ids)}):
        files.setdefault(row.pop("message_row"), []).append(row)
    for row in rows:
        row["to_addrs"] = json.loads(row["to_addrs"])
        row["attachments"] = files.get(row["id"], [])
    return rows


def events(store: Store, ticket_ids: Iterable[int]) -> list[dict]:
    """The events of some tickets in order."""
    rows = store.rows(f"SELECT * FROM events WHERE ticket_id IN ({_each(store)}) "  # noqa: S608
                      "ORDER BY id", {"ids": _ids(ticket_ids)})
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


def outbox_rows(store: Store, address: str, ticket_ids: Iterable[int]) -> list[dict]:
    """Outbox rows (raw bytes included) that may concern a person: those to ``address``,
    those of the given tickets, and those of no ticket (notices to agents)."""
    rows = store.rows(
        "SELECT * FROM outbox WHERE ticket_id IS NULL "  # noqa: S608
        f"OR ticket_id IN ({_each(store)}) OR EXISTS "
        f"(SELECT 1 FROM ({store.dialect.each('outbox.recipients', 'text')}) AS j "
        "WHERE lower(value) = :a) ORDER BY id",
        {"ids": _ids(ticket_ids), "a": address})
    for row in rows:
        row["recipients"] = json.loads(row["recipients"])
    return rows


def quarantined_from(store: Store, address: str) -> list[dict]:
    """The quarantine entries of mails from ``address``."""
    return store.rows("SELECT * FROM quarantine WHERE lower(sender) = ? ORDER BY id",
                      (address,))


def spam_from(store: Store, address: str) -> list[dict]:
    """The mails from ``address`` held as spam."""
    return store.rows("SELECT * FROM spam_held WHERE lower(from_addr) = ? ORDER BY id",
                      (address,))


# -- forgetting ------------------------------------------------------------------------------

def delete_tickets(store: Store, ticket_ids: Iterable[int]) -> None:
    """Delete tickets with their messages, attachment rows, events and outbox rows.

    Their ingest records stay (without the ticket) so a re-delivered mail is still a
    duplicate; a ticket that followed up on one of them keeps no link to it.
    """
    ids = {"ids": _ids(ticket_ids)}
    for sql in (
            "DELETE FROM attachments WHERE message_row IN (SELECT id FROM messages "  # noqa: S608
            f"WHERE ticket_id IN ({_each(store)}))",
            f"DELETE FROM messages WHERE ticket_id IN ({_each(store)})",  # noqa: S608
            f"DELETE FROM events WHERE ticket_id IN ({_each(store)})",  # noqa: S608
            f"DELETE FROM outbox WHERE ticket_id IN ({_each(store)})",  # noqa: S608
            "UPDATE ingest SET ticket_id = NULL WHERE ticket_id IN "  # noqa: S608
            f"({_each(store)})",
            "UPDATE tickets SET parent_id = NULL WHERE parent_id IN "  # noqa: S608
            f"({_each(store)})",
            f"DELETE FROM tickets WHERE id IN ({_each(store)})"):  # noqa: S608
        store.execute(sql, ids)


def delete_rows(store: Store, table: str, row_ids: Iterable[int]) -> int:
    """Delete rows of one table by id (messages with their attachment rows); how many."""
    if table not in _BY_ID:
        raise ValueError(f"cannot delete rows of {table} by id")
    ids = {"ids": _ids(row_ids)}
    if table == "messages":
        store.execute("DELETE FROM attachments WHERE message_row IN "  # noqa: S608
                      f"({_each(store)})", ids)
    return store.execute(f"DELETE FROM {table} WHERE id IN "  # noqa: S608 - a known table
                         f"({_each(store)})", ids)


def rewrite_message(store: Store, message_id: int, values: dict) -> None:
    """Replace the texts of a message (subject, body, html, from_name, to_addrs), or let go
    of its raw bytes (``spool_sha256`` None)."""
    allowed = {"subject", "body", "html", "from_name", "to_addrs", "spool_sha256"}
    if set(values) - allowed:
        raise ValueError(f"cannot rewrite {sorted(set(values) - allowed)}")
    store.update_row("messages", message_id, values)


def rewrite_event(store: Store, event_id: int, actor: str, data: dict) -> None:
    """Replace who did an event and what its data says."""
    store.update_row("events", event_id, {"actor": actor, "data": data})


def rewrite_ticket(store: Store, ticket_id: int, values: dict) -> None:
    """Replace a ticket's subject, facts, call-back phone or contact (NULL: none)."""
    allowed = {"subject", "facts", "escalation_phone", "contact_id"}
    if set(values) - allowed:
        raise ValueError(f"cannot rewrite {sorted(set(values) - allowed)}")
    store.update_row("tickets", ticket_id, values)


def delete_contact(store: Store, contact_id: int) -> int:
    """Delete a contact row; the tickets that named it keep no contact.  How many (0 or 1)."""
    store.execute("UPDATE tickets SET contact_id = NULL WHERE contact_id = ?", (contact_id,))
    return store.execute("DELETE FROM contacts WHERE id = ?", (contact_id,))


def forget_message_ids(store: Store, address: str) -> int:
    """Ingest records whose Message-ID contains ``address`` keep only their hash as key."""
    return store.execute("UPDATE ingest SET message_id = 'erased:' || sha256 "  # noqa: S608
                         f"WHERE {store.dialect.contains('lower(message_id)', '?')}",
                         (address,))


# -- raw bytes and attachments ---------------------------------------------------------------

def raw_of_tickets(store: Store, ticket_ids: Iterable[int]) -> tuple[set[str], set[str]]:
    """The spool hashes (of messages and ingest records) and attachment hashes of tickets."""
    ids = {"ids": _ids(ticket_ids)}
    spool = {r["sha"] for r in store.rows(
        "SELECT spool_sha256 AS sha FROM messages WHERE ticket_id IN "  # noqa: S608
        f"({_each(store)}) AND spool_sha256 IS NOT NULL "
        "UNION SELECT sha256 FROM ingest "
        f"WHERE ticket_id IN ({_each(store)}) AND sha256 != ''", ids)}
    return spool, attachment_hashes(store, ticket_ids)


def attachment_hashes(store: Store, ticket_ids: Iterable[int]) -> set[str]:
    """The hashes of the attachment files of some tickets' messages."""
    return {r["sha256"] for r in store.rows(
        "SELECT a.sha256 FROM attachments a JOIN messages m ON m.id = a.message_row "  # noqa: S608
        f"WHERE m.ticket_id IN ({_each(store)})", {"ids": _ids(ticket_ids)})}


def unused_spool(store: Store, hashes: Iterable[str]) -> set[str]:
    """Of these spool hashes, those no message, quarantine entry or held spam refers to."""
    return {r["value"] for r in store.rows(
        f"SELECT value FROM ({_each(store, 'text')}) AS j WHERE value != '' "  # noqa: S608
        "AND NOT EXISTS (SELECT 1 FROM messages WHERE spool_sha256 = value) "
        "AND NOT EXISTS (SELECT 1 FROM quarantine WHERE sha256 = value) "
        "AND NOT EXISTS (SELECT 1 FROM spam_held WHERE sha256 = value)",
        {"ids": _ids(hashes)})}


def unused_files(store: Store, hashes: Iterable[str]) -> set[str]:
    """Of these attachment hashes, those no attachment row refers to (by index: each
    retention batch and erasure asks, and the attachments of years are many)."""
    return {r["value"] for r in store.rows(
        f"SELECT value FROM ({_each(store, 'text')}) AS j "  # noqa: S608
        "WHERE NOT EXISTS (SELECT 1 FROM attachments WHERE sha256 = value)",
        {"ids": _ids(hashes)})}


def secure_delete(store: Store, on: bool) -> None:
    """Overwrite deleted content with zeros in this connection (PRAGMA secure_delete), so
    erased rows leave no readable trace in free pages of the database file."""
    if store.dialect.name == "sqlite":  # PostgreSQL's free space is not readable as pages
        store.execute(f"PRAGMA secure_delete = {'ON' if on else 'OFF'}")


def checkpoint(store: Store) -> None:
    """Copy the write-ahead log into the database file and empty it (best effort: readers of
    another process may keep older pages in it until their next checkpoint)."""
    if store.dialect.name == "sqlite":  # PostgreSQL's WAL is the server's to recycle
        store.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the writing connection's
