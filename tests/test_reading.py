"""Real-world mails are read as their writers meant them.

Each mail here is written the way a real program writes it (Outlook, Gmail, Apple Mail,
Thunderbird, old mobile and webmail clients, scripts and MTAs), including what they get
wrong: encoded names with commas, split encoded-words, junk above the headers, raw 8-bit
headers, missing or wrong charsets, uuencode, Outlook's winmail.dat, forwarded mails,
parts without names, and bytes that are no mail at all.
"""

from __future__ import annotations

import base64
import binascii
import quopri
import struct
from datetime import UTC, datetime

import pytest
from daemon_util import Instance
from servers import Dovecot, ImapAccount

from mailbot.reading.headers import normalise_address, normalise_domain
from mailbot.reading.message import FORWARDED_MARKER, ParseError, parse
from mailbot.tickets.accounts import import_file

NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
# "müller-bau.example" in its ASCII (IDNA) form.
IDN_DOMAIN = "xn--mller-bau-q9a.example"


def wire(*lines: bytes | str) -> bytes:
    """A mail from its lines (str as ASCII, bytes as they are), joined with CRLF."""
    return b"\r\n".join(line.encode("ascii") if isinstance(line, str) else line
                        for line in lines) + b"\r\n"


def b_word(text: str, charset: str = "utf-8") -> str:
    """An RFC 2047 B encoded-word, as Gmail and Apple Mail write them."""
    return f"=?{charset}?B?{base64.b64encode(text.encode(charset)).decode()}?="


def q_word(text: str, charset: str = "utf-8") -> str:
    """An RFC 2047 Q encoded-word, as Outlook and Thunderbird write them."""
    encoded = quopri.encodestring(text.encode(charset), header=True).decode()
    return f"=?{charset}?Q?{encoded.replace(',', '=2C')}?="


OUTLOOK_HEAD = ("Date: Tue, 24 Nov 2026 09:12:44 +0000",
                "Message-ID: <AM0PR07MB5412C3@AM0PR07MB5412.eurprd07.prod.outlook.com>",
                "Accept-Language: de-DE, en-US", "Content-Language: de-DE",
                "X-MS-Has-Attach:", "MIME-Version: 1.0")


# -- 1. encoded display names and subjects ---------------------------------------------------------


@pytest.mark.parametrize("sender", [
    f"{q_word('Müller, Bernd', 'iso-8859-1')} <bernd.mueller@kunde.example>",  # Outlook
    f'"{b_word("Müller, Bernd")}" <bernd.mueller@kunde.example>',  # Gmail
    "Mueller, Bernd <bernd.mueller@kunde.example>",  # a sloppy script, no quotes at all
], ids=["outlook-q", "gmail-quoted-b", "unquoted"])
def test_a_display_name_with_a_comma_is_one_sender(sender):
    """ "Müller, Bernd" stays one name of one address, however it is encoded."""
    msg = parse(wire(f"From: {sender}", "To: support@example.com", "Subject: Drucker",
                     *OUTLOOK_HEAD, "Content-Type: text/plain; charset=us-ascii", "",
                     "Hallo"))
    assert msg.from_addr == "bernd.mueller@kunde.example"
    assert msg.from_name in ("Müller, Bernd", "Mueller, Bernd")


def test_recipients_with_encoded_commas_are_each_one_address():
    """An Outlook To line with two "Last, First" names holds two addresses, not four."""
    to = (f"{q_word('Schröder, Anna', 'iso-8859-1')} <anna.schroeder@kunde.example>,\r\n "
          f"{q_word('Weiß, Jörg', 'iso-8859-1')} <joerg.weiss@kunde.example>")
    msg = parse(wire("From: bernd.mueller@kunde.example", f"To: {to}",
                     "Cc: Support <support@example.com>", "Subject: x", *OUTLOOK_HEAD,
                     "Content-Type: text/plain", "", "x"))
    assert msg.to == ("anna.schroeder@kunde.example", "joerg.weiss@kunde.example")
    assert msg.recipients == (*msg.to, "support@example.com")


@pytest.mark.parametrize(("subject", "expected"), [
    # Thunderbird folds a long subject into encoded-words on two lines
    ("=?UTF-8?Q?Fehlermeldung_beim_=c3=96ffnen_der_Datei_=e2=80=9eRechnung_M?=\r\n"
     " =?UTF-8?Q?=c3=a4rz=e2=80=9c?=", "Fehlermeldung beim Öffnen der Datei „Rechnung März“"),
    # a webmailer that splits a UTF-8 character across two encoded-words
    ("=?UTF-8?B?R3LD?= =?UTF-8?B?vMOfZQ==?=", "Grüße"),
    # two charsets next to each other; the space is encoded in the second word
    ("=?ISO-8859-1?Q?Gr=FC=DFe?= =?UTF-8?Q?_aus_K=C3=B6ln?=", "Grüße aus Köln"),
    # Apple Mail: B-words folded with a tab
    (f"Re: {b_word('Lizenzschlüssel ')}\r\n\t{b_word('abgelaufen')}",
     "Re: Lizenzschlüssel abgelaufen"),
], ids=["thunderbird-folded", "split-character", "two-charsets", "apple-mail-tab"])
def test_whitespace_between_adjacent_encoded_words_is_dropped(subject, expected):
    """RFC 2047 6.2: the subject reads as written, without gaps inside words."""
    msg = parse(wire("From: Jana Kurz <jana.kurz@kunde.example>", "To: support@example.com",
                     f"Subject: {subject}", "Date: Tue, 24 Nov 2026 09:30:00 +0100",
                     "Content-Type: text/plain; charset=utf-8", "", "Hallo"))
    assert msg.subject == expected


SCRIPT_MAIL = ("From: Jana Kurz <jana.kurz@kunde.example>", "To: support@example.com",
               "Subject: Drucker im Lager", "Date: Tue, 24 Nov 2026 09:30:00 +0100",
               "Message-ID: <lager.1@kunde.example>", "", "Der Drucker im Lager streikt.")


@pytest.mark.parametrize("raw", [
    wire("From jana.kurz@kunde.example  Tue Nov 24 09:30:00 2026", *SCRIPT_MAIL),
    wire(">From jana.kurz@kunde.example Tue Nov 24 09:30:00 2026", *SCRIPT_MAIL),
    wire("Microsoft Mail Internet Headers Version 2.0", *SCRIPT_MAIL),
    wire("", *SCRIPT_MAIL),
    b"\xef\xbb\xbf" + wire(*SCRIPT_MAIL),
    wire(*SCRIPT_MAIL).replace(b"Subject:", b"Subject :"),
    wire(*SCRIPT_MAIL).replace(b"Subject: Drucker im Lager",
                               b"Subject: Drucker im\r\nLager"),
], ids=["postfix-pipe-envelope-line", "escaped-mbox-line", "outlook-headers-title",
        "blank-first-line", "byte-order-mark", "space-before-colon", "fold-without-indentation"])
def test_a_malformed_first_header_line_leaves_the_headers_readable(raw):
    """Junk above the header block, or a header written wrongly, costs nothing of the mail."""
    msg = parse(raw)
    assert (msg.subject, msg.from_addr, msg.message_id) == (
        "Drucker im Lager", "jana.kurz@kunde.example", "lager.1@kunde.example")
    assert msg.text == "Der Drucker im Lager streikt."


KOI8_TEXT = ("Здравствуйте!\nУ нас в бухгалтерии не работает принтер, он печатает только "
             "пустые страницы.\nПожалуйста, помогите.\n")


@pytest.mark.parametrize("body_type", [
    "text/plain; charset=koi8-r",  # The Bat! writes headers and text in KOI8-R
    "text/plain",  # an old mobile client that declares nothing
], ids=["declared", "undeclared"])
def test_raw_koi8_r_headers_are_read_in_the_charset_of_the_text(body_type):
    """Unencoded 8-bit headers are read in the charset the mail's own text is in."""
    raw = wire(b"From: " + "Иван Петров".encode("koi8-r") + b" <ivan@kunde.example>",
               "To: support@example.com",
               b"Subject: " + "Не работает принтер".encode("koi8-r"),
               "Date: Tue, 24 Nov 2026 09:30:00 +0300", "X-Mailer: The Bat! (v3.5)",
               "MIME-Version: 1.0", f"Content-Type: {body_type}",
               "Content-Transfer-Encoding: 8bit", "",
               KOI8_TEXT.replace("\n", "\r\n").encode("koi8-r"))
    msg = parse(raw)
    assert (msg.from_name, msg.subject) == ("Иван Петров", "Не работает принтер")
    assert msg.text == KOI8_TEXT.strip()


def test_raw_utf8_and_windows_1252_headers_are_read_as_written():
    """Gmail over SMTPUTF8 writes raw UTF-8; Outlook Express raw Windows-1252."""
    gmail = parse(wire(b"From: J\xc3\xbcrgen Gro\xc3\x9f <j\xc3\xbcrgen@m\xc3\xbcller-bau.example>",
                       "To: support@example.com",
                       b"Subject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln",
                       "Date: Tue, 24 Nov 2026 09:30:00 +0100",
                       "Content-Type: text/plain; charset=UTF-8", "", "Hallo"))
    assert (gmail.from_name, gmail.subject) == ("Jürgen Groß", "Grüße aus Köln")
    assert gmail.from_addr == f"jürgen@{IDN_DOMAIN}"
    express = parse(wire(b"From: \"Bj\xf6rn Sch\xe4fer\" <bjoern@kunde.example>",
                         "To: support@example.com",
                         b"Subject: =?windows-1252?Q?=84Wichtig=93?= Lizenz f\xfcr B\xfcro",
                         "X-Mailer: Microsoft Outlook Express 6.00.2900.5931",
                         "Content-Type: text/plain; charset=\"Windows-1252\"",
                         "Content-Transfer-Encoding: 8bit", "", b"Gr\xfc\xdfe"))
    assert express.from_name == "Björn Schäfer"
    assert express.subject == "„Wichtig“ Lizenz für Büro"
    assert express.text == "Grüße"


# -- 2. addresses ------------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "normalised"), [
    ("Jana.Kurz@Kunde.EXAMPLE", "jana.kurz@kunde.example"),
    ("<jana.kurz@kunde.example>", "jana.kurz@kunde.example"),
    ("Jana Kurz <jana.kurz@kunde.example> (Vertrieb)", "jana.kurz@kunde.example"),
    ("jana.kurz@kunde.example (Jana Kurz)", "jana.kurz@kunde.example"),
    ("jana@Müller-Bau.example", f"jana@{IDN_DOMAIN}"),
    (f"jana@{IDN_DOMAIN.upper()}", f"jana@{IDN_DOMAIN}"),
    ("root", "root"),
    ('"Jana Kurz <jana.kurz@kunde.example>', '"jana kurz <jana.kurz@kunde.example>'),
])
def test_addresses_are_normalised_in_one_way(written, normalised):
    """Case, brackets, comments and the domain's form never make two addresses of one."""
    assert normalise_address(written) == normalised


def test_domains_are_normalised_like_addresses():
    """An account's mail domain is written as a sender's domain is."""
    assert normalise_domain("Müller-Bau.Example.") == IDN_DOMAIN
    assert normalise_domain("KUNDE.example") == "kunde.example"


@pytest.mark.parametrize(("sender", "kept"), [
    ("root", "root"),  # cron on a host without a mail domain
    ("Jana Kurz <jana>", "jana"),
    ("Jana <jana\x07@kunde.example>", "jana\x07@kunde.example"),
    ('"Jana Kurz <jana.kurz@kunde.example>', '"jana kurz <jana.kurz@kunde.example>'),
], ids=["no-domain", "no-domain-with-name", "control-character", "broken-quoting"])
def test_an_invalid_sender_gets_a_ticket_but_never_an_acknowledgement(make_desk, sender, kept):
    """The address is kept as written (not dropped, not swapped for another), the ticket
    opens, and the acknowledgement is held with the reason."""
    desk = make_desk(NOW)
    raw = wire(f"From: {sender}", "To: support@example.com", "Subject: Sicherung fehlgeschlagen",
               "Date: Tue, 24 Nov 2026 09:30:00 +0100", "", "Die Sicherung ist fehlgeschlagen.")
    assert parse(raw).from_addr == kept
    outcome = desk.receive(raw)
    assert outcome.status == "created"
    assert desk.outbox("acknowledgement") == []
    [held] = desk.events(outcome.ticket_number, "acknowledgement_held")
    assert "not a deliverable address" in held["data"]["reason"]
    [message] = desk.instance.ticket(outcome.ticket_number)["messages"]
    assert message["from"] == kept


def test_a_contact_imported_with_a_unicode_domain_is_found_by_its_ascii_form(make_desk,
                                                                             tmp_path):
    """The customer list and the mail may write an IDN domain either way: one customer."""
    desk = make_desk(NOW)
    listing = tmp_path / "kunden.toml"
    listing.write_text(
        '[[accounts]]\nname = "Müller Bau"\ncustomer_number = "20001"\n'
        'domains = ["Müller-Bau.example"]\n\n'
        '[[contacts]]\naddress = "Jana.Kurz@MÜLLER-BAU.example"\naccount = "Müller Bau"\n',
        encoding="utf-8")
    import_file(desk.ctx.store, listing)
    by_address = desk.receive(wire(f"From: Jana Kurz <JANA.KURZ@{IDN_DOMAIN}>",
                                   "To: support@example.com", "Subject: Bagger steht",
                                   "Date: Tue, 24 Nov 2026 09:30:00 +0100", "", "Hilfe"))
    by_domain = desk.receive(wire(b"From: Ole <ole@m\xc3\xbcller-bau.example>",
                                  "To: support@example.com", "Subject: Kran steht",
                                  "Date: Tue, 24 Nov 2026 09:31:00 +0100",
                                  "Content-Type: text/plain; charset=utf-8", "", "Hilfe"))
    [first] = desk.events(by_address.ticket_number, "created")
    [second] = desk.events(by_domain.ticket_number, "created")
    assert (first["data"]["identified_by"], second["data"]["identified_by"]) == (
        "address", "domain")
    assert desk.ticket(by_address.ticket_number)["account_id"] is not None
    assert second["data"]["from"] == f"ole@{IDN_DOMAIN}"


# -- 4. charsets -------------------------------------------------------------------------------


RUSSIAN = "Добрый день! Принтер в офисе снова не печатает, пожалуйста, пришлите техника.\n"
JAPANESE = "お世話になっております。プリンターが動きません。至急ご対応をお願いいたします。\n"
GERMAN = "Er sagte „geht nicht“ – die Rechnung über 99 € fehlt. Grüße aus Köln\n"


@pytest.mark.parametrize(("declared", "written", "text"), [
    ("", "koi8-r", RUSSIAN),  # no charset at all: an old Linux mailer
    ("; charset=utf-8", "windows-1251", RUSSIAN),  # a webmailer that always says UTF-8
    ("; charset=us-ascii", "shift_jis", JAPANESE),  # an old Japanese mobile gateway
    ("; charset=us-ascii", "windows-1252", GERMAN),  # Outlook Express, "plain text" setting
    ("; charset=iso-8859-1", "windows-1252", GERMAN),  # says Latin-1, writes „“ and €
    ("; charset=utf-8", "utf-8", GERMAN),
], ids=["koi8-r-undeclared", "cp1251-as-utf8", "shift-jis-as-ascii", "cp1252-as-ascii",
        "cp1252-as-latin1", "utf-8"])
def test_a_text_with_a_missing_or_wrong_charset_is_read_by_detection(declared, written, text):
    """The declared charset is used where it fits; where it fails or gives control
    characters, the bytes are read in the charset they are in."""
    msg = parse(wire("From: kunde@kunde.example", "To: support@example.com", "Subject: Hilfe",
                     "Date: Tue, 24 Nov 2026 09:30:00 +0100", "MIME-Version: 1.0",
                     f"Content-Type: text/plain{declared}", "Content-Transfer-Encoding: 8bit",
                     "", text.replace("\n", "\r\n").encode(written)))
    assert msg.text == text.strip()


def test_iso_2022_jp_from_an_old_mobile_phone_is_decoded():
    """7-bit ISO-2022-JP (Japanese phones) is text in escapes, not ASCII to show as is."""
    msg = parse(wire("From: taro@kunde.example", "To: support@example.com",
                     f"Subject: {b_word('プリンター故障', 'iso-2022-jp')}",
                     "Content-Type: text/plain; charset=ISO-2022-JP",
                     "Content-Transfer-Encoding: 7bit", "",
                     JAPANESE.replace("\n", "\r\n").encode("iso-2022-jp")))
    assert (msg.subject, msg.text) == ("プリンター故障", JAPANESE.strip())


def test_an_html_part_without_a_charset_is_read_in_its_meta_charset():
    """An HTML-only mail names its charset in <meta> only: the text is read in it."""
    html = ('<html><head><meta http-equiv="Content-Type" content="text/html; '
            f'charset=windows-1251"></head><body><p>{RUSSIAN}</p></body></html>')
    msg = parse(wire("From: kunde@kunde.example", "To: support@example.com", "Subject: x",
                     "MIME-Version: 1.0", "Content-Type: text/html",
                     "Content-Transfer-Encoding: 8bit", "", html.encode("windows-1251")))
    assert msg.text == RUSSIAN.strip()


def alternative(plain: str, html: str) -> bytes:
    """An Apple Mail style multipart/alternative mail with both texts."""
    return wire("From: Jana Kurz <jana.kurz@kunde.example>", "To: support@example.com",
                "Subject: Anfrage", "Date: Tue, 24 Nov 2026 09:30:00 +0100",
                "Mime-Version: 1.0 (Mac OS X Mail 16.0)",
                'Content-Type: multipart/alternative; boundary="Apple-Mail=_A1"', "",
                "--Apple-Mail=_A1", "Content-Transfer-Encoding: 8bit",
                "Content-Type: text/plain; charset=utf-8", "", plain.encode(),
                "--Apple-Mail=_A1", "Content-Transfer-Encoding: 8bit",
                "Content-Type: text/html; charset=utf-8", "", html.encode(),
                "--Apple-Mail=_A1--")


def test_text_only_in_the_html_part_is_taken_from_there():
    """A stub plain part, or one that lost a paragraph, does not hide what the HTML says."""
    stub = parse(alternative("Diese Nachricht ist im HTML-Format.",
                             "<p>Unser Kassensystem zeigt Fehler 0x80070005 beim Start.</p>"))
    assert "Unser Kassensystem zeigt Fehler 0x80070005 beim Start." in stub.text
    lost = parse(alternative(
        "Hallo,\nanbei die Fehlerbeschreibung.\n",
        "<p>Hallo,<br>anbei die Fehlerbeschreibung.</p>"
        "<table><tr><td>Fehler E42 tritt nach dem Update auf Version 7.2 auf</td></tr></table>"))
    assert lost.text == ("Hallo,\nanbei die Fehlerbeschreibung.\n\n"
                         "Fehler E42 tritt nach dem Update auf Version 7.2 auf")
    same = parse(alternative("Der Drucker druckt nicht.\n",
                             "<p>Der <b>Drucker</b> druckt nicht.</p><img alt='Logo'>"))
    assert same.text == "Der Drucker druckt nicht."
    shortened = parse(alternative(  # Yahoo shortens the quoted mail in the plain part
        "Passt, danke!\n\nAm 23.11.2026 schrieb Support:\n> Ihr Ticket\n",
        "<p>Passt, danke!</p><p>Am 23.11.2026 schrieb Support:</p><blockquote>Ihr Ticket "
        "4711 wurde bearbeitet.<br>Bitte pr&uuml;fen Sie die Lieferung.</blockquote>"))
    assert shortened.text == "Passt, danke!\n\nAm 23.11.2026 schrieb Support:\n> Ihr Ticket"


# -- 5. old encodings: uuencode and TNEF -----------------------------------------------------------

REPORT = b"%PDF-1.4\n" + bytes(range(256)) * 3 + b"\n%%EOF\n"


def uuencode(name: str, data: bytes) -> bytes:
    """A file as `uuencode` writes it: begin line, 45-byte lines, a backquote, end."""
    lines = [f"begin 644 {name}".encode()]
    lines += [binascii.b2a_uu(data[i:i + 45], backtick=True).rstrip(b"\n")
              for i in range(0, len(data), 45)]
    return b"\r\n".join([*lines, b"`", b"end"])


def test_a_uuencoded_block_in_a_plain_text_becomes_an_attachment():
    """`uuencode bericht.pdf bericht.pdf | mail`: the text without the block, the file whole."""
    msg = parse(wire("From: backup@server.kunde.example", "To: support@example.com",
                     "Subject: Bericht", "Date: Tue, 24 Nov 2026 09:30:00 +0100", "",
                     "Anbei der Bericht von heute Nacht.", "", uuencode("bericht.pdf", REPORT),
                     "", "Gruss, der Server"))
    assert msg.text == "Anbei der Bericht von heute Nacht.\n\nGruss, der Server"
    [attachment] = msg.attachments
    assert (attachment.filename, attachment.content_type, attachment.payload) == (
        "bericht.pdf", "application/pdf", REPORT)


def test_an_x_uuencode_part_becomes_an_attachment_named_by_its_begin_line():
    """Old Outlook Express / Pegasus parts: Content-Transfer-Encoding x-uuencode, no name."""
    raw = wire("From: kunde@kunde.example", "To: support@example.com", "Subject: Log",
               "MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="=_Teil"', "",
               "--=_Teil", "Content-Type: text/plain; charset=iso-8859-1", "",
               "Das Protokoll.", "--=_Teil", "Content-Type: application/octet-stream",
               "Content-Transfer-Encoding: x-uuencode", "", uuencode("kasse.log", REPORT),
               "--=_Teil--")
    msg = parse(raw)
    assert msg.text == "Das Protokoll."
    [attachment] = msg.attachments
    assert (attachment.filename, attachment.payload) == ("kasse.log", REPORT)


def tnef(files: tuple[tuple[str, bytes], ...]) -> bytes:
    """A winmail.dat as Outlook writes it: TNEF version, code page, class, and per file its
    rendering data, title (the name, in the code page) and data."""
    def attribute(level: int, name: int, kind: int, data: bytes) -> bytes:
        return (struct.pack("<BHHI", level, name, kind, len(data)) + data
                + struct.pack("<H", sum(data) & 0xFFFF))
    out = struct.pack("<IH", 0x223E9F78, 1)
    out += attribute(1, 0x9006, 0x0008, struct.pack("<I", 0x00010000))
    out += attribute(1, 0x9007, 0x0006, struct.pack("<II", 1252, 0))
    out += attribute(1, 0x8008, 0x0007, b"IPM.Microsoft Mail.Note\x00")
    for name, data in files:
        out += attribute(2, 0x9002, 0x0006, b"\x01\x00" + b"\xff" * 4 + b"\x00" * 8)
        out += attribute(2, 0x8010, 0x0001, name.encode("cp1252") + b"\x00")
        out += attribute(2, 0x800F, 0x0006, data)
    return out


def outlook_rich_text_mail(winmail: bytes) -> bytes:
    """An Exchange mail in Outlook's rich-text format: a text part and winmail.dat."""
    encoded = base64.encodebytes(winmail).replace(b"\n", b"\r\n").rstrip()
    return wire("From: =?iso-8859-1?Q?J=F6rg_Wei=DF?= <joerg.weiss@kunde.example>",
                "To: support@example.com", "Subject: Inventurliste", *OUTLOOK_HEAD,
                'Content-Type: multipart/mixed; boundary="_002_AM0PR07_"', "",
                "--_002_AM0PR07_", 'Content-Type: text/plain; charset="iso-8859-1"',
                "Content-Transfer-Encoding: quoted-printable", "",
                "Anbei die Liste f=FCr die Inventur.", "", "--_002_AM0PR07_",
                "Content-Type: application/ms-tnef; name=\"winmail.dat\"",
                "Content-Description: winmail.dat",
                'Content-Disposition: attachment; filename="winmail.dat"',
                "Content-Transfer-Encoding: base64", "", encoded, "", "--_002_AM0PR07_--")


def test_outlooks_winmail_dat_is_unpacked_into_its_files(make_desk):
    """The ticket carries the files inside winmail.dat, not the wrapper."""
    sheet, notes = b"PK\x03\x04 inventory sheet", b"Regal 4 fehlt\r\n"
    raw = outlook_rich_text_mail(tnef((("Übersicht März.xlsx", sheet), ("notiz.txt", notes))))
    msg = parse(raw)
    assert msg.text == "Anbei die Liste für die Inventur."
    assert [(a.filename, a.content_type, a.payload) for a in msg.attachments] == [
        ("Übersicht März.xlsx",
         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", sheet),
        ("notiz.txt", "text/plain", notes)]
    desk = make_desk(NOW)
    outcome = desk.receive(raw)
    [message] = desk.instance.ticket(outcome.ticket_number)["messages"]
    assert [a["filename"] for a in message["attachments"]] == ["Übersicht März.xlsx",
                                                                "notiz.txt"]


@pytest.mark.parametrize(("winmail", "why"), [
    (tnef(()), "holds no files"),
    (b"\x78\x9f\x3e\x22" + b"\x00" * 3, "holds no files"),
    (b"not tnef at all", "cannot be unpacked"),
], ids=["formatting-only", "truncated", "not-tnef"])
def test_a_winmail_dat_that_holds_no_files_is_kept_whole_with_a_note(make_desk, winmail, why):
    """Agents get the wrapper as it came and an event that says why it was not unpacked."""
    desk = make_desk(NOW)
    outcome = desk.receive(outlook_rich_text_mail(winmail))
    [message] = desk.instance.ticket(outcome.ticket_number)["messages"]
    [attachment] = message["attachments"]
    assert (attachment["filename"], attachment["size"]) == ("winmail.dat", len(winmail))
    [note] = desk.events(outcome.ticket_number, "attachment_note")
    assert note["data"]["filename"] == "winmail.dat" and why in note["data"]["note"]


# -- 7. not a mail -----------------------------------------------------------------------------

NOT_MAILS = {
    "pdf": REPORT,
    "zip": b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(range(200)),
    "headerless-text": b"Hallo Support,\nmein Drucker geht nicht: bitte helfen.\n",
    "random-bytes": bytes((i * 73 + 41) % 256 for i in range(3000)),
    "bare-mime-part": wire("Content-Type: text/plain; charset=utf-8", "", "nur ein Teil"),
}


@pytest.mark.parametrize("raw", NOT_MAILS.values(), ids=NOT_MAILS.keys())
def test_bytes_that_are_no_mail_are_refused_as_such(raw):
    """No header block, or none of the fields a mail has: "not an RFC 5322 message"."""
    with pytest.raises(ParseError, match="not an RFC 5322 message"):
        parse(raw)


@pytest.mark.parametrize("raw", [
    wire("From: cron@backup.kunde.example", "To: support@example.com",
         "Subject: Sicherung fehlgeschlagen", "", "rsync exit 23"),
    wire("Subject: nur ein Betreff", "", "Text"),
    wire("Received: from mx.kunde.example by mx.example.com; Tue, 24 Nov 2026 09:30:00 +0100",
         "From: kunde@kunde.example", "", "Text"),
], ids=["script-minimal", "subject-only", "mta-trace"])
def test_minimal_mails_from_scripts_are_still_mails(raw):
    """A mail with only From/To/Subject (a script), or one field a mail has, is read."""
    assert parse(raw).text


def test_no_mail_given_to_ingest_is_quarantined_not_filed(tmp_path):
    """`mailbot ingest` quarantines a binary file and headerless text (exit 0); no ticket."""
    bot = Instance(tmp_path)
    for name in ("pdf", "headerless-text"):
        (tmp_path / f"{name}.eml").write_bytes(NOT_MAILS[name])
    result = bot.cli("ingest", str(tmp_path / "pdf.eml"), str(tmp_path / "headerless-text.eml"))
    assert result.exit_code == 0
    assert bot.tickets() == []
    held = bot.cli_json("quarantine", "list")
    assert len(held) == 2 and all("not an RFC 5322 message" in h["error"] for h in held)


def test_no_mail_arriving_over_imap_goes_to_quarantine(tmp_path, dovecot: Dovecot,
                                                       imap_user: ImapAccount):
    """Random bytes in the INBOX move to the Quarantine folder; the real mail is filed."""
    bot = Instance.for_servers(tmp_path, imap=imap_user)
    mail = wire(*SCRIPT_MAIL)
    dovecot.append_many(imap_user.username, "INBOX", [NOT_MAILS["random-bytes"], mail])
    assert bot.cli("fetch").exit_code == 0
    assert [t["subject"] for t in bot.tickets()] == ["Drucker im Lager"]
    assert dovecot.message_count(imap_user.username, "Quarantine") == 1
    [held] = bot.cli_json("quarantine", "list")
    assert "not an RFC 5322 message" in held["error"] and held["source"] == "imap:support"


# -- 8. stable names and forwarded mails -----------------------------------------------------------

FORWARDED = wire("From: Lieferant GmbH <rechnung@lieferant.example>",
                 "To: jana.kurz@kunde.example", "Subject: Rechnung 4711",
                 "Date: Mon, 23 Nov 2026 16:05:00 +0100", "Message-ID: <r4711@lieferant.example>",
                 "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8",
                 "Content-Transfer-Encoding: 8bit", "",
                 b"Sehr geehrte Frau Kurz,",
                 "die Rechnung 4711 über 99 € ist fällig.".encode())
PIXEL = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
                         "/5+hHgAHggJ/PchI7wAAAABJRU5ErkJggg==")


def outlook_forward_with_screenshot() -> bytes:
    """Outlook "forward as attachment" (message/rfc822 without a name) with a pasted
    screenshot that has a Content-ID but no name (as old iOS and webmailers send them)."""
    image = base64.encodebytes(PIXEL).replace(b"\n", b"\r\n").rstrip()
    return wire("From: Jana Kurz <jana.kurz@kunde.example>", "To: support@example.com",
                "Subject: WG: Rechnung 4711", *OUTLOOK_HEAD,
                'Content-Type: multipart/mixed; boundary="_004_mixed_"', "",
                "--_004_mixed_", 'Content-Type: multipart/related; boundary="_003_rel_"', "",
                "--_003_rel_", "Content-Type: text/plain; charset=utf-8", "",
                "Diese Rechnung ist doch schon bezahlt, siehe Screenshot.", "",
                "--_003_rel_", "Content-Type: image/png", "Content-ID: <image001@01DB3E>",
                "Content-Transfer-Encoding: base64", "", image, "", "--_003_rel_--", "",
                "--_004_mixed_", "Content-Type: message/rfc822",
                "Content-Disposition: attachment", "", FORWARDED, "--_004_mixed_--")


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"], ids=["smtp-crlf", "mta-pipe-lf"])
def test_parts_without_a_name_are_named_by_type_and_position_the_same_every_time(line_end):
    """An unnamed screenshot and an unnamed forwarded mail get stable, telling names."""
    raw = outlook_forward_with_screenshot().replace(b"\r\n", line_end)
    first, again = parse(raw), parse(raw)
    names = [(a.filename, a.content_type) for a in first.attachments]
    assert names == [("image-1.png", "image/png"), ("forwarded-message-2.eml", "message/rfc822")]
    assert [a.filename for a in again.attachments] == [n for n, _ in names]
    assert first.attachments[0].payload == PIXEL
    # the forwarded mail as it was sent
    assert first.attachments[1].payload == FORWARDED.replace(b"\r\n", line_end)


def test_a_forwarded_mail_shows_with_its_own_sender_subject_and_date(make_desk):
    """The ticket shows the customer's words, then the forwarded mail as a block."""
    raw = outlook_forward_with_screenshot()
    msg = parse(raw)
    [forwarded] = msg.forwarded
    assert (forwarded.from_name, forwarded.from_addr, forwarded.subject) == (
        "Lieferant GmbH", "rechnung@lieferant.example", "Rechnung 4711")
    assert forwarded.date == datetime(2026, 11, 23, 15, 5, tzinfo=UTC)
    desk = make_desk(NOW)
    outcome = desk.receive(raw)
    [message] = desk.instance.ticket(outcome.ticket_number)["messages"]
    assert message["body"] == "\n".join([
        "Diese Rechnung ist doch schon bezahlt, siehe Screenshot.", "",
        FORWARDED_MARKER, "From: Lieferant GmbH <rechnung@lieferant.example>",
        "Date: Mon, 23 Nov 2026 16:05:00 +0100", "Subject: Rechnung 4711",
        "Attachment: forwarded-message-2.eml", "",
        "Sehr geehrte Frau Kurz,", "die Rechnung 4711 über 99 € ist fällig."])
    assert desk.ticket(outcome.ticket_number)["subject"] == "WG: Rechnung 4711"
