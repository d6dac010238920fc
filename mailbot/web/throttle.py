"""How often forms may be posted: a sliding minute per client address and per ticket.

Counted in this process's memory, which suffices for the one daemon that serves the web:
a restart forgets the counts, and daemons behind one load balancer would each count on
their own.  Only accepted posts count, so a client that keeps posting is refused until
its older posts have left the window.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable

WINDOW_SECONDS = 60


class Throttle:
    """At most a given number of events per key within a sliding window."""

    def __init__(self, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self.clock = clock
        self._events: dict[Hashable, deque[float]] = {}
        self._swept = clock()

    def admit(self, limits: Iterable[tuple[Hashable, int]]) -> bool:
        """Count one event against every ``(key, limit)``; False, counting nothing, when a
        key already reached its limit within the window (a limit of 0 is no limit)."""
        now = self.clock()
        self._sweep(now)
        limited = [(key, limit) for key, limit in limits if limit > 0]
        for key, limit in limited:
            events = self._events.get(key)
            while events and events[0] <= now - self.window:
                events.popleft()
            if events and len(events) >= limit:
                return False
        for key, _ in limited:
            self._events.setdefault(key, deque()).append(now)
        return True

    def _sweep(self, now: float) -> None:
        """Forget keys quiet for a whole window, once per window, so memory stays bounded."""
        if now - self._swept < self.window:
            return
        self._swept = now
        self._events = {key: events for key, events in self._events.items()
                        if events and events[-1] > now - self.window}
