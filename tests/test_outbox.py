"""The outbox sender: delivery, retries with backoff, giving up, and no double sends."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from mailbot.context import Context, open_context
from mailbot.outbound.compose import Outgoing
from mailbot.outbound.outbox import Failure, backoff, enqueue
from mailbot.outbound.sender import OWNER, Sender, deliver_due
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

    def __init__(self, *errors: Exception) -> None:
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
    """A store with a one-minute lifetime, 10 s first backoff capped at 25 s."""
    config = Config(service=ServiceConfig(data_dir=str(tmp_path)),
                    support=SupportConfig(signing_secret="outbox-test"),
                    outbox=OutboxConfig(lifetime_days=60 / 86400, backoff_seconds=10,
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


class Reports(list):
    """The sender's ``on_failed``: keeps (row id, failure text) of each mail given up on."""

    def __call__(self, row: dict, failure: Failure, now: datetime) -> None:
        self.append((row["id"], str(failure)))


def deliver(ctx: Context, transport: FakeTransport, reports: Reports | None = None,
            owner: str = OWNER) -> int:
    """One sender round at the injected clock's time."""
    on_failed = Reports() if reports is None else reports
    return asyncio.run(deliver_due(ctx, transport, on_failed=on_failed, owner=owner))


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


def test_temporary_failures_are_retried_for_the_lifetime_then_the_mail_fails(ctx, clock):
    """A relay answering 4xx gets the mail, with backoff, until its one-minute lifetime ends
    (the last attempt right then); then it fails, is reported once and never tried again."""
    queue(ctx)
    transport, reports = FakeTransport(*[TEMPORARY] * 10), Reports()
    tried_at = []
    for second in range(120):
        left = len(transport.errors)
        deliver(ctx, transport, reports)
        if len(transport.errors) < left:
            tried_at.append(second)
        clock.advance(1)
    assert tried_at == [0, 10, 30, 55, 60]
    assert (row(ctx)["status"], row(ctx)["attempts"]) == ("failed", 5)
    [(row_id, reason)] = reports
    assert row_id == row(ctx)["id"]
    assert reason == row(ctx)["last_error"]
    assert reason.startswith("451 4.3.0 try later (not delivered within")


def test_permanent_failure_fails_at_once_and_is_reported(ctx):
    """A 5xx answer (no such user) is not retried; the tickets layer hears of it once."""
    queue(ctx)
    reports = Reports()
    deliver(ctx, FakeTransport(PERMANENT), reports)
    assert (row(ctx)["status"], row(ctx)["last_error"]) == ("failed", "550 5.1.1 no such user")
    assert reports == [(row(ctx)["id"], "550 5.1.1 no such user")]


def test_a_mail_the_library_chokes_on_fails_alone_and_the_rest_go_out(ctx):
    """Any error of one mail (here the kind aiosmtplib raises for a control character) fails
    that mail; the mails behind it are delivered in the same round."""
    queue(ctx, 3)
    transport, reports = FakeTransport(ValueError("prohibited control character")), Reports()
    assert deliver(ctx, transport, reports) == 2
    statuses = [(r["status"], r["last_error"]) for r in oq.outbox_rows(ctx.store, None)]
    assert statuses == [("failed", "ValueError: prohibited control character"),
                        ("sent", ""), ("sent", "")]
    assert [reason for _, reason in reports] == ["ValueError: prohibited control character"]


def test_a_mail_claimed_by_another_sender_waits_for_the_end_of_its_lease(ctx, clock):
    """A row in another sender's hands (it may be sending it) is left alone until the claim's
    lease (twice ten relay timeouts) ends; then a crash is assumed and it is sent."""
    queue(ctx)
    with ctx.store.transaction():
        assert oq.claim_next(ctx.store, "elsewhere", clock(), clock(),
                             clock() + timedelta(seconds=600))
    transport = FakeTransport()
    assert deliver(ctx, transport) == 0
    clock.advance(599)
    assert deliver(ctx, transport) == 0
    clock.advance(1)
    assert deliver(ctx, transport) == 1


def test_a_mail_claimed_by_a_crashed_process_of_this_host_is_sent_at_once(ctx, clock):
    """A sender that finds a claim of a process on this host that is gone takes the row
    without waiting for the lease (a restarted daemon resends the mail in flight)."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    queue(ctx)
    with ctx.store.transaction():
        assert oq.claim_next(ctx.store, f"{socket.gethostname()}:{gone}:0badc0de", clock(),
                             clock(), clock() + timedelta(seconds=600))
    assert deliver(ctx, FakeTransport()) == 1
    assert row(ctx)["status"] == "sent"


def test_only_the_sender_holding_the_claim_marks_the_row(ctx, clock):
    """A sender whose claim passed to another (its lease ran out) cannot mark the row."""
    queue(ctx)
    with ctx.store.transaction():
        first = oq.claim_next(ctx.store, "first", clock(), clock(), clock())
        second = oq.claim_next(ctx.store, "second", clock(), clock(),
                               clock() + timedelta(seconds=600))
        assert first["id"] == second["id"]
        assert not oq.mark_sent(ctx.store, first["id"], "first", clock())
        assert not oq.mark_failed(ctx.store, first["id"], "first", "late")
        assert oq.mark_sent(ctx.store, second["id"], "second", clock())
    assert row(ctx)["status"] == "sent"


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
