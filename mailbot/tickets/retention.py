"""Retention (``[retention]``): how long mailbot keeps closed tickets and the raw bytes
behind them, run once a day by the scheduler and by `mailbot retention run`.

- ``tickets_days``: a ticket closed longer ago is deleted whole (messages, attachments,
  events, outbox rows);
- ``raw_days``: a ticket closed longer ago keeps its texts and events, but its raw mails
  and attachments go (an event ``retention`` says how many);
- the raw bytes of mails that made no ticket (ignored, bounces, an erased person's, those
  of deleted tickets) go at ``raw_days``, else at ``tickets_days``;
- ``quarantine_days``: quarantine entries last seen longer ago are deleted with their
  raw bytes, held ones too.

0 keeps forever (the default).  Raw bytes go only when nothing kept refers to them (the
same attachment may belong to several mails), wherever they are kept (files, or the
database of a PostgreSQL store).  Ingest records stay, so a re-delivered old mail
is still a duplicate; if its bytes came back to the spool with it, the next run removes
them again.  Work is done in batches of :data:`BATCH` tickets, one transaction each, so
the daemon's mail never waits long for the database; raw bytes go after each commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from mailbot.store import pages
from mailbot.store import privacy as pq
from mailbot.store import retention as rq
from mailbot.store import tickets as tq
from mailbot.tickets.privacy import Unused, commit_or_rehearse, discard

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

BATCH = 500
COUNTS = ("tickets_deleted", "tickets_raw_deleted", "quarantine", "spool_files",
          "attachment_files")
Work = Callable[[], tuple[dict[str, int], Unused]]


def run(ctx: Context, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Delete what is due at ``now``; how many tickets, raw mails, entries and files went
    (with ``dry_run``: would go, in one transaction rolled back at the end)."""
    sweep = _Sweep(ctx, dry_run)
    if dry_run:
        commit_or_rehearse(ctx, True, lambda: (sweep.all(now), (set(), set())))
    else:
        sweep.all(now)
    return sweep.counts


class _Sweep:
    """One retention run: its counts, and the raw mails and attachments already counted
    (each once)."""

    def __init__(self, ctx: Context, dry_run: bool) -> None:
        self.ctx = ctx
        self.dry_run = dry_run
        self.counts: dict[str, int] = dict.fromkeys(COUNTS, 0)
        self.seen: Unused = (set(), set())

    def all(self, now: datetime) -> dict[str, int]:
        """Every kind of retention that is configured, in order; the counts."""
        config, store = self.ctx.config.retention, self.ctx.store
        if config.tickets_days > 0:
            gone = now - timedelta(days=config.tickets_days)
            self._batches(pages(lambda after, limit: rq.closed_before(store, gone, after, limit)),
                          self._delete_tickets)
        if config.raw_days > 0:
            stripped = now - timedelta(days=config.raw_days)
            self._batches(pages(lambda after, limit: rq.closed_before(
                store, stripped, after, limit, holding_raw=True)),
                lambda ids: self._drop_raw(ids, now))
        unfiled_days = config.raw_days or config.tickets_days
        if unfiled_days > 0:
            unfiled = now - timedelta(days=unfiled_days)
            for page in _chunks(pages(lambda after, limit: rq.unfiled_before(
                    store, unfiled, after, limit))):
                self._step(lambda page=page: ({}, self._unused({r["sha256"] for r in page},
                                                               set())), write=False)
        if config.quarantine_days > 0:
            before = now - timedelta(days=config.quarantine_days)
            self._step(lambda: self._delete_quarantine(before))
        return self.counts

    def _batches(self, tickets: Iterator[dict], work: Callable[[list[int]], tuple]) -> None:
        """``work`` on the ids of ``tickets``, ``BATCH`` at a time, each in a transaction."""
        for batch in _chunks(tickets):
            self._step(lambda batch=batch: work([t["id"] for t in batch]))

    def _step(self, work: Work, write: bool = True) -> None:
        """One transaction of work (``write`` False: work that only reads, without the write
        lock); the raw bytes it let go of are forgotten once it is committed."""
        if write:
            with self.ctx.store.transaction():
                counts, unused = work()
        else:
            counts, unused = work()
        for key, n in counts.items():
            self.counts[key] += n
        if not self.dry_run:
            discard(self.ctx, unused)

    def _unused(self, spool: set[str], files: set[str]) -> Unused:
        """The raw mails and attachments of these hashes that are kept and that nothing
        refers to any more (counted here, each once)."""
        store = self.ctx.store
        found = (self.ctx.spool.present(pq.unused_spool(store, spool)) - self.seen[0],
                 self.ctx.files.present(pq.unused_files(store, files)) - self.seen[1])
        for key, fresh, seen in zip(("spool_files", "attachment_files"), found, self.seen,
                                    strict=True):
            seen.update(fresh)
            self.counts[key] += len(fresh)
        return found

    def _delete_tickets(self, ticket_ids: list[int]) -> tuple[dict[str, int], Unused]:
        spool, files = pq.raw_of_tickets(self.ctx.store, ticket_ids)
        pq.delete_tickets(self.ctx.store, ticket_ids)
        return {"tickets_deleted": len(ticket_ids)}, self._unused(spool, files)

    def _drop_raw(self, ticket_ids: list[int], now: datetime,
                  ) -> tuple[dict[str, int], Unused]:
        store = self.ctx.store
        spool, files = pq.raw_of_tickets(store, ticket_ids)
        holding = rq.raw_counts(store, ticket_ids)
        rq.drop_raw(store, list(holding))
        for ticket_id, (mails, attachments) in holding.items():
            tq.add_event(store, ticket_id, "retention",
                         {"raw_mails": mails, "attachments": attachments}, now)
        return {"tickets_raw_deleted": len(holding)}, self._unused(spool, files)

    def _delete_quarantine(self, before: datetime) -> tuple[dict[str, int], Unused]:
        entries = rq.quarantine_before(self.ctx.store, before)
        pq.delete_rows(self.ctx.store, "quarantine", [e["id"] for e in entries])
        return {"quarantine": len(entries)}, self._unused({e["sha256"] for e in entries}, set())


def _chunks(rows: Iterator[dict]) -> Iterator[list[dict]]:
    """``rows`` in lists of ``BATCH`` (the last one shorter), read as the caller goes."""
    chunk: list[dict] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == BATCH:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
