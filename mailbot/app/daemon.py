"""`mailbot run`: the sources, the outbox sender, the scheduler and the web server in one loop.

The daemon builds the one Context of the process, lists its sources (:func:`sources`)
and serves each of them, supervised (:mod:`mailbot.app.supervisor`), with the same feed
into the pipeline; an IMAP mailbox reads in a thread of its own.  Several daemons (nodes)
may share one database: each mailbox is worked by the node holding its lease
(:func:`~mailbot.inbound.imap.mailbox_lease`), each tick of a scheduled job runs on the
node that claims it first (:meth:`Daemon._claim_tick`), and every node listens, serves the
web and sends.  The watch (:mod:`mailbot.app.watchdog`) writes the status file and feeds
systemd's watchdog.
SIGTERM/SIGINT, at any moment, stop accepting new mail, let the mail in hand finish,
and exit 0.  SIGHUP reads the config file again and puts in force what takes effect
without a restart (:meth:`Daemon.reload`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

import click
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailbot.app import logs
from mailbot.app.signals import EarlyStop
from mailbot.app.supervisor import counted, supervise
from mailbot.app.upkeep import DataDirLock, InUse
from mailbot.app.watchdog import Notifier, keep_watch, remove_status
from mailbot.context import Context, open_context
from mailbot.inbound import pipeline
from mailbot.inbound.imap import ImapSource, mailbox_lease, uidvalidity_keeper
from mailbot.inbound.listener import Listener
from mailbot.inbound.source import Feed, Source
from mailbot.outbound.sender import Doorbell, Sender
from mailbot.outbound.transports import transport_for
from mailbot.settings.config import Config, config_path, load
from mailbot.settings.schema import ConfigError
from mailbot.settings.team import Reloaded, load_agents
from mailbot.store import jobs as jq
from mailbot.tickets import jobs, notify

log = logging.getLogger(__name__)

# Seconds without progress after which a loop counts as stuck.
OUTBOX_STUCK_SECONDS = 300.0
# The once-a-day jobs (retention) first run this long after the start, then every day.
DAILY_FIRST_RUN = timedelta(minutes=5)
DAY = timedelta(hours=24)


class StartupError(Exception):
    """The daemon cannot start (e.g. a port is taken); the message says which and why."""


def sources(ctx: Context) -> list[Source]:
    """Every source of mail this configuration asks for: the listener, then each mailbox."""
    config = ctx.config
    found: list[Source] = []
    if config.listener.enabled:
        recipients = () if config.listener.accept_any_recipient else config.support.addresses
        found.append(Listener(config.listener, config.limits.max_message_bytes, recipients,
                              ctx.health, config.limits.oversize))
    keeper = uidvalidity_keeper(ctx.store)
    found += [ImapSource(cfg, keeper, ctx.health, lease=mailbox_lease(ctx.store, cfg))
              for cfg in config.imap]
    return found


class Daemon:
    """One running mailbot instance."""

    def __init__(self, config: Config, stop: asyncio.Event | None = None, *,
                 config_file: Path) -> None:
        self.config = config
        self.config_file = config_file
        bell = Doorbell()
        self.ctx = open_context(config, on_outbox=bell.ring)
        self.stop = stop or asyncio.Event()
        self.notifier = Notifier()
        self.sender = Sender(self.ctx, transport_for(config), bell,
                             on_failed=partial(notify.delivery_failed, self.ctx))
        self.sources = sources(self.ctx)
        self.scheduler: AsyncIOScheduler | None = None
        self._opened: list[Listener] = []

    async def serve(self) -> None:
        """Run until :attr:`stop` is set, then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            if not self.stop.is_set():
                await self._serve()
        finally:
            self.notifier.send("STOPPING=1")
            remove_status(self.config.data_dir)
            pipeline.READERS.close()  # the sources are done: no reader is left behind
            self.ctx.store.close()
            log.info("mailbot stopped")

    async def _serve(self) -> None:
        feed = pipeline.feed(self.ctx)
        feeds = {s.name: counted(feed, self.ctx.health, s.name) for s in self.sources}
        await self._open_listeners(feeds)
        runner = await self._start_web()
        admin = await self._start_admin(runner)
        tasks = [asyncio.create_task(supervise(
            source.name, lambda s=source: s.serve(feeds[s.name], self.stop), self.ctx.health,
            self.stop)) for source in self.sources]
        self.ctx.health.watch("outbox", OUTBOX_STUCK_SECONDS, state="running")
        tasks.append(asyncio.create_task(
            supervise("outbox", lambda: self.sender.run(self.stop), self.ctx.health, self.stop)))
        tasks.append(asyncio.create_task(keep_watch(self.ctx, self.notifier, self.stop)))
        self.scheduler = self._start_scheduler()
        log.info("mailbot running: %s", self.describe())
        self.notifier.send("READY=1")
        await self.stop.wait()
        log.info("shutting down: no new mail accepted, finishing the mail in hand")
        self.notifier.send("STOPPING=1")
        await asyncio.gather(*tasks, return_exceptions=True)
        self.scheduler.shutdown(wait=False)
        for started in (runner, admin):
            if started is not None:
                await started.cleanup()

    def reload(self) -> None:
        """SIGHUP: read the config file again and put in force what takes effect without a
        restart (agents, log level, policy, texts, ...), logging what changed and what waits
        for a restart.  A config that does not validate is logged with file, key and reason
        and the running one stays: a SIGHUP never stops the daemon."""
        try:
            read = load(self.config_file, require_file=True)
            load_agents(read)  # a broken agents file leaves everything as it is, too
            found = self.ctx.reload(read)
        except ConfigError as exc:
            log.error("config not reloaded, the running one stays in force: %s", exc)
            return
        except Exception:
            log.exception("config not reloaded, the running one stays in force")
            return
        logs.setup(self.ctx.config.service.log_level, self.config.service.log_format)
        log.info("config %s reloaded: %s", self.config_file, _reload_summary(found))

    def describe(self) -> str:
        """A one-line summary of what this instance serves."""
        parts = [f"data {self.config.data_dir}", f"outbound {self.sender.transport.label}"]
        if self.config.listener.enabled:
            listener = self.config.listener
            parts.append(f"{listener.protocol} {listener.host}:{listener.port}")
        parts += [f"imap {c.label}/{c.folder}" for c in self.config.imap]
        return ", ".join(parts)

    async def _open_listeners(self, feeds: dict[str, Feed]) -> None:
        """Bind every listening source before anything runs: a taken port stops the start."""
        opened = []
        for source in self.sources:
            if not isinstance(source, Listener):
                continue
            try:
                await source.open(feeds[source.name])
            except OSError as exc:
                for listener in opened:
                    listener.server.close()
                raise StartupError(f"listener {source.cfg.host}:{source.cfg.port}: "
                                   f"{exc.strerror} (is another mailbot or MTA running "
                                   "there?)") from exc
            opened.append(source)
        self._opened = opened

    async def _start_web(self):
        if not self.config.web.enabled:
            return None
        from mailbot.web import server

        try:
            return await server.start_web(self.ctx)
        except OSError as exc:
            for listener in self._opened:
                listener.server.close()
            raise StartupError(f"web server {self.config.web.host}:{self.config.web.port}: "
                               f"{exc.strerror}") from exc

    async def _start_admin(self, web_runner):
        """The operators' listener (/healthz, /metrics); a taken port stops the start."""
        admin_config = self.config.admin
        if not admin_config.enabled:
            return None
        from mailbot.web import admin

        try:
            return await admin.start_admin(self.ctx)
        except OSError as exc:
            for listener in self._opened:
                listener.server.close()
            if web_runner is not None:
                await web_runner.cleanup()
            raise StartupError(f"admin listener {admin_config.host}:{admin_config.port}: "
                               f"{exc.strerror}") from exc

    def _start_scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(self.sender.notify, "interval", seconds=30, id="outbox-retry")
        interval = self.config.notifications.interval_seconds
        scheduler.add_job(self._run_jobs, "interval", id="ticket-jobs", seconds=interval)
        self.ctx.health.watch("jobs", 3 * interval + OUTBOX_STUCK_SECONDS, state="running")
        scheduler.add_job(self.ctx.team.reload_if_changed, "interval", seconds=5,
                          id="agents-reload")
        scheduler.add_job(self._run_daily, "interval", seconds=DAY.total_seconds(),
                          id="daily-jobs", next_run_time=self.ctx.clock() + DAILY_FIRST_RUN)
        mailboxes = [s for s in self.sources if isinstance(s, ImapSource)]
        for number, source in enumerate(mailboxes):
            scheduler.add_job(source.poll, "interval", seconds=source.cfg.poll_seconds,
                              id=f"imap-poll-{number}")
        scheduler.start()
        return scheduler

    async def _run_jobs(self) -> None:
        """One round of the scheduler's ticket jobs, unless another node ran this tick; a
        failure is logged and on the board."""
        interval = self.config.notifications.interval_seconds
        try:
            if await asyncio.to_thread(self._claim_tick, "ticket-jobs", interval):
                await asyncio.to_thread(jobs.run_all, self.ctx, self.ctx.clock())
        except Exception as exc:
            log.exception("ticket jobs failed; they run again next round")
            self.ctx.health.set("jobs", "failed", f"{type(exc).__name__}: {exc}")
        else:
            self.ctx.health.set("jobs", "running")

    async def _run_daily(self) -> None:
        """The once-a-day jobs (retention), unless another node ran them this day (UTC); a
        failure is logged, the next day tries again."""
        try:
            if await asyncio.to_thread(self._claim_tick, "daily-jobs", DAY.total_seconds()):
                await asyncio.to_thread(jobs.run_daily, self.ctx, self.ctx.clock())
        except Exception:
            log.exception("daily jobs (retention) failed; they run again in 24 hours")

    def _claim_tick(self, name: str, seconds: float) -> bool:
        """Whether this node runs job ``name`` now: True for the first of all nodes on the
        database to claim the current tick (the clock's period of ``seconds``)."""
        tick = tick_of(self.ctx.clock(), seconds)
        with self.ctx.store.transaction(durable=False):  # lost in a crash: runs once more
            won = jq.claim_tick(self.ctx.store, name, tick)
        log.debug("%s of tick %d %s", name, tick, "runs here" if won else "ran elsewhere")
        return won


def run(config: Config) -> None:
    """Serve until a stop signal arrives, also one that arrives while we are starting.

    The daemon holds the data directory's lock for its whole life, so `mailbot migrate`
    and `restore` refuse to run under it; a data directory held already stops the start.
    """
    lock = DataDirLock(config.data_dir)
    try:
        lock.acquire("mailbot run")
    except InUse as exc:
        raise StartupError(str(exc)) from exc
    try:
        asyncio.run(_main(config, EarlyStop.install(), started_with()))
    finally:
        lock.release()


def started_with() -> Path:
    """The config file this process was started with, as the command line found it
    (``--config``, else ``$MAILBOT_CONFIG``, else ./mailbot.toml): what SIGHUP reads."""
    command = click.get_current_context(silent=True)
    given = (command.find_root().obj or {}).get("config_path") if command else None
    return config_path(given).resolve()


def tick_of(now: datetime, seconds: float) -> int:
    """The tick of a job run every ``seconds`` that ``now`` falls in, as the milliseconds
    since the epoch at which it began: the same number on every node (clocks in step), and
    comparable between nodes that run the job at different intervals."""
    period = max(1, round(seconds * 1000))
    return int(now.timestamp() * 1000) // period * period


def _reload_summary(found: Reloaded) -> str:
    """What a reload put in force and what waits for a restart, for the log."""
    summary = f"in force now: {', '.join(found.applied)}" if found.applied else \
        "no change that applies now"
    if found.restart:
        summary += f"; needs a restart: {', '.join(found.restart)}"
    return summary


async def _main(config: Config, early: EarlyStop, config_file: Path) -> None:
    stop = asyncio.Event()
    early.attach(stop)
    daemon = await asyncio.to_thread(Daemon, config, stop, config_file=config_file)
    await daemon.serve()
