"""The path of one inbound mail: spool → parse → classify → thread → file → commit.

Every source hands raw bytes to :func:`ingest`.  A temporary problem (a busy
database) raises :class:`TemporaryFailure` so the source can retry later; any
other error quarantines the mail with its error and the pipeline goes on.
"""

from __future__ import annotations

import hashlib
import logging

from mailbot.context import Context
from mailbot.reading import classify, message
from mailbot.reading.message import Message
from mailbot.store import TemporaryStoreError, blobs
from mailbot.store import mail as mq
from mailbot.tickets import agents, bounces, filing
from mailbot.tickets.filing import Outcome

log = logging.getLogger(__name__)


class TemporaryFailure(Exception):
    """The mail could not be filed now but may be later; do not acknowledge its delivery."""


def ingest(ctx: Context, raw: bytes, source: str, durable: bool = True) -> Outcome:
    """File one raw mail; the returned outcome is final once this returns.

    With ``durable=False`` (a batch of mails) nothing is fsynced: the caller must call
    :func:`flush` before it acknowledges the batch to the mail's source.
    """
    try:
        sha = blobs.put(ctx.spool_dir, raw, sync=durable)
    except OSError as exc:
        raise TemporaryFailure(f"cannot write the spool: {exc}") from exc
    try:
        known = mq.ingest_by_sha(ctx.store, sha)
        if known is not None and known["outcome"] != "quarantined":
            return Outcome("duplicate", _number(ctx, known["ticket_id"]), "same bytes")
        try:
            return _process(ctx, raw, sha, source, durable)
        except TemporaryStoreError:
            raise
        except Exception as exc:
            return quarantine(ctx, sha, source, f"{type(exc).__name__}: {exc}", durable)
    except TemporaryStoreError as exc:  # also while quarantining: the mail must not be lost
        raise TemporaryFailure(f"database busy: {exc}") from exc


def flush(ctx: Context) -> None:
    """Make everything filed so far durable (spool files and database) in one go."""
    blobs.sync_filesystem(ctx.config.data_dir)
    ctx.store.sync()


def quarantine(ctx: Context, sha: str, source: str, error: str,
               durable: bool = True) -> Outcome:
    """Hold a mail that could not be processed; its raw bytes stay in the spool."""
    now = ctx.clock()
    log.warning("quarantined mail %s from %s: %s", sha[:12], source, error)
    with ctx.store.transaction(durable=durable):
        mq.add_quarantine(ctx.store, sha, source, error[:2000], now)
        mq.record_ingest(ctx.store, sha, "", "quarantined", None, source, now)
    if ctx.metrics is not None:
        ctx.metrics.ingested(Outcome("quarantined"))
    return Outcome("quarantined", "", error)


def retry_quarantined(ctx: Context, ids: tuple[int, ...] = ()) -> list[tuple[int, Outcome]]:
    """Run held mails through the pipeline again, e.g. after a fix; results per entry."""
    results = []
    for entry in mq.quarantined(ctx.store):
        if ids and entry["id"] not in ids:
            continue
        outcome = ingest(ctx, blobs.get(ctx.spool_dir, entry["sha256"]), entry["source"])
        status = "superseded" if outcome.status == "quarantined" else "released"
        with ctx.store.transaction():
            mq.set_quarantine_status(ctx.store, entry["id"], status, ctx.clock())
        results.append((entry["id"], outcome))
    return results


def _process(ctx: Context, raw: bytes, sha: str, source: str, durable: bool) -> Outcome:
    msg = message.parse(raw, ctx.config.limits)
    verdict = classify.classify(msg, classify_context(ctx))
    filing.save_attachments(ctx, msg, sync=durable)
    with ctx.store.transaction(durable=durable):
        outcome = _file(ctx, msg, verdict, source)
        ticket = filing.tq.by_number(ctx.store, outcome.ticket_number) \
            if outcome.ticket_number else None
        mq.record_ingest(ctx.store, sha, identity_key(msg), outcome.status,
                         ticket["id"] if ticket else None, source, ctx.clock())
    ctx.on_outbox()
    if ctx.metrics is not None:
        ctx.metrics.ingested(outcome)
    log.info("mail %s from %s via %s: %s %s %s", msg.message_id or sha[:12], msg.from_addr,
             source, outcome.status, outcome.ticket_number, outcome.detail)
    return outcome


def identity_key(msg: Message) -> str:
    """What makes two deliveries the same mail: its Message-ID, else a content fingerprint.

    The fingerprint (sender, date, subject, text) ignores the Received headers that differ
    between two copies of a mail without Message-ID sent to two support addresses.
    """
    if msg.message_id:
        return msg.message_id
    date = msg.date.isoformat() if msg.date else ""
    content = "\0".join((msg.from_addr, date, msg.subject, msg.text))
    return "fingerprint:" + hashlib.sha256(content.encode("utf-8", "replace")).hexdigest()


def classify_context(ctx: Context) -> classify.ClassifyContext:
    """What classification needs to know about this instance."""
    return classify.ClassifyContext(own_addresses=ctx.config.support.addresses,
                                    loop_id=ctx.config.service.instance_id,
                                    agent_addresses=ctx.team.addresses())


def _file(ctx: Context, msg: Message, verdict: classify.Verdict, source: str) -> Outcome:
    earlier = mq.ingest_by_message_id(ctx.store, identity_key(msg))
    if earlier is not None:
        return Outcome("duplicate", _number(ctx, earlier["ticket_id"]), "same Message-ID")
    if verdict.kind == "loop":
        return Outcome("ignored", "", verdict.reason)
    if verdict.kind == "bounce":
        return bounces.handle(ctx, msg, verdict)
    match, ticket = filing.find_ticket(ctx, msg)
    if verdict.kind == "agent":
        if match.reply_token and ticket is not None:
            return agents.handle_reply(ctx, msg, ticket)
        return agents.suspicious(ctx, msg, ticket, "agent address without a valid reply address")
    if verdict.kind == "auto_reply":
        return _auto_reply(ctx, msg, ticket, verdict)
    return filing.file_customer_mail(ctx, msg, verdict.acknowledge, match, ticket)


def _auto_reply(ctx: Context, msg: Message, ticket: dict | None,
                verdict: classify.Verdict) -> Outcome:
    if ticket is None:
        return Outcome("ignored", "", verdict.reason)
    now = ctx.clock()
    filing.store_message(ctx, ticket["id"], msg, "auto", now)
    filing.tq.add_event(ctx.store, ticket["id"], "auto_reply", {"reason": verdict.reason}, now)
    return Outcome("note", ticket["number"], verdict.reason)


def _number(ctx: Context, ticket_id: int | None) -> str:
    ticket = filing.tq.by_id(ctx.store, ticket_id) if ticket_id is not None else None
    return ticket["number"] if ticket else ""
