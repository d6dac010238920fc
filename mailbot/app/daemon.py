"""`mailbot run`: wires sources, pipeline, outbox sender and scheduler in one event loop.

SIGTERM/SIGINT stop accepting new mail, let the mail in hand finish, and exit 0.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from mailbot.context import Context, open_context
from mailbot.inbound import pipeline
from mailbot.inbound.imap import ImapSource
from mailbot.inbound.listener import GroupCommit, IngestHandler, start_listener
from mailbot.outbound.outbox import Sender
from mailbot.outbound.transports import transport_for
from mailbot.settings.config import Config
from mailbot.status.health import Health
from mailbot.status.metrics import Metrics
from mailbot.store import mail as mq
from mailbot.tickets import jobs

log = logging.getLogger(__name__)

DRAIN_SECONDS = 30.0


class StartupError(Exception):
    """The daemon cannot start (e.g. a port is taken); the message says which and why."""


class Daemon:
    """One running mailbot instance."""

    def __init__(self, config: Config, ctx: Context | None = None) -> None:
        self.config = config
        self.ctx = ctx or open_context(config)
        self.health = Health()
        self.ctx.metrics = Metrics(self.ctx.store, self.health)
        self.stop = asyncio.Event()
        self.sender = Sender(self.ctx, transport_for(config), self.health)
        self.ctx.on_outbox = self.sender.notify
        batch_ingest = functools.partial(pipeline.ingest, self.ctx, durable=False)
        flush = functools.partial(pipeline.flush, self.ctx)
        self.handler = IngestHandler(
            batch_ingest, config.listener.protocol == "lmtp",
            () if config.listener.accept_any_recipient else config.support.addresses,
            GroupCommit(flush))
        self.imap = [ImapSource(cfg, batch_ingest, self._uidvalidity, self.health, flush=flush)
                     for cfg in config.imap]
        self.scheduler: AsyncIOScheduler | None = None

    async def serve(self) -> None:
        """Run until :attr:`stop` is set, then shut down cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.ctx.team.reload)
        server = await self._start_listener()
        try:
            runner = await self._start_web()
        except StartupError:
            if server is not None:
                server.close()
            raise
        threads = [asyncio.create_task(asyncio.to_thread(src.run)) for src in self.imap]
        sender = asyncio.create_task(self.sender.run(self.stop))
        self.scheduler = self._start_scheduler()
        log.info("mailbot running: %s", self.describe())
        await self.stop.wait()
        log.info("shutting down: no new mail accepted, finishing the mail in hand")
        await self._shutdown(server, threads, sender)
        if runner is not None:
            await runner.cleanup()
        self.ctx.store.close()

    def describe(self) -> str:
        """A one-line summary of what this instance serves."""
        parts = [f"data {self.config.data_dir}", f"outbound {self.sender.transport.label}"]
        if self.config.listener.enabled:
            listener = self.config.listener
            parts.append(f"{listener.protocol} {listener.host}:{listener.port}")
        parts += [f"imap {c.label}/{c.folder}" for c in self.config.imap]
        return ", ".join(parts)

    async def _start_listener(self) -> asyncio.AbstractServer | None:
        listener = self.config.listener
        if not listener.enabled:
            return None
        try:
            server = await start_listener(listener.host, listener.port, listener.protocol,
                                          self.config.limits.max_message_bytes, self.handler)
        except OSError as exc:
            raise StartupError(f"listener {listener.host}:{listener.port}: {exc.strerror}"
                               " (is another mailbot or MTA running there?)") from exc
        self.health.set(f"{listener.protocol}:{listener.host}:{listener.port}", "connected")
        return server

    async def _start_web(self):
        if not self.config.web.enabled:
            return None
        from mailbot.web import server

        try:
            return await server.start_web(self.ctx, self.health)
        except OSError as exc:
            raise StartupError(f"web server {self.config.web.host}:{self.config.web.port}: "
                               f"{exc.strerror}") from exc

    def _start_scheduler(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(job_defaults={"coalesce": True, "max_instances": 1})
        scheduler.add_job(self.sender.notify, "interval", seconds=30, id="outbox-retry")
        scheduler.add_job(self._run_jobs, "interval", id="ticket-jobs",
                          seconds=self.config.notifications.interval_seconds)
        scheduler.add_job(self.ctx.team.reload_if_changed, "interval", seconds=5,
                          id="agents-reload")
        for number, source in enumerate(self.imap):
            scheduler.add_job(source.poll, "interval", seconds=source.cfg.poll_seconds,
                              id=f"imap-poll-{number}")
        scheduler.start()
        return scheduler

    async def _run_jobs(self) -> None:
        await asyncio.to_thread(jobs.run_all, self.ctx, self.ctx.clock())

    async def _shutdown(self, server, threads, sender) -> None:
        self.handler.accepting = False
        if server is not None:
            server.close()
        for src in self.imap:
            src.stop.set()
            src.poll_requested.set()
        await self._drain_listener()
        await asyncio.gather(*threads, return_exceptions=True)
        await sender
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
        log.info("mailbot stopped")

    async def _drain_listener(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while self.handler.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)

    def _uidvalidity(self, mailbox: str, value: int) -> bool:
        with self.ctx.store.transaction():
            known = mq.uidvalidity(self.ctx.store, mailbox)
            mq.set_uidvalidity(self.ctx.store, mailbox, value)
        return known is None or known == value


def run(config: Config) -> None:
    """Serve until a stop signal arrives."""
    asyncio.run(Daemon(config).serve())
