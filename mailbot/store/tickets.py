"""Queries on tickets, their messages, attachments and events."""

from __future__ import annotations

import functools
import json
from datetime import datetime

from mailbot.store import Store, insert_statement
from mailbot.store import _encode as encode
from mailbot.store.dialect import Dialect

_UPDATABLE = frozenset({
    "subject", "status", "priority", "contact_id", "account_id", "contract", "entitled",
    "language", "owner", "updated_at", "closed_at", "first_response_due", "first_response_at",
    "first_response_met", "update_due", "resolution_due", "facts", "missing", "escalated_at",
    "escalation_phone", "status_since", "first_response_told", "update_told", "remind_at",
})


def next_counter(store: Store, day: str) -> int:
    """The next ticket counter of ``day``; call inside the ticket's transaction."""
    return store.row(
        "INSERT INTO ticket_counters(day, counter) VALUES (?, 1) "
        "ON CONFLICT(day) DO UPDATE SET counter = ticket_counters.counter + 1 "
        "RETURNING counter",
        (day,))["counter"]


def number_taken(store: Store, number: str) -> bool:
    """Whether a ticket number is already used (numbers are never reused)."""
    return store.row("SELECT 1 AS x FROM tickets WHERE number = ?", (number,)) is not None


def by_number(store: Store, number: str) -> dict | None:
    """The ticket with this number, or None."""
    return _decode(store.row("SELECT * FROM tickets WHERE number = ?", (number,)))


def add_ticket(store: Store, record: dict) -> dict:
    """Open a ticket; its row as :func:`by_id` reads it (the INSERT returns it: one
    statement)."""
    sql, values = insert_statement("tickets", record)
    return _decode(store.row(sql + " RETURNING *", values))


def by_id(store: Store, ticket_id: int) -> dict | None:
    """The ticket with this row id, or None."""
    return _decode(store.row("SELECT * FROM tickets WHERE id = ?", (ticket_id,)))


def update(store: Store, ticket_id: int, **fields: object) -> None:
    """Change some fields of one ticket (one statement: no look at the schema first)."""
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    if not fields:
        return
    assignments = ", ".join(f"{name} = ?" for name in fields)  # names from _UPDATABLE
    changed = store.execute(f"UPDATE tickets SET {assignments} WHERE id = ?",  # noqa: S608
                            (*(encode(value) for value in fields.values()), ticket_id))
    if not changed:
        raise LookupError(f"no ticket with id {ticket_id}")


# The order agents work tickets in: priority, entitled customers first (seeds 003/004: no
# contract, no entitlement), the earliest response deadline (none last), then the oldest.
# Spelled as in the index tickets_work_order (migration m010), which holds the open tickets.
_WORK_ORDER = (
    "ORDER BY CASE t.priority WHEN 'urgent' THEN 0 WHEN 'high' THEN 1 WHEN 'normal' THEN 2 "
    "ELSE 3 END, t.entitled DESC, t.first_response_due IS NULL, t.first_response_due, t.id ")
_WITH_NAMES = ("LEFT JOIN contacts c ON c.id = t.contact_id "
               "LEFT JOIN accounts a ON a.id = t.account_id ")
# The statuses of the tickets agents still have to work: those in the work order index.
WORK_STATUSES = ("new", "open", "waiting")


@functools.cache
def _listing_sql(dialect: Dialect) -> str:
    """A page of the tickets in some statuses, in work order (sorted by the database)."""
    return ("SELECT t.*, c.address AS contact, a.name AS account FROM tickets t "  # noqa: S608
            f"{_WITH_NAMES}WHERE t.status IN ({dialect.each('?', 'text')}) "
            f"{_WORK_ORDER}LIMIT ? OFFSET ?")


@functools.cache
def _work_list_sql(dialect: Dialect) -> str:
    """A page of the open tickets read in the order of the work order index: as fast at
    a million closed tickets as at none (the statuses written out, as they are in the
    index's WHERE: a bound parameter would not let the planner use it)."""
    return ("SELECT t.*, c.address AS contact, a.name AS account "  # noqa: S608
            f"FROM tickets t {dialect.indexed_by('tickets_work_order')} "
            f"{_WITH_NAMES}WHERE t.status IN ('new', 'open', 'waiting') "
            f"{_WORK_ORDER}LIMIT ? OFFSET ?")


@functools.cache
def _search_sql(dialect: Dialect) -> str:
    """Tickets whose subject, messages or senders contain a text (any case), newest first."""
    like = dialect.like
    return (
        "SELECT t.*, c.address AS contact, a.name AS account FROM tickets t "  # noqa: S608
        "LEFT JOIN contacts c ON c.id = t.contact_id "
        "LEFT JOIN accounts a ON a.id = t.account_id "
        f"WHERE t.subject {like} :p ESCAPE '\\' OR t.id IN (SELECT ticket_id FROM messages "
        f"WHERE body {like} :p ESCAPE '\\' OR from_addr {like} :p ESCAPE '\\') "
        "ORDER BY t.id DESC LIMIT :limit")


def listing(store: Store, statuses: tuple[str, ...], limit: int = -1,
            offset: int = 0) -> list[dict]:
    """A page of the tickets in the given statuses, in work order, with contact and account;
    all of them when ``limit`` is negative."""
    limit = store.dialect.no_limit if limit < 0 else limit
    return [_decode(r) for r in store.rows(_listing_sql(store.dialect),
                                           (json.dumps(list(statuses)), limit, offset))]


def work_list(store: Store, limit: int = -1, offset: int = 0) -> list[dict]:
    """A page of the tickets agents still have to work (:data:`WORK_STATUSES`) in work
    order, with contact and account; all of them when ``limit`` is negative."""
    limit = store.dialect.no_limit if limit < 0 else limit
    return [_decode(r) for r in store.rows(_work_list_sql(store.dialect), (limit, offset))]


def without_account(store: Store, contact_id: int, statuses: tuple[str, ...]) -> list[dict]:
    """The tickets of one contact in some statuses that belong to no account yet, oldest
    first (read by the contact index, not by a look at every ticket)."""
    return [_decode(r) for r in store.rows(
        "SELECT * FROM tickets WHERE contact_id = ? AND account_id IS NULL "  # noqa: S608
        f"AND status IN ({store.dialect.each('?', 'text')}) ORDER BY id",
        (contact_id, json.dumps(list(statuses))))]


def search(store: Store, text: str, limit: int) -> list[dict]:
    """Tickets whose subject or messages contain ``text`` (any case), newest first."""
    pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return [_decode(r) for r in store.rows(_search_sql(store.dialect),
                                           {"p": pattern, "limit": limit})]


def ticket_for_message_id(store: Store, message_id: str) -> int | None:
    """The ticket a message (inbound or outbound) with this Message-ID belongs to."""
    found = store.row("SELECT ticket_id FROM messages WHERE message_id = ? "
                      "ORDER BY id LIMIT 1", (message_id,))
    if found is None:
        found = store.row("SELECT ticket_id FROM outbox WHERE message_id = ? "
                          "AND ticket_id IS NOT NULL LIMIT 1", (message_id,))
    return found["ticket_id"] if found else None


def add_message(store: Store, record: dict) -> int:
    """Append a message (inbound, outbound or internal note) to a ticket."""
    return store.insert("messages", record)


def add_attachment(store: Store, record: dict) -> int:
    """Record an attachment stored on disk under its content hash."""
    return store.insert("attachments", record)


def add_event(store: Store, ticket_id: int, kind: str, data: dict, at: datetime,
              actor: str = "system") -> int:
    """Record something that happened to a ticket."""
    return store.insert("events", {"ticket_id": ticket_id, "kind": kind, "data": data,
                                   "actor": actor, "created_at": at})


def add_events(store: Store, ticket_id: int, events: list[tuple[str, dict, str]],
               at: datetime) -> None:
    """Record several things that happened to a ticket at once, in order: (kind, data,
    actor) each, in one statement."""
    if not events:
        return
    rows = ", ".join(["(?, ?, ?, ?, ?)"] * len(events))
    store.execute(f"INSERT INTO events(ticket_id, kind, data, actor, created_at) "  # noqa: S608
                  f"VALUES {rows}", tuple(value for kind, data, actor in events
                                          for value in (ticket_id, kind, encode(data), actor,
                                                        encode(at))))


def messages(store: Store, ticket_id: int) -> list[dict]:
    """The messages of a ticket in order, each with its attachments."""
    rows = store.rows("SELECT * FROM messages WHERE ticket_id = ? ORDER BY id", (ticket_id,))
    files = attachments_by_message(store, ticket_id)
    for row in rows:
        row["to_addrs"] = json.loads(row["to_addrs"])
        row["attachments"] = files.get(row["id"], [])
    return rows


def attachments_by_message(store: Store, ticket_id: int) -> dict[int, list[dict]]:
    """The attachments of all of a ticket's messages in one query, by message row."""
    grouped: dict[int, list[dict]] = {}
    for row in store.rows(
            "SELECT a.message_row, a.id, a.filename, a.content_type, a.size, a.sha256 "
            "FROM attachments a JOIN messages m ON m.id = a.message_row "
            "WHERE m.ticket_id = ? ORDER BY a.id", (ticket_id,)):
        grouped.setdefault(row.pop("message_row"), []).append(row)
    return grouped


def events(store: Store, ticket_id: int) -> list[dict]:
    """The events of a ticket in order."""
    rows = store.rows("SELECT * FROM events WHERE ticket_id = ? ORDER BY id", (ticket_id,))
    for row in rows:
        row["data"] = json.loads(row["data"])
    return rows


def participants(store: Store, ticket_id: int) -> set[str]:
    """Every address that wrote to or was written to on a ticket."""
    found = set()
    for row in store.rows("SELECT from_addr, to_addrs FROM messages WHERE ticket_id = ?",
                          (ticket_id,)):
        found.add(row["from_addr"])
        found.update(json.loads(row["to_addrs"]))
    return {a for a in found if a}


def _decode(row: dict | None) -> dict | None:
    if row is None:
        return None
    for key in ("facts", "missing"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row
