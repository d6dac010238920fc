"""The outbox under faults, against a real SMTP relay and real SQLite files.

A mail to an address nobody can deliver to is not queued; one the relay refuses fails
alone and the ticket and the agents hear of it; a relay that stays down gets the mail
until the outbox lifetime ends; `outbox retry` queues a failed mail again; and the daemon
and `outbox flush` beside it, or a busy database right after a send, never send a mail
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from daemon_util import Instance
from servers import SmtpSink, wait_until

from mailbot.context import Context, open_context
from mailbot.outbound.compose import Outgoing
from mailbot.outbound.outbox import enqueue
from mailbot.outbound.sender import deliver_due, flush
from mailbot.outbound.transports import transport_for
from mailbot.settings.config import load
from mailbot.store import outbox as oq
from mailbot.tickets import mails, notify

EX_DATAERR = 65
CONCURRENT_ACKS = 500


def customer_mail(sender: str | bytes, n: int) -> bytes:
    """A customer's mail with ``sender`` written into the From header as it is."""
    raw_sender = sender if isinstance(sender, bytes) else sender.encode()
    return (b"From: " + raw_sender + b"\r\nTo: support@example.com\r\n"
            b"Subject: Drucker %d druckt nicht\r\nMessage-ID: <kunde.%d@kunde.example>\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nHallo, bitte helfen.\r\n" % (n, n))


def relay_to(sink: SmtpSink) -> dict:
    """The ``[relay]`` section for the test's SMTP sink."""
    return {"host": sink.host, "port": sink.port, "security": "plain", "timeout_seconds": 5}


def send_all(desk) -> int:
    """`mailbot outbox flush` in this process, at the desk's time: every due mail, once."""
    return asyncio.run(flush(desk.ctx, transport_for(desk.ctx.config),
                             on_failed=partial(notify.delivery_failed, desk.ctx)))


def to(sink: SmtpSink, address: str) -> list:
    """The mails the relay accepted for ``address``."""
    return [m for m in sink.messages if address in m.rcpt_tos]


def outbox_to(desk, address: str) -> list[dict]:
    """The outbox rows (as `outbox list` shows them) addressed to ``address``."""
    return [r for r in oq.outbox_rows(desk.ctx.store, None) if address in r["recipients"]]


@pytest.fixture
def now() -> datetime:
    """The desks' starting time: the real time, so the real CLI sees their mails as due."""
    return datetime.now(UTC).replace(microsecond=0)


@pytest.mark.parametrize("sender", [
    b"kunde\x01x@kunde.example",  # a control character
    b"=?utf-8?q?kunde=07x@kunde.example?=",  # one smuggled in as an encoded word
    b"<kunde mit leerzeichen@kunde.example>",  # a space, unquoted
    b'"kunde"x@kunde.example',  # broken quoting
    b"x@y@kunde.example",  # nothing before the @
    b"Kunde <kunde@intranet>",  # a domain nobody can reach
    b"das ist keine adresse @ gar nicht",  # not an address at all
])
def test_no_acknowledgement_is_queued_to_an_undeliverable_address(make_desk, now, sender):
    """The ticket is filed, but no acknowledgement is queued; the ticket says why."""
    desk = make_desk(now)
    outcome = desk.receive(customer_mail(sender, 1))
    assert outcome.status == "created"
    assert desk.outbox(kind="acknowledgement") == []
    [held] = desk.events(outcome.ticket_number, "acknowledgement_held")
    assert "is not a deliverable address" in held["data"]["reason"]


def test_an_undeliverable_sender_beside_fifty_good_ones(make_desk, smtp_sink, now):
    """Fifty acknowledgements are delivered; the fifty-first sender, with a control
    character in the address, gets none, and its ticket says why."""
    desk = make_desk(now, relay=relay_to(smtp_sink))
    good = [f"kunde{i}@kunde.example" for i in range(50)]
    senders = [*good[:25], "kunde\x01boese@kunde.example", *good[25:]]
    numbers = [desk.receive(customer_mail(s, i)).ticket_number for i, s in enumerate(senders)]
    send_all(desk)
    acks = [m for m in smtp_sink.messages if m.rcpt_tos[0].startswith("kunde")]
    assert sorted(a for m in acks for a in m.rcpt_tos) == sorted(good)
    [held] = desk.events(numbers[25], "acknowledgement_held")
    assert "U+0001" in held["data"]["reason"]
    assert {r["status"] for r in oq.outbox_rows(desk.ctx.store, None)} == {"sent"}


def test_an_internationalised_address_gets_its_acknowledgement(make_desk, smtp_sink, now):
    """A valid address with a non-ASCII local part is answered (SMTPUTF8 at the relay)."""
    desk = make_desk(now, relay=relay_to(smtp_sink))
    desk.receive(customer_mail("jörg.müller@kunde.example", 1))
    send_all(desk)
    [ack] = to(smtp_sink, "jörg.müller@kunde.example")
    assert ack.subject.startswith("[Ticket#")


def test_mails_the_relay_or_the_library_refuse_fail_alone_and_are_reported(
        make_desk, smtp_sink, now):
    """A 550 for one recipient and a contact address with a control character: `outbox
    flush` fails those two mails, each ticket gets a mail_failed event, the agents get a
    German notice naming the command to send it again, and every other mail goes out."""
    smtp_sink.reject("weg@kunde.example", "550 5.1.1 no such user")
    desk = make_desk(now, relay=relay_to(smtp_sink))
    gone = desk.receive(customer_mail("weg@kunde.example", 1)).ticket_number
    broken = desk.receive(customer_mail("kaputt\x01@kunde.example", 2)).ticket_number
    fine = [desk.receive(customer_mail(f"da{i}@kunde.example", 3 + i)).ticket_number
            for i in range(5)]
    with desk.ctx.store.transaction():  # the status mail goes to the broken contact address
        assert mails.to_customer(desk.ctx, desk.ticket(broken), "status_changed",
                                 {"status": "waiting"}, desk.now)
    flushed = desk.instance.cli("outbox", "flush")
    assert flushed.exit_code == 0, flushed.output  # the notices went out too
    assert "still pending 0, failed 2" in flushed.output

    assert len([m for m in smtp_sink.messages if m.rcpt_tos[0].startswith("da")]) == 5
    assert [r["status"] for r in outbox_to(desk, "weg@kunde.example")] == ["failed"]
    [failed_row] = outbox_to(desk, "kaputt\x01@kunde.example")
    assert failed_row["status"] == "failed"
    assert "prohibited control character" in failed_row["last_error"]
    [refused] = desk.events(gone, "mail_failed")
    assert refused["data"]["recipients"] == ["weg@kunde.example"]
    assert "550 5.1.1 no such user" in refused["data"]["reason"]
    [choked] = desk.events(broken, "mail_failed")
    assert choked["data"]["kind"] == "status_changed"
    assert all(desk.events(number, "mail_failed") == [] for number in fine)

    notices = [m for m in smtp_sink.messages if "E-Mail nicht zugestellt" in m.subject]
    assert sorted(m.rcpt_tos for m in notices) == [("anna@example.com",)] * 2 + \
        [("ben@example.com",)] * 2  # two failures, one notice to each agent
    text = next(m for m in notices if gone in m.subject).message.get_content()
    assert "weg@kunde.example" in text and "550 5.1.1 no such user" in text
    assert f"mailbot outbox retry {outbox_to(desk, 'weg@kunde.example')[0]['id']}" in text


def test_a_relay_that_stays_down_gets_the_mail_for_its_lifetime_then_it_fails(
        make_desk, smtp_sink, now):
    """Connection refused: the acknowledgement waits and is retried; after the one-day
    lifetime it fails with an event on the ticket; `outbox retry` queues it again and it
    is delivered once the relay is back."""
    smtp_sink.stop()
    desk = make_desk(now, relay=relay_to(smtp_sink), outbox={"lifetime_days": 1})
    number = desk.receive(customer_mail("geduldig@kunde.example", 1)).ticket_number
    [ack] = outbox_to(desk, "geduldig@kunde.example")
    for hours in (0, 1, 23):
        desk.now = now + timedelta(hours=hours)
        send_all(desk)
        assert oq.outbox_rows(desk.ctx.store, None, [ack["id"]])[0]["status"] == "pending"
    assert desk.events(number, "mail_failed") == []
    desk.now = now + timedelta(days=1, seconds=1)
    send_all(desk)
    [row] = oq.outbox_rows(desk.ctx.store, None, [ack["id"]])
    assert (row["status"], row["attempts"]) == ("failed", 4)
    assert "not delivered within 1 day(s), 4 attempts" in row["last_error"]
    [event] = [e for e in desk.events(number, "mail_failed")
               if e["data"]["kind"] == "acknowledgement"]
    assert event["data"]["recipients"] == ["geduldig@kunde.example"]
    assert desk.outbox(kind="agent_mail_failed")

    smtp_sink.start()
    retried = desk.instance.cli("outbox", "retry", str(ack["id"]))
    assert retried.exit_code == 0, retried.output
    assert f"{ack['id']}: acknowledgement to geduldig@kunde.example queued again" \
        in retried.output
    [row] = oq.outbox_rows(desk.ctx.store, None, [ack["id"]])
    assert (row["status"], row["attempts"]) == ("pending", 0)
    flushed = desk.instance.cli("outbox", "flush")
    assert flushed.exit_code == 0, flushed.output
    assert len(to(smtp_sink, "geduldig@kunde.example")) == 1


def test_outbox_retry_refuses_unknown_and_unfailed_mails(make_desk, smtp_sink, now):
    """Unknown IDs and mails that did not fail are an error (exit 65) and nothing is queued;
    `--failed` queues every failed mail again."""
    smtp_sink.reject("weg@kunde.example")
    desk = make_desk(now, relay=relay_to(smtp_sink))
    desk.receive(customer_mail("weg@kunde.example", 1))
    desk.receive(customer_mail("da@kunde.example", 2))
    send_all(desk)
    [failed] = outbox_to(desk, "weg@kunde.example")
    [sent] = outbox_to(desk, "da@kunde.example")

    unknown = desk.instance.cli("outbox", "retry", str(failed["id"]), "99999")
    assert unknown.exit_code == EX_DATAERR
    assert "no outbox mail 99999" in unknown.output
    not_failed = desk.instance.cli("outbox", "retry", str(sent["id"]))
    assert not_failed.exit_code == EX_DATAERR
    assert f"mail {sent['id']} is sent" in not_failed.output
    assert oq.outbox_rows(desk.ctx.store, None, [failed["id"]])[0]["status"] == "failed"

    every = desk.instance.cli("outbox", "retry", "--failed")
    assert every.exit_code == 0, every.output
    assert "queued 1 failed mail(s) again" in every.output
    assert oq.outbox_rows(desk.ctx.store, None, [failed["id"]])[0]["status"] == "pending"


class LockedAfterSend:
    """The real relay; right after its first delivery another process starts a long write
    transaction on our database, so the sender cannot record the mail as sent."""

    def __init__(self, relay, database) -> None:
        self.relay = relay
        self.database = database
        self.holder: sqlite3.Connection | None = None
        self.inner = None

    @property
    def label(self) -> str:
        """The real relay's name."""
        return self.relay.label

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[LockedAfterSend]:
        """A session of the real relay."""
        async with self.relay.session() as inner:
            self.inner = inner
            yield self

    async def send(self, sender: str, recipients: list[str], raw: bytes) -> None:
        """Deliver through the relay, then lock the database (once)."""
        await self.inner.send(sender, recipients, raw)
        if self.holder is None:
            self.holder = sqlite3.connect(self.database, isolation_level=None)
            self.holder.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        """End the other process's transaction."""
        self.holder.execute("ROLLBACK")
        self.holder.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait (in the event loop) until ``condition`` holds."""
    await asyncio.to_thread(wait_until, condition, timeout, 0.01)


def test_a_busy_database_right_after_a_send_never_sends_the_mail_again(
        make_desk, smtp_sink, now, caplog):
    """The send is recorded once the database is free again, and meanwhile no sender
    (another process's flush) takes the mail: every mail reaches the relay exactly once."""
    desk = make_desk(now, relay=relay_to(smtp_sink), service={"busy_timeout_seconds": 0.05})
    desk.receive(customer_mail("einmal@kunde.example", 1))
    ctx: Context = desk.ctx
    locked = LockedAfterSend(transport_for(ctx.config), ctx.store.path)
    relay = transport_for(ctx.config)

    async def scenario() -> tuple[int, int, int]:
        first = asyncio.create_task(deliver_due(ctx, locked))
        await until(lambda: "cannot be recorded as sent" in caplog.text)
        beside = await deliver_due(ctx, relay, owner="flush-beside")
        desk.now += timedelta(minutes=5)  # the old lease; the claim still holds
        await until(lambda: caplog.text.count("cannot be recorded as sent") >= 3)
        locked.release()
        delivered = await first
        after = await deliver_due(ctx, relay, owner="flush-beside")
        return delivered, beside, after

    with caplog.at_level(logging.WARNING):
        delivered, beside, after = asyncio.run(scenario())
    received = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    assert set(received.values()) == {1}
    assert len(received) == len(oq.outbox_rows(ctx.store, None)) == delivered + after
    assert beside == 0
    assert {r["status"] for r in oq.outbox_rows(ctx.store, None)} == {"sent"}


def test_the_daemon_and_outbox_flush_beside_it_send_every_mail_exactly_once(
        tmp_path, smtp_sink):
    """The daemon sends 500 acknowledgements, and two that fail, while `mailbot outbox
    flush` runs again and again in two other processes: the relay gets each Message-ID
    once, and each failure is reported to the agent once."""
    smtp_sink.reject("weg@kunde.example")
    instance = Instance.for_servers(tmp_path, sink=smtp_sink)
    instance.settings["team.agents"] = [{"address": "anna@example.com", "name": "Anna"}]
    instance.update("listener", enabled=False)
    customers = [f"k{i}@kunde.example" for i in range(CONCURRENT_ACKS)]
    bad = ["weg@kunde.example", "boese\x01@kunde.example"]
    ctx = open_context(load(instance.config_path))
    with ctx.store.transaction():
        for i, address in enumerate([*customers[:250], *bad, *customers[250:]]):
            raw = (f"From: support@example.com\r\nTo: k{i}@kunde.example\r\nSubject: Ticket {i}"
                   f"\r\nMessage-ID: <ack{i}@mailbot.example>\r\n\r\nDanke.\r\n").encode()
            enqueue(ctx.store, None, Outgoing("acknowledgement", f"ack{i}@mailbot.example",
                                              "support@example.com", (address,), raw),
                    ctx.clock())
    ctx.store.close()
    done, flushes = threading.Event(), []

    def flush_again_and_again() -> None:
        while not done.is_set():
            flushes.append(instance.run("outbox", "flush"))

    loops = [threading.Thread(target=flush_again_and_again) for _ in range(2)]
    with instance.start():
        for loop in loops:
            loop.start()
        try:
            wait_until(lambda: instance.count("outbox", "status = 'sent'")
                       == CONCURRENT_ACKS + len(bad), 60, 0.05, "every mail and notice sent")
        finally:
            done.set()
            for loop in loops:
                loop.join()
    received = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    assert len(received) == CONCURRENT_ACKS + len(bad)
    assert received.most_common(1)[0][1] == 1
    assert sorted(a for m in smtp_sink.messages for a in m.rcpt_tos) == \
        sorted([*customers, *["anna@example.com"] * len(bad)])
    assert instance.count("outbox", "status = 'failed'") == len(bad)
    assert all(f.returncode in (0, 75) for f in flushes), [f.stderr for f in flushes]
    assert all(b"Traceback" not in f.stderr for f in flushes)


def test_an_old_config_with_max_attempts_names_the_key_and_its_replacement(tmp_path):
    """max_attempts is gone: a config that still sets it is refused, naming it and the new
    lifetime_days."""
    instance = Instance(tmp_path)
    instance.update("outbox", max_attempts=12)
    result = instance.cli("outbox", "list")
    assert result.exit_code == 78
    assert "mailbot.toml: outbox.max_attempts: unknown key" in result.output
    assert "lifetime_days" in result.output
