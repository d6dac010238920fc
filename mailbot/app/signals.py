"""Stop signals from the very first moment of `mailbot run`, before anything heavy loads.

SIGTERM while the daemon is still importing, opening its database or binding its ports
must still end in a clean stop with exit 0, not a death by signal.  The executable
installs :class:`EarlyStop` before it imports the rest of mailbot; the daemon attaches
its stop event to it once its event loop runs.
"""

from __future__ import annotations

import asyncio
import signal


class EarlyStop:
    """Remembers a SIGTERM/SIGINT until the daemon's loop can take it over."""

    installed: EarlyStop | None = None

    def __init__(self) -> None:
        self.requested = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None

    @classmethod
    def install(cls) -> EarlyStop:
        """Catch SIGTERM and SIGINT from now on (once per process)."""
        if cls.installed is None:
            cls.installed = cls()
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, cls.installed._handle)
        return cls.installed

    def _handle(self, *_: object) -> None:
        self.requested = True
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)

    def attach(self, stop: asyncio.Event) -> None:
        """From now on a signal sets ``stop`` (at once, if one came already)."""
        self.loop, self.stop = asyncio.get_running_loop(), stop
        if self.requested:
            stop.set()
