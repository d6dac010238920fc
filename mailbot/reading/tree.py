"""One walk over a parsed MIME tree: the texts of the mail and of forwarded mails, its
files in order, and its defects."""

from __future__ import annotations

import copy
import email
import email.errors
import email.message
import email.policy
import email.utils
import hashlib
import io
import re
from dataclasses import replace
from email.generator import BytesGenerator

from mailbot.reading.attachments import (
    AS_IS,
    Attachment,
    Body,
    FoundFile,
    measure,
    safe_filename,
    tnef_files,
    transfer_encoding,
    type_of,
    uu_blocks,
    uudecoded,
    uuencoded,
)
from mailbot.reading.charsets import ascii_compatible, codecs_for, meta_charset, read_bytes
from mailbot.reading.headers import decode_header_value, raw_text, unfold
from mailbot.reading.html import html_to_text
from mailbot.reading.limits import Limits, ParseError
from mailbot.reading.skeleton import Skeleton

Part = email.message.Message


# -- reading the tree ----------------------------------------------------------------------------

# Types of a part that holds a whole mail: a forwarded one.
FORWARDED_TYPES = ("message/rfc822", "message/global")
# Types of Outlook's rich-text wrapper (a "winmail.dat").
_TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")


class Reading:
    """One walk over the MIME tree: texts (per mail: 0 is the mail itself, else the id of a
    forwarded mail's part), files in order, and defects.

    A leaf part is text when it is text/plain or text/html and neither named nor attached;
    every other leaf is a file (inline images without a name too), and a forwarded mail
    (message/rfc822) is one file whose own texts make its block.  A named inline text is
    both (as mail programs show it).
    """

    def __init__(self, skeleton: Skeleton, limits: Limits) -> None:
        self.skeleton = skeleton
        self.limits = limits
        self.defects: list[str] = []
        # Per mail: its plain and its HTML texts, in order.
        self.texts: dict[int, tuple[list[str], list[str]]] = {}
        # The files in order: a part (read after the walk) or a file cut out of a text.
        self.files: list[Part | FoundFile] = []
        # The ids of the forwarded mails' parts among the files.
        self.forwarded_parts: set[int] = set()
        # Each forwarded mail's part and the name of the attachment that holds it.
        self.forwarded: list[tuple[Part, str]] = []
        # Codecs that read 8-bit text other than UTF-8, in order.
        self.charsets: list[str] = []

    @property
    def charset(self) -> str:
        """The charset the mail's own 8-bit text was in (a hint for raw 8-bit headers)."""
        return self.charsets[0] if self.charsets else ""

    def walk(self, tree: Part) -> None:
        """Read every part in order: texts now, files listed (and counted) for later."""
        for part, owner, inside_attachment in _parts(tree):
            self.defects += [type(d).__name__ for d in part.defects]
            disposition = (part.get_content_disposition() or "").lower()
            if part is not tree and part.get_content_type() in FORWARDED_TYPES:
                self.files.append(part)
                self.forwarded_parts.add(id(part))
                continue
            if part.is_multipart():
                if disposition == "attachment":
                    self.files.append(part)
                continue
            text_type = part.get_content_type() in ("text/plain", "text/html")
            named = bool(part_filename(part, ""))
            if not text_type or named or disposition == "attachment" or uuencoded(part):
                self.files.append(part)
                if not (text_type and named and disposition == "inline"
                        and not inside_attachment):
                    continue
            self._read_text(part, owner)
        if len(self.files) > self.limits.max_attachments:
            raise ParseError(f"{len(self.files)} attachments, over the limit of "
                             f"{self.limits.max_attachments} (limits.max_attachments)")

    def text(self, owner: int) -> str:
        """The text of the mail (0) or of a forwarded one: its plain text, else its HTML's."""
        plain, html = self.texts.get(owner, ([], []))
        return body_text(plain, "\n".join(html), self.limits)

    def html(self, owner: int) -> list[str]:
        """The HTML parts of the mail (0) or of a forwarded one."""
        return self.texts.get(owner, ([], []))[1]

    def attachments(self) -> tuple[Attachment, ...]:
        """Every file measured (decoded once, to hash it), TNEF wrappers unpacked."""
        found: list[Attachment] = []
        for entry in self.files:
            file = self._file(entry) if isinstance(entry, Part) else entry
            attachment = self._attachment(file, len(found) + 1)
            if id(entry) in self.forwarded_parts:
                self.forwarded.append((entry, attachment.filename))
            found += self._unpacked(attachment)
        if len(found) > self.limits.max_attachments:
            raise ParseError(f"{len(found)} attachments, over the limit of "
                             f"{self.limits.max_attachments} (limits.max_attachments)")
        return tuple(found)

    def _read_text(self, part: Part, owner: int) -> None:
        """A plain or HTML part's text, put back together from the raw mail and decoded.

        Uuencoded blocks in a plain text are cut out of it and become files.  The tree keeps
        its markers: an attached mail is written out from it as it came.
        """
        whole = copy.copy(part)
        whole.set_payload(self.skeleton.restore(raw_payload(part)))
        text = self._decode_text(whole)
        plain, html = self.texts.setdefault(owner, ([], []))
        if part.get_content_subtype() == "html":
            if text:
                html.append(text)
            return
        text, blocks = uu_blocks(text)
        self.files += blocks
        if text:
            plain.append(text)

    def _decode_text(self, part: Part) -> str:
        """A text part as text: UTF-8, its declared charset, a detected one (module docs)."""
        raw_text = raw_payload(part)
        declared = part.get_content_charset() or ""
        if (transfer_encoding(part) in AS_IS and raw_text.isascii()
                and ascii_compatible(declared)):
            return raw_text
        payload = part.get_payload(decode=True)
        if not payload:
            return ""
        candidates = ["utf-8", declared]
        if part.get_content_subtype() == "html":
            candidates.append(meta_charset(payload))
        text, codec = read_bytes(payload, candidates, detect=True)
        if codec not in ("ascii", "utf-8"):
            self.charsets.append(codec)
        if codec not in codecs_for(declared or "ascii"):
            self.defects.append(f"CharsetDecodeDefect: {part.get_content_type()} "
                                f"charset {declared!r} does not fit; read as {codec}")
        return text

    def _file(self, part: Part) -> FoundFile:
        """A file part: its decoded name, its type, where its bytes are, or why they cannot be."""
        name = part_filename(part, self.charset)
        content_type = part.get_content_type().lower()
        if part.is_multipart():  # a forwarded mail or an attached container: its parts
            body, damage = self._container(part)
            return FoundFile(name, content_type, body, damage)
        pieces = self.skeleton.pieces(raw_payload(part))
        encoding = transfer_encoding(part)
        if encoding in ("base64", "quoted-printable"):
            return FoundFile(name, content_type, Body(pieces, encoding))
        if uuencoded(part):
            block = uudecoded(b"".join(pieces))
            if block is None:
                return FoundFile(name, content_type, Body(pieces), "broken uuencode")
            begun, data = block
            return FoundFile(name or begun, content_type if name else type_of(begun),
                         Body((data,)))
        if encoding in AS_IS:
            return FoundFile(name, content_type, Body(pieces))
        return FoundFile(name, content_type, Body(pieces),
                     f"unknown transfer encoding {encoding!r}")

    def _attachment(self, file: FoundFile, index: int) -> Attachment:
        filename = safe_filename(file.name, file.content_type, index)
        body, damage, content_type = file.body, file.damage, file.content_type
        if not damage:
            try:
                size, digest = measure(body.decoded())
            except ValueError as exc:  # binascii.Error: broken base64
                damage = f"broken base64 ({exc})"
        if damage:
            body = Body(body.pieces)
            size, digest = measure(body.decoded())
            filename, content_type = f"{filename}.damaged", "application/octet-stream"
            self.defects.append(f"AttachmentDamaged: {filename}: {damage}")
        if size > self.limits.max_attachment_bytes:
            raise ParseError(f"attachment {index} is {size} bytes, over the limit of "
                             f"{self.limits.max_attachment_bytes} "
                             "(limits.max_attachment_bytes)")
        return Attachment(filename=filename, content_type=content_type, size=size,
                          sha256=digest, damage=damage, body=body)

    def _unpacked(self, attachment: Attachment) -> list[Attachment]:
        """A TNEF wrapper's files in its place; the wrapper itself, with a note, if none."""
        if attachment.damage or not (attachment.content_type in _TNEF_TYPES
                                     or attachment.filename.lower() == "winmail.dat"):
            return [attachment]
        files, problem = tnef_files(attachment.payload)
        if problem:
            self.defects.append(f"TnefNotUnpacked: {attachment.filename}: {problem}")
            note = (f"Outlook's TNEF wrapper {attachment.filename} {problem}: kept as it came "
                    "(tools like tnef or winmail-opener read it)")
            return [replace(attachment, note=note)]
        out = []
        for name, data in files:
            content_type = type_of(name)
            out.append(Attachment(
                filename=safe_filename(name, content_type, len(out) + 1), size=len(data),
                content_type=content_type, sha256=hashlib.sha256(data).hexdigest(),
                body=Body((data,))))
        return out

    def _container(self, part: Part) -> tuple[Body, str]:
        """An attached mail (message/rfc822) or multipart: its parts written out again, with
        the mail's line ends (byte for byte as sent, as far as the parser kept it)."""
        out, policy = io.BytesIO(), email.policy.compat32.clone(linesep=self.skeleton.linesep)
        try:
            for child in part.get_payload():
                BytesGenerator(out, mangle_from_=False, maxheaderlen=0,
                               policy=policy).flatten(child)
        except (LookupError, UnicodeError, ValueError, TypeError) as exc:
            return Body(()), f"the attached parts cannot be written out: {exc}"
        written = out.getvalue().decode("ascii", "surrogateescape")
        return Body(self.skeleton.pieces(written)), ""


def _parts(tree: Part) -> list[tuple[Part, int, bool]]:
    """Every part in order: which mail it belongs to (0, or the id of the forwarded mail's
    part) and whether it sits inside an attached container.

    RFC 2183 applies a disposition to a whole container: the named inline texts inside an
    attached one are not shown as the mail's text.  A forwarded mail begins afresh.
    """
    parts, inside, owners = [], set(), {}
    for part in tree.walk():
        within, owner = id(part) in inside, owners.get(id(part), 0)
        parts.append((part, owner, within))
        if not part.is_multipart():
            continue
        children = part.get_payload()
        if part is not tree and part.get_content_type() in FORWARDED_TYPES:
            owners.update((id(child), id(part)) for child in children)
            continue
        owners.update((id(child), owner) for child in children)
        disposition = part.get_content_disposition()
        blocks = disposition not in (None, "inline") or (
            disposition != "inline" and bool(part.get_filename()))
        if within or blocks:
            inside.update(id(child) for child in children)
    return parts


def part_filename(part: Part, hint: str) -> str:
    """The decoded file name (RFC 2231, encoded-words, raw 8-bit bytes as the headers)."""
    view = email.message.Message()
    for name, value in part.raw_items():
        if name.lower() in ("content-type", "content-disposition"):
            view[name] = raw_text(unfold(str(value)), hint)
    return decode_header_value(view.get_filename() or "", hint)


def raw_payload(part: Part) -> str:
    """A leaf part's payload as parsed: 8-bit bytes as surrogates, no charset applied.

    (``get_payload()`` would decode those bytes with the part's charset, lossily.)
    """
    return part._payload


# -- text ----------------------------------------------------------------------------------------

# Characters that make a text look filled without showing anything.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"
# A word, for comparing a mail's plain and HTML alternatives: three letters or more.
_WORD_RE = re.compile(r"[^\W\d_]{3,}")
# How many words the HTML alternative must add before its text is added to the plain one.
MIN_NEW_WORDS = 3


def _is_new(line: str, known: set[str]) -> bool:
    """Whether most words of ``line`` (and at least one) are not in ``known``."""
    words = [word.lower() for word in _WORD_RE.findall(line)]
    return sum(word not in known for word in words) * 2 > len(words)


def body_text(plain: list[str], html: str, limits: Limits) -> str:
    """The plain text and what only the HTML says; without plain text, the HTML's text."""
    text = "\n".join(plain).strip().replace("\r\n", "\n")
    if not text.strip(_INVISIBLE):
        return html_to_text(html, limits.max_html_chars) if html else ""
    return _with_html_only_text(text, html, limits) if html else text


def _with_html_only_text(text: str, html: str, limits: Limits) -> str:
    """The plain text, then the lines of the HTML alternative that it lacks.

    Both alternatives should say the same; where the HTML says more (a plain part that is
    a stub or lost a paragraph), its lines of mostly new words are added.  Not added: fewer
    than :data:`MIN_NEW_WORDS` new words (an image's alt text, a link), and anything from
    the HTML's quoted history on (Yahoo, for one, shortens it in the plain part).
    """
    known = {word.lower() for word in _WORD_RE.findall(text)}
    visible = html_to_text(html, limits.max_html_chars)
    if len({word.lower() for word in _WORD_RE.findall(visible)} - known) < MIN_NEW_WORDS:
        return text
    lines = [line.strip() for line in visible.splitlines()]
    quoted = next((i for i, line in enumerate(lines) if line.startswith(">")), len(lines))
    extra = [line for line in lines[:quoted] if _is_new(line, known)]
    return "\n\n".join([text, "\n".join(extra)]) if extra else text
