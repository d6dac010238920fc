"""`mailbot ingest` as a source: mails from files or standard input, for an MTA's pipe.

Each mail is filed without its own sync; one flush at the end (also after a failure)
makes them all durable before the command exits 0 and the MTA forgets them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from mailbot.inbound.source import Feed
from mailbot.tickets.outcome import Outcome


class FileSource:
    """Files each input in order and reports each outcome; stops at the first failure."""

    name = "cli"

    def __init__(self, inputs: list[tuple[str, Callable[[], bytes]]],
                 report: Callable[[str, Outcome], None]) -> None:
        self.inputs = inputs
        self.report = report
        self.current = ""  # the input being filed (names a failure)

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """File every input (until ``stop``), then make them durable; errors propagate."""
        try:
            for name, read in self.inputs:
                if stop.is_set():
                    break
                self.current = name
                self.report(name, feed.file(read(), self.name))
        finally:
            feed.flush()
