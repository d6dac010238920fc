"""Queries the policy step needs: acknowledgement counts and bounced addresses."""

from __future__ import annotations

from datetime import datetime

from mailbot.store import Store, iso


def acknowledgements_since(store: Store, address: str, since: datetime) -> int:
    """How many acknowledgements went to ``address`` since ``since``."""
    row = store.row("SELECT COUNT(*) AS n FROM outbox WHERE kind = 'acknowledgement' "
                    "AND created_at >= ? AND recipients = ?",
                    (iso(since), f'["{address}"]'))
    return row["n"]


def contact_bounce(store: Store, address: str) -> str:
    """The bounce reason of an address that bounced permanently, or ``""``."""
    row = store.row("SELECT bounce_reason FROM contacts WHERE address = ? "
                    "AND bounced_at IS NOT NULL", (address,))
    return (row["bounce_reason"] or "bounced") if row else ""
