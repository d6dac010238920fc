"""What the customer may see of a ticket: its public thread and downloads, the first mail.

"Public" means what the customer may see: messages with direction ``in`` or ``out``.
Internal notes (``note``) and robot mail (``auto``) never leave this module.
"""

from __future__ import annotations

from mailbot.store import Store
from mailbot.store.tickets import attachments_by_message

PUBLIC_DIRECTIONS = ("in", "out")


def public_messages(store: Store, ticket_id: int) -> list[dict]:
    """The customer-visible messages of a ticket in order, each with its attachments."""
    rows = store.rows(
        "SELECT id, direction, from_addr, from_name, subject, body, created_at FROM messages "
        "WHERE ticket_id = ? AND direction IN (?, ?) ORDER BY id",
        (ticket_id, *PUBLIC_DIRECTIONS))
    files = attachments_by_message(store, ticket_id)
    for row in rows:
        row["attachments"] = files.get(row["id"], [])
    return rows


def public_attachment(store: Store, ticket_id: int, attachment_id: int) -> dict | None:
    """One attachment of a public message of this ticket, or None (also for other tickets)."""
    return store.row(
        "SELECT a.id, a.filename, a.content_type, a.size, a.sha256 FROM attachments a "
        "JOIN messages m ON m.id = a.message_row "
        "WHERE a.id = ? AND m.ticket_id = ? AND m.direction IN (?, ?)",
        (attachment_id, ticket_id, *PUBLIC_DIRECTIONS))


def first_message_id(store: Store, ticket_id: int) -> str:
    """The Message-ID of the customer's first mail on a ticket, to thread our mails to it."""
    row = store.row("SELECT message_id FROM messages WHERE ticket_id = ? AND direction = 'in' "
                    "AND message_id != '' ORDER BY id LIMIT 1", (ticket_id,))
    return row["message_id"] if row else ""
