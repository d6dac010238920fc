"""Mail loops settle: two mailbots answering each other, mailbot against vacation responders.

Mail travels over real SMTP: each instance's outbox sender delivers to the test SMTP sink,
and the test routes what arrives to the addressed party (a mailbot pipeline or a responder),
step by step, until a round passes in which nobody sends anything (with a hard cap).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import smtplib
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from hygiene_kit import Clock, acks_to, detail, make_ctx, outbox_rows
from mails import build_mail
from servers import SmtpSink

from mailbot.context import Context
from mailbot.inbound import pipeline
from mailbot.outbound import sender
from mailbot.outbound.transports import SmtpTransport
from mailbot.settings.config import RelayConfig

MAX_ROUNDS = 30
A = "support@a.example"
B = "support@b.example"
CUSTOMER = "kunde@kunde.example"
# Headers a careless gateway strips on the way (our anti-loop marks).
MARKS = ("Auto-Submitted", "X-Auto-Response-Suppress", "X-Mailbot-Loop", "Precedence")


class Exchange:
    """Parties addressed by mail address; mail between them goes through the SMTP sink."""

    def __init__(self, sink: SmtpSink) -> None:
        self.sink = sink
        self.transport = SmtpTransport(RelayConfig(host=sink.host, port=sink.port,
                                                   security="plain", timeout_seconds=10))
        self.instances: list[Context] = []
        self.parties: dict[str, Callable[[bytes], None]] = {}

    def add_mailbot(self, ctx: Context, mangle: Callable[[bytes], bytes] = bytes) -> None:
        """A mailbot instance receiving at its support address."""
        self.instances.append(ctx)
        self.parties[ctx.config.support.address] = \
            lambda raw: pipeline.ingest(ctx, mangle(raw), "smtp")

    def send(self, raw: bytes, sender: str, recipient: str) -> None:
        """Hand a mail to the SMTP sink as any mail client would."""
        with smtplib.SMTP(self.sink.host, self.sink.port, timeout=10) as client:
            client.sendmail(sender, [recipient], raw)

    def run(self) -> int:
        """Deliver and route until nothing moves; the number of mails that went through."""
        seen = 0
        for _ in range(MAX_ROUNDS):
            for ctx in self.instances:
                asyncio.run(sender.deliver_due(ctx, self.transport))
            new = self.sink.messages[seen:]
            seen += len(new)
            if not new:
                assert all(not pending(ctx) for ctx in self.instances)
                return seen
            for mail in new:
                for rcpt in mail.rcpt_tos:
                    if rcpt.lower() in self.parties:
                        self.parties[rcpt.lower()](mail.raw)
        raise AssertionError(f"no rest after {MAX_ROUNDS} rounds: {len(self.sink.messages)} "
                             "mails so far")


def pending(ctx: Context) -> list[dict]:
    """Outbox rows not yet delivered."""
    return [r for r in outbox_rows(ctx) if r["status"] == "pending"]


def instance(tmp_path: Path, name: str, address: str) -> Context:
    """A mailbot instance with its own data, address and loop id."""
    return make_ctx(tmp_path / name, instance=f"mb-{name}", address=address, aliases=(),
                    clock=Clock())


def strip_marks(raw: bytes) -> bytes:
    """What a header-stripping gateway makes of a mail: no automatic-mail marks left."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    for name in MARKS:
        del msg[name]
    return msg.as_bytes()


def strip_all(raw: bytes) -> bytes:
    """A gateway that also drops the threading headers."""
    msg = email.message_from_bytes(strip_marks(raw), policy=email.policy.compat32)
    for name in ("In-Reply-To", "References"):
        del msg[name]
    return msg.as_bytes()


@pytest.mark.parametrize("mangle", [bytes, strip_marks, strip_all],
                         ids=["headers-intact", "marks-stripped", "threading-stripped"])
def test_two_mailbots_settle(tmp_path: Path, smtp_sink: SmtpSink, mangle) -> None:
    """Two mailbots that are each other's customer exchange a handful of mails, then stop."""
    a, b = instance(tmp_path, "a", A), instance(tmp_path, "b", B)
    exchange = Exchange(smtp_sink)
    exchange.add_mailbot(a, mangle)
    exchange.add_mailbot(b, mangle)
    exchange.send(build_mail(sender=("B Support", B), to=A, subject="Bitte um Rückruf"), B, A)
    exchanged = exchange.run() - 1
    assert 1 <= exchanged <= 4
    assert len(acks_to(a, B)) + len(acks_to(b, A)) <= 2


def responder(exchange: Exchange, address: str, reply: Callable[[EmailMessage], bytes]) -> None:
    """A vacation responder at ``address`` that answers every mail it receives."""
    def receive(raw: bytes) -> None:
        original = email.message_from_bytes(raw, policy=email.policy.default)
        exchange.send(reply(original), address, original["From"].addresses[0].addr_spec)
    exchange.parties[address] = receive


def rfc3834_reply(original: EmailMessage) -> bytes:
    """A well-behaved auto-reply: Auto-Submitted, In-Reply-To, "Auto:" subject."""
    return build_mail(sender=("Kunde", CUSTOMER), to=str(original["From"]),
                      subject=f"Auto: {original['Subject']}", text="Ich bin im Urlaub.\n",
                      in_reply_to=original["Message-ID"].strip("<>"),
                      headers=(("Auto-Submitted", "auto-replied"),))


def subject_only_reply(original: EmailMessage) -> bytes:
    """A bad responder: no headers at all, but an "Abwesenheitsnotiz" subject."""
    return build_mail(sender=("Kunde", CUSTOMER), to=str(original["From"]),
                      subject=f"Abwesenheitsnotiz: {original['Subject']}",
                      text="Ich bin bis Montag nicht im Büro.\n")


def re_subject_reply(original: EmailMessage) -> bytes:
    """A bad responder: "Re:" the subject, no threading headers, no automatic-mail mark."""
    return build_mail(sender=("Kunde", CUSTOMER), to=str(original["From"]),
                      subject=f"Re: {original['Subject']}", text="Danke, ich melde mich.\n")


def no_hint_reply(original: EmailMessage) -> bytes:
    """The worst responder: a fresh mail each time, nothing that shows what it is."""
    return build_mail(sender=("Kunde", CUSTOMER), to=str(original["From"]),
                      subject="Vielen Dank für Ihre Nachricht",
                      text="Wir haben Ihre Nachricht erhalten.\n",
                      message_id=make_msgid(domain="kunde.example").strip("<>"))


@pytest.mark.parametrize("reply", [rfc3834_reply, subject_only_reply, re_subject_reply],
                         ids=["rfc3834", "abwesenheitsnotiz-no-headers", "re-subject"])
def test_mailbot_and_vacation_responder_settle(tmp_path: Path, smtp_sink: SmtpSink,
                                               reply) -> None:
    """A customer's vacation responder and mailbot exchange at most a few mails, then stop."""
    a = instance(tmp_path, "a", A)
    exchange = Exchange(smtp_sink)
    exchange.add_mailbot(a)
    responder(exchange, CUSTOMER, reply)
    exchange.send(build_mail(sender=("Kunde", CUSTOMER), to=A, subject="Kasse defekt"),
                  CUSTOMER, A)
    exchanged = exchange.run() - 1
    assert 1 <= exchanged <= 4
    assert len(acks_to(a, CUSTOMER)) == 1


def test_rate_limit_stops_a_responder_without_any_hint(tmp_path: Path,
                                                       smtp_sink: SmtpSink) -> None:
    """A responder that looks like a new customer every time is cut off by the rate limit."""
    a = instance(tmp_path, "a", A)
    limit = a.config.hygiene.max_acks_per_hour
    exchange = Exchange(smtp_sink)
    exchange.add_mailbot(a)
    responder(exchange, CUSTOMER, no_hint_reply)
    exchange.send(build_mail(sender=("Kunde", CUSTOMER), to=A, subject="Kasse defekt"),
                  CUSTOMER, A)
    exchanged = exchange.run() - 1
    assert len(acks_to(a, CUSTOMER)) == limit
    assert exchanged == 2 * limit
    last = a.store.row("SELECT number FROM tickets ORDER BY id DESC")["number"]
    assert any(e["kind"] == "acknowledgement_held" for e in detail(a, last)["events"])
