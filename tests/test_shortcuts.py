"""The fast paths of reading and writing mail give what the general ones give.

Facts look only where a pattern's keywords are; a plain "Name <address>" skips the stdlib's
address parser; `mailbot ingest` reads the envelope fields without a second header parse; a
text-only mail is written without the stdlib's MIME classes; an IMAP mail is held once, not
also as imaplib's debug copy.  Each shortcut is compared with the general path it replaces.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import os
from dataclasses import replace
from email.utils import getaddresses

from daemon_util import Instance, imap_settings, run_measured
from hypothesis import given, settings
from hypothesis import strategies as st
from servers import Dovecot, ImapAccount

from mailbot.inbound.files import envelope_in_headers
from mailbot.outbound import compose
from mailbot.reading import headers
from mailbot.reading.facts import FactsConfig, compile_facts, extract_facts

PATTERNS = compile_facts(FactsConfig())
# The same patterns without keywords: every pattern runs over every mail.
EVERY_PATTERN = replace(PATTERNS, gates={})
MB = 1024 * 1024

# Pieces of support mails near the facts' keywords, and odd characters the regex engine
# takes as letters (long s, dotless and dotted I, the Kelvin sign).
WORDS = ["Kundennummer", "Kd.-Nr.", "KNr", "customer no.", "Version", "v4.2.1", "Build",
         "Windows 11", "macOS 14", "iOS", "Fehler:", "Error 500", "NullPointerException:",
         "Fehlermeldung „Datenbank“", "Rechnung Nr.", "invoice #", "Ticket-Nr.", "case no",
         "Auftragsnummer", "order number", "Galaxy S23", "Pixel 8", "traceback (most recent "
         "call last)", "12345", "K-4711", "4.2", ":", " ", "\n", "> ", "ſ", "ı", "İ", "K", "ü",
         "and", "und", "zeigt", "says", '"', "“", "lautet", "is"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=40), st.lists(st.sampled_from(WORDS),
                                                               max_size=6))
def test_facts_found_by_keywords_are_the_facts_every_pattern_finds(body, subject):
    """A pattern runs only when the text has one of its keywords: nothing found changes."""
    text, title = "".join(body), " ".join(subject)
    assert extract_facts(title, text, PATTERNS) == extract_facts(title, text, EVERY_PATTERN)


def test_a_pattern_without_keywords_always_runs():
    """An operator's pattern of character classes only has no keyword: it still finds."""
    patterns = compile_facts(FactsConfig(version=(r"[a-z]{2}\d{4}",)))
    assert extract_facts("", "Seriennummer QX2024 am Gerät", patterns) == {"version": ("QX2024",)}


def test_a_long_s_counts_as_the_s_of_a_keyword():
    """The regex engine reads "ſ" as "s" when case is ignored; the keywords do too."""
    assert extract_facts("", "cuſtomer no. 12345", PATTERNS) == {"customer_number": ("12345",)}


ATOM = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCXYZ0123456789äöüß._-=?+'", min_size=1,
               max_size=10)
LOCAL = st.text(alphabet="abcxyzABC019._+-'", min_size=1, max_size=12)
DOMAIN = st.lists(st.text(alphabet="abcxyz019-", min_size=1, max_size=8), min_size=1,
                  max_size=3).map(".".join)
SPACE = st.sampled_from(["", " ", "  ", "\t"])


@settings(max_examples=400, deadline=None)
@given(st.lists(ATOM, max_size=4), LOCAL, DOMAIN, SPACE, st.booleans())
def test_a_plain_mailbox_is_read_as_the_stdlib_reads_it(words, local, domain, space, angle):
    """"Name <local@domain>" and a bare address give the stdlib parser's name and address."""
    address = f"{local}@{domain}"
    value = f"{space}{' '.join(words)}{space}<{address}>{space}" if angle or words \
        else f"{space}{address}{space}"
    expected = [(headers.one_line(headers.decode_header_value(name, "")), found)
                for name, found in getaddresses([value])]
    assert headers._address_pairs(value, "") == expected


HEAD_LINES = [b"Return-Path: <a@b.example>\r\n", b"Return-Path:\r\n <x@y.example>\r\n",
              b"return-path: <>\n", b"Delivered-To: support@example.com\r\n",
              b"DELIVERED-TO: other@example.com\r\n", b"From x@y Mon Nov 23 07:00:00 2026\r\n",
              b"From: Jana <j@k.example>\r\n", b" folded\r\n", b"\tfolded\n", b": nameless\r\n",
              b"X-Raw: \xe4\xfc\r\n", b"Return-Path: <\xe4@b.example>\r\n", b"not a field\r\n",
              b"Subject: s\r", b"Return-Path : <q@r.example>\r\n",
              b"Return-Path: <MAILER-DAEMON>\r\n"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(HEAD_LINES), max_size=10))
def test_the_envelope_in_the_headers_is_read_as_the_stdlib_parser_reads_it(lines):
    """`mailbot ingest` reads Return-Path and Delivered-To as the stdlib's parser would."""
    raw = b"".join(lines) + b"\r\n\r\nText\r\n"
    head = raw[:raw.index(b"\r\n\r\n")]
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    return_path = parsed.get("Return-Path")
    envelope = envelope_in_headers(raw)
    assert envelope.sender == (None if return_path is None
                               else str(return_path).strip().strip("<>").strip())
    assert envelope.recipients == tuple(str(value).strip()
                                        for value in parsed.get_all("Delivered-To", [])[:1])


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=400))
def test_a_text_mail_is_written_as_the_stdlib_mime_classes_write_it(body):
    """The text of an acknowledgement: the same quoted-printable bytes as MIMEText's."""
    assert compose._body(body, ()) == compose._body_part(body, ()).as_bytes(
        policy=compose._CRLF)


def test_an_imap_mail_is_held_once_while_it_is_fetched(tmp_path, dovecot: Dovecot,
                                                         imap_user: ImapAccount):
    """A 41 MB mail is fetched and filed in under 150 MB: imaplib keeps no debug copy of it
    (its repr() took 95 MB more)."""
    bot = Instance(tmp_path)
    bot.settings["imap"] = [imap_settings(imap_user)]
    bot.settings["limits"] = {"max_message_bytes": 60 * MB, "max_attachment_bytes": 40 * MB}
    bot.write()
    payload = os.urandom(30 * MB)
    digest = hashlib.sha256(payload).hexdigest()
    encoded = base64.encodebytes(payload).replace(b"\n", b"\r\n")
    del payload
    dovecot.append(imap_user.username, "INBOX", (
        b"From: Jana Kurz <jana.kurz@kunde.example>\r\nTo: support@example.com\r\n"
        b"Subject: Messwerte\r\nMessage-ID: <messwerte@kunde.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: application/octet-stream; name=messwerte.bin\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + encoded))
    del encoded
    result, peak = run_measured(bot.config_path, "fetch")
    assert result.returncode == 0, result.stderr[-2000:]
    assert peak < 150, f"peak {peak:.0f} MB"
    [ticket] = bot.tickets()
    [message] = bot.ticket(ticket["number"])["messages"]
    assert [a["sha256"] for a in message["attachments"]] == [digest]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_a_header_in_encoded_words_reads_back_whole_word_by_word(text):
    """Each encoded word holds at most 45 bytes of whole characters and decodes alone."""
    words = compose.encoded_words(text).split("\r\n ")
    decoded = [base64.b64decode(word[len("=?utf-8?b?"):-2]) for word in words]
    assert all(len(data) <= 45 for data in decoded)
    assert "".join(data.decode("utf-8") for data in decoded) == text
