"""The daemon's watch: the status file for `mailbot status`, and systemd's watchdog.

Every few seconds the daemon evaluates its health board (:func:`mailbot.status.health.
report`) and writes the result to ``<data_dir>/status.json``; `mailbot status` in another
process reads it.  Under systemd (``Type=notify``) it also says READY once serving,
STOPPING on shutdown, a STATUS line, and feeds the watchdog only while no source or loop
is stuck: a daemon whose loops hang is restarted by systemd, not left to look alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sdnotify

from mailbot.status.health import report
from mailbot.store.blobs import give_back_memory, replace_private

if TYPE_CHECKING:  # annotations only: the context drags in the whole daemon
    from mailbot.context import Context

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
STATUS_SECONDS = 2.0
# A status file not rewritten for this long belongs to a daemon that is gone or hung.
STALE_SECONDS = 30.0


class Notifier:
    """sd_notify messages to systemd; does nothing when not started by systemd."""

    def __init__(self) -> None:
        self.active = bool(os.environ.get("NOTIFY_SOCKET"))
        self.systemd = sdnotify.SystemdNotifier() if self.active else None

    def send(self, message: str) -> None:
        """Send one message (READY=1, STOPPING=1, WATCHDOG=1, STATUS=...)."""
        if self.systemd is not None:
            self.systemd.notify(message)


def watchdog_seconds() -> float | None:
    """How often systemd wants to hear from us (half its WatchdogSec), or None."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000


async def keep_watch(ctx: Context, notifier: Notifier, stop: asyncio.Event) -> None:
    """Until ``stop``: write the status file, tell systemd our state, feed its watchdog,
    and give the heap memory freed since back to the system.

    The last gives back within seconds what a big mail or a job round took in a worker
    thread: glibc keeps what its threads freed for them, and the listener files mails in
    the threads of ``asyncio.to_thread``, which never reach the IMAP source's trim after a
    batch.  (The steady growth `bench/soak.py` once showed was the jobs reading every open
    ticket each round; with them fixed the daemon stays flat without the trim as well.)
    """
    feed_every = watchdog_seconds()
    interval = min(STATUS_SECONDS, feed_every or STATUS_SECONDS)
    started = time.time()
    while not stop.is_set():
        document = await asyncio.to_thread(report, ctx.store, ctx.health,
                                           ctx.config.web.max_source_failures)
        stuck = [r for r in document["reasons"] if " stuck: " in r]
        if feed_every and not stuck:
            notifier.send("WATCHDOG=1")
        notifier.send(f"STATUS={summary(document)}")
        await asyncio.to_thread(write_status, ctx.config.data_dir, document, started)
        await asyncio.to_thread(give_back_memory)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


def summary(document: dict) -> str:
    """One line for systemctl status: ok and the mails handled, or the first reason."""
    if document["reasons"]:
        return document["reasons"][0]
    handled = sum(s["handled"] for s in document["sources"])
    return f"ok, {len(document['sources'])} sources and loops, {handled} mails handled"


def write_status(data_dir: Path, document: dict, started: float) -> None:
    """Replace the status file atomically (0600): the report, our pid, when it was made."""
    status = {**document, "pid": os.getpid(), "started_at": _iso(started),
              "updated_at": _iso(time.time())}
    replace_private(data_dir / STATUS_FILE, json.dumps(status, ensure_ascii=False, indent=1))


def remove_status(data_dir: Path) -> None:
    """The daemon stopped: no status file claims it runs."""
    with contextlib.suppress(FileNotFoundError):
        (data_dir / STATUS_FILE).unlink()


def read_status(data_dir: Path) -> dict:
    """The daemon's last status, with ``status`` "not running" when there is no live daemon.

    Not running: no status file, its process is gone, or it was not rewritten for
    :data:`STALE_SECONDS` (a hung daemon).
    """
    path = data_dir / STATUS_FILE
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"status": "not running", "reasons": [f"no daemon: {path} does not exist"],
                "sources": []}
    age = time.time() - datetime.fromisoformat(status["updated_at"]).timestamp()
    if not _alive(status["pid"]):
        return {**status, "status": "not running",
                "reasons": [f"the daemon (pid {status['pid']}) is gone"]}
    if age > STALE_SECONDS:
        return {**status, "status": "not running",
                "reasons": [f"the daemon (pid {status['pid']}) has not reported for "
                            f"{age:.0f} s"]}
    return status


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds")
