"""Mail the filter in front called spam: held, with no ticket, no answer and no notice.

The pipeline's ``hold_spam`` step holds it (:func:`hold`); an operator lists, shows,
releases or deletes it (``mailbot spam``); the scheduler deletes what was held longer
than ``[spam] keep_days`` (:func:`expire_spam`).  Releasing files the mail through the whole
pipeline (``inbound.pipeline.release_spam``); here is only its bookkeeping.  A held mail
keeps its ingest record (outcome ``spam``), so a re-delivery of it is a duplicate.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailbot.reading.message import Message, ParseError, parse
from mailbot.store import pages
from mailbot.store import spam as sq
from mailbot.tickets.outcome import OperatorError, Outcome

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

log = logging.getLogger(__name__)


def hold(ctx: Context, sha256: str, msg: Message, source: str, reason: str) -> Outcome:
    """Hold a spam mail (in the mail's transaction): listed for an operator, answered never."""
    entry_id = sq.hold(ctx.store, {"sha256": sha256, "source": source,
                                   "message_id": msg.message_id, "from_addr": msg.from_addr,
                                   "subject": msg.subject, "reason": reason}, ctx.clock())
    return Outcome("spam", "", f"held as spam #{entry_id}: {reason}")


def released(ctx: Context, sha256: str) -> None:
    """The held entry of a mail being released goes, in the transaction that files it."""
    sq.release(ctx.store, sha256)


def entry(ctx: Context, entry_id: int) -> dict:
    """The held mail ``entry_id``; an :class:`OperatorError` when none is held under it."""
    found = sq.by_id(ctx.store, entry_id)
    if found is None:
        raise OperatorError(f"no mail held as spam under {entry_id}")
    return found


def raw_of(ctx: Context, held: dict) -> bytes:
    """The spooled bytes of a held mail; an :class:`OperatorError` when they are gone."""
    try:
        return ctx.spool.get(held["sha256"])
    except FileNotFoundError as exc:
        raise OperatorError(f"the raw bytes of held mail {held['id']} are missing from the "
                            f"spool ({exc.filename})") from exc


def detail(ctx: Context, entry_id: int) -> dict:
    """A held mail with its headers and text, for an operator to judge it."""
    held = entry(ctx, entry_id)
    try:
        msg = parse(raw_of(ctx, held), ctx.config.limits)
    except ParseError as exc:
        return {**held, "headers": [], "text": f"(cannot be read: {exc})"}
    return {**held, "headers": [list(h) for h in msg.headers], "text": msg.text}


def delete(ctx: Context, entry_id: int) -> dict:
    """Forget a held mail, and its raw bytes unless something else uses them; the entry."""
    held = _forget(ctx, entry_id)
    if held is None:
        raise OperatorError(f"no mail held as spam under {entry_id}")
    return held


def expire_spam(ctx: Context, now: datetime) -> int:
    """Delete the mails held longer than ``[spam] keep_days``; how many (a scheduler job)."""
    before = now - timedelta(days=ctx.config.spam.keep_days)
    return sum(_forget(ctx, held["id"]) is not None
               for held in pages(lambda after, limit: sq.held_before(ctx.store, before, after,
                                                                     limit)))


def _forget(ctx: Context, entry_id: int) -> dict | None:
    """Forget one held mail (None: it is not held, perhaps released meanwhile)."""
    with ctx.store.transaction():
        held = sq.by_id(ctx.store, entry_id)
        if held is None:
            return None
        unused = sq.forget(ctx.store, held)
    if unused:  # after the commit: a rollback must not leave an entry without its bytes
        ctx.spool.delete({held["sha256"]})
    log.info("deleted held spam #%s from %s: %s", held["id"], held["from_addr"],
             held["reason"])
    return held
