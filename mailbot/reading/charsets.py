"""Text from bytes in an unknown or wrong charset: declared, tried, detected."""

from __future__ import annotations

import codecs
import re

import charset_normalizer

# -- charsets ------------------------------------------------------------------------------------

# Characters no text means to contain: what a wrong charset makes of bytes (C1 controls are
# Windows-1252 read as Latin-1; NULs are UTF-16 read as UTF-8).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
_META_CHARSET_RE = re.compile(rb"<meta[^>]{0,300}?charset\s*=\s*[\"']?\s*([\w.:-]{1,40})",
                              re.IGNORECASE)
# Codecs that read plain ASCII bytes as something else (escapes, "+" runs, NULs).
_NOT_ASCII_COMPATIBLE = ("utf-7", "utf-16", "utf-32", "iso2022", "hz")
# How much of a text charset detection looks at.
DETECT_BYTES = 64 * 1024
# Codecs under which almost any bytes decode (see _detected).
_WIDE_CODECS = ("shift_jis", "shift_jis_2004", "shift_jisx0213", "cp932", "euc_jp",
                "euc_jis_2004", "euc_jisx0213", "gb2312", "gbk", "gb18030", "big5", "big5hkscs",
                "cp950", "euc_kr", "cp949", "johab", "utf_16", "utf_16_le", "utf_16_be",
                "utf_32", "utf_32_le", "utf_32_be")


def read_bytes(data: bytes, candidates: list[str], detect: bool = False) -> tuple[str, str]:
    """``data`` as text and the codec that read it.

    The first candidate charset that reads it without control characters wins; else bytes
    that are mostly UTF-8 are read as UTF-8 (a few broken sequences replaced); else, with
    ``detect``, a charset detected by charset-normalizer; else the first candidate that read
    it at all; else Windows-1252 (undefined bytes replaced).
    """
    fallback = None
    for codec in dict.fromkeys(c for label in candidates if label for c in codecs_for(label)):
        text = try_decode(data, codec)
        if text is None:
            continue
        if not _CONTROL_RE.search(text):
            return text, codec
        fallback = fallback or (text, codec)
    text = data.decode("utf-8", "replace")
    broken = text.count("\ufffd")
    if len(text) - len(text.encode("ascii", "ignore")) - broken >= 3 * broken:
        return text, "utf-8"
    found = _detected(data) if detect else None
    if found is not None and not _CONTROL_RE.search(found[0]):
        return found
    return fallback or (data.decode("cp1252", "replace"), "cp1252")


def _detected(data: bytes) -> tuple[str, str] | None:
    """``data`` read in the charset charset-normalizer finds in its first bytes, or None.

    Without a language recognised in the result, detection runs again without the East
    Asian multi-byte codecs and UTF-16/32, in whose wide byte ranges a short single-byte
    text (KOI8-R, Windows-1251) also looks valid; a result with a language wins.
    """
    sample = data[:DETECT_BYTES]
    if len(data) > DETECT_BYTES and b"\n" in sample:
        sample = sample[:sample.rindex(b"\n") + 1]
    match = charset_normalizer.from_bytes(sample).best()
    if match is not None and not match.coherence:
        again = charset_normalizer.from_bytes(sample, cp_exclusion=list(_WIDE_CODECS)).best()
        match = again if again is not None and again.coherence else match
    codec = _codec(match.encoding) if match is not None else None
    if codec is None:
        return None
    text = try_decode(data, codec)
    return (text if text is not None else data.decode(codec, "replace")), codec


def try_decode(data: bytes, codec: str) -> str | None:
    try:
        text = data.decode(codec)
        text.encode("utf-8")  # some codecs produce lone surrogates
        return text
    except (LookupError, UnicodeError, ValueError, TypeError):
        return None


def _codec(label: str) -> str | None:
    """The Python codec of a charset label, or None for an unknown (or no) one."""
    label = label.strip().strip("\"'").lower()
    if not label or label in ("unknown-8bit", "x-unknown", "unknown"):
        return None
    try:
        return codecs.lookup(label).name
    except (LookupError, ValueError, TypeError):
        return None


def codecs_for(label: str) -> tuple[str, ...]:
    """The codecs to try for a charset label.  ISO-8859-1 is read as Windows-1252 first (its
    superset, which mail programs that declare ISO-8859-1 often write, as browsers know)."""
    codec = _codec(label)
    if codec is None:
        return ()
    return ("cp1252", codec) if codec == "iso8859-1" else (codec,)


def ascii_compatible(label: str) -> bool:
    codec = _codec(label)
    return codec is None or not codec.startswith(_NOT_ASCII_COMPATIBLE)


def meta_charset(payload: bytes) -> str:
    """The charset an HTML document names in a ``<meta>`` element, or ``""``."""
    found = _META_CHARSET_RE.search(payload[:4096])
    return found.group(1).decode("ascii") if found else ""
