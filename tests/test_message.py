"""Parsing raw mail into the message record agents read: text, names, ids, dates, files."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from mails import CUSTOMER, ENCODINGS, SUPPORT, Encoded, build_mail, encoded_mail

from mailbot.app import reports
from mailbot.context import open_context
from mailbot.inbound import pipeline
from mailbot.reading import attachments, message
from mailbot.reading.message import Limits, ParseError
from mailbot.settings.config import Config, ServiceConfig, SupportConfig


@pytest.mark.parametrize("case", ENCODINGS, ids=lambda c: c.label)
def test_german_text_survives_every_charset_and_encoding(case: Encoded):
    """Subject, sender name and body with umlauts, ß, € and quotes come out exactly."""
    msg = message.parse(encoded_mail(case))
    assert msg.subject == case.subject
    assert (msg.from_name, msg.from_addr) == (case.name, CUSTOMER[1])
    assert msg.text == case.text.strip()


def test_unencoded_8bit_headers_are_read_as_utf8_or_windows_1252():
    """Headers written raw by sloppy mailers still show umlauts, whichever charset they used."""
    utf8 = build_mail(subject="placeholder").replace(b"placeholder", "Grüße".encode())
    latin = build_mail(subject="placeholder").replace(b"placeholder", "Grüße".encode("cp1252"))
    assert message.parse(utf8).subject == "Grüße"
    assert message.parse(latin).subject == "Grüße"


def test_html_only_mail_becomes_readable_text():
    """An HTML-only mail is stored as plain text without tags, entities or scripts."""
    html = ("<html><head><style>p {color: red}</style></head><body>"
            "<p>Sehr geehrte Damen und Herren,</p><p>der Server ist <b>nicht</b> erreichbar"
            " &ndash; bitte pr&uuml;fen.</p><ul><li>seit 9:00</li><li>alle Nutzer</li></ul>"
            "<img src='https://tracker.example/p.gif'><p>Grüße</p></body></html>")
    msg = message.parse(build_mail(text=None, html=html, charset="iso-8859-1"))
    assert "Sehr geehrte Damen und Herren," in msg.text
    assert "der Server ist nicht erreichbar – bitte prüfen." in msg.text
    assert "seit 9:00" in msg.text and "alle Nutzer" in msg.text and "Grüße" in msg.text
    assert "<" not in msg.text and "color" not in msg.text and "tracker" not in msg.text
    assert msg.html.startswith("<html>")


def test_plain_text_is_preferred_over_its_html_alternative():
    """When a mail has both, the sender's own plain text is the body."""
    msg = message.parse(build_mail(text="Nur Text.\n", html="<p>Nur <i>HTML</i>.</p>"))
    assert msg.text == "Nur Text."


def test_attachments_keep_name_type_size_and_bytes():
    """Attached files arrive byte for byte with their (umlaut) names and types."""
    pdf, log = b"%PDF-1.4\n" + bytes(range(256)), "Fehler in Zeile 3: Größe\n".encode()
    msg = message.parse(build_mail(attachments=(("Übersicht März.pdf", "application/pdf", pdf),
                                                ("fehler.log", "text/plain", log))))
    assert [(a.filename, a.content_type, a.size, a.payload) for a in msg.attachments] == [
        ("Übersicht März.pdf", "application/pdf", len(pdf), pdf),
        ("fehler.log", "text/plain", len(log), log)]
    assert msg.attachments[0].sha256 == hashlib.sha256(pdf).hexdigest()


@pytest.mark.parametrize(("name", "expected"), [
    ("../../etc/passwd", "passwd"),
    ("..\\..\\Windows\\system.ini", "system.ini"),
    ("/etc/shadow", "shadow"),
    ("..", "attachment-1.pdf"),
    ("", "attachment-1.pdf"),
    ("a\x00b:c*?.pdf", "a_b_c_.pdf"),
    (".htaccess", "htaccess"),
])
def test_attachment_names_never_become_paths(name, expected):
    """A hostile file name is reduced to a harmless display name."""
    assert attachments.safe_filename(name, "application/pdf", 1) == expected


def test_encoded_word_attachment_name_is_decoded():
    """Outlook-style encoded-word file names show their umlauts."""
    raw = build_mail(attachments=(("PLACEHOLDER.txt", "text/plain", b"x"),))
    encoded = "=?utf-8?b?" + base64.b64encode("Prüfbericht.txt".encode()).decode() + "?="
    msg = message.parse(raw.replace(b"PLACEHOLDER.txt", encoded.encode()))
    assert msg.attachments[0].filename == "Prüfbericht.txt"


def test_attachments_are_stored_by_content_hash_under_the_data_directory(tmp_path):
    """A filed attachment is kept once by its hash; a hostile name writes nothing elsewhere."""
    config = Config(service=ServiceConfig(data_dir=str(tmp_path / "data")),
                    support=SupportConfig(signing_secret="message-test"))
    ctx = open_context(config)
    payload = b"root:x:0:0:root:/root:/bin/bash\n"
    raw = build_mail(attachments=(("../../etc/passwd", "text/plain", payload),))
    outcome = pipeline.ingest(ctx, raw, "test")
    detail = reports.ticket_detail(ctx.store, outcome.ticket_number)
    [attachment] = detail["messages"][0]["attachments"]
    digest = hashlib.sha256(payload).hexdigest()
    assert attachment == {"filename": "passwd", "content_type": "text/plain",
                          "size": len(payload), "sha256": digest}
    assert (tmp_path / "data" / "files" / digest[:2] / digest).read_bytes() == payload
    assert not (tmp_path / "etc").exists()
    ctx.store.close()


def test_message_ids_and_references_are_read_without_brackets_in_order():
    """Threading headers come out as plain ids, oldest reference first."""
    msg = message.parse(build_mail(message_id="neu@kunde.example", in_reply_to="b@x.example",
                                   references=("a@x.example", "b@x.example")))
    assert msg.message_id == "neu@kunde.example"
    assert msg.in_reply_to == ("b@x.example",)
    assert msg.references == ("a@x.example", "b@x.example")


def test_mail_without_message_id_parses_with_an_empty_one():
    """A mail that lacks a Message-ID is still accepted."""
    assert message.parse(build_mail(message_id="")).message_id == ""


def test_date_is_timezone_aware_and_the_same_instant():
    """The sent time keeps its instant, whatever zone the sender wrote it in."""
    sent = datetime(2026, 3, 2, 10, 15, tzinfo=timezone(timedelta(hours=1)))
    msg = message.parse(build_mail(date=sent))
    assert msg.date is not None and msg.date.tzinfo is not None
    assert msg.date == sent
    assert msg.date.astimezone(UTC).hour == 9


def test_addresses_are_lower_case_and_without_repeats():
    """Recipients are compared case-insensitively: To and Cc merge without duplicates."""
    raw = build_mail(to="Support <SUPPORT@Example.com>",
                     headers=(("Cc", "support@example.com, Anna <anna@Kunde.example>"),))
    msg = message.parse(raw)
    assert msg.recipients == (SUPPORT, "anna@kunde.example")


@pytest.mark.parametrize(("raw", "limits", "reason"), [
    (b"", Limits(), "the mail is empty"),
    (b"\r\n \r\n", Limits(), "the mail is empty"),
    (build_mail(text="x" * 5000), Limits(max_message_bytes=4000), "over the limit of 4000"),
    (build_mail(headers=tuple((f"X-H{i}", "v") for i in range(20))), Limits(max_headers=10),
     "header lines"),
    (build_mail(attachments=tuple((f"f{i}.txt", "text/plain", b"x") for i in range(3))),
     Limits(max_attachments=2), "3 attachments"),
    (build_mail(attachments=(("big.bin", "application/octet-stream", b"x" * 2000),)),
     Limits(max_attachment_bytes=1000), "attachment 1 is 2000 bytes"),
], ids=["empty", "blank", "too-big", "too-many-headers", "too-many-attachments",
        "attachment-too-big"])
def test_mail_beyond_a_limit_is_refused_with_the_reason(raw, limits, reason):
    """A mail that breaks a limit is refused with a reason an operator understands."""
    with pytest.raises(ParseError, match=reason):
        message.parse(raw, limits)


def test_deeply_nested_mime_is_refused():
    """A MIME bomb (multipart nested too deep) is refused instead of parsed."""
    depth = 15
    opening = "".join(f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'
                      for i in range(depth))
    closing = "".join(f"\r\n--b{i}--\r\n" for i in reversed(range(depth)))
    raw = (f"From: {CUSTOMER[1]}\r\nSubject: nested\r\nMIME-Version: 1.0\r\n{opening}"
           f"Content-Type: text/plain\r\n\r\nhi{closing}").encode()
    with pytest.raises(ParseError, match=r"MIME parts nested deeper than 12 \(limits"):
        message.parse(raw, Limits(max_mime_depth=12))


def test_garbage_is_refused_as_no_mail():
    """Binary junk is refused with a reason, never read as a mail from nobody."""
    junk = bytes(range(256)) * 20
    with pytest.raises(ParseError, match="not an RFC 5322 message"):
        message.parse(junk)
