"""The health board: the live state of every source and loop, and the health document.

Sources (IMAP mailboxes, the listener, the relay) and loops (the outbox sender, the
scheduler's jobs) report here: their state, each success and failure, each mail they
handled, and a beat whenever they make progress.  One function, :func:`report`, turns
the board into the health document that /healthz serves, the daemon writes to its
status file for `mailbot status`, and the systemd watchdog is fed by.  The document names
no file paths (:func:`without_paths`): monitoring needs the kind of error, not where our
files are; the log keeps the whole error.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime

from mailbot.store import Store

# States in which a source or loop is expected to make progress (and can be stuck).
WORKING = ("connected", "running")
# States of a source that is trying to get back to work.
RECOVERING = ("connecting", "retrying", "failed")
# A source whose credentials were refused (a revoked OAuth2 client, consent or mailbox
# permission missing): it keeps trying with backoff, but as only an operator can fix
# it, it makes mailbot unhealthy at the first failure.
REFUSED = "refused"
# States that count one more failure in a row.
FAILING = ("retrying", "failed", REFUSED)
# A source another node works (it holds the mailbox's lease): this one waits to take over,
# which is as it should be, never a failure.
STANDBY = "standby"
# An absolute file path in an error text: a "/" that opens a word (so not the "/" of
# "I/O", nor the "//" of a URL), up to a space, quote, bracket, comma, colon or semicolon.
FILE_PATH = re.compile(r"(?<![^\s'\"(\[{<=,])/[^\s'\"()\[\]{}<>,:;]*")
PATH_SHOWN_AS = "<path>"


@dataclass(frozen=True)
class SourceState:
    """What the board knows of one source or loop."""

    name: str
    state: str
    detail: str = ""
    since: float = 0.0  # wall-clock time this state began
    failures: int = 0  # failures in a row; a success resets them
    last_success: float | None = None  # wall-clock time of the last connect or mail handled
    last_error: str = ""
    last_error_at: float | None = None
    handled: int = 0  # mails handled since the start
    beat: float = 0.0  # monotonic time of the last sign of progress
    stuck_after: float = 0.0  # seconds without progress that count as stuck; 0: never

    def quiet_seconds(self, now: float) -> float:
        """Seconds since the last sign of progress (``now`` is monotonic)."""
        return max(0.0, now - self.beat)

    def stuck(self, now: float) -> bool:
        """Whether it should be working but has shown no progress for too long."""
        return (self.state in WORKING and self.stuck_after > 0
                and self.quiet_seconds(now) > self.stuck_after)


class Health:
    """A thread-safe board of source and loop states."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, SourceState] = {}

    def watch(self, name: str, stuck_after: float, state: str = "connecting") -> None:
        """Put a source or loop on the board; it counts as stuck after ``stuck_after`` s quiet."""
        with self._lock:
            old = self._states.get(name) or SourceState(name, state, since=time.time())
            self._states[name] = replace(old, stuck_after=stuck_after, beat=time.monotonic())

    def set(self, name: str, state: str, detail: str = "") -> None:
        """Record that ``name`` is now ``state`` (connected, running, retrying, failed,
        refused, standby, stopped).

        ``retrying``, ``failed`` and ``refused`` count one more failure in a row, with
        ``detail`` as the error; ``connected`` and ``running`` are a success and reset the
        count.
        """
        now = time.time()
        with self._lock:
            old = self._states.get(name) or SourceState(name, state, since=now)
            changes: dict = {"state": state, "detail": detail, "beat": time.monotonic(),
                             "since": old.since if old.state == state else now}
            if state in FAILING:
                changes.update(failures=old.failures + 1, last_error=detail, last_error_at=now)
            elif state in WORKING:
                changes.update(failures=0, last_success=now)
            self._states[name] = replace(old, **changes)

    def handled(self, name: str) -> None:
        """Count one mail handled by ``name`` (a success, and progress)."""
        with self._lock:
            old = self._states.get(name) or SourceState(name, "running", since=time.time())
            self._states[name] = replace(old, handled=old.handled + 1, last_success=time.time(),
                                         beat=time.monotonic())

    def beat(self, name: str) -> None:
        """Note that ``name`` made progress (a loop went round, IDLE answered)."""
        with self._lock:
            old = self._states.get(name)
            if old is not None:
                self._states[name] = replace(old, beat=time.monotonic())

    def states(self) -> list[SourceState]:
        """All known states, sorted by name."""
        with self._lock:
            return sorted(self._states.values(), key=lambda s: s.name)


def report(store: Store, health: Health, max_failures: int) -> dict:
    """The health document: overall status, the reasons when unhealthy, every source.

    Unhealthy: the database cannot be written, or a source failed ``max_failures`` times in
    a row, had its credentials refused, stopped, or is stuck (working but without progress
    for too long).
    """
    reasons = []
    try:
        store.check_writable()
    except Exception as exc:
        reasons.append(f"database not writable: {type(exc).__name__}: {exc}")
    now = time.monotonic()
    states = health.states()
    reasons += [p for p in (source_problem(s, max_failures, now) for s in states) if p]
    return {"status": "unavailable" if reasons else "ok",
            "reasons": [without_paths(r) for r in reasons],
            "sources": [_describe(s, now) for s in states]}


def without_paths(text: str) -> str:
    """``text`` with every absolute file path replaced by ``<path>``."""
    return FILE_PATH.sub(PATH_SHOWN_AS, text)


def source_problem(state: SourceState, max_failures: int, now: float | None = None) -> str:
    """Why a source makes mailbot unhealthy, or ``""`` (working, or recovering within limits)."""
    now = time.monotonic() if now is None else now
    if state.stuck(now):
        return (f"source {state.name} stuck: no progress for "
                f"{state.quiet_seconds(now):.0f} s")
    if state.state in (*WORKING, STANDBY):
        return ""
    if state.state in RECOVERING and state.failures < max_failures:
        return ""
    failures = f" after {state.failures} failures" if state.failures else ""
    detail = f": {state.detail}" if state.detail else ""
    return f"source {state.name} {state.state}{failures}{detail}"


def _describe(state: SourceState, now: float) -> dict:
    """One source as the health document shows it (times in ISO 8601, UTC)."""
    data = asdict(state)
    for key in ("name", "detail", "last_error"):
        data[key] = without_paths(data[key])
    for key in ("since", "last_success", "last_error_at"):
        data[key] = _iso(data[key])
    data["quiet_seconds"] = round(state.quiet_seconds(now), 1)
    del data["beat"]
    return data


def _iso(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds") if moment else None
