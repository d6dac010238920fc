"""The outbox sender: delivers queued mails, retries with backoff, never sends a mail twice.

A sender claims one row at a time before it sends it.  The claim names the sender (one
name per process, :data:`OWNER`: host, process id, a random part) and lasts a lease of
twice the longest a delivery may take, so the daemon and ``mailbot outbox flush`` beside
it never send the same row (nor the daemons of several nodes on one PostgreSQL database,
which claim different rows at the same time: :func:`~mailbot.store.outbox.claiming`).
The row of a sender that crashed is tried again once its lease ends, or at once when a
sender on the same host sees that the process is gone.
Only the sender named in a claim marks the row sent, retried or failed.  Once the relay took a
mail, the sender records it as sent even if the database refuses for a while: it keeps
the claim and retries, so the mail never becomes due again.

A mail that cannot be delivered fails alone: a permanent refusal, an address the relay
or the mail library rejects, any other error of that one mail, or temporary failures
(relay unreachable, 4xx answers) for longer than ``[outbox] lifetime_days``.  The row is
marked failed and, in the same transaction, ``on_failed`` reports it as a :class:`Failure`
(the tickets layer notes it on the ticket and tells the agents); the mails behind it go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from mailbot.outbound.outbox import Failure, backoff, give_up_at
from mailbot.outbound.transports import DeliveryError, send_deadline
from mailbot.settings.config import Config
from mailbot.status.health import REFUSED, Health
from mailbot.status.metrics import Metrics
from mailbot.store import Store, TemporaryStoreError
from mailbot.store import outbox as oq

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0
# While the database refuses to record a sent mail: first wait and longest wait, seconds.
RECORD_RETRY_SECONDS = (0.05, 5.0)
# This process's name on the rows it claims: host, process id and a random part.
OWNER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# Told about each mail given up on: (row, failure, now), inside the marking transaction.
OnFailed = Callable[[dict, Failure, datetime], None]


class Context(Protocol):
    """What the sender needs of the process's context (:class:`mailbot.context.Context`)."""

    @property
    def config(self) -> Config: ...  # the relay timeout and the outbox's retry settings
    @property
    def store(self) -> Store: ...
    @property
    def clock(self) -> Callable[[], datetime]: ...
    @property
    def health(self) -> Health: ...  # the relay's state
    @property
    def metrics(self) -> Metrics: ...  # acknowledgement latency


class Doorbell:
    """Wakes the sender from any thread: the context rings it when a step queued a mail."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None

    def ring(self) -> None:
        """Wake the sender (a no-op until the sender runs); safe to call from any thread."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.event.set)


def unreported(row: dict, failure: Failure, now: datetime) -> None:
    """The ``on_failed`` of a sender nobody listens to: the row is marked failed and logged."""


async def deliver_due(ctx: Context, transport, now: datetime | None = None, *,
                      on_failed: OnFailed = unreported, owner: str = OWNER) -> int:
    """Deliver up to a batch of the rows due at ``now`` (default: the clock) over one relay
    session; the number delivered.

    Never raises: a mail that cannot go out fails or waits on its own, and a database that
    refuses a claim ends the round (the next round tries again).
    """
    done = await _Round(ctx, on_failed, owner, now or ctx.clock()).run(transport)
    return done.delivered


async def flush(ctx: Context, transport, *, on_failed: OnFailed = unreported,
                owner: str = OWNER) -> int:
    """Deliver every row due now, batch after batch (``mailbot outbox flush``); the number
    delivered.

    Each row is tried once: one that fails for now is due again only later.  When mails
    failed for good, their reports queued notices, so the rows due by then go out too.
    """
    total = 0
    while True:
        start, gave_up = ctx.clock(), 0
        while True:
            done = await _Round(ctx, on_failed, owner, start).run(transport)
            total, gave_up = total + done.delivered, gave_up + done.gave_up
            if not done.tried:
                break
        if not gave_up:
            return total


@dataclass
class _Round:
    """One round of a sender: claims due rows one by one and delivers them."""

    ctx: Context
    on_failed: OnFailed
    owner: str
    due_by: datetime
    durable_up_to: int = 0  # rows up to this id are durable: only they may be sent
    tried: int = 0
    delivered: int = 0
    gave_up: int = 0

    async def run(self, transport) -> _Round:
        """Deliver up to a batch over one session of ``transport``; the round, counted."""
        row = await self._claim(first=True)
        if row is None:
            return self
        try:
            async with transport.session() as session:
                while row is not None:
                    self.tried += 1
                    more = self.tried < self.ctx.config.outbox.batch_size
                    row = await self._deliver(session, row, more)
        except Exception:  # the session itself broke; a claimed row waits for its lease
            log.exception("outbox round failed; its mails are tried again later")
        return self

    async def _claim(self, first: bool = False) -> dict | None:
        """The next due row, now claimed by this sender; None when none is left or the
        database refuses (logged).  The first claim of a round frees crashed senders' rows."""
        try:
            if first:
                await asyncio.to_thread(self._release_orphans)
                self.durable_up_to = await asyncio.to_thread(self._durable_horizon)
            return await asyncio.to_thread(self._claim_next)
        except Exception as exc:
            log.warning("cannot claim outbox mails now (%s: %s); trying again later",
                        type(exc).__name__, exc)
            return None

    def _release_orphans(self) -> None:
        """Free the claims of senders on this host whose process is gone (crashed)."""
        store = self.ctx.store
        gone = [o for o in oq.claim_owners(store, self.ctx.clock()) if not _alive(o)]
        for owner in gone:
            with store.transaction(durable=False):
                released = oq.release_claims(store, owner)
            log.warning("released %d outbox mail(s) claimed by %s, a sender that is gone; "
                        "a mail it had in flight may go out twice", released, owner)

    def _durable_horizon(self) -> int:
        """Make every commit so far durable and return the newest outbox row among them.

        A batch (IMAP, the listener) commits its mails without an fsync and makes them
        durable at once before it acknowledges them; an acknowledgement must not leave
        before the commit of its ticket is durable, so a round sends only rows it synced.
        """
        up_to = oq.last_id(self.ctx.store)
        self.ctx.store.sync()
        return up_to

    def _claim_next(self) -> dict | None:
        now = self.ctx.clock()
        lease = timedelta(seconds=2 * send_deadline(self.ctx.config.relay))
        with oq.claiming(self.ctx.store):
            return oq.claim_next(self.ctx.store, self.owner, self.due_by, now, now + lease,
                                 self.durable_up_to)

    async def _deliver(self, session, row: dict, more: bool) -> dict | None:
        """Send one claimed row and record what became of it; the next row claimed when
        ``more`` are to go in this round (None: none, or none is due)."""
        try:
            await session.send(row["sender"], row["recipients"], row["raw"])
        except DeliveryError as exc:
            await self._settle(row, exc)
            return await self._claim() if more else None
        except Exception as exc:  # the mail library choked on this one mail
            log.exception("sending %s failed unexpectedly", row["message_id"])
            await self._settle(row, DeliveryError(f"{type(exc).__name__}: {exc}",
                                                  permanent=True))
            return await self._claim() if more else None
        following = await self._record_sent(row, more)
        self.delivered += 1
        return following

    async def _record_sent(self, row: dict, more: bool) -> dict | None:
        """Mark a delivered row sent, retrying until the database takes it, and claim the
        next row in the same transaction when ``more`` are to go (one round trip to the
        database a mail instead of two); the row claimed, or None.

        The mail went out, so the row must never be sent again: while the database refuses
        (busy, disk full) the claim stays and every refusal is logged as an error.
        """
        wait, longest = RECORD_RETRY_SECONDS
        while True:
            try:
                sent_at, following = await asyncio.to_thread(self._mark_sent, row, more)
                break
            except Exception as exc:
                log.error("%s went out but cannot be recorded as sent (%s: %s); retrying in "
                          "%.2fs, keeping its claim so it is not sent again",
                          row["message_id"], type(exc).__name__, exc, wait)
                await asyncio.sleep(wait)
                wait = min(2 * wait, longest)
        log.info("sent %s %s to %s", row["kind"], row["message_id"], _addressees(row))
        self.ctx.metrics.sent(row, sent_at)
        return following

    def _mark_sent(self, row: dict, more: bool) -> tuple[datetime, dict | None]:
        """The row marked sent, and the next claimed (when ``more``), in one transaction:
        a claim's (see :func:`oq.claiming`), as marking a row this sender holds needs no
        more than that row."""
        now = self.ctx.clock()
        with oq.claiming(self.ctx.store):
            if not oq.mark_sent(self.ctx.store, row["id"], self.owner, now):
                log.error("%s went out, but another sender had claimed it meanwhile: it may "
                          "go out twice", row["message_id"])
            return now, self._claim_next() if more else None

    async def _settle(self, row: dict, error: DeliveryError) -> None:
        """Record a failed attempt: retry later, or give up and report it."""
        try:
            await asyncio.to_thread(self._record_failure, row, error)
        except Exception:
            log.exception("cannot record the failed attempt of %s; it is tried again after "
                          "its claim ends", row["message_id"])

    def _record_failure(self, row: dict, error: DeliveryError) -> None:
        settings = self.ctx.config.outbox
        now = self.ctx.clock()
        attempts = row["attempts"] + 1
        deadline = give_up_at(row, settings.lifetime_days)
        if not error.permanent and now < deadline:
            wait = backoff(attempts, settings.backoff_seconds, settings.max_backoff_seconds)
            with self.ctx.store.transaction():
                oq.mark_retry(self.ctx.store, row["id"], self.owner, str(error),
                              min(now + wait, deadline))
            log.warning("delivery of %s failed (attempt %d), retrying in %gs: %s",
                        row["message_id"], attempts, wait.total_seconds(), error)
            return
        text = str(error) if error.permanent else (
            f"{error} (not delivered within {settings.lifetime_days:g} day(s), "
            f"{attempts} attempts)")
        failure = Failure(error.answer, error.reason, expired=not error.permanent, text=text)
        self._give_up({**row, "attempts": attempts}, failure, now)
        self.gave_up += 1

    def _give_up(self, row: dict, failure: Failure, now: datetime) -> None:
        """Mark the row failed and report it in one transaction; unreported if reporting
        fails for another reason than the database."""
        log.error("giving up on %s %s to %s: %s", row["kind"], row["message_id"],
                  _addressees(row), failure)
        store = self.ctx.store
        try:
            with store.transaction():
                if oq.mark_failed(store, row["id"], self.owner, failure.text):
                    self.on_failed(row, failure, now)
        except TemporaryStoreError:
            raise
        except Exception:
            log.exception("cannot report the failed mail %s; marking it failed unreported",
                          row["message_id"])
            with store.transaction():
                oq.mark_failed(store, row["id"], self.owner, failure.text)


class Sender:
    """The long-running sender task; woken at once when the pipeline queues a mail.

    The daemon builds the doorbell first and the context with ``on_outbox=bell.ring``;
    ``on_failed`` reports each mail given up on.
    """

    def __init__(self, ctx: Context, transport, bell: Doorbell | None = None,
                 on_failed: OnFailed = unreported, owner: str = OWNER) -> None:
        self.ctx = ctx
        self.transport = transport
        self.bell = bell or Doorbell()
        self.on_failed = on_failed
        self.owner = owner

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[_Watched]:
        """A transport session whose deliveries report the relay's state to health."""
        async with self.transport.session() as inner:
            yield _Watched(inner, self.ctx.health, f"relay:{self.transport.label}")

    def notify(self) -> None:
        """Wake the sender; safe to call from any thread."""
        self.bell.ring()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set, sleeping until woken or the next row is due."""
        self.bell.loop = asyncio.get_running_loop()
        while not stop.is_set():
            self.bell.event.clear()
            self.ctx.health.beat("outbox")  # progress, for the watchdog
            await deliver_due(self.ctx, self, on_failed=self.on_failed, owner=self.owner)
            await _wait_any(self.bell.event, stop, await self._sleep_seconds())

    async def _sleep_seconds(self) -> float:
        try:
            due_at = await asyncio.to_thread(oq.next_due_at, self.ctx.store)
        except Exception:
            log.exception("cannot read when the next mail is due; looking again soon")
            return IDLE_POLL_SECONDS
        if due_at is None:
            return IDLE_POLL_SECONDS
        seconds = (datetime.fromisoformat(due_at) - self.ctx.clock()).total_seconds()
        return min(IDLE_POLL_SECONDS, max(0.01, seconds))


class _Watched:
    """Sends through a transport session and tells health whether the relay works."""

    def __init__(self, inner, health: Health, name: str) -> None:
        self.inner = inner
        self.health = health
        self.name = name

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Deliver one mail; a temporary failure marks the relay as retrying, a refused
        login as refused (/healthz turns 503 at once: only an operator can fix it)."""
        try:
            await self.inner.send(sender, recipients, raw)
        except DeliveryError as exc:
            if exc.refused:
                self.health.set(self.name, REFUSED, str(exc))
            elif not exc.permanent:
                self.health.set(self.name, "retrying", str(exc))
            raise
        self.health.set(self.name, "connected")


def _addressees(row: dict) -> str:
    """A row's recipients for a log line; one with control characters shown escaped."""
    return ", ".join(a if a.isprintable() else repr(a) for a in row["recipients"])


def _alive(owner: str) -> bool:
    """Whether the sender named ``owner`` may still run: True unless it is a process of
    this host that is gone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
