"""What every source of mail is: the Source protocol, and the Feed it hands mail to.

A source (an IMAP mailbox, the SMTP/LMTP listener, `mailbot ingest`'s files) only moves
bytes: it reads a mail, hands it to :meth:`Feed.file`, and acknowledges the mail to its
origin (IMAP move, SMTP 250, exit 0) only once the feed returned and, for a batch,
:meth:`Feed.flush` made it durable.  A :class:`TemporaryFailure` means: keep the mail
and try again later; every other outcome is final.  A new source is one class with
``name`` and ``serve`` and one line where the daemon lists its sources.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mailbot.tickets.outcome import Outcome


class TemporaryFailure(Exception):
    """The mail could not be filed now but may be later; do not acknowledge its delivery."""


# What a null envelope sender (MAIL FROM:<>) looks like after an MTA wrote it down.
_NULL_SENDERS = frozenset({"", "<>", "mailer-daemon", "<mailer-daemon>"})


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope a mail came with, as its MTA gave it (None: not known, e.g. IMAP)."""

    sender: str | None = None
    recipients: tuple[str, ...] = ()

    @property
    def null_sender(self) -> bool:
        """Whether the mail came from the null sender: no automatic mail may answer it
        (RFC 3834); Postfix's pipe writes it as ``MAILER-DAEMON``."""
        return self.sender is not None and self.sender.strip().lower() in _NULL_SENDERS


@dataclass(frozen=True)
class Feed:
    """The pipeline as a source sees it."""

    # File one mail (raw bytes, the source's name, optionally its Envelope); raises
    # TemporaryFailure.
    file: Callable[..., Outcome]
    # Make everything filed so far durable, once for a whole batch.
    flush: Callable[[], None]
    # A mail's size before it is read (bytes, the source's name, where the mail stays):
    # None to read it, or the outcome of refusing it unread (recorded in the quarantine
    # list; the source leaves the mail in its quarantine).  Raises TemporaryFailure.
    screen: Callable[[int, str, str], Outcome | None] = lambda size, source, where: None


class Source(Protocol):
    """A place mail comes from."""

    # Its name on the health board, in logs and metrics ("imap:support", "smtp:host:port").
    name: str

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """Hand every mail to ``feed`` until ``stop`` is set (or nothing is left to read)."""
        ...
