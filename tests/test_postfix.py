"""mailbot behind a real Postfix: LMTP, SMTP and the pipe in, Postfix as the relay out.

One Postfix and three daemons per module (the ``postfix_rig`` fixture); each test tells its
mails apart by subject and customer, so the tests share the desks without seeing each other.
"""

from __future__ import annotations

import itertools

import pytest
from mails import build_mail
from postfix import PostfixRig

PATHS = ("lmtp", "smtp", "pipe")
SERIAL = itertools.count(1)
# Why agents see no acknowledgement: the pipe (flag R) writes Return-Path: <>, read first.
NULL_SENDER_REASON = {"lmtp": "null envelope sender (MAIL FROM:<>)",
                      "smtp": "null envelope sender (MAIL FROM:<>)",
                      "pipe": "empty Return-Path <>"}


@pytest.fixture
def rig(postfix_rig: PostfixRig, request: pytest.FixtureRequest) -> PostfixRig:
    """The module's rig; a test over the pipe skips (with the reason) if the pipe cannot run."""
    path = getattr(request.node, "callspec", None) and request.node.callspec.params.get("path")
    if path == "pipe" and postfix_rig.pipe_skip:
        pytest.fail(postfix_rig.pipe_skip)
    return postfix_rig


def customer_mail(path: str, what: str, **extra) -> tuple[str, str, bytes]:
    """A customer's mail to the ``path`` desk: (subject, customer address, raw bytes)."""
    n = next(SERIAL)
    subject = f"{what} {path} {n}"
    customer = f"kunde-{path}-{n}@kunde.example"
    raw = build_mail(subject=subject, sender=("Kunde", customer),
                     to=f"support@{path}.example.com", **extra)
    return subject, customer, raw


@pytest.mark.parametrize("path", PATHS)
def test_a_mail_through_postfix_is_filed_once_and_acknowledged(rig, path):
    """Postfix delivers a customer's mail (status=sent), mailbot opens one ticket, and the
    acknowledgement reaches the customer through Postfix."""
    desk = rig.desks[path]
    subject, customer, raw = customer_mail(path, "Drucker")
    queue_id = rig.postfix.submit(customer, desk.address, raw)
    assert rig.postfix.wait_status(queue_id, "sent") == ["sent"]
    desk.wait_ticket(subject)
    [ack] = rig.sink.wait_for(lambda m: m.rcpt_tos == (customer,))
    assert "postfix.test" in str(ack.message["Received"])
    assert len(desk.tickets(subject)) == 1


@pytest.mark.parametrize("path", PATHS)
def test_a_null_sender_mail_is_filed_without_acknowledgement(rig, path):
    """A mail over MAIL FROM:<> is delivered and filed, and agents see why it got no
    acknowledgement; nothing is queued for its From."""
    desk = rig.desks[path]
    subject, _customer, raw = customer_mail(path, "Ohne Absender")
    queue_id = rig.postfix.submit("", desk.address, raw)
    assert rig.postfix.wait_status(queue_id, "sent") == ["sent"]
    ticket = desk.wait_ticket(subject)
    held = [e["data"]["reason"] for e in ticket["events"] if e["kind"] == "acknowledgement_held"]
    assert held == [NULL_SENDER_REASON[path]]
    [row] = desk.tickets(subject)
    assert desk.instance.count("outbox", f"ticket_id = {row['id']}") == 0


@pytest.mark.parametrize("path", ["pipe"])
def test_a_quarantined_pipe_mail_counts_as_delivered_not_bounced(rig, path):
    """A mail mailbot keeps in quarantine (over the desk's one-attachment limit) is a
    delivery for Postfix: status=sent, no bounce to the customer."""
    desk = rig.desks[path]
    files = tuple((f"scan{i}.pdf", "application/pdf", b"%PDF-1.4 scan") for i in range(2))
    _subject, customer, raw = customer_mail(path, "Zwei Scans", attachments=files)
    before = desk.instance.count("quarantine")
    queue_id = rig.postfix.submit(customer, desk.address, raw)
    assert rig.postfix.wait_status(queue_id, "sent") == ["sent"]
    assert desk.instance.count("quarantine") == before + 1
    assert "sender non-delivery notification" not in rig.postfix.log()


def test_an_internationalised_customer_is_acknowledged_through_postfix(rig):
    """A customer with a non-ASCII local part writes over SMTPUTF8; the acknowledgement goes
    out through Postfix as mailbot's relay, to that very address."""
    desk = rig.desks["lmtp"]
    n = next(SERIAL)
    customer, subject = f"jürgen.{n}@kunde.example", f"Umlaute {n}"
    raw = (f"From: Jürgen <{customer}>\r\nTo: {desk.address}\r\nSubject: {subject}\r\n"
           f"Message-ID: <umlaut-{n}@kunde.example>\r\nMIME-Version: 1.0\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "Grüße, der Drucker druckt nicht.\r\n").encode()
    queue_id = rig.postfix.submit(customer, desk.address, raw, smtputf8=True)
    assert rig.postfix.wait_status(queue_id, "sent") == ["sent"]
    desk.wait_ticket(subject)
    [ack] = rig.sink.wait_for(lambda m: m.rcpt_tos == (customer,))
    assert "postfix.test" in str(ack.message["Received"])
    assert customer in str(ack.message["To"])


@pytest.mark.parametrize("path", ["lmtp", "smtp"])
def test_postfix_defers_while_mailbot_is_down_and_delivers_once_after(rig, path):
    """mailbot stopped: Postfix keeps the mail (status=deferred); once mailbot runs again and
    the queue is flushed, the mail is filed exactly once."""
    desk = rig.desks[path]
    subject, customer, raw = customer_mail(path, "Später")
    desk.stop()
    try:
        queue_id = rig.postfix.submit(customer, desk.address, raw)
        assert rig.postfix.wait_status(queue_id, "deferred") == ["deferred"]
    finally:
        desk.start()
    rig.postfix.flush()
    assert rig.postfix.wait_status(queue_id, "sent")[-1] == "sent"
    desk.wait_ticket(subject)
    assert len(desk.tickets(subject)) == 1
    assert "bounced" not in rig.postfix.statuses(queue_id)
