"""Seeded hostile mails for the fuzz test and the fuzz bench (issue 20).

Seed mails of several shapes (plain, HTML, multipart with attachments, a forwarded
message/rfc822, a DSN-like multipart/report, a reply to a ticket) are built with
:func:`mails.build_mail` and damaged by one to three mutators: byte flips, truncation,
duplicated and reordered headers, huge headers, encoded-word and RFC 2231 damage, boundary
games, deep nesting, charset names that break codecs, HTML pathologies, NUL bytes, line-end
games.  :func:`mutants` is deterministic for a seed: the same seed gives the same bytes.

The bench imports this module through ``sys.path`` (tests/ before bench/, whose mails.py
has the same name as ours).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache

from mails import build_mail

DATE = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
Mutator = Callable[[bytes, random.Random], tuple[bytes, str]]
# What a quarantine reason must never look like: an exception's class or a traceback.
NOT_A_SENTENCE = re.compile(r"\b\w*(Error|Exception|Defect)\b|Traceback|^\w+:")
BOUNDARY_RE = re.compile(rb'boundary="?([^";\r\n]+)"?', re.IGNORECASE)
GENERATED_BOUNDARY = re.compile(rb"=+\d+==")


def is_sentence(reason: str) -> bool:
    """Whether a quarantine reason reads as words for people, not as a Python error."""
    return bool(reason.strip()) and not NOT_A_SENTENCE.search(reason)


def _fixed_boundaries(raw: bytes) -> bytes:
    """The standard library picks random boundaries; number them so seeds are stable."""
    found: dict[bytes, bytes] = {}
    for token in GENERATED_BOUNDARY.findall(raw):
        found.setdefault(token, b"=_mb_%d" % len(found))
    for token, fixed in found.items():
        raw = raw.replace(token, fixed)
    return raw


def _forwarded(inner: bytes) -> bytes:
    return (b"From: Kunde <kunde@kunde.example>\r\nTo: support@example.com\r\n"
            b"Subject: Fwd: Drucker\r\nDate: Tue, 24 Nov 2026 10:00:00 +0100\r\n"
            b"Message-ID: <fwd.1@kunde.example>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/mixed; boundary="fwd"\r\n\r\n--fwd\r\n'
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nSiehe unten.\r\n--fwd\r\n"
            b"Content-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--fwd--\r\n")


def _report(inner: bytes) -> bytes:
    head = inner.split(b"\r\n\r\n", 1)[0]
    return (b"From: Mail Delivery System <MAILER-DAEMON@mx.kunde.example>\r\n"
            b"To: support@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Date: Tue, 24 Nov 2026 10:00:00 +0100\r\nMessage-ID: <dsn.1@mx.kunde.example>\r\n"
            b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/"
            b'report; report-type=delivery-status; boundary="dsn"\r\n\r\n--dsn\r\n'
            b"Content-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n--dsn\r\n"
            b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.kunde."
            b"example\r\n\r\nFinal-Recipient: rfc822; weg@kunde.example\r\nAction: failed\r\n"
            b"Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n\r\n--dsn\r\n"
            b"Content-Type: text/rfc822-headers\r\n\r\n" + head + b"\r\n\r\n--dsn--\r\n")


@cache
def seeds() -> dict[str, bytes]:
    """The undamaged mails, by shape."""
    plain = build_mail(date=DATE, message_id="seed.plain@kunde.example")
    html = build_mail(text=None, html="<p>Hallo <b>Welt</b>,<br>der Drucker &auml;chzt.</p>"
                      "<table><tr><td>A</td></tr></table>", transfer="base64", date=DATE,
                      message_id="seed.html@kunde.example")
    attached = build_mail(
        html="<p>Bericht anbei</p>", charset="iso-8859-1", date=DATE,
        message_id="seed.files@kunde.example", subject="Übersicht für März",
        attachments=(("Bericht.pdf", "application/pdf", b"%PDF-1.4 " * 60),
                     ("Übersicht.xlsx", "application/vnd.ms-excel", bytes(range(256)))))
    reply = build_mail(subject="Re: [Ticket#202611240001] Drucker", date=DATE,
                       message_id="seed.reply@kunde.example", in_reply_to="x@kunde.example",
                       references=("mb.202611240001.0a.0b@example.com",))
    shapes = {"plain": plain, "html": html, "attachments": attached, "reply": reply,
              "forwarded": _forwarded(plain), "report": _report(plain)}
    return {name: _fixed_boundaries(raw) for name, raw in shapes.items()}


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    """The top header lines (folded lines joined to their field) and the rest."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    fields: list[bytes] = []
    for line in head.split(b"\r\n"):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1] += b"\r\n" + line
        else:
            fields.append(line)
    return fields, sep + body


def flip_bytes(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Random bytes overwritten anywhere."""
    data, count = bytearray(raw), rng.randint(1, 20)
    for _ in range(count):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data), f"flip:{count}"


def truncate(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Cut off mid-way: in the headers, a base64 line or an open multipart."""
    at = rng.randrange(len(raw))
    return raw[:at], f"truncate:{at}"


def duplicate_header(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A header field written two to five times, the copies slightly different."""
    fields, rest = _split(raw)
    field = rng.choice(fields)
    copies = [field.replace(b"@", b"%d@" % i, 1) if i else field for i in range(rng.randint(2, 5))]
    at = fields.index(field)
    name = field.split(b":", 1)[0].decode("latin-1")[:30]
    return b"\r\n".join(fields[:at] + copies + fields[at + 1:]) + rest, f"duplicate:{name}"


def reorder_headers(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """The header fields in another order (MIME-Version after Content-Type, From last ...)."""
    fields, rest = _split(raw)
    rng.shuffle(fields)
    return b"\r\n".join(fields) + rest, "reorder"


def huge_header(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A long header: one line, many folds, many addresses or many parameters."""
    size = rng.choice((900, 5_000, 60_000, 140_000))
    kind = rng.choice(("line", "folds", "addresses", "references", "parameters"))
    value = {"line": b"A" * size, "folds": b" x\r\n" * (size // 4),
             "addresses": b", ".join(b"u%d@x.example" % i for i in range(size // 16)),
             "references": b" ".join(b"<r%d@x.example>" % i for i in range(size // 16)),
             "parameters": b"text/plain; " + b"; ".join(b"p%d=v" % i for i in range(size // 8))}
    name = {"addresses": b"To", "references": b"References",
            "parameters": b"Content-Type"}.get(kind, rng.choice((b"Subject", b"X-Huge", b"From")))
    return name + b": " + value[kind] + b"\r\n" + raw, f"huge:{name.decode()}:{kind}:{size}"


ENCODED_WORDS = (b"=?utf-8?b?!!!?=", b"=?x-bad?q?=ZZ?=", b"=?utf-8?q?=C3?=", b"=?utf-8?b?w6Q?=",
                 b"=?utf-8?x?abc?=", b"=?\xff?b?AA==?=", b"=?utf-8*de?q?a?= =?",
                 b"=?rot13?q?nop?=", b"=?utf-16?b?2D3cAA==?=", b"=?utf-7?q?+AOQ-?=",
                 b"=?iso-8859-1?q?" + b"=E4" * 3000 + b"?=", b"=?utf-8?q??=",
                 b"=?utf-8?b?" + b"w6Q" * 2000 + b"?=", b"=?=?=?=?", b"=?utf-8?q?a\x00b?=")


def encoded_word_damage(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Encoded words with bad base64, unknown charsets, broken quoted-printable."""
    word = rng.choice(ENCODED_WORDS)
    name = rng.choice((b"Subject", b"From", b"To", b"Cc", b"Reply-To"))
    fields, rest = _split(raw)
    fields = [f for f in fields if not f.lower().startswith(name.lower() + b":")]
    fields.insert(0, name + b": " + word + b" <x@" + word[:40] + b">")
    return b"\r\n".join(fields) + rest, f"encoded-word:{name.decode()}:{word[:24]!r}"


RFC2231 = (b"filename*=utf-8''%C3%28.pdf", b"filename*=x-bad''%E4.pdf", b"filename*=''",
           b"filename*0*=utf-8''%C3; filename*2=b.pdf", b"filename*=utf-8'de'%",
           b"filename*0=a; filename*0=b; filename*1*=%ZZ", b"filename*=\xff\xfe''x",
           b"filename*=utf-8''" + b"%E4" * 3000, b"filename*99999999999=x",
           b"filename*=rot13''nop.pdf", b'filename="\x00.pdf"', b"filename*=utf-16''%D8%00")


def rfc2231_damage(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """RFC 2231 parameters broken: bad charsets, missing or repeated sections, bad %-escapes."""
    param = rng.choice(RFC2231)
    part = (b"Content-Type: application/pdf; name*=utf-8''%FF\r\nContent-Disposition: "
            b"attachment; " + param + b"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n")
    match = BOUNDARY_RE.search(raw)
    label = f"rfc2231:{param[:30]!r}"
    if match is None:
        fields, rest = _split(raw)
        fields.append(b"Content-Disposition: attachment; " + param)
        return b"\r\n".join(fields) + rest, label
    close = b"--" + match.group(1) + b"--"
    return raw.replace(close, b"--" + match.group(1) + b"\r\n" + part + close, 1), label


def boundary_games(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Boundaries that do not match, are missing, empty, huge, or a prefix of the text."""
    game = rng.choice(("rename", "drop-close", "garble", "empty", "prefix", "huge", "twice",
                       "declare"))
    match = BOUNDARY_RE.search(raw)
    if match is None or game == "declare":
        return raw.replace(b"\r\n\r\n", b'\r\nContent-Type: multipart/mixed; boundary="'
                           b'x"\r\n\r\n--x\r\n--x\r\n', 1), "boundary:declare"
    param, boundary = match.group(0), match.group(1)
    changed = {
        "rename": lambda: raw.replace(b"--" + boundary, b"--" + boundary[::-1], 2),
        "drop-close": lambda: raw.replace(b"--" + boundary + b"--", b""),
        "garble": lambda: raw.replace(param, b'boundary="\x00;;', 1),
        "empty": lambda: raw.replace(param, b'boundary=""', 1),
        "prefix": lambda: raw.replace(param, b'boundary="' + boundary[:2] + b'"', 1),
        "huge": lambda: raw.replace(boundary, boundary * 500),
        "twice": lambda: raw.replace(param, param + b"; " + param.replace(boundary, b"b2"), 1),
    }[game]()
    return changed, f"boundary:{game}"


def deep_nesting(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """The mail wrapped in many levels of multipart or message/rfc822."""
    depth, kind = rng.choice((5, 11, 13, 40, 300, 2000)), rng.choice(("multipart", "rfc822"))
    fields, rest = _split(raw)
    top = b"\r\n".join(f for f in fields if not f.lower().startswith(b"content-"))
    content = b"\r\n".join(f for f in fields if f.lower().startswith(b"content-"))
    if kind == "multipart":
        inner = b"".join(b'Content-Type: multipart/mixed; boundary="n%d"\r\n\r\n--n%d\r\n'
                         % (i, i) for i in range(depth))
    else:
        inner = b"Content-Type: message/rfc822\r\n\r\nFrom: x@y.example\r\n" * depth
    return top + b"\r\n" + inner + content + rest, f"nesting:{kind}:{depth}"


CHARSETS = (b"x-unknown-42", b"utf-16", b"utf-32", b"utf-7", b"iso-2022-jp", b"", b"ascii",
            b"utf-8\x00", b"\xff\xfe", b"rot13", b"base64", b"hex", b"zlib", b"bz2", b"uu",
            b"quopri", b"punycode", b"idna", b"unicode_escape", b"raw_unicode_escape", b"mbcs",
            b"cp65001", b"utf-8-sig", b"undefined", b"../../etc/passwd", b"a" * 3000,
            b"us-ascii; charset=utf-8", b"\"", b"utf_8_sig\t", b"koi8-u", b"big5hkscs")


def bad_charset(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Charset names that are wrong for the bytes, unknown, or name a codec that is no text
    codec (rot13, base64, zlib ...) or one that throws on any input (undefined)."""
    name = rng.choice(CHARSETS)
    changed, count = re.subn(rb'charset="?[\w-]+"?', lambda _: b'charset="' + name + b'"', raw,
                             flags=re.IGNORECASE)
    if not count:
        changed = b"Content-Type: text/plain; charset=\"" + name + b"\"\r\n" + raw
    return changed, f"charset:{name[:24]!r}"


HTML = (b"<div>" * 50_000, b"<table><tr><td>" * 5_000, b"<!--" + b"x" * 20_000,
        b"<![CDATA[" + b"]" * 10_000, b"&#" + b"9" * 5000 + b";", b"&" * 50_000,
        b"<script>" + b"while(1){}" * 5000, b'<a href="' + b"x" * 100_000,
        b"<p " + b"a=b " * 20_000 + b">", b"<" * 50_000, b"<style>" + b"{" * 20_000,
        b"<ul>" + b"<li>eins" * 20_000, b"\x00<b>\x00</b>" * 1000,
        b"<svg><foreignObject><math><mi><mglyph>" * 500, b"<pre>" + b" " * 200_000 + b"</pre>",
        b"&#x110000;&#xD800;&#0;&nbsp" * 1000)


def html_pathology(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """An HTML body that is deep, unclosed, huge in one token or full of odd references."""
    body = rng.choice(HTML)
    fields, _ = _split(raw)
    top = b"\r\n".join(f for f in fields if not f.lower().startswith((b"content-", b"mime-")))
    return (top + b"\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n",
            f"html:{body[:20]!r}x{len(body)}")


def insert_nuls(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """NUL bytes in headers or body."""
    at = rng.randrange(len(raw) + 1)
    return raw[:at] + b"\x00" * rng.randint(1, 50) + raw[at:], f"nul:{at}"


def line_ends(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Bare LF, bare CR, or a mix of line ends."""
    game = rng.choice(("lf", "cr", "mixed", "crcrlf"))
    if game == "mixed":
        return raw.replace(b"\r\n", b"\n", rng.randint(1, 20)), "lines:mixed"
    return raw.replace(b"\r\n", {"lf": b"\n", "cr": b"\r", "crcrlf": b"\r\r\n"}[game]), \
        f"lines:{game}"


def random_insert(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Random bytes spliced in anywhere."""
    at, size = rng.randrange(len(raw) + 1), rng.randint(1, 200)
    return raw[:at] + rng.randbytes(size) + raw[at:], f"insert:{size}@{at}"


def header_damage(raw: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Dates no calendar knows, no From or an empty one, header names with odd bytes."""
    damage = rng.choice((b"Date: Mon, 32 Foo 99999 25:61:61 +9999", b"Date: \xff\xfe",
                         b"Date: Tue, 24 Nov 2026 10:00:00 +2500", b"From:", b"From: <>",
                         b"From: @@@", b"From: \"unclosed <a@b.example>", b"X\x00Y: z",
                         b": no name", b"Message-ID: <>", b"Message-ID: " + b"<" * 5000,
                         b"In-Reply-To: <a@b> <c@d> " * 300, b"Content-Type: /",
                         b"Content-Transfer-Encoding: base64\r\nContent-Type: multipart/x"))
    name = damage.split(b":", 1)[0].lower()
    fields, rest = _split(raw)
    if name.isalpha() or name in (b"message-id", b"in-reply-to", b"content-type"):
        fields = [f for f in fields if not f.lower().startswith(name + b":")]
    return b"\r\n".join([damage, *fields]) + rest, f"header:{damage[:24]!r}"


MUTATORS: tuple[Mutator, ...] = (
    flip_bytes, truncate, duplicate_header, reorder_headers, huge_header, encoded_word_damage,
    rfc2231_damage, boundary_games, deep_nesting, bad_charset, html_pathology, insert_nuls,
    line_ends, random_insert, header_damage)


def mutants(seed: int, n: int) -> Iterator[tuple[str, bytes]]:
    """``n`` damaged mails as ``(description, raw bytes)``, the same ones for the same seed.

    Most carry a Message-ID of their own, so they run the whole pipeline instead of being
    skipped as copies; one in ten keeps its seed's Message-ID (a damaged re-delivery).
    """
    rng = random.Random(seed)
    shapes = seeds()
    names = sorted(shapes)
    for number in range(n):
        shape = rng.choice(names)
        raw, done = shapes[shape], [shape]
        if rng.random() < 0.9:
            raw = re.sub(rb"(?im)^Message-ID:.*\r?\n", b"", raw, count=1)
            raw = b"Message-ID: <fuzz.%d.%d@kunde.example>\r\n" % (seed, number) + raw
        for mutator in rng.sample(MUTATORS, rng.choice((1, 1, 2, 3))):
            if raw:
                raw, what = mutator(raw, rng)
                done.append(what)
        yield " + ".join(done), raw
