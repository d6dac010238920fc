"""Deterministic, realistic inbound support mails for mailbot's benchmarks.

German and English, plain text / HTML-only / multipart-alternative / with attachments (small
PDFs and PNGs of random bytes), in UTF-8, ISO-8859-1, ISO-8859-15 and Windows-1252, with
8bit, quoted-printable and base64 bodies and encoded-word (Q and B) headers.  Every mail has
its own Message-ID; senders are distinct, some write more than once (at most
``MAX_PER_SENDER`` times, below mailbot's default acknowledgement rate limit of 5 an hour).

    python bench/mails.py --n 2000 --out /tmp/mails      # writes 00000.eml ...
    from mails import generate; raws = generate(2000, seed=1)
"""

from __future__ import annotations

import argparse
import base64
import quopri
import random
import sys
import urllib.parse
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path

SUPPORT = "support@example.com"
MAX_PER_SENDER = 3

FIRST_DE = ["Jürgen", "Müller", "Sören", "Björn", "Käthe", "Günther", "Anja", "Uwe", "Jörg",
            "Heike", "Ralf", "Birgit", "Maximilian", "Lea", "Jan", "Sabine", "Dörte", "Till",
            "Ute", "Frank", "Özlem", "Matthias", "Grete", "Lukas", "Hannelore"]
LAST_DE = ["Müller", "Schäfer", "Weiß", "Groß", "Köhler", "Böhm", "Krüger", "Schröder",
           "Hoffmann", "Wagner", "Becker", "Jäger", "Fuß", "Meißner", "Schulz", "Keßler",
           "Lange", "Vogel", "Braun", "Zimmermann"]
FIRST_EN = ["John", "Mary", "Peter", "Linda", "James", "Susan", "Robert", "Karen", "David",
            "Emily", "Chloé", "Zoë", "Michael", "Sarah", "Thomas", "Olivia", "Daniel", "Grace"]
LAST_EN = ["Smith", "Johnson", "Brown", "Taylor", "Wilson", "Davies", "Evans", "Thomas",
           "Roberts", "Walker", "O'Brien", "Clarke", "Hughes", "Green", "Hall", "Wood"]
COMPANIES_DE = ["stadtwerke-nord", "baeckerei-schmidt", "autohaus-koenig", "praxis-dr-weber",
                "ingenieurbuero-lang", "moebel-fischer", "kanzlei-hartmann", "logistik-sued",
                "druckerei-meyer", "getraenke-wolf", "hausverwaltung-berg", "elektro-schulze"]
COMPANIES_EN = ["acme-corp", "northwind", "globex", "initech", "umbrella-labs", "hooli",
                "stark-industries", "wayne-enterprises", "cyberdyne", "tyrell"]
TLDS_DE = ["de", "de", "de", "at", "ch", "com"]
TLDS_EN = ["com", "co.uk", "io", "net", "org"]
FREEMAIL = ["gmx.de", "web.de", "t-online.de", "gmail.com", "outlook.com", "posteo.de"]

PRODUCTS = ["Warenwirtschaft", "Kassensystem", "Webshop", "Terminplaner", "Rechnungsmodul",
            "VPN-Zugang", "Druckerserver", "Zeiterfassung", "Lohnbuchhaltung", "CRM"]
PRODUCTS_EN = ["inventory system", "point of sale", "web shop", "scheduler", "billing module",
               "VPN access", "print server", "time tracking", "payroll", "CRM"]

SUBJECTS_DE = [
    "Fehler beim Öffnen von {p}",
    "{p} startet nicht mehr – dringend!",
    "Frage zur Rechnung Nr. {n}",
    "Zugang gesperrt, Passwort zurücksetzen",
    "Änderung unserer Lieferadresse",
    "{p}: Datenübernahme schlägt fehl",
    "Drucker im Büro Süd druckt keine Etiketten",
    "Störung seit heute früh ({p})",
    "Bitte um Rückruf wegen {p}",
    "Größenbeschränkung beim Hochladen",
    "Lizenzverlängerung für {p}",
    "Fehlermeldung „Verbindung getrennt“ in {p}",
]
SUBJECTS_EN = [
    "Error when opening the {p}",
    "{p} does not start anymore",
    "Question about invoice #{n}",
    "Locked out – please reset my password",
    "Change of billing address",
    "{p}: data import fails",
    "Printer in the south office prints blank labels",
    "Outage since this morning ({p})",
    "Please call me back about the {p}",
    "Upload size limit",
    "Licence renewal for the {p}",
    "Error message “connection lost” in the {p}",
]
PARAS_DE = [
    "seit dem letzten Update lässt sich das {p} nicht mehr öffnen. Beim Start erscheint "
    "die Meldung „Datenbank nicht erreichbar“ und das Programm schließt sich sofort.",
    "wir haben das Problem auf drei Arbeitsplätzen nachgestellt; auf dem Rechner im "
    "Empfang funktioniert es merkwürdigerweise noch. Ein Neustart hat nichts geändert.",
    "könnten Sie uns bitte kurzfristig zurückrufen? Unsere Buchhaltung kann so keine "
    "Rechnungen schreiben, und Monatsende steht vor der Tür.",
    "im Anhang finden Sie einen Screenshot der Fehlermeldung sowie das Protokoll von "
    "heute Vormittag. Die Größe der Datei beträgt etwa 2 MB.",
    "unsere Kundennummer lautet {n}. Der Wartungsvertrag läuft noch bis Ende des Jahres, "
    "soweit ich weiß.",
    "außerdem möchten wir wissen, ob die Schnittstelle zu DATEV im nächsten Release "
    "enthalten sein wird. Das wäre für uns äußerst wichtig.",
    "Die Preise von 1.250,00 € netto pro Jahr sind für uns in Ordnung; bitte schicken "
    "Sie uns ein Angebot über fünf zusätzliche Lizenzen.",
    "Ich habe bereits versucht, den Cache zu leeren und mich neu anzumelden – leider "
    "ohne Erfolg. Grüße aus Düsseldorf, wo es heute regnet.",
]
PARAS_EN = [
    "since the last update the {p} won't open anymore. At startup it says “database not "
    "reachable” and closes immediately.",
    "we reproduced the problem on three workstations; the machine at the front desk "
    "strangely still works. A restart did not help.",
    "could you please call us back soon? Our accounts team cannot issue invoices like "
    "this, and the month end is coming.",
    "attached you'll find a screenshot of the error and this morning's log file.",
    "our customer number is {n}. As far as I know the maintenance contract runs until "
    "the end of the year.",
    "we'd also like to know whether the DATEV interface will be in the next release. "
    "That's quite important for us — it costs us about €200 a week otherwise.",
    "I already tried clearing the cache and logging in again, no luck. Regards from "
    "Manchester, where it's raining as usual.",
]
GREETING_DE = ["Sehr geehrte Damen und Herren,", "Hallo zusammen,", "Guten Tag,",
               "Liebes Support-Team,", "Moin,"]
GREETING_EN = ["Dear support team,", "Hello,", "Hi there,", "Good morning,"]
CLOSING_DE = ["Mit freundlichen Grüßen", "Viele Grüße", "Beste Grüße", "MfG"]
CLOSING_EN = ["Kind regards", "Best regards", "Thanks,", "Cheers"]
MAILERS = ["Microsoft Outlook 16.0", "Mozilla Thunderbird 115.5.0", "Apple Mail (2.3731)",
           "Roundcube Webmail/1.6.5", "GMX FreeMail", "K-9 Mail for Android"]
# Charsets by language; the English ones are mostly UTF-8 like real mail.
CHARSETS_DE = ["utf-8"] * 5 + ["iso-8859-1"] * 2 + ["iso-8859-15"] * 2 + ["windows-1252"] * 2
CHARSETS_EN = ["utf-8"] * 6 + ["windows-1252", "iso-8859-1"]
ENCODINGS = ["quoted-printable"] * 4 + ["base64"] * 3 + ["8bit"] * 3
KINDS = ["plain"] * 55 + ["html"] * 15 + ["alternative"] * 15 + ["attachment"] * 15


@dataclass(frozen=True)
class Sender:
    name: str
    address: str
    language: str


def _slug(text: str) -> str:
    table = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "ë": "e",
                           "Ä": "ae", "Ö": "oe", "Ü": "ue", "'": ""})
    return text.translate(table).lower().replace(" ", "")


def _senders(rng: random.Random, count: int, salt: str) -> list[Sender]:
    result, seen = [], set()
    while len(result) < count:
        lang = "de" if rng.random() < 0.65 else "en"
        first = rng.choice(FIRST_DE if lang == "de" else FIRST_EN)
        last = rng.choice(LAST_DE if lang == "de" else LAST_EN)
        if rng.random() < 0.25:
            domain = rng.choice(FREEMAIL)
        else:
            company = rng.choice(COMPANIES_DE if lang == "de" else COMPANIES_EN)
            domain = f"{company}.{rng.choice(TLDS_DE if lang == 'de' else TLDS_EN)}"
        local = rng.choice([f"{_slug(first)}.{_slug(last)}", f"{_slug(first)[0]}.{_slug(last)}",
                            f"{_slug(last)}{rng.randint(1, 99)}"])
        address = f"{local}.{salt}{len(result)}@{domain}" if salt else f"{local}@{domain}"
        if address in seen:
            continue
        seen.add(address)
        result.append(Sender(f"{first} {last}", address, lang))
    return result


def _encode_text(text: str, charset: str, cte: str) -> bytes:
    data = text.replace("\n", "\r\n").encode(charset, "replace")
    if cte == "base64":
        return base64.encodebytes(data).replace(b"\n", b"\r\n")
    if cte == "quoted-printable":
        return quopri.encodestring(data).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return data


def _text_part(text: str, subtype: str, charset: str, cte: str) -> bytes:
    if all(ord(c) < 128 for c in text):
        cte = "7bit" if cte == "8bit" else cte
    head = (f"Content-Type: text/{subtype}; charset=\"{charset}\"\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode("ascii")
    return head + _encode_text(text, charset, cte)


def _binary_part(filename: str, content_type: str, payload: bytes, rng: random.Random) -> bytes:
    style = rng.random()
    if all(ord(c) < 128 for c in filename):
        disp = f'attachment; filename="{filename}"'
        ctype = f'{content_type}; name="{filename}"'
    elif style < 0.5:  # RFC 2231, as Thunderbird does
        quoted = urllib.parse.quote(filename.encode("utf-8"))
        disp = f"attachment;\r\n filename*=utf-8''{quoted}"
        ctype = content_type
    else:  # encoded-word in a quoted string, as Outlook does
        word = Header(filename, "utf-8").encode()
        disp = f'attachment;\r\n filename="{word}"'
        ctype = f'{content_type};\r\n name="{word}"'
    head = (f"Content-Type: {ctype}\r\nContent-Transfer-Encoding: base64\r\n"
            f"Content-Disposition: {disp}\r\n\r\n").encode("ascii")
    return head + base64.encodebytes(payload).replace(b"\n", b"\r\n")


def _multipart(subtype: str, parts: list[bytes], boundary: str) -> bytes:
    head = (f"Content-Type: multipart/{subtype};\r\n boundary=\"{boundary}\"\r\n\r\n"
            "This is a multi-part message in MIME format.\r\n").encode("ascii")
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts)
    return head + body + b"--" + boundary.encode() + b"--\r\n"


def _header_text(value: str, charset: str, rng: random.Random) -> str:
    if all(ord(c) < 128 for c in value):
        return value
    enc_charset = charset if _encodable(value, charset) else "utf-8"
    return Header(value, enc_charset).encode()  # Q for latin-1 family, B for utf-8


def _encodable(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


def _html(paragraphs: list[str], lang: str) -> str:
    import html as html_mod

    body = "".join(f"<p>{html_mod.escape(p).replace(chr(10), '<br>')}</p>\n" for p in paragraphs)
    table = ("<table border=\"1\"><tr><th>Feld</th><th>Wert</th></tr>"
             "<tr><td>Version</td><td>4.2.1</td></tr><tr><td>Größe</td><td>12 MB</td></tr>"
             "</table>" if lang == "de" else
             "<table border=\"1\"><tr><th>Field</th><th>Value</th></tr>"
             "<tr><td>Version</td><td>4.2.1</td></tr></table>")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><style>p{margin:0 0 1em}"
            "</style></head><body style=\"font-family:Calibri,sans-serif\">\n"
            f"{body}{table}\n<div class=\"sig\"><img src=\"cid:logo\" alt=\"logo\"></div>"
            "</body></html>\n")


def _pdf(rng: random.Random) -> bytes:
    size = rng.randint(3_000, 40_000)
    return (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\nstream\n"
            + rng.randbytes(size) + b"\nendstream\n%%EOF\n")


def _png(rng: random.Random) -> bytes:
    size = rng.randint(2_000, 25_000)
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + rng.randbytes(size)


def _attachments(rng: random.Random, lang: str) -> list[tuple[str, str, bytes]]:
    names_pdf = (["Rechnung_März.pdf", "Fehlerprotokoll.pdf", "Auftragsbestätigung 2024.pdf",
                  "Lieferschein.pdf"] if lang == "de" else
                 ["invoice.pdf", "error-log.pdf", "order confirmation.pdf"])
    names_png = (["Bildschirmfoto 2024-03-05 um 10.15.32.png", "fehler.png",
                  "Screenshot_Übersicht.png"] if lang == "de" else
                 ["screenshot.png", "error dialog.png", "Capture d’écran.png"])
    result = []
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        if rng.random() < 0.5:
            result.append((rng.choice(names_pdf), "application/pdf", _pdf(rng)))
        else:
            result.append((rng.choice(names_png), "image/png", _png(rng)))
    return result


def _texts(rng: random.Random, sender: Sender, index: int) -> tuple[str, list[str]]:
    de = sender.language == "de"
    product = rng.choice(PRODUCTS if de else PRODUCTS_EN)
    number = f"{rng.randint(10000, 99999)}"
    subject = rng.choice(SUBJECTS_DE if de else SUBJECTS_EN).format(p=product, n=number)
    if rng.random() < 0.1:
        subject = ("AW: " if de else "Re: ") + subject
    paragraphs = [rng.choice(GREETING_DE if de else GREETING_EN)]
    paragraphs += [p.format(p=product, n=number)
                   for p in rng.sample(PARAS_DE if de else PARAS_EN, rng.randint(1, 4))]
    paragraphs.append(f"{rng.choice(CLOSING_DE if de else CLOSING_EN)}\n{sender.name}\n"
                      f"Tel. +49 {rng.randint(30, 999)} {rng.randint(100000, 9999999)}")
    if rng.random() < 0.2:  # a quoted earlier mail under the text
        when = "Am 04.03.2024 um 09:12 schrieb Support:" if de else \
            "On Mon, 4 Mar 2024 at 09:12, Support wrote:"
        paragraphs.append(when + "\n> " + "\n> ".join(rng.choice(PARAS_DE if de else PARAS_EN)
                                                         .format(p=product, n=number)
                                                         .split(". ")))
    return subject, paragraphs


def build_mail(rng: random.Random, sender: Sender, index: int, msgid: str,
               when: datetime) -> bytes:
    """One complete raw mail (CRLF line ends)."""
    de = sender.language == "de"
    charset = rng.choice(CHARSETS_DE if de else CHARSETS_EN)
    cte = rng.choice(ENCODINGS)
    kind = rng.choice(KINDS)
    subject, paragraphs = _texts(rng, sender, index)
    if not _encodable("\n".join(paragraphs) + subject, charset):
        charset = "utf-8"  # e.g. “quotes” or € in ISO-8859-1
    text = "\n\n".join(paragraphs) + "\n"
    if kind == "plain":
        body = _text_part(text, "plain", charset, cte)
    elif kind == "html":
        body = _text_part(_html(paragraphs, sender.language), "html", "utf-8", cte)
    elif kind == "alternative":
        body = _multipart("alternative", [
            _text_part(text, "plain", charset, cte),
            _text_part(_html(paragraphs, sender.language), "html", "utf-8", "quoted-printable"),
        ], f"----=_Alt_{index:05d}_{rng.getrandbits(48):012x}")
    else:
        parts = [_text_part(text, "plain", charset, cte)]
        parts += [_binary_part(n, t, p, rng) for n, t, p in _attachments(rng, sender.language)]
        body = _multipart("mixed", parts, f"----=_Part_{index:05d}_{rng.getrandbits(48):012x}")
    name = sender.name
    from_value = (formataddr((name, sender.address), charset="utf-8")
                  if not _encodable(name, "ascii") and rng.random() < 0.85
                  else formataddr((name, sender.address)))
    headers = [
        f"Return-Path: <{sender.address}>",
        f"Received: from mail.{sender.address.rpartition('@')[2]} (mail [192.0.2.{index % 250}])"
        f"\r\n\tby mx.example.com with ESMTPS id {rng.getrandbits(40):010x}"
        f"\r\n\tfor <{SUPPORT}>; {format_datetime(when)}",
        f"From: {from_value}",
        f"To: Support <{SUPPORT}>" if rng.random() < 0.8 else f"To: {SUPPORT}",
    ]
    if rng.random() < 0.15:
        headers.append(f"Cc: =?utf-8?q?Kollege?= <kollege{index}@"
                       f"{sender.address.rpartition('@')[2]}>")
    headers += [
        f"Subject: {_header_text(subject, charset, rng)}",
        f"Date: {format_datetime(when)}",
        f"Message-ID: <{msgid}>",
        "MIME-Version: 1.0",
        f"X-Mailer: {rng.choice(MAILERS)}",
        f"Content-Language: {'de-DE' if de else 'en-GB'}",
    ]
    if isinstance(body, bytes) and not body.startswith(b"Content-Type"):
        raise AssertionError("body must start with its own Content-Type header")
    if "\u00e4" in sender.name and rng.random() < 0.03:
        # some broken mailers send raw 8-bit UTF-8 in headers
        headers[2] = f"From: {name} <{sender.address}>"
    raw_headers = "\r\n".join(headers).encode("utf-8") + b"\r\n"
    return raw_headers + body


def generate(n: int = 2000, seed: int = 1, tag: str = "") -> list[bytes]:
    """``n`` distinct mails, the same for the same ``seed`` and ``tag``.

    ``tag`` goes into every Message-ID and sender address, so mail sets generated with
    different tags never share a Message-ID or a sender.
    """
    rng = random.Random(f"mailbot-bench-{seed}-{tag}")
    distinct = max(1, int(n * 0.7))
    senders = _senders(rng, distinct, tag)
    # Every sender writes once, some two or three times (never more than MAX_PER_SENDER).
    order = list(senders)
    while len(order) < n:
        extra = rng.choice(senders)
        if order.count(extra) < MAX_PER_SENDER:
            order.append(extra)
    rng.shuffle(order)
    start = datetime(2024, 3, 4, 7, 30, tzinfo=UTC)
    mails = []
    for index, sender in enumerate(order[:n]):
        domain = rng.choice(["mail.gmx.net", "outlook.com", "mx.web.de", "mail.gmail.com",
                             sender.address.rpartition("@")[2]])
        msgid = f"bench{tag or ''}.{seed}.{index:06d}.{rng.getrandbits(64):016x}@{domain}"
        when = start + timedelta(seconds=index * 37 + rng.randint(0, 30))
        mails.append(build_mail(rng, sender, index, msgid, when))
    return mails


def message_id(raw: bytes) -> str:
    """The Message-ID (without brackets) of a mail made by :func:`generate`."""
    start = raw.index(b"\r\nMessage-ID: <") + len(b"\r\nMessage-ID: <")
    return raw[start:raw.index(b">", start)].decode("ascii")


def write(directory: Path, mails: list[bytes]) -> list[Path]:
    """Write each mail to ``directory/NNNNN.eml``; the paths in order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, raw in enumerate(mails):
        path = directory / f"{index:05d}.eml"
        path.write_bytes(raw)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="number of mails (default 2000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="directory for the .eml files")
    args = parser.parse_args(argv)
    mails = generate(args.n, args.seed)
    write(args.out, mails)
    total = sum(len(m) for m in mails)
    print(f"wrote {len(mails)} mails ({total / 1e6:.1f} MB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
