"""Hostile mails seen in the wild (issue 20): each is refused early, with a sentence that
names the part and the limit, or filed; never a Python exception's text in the quarantine.

The sizes are the smallest that cross the default limits, so the tests stay fast; the
bench (bench/hostile.py) measures the large versions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from daemon_util import Instance
from hygiene_kit import make_ctx
from mails import build_mail

from mailbot.inbound import pipeline
from mailbot.reading.html import html_to_text
from mailbot.store import inbound as iq

HEAD = (b"Date: Tue, 24 Nov 2026 10:00:00 +0100\r\nMessage-ID: <hostile.%d@kunde.example>\r\n"
        b"Subject: Hilfe\r\n")
# What a reason must never look like: an exception's class name.
EXCEPTION_RE = re.compile(r"\b\w*(Error|Exception|Defect)\b")


def mail(number: int, headers: bytes, body: bytes = b"Hallo\r\n") -> bytes:
    """A mail with the usual headers, ``headers`` first, and ``body``."""
    return headers + HEAD % number + b"\r\n" + body


def nested(depth: int) -> bytes:
    """Multiparts nested ``depth`` deep around one text part."""
    levels = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
                      for i in range(depth))
    return (b"From: kunde@kunde.example\r\n" + HEAD % 6 + levels
            + b"Content-Type: text/plain\r\n\r\nx\r\n")


REFUSED = {
    "the Content-Type header holds more than 100 parameters (limits.max_parameters)": mail(
        1, b"From: kunde@kunde.example\r\nContent-Type: text/plain; "
        + b"; ".join(b"p%d=v" % i for i in range(101)) + b"\r\n"),
    "the To header holds more than 1,000 addresses or groups (limits.max_addresses)": mail(
        2, b"From: kunde@kunde.example\r\nTo: "
        + b", ".join(b"u%d@x.example" % i for i in range(1001)) + b"\r\n"),
    "the From header holds more than 1,000 addresses or groups (limits.max_addresses)": mail(
        3, b"From: " + b"g:" * 1000 + b"a@kunde.example" + b";" * 1000 + b"\r\n"),
    "the From header is 200,020 bytes, over the limit of 131,072 (limits.max_header_bytes)":
        mail(4, b'From: "' + b"A" * 200_000 + b'" <a@kunde.example>\r\n'),
    "the Reply-To header holds more than 1,000 addresses or groups (limits.max_addresses)":
        mail(5, b"From: kunde@kunde.example\r\nReply-To: " + b"@" * 1001 + b"\r\n"),
    "MIME parts nested deeper than 12 (limits.max_mime_depth)": nested(1000),
}

# Tiny mails that once quarantined with a Python exception as the reason.
SMALL = (
    b"From: a@kunde.example\r\nSubject: =?ut\x00f-8?q?a?=\r\n\r\nhi\r\n",
    b"From: a@kunde.example\r\nSubject: =?utf-8?b?!!!!?=\r\n\r\nhi\r\n",
    b"From: a@kunde.example\r\nContent-Type: application/pdf\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''%C3%28.\xff\r\n\r\nhi\r\n",
    b"From: a@kunde.example\r\nContent-Type: multipart/mixed\r\n\r\nhi\r\n",
    b"From: a@kunde.example\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n"
    b"Content-Type: message/rfc822\r\n\r\nFrom: c@d\r\nContent-Type: multipart/mixed\r\n\r\n"
    b"x\r\n--q--\r\n",
    b"From: a@kunde.example\r\nContent-Type: text/plain; charset=\"utf-8\x00\"\r\n\r\nhi\r\n",
)


@pytest.fixture
def ctx(tmp_path: Path):
    """One instance with a real SQLite store."""
    return make_ctx(tmp_path)


@pytest.mark.parametrize("reason", sorted(REFUSED))
def test_hostile_mail_is_quarantined_with_a_sentence_naming_the_limit(ctx, reason: str) -> None:
    """The operator reads which header or part crossed which limit, and the mail is kept."""
    outcome = pipeline.ingest(ctx, REFUSED[reason], "test")
    assert (outcome.status, outcome.detail) == ("quarantined", reason)
    [entry] = iq.quarantined(ctx.store)
    assert entry["error"] == reason


@pytest.mark.parametrize("raw", SMALL, ids=range(len(SMALL)))
def test_small_broken_mails_are_filed_or_refused_in_words(ctx, raw: bytes) -> None:
    """A broken encoded word, file name or multipart never puts an exception in the reason."""
    outcome = pipeline.ingest(ctx, raw, "test")
    assert outcome.status in ("created", "quarantined"), outcome
    assert not EXCEPTION_RE.search(outcome.detail), outcome.detail


def test_a_character_reference_with_thousands_of_digits_is_a_replacement_character() -> None:
    """A reference no character has is shown as U+FFFD; its neighbours stay readable."""
    html = "<p>vorher &#" + "9" * 5000 + "; nachher &#228; &#0000000065;</p>"
    assert html_to_text(html, 10_000) == "vorher \ufffd nachher ä A"


def test_the_same_bytes_quarantined_again_count_as_copies_of_one_entry(tmp_path):
    """`quarantine list` shows one entry per held mail: copies, first and last seen, size and
    the sender when it could be read."""
    bot = Instance(tmp_path)
    bot.update("limits", max_attachments=1)
    raw = build_mail(attachments=(("a.txt", "text/plain", b"a"), ("b.txt", "text/plain", b"b")))
    for _ in range(3):
        assert bot.run("ingest", input=raw).returncode == 0
    [held] = json.loads(bot.cli("quarantine", "list", "--json").stdout)
    assert held["copies"] == 3 and held["size"] == len(raw)
    assert held["sender"] == "juergen.mueller@kunde.example"
    assert "quarantine is empty" not in bot.cli("quarantine", "list").stdout
    assert "COPIES" in bot.cli("quarantine", "list").stdout
