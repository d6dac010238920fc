"""Attached files: where their bytes are, decoded piece by piece, their names, and the
old encodings that hide them (uuencode, Outlook's TNEF)."""

from __future__ import annotations

import binascii
import email
import email.errors
import email.message
import email.policy
import email.utils
import hashlib
import mimetypes
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import tnefparse

from mailbot.reading.charsets import read_bytes

Part = email.message.Message
Piece = bytes | memoryview


# How much of an attachment is decoded at a time.
CHUNK_BYTES = 1024 * 1024
# Transfer encodings an attachment is decoded from piece by piece ("" and the rest: as is).
AS_IS = ("", "7bit", "8bit", "binary")
_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(c for c in range(256) if c not in _BASE64_ALPHABET)


@dataclass(frozen=True)
class Body:
    """Where an attachment's bytes are in the raw mail, and how they are encoded."""

    pieces: tuple[Piece, ...]
    encoding: str = ""  # "base64", "quoted-printable" or "" (as is)

    def decoded(self) -> Iterator[Piece]:
        """The decoded bytes, at most about :data:`CHUNK_BYTES` at a time.

        Raises ValueError (binascii.Error) where the base64 is broken.
        """
        if self.encoding == "base64":
            return _base64_chunks(self.pieces)
        if self.encoding == "quoted-printable":
            return (binascii.a2b_qp(lines) for lines in line_chunks(self.pieces))
        return _chunks(self.pieces)


@dataclass(frozen=True)
class Attachment:
    """One attached file: a sanitised display name (never a path), its size and hash.

    The file is not held decoded: :meth:`chunks` decodes it piece by piece from the raw
    mail; :attr:`payload` joins them, for files known to be small.
    """

    filename: str
    content_type: str
    size: int
    sha256: str
    body: Body = field(repr=False, compare=False)
    # Why the file is kept as it came, undecoded (its name ends in ".damaged"); "" if not.
    damage: str = ""
    # What agents should know about a file kept as it came although it is whole (a TNEF
    # wrapper that could not be unpacked); "" if nothing.
    note: str = ""

    def chunks(self) -> Iterator[Piece]:
        """The file's bytes in pieces of about a megabyte: write a large file with these."""
        return self.body.decoded()

    @property
    def payload(self) -> bytes:
        """The whole file in memory (for a small file; a big one is written with chunks)."""
        return b"".join(self.chunks())


_UNSAFE_NAME_RE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|]+")


def safe_filename(name: str, content_type: str, index: int) -> str:
    """A display filename that can never act as a path (no separators, no dots first).

    A part without a usable name is named by its type and its position among the mail's
    attachments, the same on every run: "image-2.png", "forwarded-message-1.eml".
    """
    base = re.split(r"[/\\]", unicodedata.normalize("NFC", name or ""))[-1]
    base = _UNSAFE_NAME_RE.sub("_", base).strip(" .")[:200]
    if base:
        return base
    content_type = (content_type or "").lower()
    stem = _NAME_STEMS.get(content_type) or _NAME_STEMS.get(content_type.partition("/")[0])
    return f"{stem or 'attachment'}-{index}{_extension(content_type)}"


# Names for parts without one, by type or main type.
_NAME_STEMS = {"message/rfc822": "forwarded-message", "message/global": "forwarded-message",
               "text/calendar": "invitation", "image": "image", "audio": "audio",
               "video": "video"}
# Extensions of types the built-in table lacks.
_EXTENSIONS = {"text/calendar": ".ics", "application/pgp-signature": ".asc",
               "application/ms-tnef": ".dat", "application/vnd.ms-tnef": ".dat",
               "message/global": ".eml", "message/delivery-status": ".txt",
               "text/rfc822-headers": ".txt"}
# The standard library's built-in types only (never /etc/mime.types): names stay stable.
_TYPES = mimetypes.MimeTypes()
# Office files, common in support mail, which the built-in table lacks.
_OFFICE_TYPES = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".msg": "application/vnd.ms-outlook"}


def _extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or _TYPES.guess_extension(content_type) or ".bin"


def type_of(filename: str) -> str:
    """The content type a file name suggests (built-in table), else application/octet-stream."""
    extension = "." + filename.rpartition(".")[2].lower()
    return (_OFFICE_TYPES.get(extension) or _TYPES.guess_type(filename)[0]
            or "application/octet-stream")


@dataclass(frozen=True)
class FoundFile:
    """A file found in the mail, before it is measured: name, type, bytes, why damaged."""

    name: str
    content_type: str
    body: Body
    damage: str = ""


def transfer_encoding(part: Part) -> str:
    """A part's Content-Transfer-Encoding, lower-case ("" when it names none)."""
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def measure(chunks: Iterable[Piece]) -> tuple[int, str]:
    """Size and SHA-256 of a stream of bytes."""
    digest, size = hashlib.sha256(), 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _chunks(pieces: Iterable[Piece]) -> Iterator[Piece]:
    """The pieces cut to at most :data:`CHUNK_BYTES` each (views, no copies)."""
    for piece in pieces:
        for start in range(0, len(piece), CHUNK_BYTES):
            yield piece[start:start + CHUNK_BYTES]


def line_chunks(pieces: Iterable[Piece]) -> Iterator[bytes]:
    """The bytes in chunks that end at a line feed (or the end): whole lines each."""
    rest = b""
    for chunk in _chunks(pieces):
        data = rest + bytes(chunk)
        cut = data.rfind(b"\n") + 1
        if cut:
            yield data[:cut]
        rest = data[cut:]
    if rest:
        yield rest


def _base64_chunks(pieces: Iterable[Piece]) -> Iterator[bytes]:
    """Base64 decoded a chunk at a time, as the stdlib decodes it whole (non-strict).

    Characters outside the alphabet are skipped; chunks are cut at whole groups of four.
    Broken base64 raises binascii.Error: a length that cannot be decoded, wrong padding,
    or data after the padding (which a whole decode would drop without a word).
    """
    carry, padded = b"", False
    for chunk in _chunks(pieces):
        clean = bytes(chunk).translate(None, _NOT_BASE64)
        pad = 0 if padded else clean.find(b"=")
        if pad >= 0:
            if clean[pad:].strip(b"="):
                raise binascii.Error("data after the padding")
            if not padded:
                padded = True
                yield binascii.a2b_base64(carry + clean)
            continue
        data = carry + clean
        whole = len(data) - len(data) % 4
        yield binascii.a2b_base64(data[:whole])
        carry = data[whole:]
    if carry and not padded:
        yield binascii.a2b_base64(carry)


# -- old encodings: uuencode and TNEF --------------------------------------------------------------

# The first line of a uuencoded file: "begin 644 name".
_UU_BEGIN_RE = re.compile(r"begin [0-7]{3,4} ([^\r\n]+)")
# One line of uuencoded data (a length character and up to 60 characters of data).
_UU_LINE_RE = re.compile(r"[\x20-\x60]{1,62}")


def uuencoded(part: Part) -> bool:
    return transfer_encoding(part) in _UUENCODE


def uu_blocks(text: str) -> tuple[str, list[FoundFile]]:
    """A plain text without its uuencoded blocks, and the files they hold, in order.

    A block is "begin <mode> <name>", lines of uuencoded data and "end" (the form of
    ``uuencode`` and of old mail programs); one that does not decode stays in the text.
    """
    if "begin " not in text:
        return text, []
    lines = text.split("\n")
    kept, files, pos = [], [], 0
    while pos < len(lines):
        block = _uu_block(lines, pos)
        if block is None:
            kept.append(lines[pos])
            pos += 1
            continue
        end, name, data = block
        files.append(FoundFile(name, type_of(name), Body((data,))))
        blank_around = kept and not kept[-1].strip() and end < len(lines)
        pos = end + 1 if blank_around and not lines[end].strip() else end
    return "\n".join(kept).strip("\n"), files


def _uu_block(lines: list[str], pos: int) -> tuple[int, str, bytes] | None:
    """The block beginning at line ``pos``: the line after its "end", its name and bytes;
    None if no block begins there or it does not decode."""
    begun = _UU_BEGIN_RE.fullmatch(lines[pos].rstrip())
    if begun is None:
        return None
    for end in range(pos + 1, len(lines)):
        line = lines[end].rstrip()
        if line == "end":
            try:
                data = b"".join(_uu_line(encoded.rstrip().encode("ascii"))
                                for encoded in lines[pos + 1:end] if encoded.strip())
            except (binascii.Error, UnicodeError):
                return None
            return end + 1, begun.group(1).strip(), data
        if line and not _UU_LINE_RE.fullmatch(line):
            return None
    return None


def uudecoded(encoded: bytes) -> tuple[str, bytes] | None:
    """The name and bytes of the file in an x-uuencode part, or None if it is broken."""
    lines = encoded.decode("latin-1").splitlines()
    begins = (i for i, line in enumerate(lines) if _UU_BEGIN_RE.fullmatch(line.rstrip()))
    block = _uu_block(lines, next(begins, len(lines) - 1)) if lines else None
    return block[1:] if block else None


def _uu_line(line: bytes) -> bytes:
    """One line of uuencoded data; extra characters some encoders add at the end are cut."""
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        length = (((line[0] - 32) & 63) * 4 + 5) // 3
        return binascii.a2b_uu(line[:length])


def tnef_files(data: bytes) -> tuple[list[tuple[str, bytes]], str]:
    """The files in an Outlook TNEF wrapper (name, bytes), or why there are none."""
    try:
        wrapper = tnefparse.TNEF(data, do_checksum=False)
        files = [(_tnef_name(a), a.data) for a in wrapper.attachments if a.data]
    except Exception as exc:  # a third-party reader of hostile bytes: any error
        return [], f"cannot be unpacked ({type(exc).__name__}: {exc})"
    if not files:
        return [], "holds no files (only Outlook's formatting)"
    return files, ""


def _tnef_name(attachment: tnefparse.TNEFAttachment) -> str:
    """A TNEF file's long name, else its short one (bytes read as UTF-8, else Windows-1252)."""
    try:
        name = attachment.long_filename()
    except UnicodeError:  # a short name in a legacy code page
        name = attachment._name
    if isinstance(name, bytes):
        name = read_bytes(name, ["utf-8"])[0]
    return str(name).strip("\x00")
