"""The built-in SMTP/LMTP listener (aiosmtpd): 250 only after a durable commit.

Mails arriving at the same time over several sessions are committed one transaction
each and then made durable together by one group flush before each gets its 250.
A temporary failure answers 451 so the sending MTA retries; a mail over the size
limit gets 552 from aiosmtpd itself.  LMTP answers one line per recipient.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.inbound.source import Feed, TemporaryFailure
from mailbot.reading.message import base_address
from mailbot.settings.config import ListenerConfig
from mailbot.status.health import Health
from mailbot.tickets.outcome import Outcome

log = logging.getLogger(__name__)

# Shutdown: how long the mails being committed may take to get their answer.
DRAIN_SECONDS = 8.0

OK = "250 2.0.0 OK: {detail}"
TEMPFAIL = "451 4.3.0 Temporary failure, please try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, please try again later"
UNKNOWN_RECIPIENT = "550 5.1.1 No such support mailbox here"


class GroupCommit:
    """Makes concurrent commits durable with one flush for all that waited on it."""

    def __init__(self, flush: Callable[[], None]) -> None:
        self._flush = flush
        self._lock = asyncio.Lock()
        self._requested = 0
        self._flushed = 0

    async def durable(self) -> None:
        """Return once everything committed before this call is on disk."""
        self._requested += 1
        ticket = self._requested
        async with self._lock:
            if self._flushed >= ticket:
                return
            target = self._requested
            await asyncio.to_thread(self._flush)
            self._flushed = target


class IngestHandler:
    """aiosmtpd handler that files each mail through the pipeline.

    ``ingest`` files without syncing when ``commits`` is given; the group commit then
    makes the mail durable before the 250.  Without it, ``ingest`` must be durable itself.
    """

    def __init__(self, ingest: Callable[[bytes, str], Outcome], lmtp: bool,
                 recipients: tuple[str, ...] = (), commits: GroupCommit | None = None) -> None:
        self.ingest = ingest
        self.commits = commits
        self.lmtp = lmtp
        self.recipients = frozenset(a.lower() for a in recipients)
        self.accepting = True
        self.in_flight = 0
        self.committing: set[Session] = set()  # sessions whose mail is being filed

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        """Accept our support addresses (with any +tag); refuse others unless told not to."""
        if self.recipients and base_address(address) not in self.recipients:
            return UNKNOWN_RECIPIENT
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Commit the mail, then answer; never 250 before the commit."""
        if not self.accepting:
            return self._per_recipient(SHUTTING_DOWN, envelope)
        self.in_flight += 1
        self.committing.add(session)
        try:
            raw = envelope.original_content or envelope.content
            outcome = await asyncio.to_thread(self.ingest, bytes(raw), "smtp")
            if self.commits is not None:
                await self.commits.durable()
        except TemporaryFailure as exc:
            log.warning("SMTP delivery deferred: %s", exc)
            return self._per_recipient(TEMPFAIL, envelope)
        except Exception:  # never a 5xx for our own fault: the sending MTA would bounce it
            log.exception("SMTP delivery deferred after an unexpected error")
            return self._per_recipient(TEMPFAIL, envelope)
        finally:
            self.in_flight -= 1
            self.committing.discard(session)
        detail = outcome.ticket_number or outcome.status
        return self._per_recipient(OK.format(detail=detail), envelope)

    def _per_recipient(self, line: str, envelope: Envelope) -> str:
        if not self.lmtp:
            return line
        return "\r\n".join([line] * max(1, len(envelope.rcpt_tos)))


async def start_listener(host: str, port: int, protocol: str, max_bytes: int,
                         handler: IngestHandler, max_line_bytes: int = 10_000,
                         sessions: set[SMTP] | None = None) -> asyncio.AbstractServer:
    """Listen for SMTP or LMTP in the running loop; open sessions are kept in ``sessions``."""
    server_class = _server_class(protocol, max_line_bytes, set() if sessions is None
                                 else sessions)
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: server_class(handler, data_size_limit=max_bytes, enable_SMTPUTF8=True,
                             decode_data=False, hostname="mailbot"),
        host=host, port=port)


def _server_class(protocol: str, max_line_bytes: int, sessions: set[SMTP]) -> type[SMTP]:
    """aiosmtpd's SMTP or LMTP with our line length, keeping track of open sessions.

    RFC 5321 allows 1,000 bytes a line, but real mail has longer lines; MTAs accept them.
    """
    base = LMTP if protocol == "lmtp" else SMTP

    class Server(base):
        line_length_limit = max_line_bytes + 2  # the limit counts the CRLF

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sessions.add(self)
            super().connection_made(transport)

        def connection_lost(self, error: Exception | None) -> None:
            sessions.discard(self)
            super().connection_lost(error)

    return Server


class Listener:
    """The SMTP/LMTP listener as a source: open the port, serve until stopped, drain."""

    def __init__(self, cfg: ListenerConfig, max_bytes: int, recipients: tuple[str, ...],
                 health: Health) -> None:
        self.cfg = cfg
        self.name = f"{cfg.protocol}:{cfg.host}:{cfg.port}"
        self.max_bytes = max_bytes
        self.recipients = recipients
        self.health = health
        self.handler: IngestHandler | None = None
        self.server: asyncio.AbstractServer | None = None
        self.sessions: set[SMTP] = set()

    async def open(self, feed: Feed) -> None:
        """Bind the port (an OSError says why not) and accept mail for ``feed`` from now on."""
        self.handler = IngestHandler(feed.file, self.cfg.protocol == "lmtp", self.recipients,
                                     GroupCommit(feed.flush))
        self.server = await start_listener(self.cfg.host, self.cfg.port, self.cfg.protocol,
                                           self.max_bytes, self.handler,
                                           self.cfg.max_line_bytes, self.sessions)
        self.health.set(self.name, "connected")

    async def serve(self, feed: Feed, stop: asyncio.Event) -> None:
        """Accept mail until ``stop`` is set, then refuse new mail and finish the mail in hand.

        On the way out every client gets 421 4.3.2 (after the answer to a mail that is being
        filed), so the sending MTA tries again later instead of waiting for a timeout.
        """
        if self.server is None or not self.server.is_serving():
            await self.open(feed)
        try:
            await stop.wait()
        finally:
            self.handler.accepting = False
            self.server.close()
            await self._say_goodbye(lambda s: s.session not in self.handler.committing)
            await self._drain()
            await self._say_goodbye(lambda s: True)
            self.health.set(self.name, "stopped")

    async def _say_goodbye(self, chosen: Callable[[SMTP], bool]) -> None:
        """Answer 421 4.3.2 to the chosen open sessions and close them."""
        for session in [s for s in self.sessions if chosen(s)]:
            if session.transport is None:
                continue
            try:
                await asyncio.wait_for(session.push(SHUTTING_DOWN), 1.0)
            except (OSError, TimeoutError, RuntimeError):
                log.debug("could not say goodbye to an SMTP client", exc_info=True)
            if session.transport is not None:
                session.transport.close()

    async def _drain(self) -> None:
        """Wait (bounded) for deliveries that are being committed to get their answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_SECONDS
        while self.handler.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.05)
