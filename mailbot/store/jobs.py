"""Queries of the scheduler's jobs: pending events, deadlines, waiting and resolved tickets,
and which node runs a job's tick."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from mailbot.store import Store, iso

PENDING = "kind = 'status' AND notified_at IS NULL"  # what index events_status_pending holds


def pending_status_events(store: Store, after: dict | None, limit: int) -> list[dict]:
    """A page of the tickets with status events no customer has been told about yet, in id
    order after the row ``after`` (None: from the start): each ``ticket_id`` with its
    ``events`` in order, read in one query for the page."""
    grouped: dict[int, list[dict]] = {}
    for event in _decoded(store.rows(
            f"SELECT * FROM events WHERE {PENDING} AND ticket_id IN "  # noqa: S608 - constant
            f"(SELECT DISTINCT ticket_id FROM events WHERE {PENDING} AND ticket_id > ? "
            "ORDER BY ticket_id LIMIT ?) ORDER BY ticket_id, id",
            (after["ticket_id"] if after else 0, limit))):
        grouped.setdefault(event["ticket_id"], []).append(event)
    return [{"ticket_id": ticket_id, "events": events} for ticket_id, events in grouped.items()]


def pending_status_events_of(store: Store, ticket_id: int) -> list[dict]:
    """One ticket's status events no customer has been told about yet, in order."""
    return _decoded(store.rows(f"SELECT * FROM events WHERE {PENDING} "  # noqa: S608 - constant
                               "AND ticket_id = ? ORDER BY id", (ticket_id,)))


def _decoded(events: list[dict]) -> list[dict]:
    for event in events:
        event["data"] = json.loads(event["data"])
    return events


def mark_notified(store: Store, event_ids: list[int], at: datetime) -> int:
    """Mark events as told; only those still pending (so a second run changes nothing)."""
    return store.execute("UPDATE events SET notified_at = ? WHERE notified_at IS NULL AND id IN "  # noqa: S608
                         f"({store.dialect.each('?')})", (iso(at), json.dumps(event_ids)))


# The deadlines agents are warned of: the label of each, and the column that holds it.
DEADLINES = {"first_response": "first_response_due", "update": "update_due"}
# The column that holds the deadline whose breach the agents were told of, by label.
TOLD = {"first_response": "first_response_told", "update": "update_told"}


@dataclass(frozen=True)
class OpenHours:
    """Which calendars are open at a moment, for a query that reads only the tickets in
    business hours: ``open`` of the policy's ``known`` calendars; a ticket whose contract
    names none of them (or that has no contract) is in ``default``'s hours."""

    open: tuple[str, ...]
    known: tuple[str, ...]
    default: str


def deadlines_due(store: Store, label: str, now: datetime, lead: timedelta, hours: OpenHours,
                  after: dict | None, limit: int) -> list[dict]:
    """A page of the open tickets (``id``, ``due``) in business hours now
    (``hours``) whose ``label`` deadline is due within ``lead`` or passed, and whose agents
    have not yet been told of the stage it is in now (warned before it, breached after), by
    deadline after the row ``after``.

    Only these are read: a desk of a million open tickets whose deadlines are days away,
    long breached and told, or breached at night while their support is closed, costs a
    round nothing in Python; the index ``tickets_<column>`` (named for SQLite: its planner
    would take the status index and sort all open tickets) holds no ticket whose breach was
    told (``TOLD``), so those cost nothing in the database either."""
    column, breach_told = DEADLINES[label], TOLD[label]
    unanswered = " AND first_response_at IS NULL" if label == "first_response" else ""
    told = store.dialect.json_field("e.data", "'due'")
    names = store.dialect.each("?", "text")
    start = (after["due"], after["id"]) if after else ("", 0)
    return store.rows(
        f"SELECT t.id, t.{column} AS due "  # noqa: S608 - names of ours
        f"FROM tickets t {store.dialect.indexed_by('tickets_' + column)} "
        "LEFT JOIN contracts c ON c.name = t.contract "
        f"WHERE t.status IN ('new', 'open'){unanswered} AND t.{column} <= ? "
        f"AND COALESCE(t.{breach_told}, '') <> t.{column} "
        f"AND (t.{column}, t.id) > (?, ?) "
        f"AND CASE WHEN c.calendar IN ({names}) THEN c.calendar ELSE ? END IN ({names}) "
        "AND NOT EXISTS (SELECT 1 FROM events e "
        f"WHERE e.ticket_id = t.id AND e.kind = CASE WHEN t.{column} <= ? "
        f"THEN 'deadline_breached' ELSE 'deadline_warning' END AND {told} = t.{column}) "
        f"ORDER BY t.{column}, t.id LIMIT ?",
        (iso(now + lead), *start, json.dumps(hours.known), hours.default,
         json.dumps(hours.open), iso(now), limit))


def has_event(store: Store, ticket_id: int, kind: str, key: str, value: str) -> bool:
    """Whether a ticket already has an event of ``kind`` whose data ``key`` equals ``value``."""
    return store.row("SELECT 1 AS x FROM events WHERE ticket_id = ? AND kind = ? AND "  # noqa: S608
                     f"{store.dialect.json_field('data', '?')} = ?",
                     (ticket_id, kind, key, value)) \
        is not None


def in_status_since(store: Store, status: str, until: datetime, after: dict | None,
                    limit: int) -> list[dict]:
    """A page of the tickets in ``status`` since ``until`` or earlier (the row and its
    ``since``), oldest first after the row ``after``."""
    start = (after["since"], after["id"]) if after else ("", 0)
    return store.rows(
        "SELECT t.*, t.status_since AS since FROM tickets t WHERE t.status = ? AND "
        "t.status_since <= ? AND (t.status_since, t.id) > (?, ?) "
        "ORDER BY t.status_since, t.id LIMIT ?", (status, iso(until), *start, limit))


def reminders_due(store: Store, now: datetime, after: dict | None, limit: int) -> list[dict]:
    """A page of the waiting tickets whose reminder is due at ``now`` (``remind_at``: set
    when a ticket starts to wait, cleared once its customer was reminded), each row with its
    ``since``, by that moment after the row ``after``: read by the index
    ``tickets_remind_at``, which holds only the waiting tickets still to remind."""
    start = (after["remind_at"], after["id"]) if after else ("", 0)
    return store.rows(
        "SELECT t.*, t.status_since AS since "  # noqa: S608 - an index name of ours
        f"FROM tickets t {store.dialect.indexed_by('tickets_remind_at')} "
        "WHERE t.status = 'waiting' AND t.remind_at IS NOT NULL AND t.remind_at <= ? "
        "AND (t.remind_at, t.id) > (?, ?) ORDER BY t.remind_at, t.id LIMIT ?",
        (iso(now), *start, limit))


def claim_tick(store: Store, name: str, tick: int) -> bool:
    """Whether the caller runs job ``name`` for ``tick``: True for the one caller, of all
    processes and nodes on this database, whose statement advances the job's tick.  One
    statement decides, so of two at the same moment one waits for the other and passes."""
    return store.row(
        "INSERT INTO job_runs (name, tick) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
        "SET tick = excluded.tick WHERE job_runs.tick < excluded.tick RETURNING tick",
        (name, tick)) is not None
