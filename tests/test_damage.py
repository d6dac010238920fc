"""Partial damage keeps the mail, and a mail without Message-ID is known by all of it.

An attachment that cannot be decoded is kept as it came, marked, and the ticket says so;
the rest of the mail is filed as usual.  Without a Message-ID, two mails that differ
anywhere (an attachment) are two tickets, while two copies of one mail that differ only
in what delivery added (trace headers, line ends) stay one.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from mails import build_mail

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
PHOTO = b"\xff\xd8\xff\xe0 JFIF photo of the broken printer " * 40


def mail_with_files(*files: tuple[str, str, str]) -> bytes:
    """A customer mail with text and files given as (name, transfer encoding, body as sent)."""
    parts = ["Content-Type: text/plain; charset=utf-8\r\n\r\nAnbei die Fotos vom Drucker.\r\n"]
    parts += [f'Content-Type: image/jpeg; name="{name}"\r\n'
              f'Content-Disposition: attachment; filename="{name}"\r\n'
              f"Content-Transfer-Encoding: {encoding}\r\n\r\n{body}"
              for name, encoding, body in files]
    head = ("From: Jana Kurz <jana.kurz@kunde.example>\r\nTo: support@example.com\r\n"
            "Subject: Drucker defekt\r\nDate: Tue, 24 Nov 2026 09:30:00 +0100\r\n"
            "Message-ID: <fotos.1@kunde.example>\r\nMIME-Version: 1.0\r\n"
            'Content-Type: multipart/mixed; boundary="teil"\r\n\r\n')
    return (head + "".join(f"--teil\r\n{p}\r\n" for p in parts) + "--teil--\r\n").encode()


def base64_lines(data: bytes) -> str:
    """Base64 in 76-character CRLF lines, as mail programs write it."""
    return base64.encodebytes(data).decode().replace("\n", "\r\n").rstrip("\r\n")


TRUNCATED = base64_lines(PHOTO)[:-2]  # cut off in transit: the padding is wrong


@pytest.mark.parametrize(("encoding", "body", "reason"), [
    ("base64", TRUNCATED, "broken base64"),
    ("base64", base64_lines(b"first file") + "\r\n" + base64_lines(b"second file"),
     "data after the padding"),
    ("x-mystery", "?? unreadable ??", "unknown transfer encoding 'x-mystery'"),
], ids=["truncated-base64", "data-after-padding", "unknown-encoding"])
def test_an_attachment_that_cannot_be_decoded_is_kept_raw_and_the_mail_filed(
        make_desk, encoding, body, reason):
    """The mail becomes a ticket; the bad file is kept byte for byte as sent, marked damaged."""
    desk = make_desk(NOW)
    raw = mail_with_files(("ok.jpg", "base64", base64_lines(PHOTO)), ("bad.jpg", encoding, body))
    outcome = desk.receive(raw)
    assert outcome.status == "created"
    [message] = desk.instance.ticket(outcome.ticket_number)["messages"]
    assert message["body"] == "Anbei die Fotos vom Drucker."
    good, bad = message["attachments"]
    assert (good["filename"], good["content_type"]) == ("ok.jpg", "image/jpeg")
    assert desk.ctx.files.get(good["sha256"]) == PHOTO
    assert (bad["filename"], bad["content_type"]) == ("bad.jpg.damaged",
                                                      "application/octet-stream")
    assert desk.ctx.files.get(bad["sha256"]) == body.encode()
    [event] = desk.events(outcome.ticket_number, "attachment_damaged")
    assert event["data"]["filename"] == "bad.jpg.damaged"
    assert reason in event["data"]["reason"]
    [notice] = desk.outbox("agent_new_ticket", to="anna@example.com")
    assert {p.get_filename() for p in notice.iter_attachments()} == {"ok.jpg",
                                                                      "bad.jpg.damaged"}


def test_a_damaged_attachment_in_a_follow_up_is_noted_on_its_ticket(make_desk):
    """The event lands on the ticket the follow-up joins, naming the file."""
    desk = make_desk(NOW)
    first = desk.receive(build_mail(subject="Drucker", message_id="erst@kunde.example",
                                    sender=("Jana Kurz", "jana.kurz@kunde.example")))
    reply = mail_with_files(("bad.jpg", "base64", TRUNCATED)).replace(
        b"Message-ID: <fotos.1@kunde.example>", b"Message-ID: <zwei@kunde.example>\r\n"
        b"In-Reply-To: <erst@kunde.example>")
    assert desk.receive(reply).status == "followup"
    [event] = desk.events(first.ticket_number, "attachment_damaged")
    assert event["data"]["filename"] == "bad.jpg.damaged"


def without_message_id(photo: bytes) -> bytes:
    """The same customer mail (sender, date, subject, text), with ``photo`` attached."""
    return build_mail(message_id="", date=NOW, subject="Fotos",
                      attachments=(("foto.jpg", "image/jpeg", photo),))


def test_mails_without_message_id_that_differ_only_in_an_attachment_are_two_tickets(make_desk):
    """Same sender, date, subject and text, another photo: a second mail, not a duplicate."""
    desk = make_desk(NOW)
    first = desk.receive(without_message_id(PHOTO))
    second = desk.receive(without_message_id(PHOTO[::-1]))
    assert (first.status, second.status) == ("created", "created")
    assert first.ticket_number != second.ticket_number


def test_copies_of_a_mail_without_message_id_from_two_deliveries_are_one_ticket(make_desk):
    """Other trace headers, LF instead of CRLF, or the same bytes again: one ticket."""
    desk = make_desk(NOW)
    raw = without_message_id(PHOTO)
    mx1 = (b"Return-Path: <jana.kurz@kunde.example>\r\nDelivered-To: support@example.com\r\n"
           b"Received: from mx1.kunde.example by mx.example.com; Tue, 24 Nov 2026\r\n"
           b"\t09:30:01 +0100\r\n" + raw)
    mx2 = (b"Return-Path: <jana.kurz@kunde.example>\r\nX-Original-To: hilfe@example.com\r\n"
           b"Delivered-To: hilfe@example.com\r\n"
           b"Received: from mx2.kunde.example by mx.example.com; Tue, 24 Nov 2026 "
           b"09:30:04 +0100\r\n" + raw).replace(b"\r\n", b"\n")
    outcomes = [desk.receive(copy) for copy in (mx1, mx2, mx1)]
    assert [o.status for o in outcomes] == ["created", "duplicate", "duplicate"]
    assert [o.detail for o in outcomes[1:]] == ["same Message-ID", "same bytes"]
    assert len({o.ticket_number for o in outcomes}) == 1
