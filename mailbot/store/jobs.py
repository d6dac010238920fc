"""Queries of the scheduler's jobs: pending events, deadlines, waiting and resolved tickets,
and which node runs a job's tick."""

from __future__ import annotations

import json
from datetime import datetime

from mailbot.store import Store, iso


def pending_status_events(store: Store) -> dict[int, list[dict]]:
    """Status events no customer has been told about yet, grouped by ticket, in order."""
    return _grouped(store.rows("SELECT * FROM events WHERE kind = 'status' "
                               "AND notified_at IS NULL ORDER BY ticket_id, id"))


def pending_status_events_of(store: Store, ticket_id: int) -> list[dict]:
    """One ticket's status events no customer has been told about yet, in order."""
    return _grouped(store.rows("SELECT * FROM events WHERE kind = 'status' AND "
                               "notified_at IS NULL AND ticket_id = ? ORDER BY id",
                               (ticket_id,))).get(ticket_id, [])


def _grouped(rows: list[dict]) -> dict[int, list[dict]]:
    grouped: dict[int, list[dict]] = {}
    for row in rows:
        row["data"] = json.loads(row["data"])
        grouped.setdefault(row["ticket_id"], []).append(row)
    return grouped


def mark_notified(store: Store, event_ids: list[int], at: datetime) -> int:
    """Mark events as told; only those still pending (so a second run changes nothing)."""
    return store.execute("UPDATE events SET notified_at = ? WHERE notified_at IS NULL AND id IN "  # noqa: S608
                         f"({store.dialect.each('?')})", (iso(at), json.dumps(event_ids)))


def tickets_with_deadlines(store: Store) -> list[dict]:
    """Tickets whose first-response or update deadline is running."""
    return store.rows("SELECT * FROM tickets WHERE status IN ('new', 'open') AND "
                      "((first_response_at IS NULL AND first_response_due IS NOT NULL) "
                      "OR update_due IS NOT NULL)")


def has_event(store: Store, ticket_id: int, kind: str, key: str, value: str) -> bool:
    """Whether a ticket already has an event of ``kind`` whose data ``key`` equals ``value``."""
    return store.row("SELECT 1 AS x FROM events WHERE ticket_id = ? AND kind = ? AND "  # noqa: S608
                     f"{store.dialect.json_field('data', '?')} = ?",
                     (ticket_id, kind, key, value)) \
        is not None


def tickets_in_status_since(store: Store, status: str) -> list[dict]:
    """Tickets in ``status`` with the time they entered it (``since``)."""
    to = store.dialect.json_field("e.data", "'to'")
    return store.rows(
        "SELECT t.*, (SELECT MAX(e.created_at) FROM events e WHERE e.ticket_id = t.id AND "  # noqa: S608
        f"e.kind = 'status' AND {to} = ?) AS since "
        "FROM tickets t WHERE t.status = ?", (status, status))


def claim_tick(store: Store, name: str, tick: int) -> bool:
    """Whether the caller runs job ``name`` for ``tick``: True for the one caller, of all
    processes and nodes on this database, whose statement advances the job's tick.  One
    statement decides, so of two at the same moment one waits for the other and passes."""
    return store.row(
        "INSERT INTO job_runs (name, tick) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
        "SET tick = excluded.tick WHERE job_runs.tick < excluded.tick RETURNING tick",
        (name, tick)) is not None
