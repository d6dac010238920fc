"""The SMTP listener's answers when filing fails, against a real aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio
import smtplib

from mails import build_mail
from servers import free_port

from mailbot.inbound.listener import GroupCommit, IngestHandler, start_listener
from mailbot.inbound.source import TemporaryFailure
from mailbot.tickets.outcome import Outcome


def deliver(port: int) -> int:
    """Send one mail with smtplib; the code the listener answered DATA with."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.ehlo()
        client.mail("kunde@kunde.example")
        client.rcpt("support@example.com")
        return client.data(build_mail())[0]


async def answer_with(ingest) -> int:
    """Start a listener whose pipeline is ``ingest`` and deliver one mail to it."""
    port = free_port()
    server = await start_listener("127.0.0.1", port, "smtp", 10_000_000,
                                  IngestHandler(ingest, lmtp=False))
    try:
        return await asyncio.to_thread(deliver, port)
    finally:
        server.close()
        await server.wait_closed()


async def test_unexpected_error_is_a_temporary_failure_not_a_bounce() -> None:
    """A bug while filing answers 451, so the sending MTA keeps the mail and retries."""
    def broken(raw: bytes, source: str, envelope):
        raise RuntimeError("bug")

    assert await answer_with(broken) == 451


async def test_temporary_failure_answers_451() -> None:
    """A busy database answers 451."""
    def busy(raw: bytes, source: str, envelope):
        raise TemporaryFailure("database busy")

    assert await answer_with(busy) == 451


async def test_concurrent_mails_share_one_flush() -> None:
    """Mails committed while a flush runs are made durable by the next single flush."""
    flushes: list[int] = []
    filed: list[int] = []

    def flush() -> None:
        flushes.append(len(filed))

    commits = GroupCommit(flush)

    async def one(number: int) -> None:
        filed.append(number)
        await commits.durable()

    await asyncio.gather(*(one(n) for n in range(20)))
    assert len(filed) == 20
    assert 1 <= len(flushes) < 20
    assert flushes[-1] == 20


async def test_every_mail_is_flushed_before_its_answer() -> None:
    """A mail's 250 comes only after a flush that started after its commit."""
    events: list[str] = []
    port = free_port()

    def ingest(raw: bytes, source: str, envelope):
        events.append("commit")
        return Outcome("created", "1")

    def flush() -> None:
        events.append("flush")

    server = await start_listener("127.0.0.1", port, "smtp", 10_000_000,
                                  IngestHandler(ingest, False, (), GroupCommit(flush)))
    try:
        assert await asyncio.to_thread(deliver, port) == 250
    finally:
        server.close()
        await server.wait_closed()
    assert events == ["commit", "flush"]
