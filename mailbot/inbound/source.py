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
from collections.abc import Callable, Iterable, Iterator
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
    # File a batch: an iterable of (raw bytes, Envelope or None), the source's name, and a
    # callable that says when to take no more; yields each mail's outcome in order, and
    # raises TemporaryFailure (or the iterable's own error) after the mails before it.
    # None: one mail at a time through ``file``.
    file_all: Callable[..., Iterator[Outcome]] | None = None
    # A mail's size before it is read (bytes, the source's name, where the mail stays):
    # None to read it, or the outcome of refusing it unread (recorded in the quarantine
    # list; the source leaves the mail in its quarantine).  Raises TemporaryFailure.
    screen: Callable[[int, str, str], Outcome | None] = lambda size, source, where: None

    def __post_init__(self) -> None:
        if self.file_all is None:
            object.__setattr__(self, "file_all", one_at_a_time(self.file))


def one_at_a_time(file: Callable[..., Outcome]) -> Callable[..., Iterator[Outcome]]:
    """A batch filed through ``file``, one mail after the other (see :attr:`Feed.file_all`)."""
    def file_all(arrivals: Iterable[tuple[bytes, Envelope | None]], source: str,
                 stop: Callable[[], bool] = lambda: False) -> Iterator[Outcome]:
        for raw, envelope in taken(arrivals, stop):
            yield file(raw, source) if envelope is None else file(raw, source, envelope)

    return file_all


def taken(arrivals: Iterable[tuple[bytes, Envelope | None]], stop: Callable[[], bool]
          ) -> Iterator[tuple[bytes, Envelope | None]]:
    """The arrivals of a batch as they are taken from their source, none once ``stop()``
    is true (what was taken before is filed)."""
    arriving = iter(arrivals)
    while not stop():
        try:
            yield next(arriving)
        except StopIteration:
            return


class Source(Protocol):
    """A place mail comes from."""

    # Its name on the health board, in logs and metrics ("imap:support", "smtp:host:port").
    name: str

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """Hand every mail to ``feed`` until ``stop`` is set (or nothing is left to read)."""
        ...
