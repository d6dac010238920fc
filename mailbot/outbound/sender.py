"""The outbox sender: delivers queued mails, retries with backoff, never sends twice.

The sender marks a row sent right after the relay accepted it, so a crash can at most
resend the one mail that was in flight.  Rows are claimed with a lease before they are
sent, so two senders (the daemon and ``mailbot outbox flush``) never send the same row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Protocol

from mailbot.outbound.outbox import backoff
from mailbot.outbound.transports import DeliveryError
from mailbot.settings.config import Config
from mailbot.status.health import Health
from mailbot.status.metrics import Metrics
from mailbot.store import Store
from mailbot.store import outbox as oq

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0


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


async def deliver_due(ctx: Context, transport, now: datetime | None = None) -> int:
    """Try every due outbox row once, over one relay session; the number delivered."""
    rows = await asyncio.to_thread(claim_due, ctx, now or ctx.clock())
    delivered = 0
    if not rows:
        return 0
    async with transport.session() as session:
        for row in rows:
            delivered += await _deliver(ctx, session, row)
    return delivered


def claim_due(ctx: Context, now: datetime) -> list[dict]:
    """Take the due rows for this sender, so no other sender (daemon or CLI) sends them too.

    The claim is a lease of twice the relay timeout: if this process dies mid-delivery, the
    row becomes due again after it.  The bookkeeping commits skip the fsync: a process
    crash keeps them (WAL), a power loss can only cause a resend.
    """
    lease = now + timedelta(seconds=2 * ctx.config.relay.timeout_seconds)
    with ctx.store.transaction(durable=False):
        rows = oq.due(ctx.store, now, ctx.config.outbox.batch_size)
        return [r for r in rows if oq.claim(ctx.store, r["id"], r["next_attempt_at"], lease)]


async def _deliver(ctx: Context, transport, row: dict) -> int:
    try:
        await transport.send(row["sender"], row["recipients"], row["raw"])
    except DeliveryError as exc:
        await asyncio.to_thread(_failed, ctx, row, exc)
        return 0
    sent_at = await asyncio.to_thread(_sent, ctx, row["id"])
    log.info("sent %s %s to %s", row["kind"], row["message_id"], ", ".join(row["recipients"]))
    ctx.metrics.sent(row, sent_at)
    return 1


def _sent(ctx: Context, row_id: int) -> datetime:
    now = ctx.clock()
    with ctx.store.transaction(durable=False):
        oq.mark_sent(ctx.store, row_id, now)
    return now


def _failed(ctx: Context, row: dict, exc: DeliveryError) -> None:
    settings = ctx.config.outbox
    attempts = row["attempts"] + 1
    with ctx.store.transaction():
        if exc.permanent or attempts >= settings.max_attempts:
            oq.mark_final(ctx.store, row["id"], "failed", str(exc))
            log.error("giving up on %s to %s after %d attempts: %s", row["message_id"],
                      ", ".join(row["recipients"]), attempts, exc)
            return
        wait = backoff(attempts, settings.backoff_seconds, settings.max_backoff_seconds)
        oq.mark_retry(ctx.store, row["id"], str(exc), ctx.clock() + wait)
    log.warning("delivery of %s failed (attempt %d), retrying in %ds: %s", row["message_id"],
                attempts, wait.total_seconds(), exc)


class Sender:
    """The long-running sender task; woken at once when the pipeline queues a mail.

    The daemon builds the doorbell first and the context with ``on_outbox=bell.ring``.
    """

    def __init__(self, ctx: Context, transport, bell: Doorbell | None = None) -> None:
        self.ctx = ctx
        self.transport = transport
        self.bell = bell or Doorbell()

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
            try:
                await deliver_due(self.ctx, self)
            except Exception:
                log.exception("outbox run failed; retrying")
            await _wait_any(self.bell.event, stop, await asyncio.to_thread(self._sleep_seconds))

    def _sleep_seconds(self) -> float:
        due_at = oq.next_due_at(self.ctx.store)
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
        """Deliver one mail; a temporary failure marks the relay as retrying."""
        try:
            await self.inner.send(sender, recipients, raw)
        except DeliveryError as exc:
            if not exc.permanent:
                self.health.set(self.name, "retrying", str(exc))
            raise
        self.health.set(self.name, "connected")


async def _wait_any(wake: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
