"""Header values as their writers meant them: unfolded, encoded-words and raw 8-bit
bytes decoded, addresses read and normalised (:func:`normalise_address`)."""

from __future__ import annotations

import binascii
import email
import email.errors
import email.message
import email.policy
import email.utils
import itertools
import re
import unicodedata
from datetime import UTC, datetime
from email.utils import getaddresses

import idna

from mailbot.reading.charsets import read_bytes, try_decode

Part = email.message.Message


_MSGID_RE = re.compile(r"<([^<>\s]+)>")


def message_ids(value: str) -> tuple[str, ...]:
    """Message-IDs in a header value, without angle brackets, in order."""
    return tuple(dict.fromkeys(_MSGID_RE.findall(value or "")))


def base_address(address: str) -> str:
    """An address without its +tag, lower-case: support+t1-ab@x -> support@x."""
    local, _, domain = address.lower().partition("@")
    return f"{local.partition('+')[0]}@{domain}"


def normalise_address(address: str) -> str:
    """An address as mailbot stores and compares it, wherever it comes from (a mail, an import).

    "Jana Kurz <Jana.Kurz@Kunde.EXAMPLE> (work)" -> "jana.kurz@kunde.example": the display
    name, angle brackets and comments go, the whole address is lower-case (as mailbot always
    compared addresses), Unicode in NFC, and an internationalised domain is written in its
    ASCII (IDNA) form, which every relay can deliver to: "jana@müller.example" and
    "jana@xn--mller-kva.example" are one address.  An address with broken quoting is kept
    as written (lower-case), never repaired into another one.
    """
    address = unicodedata.normalize("NFC", address).strip()
    if _balanced(address) and any(c in address for c in "<>()"):
        found = [a for _, a in getaddresses([address]) if a]
        address = found[0] if len(found) == 1 else address
    local, at, domain = address.rpartition("@")
    if not at:
        return address.lower()
    return f"{local.lower()}@{normalise_domain(domain)}"


def normalise_domain(domain: str) -> str:
    """A mail domain as mailbot stores and compares it: lower-case ASCII, IDNA for Unicode."""
    domain = unicodedata.normalize("NFC", domain).strip().rstrip(".")
    if domain.isascii():
        return domain.lower()
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return domain.lower()


# -- headers: encoded-words, raw 8-bit bytes, addresses --------------------------------------------

_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK_RE = re.compile(r"[\r\n]+")
# Bytes the parser could not read as ASCII (surrogate-escaped), one run at a time.
_RAW_BYTES_RE = re.compile(r"[\udc80-\udcff]+")


def decode_header_value(value: str, hint: str = "") -> str:
    """A header value as its writer meant it: unfolded, encoded-words decoded, raw 8-bit
    bytes (surrogate-escaped, as the parser gives them) read as text (:func:`raw_text`).

    Whitespace between adjacent encoded-words is dropped (RFC 2047 6.2), and adjacent
    words in one charset are decoded together: a character split across two of them (as
    some webmailers write) comes out whole.
    """
    value = unfold(value)
    if "=?" not in value:  # no encoded-word: most header values
        return raw_text(value, hint)
    out: list[str] = []
    words: list[tuple[str, bytes]] = []
    pos = 0
    for found in _ENCODED_WORD_RE.finditer(value):
        word = _encoded_word(found)
        if word is None:  # not decodable: stays as it is written
            continue
        between = value[pos:found.start()]
        if between and not (words and between.isspace()):
            out += [_words(words, hint), raw_text(between, hint)]
            words = []
        words.append(word)
        pos = found.end()
    out += [_words(words, hint), raw_text(value[pos:], hint)]
    return "".join(out)


def _encoded_word(found: re.Match[str]) -> tuple[str, bytes] | None:
    """The charset and bytes of one encoded-word (RFC 2231 language dropped), or None."""
    charset = found.group(1).partition("*")[0]
    data = found.group(3).encode("utf-8", "surrogateescape")
    if found.group(2) in "qQ":
        return charset, binascii.a2b_qp(data, header=True)
    try:
        return charset, binascii.a2b_base64(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return None


def _words(words: list[tuple[str, bytes]], hint: str) -> str:
    """Adjacent encoded-words as text, the bytes of each run in one charset decoded together."""
    return "".join(read_bytes(b"".join(data for _, data in run), [charset, "utf-8", hint])[0]
                   for charset, run in itertools.groupby(words, key=lambda w: w[0].lower()))


def raw_text(value: str, hint: str) -> str:
    """A header value with its raw 8-bit bytes read as text: UTF-8, else in ``hint`` (the
    charset the mail's text was in: old mail programs write both in theirs), else as
    Windows-1252 (short header text defeats charset detection)."""
    if value.isascii():
        return value
    whole = try_decode(value.encode("utf-8", "surrogateescape"), "utf-8")
    if whole is not None:
        return whole
    return _RAW_BYTES_RE.sub(
        lambda run: read_bytes(run.group().encode("utf-8", "surrogateescape"),
                                ["utf-8", hint])[0], value)


def unfold(value: str) -> str:
    if "\n" not in value and "\r" not in value:  # one line: nothing to unfold
        return value
    return _LINE_BREAK_RE.sub(" ", _FOLD_RE.sub("", value))


def decoded_headers(part: Part, hint: str) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), decode_header_value(str(v), hint)) for k, v in part.raw_items())


def raw_header(part: Part, name: str) -> str:
    """The first value of header ``name`` as written (encoded-words and raw bytes kept)."""
    return next((str(v) for k, v in part.raw_items() if k.lower() == name), "")


def first_value(headers: tuple[tuple[str, str], ...], name: str) -> str:
    return next((v for k, v in headers if k == name), "")


def one_line(text: str) -> str:
    return " ".join(text.split())


# The one mailbox most address headers hold, in the shapes the stdlib's address parser reads
# as they are: "Name <local@domain>" (a name of plain words, encoded-words too) or a bare
# "local@domain".  Anything else (quotes, comments, groups, lists) goes to that parser.
_PLAIN_MAILBOX_RE = re.compile(
    r"[ \t]*(?:(?P<name>[^\s()<>@,:;\"\[\]\\]+(?:[ \t]+[^\s()<>@,:;\"\[\]\\]+)*)[ \t]*)?"
    r"<(?P<angle>[\w!#$%&'*+/=?^`{|}~.-]+@[A-Za-z0-9.-]+)>[ \t]*"
    r"|[ \t]*(?P<bare>[\w!#$%&'*+/=?^`{|}~.-]+@[A-Za-z0-9.-]+)[ \t]*", re.ASCII)


def _plain_mailbox(text: str, hint: str) -> tuple[str, str] | None:
    """Name and address of a value that is one plain mailbox (see above), else None."""
    found = _PLAIN_MAILBOX_RE.fullmatch(text)
    if found is None:
        return None
    name = found.group("name") or ""
    return (one_line(decode_header_value(name, hint)) if name else "",
            found.group("angle") or found.group("bare"))


def _address_pairs(value: str, hint: str) -> list[tuple[str, str]]:
    """The (name, address) pairs of an address header value.

    The structure is read first, then the names are decoded: an encoded-word that holds a
    comma ("Müller, Bernd") stays one name.  A name with a comma written without quotes
    ("Müller, Bernd <b@x>", as sloppy mailers do) is put back together.
    """
    text = raw_text(unfold(value), hint)
    plain = _plain_mailbox(text, hint)
    if plain is not None:
        return [plain]
    out: list[tuple[str, str]] = []
    for name, address in getaddresses([text]):
        name = one_line(decode_header_value(name, hint))
        if out and name and not out[-1][0] and out[-1][1] and "@" not in out[-1][1]:
            name = f"{out.pop()[1]}, {name}"
        out.append((name, address))
    return out


def name_and_address(value: str, hint: str) -> tuple[str, str]:
    """Name and address of a From header value.

    An address nobody can deliver to (no domain as in "root", control characters) is kept
    as written, and so is the whole value when its quoting is broken: the ticket shows what
    came, and the guards refuse to answer it.  Words without an address ("Kunde ohne
    Adresse") are a name.  The first mailbox with an address counts.
    """
    text = raw_text(unfold(value), hint).strip()
    plain = _plain_mailbox(text, hint)
    if plain is not None:
        return plain[0], normalise_address(plain[1])
    if _balanced(text) and not any(c in text for c in "<@") and len(text.split()) > 1:
        return one_line(decode_header_value(text, hint)), ""
    if not _balanced(text) or not any(c in text for c in "<@"):
        return "", normalise_address(text)
    pairs = _address_pairs(value, hint)
    for name, address in pairs:
        if address.strip():
            return name, normalise_address(address)
    return (pairs[0][0] if pairs else ""), ""


def header_addresses(part: Part, name: str, hint: str) -> tuple[str, ...]:
    """The normalised addresses of every header ``name`` (To, Cc, Reply-To), without repeats."""
    found = (normalise_address(address) for k, v in part.raw_items() if k.lower() == name
             for _, address in _address_pairs(str(v), hint))
    return tuple(dict.fromkeys(a for a in found if "@" in a))


def _balanced(value: str) -> bool:
    """Whether the quotes, comments and angle brackets of an address value are all closed."""
    quoted, escaped, comment, angle = False, False, 0, 0
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"' and not comment:
            quoted = not quoted
        elif quoted:
            continue
        elif char in "()":
            comment += 1 if char == "(" else -1
        elif char in "<>" and not comment:
            angle += 1 if char == "<" else -1
        if comment < 0 or angle < 0 or angle > 1:
            return False
    return not quoted and comment == 0 and angle == 0


def header_date(value: str) -> datetime | None:
    """The Date header as an aware datetime (UTC when it names no zone), or None."""
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# A From header longer than this is not read for the quarantine list.
MAX_SENDER_BYTES = 998


def sender_in_head(raw: bytes, max_bytes: int = 64 * 1024) -> str:
    """The From address of a mail that could not be read as a whole (for the quarantine
    list), from its first ``max_bytes`` only; ``""`` when there is none to be found."""
    head = raw[:max_bytes]
    end = re.search(rb"\r?\n\r?\n", head)
    lines = re.split(rb"\r?\n(?![ \t])", head[:end.start()] if end else head)
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"from":
            if len(value) > MAX_SENDER_BYTES:  # a hostile header: not worth a look
                return ""
            try:
                return name_and_address(value.decode("utf-8", "replace"), "")[1]
            except Exception:
                return ""
    return ""
