"""Live state of each source and transport, and the health document of /healthz."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from mailbot.store import Store


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


def report(store: Store, health: Health, max_failures: int) -> dict:
    """The health document: overall status, the reasons when unhealthy, every source."""
    reasons = []
    try:
        store.check_writable()
    except Exception as exc:
        reasons.append(f"database not writable: {type(exc).__name__}: {exc}")
    states = health.states()
    reasons += [p for p in (source_problem(s, max_failures) for s in states) if p]
    return {"status": "unavailable" if reasons else "ok", "reasons": reasons,
            "sources": [{"name": s.name, "state": s.state, "failures": s.failures,
                         "detail": s.detail} for s in states]}


def source_problem(state: SourceState, max_failures: int) -> str:
    """Why a source makes mailbot unhealthy, or ``""`` (connected, or retrying within limits)."""
    if state.state == "connected":
        return ""
    if state.state in ("retrying", "connecting") and state.failures < max_failures:
        return ""
    failures = f" after {state.failures} failures" if state.failures else ""
    detail = f": {state.detail}" if state.detail else ""
    return f"source {state.name} {state.state}{failures}{detail}"
