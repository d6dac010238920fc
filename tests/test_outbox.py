"""The outbox sender: delivery, retries with backoff, giving up, and no double sends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from mailbot.context import Context, open_context
from mailbot.outbound.compose import Outgoing
from mailbot.outbound.outbox import backoff, enqueue
from mailbot.outbound.sender import Sender, deliver_due
from mailbot.outbound.transports import DeliveryError
from mailbot.settings.config import Config, OutboxConfig, RelayConfig, ServiceConfig, SupportConfig
from mailbot.store import outbox as oq

START = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.now += timedelta(seconds=seconds)


class FakeTransport:
    """Records delivered mails; raises the scripted errors first, one per attempt."""

    label = "fake"

    def __init__(self, *errors: DeliveryError) -> None:
        self.errors = list(errors)
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.sessions = 0
        self.delivered = asyncio.Event()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[FakeTransport]:
        """A batch of deliveries; counts how many sessions were opened."""
        self.sessions += 1
        yield self

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Deliver one mail, or fail as scripted."""
        if self.errors:
            raise self.errors.pop(0)
        self.sent.append((sender, recipients, raw))
        self.delivered.set()


TEMPORARY = DeliveryError("451 4.3.0 try later", permanent=False)
PERMANENT = DeliveryError("550 5.1.1 no such user", permanent=True)


@pytest.fixture
def clock() -> Clock:
    """The injected clock."""
    return Clock()


@pytest.fixture
def ctx(tmp_path, clock) -> Context:
    """A store with three attempts allowed, 10 s first backoff capped at 25 s."""
    config = Config(service=ServiceConfig(data_dir=str(tmp_path)),
                    support=SupportConfig(signing_secret="outbox-test"),
                    outbox=OutboxConfig(max_attempts=3, backoff_seconds=10,
                                        max_backoff_seconds=25),
                    relay=RelayConfig(timeout_seconds=30))
    context = open_context(config, clock)
    yield context
    context.store.close()


def queue(ctx: Context, n: int = 1) -> None:
    """Put ``n`` acknowledgements into the outbox, due now."""
    with ctx.store.transaction():
        for i in range(n):
            enqueue(ctx.store, None, Outgoing("acknowledgement", f"m{i}@example.com",
                                        "support@example.com", (f"k{i}@kunde.example",),
                                        b"Subject: hi\r\n\r\nhello\r\n"), ctx.clock())


def row(ctx: Context) -> dict:
    """The one outbox row, as `mailbot outbox list` shows it."""
    [found] = oq.outbox_rows(ctx.store, None)
    return found


def deliver(ctx: Context, transport: FakeTransport) -> int:
    """One sender round at the injected clock's time."""
    return asyncio.run(deliver_due(ctx, transport))


@pytest.mark.parametrize(("attempts", "seconds"), [(0, 10), (1, 10), (2, 20), (3, 25), (30, 25)])
def test_backoff_doubles_up_to_the_ceiling(attempts, seconds):
    """Retries wait longer each time, but never longer than the ceiling."""
    assert backoff(attempts, 10, 25) == timedelta(seconds=seconds)


def test_due_mail_is_delivered_once_and_marked_sent(ctx):
    """A queued mail goes out once; the next round sends nothing again."""
    queue(ctx, 2)
    transport = FakeTransport()
    assert deliver(ctx, transport) == 2
    assert deliver(ctx, transport) == 0
    assert [rcpt for _, rcpt, _ in transport.sent] == [["k0@kunde.example"],
                                                      ["k1@kunde.example"]]
    assert {r["status"] for r in oq.outbox_rows(ctx.store, None)} == {"sent"}


def test_temporary_failure_is_retried_after_the_backoff(ctx, clock):
    """A relay that answers 4xx gets the mail again later; the error is visible meanwhile."""
    queue(ctx)
    transport = FakeTransport(TEMPORARY)
    assert deliver(ctx, transport) == 0
    pending = row(ctx)
    assert (pending["status"], pending["attempts"], pending["last_error"]) == \
        ("pending", 1, "451 4.3.0 try later")
    clock.advance(9)
    assert deliver(ctx, transport) == 0  # not due yet
    clock.advance(1)
    assert deliver(ctx, transport) == 1
    assert (row(ctx)["status"], row(ctx)["attempts"], row(ctx)["last_error"]) == ("sent", 2, "")


def test_mail_is_marked_failed_after_the_last_attempt(ctx, clock):
    """After max_attempts temporary failures the mail is given up on, not retried forever."""
    queue(ctx)
    transport = FakeTransport(TEMPORARY, TEMPORARY, TEMPORARY, TEMPORARY)
    for wait in (0, 10, 20):
        clock.advance(wait)
        deliver(ctx, transport)
    assert (row(ctx)["status"], row(ctx)["attempts"]) == ("failed", 3)
    clock.advance(3600)
    assert deliver(ctx, transport) == 0
    assert len(transport.errors) == 1  # the fourth attempt never happened


def test_permanent_failure_fails_at_once(ctx):
    """A 5xx answer (no such user) is not retried."""
    queue(ctx)
    deliver(ctx, FakeTransport(PERMANENT))
    assert (row(ctx)["status"], row(ctx)["last_error"]) == ("failed", "550 5.1.1 no such user")


def test_mail_in_flight_during_a_crash_is_sent_again_after_its_lease(ctx, clock):
    """A delivery cut off by a crash is retried once its lease ends, not before."""
    queue(ctx)
    [due] = oq.due(ctx.store, clock(), 10)
    lease = clock() + timedelta(seconds=60)
    with ctx.store.transaction():
        assert oq.claim(ctx.store, due["id"], due["next_attempt_at"], lease)
    transport = FakeTransport()
    assert deliver(ctx, transport) == 0  # another sender holds it
    clock.advance(60)
    assert deliver(ctx, transport) == 1


async def test_sender_task_delivers_as_soon_as_it_is_woken(tmp_path):
    """The running sender delivers a newly queued mail when notified, and stops on request."""
    config = Config(service=ServiceConfig(data_dir=str(tmp_path)),
                    support=SupportConfig(signing_secret="outbox-test"))
    ctx = open_context(config)
    transport = FakeTransport()
    sender, stop = Sender(ctx, transport), asyncio.Event()
    task = asyncio.create_task(sender.run(stop))
    queue(ctx)
    sender.notify()
    async with asyncio.timeout(5):
        await transport.delivered.wait()
        stop.set()
        await task
    assert row(ctx)["status"] == "sent"
    ctx.store.close()
