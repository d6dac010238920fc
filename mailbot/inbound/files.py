"""`mailbot ingest` as a source: mails from files or standard input, for an MTA's pipe.

Each mail is filed without its own sync; one flush at the end (also after a failure)
makes them all durable before the command exits 0 and the MTA forgets them.  The envelope
comes from the MTA's command line (``--sender``, ``--recipient``); without it, from the
Return-Path and Delivered-To the delivering MTA wrote on top of the mail.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import re
from collections.abc import Callable

from mailbot.inbound.source import Envelope, Feed
from mailbot.tickets.outcome import Outcome

# The top of a mail searched for the envelope headers an MTA writes there.
HEAD_BYTES = 256 * 1024
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class MailRefused(Exception):
    """The operator chose to refuse this mail (``[limits] oversize = "reject"``): a bounce."""


class FileSource:
    """Files each input in order and reports each outcome; stops at the first failure.

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
        self.current = ""  # the input being filed (names a failure)

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """File every input (until ``stop``), then make them durable; errors propagate."""
        try:
            for name, read in self.inputs:
                if stop.is_set():
                    break
                self.current = name
                raw = read()
                if self.max_bytes is not None and len(raw) > self.max_bytes:
                    raise MailRefused(f"{len(raw)} bytes, over the limit of {self.max_bytes}")
                envelope = self.envelope or envelope_in_headers(raw)
                self.report(name, feed.file(raw, self.name, envelope))
        finally:
            feed.flush()


def envelope_in_headers(raw: bytes) -> Envelope:
    """The envelope the delivering MTA wrote on top of a mail: its first Return-Path (the
    sender; ``<>`` or Postfix's ``<MAILER-DAEMON>`` for the null sender) and Delivered-To.
    Without a Return-Path the sender is unknown (None)."""
    end = _HEADER_END.search(raw, 0, HEAD_BYTES)  # a slice of the head, never a copy of all
    head = raw[:end.start() if end else HEAD_BYTES]
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    return_path = headers.get("Return-Path")
    sender = None if return_path is None else str(return_path).strip().strip("<>").strip()
    recipients = tuple(str(value).strip() for value in headers.get_all("Delivered-To", [])[:1])
    return Envelope(sender=sender, recipients=recipients)
