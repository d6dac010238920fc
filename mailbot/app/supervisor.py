"""Supervision: every source and loop of the daemon runs under a supervisor.

A supervised task that raises is logged with its traceback, marked ``failed`` on the
health board (with the error, counting failures in a row) and started again after a
pause that doubles with each failure in a row, up to five minutes.  A task that ends
without being asked to counts as a failure too: nothing stops quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from mailbot.inbound.source import Feed
from mailbot.status.health import Health

log = logging.getLogger(__name__)

RESTART_SECONDS = 1.0
MAX_RESTART_SECONDS = 300.0


async def supervise(name: str, run: Callable[[], Awaitable[None]], health: Health,
                    stop: asyncio.Event) -> None:
    """Run ``run()`` until ``stop`` is set, restarting it with backoff whenever it fails."""
    while not stop.is_set():
        try:
            await run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            log.exception("%s failed: %s", name, error)
        else:
            if stop.is_set():
                return
            error = "ended without being asked to stop"
            log.error("%s %s", name, error)
        health.set(name, "failed", error)
        wait = restart_delay(_failures(health, name))
        log.warning("%s restarts in %.0f s", name, wait)
        await _pause(stop, wait)


def restart_delay(failures: int) -> float:
    """The pause before restart number ``failures``: 1 s, doubling, at most five minutes."""
    return min(MAX_RESTART_SECONDS, RESTART_SECONDS * 2 ** max(0, failures - 1))


def counted(feed: Feed, health: Health, name: str) -> Feed:
    """The feed of one source: every mail it hands over counts on the board under ``name``."""
    def file(raw: bytes, origin: str, envelope=None):
        outcome = feed.file(raw, origin, envelope)
        health.handled(name)
        return outcome

    def file_all(arrivals, origin: str, stop=lambda: False):
        for outcome in feed.file_all(arrivals, origin, stop):
            health.handled(name)
            yield outcome

    return replace(feed, file=file, file_all=file_all)


def _failures(health: Health, name: str) -> int:
    return next((s.failures for s in health.states() if s.name == name), 1)


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds`` or until ``stop`` is set, whichever comes first."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
