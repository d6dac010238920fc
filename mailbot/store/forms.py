"""Customer forms already sent: each form is taken once, however often it arrives.

A row lives until the form's signed field expires; after that the signature refuses the
form anyway, so the row is deleted the next time a form is sent.
"""

from __future__ import annotations

from datetime import datetime

from mailbot.store import Store, iso


def first_use(store: Store, form_id: str, expires_at: datetime, now: datetime) -> bool:
    """Record that form ``form_id`` was sent; False when it was sent before.

    Call it inside the transaction that does what the form asks: a second request or
    process sending the same form waits for the write lock, then finds the row.
    """
    with store.transaction():
        store.execute("DELETE FROM web_forms_used WHERE expires_at < ?", (iso(now),))
        if store.row("SELECT 1 FROM web_forms_used WHERE form_id = ?", (form_id,)):
            return False
        store.execute("INSERT INTO web_forms_used (form_id, expires_at) VALUES (?, ?)",
                      (form_id, iso(expires_at)))
    return True
