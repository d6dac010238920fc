"""Live state of each source and transport, for logs, /healthz and /metrics."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class SourceState:
    """One source's connection state."""

    name: str
    state: str
    detail: str = ""
    since: float = 0.0
    failures: int = 0


class Health:
    """A thread-safe board of source states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, SourceState] = {}

    def set(self, name: str, state: str, detail: str = "") -> None:
        """Record that source ``name`` is now ``state`` (connected, retrying, stopped ...)."""
        with self._lock:
            old = self._states.get(name)
            failures = (old.failures + 1 if old else 1) if state == "retrying" else 0
            since = old.since if old and old.state == state else time.monotonic()
            self._states[name] = SourceState(name, state, detail, since, failures)

    def states(self) -> list[SourceState]:
        """All known source states, sorted by name."""
        with self._lock:
            return sorted(self._states.values(), key=lambda s: s.name)
