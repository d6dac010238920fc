"""`mailbot ingest` as a source: mails from files or standard input, for an MTA's pipe.

Each mail is filed without its own sync; one flush at the end (also after a failure)
makes them all durable before the command exits 0 and the MTA forgets them.  The envelope
comes from the MTA's command line (``--sender``, ``--recipient``); without it, from the
Return-Path and Delivered-To the delivering MTA wrote on top of the mail.  Each mail is read
in a fork of this process, made after its imports (:mod:`mailbot.inbound.readers`), so
``[limits] max_seconds_per_mail`` bounds `mailbot ingest` as it bounds the daemon.
"""

from __future__ import annotations

import asyncio
import email.policy
import io
import re
from collections.abc import Callable, Iterator

from mailbot.inbound.source import Envelope, Feed
from mailbot.tickets.outcome import Outcome

# The top of a mail searched for the envelope headers an MTA writes there.
HEAD_BYTES = 256 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")
# A line of a header block, as the stdlib's parser knows it (its headerRE).
_HEADER_LINE = re.compile(r"From |[\041-\071\073-\176]*:|[\t ]")


class MailRefused(Exception):
    """The operator chose to refuse this mail (``[limits] oversize = "reject"``): a bounce."""


class FileSource:
    """Files the inputs in order, as one batch, and reports each outcome; stops at the
    first failure (the outcomes before it are reported and kept).

    ``name`` is the path the mail came by: "pipe" for an MTA's pipe (standard input),
    "cli" for files an operator names.  ``max_bytes`` (if given) refuses bigger inputs
    with :class:`MailRefused` before anything is kept.
    """

    def __init__(self, inputs: list[tuple[str, Callable[[], bytes]]],
                 report: Callable[[str, Outcome], None], name: str = "cli",
                 envelope: Envelope | None = None, max_bytes: int | None = None) -> None:
        self.inputs = inputs
        self.report = report
        self.name = name
        self.envelope = envelope
        self.max_bytes = max_bytes
        self._taken: list[str] = []  # the inputs read so far, in order
        self._reported = 0

    @property
    def current(self) -> str:
        """The input a failure is about: the first one read but not reported."""
        if self._reported < len(self._taken):
            return self._taken[self._reported]
        return self._taken[-1] if self._taken else ""

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """File every input (until ``stop``), then make them durable; errors propagate."""
        try:
            for outcome in feed.file_all(self._arrivals(), self.name, stop.is_set):
                self.report(self._taken[self._reported], outcome)
                self._reported += 1
        finally:
            feed.flush()

    def _arrivals(self) -> Iterator[tuple[bytes, Envelope]]:
        """Each input's bytes and envelope, read when the feed takes it."""
        for name, read in self.inputs:
            self._taken.append(name)
            raw = read()
            if self.max_bytes is not None and len(raw) > self.max_bytes:
                raise MailRefused(f"{len(raw)} bytes, over the limit of {self.max_bytes}")
            yield raw, self.envelope or envelope_in_headers(raw)


def envelope_in_headers(raw: bytes) -> Envelope:
    """The envelope the delivering MTA wrote on top of a mail: its first Return-Path (the
    sender; ``<>`` or Postfix's ``<MAILER-DAEMON>`` for the null sender) and Delivered-To.
    Without a Return-Path the sender is unknown (None)."""
    end = _HEADER_END.search(raw, 0, HEAD_BYTES)  # a slice of the head, never a copy of all
    head = raw[:end.start() if end else HEAD_BYTES].decode("ascii", "surrogateescape")
    found = _first_fields(head, ("return-path", "delivered-to"))
    return_path = found.get("return-path")
    sender = None if return_path is None else str(return_path).strip().strip("<>").strip()
    recipients = tuple(str(found[name]).strip() for name in ("delivered-to",) if name in found)
    return Envelope(sender=sender, recipients=recipients)


def _first_fields(head: str, names: tuple[str, ...]) -> dict[str, object]:
    """The first value of each header field ``names`` (lower case) in a header block, read
    as the stdlib's compat32 parser reads it, without building a message of all fields:
    the mail is parsed once, by the pipeline.  A value with 8-bit bytes is a Header."""
    found: dict[str, object] = {}
    name, lines = "", []
    for line in io.StringIO(head, newline="").readlines():
        if not _HEADER_LINE.match(line):
            break  # the end of the header block
        if line[0] in " \t":
            if name:
                lines.append(line)
            continue
        _keep(found, names, name, lines)
        if len(found) == len(names):
            return found
        name, lines = "", []
        if line.startswith("From ") or line.startswith(":"):
            continue  # an mbox envelope line (a first one, or misplaced), a nameless field
        name, lines = line[:line.find(":")], [line]
    _keep(found, names, name, lines)
    return found


def _keep(found: dict[str, object], names: tuple[str, ...], name: str,
          lines: list[str]) -> None:
    """Keep a field's value (compat32's reading of its lines) if it is a first one wanted."""
    key = name.lower()
    if not name or key not in names or key in found:
        return
    value = lines[0].split(":", 1)[1].lstrip(" \t") + "".join(lines[1:])
    found[key] = email.policy.compat32.header_fetch_parse(name, value.rstrip("\r\n"))
